// rng_check.cu: writes Philox draws of consecutive streams to an array, so tests (and `xsim selftest` on a
// GPU) can compare them with the Random123 known-answer vectors and a numpy reference, and test them
// statistically. out[i * draws + k] is draw k of stream first_stream + i, starting at block first_block.
#include "philox.cuh"

// Which Philox method to call; the numbering is mirrored by xsim.runtime_selftest.RNG_KINDS.
enum RngKind : uint32_t {
    RNG_U32 = 0,
    RNG_UNIFORM = 1,
    RNG_UNIFORM_POS = 2,
    RNG_UNIFORM_DOUBLE = 3,
    RNG_UNIFORM_DOUBLE_POS = 4,
    RNG_EXPONENTIAL = 5,
    RNG_EXPONENTIAL_DOUBLE = 6,
    RNG_NORMAL = 7,
    RNG_NORMAL_DOUBLE = 8,
};

struct RngCheckParams {
    uint64_t seed;
    uint64_t first_stream;
    uint64_t first_block;
    double* out;  // [n * draws]; 32-bit words and floats are exact in a double
    uint32_t draws;
    uint32_t kind;
};

__device__ double rng_draw(xsim::Philox& rng, uint32_t kind) {
    switch (kind) {
        case RNG_U32: return (double)rng.next_u32();
        case RNG_UNIFORM: return (double)rng.uniform();
        case RNG_UNIFORM_POS: return (double)rng.uniform_pos();
        case RNG_UNIFORM_DOUBLE: return rng.uniform_double();
        case RNG_UNIFORM_DOUBLE_POS: return rng.uniform_double_pos();
        case RNG_EXPONENTIAL: return (double)rng.exponential();
        case RNG_EXPONENTIAL_DOUBLE: return rng.exponential_double();
        case RNG_NORMAL: return (double)rng.normal();
        default: return rng.normal_double();
    }
}

__device__ void rng_check_body(const RngCheckParams& p, uint64_t i) {
    xsim::Philox rng(p.seed, p.first_stream + i, p.first_block);
    for (uint32_t k = 0; k < p.draws; ++k) p.out[i * p.draws + k] = rng_draw(rng, p.kind);
}

XSIM_KERNEL(rng_check, RngCheckParams)
