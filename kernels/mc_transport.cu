// mc_transport.cu: Monte Carlo photon transport through a voxel phantom onto a flat-panel detector
// (the xsim reference path; physics and units in docs/monte_carlo.md, driver xsim/montecarlo.py).
//
// Photon k of a launch is a history with its own Philox stream (seed, first_photon + k). On the GPU index i runs
// photon i to its end; on the host index i runs photons i .. i + MC_GROUP - 1, several interleaved per thread,
// their block walks in AVX-512 lanes where the CPU has them (mc_transport_body, walk_lanes):
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
//
// A history draws ~45 numbers: on the host its stream computes 8 Philox blocks at a time, in SIMD lanes (same
// numbers, see philox.cuh).
#ifndef XSIM_PHILOX_BLOCKS
#define XSIM_PHILOX_BLOCKS 8
#endif
// Host interleaving (mc_transport_body): MC_INTERLEAVE histories in flight per thread (16 with AVX-512: a lane
// each in the vector walk, two such sets in turns), over groups of MC_GROUP photons, 8 times as many; a group
// is one chunk of the OpenMP schedule, so the threads share out whole groups.
#if defined(__AVX512F__)
#define MC_HOST_DEFAULT_INTERLEAVE 16
#define MC_HOST_DEFAULT_GROUP 256
#else
#define MC_HOST_DEFAULT_INTERLEAVE 8
#define MC_HOST_DEFAULT_GROUP 64
#endif
#ifndef MC_INTERLEAVE
#define MC_INTERLEAVE MC_HOST_DEFAULT_INTERLEAVE
#endif
#ifndef MC_GROUP
#define MC_GROUP MC_HOST_DEFAULT_GROUP
#endif
#ifndef XSIM_HOST_CHUNK
#define XSIM_HOST_CHUNK MC_GROUP
#endif
#include "mc_detector.cuh"
#include "mc_physics.cuh"
#include "mc_source.cuh"
#include "xsim_geometry.cuh"

// MC_PERSISTENT: the GPU's structure, its default there (the host builds it for the tests): persistent threads,
// each running photons one after another through one loop that takes every phase of the state machine in
// order, a photon ending and the next starting within the same pass (mc_transport_slot). MC_CUDA_THREADS and
// MC_CUDA_MIN_BLOCKS: the block size and the blocks per multiprocessor the register budget is set for.
#ifndef MC_PERSISTENT
#if defined(XSIM_CUDA)
#define MC_PERSISTENT 1
#else
#define MC_PERSISTENT 0
#endif
#endif
#ifndef MC_CUDA_THREADS
#define MC_CUDA_THREADS 256
#endif
#ifndef MC_CUDA_MIN_BLOCKS
#define MC_CUDA_MIN_BLOCKS 3
#endif
// MC_CUDA_WALK_CROSSINGS: block crossings a flight's walk takes at most per pass of the persistent loop (0: no
// limit); a longer walk goes on in the next pass, with the other lanes, instead of holding them idle.
#ifndef MC_CUDA_WALK_CROSSINGS
#define MC_CUDA_WALK_CROSSINGS 0
#endif

// MC_LANES: histories a thread runs at once (their flights in lanes, FlightLanes). MC_VECTOR_WALK: the host
// walks the flights of 16 lanes together in AVX-512 registers (walk_lanes) rather than one at a time
// (walk_blocks); MC_SCALAR_WALK=1 turns it off (the tests compare both).
#if defined(XSIM_HOST) && MC_INTERLEAVE > 1 && !MC_PERSISTENT
#define MC_LANES MC_INTERLEAVE
#else
#define MC_LANES 1
#endif
#if defined(XSIM_HOST) && MC_LANES == 16 && defined(__AVX512F__) && !MC_SCALAR_WALK
#define MC_VECTOR_WALK 1
#include <immintrin.h>
#else
#define MC_VECTOR_WALK 0
#endif
// MC_SETS: with the vector walk, sets of MC_LANES histories a thread takes in turns, so that the voxels a set's
// walk prefetched arrive while the other set runs.
#ifndef MC_SETS
#define MC_SETS (MC_VECTOR_WALK ? 2 : 1)
#endif
// MC_WALK_STEPS: blocks a vector walk takes at most per round. A flight that crosses many blocks (into the
// phantom through its air) would hold the other lanes idle; capped, it goes on in the next round, with them.
#ifndef MC_WALK_STEPS
#define MC_WALK_STEPS 4
#endif

// The transport's functions are static: with external linkage a -fPIC host build must call them through the
// PLT and may not inline them (another library could interpose them), ~5 % of the kernel's time.
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
    uint64_t n_photons;     // photons in this launch (i < n_photons)
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
    const float* majorant_per_mm;  // [n_bins][blocks], 1/mm (region majorants, see the header comment)
    const float* inv_majorant_mm;  // [n_bins][blocks], mm: 1 / majorant_per_mm (0 where that is 0)
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

namespace xsim {
namespace mc {

// The photon of a history: where it is, where it goes, its energy, its scatter counts and what it deposited.
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
static __device__ bool interact(const McTransportParams& p, Photon& ph, int m, float rho, float mu, EnergyIndex e,
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

// The state of one history between the steps of advance(): the photon, its random stream, its bookkeeping and,
// inside the phantom, the free flight in progress. A history is a small state machine so that the host can
// interleave several of them (see mc_transport_body); the GPU runs one history per thread to its end.
enum Phase {
    kSegment,   // at the start of a straight segment of the world: phantom, world material, detector or escape
    kFlight,    // inside the phantom, about to start a free flight (energy and direction fixed until its end)
    kWalk,      // walking the majorant blocks of the flight to the next tentative collision
    kTest,      // at a tentative collision in voxel `voxel`: real or null
    kInteract,  // at a real interaction in voxel `voxel`
    kScore,     // at the detector: `signal` to be added to image word `image_word`
    kDone       // absorbed, detected or escaped: the energy bookkeeping is left
};

struct History {
    Photon ph;
    Philox rng;
    uint64_t photon;
    int64_t incident;  // fixed point
    int32_t leaves;     // kReachedPlane or kEscapedElsewhere once the photon has left with its energy; else 0
    bool may_enter;  // false after leaving the (convex) box, until the direction changes again
    Phase phase;
    // Inside the phantom the flight runs in float on the index coordinates q and their rate dq per mm (the ray
    // parameter stays in mm: the world direction is a unit vector); its walk state is in a Flights lane.
    float q[3], dq[3];
    float flight_energy_keV;  // the energy e and the majorant row were looked up for (-1: none yet)
    EnergyIndex e;
    // the voxel of the tentative collision, and its material, density and mu once read
    int voxel, m;
    float rho, mu;
    // the photon's detector signal and the image word it goes to (kind * rows * cols + pixel)
    size_t image_word;
    float signal;
};

// The free flights in progress of the histories one thread runs (MC_LANES of them on the host, one on the
// GPU), a lane each, one array per field: the host walks 16 lanes at once in vector registers (walk_lanes).
// Per lane: the distance t flown so far, the distance to the next block face along each axis and between
// faces, the distance to the grid's exit; the block as its index into the majorants (C order), the index step
// of a crossing along each axis and the crossings left along it before the grid's edge; the block's majorant
// (1/mm) and its inverse (mm), the optical depth tau left, and where the flight's energy bin starts in the
// majorant tables.
template <int L>
struct FlightLanes {
    float t[L], tau[L], majorant[L], inv_majorant[L], t_exit[L];
    float t_next[3][L], t_delta[3][L];
    int32_t block[L], block_step[3][L], blocks_left[3][L], row[L];
};
typedef FlightLanes<MC_LANES> Flights;

// Source sampling: energy, focal spot position and direction of photon `photon`.
static __device__ void start_history(const McTransportParams& p, uint64_t photon, History& h) {
    h.photon = photon;
    h.rng = Philox(p.seed, photon);
    Photon& ph = h.ph;
    const int line = p.n_spectrum > 1 ? sample_alias(p.alias_prob, p.alias_index, p.n_spectrum, h.rng) : 0;
    ph.energy = xsim::ldg(p.alias_energy_keV + line);
    sample_focal_spot(p.source, h.rng, ph.pos);
    sample_field_direction(p.field, ph.pos, h.rng, ph.dir);
    ph.n_compton = ph.n_rayleigh = 0;
    ph.deposited = ph.deposited_world = 0;
    h.incident = xsim::to_fixed(ph.energy, p.fixed_scale);
    h.leaves = 0;
    h.may_enter = true;
    h.flight_energy_keV = -1.0f;
    h.phase = kSegment;
}

// The index coordinates' rate per mm of flight along the photon's direction (the grid's affine may rotate
// and shear: each index axis mixes the world's three).
static __device__ void index_rate(const McTransportParams& p, const float dir[3], float dq[3]) {
    const xsim::Vec3 d = xsim::affine_direction(p.grid.world_to_index, xsim::vec3(dir[0], dir[1], dir[2]));
    dq[0] = (float)d.x, dq[1] = (float)d.y, dq[2] = (float)d.z;
}

// The photon enters the voxel box at distance t_in along its ray (from grid_clip).
static __device__ void enter_phantom(const McTransportParams& p, History& h, double t_in) {
    float* pos = h.ph.pos;
    for (int c = 0; c < 3; ++c) pos[c] += (float)t_in * h.ph.dir[c];
    const xsim::Vec3 q = xsim::world_to_index(p.grid, xsim::vec3(pos[0], pos[1], pos[2]));
    h.q[0] = (float)q.x, h.q[1] = (float)q.y, h.q[2] = (float)q.z;
    index_rate(p, h.ph.dir, h.dq);
    h.phase = kFlight;
}

// Start a free flight from q: find the block, the face distances and the grid's exit, and draw the optical
// depth tau = -ln u of the flight to its next tentative collision (unit exponential), spent across the blocks:
// P(no collision before t) = exp(-integral of mu_max), the majorant piecewise constant along the flight.
static __device__ void start_flight(const McTransportParams& p, History& h, Flights& f, int lane) {
    const float n_f[3] = {(float)p.grid.n[0], (float)p.grid.n[1], (float)p.grid.n[2]};
    const float block_f = (float)p.block, inv_block = 1.0f / (float)p.block;
    const float energy = h.ph.energy;
    if (energy != h.flight_energy_keV) {  // else (after a Rayleigh event) the last flight's lookups still hold
        h.flight_energy_keV = energy;
        h.e = energy_index(energy, p.e_min_keV, p.inv_de_keV, p.n_e);
        const int bin = min(max((int)((logf(energy) - p.bin_log_e_min) * p.bin_inv_log_width), 0), p.n_bins - 1);
        f.row[lane] = bin * p.blocks[0] * p.blocks[1] * p.blocks[2];
    }
    float t_exit = 3.0e38f;
    const int stride[3] = {p.blocks[1] * p.blocks[2], p.blocks[2], 1};
    int block = 0;
    for (int c = 0; c < 3; ++c) {
        const float q = h.q[c], dq = h.dq[c];
        const int blk = min(max((int)((q + 0.5f) * inv_block), 0), p.blocks[c] - 1);
        block += blk * stride[c];
        const int32_t step = dq > 0.0f ? 1 : (dq < 0.0f ? -1 : 0);
        f.block_step[c][lane] = step * stride[c];
        f.blocks_left[c][lane] = xsim::faces_left(step, p.blocks[c], blk);
        // Without branches: the sign of a direction after a scatter is a coin toss for the branch predictor.
        // Both divisions are those of a branch per sign (b / |dq| = -b / dq for dq < 0, exactly).
        const bool pos = dq > 0.0f, moving = step != 0;
        const float exit_face = pos ? n_f[c] - 0.5f : -0.5f;
        const float next_face = (pos ? (blk + 1) * block_f : blk * block_f) - 0.5f;
        const float t_exit_axis = (exit_face - q) / dq, t_next = (next_face - q) / dq;
        t_exit = moving ? min_f(t_exit, t_exit_axis) : t_exit;
        f.t_next[c][lane] = moving ? t_next : 3.0e38f;
        f.t_delta[c][lane] = moving ? block_f / fabsf(dq) : 3.0e38f;
    }
    f.block[lane] = block;
    f.t_exit[lane] = max_f(t_exit, 0.0f);
    f.majorant[lane] = xsim::ldg(p.majorant_per_mm + f.row[lane] + block);
    f.inv_majorant[lane] = xsim::ldg(p.inv_majorant_mm + f.row[lane] + block);
    f.t[lane] = 0.0f;
    f.tau[lane] = -logf(h.rng.uniform_pos());
    h.phase = kWalk;
}

// Move the photon by the flight distance t (to a real interaction, or out of the grid).
static __device__ void end_flight(History& h, float t) {
    for (int c = 0; c < 3; ++c) {
        h.ph.pos[c] += t * h.ph.dir[c];
        h.q[c] += t * h.dq[c];
    }
}

// The walk of a lane's flight has ended: at a tentative collision (phase kTest, in voxel h.voxel; returns that
// voxel's word, the next read, to prefetch), or out of the grid, the photon on the box's face (phase kSegment;
// returns null).
static __device__ const void* end_walk(const McTransportParams& p, History& h, const Flights& f, int lane,
                                       bool collided) {
    const float t = f.t[lane];
    if (!collided) {
        end_flight(h, t);
        h.may_enter = false;
        h.phase = kSegment;
        return nullptr;
    }
    const int n[3] = {p.grid.n[0], p.grid.n[1], p.grid.n[2]};
    int idx[3];
    for (int c = 0; c < 3; ++c)
        idx[c] = min(max((int)(h.q[c] + t * h.dq[c] + 0.5f), 0), n[c] - 1);  // rounding at a face
    h.voxel = (idx[0] * n[1] + idx[1]) * n[2] + idx[2];
    h.phase = kTest;
    return &p.voxels[h.voxel];
}

// How a walk of the blocks ended.
enum WalkEnd { kLeftGrid = 0, kCollided = 1, kWalking = 2 };

// Walk the blocks (like voxels, Amanatides & Woo 1987) until the optical depth left runs out inside one: the
// tentative collision (returns kCollided, lane state at that point); or until the flight leaves the grid
// (kLeftGrid, t at the box's face). A block the flight crosses without a collision takes (face - t) mu_max of
// the depth; an empty block (majorant 0) takes none. kMaxCrossings > 0: after that many crossings the walk
// stops (kWalking, lane state saved) and the next call goes on, with the same operations.
template <int kMaxCrossings>
static __device__ WalkEnd walk_blocks_upto(const McTransportParams& p, Flights& f, int lane) {
    // The walk in scalars, the axis chosen by selects: indexing the lane's arrays by the axis would keep them in
    // memory, a store-to-load wait on every crossing.
    float t = f.t[lane], tau = f.tau[lane], majorant = f.majorant[lane], inv_majorant = f.inv_majorant[lane];
    float tx = f.t_next[0][lane], ty = f.t_next[1][lane], tz = f.t_next[2][lane];
    const float dx = f.t_delta[0][lane], dy = f.t_delta[1][lane], dz = f.t_delta[2][lane];
    int left_x = f.blocks_left[0][lane], left_y = f.blocks_left[1][lane], left_z = f.blocks_left[2][lane];
    const int step_x = f.block_step[0][lane], step_y = f.block_step[1][lane], step_z = f.block_step[2][lane];
    const float t_exit = f.t_exit[lane];
    const float* majorants = p.majorant_per_mm + f.row[lane];
    const float* inv_majorants = p.inv_majorant_mm + f.row[lane];
    int block = f.block[lane];
    WalkEnd end = kCollided;
    for (int crossings = 0;; ++crossings) {
        if (kMaxCrossings > 0 && crossings == kMaxCrossings) {
            end = kWalking;
            break;
        }
        bool pick_x, pick_y, pick_z;
        const float t_face = min_f(xsim::nearest_face(tx, ty, tz, pick_x, pick_y, pick_z), t_exit);
        const float s = majorant > 0.0f ? tau * inv_majorant : 3.0e38f;
        if (t + s < t_face) {
            t += s;
            break;
        }
        // no collision in this block: continue from its face with the depth left (>= 0 against rounding)
        tau = max_f(tau - (t_face - t) * majorant, 0.0f);
        t = t_face;
        const int left = pick_x ? left_x : (pick_y ? left_y : left_z);
        if (t_face >= t_exit || left == 0) {
            f.t[lane] = t;
            return kLeftGrid;
        }
        left_x -= pick_x;
        left_y -= pick_y;
        left_z -= pick_z;
        block += pick_x ? step_x : (pick_y ? step_y : step_z);
        tx += pick_x ? dx : 0.0f;
        ty += pick_y ? dy : 0.0f;
        tz += pick_z ? dz : 0.0f;
        majorant = xsim::ldg(majorants + block);
        inv_majorant = xsim::ldg(inv_majorants + block);
    }
    f.t[lane] = t;
    f.tau[lane] = tau;
    f.majorant[lane] = majorant;
    f.inv_majorant[lane] = inv_majorant;
    f.block[lane] = block;
    f.t_next[0][lane] = tx, f.t_next[1][lane] = ty, f.t_next[2][lane] = tz;
    f.blocks_left[0][lane] = left_x, f.blocks_left[1][lane] = left_y, f.blocks_left[2][lane] = left_z;
    return end;
}

#if !MC_PERSISTENT
// The whole walk of a flight: true at a tentative collision, false when it left the grid.
static __device__ bool walk_blocks(const McTransportParams& p, Flights& f, int lane) {
    return walk_blocks_upto<0>(p, f, lane) == kCollided;
}
#endif

// The tentative collision: real with probability mu(E, voxel) / mu_max (phase kInteract, the photon moved
// there), otherwise a null collision and the flight goes on with a new optical depth (phase kWalk).
static __device__ void test_collision(const McTransportParams& p, History& h, Flights& f, int lane) {
    unpack_voxel(xsim::ldg(p.voxels + h.voxel), &h.rho, &h.m);
    h.mu = xs_lookup(p.xs, h.m, p.n_e, h.e, 0) * h.rho;
    if (h.rng.uniform() * f.majorant[lane] < h.mu) {
        end_flight(h, f.t[lane]);
        h.phase = kInteract;
    } else {
        f.tau[lane] = -logf(h.rng.uniform_pos());
        h.phase = kWalk;
    }
}

// The real interaction in the phantom (energy kept in the voxel's tally); a new flight follows unless absorbed.
static __device__ void interact_in_phantom(const McTransportParams& p, History& h) {
    uint64_t* voxel_tally = p.deposit ? &p.deposit[h.voxel] : nullptr;
    if (interact(p, h.ph, h.m, h.rho, h.mu, h.e, h.rng, &h.ph.deposited, voxel_tally)) {
        h.phase = kDone;
        return;
    }
    index_rate(p, h.ph.dir, h.dq);
    h.phase = kFlight;
}

// The photon reaches the detector plane at distance t along its ray (cos_incidence > 0): its signal and the
// image word it goes to (the pixel it hits, in the image of its scatter history), added in phase kScore; or
// kDone when it misses the panel.
static __device__ void score_detector(const McTransportParams& p, History& h, float t, float cos_incidence) {
    const Photon& ph = h.ph;
    Philox& rng = h.rng;
    float hit[3], rel[3];
    for (int c = 0; c < 3; ++c) {
        hit[c] = ph.pos[c] + t * ph.dir[c];
        rel[c] = hit[c] - p.det_origin_mm[c];
    }
    const float u = p.det_dual_u[0] * rel[0] + p.det_dual_u[1] * rel[1] + p.det_dual_u[2] * rel[2] + 0.5f;
    const float v = p.det_dual_v[0] * rel[0] + p.det_dual_v[1] * rel[1] + p.det_dual_v[2] * rel[2] + 0.5f;
    const int rows = p.det_shape[0], cols = p.det_shape[1];
    if (!(u >= 0.0f && u < (float)cols && v >= 0.0f && v < (float)rows)) {
        h.phase = kDone;
        return;
    }
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
    h.image_word = (size_t)kind * rows * cols + pixel;
    h.signal = signal;
    h.phase = kScore;
}

// One straight segment of the world from the photon's position: it enters the phantom (phase kFlight),
// interacts in the world material (kSegment again, or kDone when absorbed), or reaches the detector plane or
// leaves the world (kDone).
static __device__ void world_segment(const McTransportParams& p, History& h) {
    Photon& ph = h.ph;
    double t_in = 0.0, t_out = 1e30;
    bool enters = false;
    if (h.may_enter) {
        const xsim::Vec3 q0 = xsim::world_to_index(p.grid, xsim::vec3(ph.pos[0], ph.pos[1], ph.pos[2]));
        const xsim::Vec3 dq0 =
            xsim::affine_direction(p.grid.world_to_index, xsim::vec3(ph.dir[0], ph.dir[1], ph.dir[2]));
        enters = xsim::grid_clip(p.grid, q0, dq0, t_in, t_out);
    }
    const float* n = p.field.normal;
    const float cos_incidence = ph.dir[0] * n[0] + ph.dir[1] * n[1] + ph.dir[2] * n[2];
    float t_plane = 3.0e38f, t_world = 3.0e38f;
    if (cos_incidence > 0.0f) {
        float dist = 0.0f;
        for (int c = 0; c < 3; ++c) dist += (p.det_origin_mm[c] - ph.pos[c]) * n[c];
        t_plane = max_f(dist, 0.0f) / cos_incidence;
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
        t_world = max_f(-b + sqrtf(max_f(b * b - (c2 - p.world_radius_mm * p.world_radius_mm), 0.0f)), 0.0f);
        const EnergyIndex e = energy_index(ph.energy, p.e_min_keV, p.inv_de_keV, p.n_e);
        const float mu = xs_lookup(p.xs, p.world_material, p.n_e, e, 0) * p.world_density_g_cm3;
        const float s = -logf(h.rng.uniform_pos()) / mu;
        if (s < min_f(min_f(t_box, t_plane), t_world)) {  // an interaction in the world material
            for (int c = 0; c < 3; ++c) ph.pos[c] += s * ph.dir[c];
            if (interact(p, ph, p.world_material, p.world_density_g_cm3, mu, e, h.rng, &ph.deposited_world, nullptr))
                h.phase = kDone;
            h.may_enter = true;
            return;
        }
    }
    if (enters && t_box <= t_plane && t_box <= t_world) {
        enter_phantom(p, h, t_in);
        return;
    }
    if (cos_incidence > 0.0f && t_plane <= t_world) {
        h.leaves = kReachedPlane;
        score_detector(p, h, t_plane, cos_incidence);
        return;
    }
    h.leaves = kEscapedElsewhere;
    h.phase = kDone;
}

// The energy bookkeeping of a finished history, added to row `row` of the tally (any row: the driver sums them;
// spreading the histories over rows spreads the atomics over addresses).
static __device__ void finish_history(const McTransportParams& p, const History& h, uint64_t row_index) {
    uint64_t* row = p.energy + (row_index % XSIM_MC_ENERGY_ROWS) * XSIM_MC_ENERGY_COLS;
    xsim::atomic_add(&row[kIncident], (uint64_t)h.incident);
    if (h.ph.deposited) xsim::atomic_add(&row[kDeposited], (uint64_t)h.ph.deposited);
    if (h.leaves) xsim::atomic_add(&row[h.leaves], (uint64_t)xsim::to_fixed(h.ph.energy, p.fixed_scale));
    if (h.ph.deposited_world) xsim::atomic_add(&row[kDepositedWorld], (uint64_t)h.ph.deposited_world);
}

#if !MC_PERSISTENT
// Run history h up to its next access to memory that is likely to miss the cache (the voxel word of a
// tentative collision, the voxel's deposit tally before a real interaction, the image word of a detected
// photon) and return that address; or to its end (energy bookkeeping done, phase kDone) and return null. With
// MC_VECTOR_WALK it also stops, returning null, at the start of a walk (phase kWalk): the caller walks the
// lanes together (walk_lanes). The next call continues from there.
static __device__ const void* advance(const McTransportParams& p, History& h, Flights& f, int lane) {
    for (;;) {
        switch (h.phase) {
            case kSegment:
                world_segment(p, h);
                if (h.phase == kScore) return &p.images[h.image_word];
                break;
            case kFlight: start_flight(p, h, f, lane); break;
            case kWalk:
#if MC_VECTOR_WALK
                return nullptr;
#else
                if (const void* voxel_word = end_walk(p, h, f, lane, walk_blocks(p, f, lane))) return voxel_word;
                break;
#endif
            case kTest:
                test_collision(p, h, f, lane);
                if (h.phase == kInteract && p.deposit) return &p.deposit[h.voxel];
                break;
            case kInteract: interact_in_phantom(p, h); break;
            case kScore:
                xsim::atomic_add_fixed(&p.images[h.image_word], h.signal, p.fixed_scale);
                h.phase = kDone;
                break;
            default:
                finish_history(p, h, h.photon >> 6);
                return nullptr;
        }
    }
}
#endif

#if MC_VECTOR_WALK
// The block walks of the lanes in `lanes` (a bit per lane), all 16 in one AVX-512 register per field: each
// lane makes walk_blocks' compares and selects and its float operations in the same order (the build uses
// -ffp-contract=off, so neither side fuses a multiply-add), and so ends where walk_blocks would, with the same
// bits (the tests compare the two). Why: a lone walk decides at every block whether the flight ends in it, an
// outcome the branch predictor cannot know; in lanes it is a mask. Returns the lanes that reached a tentative
// collision; *unfinished receives those still walking after MC_WALK_STEPS blocks (their state saved, the next
// call goes on), and the others left the grid.
static inline uint32_t walk_lanes(const McTransportParams& p, Flights& f, uint32_t lanes, uint32_t* unfinished) {
    static_assert(MC_LANES == 16, "a lane per float of an AVX-512 register");
    __m512 t = _mm512_loadu_ps(f.t), tau = _mm512_loadu_ps(f.tau);
    __m512 majorant = _mm512_loadu_ps(f.majorant), inv_majorant = _mm512_loadu_ps(f.inv_majorant);
    __m512 tx = _mm512_loadu_ps(f.t_next[0]), ty = _mm512_loadu_ps(f.t_next[1]), tz = _mm512_loadu_ps(f.t_next[2]);
    const __m512 dx = _mm512_loadu_ps(f.t_delta[0]), dy = _mm512_loadu_ps(f.t_delta[1]),
                 dz = _mm512_loadu_ps(f.t_delta[2]);
    __m512i left_x = _mm512_loadu_si512(f.blocks_left[0]), left_y = _mm512_loadu_si512(f.blocks_left[1]),
            left_z = _mm512_loadu_si512(f.blocks_left[2]);
    const __m512i step_x = _mm512_loadu_si512(f.block_step[0]), step_y = _mm512_loadu_si512(f.block_step[1]),
                  step_z = _mm512_loadu_si512(f.block_step[2]);
    __m512i block = _mm512_loadu_si512(f.block);
    const __m512i row = _mm512_loadu_si512(f.row);
    const __m512 t_exit = _mm512_loadu_ps(f.t_exit);
    const __m512 zero = _mm512_setzero_ps(), one = _mm512_set1_ps(1.0f), none = _mm512_set1_ps(3.0e38f);
    const __m512i zero_i = _mm512_setzero_si512(), one_i = _mm512_set1_epi32(1);
    __mmask16 walking = (__mmask16)lanes, collided = 0;
    for (int steps = 0; steps < MC_WALK_STEPS; ++steps) {
        // xsim::nearest_face and min_f, lane by lane
        const __mmask16 x_before_y = _mm512_cmp_ps_mask(tx, ty, _CMP_LT_OQ);
        const __m512 t_xy = _mm512_mask_blend_ps(x_before_y, ty, tx);
        const __mmask16 pick_z = _mm512_cmp_ps_mask(t_xy, tz, _CMP_NLT_UQ);
        const __mmask16 pick_x = (__mmask16)(~pick_z & x_before_y), pick_y = (__mmask16)(~pick_z & ~x_before_y);
        const __m512 nearest = _mm512_mask_blend_ps(pick_z, t_xy, tz);
        const __m512 t_face = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(nearest, t_exit, _CMP_LT_OQ), t_exit, nearest);
        // The block behind that face and its majorant, read before it is known whether the flight gets there:
        // the gather's wait then overlaps the test below.
        const __m512i left = _mm512_mask_blend_epi32(pick_x, _mm512_mask_blend_epi32(pick_y, left_z, left_y), left_x);
        const __m512i step = _mm512_mask_blend_epi32(pick_x, _mm512_mask_blend_epi32(pick_y, step_z, step_y), step_x);
        const __m512i next_block = _mm512_add_epi32(block, step);
        const __mmask16 inside = (__mmask16)(walking & _mm512_cmpneq_epi32_mask(left, zero_i));
        const __m512 next_majorant =
            _mm512_mask_i32gather_ps(majorant, inside, _mm512_add_epi32(row, next_block), p.majorant_per_mm, 4);
        // the flight ends in this block when t + tau / mu_max comes before the face
        const __m512 s = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(majorant, zero, _CMP_GT_OQ), none,
                                              _mm512_mul_ps(tau, inv_majorant));
        const __m512 t_s = _mm512_add_ps(t, s);
        const __mmask16 hit = (__mmask16)(walking & _mm512_cmp_ps_mask(t_s, t_face, _CMP_LT_OQ));
        t = _mm512_mask_mov_ps(t, hit, t_s);
        collided = (__mmask16)(collided | hit);
        walking = (__mmask16)(walking & ~hit);
        if (!walking) break;
        // the others cross the face: tau = max_f(tau - (t_face - t) majorant, 0), t = t_face
        const __m512 tau_face = _mm512_sub_ps(tau, _mm512_mul_ps(_mm512_sub_ps(t_face, t), majorant));
        tau = _mm512_mask_mov_ps(tau, walking,
                                 _mm512_mask_blend_ps(_mm512_cmp_ps_mask(tau_face, zero, _CMP_GT_OQ), zero, tau_face));
        t = _mm512_mask_mov_ps(t, walking, t_face);
        const __mmask16 out = (__mmask16)(walking & (_mm512_cmp_ps_mask(t_face, t_exit, _CMP_GE_OQ) |
                                                     _mm512_cmpeq_epi32_mask(left, zero_i)));
        walking = (__mmask16)(walking & ~out);
        if (!walking) break;
        left_x = _mm512_mask_sub_epi32(left_x, (__mmask16)(walking & pick_x), left_x, one_i);
        left_y = _mm512_mask_sub_epi32(left_y, (__mmask16)(walking & pick_y), left_y, one_i);
        left_z = _mm512_mask_sub_epi32(left_z, (__mmask16)(walking & pick_z), left_z, one_i);
        block = _mm512_mask_mov_epi32(block, walking, next_block);
        // tx += pick_x ? dx : 0 (an added zero, as in walk_blocks)
        tx = _mm512_mask_add_ps(tx, walking, tx, _mm512_maskz_mov_ps(pick_x, dx));
        ty = _mm512_mask_add_ps(ty, walking, ty, _mm512_maskz_mov_ps(pick_y, dy));
        tz = _mm512_mask_add_ps(tz, walking, tz, _mm512_maskz_mov_ps(pick_z, dz));
        // the table's inverse is this IEEE division (RegionMajorants), used only where the majorant is > 0
        majorant = _mm512_mask_mov_ps(majorant, walking, next_majorant);
        inv_majorant = _mm512_mask_div_ps(inv_majorant, walking, one, majorant);
    }
    _mm512_storeu_ps(f.t, t);
    _mm512_storeu_ps(f.tau, tau);
    _mm512_storeu_ps(f.majorant, majorant);
    _mm512_storeu_ps(f.inv_majorant, inv_majorant);
    _mm512_storeu_ps(f.t_next[0], tx);
    _mm512_storeu_ps(f.t_next[1], ty);
    _mm512_storeu_ps(f.t_next[2], tz);
    _mm512_storeu_si512(f.blocks_left[0], left_x);
    _mm512_storeu_si512(f.blocks_left[1], left_y);
    _mm512_storeu_si512(f.blocks_left[2], left_z);
    _mm512_storeu_si512(f.block, block);
    *unfinished = walking;
    return collided;
}
#endif

}  // namespace mc
}  // namespace xsim

// Histories interleaved per host thread. A Woodcock step reads a voxel anywhere in the phantom (8 MB for 128^3),
// and one history has nothing to do while that read misses the cache: the next step needs it. So the host keeps
// MC_INTERLEAVE histories in flight: each runs to its next such read, prefetches it and hands over to the next,
// which by its turn has its own data in the cache. The same holds for the tallies a history adds to (a voxel's
// deposit, a pixel's image word): an atomic add waits for its cache line. With MC_VECTOR_WALK the histories run
// in rounds, in MC_SETS sets of 16 taken in turns: in a set's round each history runs to such an access or to
// the start of a block walk, then the set's walks go together in vector lanes (walk_lanes) and prefetch the
// voxels they reach, which the set reads in its next round, after the other set's. Index i (a multiple of
// MC_GROUP) runs photons i .. i + MC_GROUP - 1, a slot taking the next photon when its history ends. Each photon
// still draws from its own stream and tallies are fixed point, so the results are those of one history at a
// time, bit for bit.

#if MC_PERSISTENT
// Persistent threads (the GPU's structure): slot runs photons slot, slot + slots, ... of the launch one after
// another. Each pass of the loop takes the phases in their usual order, each only for the lanes in it, so a
// lane goes through as many as it can in one pass (into the phantom, a flight, its walk, the tentative
// collision, the interaction) and the lanes of a warp run each phase together; when a photon ends, its lane
// starts the next one in the same pass. Why: a warp whose lanes each ran one photon to its end waited for its
// longest history (Nsight Compute: ~3 active lanes of 32 in the former one-history-per-index loop), and a
// state machine entered at a different phase per lane jumps through its code. The photons, their streams and
// their tallies are those of the other builds, so the results are the same bits (tested on the host).
__device__ void mc_transport_slot(const McTransportParams& p, uint64_t slot, uint64_t slots, uint64_t n) {
    using namespace xsim::mc;
    (void)n;  // = p.n_photons
    uint64_t next = slot;
    if (next >= p.n_photons) return;
    History h;
    Flights f;
    start_history(p, p.first_photon + next, h);
    for (;;) {
        // A phase that always follows another in the same pass is nested in its block, so the compiler sees that
        // what they hand over (the image word, the collision's voxel) is not kept from one pass to the next.
        if (h.phase == kSegment) {
            world_segment(p, h);
            if (h.phase == kScore) {
                xsim::atomic_add_fixed(&p.images[h.image_word], h.signal, p.fixed_scale);
                h.phase = kDone;
            }
        }
        if (h.phase == kFlight) start_flight(p, h, f, 0);
        if (h.phase == kWalk) {
            const WalkEnd end = walk_blocks_upto<MC_CUDA_WALK_CROSSINGS>(p, f, 0);
            if (end != kWalking) end_walk(p, h, f, 0, end == kCollided);
        }
        if (h.phase == kTest) {
            test_collision(p, h, f, 0);
            if (h.phase == kInteract) interact_in_phantom(p, h);
        }
        if (h.phase == kDone) {
            finish_history(p, h, slot);  // a row per slot: the lanes of a warp add to different rows
            next += slots;
            if (next >= p.n_photons) break;
            start_history(p, p.first_photon + next, h);
        }
    }
}

XSIM_PERSISTENT_KERNEL(mc_transport, McTransportParams, MC_CUDA_THREADS, MC_CUDA_MIN_BLOCKS)
#else
__device__ void mc_transport_body(const McTransportParams& p, uint64_t i) {
    using namespace xsim::mc;
#if defined(XSIM_HOST) && MC_INTERLEAVE > 1
    if (i % MC_GROUP != 0) return;
    const uint64_t end = min(i + (uint64_t)MC_GROUP, p.n_photons);
    History h[MC_SETS][MC_LANES];
    Flights f[MC_SETS] = {};  // zeroed: the vector walk also loads (and masks off) lanes with no flight
    bool live[MC_SETS][MC_LANES];
    uint64_t next = i;
    int n_live = 0;
    for (int g = 0; g < MC_SETS; ++g) {
        for (int s = 0; s < MC_LANES; ++s) {
            live[g][s] = next < end;
            if (live[g][s]) {
                start_history(p, p.first_photon + next++, h[g][s]);
                ++n_live;
            }
        }
    }
    while (n_live > 0) {
        for (int g = 0; g < MC_SETS; ++g) {
            uint32_t walking = 0;
            for (int s = 0; s < MC_LANES; ++s) {
                if (!live[g][s]) continue;
                History& hs = h[g][s];
                const void* address = advance(p, hs, f[g], s);
                if (address) {
                    if (hs.phase == kInteract || hs.phase == kScore)
                        __builtin_prefetch(address, 1, 3);  // a deposit tally or image word, about to be added to
                    else
                        __builtin_prefetch(address, 0, 3);  // a voxel word, read only
                } else if (hs.phase == kWalk) {
                    walking |= 1u << s;
                } else if (next < end) {
                    start_history(p, p.first_photon + next++, hs);
                } else {
                    live[g][s] = false;
                    --n_live;
                }
            }
#if MC_VECTOR_WALK
            if (walking) {
                uint32_t unfinished;
                const uint32_t collided = walk_lanes(p, f[g], walking, &unfinished);
                for (uint32_t w = walking & ~unfinished; w; w &= w - 1) {
                    const int s = __builtin_ctz(w);
                    if (const void* voxel_word = end_walk(p, h[g][s], f[g], s, (collided >> s) & 1u))
                        __builtin_prefetch(voxel_word, 0, 3);
                }
            }
#endif
        }
    }
#else
    if (i >= p.n_photons) return;
    History h;
    Flights f;
    start_history(p, p.first_photon + i, h);
    while (advance(p, h, f, 0)) {
    }
#endif
}

XSIM_KERNEL(mc_transport, McTransportParams)
#endif
