"""Tests of the Philox4x32-10 generator (kernels/philox.cuh), run through kernels/rng_check.cu on the CPU
build: Random123 known answers, bit-exact agreement with an independent numpy implementation of the
documented stream layout, and statistical tests with fixed seeds."""
import numpy as np
import pytest
from scipy import stats

from xsim.runtime_selftest import rng_draws

# Philox4x32-10 known answers (counter, key, output) from the Random123 distribution's kat_vectors
# (Salmon, Moraes, Dror, Shaw, SC'11), as listed in shared/reference/philox.md.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
P_MIN = 1e-3  # statistical tests fail below this p-value (fixed seeds: the outcome is deterministic)
MASK = np.uint64(0xFFFFFFFF)


@pytest.fixture(scope="module", autouse=True)
def _kernel_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XSIM_CACHE_DIR", str(tmp_path_factory.mktemp("kernels")))
        yield


def philox4x32_10(ctr: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Reference Philox4x32-10 (Salmon et al. 2011, section 3.3; Random123 philox.h), vectorised:
    ctr (..., 4) and key (..., 2) of uint32 -> (..., 4) uint32."""
    m0, m1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
    x = [ctr[..., j].astype(np.uint64) for j in range(4)]
    k0, k1 = key[..., 0].astype(np.uint64), key[..., 1].astype(np.uint64)
    for _ in range(10):
        p0, p1 = m0 * x[0], m1 * x[2]  # 32 x 32 -> 64-bit products, exact in uint64
        x = [(p1 >> np.uint64(32)) ^ x[1] ^ k0, p1 & MASK, (p0 >> np.uint64(32)) ^ x[3] ^ k1, p0 & MASK]
        k0, k1 = (k0 + np.uint64(0x9E3779B9)) & MASK, (k1 + np.uint64(0xBB67AE85)) & MASK
    return np.stack(x, axis=-1).astype(np.uint32)


def stream_words(seed: int, first_stream: int, n_streams: int, n_words: int, first_block: int = 0) -> np.ndarray:
    """32-bit words of streams first_stream.. under the layout documented in philox.cuh: key = seed,
    counter = (stream lo, stream hi, block lo, block hi), words x0..x3 of each block in order."""
    n_blocks = -(-n_words // 4)
    with np.errstate(over="ignore"):  # stream and block numbers wrap modulo 2^64 like the C++ counters
        s = np.uint64(first_stream) + np.arange(n_streams, dtype=np.uint64)[:, None]
        b = np.uint64(first_block) + np.arange(n_blocks, dtype=np.uint64)[None, :]
    s, b = np.broadcast_arrays(s, b)
    ctr = np.stack([s & MASK, s >> np.uint64(32), b & MASK, b >> np.uint64(32)], axis=-1)
    key = np.array([seed & 0xFFFFFFFF, seed >> 32], np.uint64)
    return philox4x32_10(ctr, np.broadcast_to(key, ctr.shape[:-1] + (2,))).reshape(n_streams, -1)[:, :n_words]


def uniform_ref(w: np.ndarray) -> np.ndarray:
    return (w >> 8).astype(np.float32) * np.float32(2.0**-24)


def uniform_pos_ref(w: np.ndarray) -> np.ndarray:
    return ((w >> 8) + np.uint32(1)).astype(np.float32) * np.float32(2.0**-24)


def uniform_double_ref(hi: np.ndarray, lo: np.ndarray, pos: bool = False) -> np.ndarray:
    bits = ((hi.astype(np.uint64) << np.uint64(32)) | lo.astype(np.uint64)) >> np.uint64(11)
    return (bits.astype(np.float64) + (1.0 if pos else 0.0)) * 2.0**-53


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_known_answer_vectors(ctr, key, expected):
    words = rng_draws(1, 4, "u32", seed=key[0] | key[1] << 32, first_stream=ctr[0] | ctr[1] << 32,
                      first_block=ctr[2] | ctr[3] << 32)
    assert words[0].astype(np.uint64).tolist() == list(expected)
    # the numpy reference, used below to check whole streams, passes the same vectors
    assert philox4x32_10(np.array(ctr, np.uint32), np.array(key, np.uint32)).tolist() == list(expected)


def test_streams_match_numpy_reference_bit_for_bit():
    # Streams straddle 2^32 (stream hi word), blocks straddle 2^32 (carry into counter word 3), and 11
    # draws per stream end inside the third block.
    seed, first_stream, first_block = 0x0123456789ABCDEF, 2**32 - 100, 2**32 - 1
    words = rng_draws(257, 11, "u32", seed=seed, first_stream=first_stream, first_block=first_block)
    np.testing.assert_array_equal(words, stream_words(seed, first_stream, 257, 11, first_block))


def test_batched_blocks_give_the_same_streams(monkeypatch):
    # On the host a stream may compute XSIM_PHILOX_BLOCKS blocks at once (the Monte Carlo kernel: 8, in SIMD
    # lanes), and XSIM_PHILOX_HEAD of them when it is created; the words must come out as with one block at a
    # time: the reference streams, across the carry into counter word 3 (inside the head for a head of 4) and
    # for draw counts that end inside the head, inside a batch and beyond it. Also one block at a time through
    # the non-inlined block function the GPU build uses (XSIM_PHILOX_NOINLINE).
    from xsim import runtime, runtime_selftest

    for blocks, head, noinline in ((2, 1, 0), (2, 2, 0), (8, 2, 0), (8, 4, 0), (1, 2, 1)):
        kernel = runtime.Kernel("rng_check.cu", entry="rng_check", params=runtime_selftest.RngCheckParams,
                                backend="cpu", defines={"XSIM_PHILOX_BLOCKS": blocks, "XSIM_PHILOX_HEAD": head,
                                                        "XSIM_PHILOX_NOINLINE": noinline})
        monkeypatch.setattr(runtime_selftest, "_kernel", lambda *args: kernel)
        seed, first_stream, first_block = 0x0123456789ABCDEF, 2**32 - 5, 2**32 - 2
        for draws in (3, 4 * head + 1, 4 * blocks + 5, 9 * blocks * 4 + 1):
            words = rng_draws(11, draws, "u32", seed=seed, first_stream=first_stream, first_block=first_block)
            np.testing.assert_array_equal(words, stream_words(seed, first_stream, 11, draws, first_block))


def test_uniform_conversions_are_exact_and_in_range():
    w = stream_words(42, 0, 2000, 40)
    np.testing.assert_array_equal(rng_draws(2000, 40, "uniform", seed=42), uniform_ref(w))
    np.testing.assert_array_equal(rng_draws(2000, 40, "uniform_pos", seed=42), uniform_pos_ref(w))
    hi, lo = w[:, 0::2], w[:, 1::2]
    np.testing.assert_array_equal(rng_draws(2000, 20, "uniform_double", seed=42), uniform_double_ref(hi, lo))
    np.testing.assert_array_equal(
        rng_draws(2000, 20, "uniform_double_pos", seed=42), uniform_double_ref(hi, lo, pos=True)
    )
    # The formulas' extremes (the kernel matches them bit for bit): [0, 1) and (0, 1].
    edge = np.array([0, 0xFFFFFFFF], np.uint32)
    assert uniform_ref(edge).tolist() == [0.0, 1.0 - 2.0**-24]
    assert uniform_pos_ref(edge).tolist() == [2.0**-24, 1.0]
    assert uniform_double_ref(edge, edge).tolist() == [0.0, 1.0 - 2.0**-53]
    assert uniform_double_ref(edge, edge, pos=True).tolist() == [2.0**-53, 1.0]


def test_exponential_and_normal_follow_their_formulas():
    w = stream_words(9, 0, 500, 64)
    # float versions: libm logf/cosf in single precision, so agreement to float32 accuracy
    u_pos, u = uniform_pos_ref(w).astype(np.float64), uniform_ref(w).astype(np.float64)
    np.testing.assert_allclose(rng_draws(500, 64, "exponential", seed=9), -np.log(u_pos), rtol=3e-7, atol=1e-7)
    box_muller = np.sqrt(-2 * np.log(u_pos[:, 0::2])) * np.cos(2 * np.pi * u[:, 1::2])  # Box & Muller 1958
    np.testing.assert_allclose(rng_draws(500, 32, "normal", seed=9), box_muller, rtol=0, atol=5e-6)
    # double versions: two words per uniform, double-precision libm
    d_pos = uniform_double_ref(w[:, 0::2], w[:, 1::2], pos=True)
    np.testing.assert_allclose(rng_draws(500, 32, "exponential_double", seed=9), -np.log(d_pos), rtol=1e-15)
    d1 = uniform_double_ref(w[:, 0::4], w[:, 1::4], pos=True)
    d2 = uniform_double_ref(w[:, 2::4], w[:, 3::4])
    expected = np.sqrt(-2 * np.log(d1)) * np.cos(2 * np.pi * d2)
    np.testing.assert_allclose(rng_draws(500, 16, "normal_double", seed=9), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["uniform", "uniform_pos", "uniform_double"])
def test_uniformity_chi_square(kind):
    u = rng_draws(1000, 1000, kind, seed=2024)  # 1e6 draws
    counts, _ = np.histogram(u, bins=100, range=(0.0, 1.0))
    p = stats.chisquare(counts).pvalue
    assert p > P_MIN, f"chi-square p = {p:.3g} for 1e6 {kind} draws in 100 bins"


@pytest.mark.parametrize("kind,dist", [("normal", "norm"), ("normal_double", "norm"),
                                       ("exponential", "expon"), ("exponential_double", "expon")])
def test_normal_and_exponential_ks(kind, dist):
    x = rng_draws(1000, 200, kind, seed=77).ravel()  # 2e5 draws
    p = stats.kstest(x, dist).pvalue
    assert p > P_MIN, f"KS p = {p:.3g} for {kind} against scipy.stats.{dist}"


def test_neighbouring_streams_and_draws_uncorrelated():
    u = rng_draws(2001, 500, "uniform", seed=5)
    n = 2000 * 500
    r_streams = np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]  # stream i vs i+1, same draw index
    r_lag1 = np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]  # draw k vs k+1 in one stream
    # Under independence r is ~ normal with sd 1/sqrt(N); 5 sd is a 6e-7 two-sided false-alarm rate.
    assert abs(r_streams) < 5 / np.sqrt(n), r_streams
    assert abs(r_lag1) < 5 / np.sqrt(u[:, :-1].size), r_lag1


def test_streams_do_not_depend_on_thread_count():
    one = rng_draws(20000, 7, "uniform_double", seed=3, threads=1)
    two = rng_draws(20000, 7, "uniform_double", seed=3, threads=2)
    np.testing.assert_array_equal(one, two)
    # and a stream does not depend on which other streams were computed in the same launch
    np.testing.assert_array_equal(rng_draws(10, 7, "uniform_double", seed=3, first_stream=12345),
                                  one[12345:12355])
