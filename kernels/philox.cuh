// philox.cuh: counter-based random numbers, Philox4x32-10 (Salmon, Moraes, Dror, Shaw, "Parallel random
// numbers: as easy as 1, 2, 3", SC'11; the Random123 library).
//
// Philox is a keyed bijection of a 128-bit counter, so any draw of any stream can be computed directly:
// there is no state to seed or store, skipping ahead is free, and a photon's numbers depend only on
// (seed, photon index), never on which thread or target ran it.
//
// Layout used by xsim (documented, and reproduced by the numpy reference in tests/test_rng.py):
//     key     = (seed & 0xffffffff, seed >> 32)                          64-bit user seed
//     counter = (stream & 0xffffffff, stream >> 32, block & 0xffffffff, block >> 32)
// where `stream` is the 64-bit photon/pixel index and `block` counts the 4-word outputs already used by that
// stream (0, 1, 2, ...). 32-bit words are consumed in the order x0, x1, x2, x3 of each block. A stream
// therefore holds 2^66 words, and 2^64 streams share one seed. Two different purposes inside one simulation
// (say transport and detector noise) must use different seeds or disjoint stream ranges.
//
// Conversions (exact in floating point, so both targets give bit-identical uniforms):
//     uniform()         float  in [0, 1):  (w >> 8) * 2^-24
//     uniform_pos()     float  in (0, 1]:  ((w >> 8) + 1) * 2^-24        safe for log()
//     uniform_double()  double in [0, 1):  (((w0 << 32) | w1) >> 11) * 2^-53      (two words)
//     uniform_double_pos() double in (0, 1]: ((((w0 << 32) | w1) >> 11) + 1) * 2^-53
//     exponential()     unit-mean exponential, -ln(uniform_pos())        (inverse CDF)
//     normal()          standard normal, Box-Muller: sqrt(-2 ln u1) * cos(2 pi u2), u1 = uniform_pos(),
//                       u2 = uniform() (G. E. P. Box, M. E. Muller, Ann. Math. Stat. 29, 610 (1958))
// and the *_double variants of exponential and normal, which use the double uniforms.
#pragma once
#include "xsim_portable.cuh"

namespace xsim {

// Round constants of Philox4x32 (Salmon et al. 2011, section 3.3; Random123 philox.h).
#define XSIM_PHILOX_M0 0xD2511F53u
#define XSIM_PHILOX_M1 0xCD9E8D57u
#define XSIM_PHILOX_W0 0x9E3779B9u  // golden ratio
#define XSIM_PHILOX_W1 0xBB67AE85u  // sqrt(3) - 1

XSIM_FN uint32_t mulhi32(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)  // device code (nvcc's host pass compiles __host__ __device__ functions too)
    return __umulhi(a, b);
#else
    return (uint32_t)(((uint64_t)a * b) >> 32);
#endif
}

// One call = one 128-bit block: ten rounds of
//     (x0, x1, x2, x3) <- (hi(M1 x2) ^ x1 ^ k0, lo(M1 x2), hi(M0 x0) ^ x3 ^ k1, lo(M0 x0))
// with the key bumped by the Weyl constants (W0, W1) between rounds.
XSIM_FN void philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
        const uint32_t hi0 = mulhi32(XSIM_PHILOX_M0, x0), lo0 = XSIM_PHILOX_M0 * x0;
        const uint32_t hi1 = mulhi32(XSIM_PHILOX_M1, x2), lo1 = XSIM_PHILOX_M1 * x2;
        x0 = hi1 ^ x1 ^ k0;
        x1 = lo1;
        x2 = hi0 ^ x3 ^ k1;
        x3 = lo0;
        k0 += XSIM_PHILOX_W0;
        k1 += XSIM_PHILOX_W1;
    }
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

// Word-to-number conversions (see the header comment); free functions so tests can check them directly.
XSIM_FN float u32_to_uniform(uint32_t w) { return (float)(w >> 8) * (1.0f / 16777216.0f); }
XSIM_FN float u32_to_uniform_pos(uint32_t w) { return (float)((w >> 8) + 1u) * (1.0f / 16777216.0f); }
XSIM_FN double u64_to_uniform(uint64_t w) { return (double)(w >> 11) * (1.0 / 9007199254740992.0); }
XSIM_FN double u64_to_uniform_pos(uint64_t w) { return (double)((w >> 11) + 1u) * (1.0 / 9007199254740992.0); }

// XSIM_PHILOX_BLOCKS: blocks a stream computes at once on the host (1 on the GPU), consecutive counters in
// SIMD lanes (philox4x32_10_blocks): the 32-bit multiplies of several blocks share one vector instruction, so
// a kernel that draws many numbers per stream (the Monte Carlo: ~45 per history) pays less per word.
// XSIM_PHILOX_HEAD (< XSIM_PHILOX_BLOCKS): blocks computed when a stream is created, so that a stream that
// draws few numbers (a photon that crosses the phantom without interacting: ~7) does not pay for a full
// batch. The words come out in the same order whatever these are, so the stream is the same; define them
// (powers of two) before the include.
#if !defined(XSIM_PHILOX_BLOCKS) || defined(XSIM_CUDA)
#undef XSIM_PHILOX_BLOCKS
#define XSIM_PHILOX_BLOCKS 1
#endif
#ifndef XSIM_PHILOX_HEAD
#define XSIM_PHILOX_HEAD 2
#endif
#if !defined(XSIM_PHILOX_NOINLINE) && defined(XSIM_CUDA)
#define XSIM_PHILOX_NOINLINE 1
#endif

#if XSIM_PHILOX_BLOCKS > 1
// NB blocks of one stream, blocks (block + b), b < NB, (block_lo, block_hi) = (ctr[2], ctr[3]): the rounds of
// philox4x32_10 with a lane per block, 32-bit words in 64-bit lanes (the product of two lanes below 2^32 is
// the exact 64-bit product: one vector multiply). Word j of block b goes to out[j * stride + b] (a vector
// store per word).
template <int NB>
struct PhiloxLanes {  // the lane types (GCC ignores a vector_size that depends on a template parameter elsewhere)
    static_assert(NB > 0 && (NB & (NB - 1)) == 0, "a power of two");
    typedef uint64_t u64 __attribute__((vector_size(NB * sizeof(uint64_t))));
    typedef uint32_t u32 __attribute__((vector_size(NB * sizeof(uint32_t))));
};

template <int NB>
inline void philox4x32_10_lanes(const uint32_t ctr[4], const uint32_t key[2], uint32_t* out, int stride) {
    typedef typename PhiloxLanes<NB>::u64 u64;
    typedef typename PhiloxLanes<NB>::u32 u32;
    u64 x0, x1, x2, x3;
    const uint64_t block = ((uint64_t)ctr[3] << 32) | ctr[2];
    for (int b = 0; b < NB; ++b) {
        x0[b] = ctr[0];
        x1[b] = ctr[1];
        x2[b] = (uint32_t)(block + b);
        x3[b] = (uint32_t)((block + b) >> 32);
    }
    const u64 low = u64{} + 0xFFFFFFFFu;  // the low 32 bits of each lane
    uint64_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; ++round) {
        const u64 p0 = x0 * (uint64_t)XSIM_PHILOX_M0, p1 = x2 * (uint64_t)XSIM_PHILOX_M1;
        x0 = (p1 >> 32) ^ x1 ^ k0;
        x1 = p1 & low;
        x2 = (p0 >> 32) ^ x3 ^ k1;
        x3 = p0 & low;
        k0 = (uint32_t)(k0 + XSIM_PHILOX_W0);
        k1 = (uint32_t)(k1 + XSIM_PHILOX_W1);
    }
    const u32 w0 = __builtin_convertvector(x0, u32), w1 = __builtin_convertvector(x1, u32),
              w2 = __builtin_convertvector(x2, u32), w3 = __builtin_convertvector(x3, u32);
    __builtin_memcpy(out, &w0, sizeof w0);
    __builtin_memcpy(out + stride, &w1, sizeof w1);
    __builtin_memcpy(out + 2 * stride, &w2, sizeof w2);
    __builtin_memcpy(out + 3 * stride, &w3, sizeof w3);
}
#endif

// XSIM_PHILOX_BLOCKS blocks of one stream from ctr: word j of block b in out[j * XSIM_PHILOX_BLOCKS + b] (for
// one block, the usual order).
XSIM_FN void philox4x32_10_blocks(const uint32_t ctr[4], const uint32_t key[2], uint32_t* out) {
#if XSIM_PHILOX_BLOCKS == 1
    philox4x32_10(ctr, key, out);
#else
    philox4x32_10_lanes<XSIM_PHILOX_BLOCKS>(ctr, key, out, XSIM_PHILOX_BLOCKS);
#endif
}

#if XSIM_PHILOX_NOINLINE && XSIM_PHILOX_BLOCKS == 1
// One block through a function that is not inlined (XSIM_PHILOX_NOINLINE, the default on the GPU): a kernel that
// draws at many places (the Monte Carlo) would otherwise carry ten rounds of code at each. Arguments and
// result by value, so that the caller's stream can stay in registers (a pointer to it would put it in memory).
struct PhiloxBlock {
    uint32_t x0, x1, x2, x3;
};
#if defined(XSIM_CUDA)
__host__ __device__ __noinline__
#else
inline __attribute__((noinline))
#endif
PhiloxBlock philox_block_call(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
    const uint32_t ctr[4] = {c0, c1, c2, c3}, key[2] = {k0, k1};
    uint32_t out[4];
    philox4x32_10(ctr, key, out);
    return PhiloxBlock{out[0], out[1], out[2], out[3]};
}
#endif

// The stream of one photon/pixel: construct it in the body from (seed, i) and draw from it.
struct Philox {
    uint32_t key[2];
    uint32_t ctr[4];  // (stream lo, stream hi, block lo, block hi) of the *next* block to compute
    uint32_t buf[4 * XSIM_PHILOX_BLOCKS];
    int used;  // words of buf already returned; 4 * XSIM_PHILOX_BLOCKS = empty

    XSIM_FN Philox() {}  // unset, to be assigned (arrays of per-history states)
    // first_block > 0 starts the stream further on (skip-ahead costs nothing with a counter-based generator).
    XSIM_FN Philox(uint64_t seed, uint64_t stream, uint64_t first_block = 0) {
        key[0] = (uint32_t)seed;
        key[1] = (uint32_t)(seed >> 32);
        ctr[0] = (uint32_t)stream;
        ctr[1] = (uint32_t)(stream >> 32);
        ctr[2] = (uint32_t)first_block;
        ctr[3] = (uint32_t)(first_block >> 32);
#if XSIM_PHILOX_BLOCKS <= XSIM_PHILOX_HEAD
        used = 4 * XSIM_PHILOX_BLOCKS;  // empty: the first draw computes the first batch
#else
        // The head: the stream's first XSIM_PHILOX_HEAD blocks only, in the buffer's last lanes, where the
        // draw order looks for them (word k of the buffer is word k & 3 of its block k >> 2).
        philox4x32_10_lanes<XSIM_PHILOX_HEAD>(ctr, key, buf + XSIM_PHILOX_BLOCKS - XSIM_PHILOX_HEAD,
                                                 XSIM_PHILOX_BLOCKS);
        const uint64_t next = first_block + XSIM_PHILOX_HEAD;
        ctr[2] = (uint32_t)next;
        ctr[3] = (uint32_t)(next >> 32);
        used = 4 * (XSIM_PHILOX_BLOCKS - XSIM_PHILOX_HEAD);
#endif
    }

    // The next batch of blocks into buf.
    XSIM_FN void refill() {
#if XSIM_PHILOX_NOINLINE && XSIM_PHILOX_BLOCKS == 1
        const PhiloxBlock b = philox_block_call(ctr[0], ctr[1], ctr[2], ctr[3], key[0], key[1]);
        buf[0] = b.x0, buf[1] = b.x1, buf[2] = b.x2, buf[3] = b.x3;
#else
        philox4x32_10_blocks(ctr, key, buf);
#endif
        const uint64_t next = (((uint64_t)ctr[3] << 32) | ctr[2]) + XSIM_PHILOX_BLOCKS;
        ctr[2] = (uint32_t)next;
        ctr[3] = (uint32_t)(next >> 32);
        used = 0;
    }

    XSIM_FN uint32_t next_u32() {
        if (used == 4 * XSIM_PHILOX_BLOCKS) refill();
        const int k = used++;
#if XSIM_PHILOX_BLOCKS == 1
        // Selects with constant indices: buf indexed at run time would live in (slow, local) memory on the GPU
        // rather than in registers.
        return k < 2 ? (k == 0 ? buf[0] : buf[1]) : (k == 2 ? buf[2] : buf[3]);
#else
        return buf[(k & 3) * XSIM_PHILOX_BLOCKS + (k >> 2)];  // word k & 3 of block k >> 2
#endif
    }
    XSIM_FN uint64_t next_u64() {
        const uint64_t hi = next_u32();
        return (hi << 32) | next_u32();
    }

    XSIM_FN float uniform() { return u32_to_uniform(next_u32()); }
    XSIM_FN float uniform_pos() { return u32_to_uniform_pos(next_u32()); }
    XSIM_FN double uniform_double() { return u64_to_uniform(next_u64()); }
    XSIM_FN double uniform_double_pos() { return u64_to_uniform_pos(next_u64()); }

    XSIM_FN float exponential() { return -logf(uniform_pos()); }
    XSIM_FN double exponential_double() { return -log(uniform_double_pos()); }

    XSIM_FN float normal() {
        const float r = sqrtf(-2.0f * logf(uniform_pos()));
        return r * cos_2pi(uniform());
    }
    XSIM_FN double normal_double() {
        const double r = sqrt(-2.0 * log(uniform_double_pos()));
        return r * cos(6.28318530717958648 * uniform_double());
    }
};

}  // namespace xsim
