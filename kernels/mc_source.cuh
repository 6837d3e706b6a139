// mc_source.cuh: the X-ray source of the xsim Monte Carlo kernels: a point (or finite) focal spot emitting a
// cone beam collimated to the detector rectangle, isotropic within it (uniform in solid angle).
#pragma once
#include "philox.cuh"

namespace xsim {
namespace mc {

// The collimated field: the rectangle corner + a * edge_a + b * edge_b (a, b in [0, 1]) on the detector plane,
// seen from the source at perpendicular distance `depth_mm` (along the detector normal).
struct Field {
    float corner_mm[3];
    float edge_a_mm[3];
    float edge_b_mm[3];
    float normal[3];       // unit detector normal, source -> detector
    float inv_cos3_max;    // 1 / (an upper bound of cos^3(angle to the normal) over the rectangle)
    float depth_mm;        // distance from the source to the detector plane along the normal
};

// The focal spot: a point, or a spot in the plane spanned by axis_a and axis_b (unit vectors) centred on
// centre_mm, either gaussian with FWHM size_mm along both axes or a uniform size_mm x size_mm square.
enum FocalSpotKind { kPointSpot = 0, kGaussianSpot = 1, kUniformSpot = 2 };
struct FocalSpot {
    float centre_mm[3];
    float axis_a[3];
    float axis_b[3];
    float size_mm;
    int32_t kind;
};

XSIM_FN void sample_focal_spot(const FocalSpot& s, Philox& rng, float pos[3]) {
    float a = 0.0f, b = 0.0f;
    if (s.kind == kGaussianSpot) {
        const float sigma = s.size_mm * 0.42466090f;  // FWHM = 2 sqrt(2 ln 2) sigma
        a = sigma * rng.normal();
        b = sigma * rng.normal();
    } else if (s.kind == kUniformSpot) {
        a = s.size_mm * (rng.uniform() - 0.5f);
        b = s.size_mm * (rng.uniform() - 0.5f);
    }
    for (int c = 0; c < 3; ++c) pos[c] = s.centre_mm[c] + a * s.axis_a[c] + b * s.axis_b[c];
}

// Direction from `source` to a point uniform in solid angle over the field rectangle.
// A uniform point on a plane at distance d, at angle theta from the normal, covers the solid angle
// dOmega = cos(theta) dA / r^2 = cos^3(theta) dA / d^2, so uniform points accepted with probability
// cos^3(theta) / max cos^3 are uniform in solid angle (rejection sampling).
XSIM_FN void sample_field_direction(const Field& f, const float source[3], Philox& rng, float dir[3]) {
    for (;;) {
        const float a = rng.uniform(), b = rng.uniform();
        float d[3];
        for (int c = 0; c < 3; ++c) d[c] = f.corner_mm[c] + a * f.edge_a_mm[c] + b * f.edge_b_mm[c] - source[c];
        const float inv_r = 1.0f / sqrtf(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        const float cos_theta = (d[0] * f.normal[0] + d[1] * f.normal[1] + d[2] * f.normal[2]) * inv_r;
        if (rng.uniform() < cos_theta * cos_theta * cos_theta * f.inv_cos3_max) {
            for (int c = 0; c < 3; ++c) dir[c] = d[c] * inv_r;
            return;
        }
    }
}

}  // namespace mc
}  // namespace xsim
