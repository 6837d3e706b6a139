// demo_histogram.cu: the smallest complete xsim kernel, and the template for new ones.
// Each index i draws `draws_per_thread` uniforms from its own Philox stream (seed, i), counts them into
// DEMO_NBINS bins with integer atomics and adds them to a fixed-point sum: both results are exact integers,
// identical for any thread count and on either target.
#include "philox.cuh"

// Compile-time specialisation: xsim.runtime.Kernel(..., defines={"DEMO_NBINS": 50}) overrides the default.
#ifndef DEMO_NBINS
#define DEMO_NBINS 64
#endif

// Mirrored in Python by xsim.runtime_selftest.DemoHistogramParams (the runtime checks the layout).
struct DemoHistogramParams {
    uint64_t seed;
    uint64_t* counts;          // [DEMO_NBINS] number of draws per bin
    uint64_t* sum_fixed;       // [1] sum of all draws, in units of 1 / fixed_scale
    double fixed_scale;        // fixed-point units per 1.0
    uint32_t draws_per_thread;
};

__device__ void demo_histogram_body(const DemoHistogramParams& p, uint64_t i) {
    xsim::Philox rng(p.seed, i);
    for (uint32_t k = 0; k < p.draws_per_thread; ++k) {
        const float u = rng.uniform();
        const int bin = min((int)(u * DEMO_NBINS), DEMO_NBINS - 1);  // float rounding may give DEMO_NBINS
        xsim::atomic_add(&p.counts[bin], (uint64_t)1);
        xsim::atomic_add_fixed(p.sum_fixed, u, p.fixed_scale);
    }
}

XSIM_KERNEL(demo_histogram, DemoHistogramParams)
