// mc_physics.cuh: photon interaction physics for the xsim Monte Carlo kernels (10-150 keV), shared by
// every MC kernel (mc_transport.cu, the sampler check mc_check.cu): cross-section lookup on the energy grid,
// Compton (Klein-Nishina x S(x)) and Rayleigh (Thomson x F^2(x)) angular sampling, direction rotation.
//
// Tables are built in Python (xsim.montecarlo.PhysicsTables) and passed as flat float arrays:
//   xs[(m * n_e + k) * 4 + {0,1,2,3}]  mu/rho / 10 of material m at E_k = e_min + k * de, in 1/mm per
//                                      g/cm^3: total (= sum of the three), Rayleigh, Compton, photoelectric
//   compton_s[m * n_x + j]             S(x_j) / S(inf) of material m (incoherent scattering function per
//                                      gram over its large-x limit, the electrons per gram), x_j = j * dx
//   rayleigh_cum[m * n_x + j]          A(x_j^2) = integral_0^{x_j^2} F^2(x) d(x^2), in units of the
//                                      material's F^2(0) (A/Angstrom^2), x_j = j * dx
// x = sin(theta/2) / lambda in 1/Angstrom with lambda = hc / E, hc = 12.39842 keV Angstrom.
#pragma once
#include "philox.cuh"

namespace xsim {
namespace mc {

#define XSIM_MC_HC_KEV_A 12.39842f       // h c in keV Angstrom (CODATA 2018)
#define XSIM_MC_ELECTRON_KEV 510.99895f  // electron rest energy m_e c^2 in keV (CODATA 2018)

// min and max of two floats that are never NaN. On the host, fminf and fmaxf are libm calls (they must honour
// NaN and signed-zero rules), a measurable cost in the per-step code; a compare gives the same value here.
XSIM_FN float min_f(float a, float b) { return a < b ? a : b; }
XSIM_FN float max_f(float a, float b) { return a > b ? a : b; }

// Position of energy E on the linear energy grid: node k and the weight f of node k + 1 (clamped to the grid).
struct EnergyIndex {
    int k;
    float f;
};

XSIM_FN EnergyIndex energy_index(float energy_keV, float e_min_keV, float inv_de_keV, int n_e) {
    float t = (energy_keV - e_min_keV) * inv_de_keV;
    t = min_f(max_f(t, 0.0f), (float)(n_e - 1) - 1e-3f);
    const int k = (int)t;
    return EnergyIndex{k, t - (float)k};
}

// Linear interpolation of column c of the 4-column table row block of material m.
XSIM_FN float xs_lookup(const float* xs, int m, int n_e, EnergyIndex e, int c) {
    const float* row = xs + ((size_t)m * n_e + e.k) * 4 + c;
    const float lo = ldg(row), hi = ldg(row + 4);
    return lo + e.f * (hi - lo);
}

// Linear interpolation of a one-column table on the energy grid (majorant, detector response).
XSIM_FN float grid_lookup(const float* table, EnergyIndex e) {
    const float lo = ldg(table + e.k), hi = ldg(table + e.k + 1);
    return lo + e.f * (hi - lo);
}

// Compton scattering: Klein-Nishina x S(x, Z).
// d(sigma)/d(Omega) = r_e^2/2 tau^2 (tau + 1/tau - sin^2 theta) * S(x) with tau = E'/E = 1/(1 + k(1 - cos)),
// k = E / m_e c^2 (Klein & Nishina 1929; S(x) in the impulse-free "Waller-Hartree" form, Hubbell et al.,
// J Phys Chem Ref Data 4, 471 (1975)). KN is sampled with the Butcher & Messel (Nucl Phys 20, 15, 1960)
// composition-rejection method on tau in [1/(1+2k), 1] (as in EGS4 and Geant4's G4KleinNishinaCompton):
// pdf(tau) ~ (1/tau + tau) * g(tau), choosing 1/tau or tau by their integrals and accepting with
// g = 1 - tau sin^2 / (1 + tau^2). The S(x) factor is then a second rejection, accepted with S(x)/S(inf)
// (<= 1): the product of the two acceptances samples KN x S exactly.
// Returns cos(theta); *scattered_keV receives E' = E / (1 + k (1 - cos theta)).
XSIM_FN float sample_compton(float energy_keV, const float* s_row, float inv_dx, int n_x, Philox& rng,
                             float* scattered_keV) {
    const float k = energy_keV * (1.0f / XSIM_MC_ELECTRON_KEV);
    const float tau0 = 1.0f / (1.0f + 2.0f * k);
    const float tau0_sq = tau0 * tau0;
    const float a1 = -logf(tau0);           // integral of 1/tau over [tau0, 1]
    const float a2 = 0.5f * (1.0f - tau0_sq);  // integral of tau
    const float p1 = a1 / (a1 + a2);
    const float x_per_one_minus_cos = energy_keV * (1.0f / XSIM_MC_HC_KEV_A) * 0.70710678f;  // x = c sqrt(1-cos)
    for (;;) {
        float tau, tau_sq;
        if (rng.uniform() < p1) {
            tau = expf(-a1 * rng.uniform());
            tau_sq = tau * tau;
        } else {
            tau_sq = tau0_sq + (1.0f - tau0_sq) * rng.uniform();
            tau = sqrtf(tau_sq);
        }
        const float one_minus_cos = (1.0f - tau) / (tau * k);
        const float sin_sq = one_minus_cos * (2.0f - one_minus_cos);
        const float g = 1.0f - tau * sin_sq / (1.0f + tau_sq);
        if (rng.uniform() >= g) continue;
        // S(x) rejection, x = sin(theta/2)/lambda = (E/hc) sqrt((1 - cos)/2)
        const float x = x_per_one_minus_cos * sqrtf(max_f(one_minus_cos, 0.0f));
        float t = x * inv_dx;
        t = min_f(t, (float)(n_x - 1) - 1e-3f);
        const int j = (int)t;
        const float s_lo = ldg(s_row + j), s_hi = ldg(s_row + j + 1);
        const float s = s_lo + (t - (float)j) * (s_hi - s_lo);
        if (rng.uniform() >= s) continue;
        *scattered_keV = energy_keV * tau;
        return 1.0f - one_minus_cos;
    }
}

// Rayleigh scattering: Thomson x F^2(x).
// d(sigma)/d(Omega) = r_e^2 (1 + cos^2 theta)/2 * F^2(x). With x^2 = (1 - cos theta) / (2 lambda^2),
// d(cos theta) is proportional to d(x^2), so F^2 is a density in x^2 on [0, x_max^2], x_max = 1/lambda = E/hc.
// Method of PENELOPE (Salvat, Fernandez-Varea, Sempau, PENELOPE-2006 manual, section 2.1) and MC-GPU: draw
// x^2 from F^2 by inverting its cumulative A(x^2) truncated at x_max^2 (here: binary search in the tabulated
// A, linear inside a bin, i.e. F^2 constant across a bin of width ~ 2 x dx), then accept with
// (1 + cos^2 theta)/2 (<= 1). Returns cos(theta).
XSIM_FN float sample_rayleigh(float energy_keV, const float* cum_row, float dx, int n_x, Philox& rng) {
    const float x_max = energy_keV * (1.0f / XSIM_MC_HC_KEV_A);
    const float x2_max = x_max * x_max;
    float t = min_f(x_max / dx, (float)(n_x - 1) - 1e-3f);
    const int j_max = (int)t;
    const float x2_lo = (j_max * dx) * (j_max * dx), x2_hi = ((j_max + 1) * dx) * ((j_max + 1) * dx);
    const float cum_lo = ldg(cum_row + j_max), cum_hi = ldg(cum_row + j_max + 1);
    const float a_max = cum_lo + (x2_max - x2_lo) / (x2_hi - x2_lo) * (cum_hi - cum_lo);
    for (;;) {
        const float c = rng.uniform() * a_max;
        int lo = 0, hi = j_max + 1;  // invariant: cum[lo] <= c < cum[hi] (c < a_max <= cum[j_max + 1])
        while (hi - lo > 1) {
            const int mid = (lo + hi) >> 1;
            if (ldg(cum_row + mid) <= c) lo = mid; else hi = mid;
        }
        const float b_lo = (lo * dx) * (lo * dx), b_hi = ((lo + 1) * dx) * ((lo + 1) * dx);
        const float c_lo = ldg(cum_row + lo), c_hi = ldg(cum_row + lo + 1);
        const float x2 = b_lo + (c - c_lo) / (c_hi - c_lo) * (b_hi - b_lo);
        const float cos_theta = max_f(1.0f - 2.0f * x2 / x2_max, -1.0f);
        if (2.0f * rng.uniform() < 1.0f + cos_theta * cos_theta) return cos_theta;
    }
}

// Turn the unit direction (u, v, w) by polar angle theta (cos given) and azimuth phi (uniform in [0, 2 pi)),
// the usual rotation (e.g. PENELOPE-2006 manual, eq. 1.131), renormalised against float drift.
XSIM_FN void rotate_direction(float& u, float& v, float& w, float cos_theta, Philox& rng) {
    const float sin_theta = sqrtf(max_f(1.0f - cos_theta * cos_theta, 0.0f));
    float sin_phi, cos_phi;
    sincos_2pi(rng.uniform(), &sin_phi, &cos_phi);
    const float rho_sq = u * u + v * v;
    float nu, nv, nw;
    if (rho_sq > 1e-10f) {
        const float rho = sqrtf(rho_sq);
        const float a = sin_theta / rho;
        nu = u * cos_theta + a * (u * w * cos_phi - v * sin_phi);
        nv = v * cos_theta + a * (v * w * cos_phi + u * sin_phi);
        nw = w * cos_theta - sin_theta * cos_phi * rho;
    } else {  // along +-z: any perpendicular frame will do
        nu = sin_theta * cos_phi;
        nv = sin_theta * sin_phi;
        nw = (w >= 0.0f ? 1.0f : -1.0f) * cos_theta;
    }
    const float inv = 1.0f / sqrtf(nu * nu + nv * nv + nw * nw);
    u = nu * inv;
    v = nv * inv;
    w = nw * inv;
}

// Voxel word: the float32 density with its 8 lowest mantissa bits replaced by the material index (density
// rounded to 2^-15 relative, 3e-5; xsim.montecarlo.pack_voxels). One 4-byte load per Woodcock step, half the
// memory of (density, index) pairs: the voxel fetch is the main cost of a step in a large phantom.
XSIM_FN void unpack_voxel(uint32_t word, float* density_g_cm3, int* material) {
    const uint32_t bits = word & 0xFFFFFF00u;
#if defined(__CUDA_ARCH__)
    *density_g_cm3 = __uint_as_float(bits);
#else
    __builtin_memcpy(density_g_cm3, &bits, sizeof(float));
#endif
    *material = (int)(word & 0xFFu);
}

// Walker's alias method (A. J. Walker, ACM TOMS 3, 253 (1977); table built by Vose's algorithm in Python):
// bin j = floor(u n), kept with probability prob[j], else replaced by alias[j].
XSIM_FN int sample_alias(const float* prob, const int32_t* alias, int n, Philox& rng) {
    const int j = min((int)(rng.uniform() * (float)n), n - 1);
    return rng.uniform() < ldg(prob + j) ? j : ldg(alias + j);
}

}  // namespace mc
}  // namespace xsim
