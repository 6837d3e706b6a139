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
#include "xsim_geometry.cuh"

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

// Mirrored in Python by xsim.projector.ProjectParams.
struct ProjectParams {
    xsim::VoxelGrid grid;
    const uint8_t* material_index;  // [ni*nj*nk] index into the materials
    const float* density;           // [ni*nj*nk] g/cm^3
    const float* mu_over_rho;       // [n_energies * PROJECT_NMAT] cm^2/g, energy-major
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
        GridWalk walk(p.grid, o, d, t0, t1);
        int64_t vox;
        double dt;
        while (walk.next(vox, dt)) L[p.material_index[vox]] += p.density[vox] * (float)dt;
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
    float signal = 0.0f, counted = 0.0f, unattenuated = 0.0f;
    for (uint32_t e = 0; e < p.n_energies; ++e) {
        const float* mu_e = p.mu_over_rho + e * PROJECT_NMAT;
        float mu_l = 0.0f;  // sum_m (mu/rho)_m L_m, dimensionless
        for (int m = 0; m < PROJECT_NMAT; ++m) mu_l += mu_e[m] * L[m];
        // interaction probability in the detector; expm1f keeps a thin layer exact, 1 - expf is faster and
        // as accurate (1e-6) above 0.05; 1 for mu_t = inf (ideal detector)
        const float x = p.det_mu_t[e] * inv_cos;
        const float interacts = x < 0.05f ? -expm1f(-x) : 1.0f - __expf(-x);
        const float incident = p.fluence[e] * interacts;
        const float absorbed = incident * __expf(-mu_l);
        signal += absorbed * p.det_signal[e];
        counted += absorbed * p.det_count[e];
        unattenuated += incident * p.det_signal[e];
    }
    const double scale = 1000.0 / r_mm;
    const float g = (float)(p.pixel_area_mm2 * cos_inc * scale * scale);
    if (p.primary != nullptr) p.primary[pixel] = g * signal;
    if (p.photons != nullptr) p.photons[pixel] = g * counted;
    if (p.flat_field != nullptr) p.flat_field[pixel] = g * unattenuated;
}

XSIM_KERNEL(project, ProjectParams)
