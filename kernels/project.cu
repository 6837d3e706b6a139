// project.cu: the polychromatic ray-cast projector, one thread per detector pixel.
//
// For the ray from the focal spot S to the centre P of pixel (u, v), in one pass:
//  1. exact voxel traversal (xsim::GridWalk) accumulating per-material density line integrals
//         L_m = sum over voxels of material m of  density [g/cm^3] * length [cm]            [g/cm^2]
//     Outside the voxel grid is vacuum.
//  2. energy integration with the spectrum and the detector response (Beer-Lambert per energy bin):
//         I = g * sum_E N(E) s(E) (1 - exp(-mu_t(E) / cos)) exp(-sum_m (mu/rho)_m(E) L_m)
//     N: photons per mAs per mm^2 at 1 m in bin E; s (1 - exp(-mu_t / cos)): the detector response per
//     incident photon at incidence cos (xsim.detector.Detector.kernel_tables);
//     g = pixel area [mm^2] * cos * (1000 mm / r)^2, the fluence-to-pixel factor for a point source (inverse
//     square law and the projected pixel area), r = |P - S|, cos: cosine of the ray's angle to the normal.
//     I is the signal per pixel per mAs (keV for an energy-integrating detector). The flat field is the same
//     sum without the object's attenuation (one more accumulator, almost free).
// No atomics: each pixel is written by one thread, so the result does not depend on the thread count.
//
// Speed (CPU, issue 7; benchmarks/bench_projector_speed.py). The host walks PROJECT_LANES neighbouring rays
// at once, one per lane of a vector register (accumulate_line_integrals_lanes: the scalar walk's arithmetic
// lane by lane, bit-identical line integrals; per image ~1.9x faster with 8 lanes (AVX-512) and 1.3-1.5x with
// 4 (AVX2) than one ray at a time, whose walk waits on its compare -> select -> add chain; with AVX-512 two
// such packets of 8 rays step in turn, another ~10 %), and sums the energy bins of those pixels one pixel
// per SIMD lane (energy_sums_lanes). The scalar walk
// (accumulate_line_integrals, GPU threads and hosts without AVX2) is xsim::GridWalk's arithmetic unrolled
// into scalars: the same crossings, the same dt, the same float sums in the same order as the GridWalk::next
// loop; its energy sum runs over energies in SIMD lanes (one bin per lane) and adds them in energy order.
// Both exponentials on the host are a polynomial exp (exp_neg).
#include "xsim_geometry.cuh"

#if defined(XSIM_HOST)
#include <cstring>  // memcpy: float bits in exp_neg and interaction_probability; lane vectors <-> arrays
#endif

// Compile-time specialisation: the number of materials (xsim.projector passes len(phantom.materials)).
#ifndef PROJECT_NMAT
#define PROJECT_NMAT 4
#endif
// Pixels are visited in PROJECT_TILE x PROJECT_TILE tiles: neighbouring rays cross neighbouring voxels, so
// a tile reuses the cache lines its first rays loaded whatever the view direction and array order (row by
// row, a 512x512 image of a 320x240x256 phantom took ~6x longer on the CPU, bound by memory latency).
#ifndef PROJECT_TILE
#define PROJECT_TILE 16
#endif
// Energy bins per SIMD block of the host's energy sum (stack arrays of this many floats or lane vectors).
#ifndef PROJECT_ECHUNK
#define PROJECT_ECHUNK 32
#endif

// Per-material density line integrals along the walk w, in units of the ray parameter: L[m] += density * dt
// for every voxel crossed (L starts at 0). This is GridWalk::next's loop with the per-axis state held in
// scalars and the axis picked by selects; it visits the same voxels with the same dt (a tie between two axes
// may visit the two voxels in the other order, but the second one then has dt = 0 and adds exactly 0). The
// running sum of the current material stays in a register and goes back to L only when the material changes:
// the same float additions in the same order as L[m] += x voxel by voxel, without a store-to-load round trip
// per voxel. Measured and dropped (slower on x86-64): two rays walked in lock step in scalar registers (the two
// states do not fit; accumulate_line_integrals_lanes does it in vector registers instead), and the walk run
// 64 voxels ahead of the loads.
__device__ inline void accumulate_line_integrals(const xsim::GridWalk& w, const uint8_t* __restrict__ material,
                                                 const float* __restrict__ density, float* L) {
    double tx = w.t_next[0], ty = w.t_next[1], tz = w.t_next[2];
    const double dx = w.t_delta[0], dy = w.t_delta[1], dz = w.t_delta[2];
    const int64_t sx = w.stride[0], sy = w.stride[1], sz = w.stride[2];
    // Face crossings left along each axis before the walk leaves the grid (never, for a zero direction).
    int32_t rx = xsim::faces_left(w.step[0], w.n[0], w.idx[0]);
    int32_t ry = xsim::faces_left(w.step[1], w.n[1], w.idx[1]);
    int32_t rz = xsim::faces_left(w.step[2], w.n[2], w.idx[2]);
    int64_t voxel = w.voxel;
    double t = w.t;
    const double t_exit = w.t_exit;
    int current = material[voxel];
    float sum = 0.0f;  // = L[current]
    while (t < t_exit) {
        bool pick_x, pick_y, pick_z;
        const double t_face = xsim::nearest_face(tx, ty, tz, pick_x, pick_y, pick_z);
        double t_out = t_face < t_exit ? t_face : t_exit;
        t_out = t_out > t ? t_out : t;  // rounding may put the first face a hair before the entry point
        const int m = material[voxel];
        const float x = density[voxel] * (float)(t_out - t);
        if (m != current) {
            L[current] = sum;
            current = m;
            sum = L[m];
        }
        sum += x;
        t = t_out;
        if ((pick_x ? rx : (pick_y ? ry : rz)) == 0) break;  // left the grid through a face
        rx -= pick_x;
        ry -= pick_y;
        rz -= pick_z;
        voxel += pick_x ? sx : (pick_y ? sy : sz);
        tx += pick_x ? dx : 0.0;  // + 0.0 is exact: the other axes keep their values bit for bit
        ty += pick_y ? dy : 0.0;
        tz += pick_z ? dz : 0.0;
    }
    L[current] = sum;
}

// PROJECT_LANES: rays walked at once on the host, one per lane of a vector register of doubles (the build
// uses -march=native unless XSIM_MARCH_NATIVE=0): 8 with AVX-512, 4 with AVX2; without them the scalar walk
// (the same code on SSE2 register pairs measured ~4x slower than it). Any value builds anywhere (the tests
// compare 4 and 8 lanes with 1).
#if defined(XSIM_HOST) && !defined(PROJECT_LANES)
#if defined(__AVX512F__)
#define PROJECT_LANES 8
#elif defined(__AVX2__)
#define PROJECT_LANES 4
#else
#define PROJECT_LANES 1
#endif
#endif

// XSIM_PROJECT_AVX512: the 8-lane walk's steps in AVX-512 intrinsics (mask registers) rather than generic
// vectors, whose compares GCC turns into vectors of all-ones lanes and back: ~10 % less time per image
// (alternating runs, 512 x 512). PROJECT_GENERIC_LANES keeps the generic steps (the tests compare both).
#if defined(XSIM_HOST) && PROJECT_LANES == 8 && defined(__AVX512F__) && !defined(PROJECT_GENERIC_LANES)
#define XSIM_PROJECT_AVX512 1
#include <immintrin.h>
#else
#define XSIM_PROJECT_AVX512 0
#endif

#if defined(XSIM_HOST) && PROJECT_LANES > 1
// The same walk for PROJECT_LANES rays at once on the host, one ray per lane of GCC/Clang vector types: the
// per-step face choice is the scalar walk's, lane by lane (same compares, same selects, same double sums), so
// each lane visits the same voxels with the same dt, and L[lane][m] += density * dt receives the same float
// additions in the same order as the scalar walk's running sum: the line integrals are bit-identical. Why:
// the scalar walk waits on its chain of compare -> select -> add every voxel; the lanes share that chain's
// latency and their voxel loads overlap. A lane that has left the grid keeps adding exact zeros to the last
// voxel it visited (one that never entered, to voxel 0), until every lane is done; the lanes are
// neighbouring pixels of a tile, so their walks have nearly the same length.
typedef double lanes_f64 __attribute__((vector_size(PROJECT_LANES * sizeof(double))));
typedef int64_t lanes_i64 __attribute__((vector_size(PROJECT_LANES * sizeof(int64_t))));
typedef float lanes_f32 __attribute__((vector_size(PROJECT_LANES * sizeof(float))));

// The walk state of one packet of PROJECT_LANES rays, one ray per lane.
struct LanesWalk {
    lanes_f64 tx, ty, tz, dx, dy, dz, t, t_exit;
    lanes_f64 rx, ry, rz;  // faces left per axis: small integers, held as doubles (a double compare is one
                           // instruction on every x86-64 vector unit, a 64-bit integer one is not)
    lanes_i64 sx, sy, sz, voxel;
};

inline void start_lanes(const xsim::GridWalk* walks, const bool* enters, LanesWalk& s) {
    for (int l = 0; l < PROJECT_LANES; ++l) {
        const xsim::GridWalk& w = walks[l];
        if (!enters[l]) {  // a lane with no walk: t = t_exit = 0, faces at infinity: dt = 0 in voxel 0
            s.tx[l] = s.ty[l] = s.tz[l] = s.dx[l] = s.dy[l] = s.dz[l] = 1e300;
            s.t[l] = s.t_exit[l] = 0.0;
            s.rx[l] = s.ry[l] = s.rz[l] = 0x7fffffff;
            s.sx[l] = s.sy[l] = s.sz[l] = s.voxel[l] = 0;
            continue;
        }
        s.tx[l] = w.t_next[0], s.ty[l] = w.t_next[1], s.tz[l] = w.t_next[2];
        s.dx[l] = w.t_delta[0], s.dy[l] = w.t_delta[1], s.dz[l] = w.t_delta[2];
        s.sx[l] = w.stride[0], s.sy[l] = w.stride[1], s.sz[l] = w.stride[2];
        s.rx[l] = xsim::faces_left(w.step[0], w.n[0], w.idx[0]);
        s.ry[l] = xsim::faces_left(w.step[1], w.n[1], w.idx[1]);
        s.rz[l] = xsim::faces_left(w.step[2], w.n[2], w.idx[2]);
        s.voxel[l] = w.voxel;
        s.t[l] = w.t;
        s.t_exit[l] = w.t_exit;
    }
}

#if XSIM_PROJECT_AVX512
// The generic loop's steps (accumulate_line_integrals_lanes below) with AVX-512 mask registers: a compare
// gives a mask, blends and masked adds take one; the same compares (ordered, as C's < and ==), selects and
// sums, so the same bits. PROJECT_PACKETS packets are walked in turn, step by step: one packet's step waits
// on its chain of compare -> blend -> compare -> masked add, and the other packet's step fills that wait.
struct Avx512Walk {
    __m512d tx, ty, tz, dx, dy, dz, t, t_exit, rx, ry, rz;
    __m512i sx, sy, sz, voxel;
    __mmask8 live;
    float (*L)[PROJECT_NMAT];

    inline void start(const LanesWalk& s, float (*L_)[PROJECT_NMAT]) {
        tx = (__m512d)s.tx, ty = (__m512d)s.ty, tz = (__m512d)s.tz, t = (__m512d)s.t;
        dx = (__m512d)s.dx, dy = (__m512d)s.dy, dz = (__m512d)s.dz, t_exit = (__m512d)s.t_exit;
        rx = (__m512d)s.rx, ry = (__m512d)s.ry, rz = (__m512d)s.rz;
        sx = (__m512i)s.sx, sy = (__m512i)s.sy, sz = (__m512i)s.sz, voxel = (__m512i)s.voxel;
        live = _mm512_cmp_pd_mask(t, t_exit, _CMP_LT_OQ);
        L = L_;
    }

    inline void step(const uint8_t* __restrict__ material, const float* __restrict__ density) {
        const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
        const __mmask8 x_before_y = _mm512_cmp_pd_mask(tx, ty, _CMP_LT_OQ);
        const __m512d t_xy = _mm512_mask_blend_pd(x_before_y, ty, tx);
        const __mmask8 pick_z = (__mmask8)~_mm512_cmp_pd_mask(t_xy, tz, _CMP_LT_OQ);
        const __mmask8 pick_x = (__mmask8)(~pick_z & x_before_y), pick_y = (__mmask8)(~pick_z & ~x_before_y);
        const __m512d t_face = _mm512_mask_blend_pd(pick_z, t_xy, tz);
        __m512d t_out = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(t_face, t_exit, _CMP_LT_OQ), t_exit, t_face);
        t_out = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(t_out, t, _CMP_GT_OQ), t, t_out);
        alignas(64) int64_t v[PROJECT_LANES];
        alignas(32) float dt[PROJECT_LANES];
        _mm512_store_si512((void*)v, voxel);
        _mm256_store_ps(dt, _mm512_cvtpd_ps(_mm512_sub_pd(t_out, t)));
        for (int l = 0; l < PROJECT_LANES; ++l) L[l][material[v[l]]] += density[v[l]] * dt[l];
        t = t_out;
        const __m512d remaining = _mm512_mask_blend_pd(pick_x, _mm512_mask_blend_pd(pick_y, rz, ry), rx);
        live &= (__mmask8)~_mm512_cmp_pd_mask(remaining, zero, _CMP_EQ_OQ);  // left the grid through a face
        const __mmask8 go_x = pick_x & live, go_y = pick_y & live, go_z = pick_z & live;
        rx = _mm512_mask_sub_pd(rx, go_x, rx, one);
        ry = _mm512_mask_sub_pd(ry, go_y, ry, one);
        rz = _mm512_mask_sub_pd(rz, go_z, rz, one);
        voxel = _mm512_mask_add_epi64(voxel, go_x, voxel, sx);
        voxel = _mm512_mask_add_epi64(voxel, go_y, voxel, sy);
        voxel = _mm512_mask_add_epi64(voxel, go_z, voxel, sz);
        tx = _mm512_mask_add_pd(tx, go_x, tx, dx);
        ty = _mm512_mask_add_pd(ty, go_y, ty, dy);
        tz = _mm512_mask_add_pd(tz, go_z, tz, dz);
        live &= _mm512_cmp_pd_mask(t, t_exit, _CMP_LT_OQ);
    }
};
#define PROJECT_PACKETS 2
#else
#define PROJECT_PACKETS 1
#endif

// Per-material line integrals of the PROJECT_PACKETS x PROJECT_LANES rays of walks (packet k: lanes
// k * PROJECT_LANES ...); L[ray][m] starts at 0.
inline void accumulate_line_integrals_lanes(const xsim::GridWalk* walks, const bool* enters,
                                            const uint8_t* __restrict__ material, const float* __restrict__ density,
                                            float (*L)[PROJECT_NMAT]) {
#if XSIM_PROJECT_AVX512
    Avx512Walk packet[PROJECT_PACKETS];
    for (int k = 0; k < PROJECT_PACKETS; ++k) {
        LanesWalk s;
        start_lanes(walks + k * PROJECT_LANES, enters + k * PROJECT_LANES, s);
        packet[k].start(s, L + k * PROJECT_LANES);
    }
    for (;;) {
        bool any = false;
        for (int k = 0; k < PROJECT_PACKETS; ++k) {
            if (!packet[k].live) continue;
            packet[k].step(material, density);
            any = true;
        }
        if (!any) break;
    }
#else
    LanesWalk s;
    start_lanes(walks, enters, s);
    lanes_f64 tx = s.tx, ty = s.ty, tz = s.tz, dx = s.dx, dy = s.dy, dz = s.dz, t = s.t, t_exit = s.t_exit;
    lanes_f64 rx = s.rx, ry = s.ry, rz = s.rz;
    lanes_i64 sx = s.sx, sy = s.sy, sz = s.sz, voxel = s.voxel;
    const lanes_f64 zero = t - t, one = zero + 1.0;
    lanes_i64 live = t < t_exit;  // all ones: the lane's walk goes on
    for (;;) {
        int64_t any = 0;
        for (int l = 0; l < PROJECT_LANES; ++l) any |= live[l];
        if (!any) break;
        const lanes_i64 x_before_y = tx < ty;
        const lanes_f64 t_xy = x_before_y ? tx : ty;
        const lanes_i64 pick_z = ~(t_xy < tz);
        const lanes_i64 pick_x = ~pick_z & x_before_y, pick_y = ~pick_z & ~x_before_y;
        const lanes_f64 t_face = pick_z ? tz : t_xy;
        lanes_f64 t_out = t_face < t_exit ? t_face : t_exit;
        t_out = t_out > t ? t_out : t;
        const lanes_f32 dt = __builtin_convertvector(t_out - t, lanes_f32);
        for (int l = 0; l < PROJECT_LANES; ++l) L[l][material[voxel[l]]] += density[voxel[l]] * dt[l];
        t = t_out;
        const lanes_f64 remaining = pick_x ? rx : (pick_y ? ry : rz);
        live &= ~(remaining == zero);  // left the grid through a face
        rx -= (pick_x & live) ? one : zero;
        ry -= (pick_y & live) ? one : zero;
        rz -= (pick_z & live) ? one : zero;
        voxel += (pick_x ? sx : (pick_y ? sy : sz)) & live;
        tx += (pick_x & live) ? dx : zero;
        ty += (pick_y & live) ? dy : zero;
        tz += (pick_z & live) ? dz : zero;
        live &= t < t_exit;
    }
#endif
}
#endif

// exp(-y) for y >= 0 in the energy sum. On the GPU the hardware __expf. On the host a branch-free polynomial
// the compiler can vectorise (libm's expf is a scalar call): -y = n ln2 + r, |r| <= ln2 / 2 (Cody & Waite's
// two-part ln2; n rounded by the 1.5 * 2^23 shifter), exp(r) by its Taylor series to r^7 (truncation
// < 5e-9), times 2^n built in the exponent bits in two halves so that subnormal results come out as libm's.
// y is first clamped to 104 (exp(-104) is 0 in float; also maps inf, an ideal detector's mu_t, to 0) by an
// integer min on its bits, monotonic for y >= 0: a float select would stop the vectoriser under the default
// -ftrapping-math. Agrees with glibc's expf to 1.2e-7 relative (2 ulp) over y in [0, 87] (checked on 2e6
// points), and gives the same subnormals and 0 beyond; benchmarks/bench_projector_speed.py --baseline
// compares whole images with the scalar libm version of this kernel (<= 4e-7 relative).
__device__ inline float exp_neg(float y) {
#if defined(XSIM_CUDA)
    return __expf(-y);
#else
    int32_t bits;
    memcpy(&bits, &y, sizeof bits);
    bits = bits < 0x42D00000 ? bits : 0x42D00000;  // the bits of 104.0f
    memcpy(&y, &bits, sizeof y);
    const float n = (y * -1.44269504f - 12582912.0f) + 12582912.0f;  // round(-y / ln2)
    const float r = (-y - n * 0.693145752f) - n * 1.42860677e-6f;    // ln2 = 0.693145752 + 1.42860677e-6
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t k = (int32_t)n, k1 = k / 2, k2 = k - k1;
    const int32_t b1 = (k1 + 127) << 23, b2 = (k2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
#endif
}

// 1 - exp(-x), x >= 0: the probability that a photon interacts in a detector layer of optical depth x.
// Below 0.05 its Taylor series to x^7 (truncation < 1e-13 relative; 1 - exp(-x) would lose digits there),
// else 1 - exp(-x); 1 for x = inf (ideal detector). The choice is a blend of the bits (x >= 0, so its bits
// order like its values), for the vectoriser as in exp_neg.
__device__ inline float interaction_probability(float x) {
    const float series = x * (1.0f - x * (1.0f / 2.0f) * (1.0f - x * (1.0f / 3.0f) * (1.0f - x * (1.0f / 4.0f) *
                         (1.0f - x * (1.0f / 5.0f) * (1.0f - x * (1.0f / 6.0f) * (1.0f - x * (1.0f / 7.0f)))))));
    const float direct = 1.0f - exp_neg(x);
#if defined(XSIM_CUDA)
    return x < 0.05f ? series : direct;
#else
    int32_t bits, series_bits, direct_bits;
    memcpy(&bits, &x, sizeof bits);
    memcpy(&series_bits, &series, sizeof bits);
    memcpy(&direct_bits, &direct, sizeof bits);
    const int32_t use_series = -(int32_t)(bits < 0x3D4CCCCD);  // all ones below the bits of 0.05f
    const int32_t chosen = (series_bits & use_series) | (direct_bits & ~use_series);
    float result;
    memcpy(&result, &chosen, sizeof result);
    return result;
#endif
}

// The per-energy tables of the launch (see ProjectParams), restrict-qualified for the vectoriser.
struct EnergyTables {
    const float* __restrict__ mu_over_rho;
    const float* __restrict__ fluence;
    const float* __restrict__ det_mu_t;
    const float* __restrict__ det_signal;
    const float* __restrict__ det_count;
    int n_e;  // signed: lets the compiler see mu_over_rho[m * n_e + e] as affine
};

// Energy bin e of one pixel, given its attenuation mu_l = sum_m (mu/rho)_m L_m (dimensionless, summed in
// material order). incident: N(E) (1 - exp(-mu_t / cos)), the photons that would interact in the detector
// without the object (inv_cos = 1 / cos); absorbed: incident exp(-mu_l), after the object (Beer-Lambert).
// kThick: the caller knows mu_t >= 0.05 (then mu_t / cos too, cos <= 1), where interaction_probability is
// 1 - exp(-x): the same value without its series branch.
template <bool kThick = false>
__device__ __forceinline__ void energy_terms(const EnergyTables& tab, int e, float mu_l, float inv_cos, float& incident,
                                    float& absorbed) {
    const float x = tab.det_mu_t[e] * inv_cos;
    incident = tab.fluence[e] * (kThick ? 1.0f - exp_neg(x) : interaction_probability(x));
    absorbed = incident * exp_neg(mu_l);
}

// energy_terms with mu_l summed here from the line integrals L of one pixel.
__device__ inline void energy_bin(const EnergyTables& tab, int e, const float* L, float inv_cos, float& incident,
                                  float& absorbed) {
    float mu_l = 0.0f;
    for (int m = 0; m < PROJECT_NMAT; ++m) mu_l += tab.mu_over_rho[m * tab.n_e + e] * L[m];
    energy_terms(tab, e, mu_l, inv_cos, incident, absorbed);
}

// Mirrored in Python by xsim.projector.ProjectParams.
struct ProjectParams {
    xsim::VoxelGrid grid;
    const uint8_t* material_index;  // [ni*nj*nk] index into the materials
    const float* density;           // [ni*nj*nk] g/cm^3
    const float* mu_over_rho;       // [PROJECT_NMAT * n_energies] cm^2/g, material-major (SIMD over E)
    const float* fluence;           // [n_energies] photons / mAs / mm^2 at 1 m
    const float* det_mu_t;          // [n_energies] detector mu * thickness at normal incidence (inf: ideal)
    const float* det_signal;        // [n_energies] signal per interacting photon (keV or counts)
    const float* det_count;         // [n_energies] counted photons per interacting photon (fill factor)
    float* line_integrals;          // [PROJECT_NMAT * n_pixels] g/cm^2, material-major
    float* primary;                 // [n_pixels] or null: signal per pixel per mAs
    float* photons;                 // [n_pixels] or null: detected photons per pixel per mAs
    float* flat_field;              // [n_pixels] or null: primary without the object
    double source_mm[3];
    double origin_mm[3];            // centre of pixel (u=0, v=0)
    double u_step_mm[3];            // one column
    double v_step_mm[3];            // one row
    double normal[3];               // unit panel normal
    double pixel_area_mm2;
    uint64_t n_pixels;
    uint32_t rows;
    uint32_t cols;
    uint32_t n_energies;
};

// Thread index -> pixel, tile by tile (xsim.projector launches tiles_x * tiles_y * PROJECT_TILE^2 threads):
// false for the padding of the last tiles. pix_mm: the pixel centre.
__device__ inline bool tile_pixel(const ProjectParams& p, uint64_t i, uint64_t& pixel, xsim::Vec3& pix_mm) {
    using namespace xsim;
    const uint32_t tiles_x = (p.cols + PROJECT_TILE - 1) / PROJECT_TILE;
    const uint64_t tile = i / (PROJECT_TILE * PROJECT_TILE), within = i % (PROJECT_TILE * PROJECT_TILE);
    const uint32_t col = (uint32_t)(tile % tiles_x) * PROJECT_TILE + (uint32_t)(within % PROJECT_TILE);
    const uint32_t row = (uint32_t)(tile / tiles_x) * PROJECT_TILE + (uint32_t)(within / PROJECT_TILE);
    if (col >= p.cols || row >= p.rows) return false;
    pixel = (uint64_t)row * p.cols + col;
    pix_mm = vec3(p.origin_mm) + (double)col * vec3(p.u_step_mm) + (double)row * vec3(p.v_step_mm);
    return true;
}

// The ray from the source to pix_mm, parametrised in index space: t = 0 at the source and 1 at the pixel, so
// one unit of t is r_mm millimetres whatever the affine (it maps straight lines to straight lines). False
// when it misses the grid; otherwise the walk over the voxels it crosses.
__device__ inline bool pixel_walk(const ProjectParams& p, xsim::Vec3 pix_mm, xsim::GridWalk& walk) {
    using namespace xsim;
    const Vec3 o = world_to_index(p.grid, vec3(p.source_mm));
    const Vec3 d = world_to_index(p.grid, pix_mm) - o;
    double t0 = 0.0, t1 = 1.0;
    if (!grid_clip(p.grid, o, d, t0, t1)) return false;
    walk = GridWalk(p.grid, o, d, t0, t1);
    return true;
}

// Scales the line integrals L of one pixel from units of t to g/cm^2 and stores them; returns 1 / cos of the
// ray's incidence on the panel and g = pixel area [mm^2] * cos * (1000 mm / r)^2, the fluence-to-pixel factor.
__device__ inline void store_line_integrals(const ProjectParams& p, uint64_t pixel, xsim::Vec3 pix, float* L,
                                            float& inv_cos, float& g) {
    using namespace xsim;
    const Vec3 src = vec3(p.source_mm);
    const double r_mm = norm(pix - src);
    const float t_to_cm = (float)(0.1 * r_mm);  // mm -> cm: density [g/cm^3] * cm = g/cm^2
    for (int m = 0; m < PROJECT_NMAT; ++m) {
        L[m] *= t_to_cm;
        p.line_integrals[m * p.n_pixels + pixel] = L[m];
    }
    const float cos_inc = (float)(fabs(dot(pix - src, vec3(p.normal))) / r_mm);
    inv_cos = 1.0f / cos_inc;
    const double scale = 1000.0 / r_mm;
    g = (float)(p.pixel_area_mm2 * cos_inc * scale * scale);
}

__device__ inline bool wants_signals(const ProjectParams& p) {
    return p.primary != nullptr || p.photons != nullptr || p.flat_field != nullptr;
}

__device__ inline void store_signals(const ProjectParams& p, uint64_t pixel, float g, float signal, float counted,
                                     float unattenuated) {
    if (p.primary != nullptr) p.primary[pixel] = g * signal;
    if (p.photons != nullptr) p.photons[pixel] = g * counted;
    if (p.flat_field != nullptr) p.flat_field[pixel] = g * unattenuated;
}

__device__ inline EnergyTables energy_tables(const ProjectParams& p) {
    return EnergyTables{p.mu_over_rho, p.fluence, p.det_mu_t, p.det_signal, p.det_count, (int)p.n_energies};
}

// The energy sums of one pixel (GPU threads; hosts without vector lanes): detected signal, detected photons
// and the flat field's signal, each summed over the bins in energy order.
__device__ void energy_sums(const EnergyTables& tab, const float* L, float inv_cos, float& signal, float& counted,
                            float& unattenuated) {
    signal = counted = unattenuated = 0.0f;
#if defined(XSIM_HOST)
    // The bins' terms PROJECT_ECHUNK at a time in SIMD lanes, then summed one by one in energy order: the
    // same float sums as a scalar loop, so the images move only by exp_neg's few ulp (a lane-wise reduction
    // would reassociate 150-odd additions and move them by up to ~1e-6).
    for (int e0 = 0; e0 < tab.n_e; e0 += PROJECT_ECHUNK) {
        const int n = tab.n_e - e0 < PROJECT_ECHUNK ? tab.n_e - e0 : PROJECT_ECHUNK;
        float s_term[PROJECT_ECHUNK], c_term[PROJECT_ECHUNK], u_term[PROJECT_ECHUNK];
        XSIM_PRAGMA(omp simd)
        for (int j = 0; j < n; ++j) {
            float incident, absorbed;
            energy_bin(tab, e0 + j, L, inv_cos, incident, absorbed);
            s_term[j] = absorbed * tab.det_signal[e0 + j];
            c_term[j] = absorbed * tab.det_count[e0 + j];
            u_term[j] = incident * tab.det_signal[e0 + j];
        }
        for (int j = 0; j < n; ++j) {
            signal += s_term[j];
            counted += c_term[j];
            unattenuated += u_term[j];
        }
    }
#else
    for (int e = 0; e < tab.n_e; ++e) {
        float incident, absorbed;
        energy_bin(tab, e, L, inv_cos, incident, absorbed);
        signal += absorbed * tab.det_signal[e];
        counted += absorbed * tab.det_count[e];
        unattenuated += incident * tab.det_signal[e];
    }
#endif
}

#if defined(XSIM_HOST) && PROJECT_LANES > 1
template <bool kThick>
inline void add_energy_bin_lanes(const EnergyTables& tab, int e, const float* __restrict__ mu_l,
                                 const float* __restrict__ inv_cos, float* __restrict__ signal,
                                 float* __restrict__ counted, float* __restrict__ unattenuated) {
    XSIM_PRAGMA(omp simd)
    for (int l = 0; l < PROJECT_LANES; ++l) {
        float incident, absorbed;
        energy_terms<kThick>(tab, e, mu_l[l], inv_cos[l], incident, absorbed);
        signal[l] += absorbed * tab.det_signal[e];
        counted[l] += absorbed * tab.det_count[e];
        unattenuated[l] += incident * tab.det_signal[e];
    }
}

// The energy sums of the PROJECT_LANES pixels of a packet, one pixel per SIMD lane: each lane adds its bins in
// energy order, the same float sums as energy_sums (bit-identical), with no serial reduction across lanes.
// Lt: the line integrals transposed, Lt[m][lane]. The attenuations mu_l of PROJECT_ECHUNK bins are summed
// first, material by material in material order, over the materials some lane crossed: the rest would add
// (mu/rho) x 0 = +0, which leaves a sum of non-negative terms unchanged, so skipping them keeps the bits.
// A packet rarely crosses all the materials (contrast agent and metal sit in small regions).
inline void energy_sums_lanes(const EnergyTables& tab, const float (*Lt)[PROJECT_LANES], const float* inv_cos,
                              float* signal, float* counted, float* unattenuated) {
    int crossed[PROJECT_NMAT], n_crossed = 0;
    for (int m = 0; m < PROJECT_NMAT; ++m) {
        bool any = false;
        for (int l = 0; l < PROJECT_LANES; ++l) any |= Lt[m][l] != 0.0f;
        if (any) crossed[n_crossed++] = m;
    }
    for (int l = 0; l < PROJECT_LANES; ++l) signal[l] = counted[l] = unattenuated[l] = 0.0f;
    for (int e0 = 0; e0 < tab.n_e; e0 += PROJECT_ECHUNK) {
        const int n = tab.n_e - e0 < PROJECT_ECHUNK ? tab.n_e - e0 : PROJECT_ECHUNK;
        lanes_f32 mu_l[PROJECT_ECHUNK];
        for (int e = 0; e < n; ++e) mu_l[e] = lanes_f32{};
        for (int j = 0; j < n_crossed; ++j) {
            const float* mu = tab.mu_over_rho + crossed[j] * tab.n_e + e0;
            lanes_f32 L;
            memcpy(&L, Lt[crossed[j]], sizeof L);
            for (int e = 0; e < n; ++e) mu_l[e] += mu[e] * L;
        }
        for (int e = 0; e < n; ++e) {
            float mu_e[PROJECT_LANES];
            memcpy(mu_e, &mu_l[e], sizeof mu_e);
            if (tab.det_mu_t[e0 + e] >= 0.05f)
                add_energy_bin_lanes<true>(tab, e0 + e, mu_e, inv_cos, signal, counted, unattenuated);
            else
                add_energy_bin_lanes<false>(tab, e0 + e, mu_e, inv_cos, signal, counted, unattenuated);
        }
    }
}
#endif

__device__ void project_body(const ProjectParams& p, uint64_t i) {
    using namespace xsim;
    const EnergyTables tab = energy_tables(p);
#if defined(XSIM_HOST) && PROJECT_LANES > 1
    constexpr int kRays = PROJECT_PACKETS * PROJECT_LANES;
    static_assert(PROJECT_TILE % kRays == 0, "a body's rays must be neighbours in one tile row");
    if (i % kRays != 0) return;  // index i runs the rays i .. i + kRays - 1
    GridWalk walks[kRays];
    bool valid[kRays], enters[kRays];
    uint64_t pixel[kRays];
    Vec3 pix[kRays];
    float L[kRays][PROJECT_NMAT] = {};
    bool any_valid = false;
    for (int l = 0; l < kRays; ++l) {
        valid[l] = tile_pixel(p, i + l, pixel[l], pix[l]);
        enters[l] = valid[l] && pixel_walk(p, pix[l], walks[l]);
        any_valid |= valid[l];
    }
    if (!any_valid) return;  // the padding of the last tiles
    accumulate_line_integrals_lanes(walks, enters, p.material_index, p.density, L);
    for (int k = 0; k < PROJECT_PACKETS; ++k) {
        const int r0 = k * PROJECT_LANES;
        float inv_cos[PROJECT_LANES] = {}, g[PROJECT_LANES] = {}, Lt[PROJECT_NMAT][PROJECT_LANES];
        for (int l = 0; l < PROJECT_LANES; ++l) {
            if (valid[r0 + l]) store_line_integrals(p, pixel[r0 + l], pix[r0 + l], L[r0 + l], inv_cos[l], g[l]);
            for (int m = 0; m < PROJECT_NMAT; ++m) Lt[m][l] = L[r0 + l][m];
        }
        if (!wants_signals(p)) continue;
        float signal[PROJECT_LANES], counted[PROJECT_LANES], unattenuated[PROJECT_LANES];
        energy_sums_lanes(tab, Lt, inv_cos, signal, counted, unattenuated);
        for (int l = 0; l < PROJECT_LANES; ++l)
            if (valid[r0 + l]) store_signals(p, pixel[r0 + l], g[l], signal[l], counted[l], unattenuated[l]);
    }
#else
    uint64_t pixel;
    Vec3 pix;
    if (!tile_pixel(p, i, pixel, pix)) return;
    float L[PROJECT_NMAT];
    for (int m = 0; m < PROJECT_NMAT; ++m) L[m] = 0.0f;
    GridWalk walk;
    if (pixel_walk(p, pix, walk)) accumulate_line_integrals(walk, p.material_index, p.density, L);
    float inv_cos, g;
    store_line_integrals(p, pixel, pix, L, inv_cos, g);
    if (!wants_signals(p)) return;
    float signal, counted, unattenuated;
    energy_sums(tab, L, inv_cos, signal, counted, unattenuated);
    store_signals(p, pixel, g, signal, counted, unattenuated);
#endif
}

XSIM_KERNEL(project, ProjectParams)
