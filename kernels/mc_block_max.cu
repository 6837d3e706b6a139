// mc_block_max.cu: the largest density of each material in each block of B^3 voxels, read from the Monte
// Carlo's packed voxel words: the input of the region majorants (xsim.montecarlo.RegionMajorants). One index
// per block, one pass over the phantom; numpy needs a pass per material (~0.3 s for a 256^3 phantom).
// A maximum does not depend on the order it is taken in: the result is the numpy version's, bit for bit.
#include "mc_physics.cuh"

// Mirrored in Python by xsim.montecarlo._BlockMaxParams.
struct McBlockMaxParams {
    const uint32_t* voxels;  // [n0 * n1 * n2] packed density + material (unpack_voxel)
    int32_t n[3];            // grid shape
    int32_t block;           // block edge B, voxels
    int32_t blocks[3];       // ceil(n / B) per axis
    int32_t n_materials;
    float* rho_max;          // [blocks][n_materials] g/cm^3, zero on entry
};

__device__ void mc_block_max_body(const McBlockMaxParams& p, uint64_t i) {
    const int b2 = (int)(i % p.blocks[2]), b1 = (int)(i / p.blocks[2] % p.blocks[1]);
    const int b0 = (int)(i / ((uint64_t)p.blocks[1] * p.blocks[2]));
    float* out = p.rho_max + i * p.n_materials;
    const int i_end = min((b0 + 1) * p.block, p.n[0]), j_end = min((b1 + 1) * p.block, p.n[1]);
    const int k_end = min((b2 + 1) * p.block, p.n[2]);
    for (int a = b0 * p.block; a < i_end; ++a) {
        for (int b = b1 * p.block; b < j_end; ++b) {
            const uint32_t* row = p.voxels + ((size_t)a * p.n[1] + b) * p.n[2];
            for (int c = b2 * p.block; c < k_end; ++c) {
                float rho;
                int m;
                xsim::mc::unpack_voxel(row[c], &rho, &m);
                out[m] = xsim::mc::max_f(out[m], rho);
            }
        }
    }
}

XSIM_KERNEL(mc_block_max, McBlockMaxParams)
