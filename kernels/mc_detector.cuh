// mc_detector.cuh: what the flat panel of the xsim Monte Carlo kernels records for a photon reaching it:
// the detector's energy response at the photon's obliquity and the transmission of an optional focused
// linear anti-scatter grid in front of it.
#pragma once
#include "mc_physics.cuh"

namespace xsim {
namespace mc {

// Signal per photon (keV or counts): signal(E) (1 - exp(-mu t(E) / cos)), the Beer-Lambert interaction
// probability along the oblique path through the sensitive layer times the signal per interacting photon
// (xsim.detector.Detector.kernel_tables gives both factors per energy).
XSIM_FN float detector_signal(const float* signal, const float* mu_t, EnergyIndex e, float cos_incidence) {
    return grid_lookup(signal, e) * (1.0f - expf(-grid_lookup(mu_t, e) / cos_incidence));
}

// Linear anti-scatter grid: strips of thickness d (e.g. lead) repeating with period P = D + d (interspace
// width D), height h, their planes tilted toward a focus (focused grid) or parallel to the normal.
struct Grid {
    int32_t enabled;
    int32_t focused;        // 1: strip planes contain the focus point; 0: parallel strips
    float across[3];        // unit vector in the detector plane, perpendicular to the strips
    float focus_mm[3];      // the focus (usually the source position)
    float height_mm;        // h
    float period_mm;        // P = D + d
    float strip_mm;         // d
};

// Lateral length of [0, x) covered by strips occupying [k P, k P + d) (x >= 0).
XSIM_FN float strip_cover(float x, float period, float strip) {
    const float k = floorf(x / period);
    return k * strip + fminf(x - k * period, strip);
}

// Transmission of the grid for one photon: the linear-grid model of Day & Dance, Phys Med Biol 28, 1429
// (1983), with septal penetration, evaluated for one random entry offset x0 (uniform over a period; u01 in
// [0, 1)), so that its mean over photons is the model's transmission. Across the strips the photon moves
// laterally X = h |tan_p - tan_w| while crossing the grid height (tan_p = its slope across the strips,
// tan_w = the strip walls' slope there, toward the focus; 0 for a parallel grid); the fraction f of that
// lateral path inside strips is also the fraction of its path length h / cos(incidence) inside strip
// material (the position is linear along the path), so T = exp(-(f mu_strip + (1 - f) mu_interspace) h / cos).
// With opaque strips its mean is D/P max(0, 1 - r |tan_p - tan_w|), r = h / D (the geometric grid).
XSIM_FN float grid_transmission(const Grid& g, const float dir[3], const float hit_mm[3], const float normal[3],
                                float cos_incidence, float mu_interspace_per_mm, float mu_strip_per_mm,
                                float u01) {
    const float tan_photon = (dir[0] * g.across[0] + dir[1] * g.across[1] + dir[2] * g.across[2]) / cos_incidence;
    float tan_wall = 0.0f;
    if (g.focused) {
        const float d[3] = {hit_mm[0] - g.focus_mm[0], hit_mm[1] - g.focus_mm[1], hit_mm[2] - g.focus_mm[2]};
        tan_wall = (d[0] * g.across[0] + d[1] * g.across[1] + d[2] * g.across[2]) /
                   (d[0] * normal[0] + d[1] * normal[1] + d[2] * normal[2]);
    }
    const float lateral = g.height_mm * fabsf(tan_photon - tan_wall);
    const float x0 = u01 * g.period_mm;
    float in_strip;
    if (lateral > 1e-6f * g.period_mm) {
        in_strip = (strip_cover(x0 + lateral, g.period_mm, g.strip_mm) - strip_cover(x0, g.period_mm, g.strip_mm)) /
                   lateral;
    } else {
        in_strip = x0 < g.strip_mm ? 1.0f : 0.0f;
    }
    const float mu = in_strip * mu_strip_per_mm + (1.0f - in_strip) * mu_interspace_per_mm;
    return expf(-mu * g.height_mm / cos_incidence);
}

}  // namespace mc
}  // namespace xsim
