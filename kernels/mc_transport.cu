// mc_transport.cu: Monte Carlo photon transport through a voxel phantom onto a flat-panel detector
// (the xsim reference path; physics and units in docs/monte_carlo.md, driver xsim/montecarlo.py).
//
// One index = one photon history, with its own Philox stream (seed, first_photon + i):
//   source  point focal spot, direction uniform in solid angle over the detector rectangle, energy from the
//           spectrum by the alias method;
//   phantom Woodcock (delta) tracking (W. Woodcock et al., ANL-7050, 1965) with region majorants: the grid
//           is cut into blocks of B^3 voxels, each with a majorant mu_max(block, energy bin) = max over its
//           voxels of mu(E) for E in the bin; free flights are sampled with the block's majorant, a real
//           interaction accepted with probability mu(E, voxel)/mu_max, otherwise a virtual (null) collision;
//           a flight draws its optical depth tau = -ln u once and spends it block by block, tau - mu_max ds
//           left at each face (the inverse transform of the free path under the piecewise-constant majorant,
//           one logarithm per flight however many blocks it crosses); blocks are walked like voxels
//           (Amanatides & Woo 1987);
//   physics photoelectric absorption (local deposit, no fluorescence), Compton (KN x S, local deposit of
//           E - E'), Rayleigh (Thomson x F^2); photons below the table's lowest energy deposit locally;
//   world   outside the phantom's voxel box: vacuum, or a homogeneous world material (e.g. air) inside a
//           sphere (world_centre_mm, world_radius_mm) where photons interact like in the phantom (the energy
//           they leave there is tallied apart); photons stop at the detector plane;
//   detector energy-integrating (or counting) panel: signal(E) x (1 - exp(-mu t(E) / cos incidence)),
//           behind an optional linear anti-scatter grid (mc_detector.cuh).
// Tallies are fixed point (xsim::atomic_add_fixed), so results do not depend on thread count or order.
#include "mc_detector.cuh"
#include "mc_physics.cuh"
#include "mc_source.cuh"
#include "xsim_geometry.cuh"

// A hint that *address is about to be read-modified-written: on the host the deposit tally (16 MB for a 128^3
// phantom) misses the cache at almost every real interaction, and a locked add on a missing line stalls; the
// hint, given before the angular sampling, lets the miss overlap it. The GPU hides latency with other warps
// instead: no-op there. No effect on results.
#if defined(XSIM_HOST)
#define XSIM_PREFETCH_WRITE(address) __builtin_prefetch((address), 1, 3)
#else
#define XSIM_PREFETCH_WRITE(address) ((void)(address))
#endif

namespace xsim {
namespace mc {

// Image tallies, in this order: never interacted, exactly one Compton, exactly one Rayleigh, two or more.
enum ImageKind { kPrimary = 0, kCompton = 1, kRayleigh = 2, kMultiple = 3, kImageKinds = 4 };

// Energy bookkeeping slots (keV): what entered, what the phantom kept, what reached the detector plane
// (whether or not it hit the panel), what left the world elsewhere, what the world material kept.
// incident = deposited + plane + elsewhere + world.
enum EnergySlot { kIncident = 0, kDeposited = 1, kReachedPlane = 2, kEscapedElsewhere = 3, kDepositedWorld = 4 };
#define XSIM_MC_ENERGY_ROWS 256  // photons spread over rows of 8 words (one cache line): few shared atomics
#define XSIM_MC_ENERGY_COLS 8

}  // namespace mc
}  // namespace xsim

// Mirrored in Python by xsim.montecarlo._TransportParams (the runtime checks the layout).
struct McTransportParams {
    uint64_t seed;
    uint64_t first_photon;  // photon index of i = 0: batches are disjoint index ranges of one seed
    // phantom: per voxel [i, j, k] (C order) density and material packed in one word (unpack_voxel)
    const uint32_t* voxels;
    xsim::VoxelGrid grid;  // shape and world mm <-> voxel index (xsim_geometry.cuh)
    // source (focal spot) and collimated field
    xsim::mc::FocalSpot source;
    xsim::mc::Field field;
    // detector: pixel (u, v) centre = origin + u u_step + v v_step; dual_u . (x - origin) = u on the plane
    float det_origin_mm[3];
    float det_dual_u[3];
    float det_dual_v[3];
    int32_t det_shape[2];  // rows, cols
    // spectrum (alias table over discrete energies)
    const float* alias_prob;
    const int32_t* alias_index;
    const float* alias_energy_keV;
    int32_t n_spectrum;
    // physics tables (see mc_physics.cuh) on the energy grid e_min + k / inv_de and the x grid j dx
    float e_min_keV;
    float inv_de_keV;
    int32_t n_e;
    float dx;
    float inv_dx;
    int32_t n_x;
    const float* xs;
    const float* majorant_per_mm;  // [blocks][n_bins], 1/mm (region majorants, see the header comment)
    int32_t block;                 // block edge B, voxels
    int32_t blocks[3];             // ceil(n / B) per axis
    float bin_log_e_min;           // majorant energy bins: bin = floor((ln E - bin_log_e_min) * bin_inv_log_width)
    float bin_inv_log_width;
    int32_t n_bins;
    const float* compton_s;
    const float* rayleigh_cum;
    const float* det_mu_t;    // detector layer mu(E) t at normal incidence (may be +inf: ideal)
    const float* det_signal;  // signal per interacting photon (keV or counts)
    xsim::mc::Grid grid_strips;
    const float* grid_mu_interspace;  // interspace material mu(E), 1/mm
    const float* grid_mu_strip;       // strip material mu(E), 1/mm
    // world outside the phantom: material index into the tables (-1: vacuum), its density, the world sphere
    int32_t world_material;
    float world_density_g_cm3;
    float world_centre_mm[3];
    float world_radius_mm;
    // tallies (fixed point, units of 1/fixed_scale keV or counts)
    uint64_t* images;   // [4][rows * cols]
    uint64_t* deposit;  // [voxels], keV; null: not tallied
    uint64_t* energy;   // [XSIM_MC_ENERGY_ROWS][XSIM_MC_ENERGY_COLS], keV; column = EnergySlot
    double fixed_scale;
};

XSIM_FN int block_index(const McTransportParams& p, const int blk[3]) {
    return (blk[0] * p.blocks[1] + blk[1]) * p.blocks[2] + blk[2];
}

namespace xsim {
namespace mc {

// The state of one history between steps.
struct Photon {
    float pos[3];
    float dir[3];
    float energy;
    int n_compton;
    int n_rayleigh;
    int64_t deposited;        // fixed point, in the phantom
    int64_t deposited_world;  // fixed point, in the world material
};

// A real interaction of the photon in material m of density rho (total mu given), energy index e: Rayleigh,
// Compton (E - E' deposited) or photoelectric (E deposited). Deposits go to *deposit_acc (the photon's running
// sum) and, when `voxel_tally` is not null, to that voxel's tally. Returns true when the photon is absorbed
// (photoelectric, or Compton below the tables' lowest energy); otherwise its direction has been turned.
__device__ bool interact(const McTransportParams& p, Photon& ph, int m, float rho, float mu, EnergyIndex e,
                      Philox& rng, int64_t* deposit_acc, uint64_t* voxel_tally) {
    const double scale = p.fixed_scale;
    const float r = rng.uniform() * mu;
    const float mu_rayleigh = xs_lookup(p.xs, m, p.n_e, e, 1) * rho;
    float cos_theta = 1.0f;
    float kept_keV;
    bool absorbed = false;
    if (r < mu_rayleigh) {
        cos_theta = sample_rayleigh(ph.energy, p.rayleigh_cum + (size_t)m * p.n_x, p.dx, p.n_x, rng);
        ++ph.n_rayleigh;
        kept_keV = 0.0f;
    } else if (r < mu_rayleigh + xs_lookup(p.xs, m, p.n_e, e, 2) * rho) {
        float scattered;
        cos_theta = sample_compton(ph.energy, p.compton_s + (size_t)m * p.n_x, p.inv_dx, p.n_x, rng, &scattered);
        kept_keV = ph.energy - scattered;
        ph.energy = scattered;
        ++ph.n_compton;
        if (ph.energy < p.e_min_keV) {  // below the tables: the rest stays here too
            kept_keV += ph.energy;
            absorbed = true;
        }
    } else {  // photoelectric: all of E stays here (fluorescence not transported)
        kept_keV = ph.energy;
        absorbed = true;
    }
    if (kept_keV > 0.0f) {
        const int64_t kept = xsim::to_fixed(kept_keV, scale);
        if (voxel_tally) xsim::atomic_add(voxel_tally, (uint64_t)kept);
        *deposit_acc += kept;
    }
    if (!absorbed) rotate_direction(ph.dir[0], ph.dir[1], ph.dir[2], cos_theta, rng);
    return absorbed;
}

// Woodcock tracking through the voxel box, entered at distance t_in along the photon's ray (from grid_clip).
// Returns true when the photon is absorbed; otherwise it has left the box and ph.pos lies on the box's face.
__device__ bool transport_in_phantom(const McTransportParams& p, Photon& ph, double t_in, Philox& rng) {
    const int ny = p.grid.n[1], nz = p.grid.n[2];
    const float n_f[3] = {(float)p.grid.n[0], (float)ny, (float)nz};
    const double* W = p.grid.world_to_index;
    // Inside, the flight runs in float on the index coordinates q and their rate dq per mm (the ray parameter
    // stays in mm: the world direction is a unit vector).
    float q[3], dq[3];
    for (int c = 0; c < 3; ++c) {
        ph.pos[c] += (float)t_in * ph.dir[c];
        q[c] = (float)(W[4 * c] * ph.pos[0] + W[4 * c + 1] * ph.pos[1] + W[4 * c + 2] * ph.pos[2] + W[4 * c + 3]);
        dq[c] = (float)(W[4 * c] * ph.dir[0] + W[4 * c + 1] * ph.dir[1] + W[4 * c + 2] * ph.dir[2]);
    }
    const float block_f = (float)p.block, inv_block = 1.0f / (float)p.block;
    for (;;) {  // one free flight per pass: energy and direction fixed
        const EnergyIndex e = energy_index(ph.energy, p.e_min_keV, p.inv_de_keV, p.n_e);
        const int bin = min(max((int)((logf(ph.energy) - p.bin_log_e_min) * p.bin_inv_log_width), 0), p.n_bins - 1);
        // Walk the blocks from q: the block now, the flight distance to its next face along each axis, the
        // distance between faces, and the distance to the grid's exit (distances in mm along the flight).
        int blk[3], step[3];
        float t_next[3], t_delta[3];
        float t_exit = 3.0e38f;
        for (int c = 0; c < 3; ++c) {
            blk[c] = min(max((int)((q[c] + 0.5f) * inv_block), 0), p.blocks[c] - 1);
            if (dq[c] > 0.0f) {
                step[c] = 1;
                t_exit = fminf(t_exit, (n_f[c] - 0.5f - q[c]) / dq[c]);
                t_next[c] = ((blk[c] + 1) * block_f - 0.5f - q[c]) / dq[c];
                t_delta[c] = block_f / dq[c];
            } else if (dq[c] < 0.0f) {
                step[c] = -1;
                t_exit = fminf(t_exit, (-0.5f - q[c]) / dq[c]);
                t_next[c] = (blk[c] * block_f - 0.5f - q[c]) / dq[c];
                t_delta[c] = -block_f / dq[c];
            } else {
                step[c] = 0;
                t_next[c] = t_delta[c] = 3.0e38f;
            }
        }
        t_exit = fmaxf(t_exit, 0.0f);
        float majorant = p.majorant_per_mm[block_index(p, blk) * p.n_bins + bin];
        float inv_majorant = majorant > 0.0f ? 1.0f / majorant : 0.0f;
        int m = 0, voxel = 0;
        float mu = 0.0f, rho = 0.0f, t = 0.0f;
        bool inside = true;
        // The optical depth of the flight to the next tentative collision (unit exponential), spent across the
        // blocks: P(no collision before t) = exp(-integral of mu_max), the majorant piecewise constant along
        // the flight. An empty block (majorant 0) takes none of it.
        float tau = -logf(rng.uniform_pos());
        for (;;) {
            const int a = t_next[0] < t_next[1] ? (t_next[0] < t_next[2] ? 0 : 2) : (t_next[1] < t_next[2] ? 1 : 2);
            const float t_face = min_f(t_next[a], t_exit);
            const float s = majorant > 0.0f ? tau * inv_majorant : 3.0e38f;
            if (t + s >= t_face) {  // no collision in this block: continue from its face with the depth left
                tau = max_f(tau - (t_face - t) * majorant, 0.0f);  // (>= 0 against rounding)
                t = t_face;
                blk[a] += step[a];
                if (t_face >= t_exit || blk[a] < 0 || blk[a] >= p.blocks[a]) {
                    inside = false;
                    break;
                }
                t_next[a] += t_delta[a];
                majorant = p.majorant_per_mm[block_index(p, blk) * p.n_bins + bin];
                inv_majorant = majorant > 0.0f ? 1.0f / majorant : 0.0f;
                continue;
            }
            t += s;
            int idx[3];
            for (int c = 0; c < 3; ++c)
                idx[c] = min(max((int)(q[c] + t * dq[c] + 0.5f), 0), (int)n_f[c] - 1);  // rounding at a face
            voxel = (idx[0] * ny + idx[1]) * nz + idx[2];
            unpack_voxel(p.voxels[voxel], &rho, &m);
            mu = xs_lookup(p.xs, m, p.n_e, e, 0) * rho;
            if (rng.uniform() * majorant < mu) break;  // real interaction, else a null collision
            tau = -logf(rng.uniform_pos());
        }
        for (int c = 0; c < 3; ++c) {
            ph.pos[c] += t * ph.dir[c];
            q[c] += t * dq[c];
        }
        if (!inside) return false;
        uint64_t* voxel_tally = p.deposit ? &p.deposit[voxel] : nullptr;
        if (voxel_tally) XSIM_PREFETCH_WRITE(voxel_tally);  // the deposit comes after the angular sampling
        if (interact(p, ph, m, rho, mu, e, rng, &ph.deposited, voxel_tally)) return true;
        for (int c = 0; c < 3; ++c)
            dq[c] = (float)(W[4 * c] * ph.dir[0] + W[4 * c + 1] * ph.dir[1] + W[4 * c + 2] * ph.dir[2]);
    }
}

// The photon reaches the detector plane at distance t along its ray (cos_incidence > 0): tally its signal in
// the pixel it hits, in the image of its scatter history.
__device__ void score_detector(const McTransportParams& p, const Photon& ph, float t, float cos_incidence,
                               Philox& rng) {
    float hit[3], rel[3];
    for (int c = 0; c < 3; ++c) {
        hit[c] = ph.pos[c] + t * ph.dir[c];
        rel[c] = hit[c] - p.det_origin_mm[c];
    }
    const float u = p.det_dual_u[0] * rel[0] + p.det_dual_u[1] * rel[1] + p.det_dual_u[2] * rel[2] + 0.5f;
    const float v = p.det_dual_v[0] * rel[0] + p.det_dual_v[1] * rel[1] + p.det_dual_v[2] * rel[2] + 0.5f;
    const int rows = p.det_shape[0], cols = p.det_shape[1];
    if (!(u >= 0.0f && u < (float)cols && v >= 0.0f && v < (float)rows)) return;
    const int pixel = (int)v * cols + (int)u;
    const int kind = ph.n_compton + ph.n_rayleigh >= 2 ? kMultiple
                   : ph.n_compton == 1                 ? kCompton
                   : ph.n_rayleigh == 1                ? kRayleigh
                                                       : kPrimary;
    const EnergyIndex e = energy_index(ph.energy, p.e_min_keV, p.inv_de_keV, p.n_e);
    float signal = detector_signal(p.det_signal, p.det_mu_t, e, cos_incidence);
    if (p.grid_strips.enabled)
        signal *= grid_transmission(p.grid_strips, ph.dir, hit, p.field.normal, cos_incidence,
                                    grid_lookup(p.grid_mu_interspace, e), grid_lookup(p.grid_mu_strip, e),
                                    rng.uniform());
    xsim::atomic_add_fixed(&p.images[(size_t)kind * rows * cols + pixel], signal, p.fixed_scale);
}

}  // namespace mc
}  // namespace xsim

__device__ void mc_transport_body(const McTransportParams& p, uint64_t i) {
    using namespace xsim::mc;
    const uint64_t photon = p.first_photon + i;
    xsim::Philox rng(p.seed, photon);
    const double scale = p.fixed_scale;

    Photon ph;
    const int line = p.n_spectrum > 1 ? sample_alias(p.alias_prob, p.alias_index, p.n_spectrum, rng) : 0;
    ph.energy = p.alias_energy_keV[line];
    sample_focal_spot(p.source, rng, ph.pos);
    sample_field_direction(p.field, ph.pos, rng, ph.dir);
    ph.n_compton = ph.n_rayleigh = 0;
    ph.deposited = ph.deposited_world = 0;
    const int64_t incident = xsim::to_fixed(ph.energy, scale);
    int64_t reached_plane = 0, escaped = 0;
    const float* n = p.field.normal;
    bool may_enter = true;  // false after leaving the (convex) box, until the direction changes again

    for (;;) {  // one straight segment of the world per pass
        double t_in = 0.0, t_out = 1e30;
        bool enters = false;
        if (may_enter) {
            const xsim::Vec3 q0 = xsim::world_to_index(p.grid, xsim::vec3(ph.pos[0], ph.pos[1], ph.pos[2]));
            const xsim::Vec3 dq0 =
                xsim::affine_direction(p.grid.world_to_index, xsim::vec3(ph.dir[0], ph.dir[1], ph.dir[2]));
            enters = xsim::grid_clip(p.grid, q0, dq0, t_in, t_out);
        }
        const float cos_incidence = ph.dir[0] * n[0] + ph.dir[1] * n[1] + ph.dir[2] * n[2];
        float t_plane = 3.0e38f, t_world = 3.0e38f;
        if (cos_incidence > 0.0f) {
            float dist = 0.0f;
            for (int c = 0; c < 3; ++c) dist += (p.det_origin_mm[c] - ph.pos[c]) * n[c];
            t_plane = fmaxf(dist, 0.0f) / cos_incidence;
        }
        const float t_box = enters ? (float)t_in : 3.0e38f;
        if (p.world_material >= 0) {
            // distance to the world sphere from inside: t = -b + sqrt(b^2 - c), b = d.(x - x0), c = |x - x0|^2 - R^2
            float b = 0.0f, c2 = 0.0f;
            for (int c = 0; c < 3; ++c) {
                const float rel = ph.pos[c] - p.world_centre_mm[c];
                b += ph.dir[c] * rel;
                c2 += rel * rel;
            }
            t_world = fmaxf(-b + sqrtf(fmaxf(b * b - (c2 - p.world_radius_mm * p.world_radius_mm), 0.0f)), 0.0f);
            const EnergyIndex e = energy_index(ph.energy, p.e_min_keV, p.inv_de_keV, p.n_e);
            const float mu = xs_lookup(p.xs, p.world_material, p.n_e, e, 0) * p.world_density_g_cm3;
            const float s = -logf(rng.uniform_pos()) / mu;
            if (s < fminf(fminf(t_box, t_plane), t_world)) {  // an interaction in the world material
                for (int c = 0; c < 3; ++c) ph.pos[c] += s * ph.dir[c];
                if (interact(p, ph, p.world_material, p.world_density_g_cm3, mu, e, rng, &ph.deposited_world,
                             nullptr))
                    break;
                may_enter = true;
                continue;
            }
        }
        if (enters && t_box <= t_plane && t_box <= t_world) {
            if (transport_in_phantom(p, ph, t_in, rng)) break;
            may_enter = false;
            continue;
        }
        if (cos_incidence > 0.0f && t_plane <= t_world) {
            reached_plane = xsim::to_fixed(ph.energy, scale);
            score_detector(p, ph, t_plane, cos_incidence, rng);
        } else {
            escaped = xsim::to_fixed(ph.energy, scale);
        }
        break;
    }
    uint64_t* row = p.energy + ((photon >> 6) % XSIM_MC_ENERGY_ROWS) * XSIM_MC_ENERGY_COLS;
    xsim::atomic_add(&row[kIncident], (uint64_t)incident);
    if (ph.deposited) xsim::atomic_add(&row[kDeposited], (uint64_t)ph.deposited);
    if (reached_plane) xsim::atomic_add(&row[kReachedPlane], (uint64_t)reached_plane);
    if (escaped) xsim::atomic_add(&row[kEscapedElsewhere], (uint64_t)escaped);
    if (ph.deposited_world) xsim::atomic_add(&row[kDepositedWorld], (uint64_t)ph.deposited_world);
}

XSIM_KERNEL(mc_transport, McTransportParams)
