// mc_check.cu: runs the Monte Carlo samplers of mc_physics.cuh one draw per index, so the tests
// (tests/test_mc_physics.py) can compare their histograms with the analytic densities, through exactly the
// functions mc_transport.cu uses.
#include "mc_physics.cuh"

enum McCheckKind { kCheckCompton = 0, kCheckRayleigh = 1, kCheckAlias = 2 };

// Mirrored in Python by xsim.montecarlo._CheckParams.
struct McCheckParams {
    uint64_t seed;
    int32_t kind;        // McCheckKind
    float energy_keV;
    float dx;
    float inv_dx;
    int32_t n_x;
    const float* table;  // compton_s or rayleigh_cum row of one material (n_x values), or alias_prob
    const int32_t* alias_index;
    float* out;          // [n] cos(theta) (Compton, Rayleigh) or the bin drawn (alias)
    float* out_energy_keV;  // [n] scattered energy (Compton)
};

__device__ void mc_check_body(const McCheckParams& p, uint64_t i) {
    xsim::Philox rng(p.seed, i);
    if (p.kind == kCheckCompton) {
        float scattered;
        p.out[i] = xsim::mc::sample_compton(p.energy_keV, p.table, p.inv_dx, p.n_x, rng, &scattered);
        p.out_energy_keV[i] = scattered;
    } else if (p.kind == kCheckRayleigh) {
        p.out[i] = xsim::mc::sample_rayleigh(p.energy_keV, p.table, p.dx, p.n_x, rng);
    } else {
        p.out[i] = (float)xsim::mc::sample_alias(p.table, p.alias_index, p.n_x, rng);
    }
}

XSIM_KERNEL(mc_check, McCheckParams)
