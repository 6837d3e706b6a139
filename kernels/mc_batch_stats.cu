// mc_batch_stats.cu: folds one batch of a fixed-point Monte Carlo tally into the running sums of the batch
// statistics (xsim.montecarlo._BatchAccumulator) and clears the tally for the next batch, in one pass over
// memory: numpy needs seven passes and two temporaries per batch, ~15 ms for a 128^3 dose map.
// Per element, with x = raw * per_unit the batch's per-photon value and n the batch's photons:
//     s1 += n x,   s2 += n^2 x,   s3 += n^2 x^2,   raw = 0
// in the operation order of the numpy version (scaled = x n; s1 += scaled; scaled *= n; s2 += scaled;
// scaled *= x; s3 += scaled), so both give the same bits. It runs on the host, where the sums live.
// A body is a few arithmetic operations: large chunks of the host's dynamic schedule, or handing out chunks
// costs more than the work (64 per chunk: ~15 ns per element on two threads).
#define XSIM_HOST_CHUNK 65536
#include "xsim_portable.cuh"

// Mirrored in Python by xsim.montecarlo._BatchStatsParams.
struct McBatchStatsParams {
    uint64_t* raw;     // [n] the batch's tally, two's-complement fixed point; set to 0
    double* s1;        // [n] running sums
    double* s2;
    double* s3;
    double per_unit;   // per-photon value of one fixed-point unit in this batch (the tally's unit per photon)
    double photons;    // the batch's photons n
};

__device__ void mc_batch_stats_body(const McBatchStatsParams& p, uint64_t i) {
    // Most voxels of a large dose map receive nothing in a batch: their sums would get + 0.0, which changes no
    // bit of a sum that started at +0 (such a sum is never -0), so skip their memory traffic.
    if (p.raw[i] == 0) return;
    const double x = (double)(int64_t)p.raw[i] * p.per_unit;
    double scaled = x * p.photons;
    p.s1[i] += scaled;
    scaled *= p.photons;
    p.s2[i] += scaled;
    scaled *= x;
    p.s3[i] += scaled;
    p.raw[i] = 0;
}

XSIM_KERNEL(mc_batch_stats, McBatchStatsParams)
