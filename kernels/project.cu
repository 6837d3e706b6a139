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
// Speed (CPU, issue 7; benchmarks/bench_projector_speed.py). The traversal is xsim::GridWalk's arithmetic
// unrolled into scalars (accumulate_line_integrals): the same crossings, the same dt, the same float sums in
// the same order, so the line integrals are bit-identical to the GridWalk::next loop, at ~2x the speed
// (no per-step branch on the axis, no indexed stack arrays on the loop-carried path); what is left is
// mostly waiting for the voxels' cache lines. The energy terms are computed over energies in SIMD lanes on
// the host (one bin per lane, a polynomial exp: exp_neg) and summed in energy order.
#include "xsim_geometry.cuh"

#if defined(XSIM_HOST)
#include <cstring>  // memcpy: float bits in exp_neg and interaction_probability
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
// Energy bins per SIMD block of the host's energy sum (stack arrays of this many floats).
#ifndef PROJECT_ECHUNK
#define PROJECT_ECHUNK 32
#endif

// Per-material density line integrals along the walk w, in units of the ray parameter: L[m] += density * dt
// for every voxel crossed (L starts at 0). This is GridWalk::next's loop with the per-axis state held in
// scalars and the axis picked by selects; it visits the same voxels with the same dt (a tie between two axes
// may visit the two voxels in the other order, but the second one then has dt = 0 and adds exactly 0). The
// running sum of the current material stays in a register and goes back to L only when the material changes:
// the same float additions in the same order as L[m] += x voxel by voxel, without a store-to-load round trip
// per voxel. Measured and dropped (slower on x86-64): two rays walked in lock step to overlap their dependency
// chains (the two states do not fit in the registers), and the walk run 64 voxels ahead of the loads.
__device__ inline void accumulate_line_integrals(const xsim::GridWalk& w, const uint8_t* __restrict__ material,
                                                 const float* __restrict__ density, float* L) {
    double tx = w.t_next[0], ty = w.t_next[1], tz = w.t_next[2];
    const double dx = w.t_delta[0], dy = w.t_delta[1], dz = w.t_delta[2];
    const int64_t sx = w.stride[0], sy = w.stride[1], sz = w.stride[2];
    // Face crossings left along each axis before the walk leaves the grid (never, for a zero direction).
    int32_t rx = w.step[0] > 0 ? w.n[0] - 1 - w.idx[0] : (w.step[0] < 0 ? w.idx[0] : 0x7fffffff);
    int32_t ry = w.step[1] > 0 ? w.n[1] - 1 - w.idx[1] : (w.step[1] < 0 ? w.idx[1] : 0x7fffffff);
    int32_t rz = w.step[2] > 0 ? w.n[2] - 1 - w.idx[2] : (w.step[2] < 0 ? w.idx[2] : 0x7fffffff);
    int64_t voxel = w.voxel;
    double t = w.t;
    const double t_exit = w.t_exit;
    int current = material[voxel];
    float sum = 0.0f;  // = L[current]
    while (t < t_exit) {
        const bool x_before_y = tx < ty;
        const double t_xy = x_before_y ? tx : ty;
        const bool pick_z = !(t_xy < tz);  // GridWalk's choice: ties go to the later axis
        const bool pick_x = !pick_z && x_before_y, pick_y = !pick_z && !x_before_y;
        const double t_face = pick_z ? tz : t_xy;
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

// Energy bin e of one pixel. incident: N(E) (1 - exp(-mu_t / cos)), the photons that would interact in the
// detector without the object (inv_cos = 1 / cos); absorbed: incident exp(-mu_l), after the object
// (Beer-Lambert), mu_l = sum_m (mu/rho)_m L_m summed in material order.
__device__ inline void energy_bin(const EnergyTables& tab, int e, const float* L, float inv_cos, float& incident,
                                  float& absorbed) {
    float mu_l = 0.0f;  // dimensionless
    for (int m = 0; m < PROJECT_NMAT; ++m) mu_l += tab.mu_over_rho[m * tab.n_e + e] * L[m];
    incident = tab.fluence[e] * interaction_probability(tab.det_mu_t[e] * inv_cos);
    absorbed = incident * exp_neg(mu_l);
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

// Thread index -> pixel, tile by tile (xsim.projector launches tiles_x * tiles_y * PROJECT_TILE^2 threads).
__device__ void project_body(const ProjectParams& p, uint64_t i) {
    using namespace xsim;
    const uint32_t tiles_x = (p.cols + PROJECT_TILE - 1) / PROJECT_TILE;
    const uint64_t tile = i / (PROJECT_TILE * PROJECT_TILE), within = i % (PROJECT_TILE * PROJECT_TILE);
    const uint32_t col = (uint32_t)(tile % tiles_x) * PROJECT_TILE + (uint32_t)(within % PROJECT_TILE);
    const uint32_t row = (uint32_t)(tile / tiles_x) * PROJECT_TILE + (uint32_t)(within / PROJECT_TILE);
    if (col >= p.cols || row >= p.rows) return;
    const uint64_t pixel = (uint64_t)row * p.cols + col;
    const double u = (double)col, v = (double)row;
    const Vec3 src = vec3(p.source_mm);
    const Vec3 pix = vec3(p.origin_mm) + u * vec3(p.u_step_mm) + v * vec3(p.v_step_mm);
    const double r_mm = norm(pix - src);

    // 1. Line integrals. The ray is parametrised in index space, t = 0 at the source and 1 at the pixel,
    //    so one unit of t is r_mm millimetres whatever the affine (it maps straight lines to straight lines).
    float L[PROJECT_NMAT];
    for (int m = 0; m < PROJECT_NMAT; ++m) L[m] = 0.0f;
    const Vec3 o = world_to_index(p.grid, src);
    const Vec3 d = world_to_index(p.grid, pix) - o;
    double t0 = 0.0, t1 = 1.0;
    if (grid_clip(p.grid, o, d, t0, t1)) {
        accumulate_line_integrals(GridWalk(p.grid, o, d, t0, t1), p.material_index, p.density, L);
    }
    const float t_to_cm = (float)(0.1 * r_mm);  // mm -> cm: density [g/cm^3] * cm = g/cm^2
    for (int m = 0; m < PROJECT_NMAT; ++m) {
        L[m] *= t_to_cm;
        p.line_integrals[m * p.n_pixels + pixel] = L[m];
    }
    if (p.primary == nullptr && p.photons == nullptr && p.flat_field == nullptr) return;

    // 2. Energy integration.
    const float cos_inc = (float)(fabs(dot(pix - src, vec3(p.normal))) / r_mm);
    const float inv_cos = 1.0f / cos_inc;
    const EnergyTables tab{p.mu_over_rho, p.fluence, p.det_mu_t, p.det_signal, p.det_count, (int)p.n_energies};
    float signal = 0.0f, counted = 0.0f, unattenuated = 0.0f;
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
    const double scale = 1000.0 / r_mm;
    const float g = (float)(p.pixel_area_mm2 * cos_inc * scale * scale);
    if (p.primary != nullptr) p.primary[pixel] = g * signal;
    if (p.photons != nullptr) p.photons[pixel] = g * counted;
    if (p.flat_field != nullptr) p.flat_field[pixel] = g * unattenuated;
}

XSIM_KERNEL(project, ProjectParams)
