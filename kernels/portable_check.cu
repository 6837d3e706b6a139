// portable_check.cu: calls every helper of xsim_portable.cuh once per index, so tests can check the host
// mappings against numpy and the atomics for lost updates (and nvcc/NVRTC check the CUDA side compiles).
#include "xsim_portable.cuh"

#define PORTABLE_CHECK_NMATH 10  // results per input in math_out, in the order of the body below

struct PortableCheckParams {
    const float* x;       // [n] inputs in (0, 1]
    float* math_out;      // [n * PORTABLE_CHECK_NMATH]
    float* sum_f32;       // [1] += 1 per index
    double* sum_f64;      // [1] += 0.5 per index
    int32_t* sum_i32;     // [1] -= 1 per index
    uint32_t* sum_u32;    // [1] += 3 per index
    int64_t* sum_i64;     // [1] -= 2^33 per index
    uint64_t* sum_u64;    // [1] += 2^33 + 1 per index
    uint64_t* sum_fixed;  // [1] += to_fixed(-x[i], fixed_scale) per index
    double fixed_scale;
};

__device__ void portable_check_body(const PortableCheckParams& p, uint64_t i) {
    const float x = p.x[i];
    float* m = p.math_out + i * PORTABLE_CHECK_NMATH;
    m[0] = __expf(x);
    m[1] = __logf(x);
    m[2] = __sinf(x);
    m[3] = __cosf(x);
    m[4] = __fdividef(x, 3.0f);
    m[5] = rsqrtf(x);
    m[6] = __powf(x, 1.5f);
    m[7] = __saturatef(2.0f * x - 0.5f);
    m[8] = fminf(x, 0.5f) + (float)max(1, 2) - (float)min(1, 2);
    float s, c;
    __sincosf(x, &s, &c);
    m[9] = s * s + c * c;

    xsim::atomic_add(p.sum_f32, 1.0f);
    xsim::atomic_add(p.sum_f64, 0.5);
    xsim::atomic_add(p.sum_i32, (int32_t)-1);
    xsim::atomic_add(p.sum_u32, (uint32_t)3);
    xsim::atomic_add(p.sum_i64, -((int64_t)1 << 33));
    xsim::atomic_add(p.sum_u64, ((uint64_t)1 << 33) + 1u);
    xsim::atomic_add_fixed(p.sum_fixed, -(double)x, p.fixed_scale);
}

XSIM_KERNEL(portable_check, PortableCheckParams)
