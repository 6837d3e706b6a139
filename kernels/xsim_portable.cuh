// xsim_portable.cuh: the few CUDA-isms a kernel body may use, mapped so that one .cu file compiles
// for the GPU (NVRTC through CuPy, or nvcc) and as host C++17 (g++ -fopenmp, one OpenMP thread per core).
//
// A kernel is a per-thread body plus one line that generates both entries:
//
//     struct MyParams { uint64_t seed; const float* mu; float* image; };   // plain struct, shared by both targets
//     __device__ void my_kernel_body(const MyParams& p, uint64_t i) { ... }  // index i = photon / pixel / voxel
//     XSIM_KERNEL(my_kernel, MyParams)
//
// XSIM_KERNEL generates, on the GPU:   extern "C" __global__ void my_kernel(const MyParams p, uint64_t n)
//                                       (grid-stride loop, the struct passed by value into the kernel parameters)
//                    on the host:      extern "C" void my_kernel_host(const MyParams* p, uint64_t n, int nthreads)
//                                       (OpenMP loop over i in [0, n), dynamic schedule)
// Pointers in the struct are device pointers on the GPU and host pointers on the host; xsim.runtime fills them.
// Bodies use only __device__ functions, the helpers below and <math.h>-style functions (expf, sqrtf, ...):
// no __shared__, no __syncthreads, no warp intrinsics, so the host build stays a faithful copy.
#pragma once

#if defined(__CUDACC__)
#define XSIM_CUDA 1  // nvcc (both passes) or NVRTC
#else
#define XSIM_HOST 1  // the system C++ compiler
#endif

// ---------------------------------------------------------------------------------------------------------
// Fixed-width integers and math functions.
// NVRTC has no standard library headers, so the types are spelt out there (LP64 sizes, as on the host).
#if defined(__CUDACC_RTC__)
typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;
typedef decltype(sizeof(0)) size_t;
#else
#include <cstddef>
#include <cstdint>
#endif

#if defined(XSIM_HOST)
#include <algorithm>
#include <cmath>
#include <math.h>  // float overloads (sqrt(float), ...) in the global namespace, as CUDA provides them
#endif

// For the checks xsim.runtime appends to every kernel (the Python params mirror against the C struct): a
// type comparison without <type_traits>, and XSIM_EXPORT_FN for a function the runtime calls by name (a
// one-thread __global__ on the GPU, an exported C function on the host). NVRTC has no offsetof, so field
// offsets are measured by such a function at load time rather than by static_assert.
namespace xsim {
template <class A, class B> struct same_type { static const bool value = false; };
template <class A> struct same_type<A, A> { static const bool value = true; };
}  // namespace xsim
#if defined(XSIM_CUDA)
#define XSIM_EXPORT_FN extern "C" __global__ void
#else
#define XSIM_EXPORT_FN extern "C" __attribute__((visibility("default"))) void
#endif

// ---------------------------------------------------------------------------------------------------------
// Qualifiers. XSIM_FN marks a helper callable from bodies on both targets (and from host code in tests).
#if defined(XSIM_HOST)
#define __device__
#define __host__
#define __global__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#endif
#define XSIM_FN __host__ __device__ __forceinline__

// ---------------------------------------------------------------------------------------------------------
// Fast-math intrinsics. On the GPU they are the hardware approximations (a few ulp, see the CUDA C++
// Programming Guide, "Intrinsic Functions"); on the host they are the correctly rounded libm calls, so a
// kernel that uses them agrees between targets only to that accuracy. Macros, because glibc already
// declares functions named __expf, __logf, ... (its internal aliases of expf, logf, ...).
#if defined(XSIM_HOST)
#define __expf(x) expf(x)
#define __exp10f(x) exp10f(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __powf(x, y) powf(x, y)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf(x, s, c)
#define __fdividef(x, y) ((x) / (y))
#define __saturatef(x) fminf(fmaxf(x, 0.0f), 1.0f)
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
using std::max;  // CUDA declares integer and floating min/max in the global namespace
using std::min;
#endif

// sin and cos of 2 pi u, u in [0, 1) (an azimuth). On the GPU sincospif(2 u): its argument reduction is exact,
// whereas the accurate sincosf carries a slow path for huge arguments in its code and in a local-memory buffer
// (a stack frame in every kernel that calls it). On the host sincosf(2 pi u). The two differ by rounding only.
namespace xsim {
XSIM_FN void sincos_2pi(float u, float* s, float* c) {
#if defined(__CUDA_ARCH__)
    sincospif(2.0f * u, s, c);
#else
    sincosf(6.28318530717958648f * u, s, c);
#endif
}
XSIM_FN float cos_2pi(float u) {
#if defined(__CUDA_ARCH__)
    return cospif(2.0f * u);
#else
    return cosf(6.28318530717958648f * u);
#endif
}
}  // namespace xsim

// ---------------------------------------------------------------------------------------------------------
// Atomics: xsim::atomic_add(address, value) returns the old value, for float, double, int32, uint32, int64
// and uint64. On the host an OpenMP atomic (without OpenMP the build runs one thread, where a plain update is
// already atomic). Floating-point atomic sums depend on the order threads arrive in; use the fixed-point
// helpers below for tallies that must be reproducible.
namespace xsim {
#if defined(XSIM_CUDA)
__device__ __forceinline__ float atomic_add(float* a, float v) { return atomicAdd(a, v); }
__device__ __forceinline__ double atomic_add(double* a, double v) { return atomicAdd(a, v); }
__device__ __forceinline__ int32_t atomic_add(int32_t* a, int32_t v) { return atomicAdd(a, v); }
__device__ __forceinline__ uint32_t atomic_add(uint32_t* a, uint32_t v) { return atomicAdd(a, v); }
// uint64_t is `unsigned long` under nvcc's host headers but atomicAdd takes `unsigned long long` (same
// width); signed 64-bit addition is the same bit operation in two's complement.
__device__ __forceinline__ uint64_t atomic_add(uint64_t* a, uint64_t v) {
    return (uint64_t)atomicAdd((unsigned long long*)a, (unsigned long long)v);
}
__device__ __forceinline__ int64_t atomic_add(int64_t* a, int64_t v) {
    return (int64_t)atomicAdd((unsigned long long*)a, (unsigned long long)v);
}
#else
template <class T> inline T atomic_add(T* a, T v) {
    T old;
#pragma omp atomic capture
    {
        old = *a;
        *a += v;
    }
    return old;
}
#endif

// Fixed-point tallies (the MC-GPU way): a quantity is accumulated as round(value * scale) in a 64-bit
// two's-complement integer. Integer addition is associative, so the total does not depend on the order of
// the atomics, hence not on the thread count or the target. Choose scale so that the largest total stays
// below 2^63 / scale (e.g. energy in eV with scale 2^20 leaves room for ~8.8e12 eV per bin). Read back with
// xsim.runtime.from_fixed(array, scale). Rounding is half-up, written out so both targets agree; the product
// is rounded on its own (no fused multiply-add, which the GPU compilers would otherwise form and which
// would move some half-way cases), so CPU and GPU totals are identical bit for bit.
XSIM_FN int64_t to_fixed(double value, double scale) {
#if defined(__CUDA_ARCH__)
    return (int64_t)floor(__dmul_rn(value, scale) + 0.5);
#else
    return (int64_t)floor(value * scale + 0.5);  // the host build uses -ffp-contract=off
#endif
}
__device__ __forceinline__ void atomic_add_fixed(uint64_t* acc, double value, double scale) {
    atomic_add(acc, (uint64_t)to_fixed(value, scale));
}
}  // namespace xsim

// ---------------------------------------------------------------------------------------------------------
// Read-only loads: xsim::ldg(pointer) reads through the GPU's read-only data path (the non-coherent texture
// cache, __ldg) the tables and phantoms that no thread writes during a launch; a plain load on the host.
namespace xsim {
template <class T> XSIM_FN T ldg(const T* address) {
#if defined(__CUDA_ARCH__)
    return __ldg(address);
#else
    return *address;
#endif
}
}  // namespace xsim

// ---------------------------------------------------------------------------------------------------------
// Kernel entries. XSIM_HOST_CHUNK is the OpenMP dynamic-schedule chunk: small enough to balance photons of
// very different cost, large enough to keep scheduling overhead negligible (override with -D).
#ifndef XSIM_HOST_CHUNK
#define XSIM_HOST_CHUNK 64
#endif
#define XSIM_PRAGMA(x) _Pragma(#x)

#if defined(XSIM_CUDA)
#define XSIM_KERNEL(name, Params)                                                                        \
    typedef Params name##_params_t;                                                                      \
    XSIM_EXPORT_FN name(const Params p, uint64_t n) {                                                    \
        const uint64_t stride = (uint64_t)blockDim.x * gridDim.x;                                        \
        for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)           \
            name##_body(p, i);                                                                           \
    }
#else
#define XSIM_KERNEL(name, Params)                                                                        \
    typedef Params name##_params_t;                                                                      \
    XSIM_EXPORT_FN name##_host(const Params* p, uint64_t n, int nthreads) {                              \
        const Params params = *p;                                                                        \
        (void)nthreads;                                                                                  \
        XSIM_PRAGMA(omp parallel for schedule(dynamic, XSIM_HOST_CHUNK) num_threads(nthreads))           \
        for (int64_t i = 0; i < (int64_t)n; ++i) name##_body(params, (uint64_t)i);                       \
    }
#endif

// Persistent entries, for work items of very different cost (Monte Carlo histories): a thread ("slot") runs
// items slot, slot + slots, slot + 2 slots, ... < n, taking the next one as soon as one ends, so that a lane of
// a GPU warp never idles until the warp's longest item is done. The body is
//     __device__ void name_slot(const Params& p, uint64_t slot, uint64_t slots, uint64_t n)
// On the GPU the __global__ entry has __launch_bounds__(threads, min_blocks) (the register budget that lets
// min_blocks blocks share a multiprocessor) and xsim.runtime launches exactly the blocks that fit on the device
// at once (Kernel(..., persistent=True)): slots = every thread of that grid. On the host, XSIM_HOST_SLOTS slots
// (at most n) shared out by OpenMP. Results must not depend on the number of slots.
#ifndef XSIM_HOST_SLOTS
#define XSIM_HOST_SLOTS 4096
#endif
#if defined(XSIM_CUDA)
#define XSIM_PERSISTENT_KERNEL(name, Params, threads, min_blocks)                                        \
    typedef Params name##_params_t;                                                                      \
    extern "C" __global__ void __launch_bounds__(threads, min_blocks) name(const Params p, uint64_t n) { \
        name##_slot(p, (uint64_t)blockIdx.x * blockDim.x + threadIdx.x, (uint64_t)blockDim.x * gridDim.x, n); \
    }
#else
#define XSIM_PERSISTENT_KERNEL(name, Params, threads, min_blocks)                                        \
    typedef Params name##_params_t;                                                                      \
    XSIM_EXPORT_FN name##_host(const Params* p, uint64_t n, int nthreads) {                              \
        const Params params = *p;                                                                        \
        const int64_t slots = (int64_t)(n < (uint64_t)XSIM_HOST_SLOTS ? n : (uint64_t)XSIM_HOST_SLOTS);     \
        (void)nthreads;                                                                                  \
        XSIM_PRAGMA(omp parallel for schedule(dynamic, 1) num_threads(nthreads))                         \
        for (int64_t s = 0; s < slots; ++s) name##_slot(params, (uint64_t)s, (uint64_t)slots, n);        \
    }
#endif
