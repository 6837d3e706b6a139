// xsim_geometry.cuh: voxel-grid geometry shared by the kernels (projector, Monte Carlo).
//
// Conventions (the same as xsim.volume): a phantom is a C-order array of shape (ni, nj, nk), linear index
// (i * nj + j) * nk + k; voxel (i, j, k) is the box centred on the integer index point with faces at
// +-0.5, so the grid covers [-0.5, n - 0.5] along each index axis. The 4x4 affine maps index (i, j, k, 1)
// to world (x, y, z, 1) in mm, patient LPS; any invertible affine (oblique, flipped, anisotropic) works.
// Geometry is computed in double: index coordinates of a 512-voxel grid seen from 1 m need ~1e-9 relative
// precision for boundary crossings to stay ordered.
//
// The Python mirror of VoxelGrid is xsim.projector.VoxelGrid (filled by xsim.projector.voxel_grid).
// Other kernels may append functions at the end of this file; keep this part first.
#pragma once
#include "xsim_portable.cuh"

namespace xsim {

struct Vec3 {
    double x, y, z;
};
XSIM_FN Vec3 vec3(double x, double y, double z) { return Vec3{x, y, z}; }
XSIM_FN Vec3 vec3(const double* a) { return Vec3{a[0], a[1], a[2]}; }
XSIM_FN Vec3 operator+(Vec3 a, Vec3 b) { return Vec3{a.x + b.x, a.y + b.y, a.z + b.z}; }
XSIM_FN Vec3 operator-(Vec3 a, Vec3 b) { return Vec3{a.x - b.x, a.y - b.y, a.z - b.z}; }
XSIM_FN Vec3 operator*(double s, Vec3 a) { return Vec3{s * a.x, s * a.y, s * a.z}; }
XSIM_FN double dot(Vec3 a, Vec3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
XSIM_FN double norm(Vec3 a) { return sqrt(dot(a, a)); }
XSIM_FN double component(Vec3 a, int axis) { return axis == 0 ? a.x : (axis == 1 ? a.y : a.z); }

// A voxel grid placed in the world. Plain data: it is a field of kernel params structs.
struct VoxelGrid {
    int32_t n[3];                  // shape (ni, nj, nk)
    int32_t reserved;              // padding, keeps the doubles 8-byte aligned on both targets
    double world_to_index[12];     // 3x4 row-major: index = M (x_mm, y_mm, z_mm, 1)  (inverse affine)
    double index_to_world[12];     // 3x4 row-major: world_mm = A (i, j, k, 1)          (the affine)
};

// Affine map of a point by a 3x4 row-major matrix.
XSIM_FN Vec3 affine_point(const double* m, Vec3 p) {
    return Vec3{m[0] * p.x + m[1] * p.y + m[2] * p.z + m[3], m[4] * p.x + m[5] * p.y + m[6] * p.z + m[7],
                m[8] * p.x + m[9] * p.y + m[10] * p.z + m[11]};
}
// Linear part only: maps a direction (displacement).
XSIM_FN Vec3 affine_direction(const double* m, Vec3 d) {
    return Vec3{m[0] * d.x + m[1] * d.y + m[2] * d.z, m[4] * d.x + m[5] * d.y + m[6] * d.z,
                m[8] * d.x + m[9] * d.y + m[10] * d.z};
}
XSIM_FN Vec3 world_to_index(const VoxelGrid& g, Vec3 p_mm) { return affine_point(g.world_to_index, p_mm); }
XSIM_FN Vec3 index_to_world(const VoxelGrid& g, Vec3 p) { return affine_point(g.index_to_world, p); }

// Linear index of the voxel containing the index-space point p, or -1 outside the grid.
XSIM_FN int64_t voxel_at(const VoxelGrid& g, Vec3 p) {
    const int64_t i = (int64_t)floor(p.x + 0.5), j = (int64_t)floor(p.y + 0.5), k = (int64_t)floor(p.z + 0.5);
    if (i < 0 || j < 0 || k < 0 || i >= g.n[0] || j >= g.n[1] || k >= g.n[2]) return -1;
    return (i * g.n[1] + j) * g.n[2] + k;
}

// Slab-method intersection of the ray o + t d with the axis-aligned box [lo, hi], t restricted to
// [t_min, t_max] on entry. Returns false when the ray misses; otherwise t_min, t_max hold the overlap.
// A zero direction component is handled explicitly (0 * inf would be NaN).
XSIM_FN bool ray_box(Vec3 o, Vec3 d, Vec3 lo, Vec3 hi, double& t_min, double& t_max) {
    for (int a = 0; a < 3; ++a) {
        const double oa = component(o, a), da = component(d, a), la = component(lo, a), ha = component(hi, a);
        if (da == 0.0) {
            if (oa < la || oa > ha) return false;
            continue;
        }
        double t0 = (la - oa) / da, t1 = (ha - oa) / da;
        if (t0 > t1) {
            const double s = t0;
            t0 = t1;
            t1 = s;
        }
        t_min = t0 > t_min ? t0 : t_min;
        t_max = t1 < t_max ? t1 : t_max;
    }
    return t_min < t_max;
}

// The part of the index-space ray o + t d, t in [t_min, t_max], inside the grid's box [-0.5, n - 0.5].
XSIM_FN bool grid_clip(const VoxelGrid& g, Vec3 o, Vec3 d, double& t_min, double& t_max) {
    return ray_box(o, d, vec3(-0.5, -0.5, -0.5), vec3(g.n[0] - 0.5, g.n[1] - 0.5, g.n[2] - 0.5), t_min, t_max);
}

// The face a grid walk crosses next, given the parameters t_x, t_y, t_z of the next face along each axis:
// GridWalk's choice (the smallest; ties go to the later axis), as one-hot flags so that the caller updates
// its per-axis state with selects rather than an axis index (which would keep that state in memory). Returns
// the face's parameter. Shared by the projector's walk (double, voxels) and the Monte Carlo's block walk
// (float, majorant blocks).
template <class T>
XSIM_FN T nearest_face(T t_x, T t_y, T t_z, bool& pick_x, bool& pick_y, bool& pick_z) {
    const bool x_before_y = t_x < t_y;
    const T t_xy = x_before_y ? t_x : t_y;
    pick_z = !(t_xy < t_z);
    pick_x = !pick_z && x_before_y;
    pick_y = !pick_z && !x_before_y;
    return pick_z ? t_z : t_xy;
}

// Faces a walk along one axis can still cross before it leaves n cells, from cell idx moving by step
// (+1, -1; 0: never leaves along this axis).
XSIM_FN int32_t faces_left(int32_t step, int32_t n, int32_t idx) {
    return step > 0 ? n - 1 - idx : (step < 0 ? idx : 0x7fffffff);
}

// Exact voxel traversal (Amanatides & Woo, "A fast voxel traversal algorithm for ray tracing",
// Eurographics 1987; the incremental form of Siddon, Med. Phys. 12, 252, 1985, and Jacobs et al.,
// Comput. Vis. Sci. 1998). Walks the voxels crossed by o + t d for t in [t_enter, t_exit] (already
// clipped to the grid by grid_clip), yielding each voxel with the parameter interval spent in it.
//
//     GridWalk w(grid, o, d, t0, t1);
//     int64_t v; double dt;
//     while (w.next(v, dt)) { ... voxel v crossed over a parameter length dt (mm: dt * |A d|) ... }
struct GridWalk {
    int64_t voxel;        // current linear index
    int64_t stride[3];    // linear-index step per +1 along i, j, k, signed by the walking direction
    int32_t idx[3];       // current (i, j, k)
    int32_t step[3];      // +1 or -1 (0 for a zero direction component)
    int32_t n[3];
    double t_next[3];     // parameter of the next face crossing along each axis
    double t_delta[3];    // parameter length of one voxel along each axis
    double t, t_exit;

    GridWalk() = default;  // uninitialised: for arrays of walks
    XSIM_FN GridWalk(const VoxelGrid& g, Vec3 o, Vec3 d, double t_enter, double t_exit_)
        : t(t_enter), t_exit(t_exit_) {
        // Locate the first voxel at the middle of the first step: robust when entering exactly on a face.
        const Vec3 p = o + (t_enter) * d;
        const int64_t lin_stride[3] = {(int64_t)g.n[1] * g.n[2], (int64_t)g.n[2], 1};
        voxel = 0;
        for (int a = 0; a < 3; ++a) {
            n[a] = g.n[a];
            const double pa = component(p, a), da = component(d, a);
            int32_t ia = (int32_t)floor(pa + 0.5);
            ia = ia < 0 ? 0 : (ia >= n[a] ? n[a] - 1 : ia);
            idx[a] = ia;
            voxel += ia * lin_stride[a];
            if (da > 0.0) {
                step[a] = 1;
                t_delta[a] = 1.0 / da;
                t_next[a] = (ia + 0.5 - component(o, a)) / da;
            } else if (da < 0.0) {
                step[a] = -1;
                t_delta[a] = -1.0 / da;
                t_next[a] = (ia - 0.5 - component(o, a)) / da;
            } else {
                step[a] = 0;
                t_delta[a] = 1e300;
                t_next[a] = 1e300;
            }
            stride[a] = step[a] * lin_stride[a];
        }
    }

    // The next voxel and the parameter length dt spent in it; false when the ray has left the grid.
    XSIM_FN bool next(int64_t& v, double& dt) {
        if (t >= t_exit) return false;
        const int a = t_next[0] < t_next[1] ? (t_next[0] < t_next[2] ? 0 : 2) : (t_next[1] < t_next[2] ? 1 : 2);
        double t_out = t_next[a] < t_exit ? t_next[a] : t_exit;
        t_out = t_out > t ? t_out : t;  // rounding may put the first face a hair before the entry point
        v = voxel;
        dt = t_out - t;
        t = t_out;
        idx[a] += step[a];
        if (idx[a] < 0 || idx[a] >= n[a]) {
            t = t_exit;  // left the grid through a face: the walk ends after this voxel
        } else {
            voxel += stride[a];
            t_next[a] += t_delta[a];
        }
        return true;
    }
};

}  // namespace xsim

// ---------------------------------------------------------------------------------------------------------
// Functions appended by other kernels go below this line.
