/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSampleKernel.cu: CUDA kernels of STNGridSample. The sampling maths is gridSampleMath.h
 * (PyTorch's grid sampler semantics; see the credits there), compiled here for the device.
 *
 * Memory plan: one thread per output position for fp32, two adjacent positions for fp16/bf16;
 * the taps (indices, weights, validity) of a position are computed once in registers and reused
 * for every channel; output stores are coalesced across the warp (consecutive threads write
 * consecutive positions of a channel plane) and, for fp16/bf16 on even planes, vectorised
 * (__half2 / __nv_bfloat162); fp32 grids are read with one float2/float4 load per thread.
 * Two kernels per dtype and rank (kernelCommon.cuh withKernel): 4-D bilinear with zeros/border
 * padding and CUDA semantics, fixed at compile time; the generic kernel (one position per thread)
 * for everything else. Both on 32-bit offsets where a plane, the positions and the grid fit
 * (channel planes are addressed in 64 bits); the generic one on 64-bit offsets otherwise.
 * Positions are split by host-made multiply-high divisors.
 */
#include "gridSampleKernel.h"
#include "kernelCommon.cuh"

namespace stn_deploy
{
namespace
{
using cuda::CoordReader;

//! P adjacent output positions of one batch item per thread (PositionsPerThread: 2 for the
//! specialised fp16/bf16 kernels, else 1).
//! vectorStore: even plane and aligned output -> one vector store per channel and thread.
//! vectorGrid: 4-D fp32 grid, suitably aligned -> the P (x, y) pairs come in one float2/float4 load.
//! I: the index type (int32_t where fitsIndex32 holds, else int64_t: generic kernel only).
template <typename T, int kRank, int P, typename Options, typename I>
__global__ void __launch_bounds__(cuda::kTHREADS) __maxnreg__((cuda::MaxRegisters<Options, I>::value))
    gridSampleKernel(T const* __restrict__ x, CoordReader grid, T* __restrict__ out, cuda::Geometry<I> geo,
        Options o, bool vectorStore, bool vectorGrid)
{
    using Flat = typename cuda::Geometry<I>::Flat;
    for (Flat j = cuda::globalThread<Flat>(); j < geo.work; j += cuda::gridStride<Flat>())
    {
        I n, k;
        geo.split.item(j, n, k);
        I const pos = k * P;
        I const i = n * geo.outPlane + pos; // global index of the first position
        bool const second = P == 2 && pos + 1 < geo.outPlane;
        cuda::Chunk<T, I> const chunk(x, out, geo, n);
        float gx[P], gy[P], gz[P];
        if (kRank == 4 && vectorGrid)
        {
            if constexpr (P == 2)
            {
                float4 const g = __ldg(static_cast<float4 const*>(grid.p) + i / 2);
                gx[0] = g.x;
                gy[0] = g.y;
                gx[1] = g.z;
                gy[1] = g.w;
            }
            else
            {
                float2 const g = __ldg(static_cast<float2 const*>(grid.p) + i);
                gx[0] = g.x;
                gy[0] = g.y;
            }
        }
        else
        {
            STN_UNROLL
            for (int p = 0; p < P; ++p)
            {
                I const q = (p == 0 || second) ? i + p : i; // past the plane's end: repeat the first
                gx[p] = grid[(kRank - 2) * q];
                gy[p] = grid[(kRank - 2) * q + 1];
                gz[p] = kRank == 5 ? grid[(kRank - 2) * q + 2] : 0.0f;
            }
        }
        cuda::sampleItem<T, kRank, P>(
            chunk.in, chunk.out, chunk.channels, geo, o, pos, vectorStore, second, gx, gy, gz);
    }
}

//! The kernel of one dtype and rank; the fp32 4-D grid is read with vector loads when aligned.
struct Sampler
{
    static constexpr bool kFused = false;
    template <typename T, int kRank>
    static void launch(cuda::LaunchConfig<T> const& c, cudaStream_t stream)
    {
        cuda::withKernel<kRank>(c.o, c.index32, c.pairable, [&](auto const o, auto const index) {
            using Options = std::remove_const_t<decltype(o)>;
            using I = std::remove_const_t<decltype(index)>;
            constexpr int P = cuda::PositionsPerThread<T, Options>::value;
            bool const vectorGrid = kRank == 4 && c.d.coord_dtype == STN_DTYPE_FLOAT32 && c.template evenPlane<P>()
                && cuda::aligned(c.coord.p, 8 * P);
            auto const geo = cuda::Geometry<I>::make(c.d, P, c.template chunkOf<P>());
            STN_LAUNCH(c.template grid<P>(), cuda::kTHREADS, 0, stream, gridSampleKernel<T, kRank, P, Options, I>)(
                c.x, c.coord, c.out, geo, o, c.template vectorStore<P>(), vectorGrid);
        });
    }
};

} // namespace

int32_t launchGridSample(StnSampleDesc const& desc, void const* x, void const* grid, void* out, cudaStream_t stream)
{
    return cuda::launchSampler<Sampler>(desc, x, grid, out, stream, "STNGridSample kernel launch");
}

} // namespace stn_deploy

extern "C" STN_API int32_t stn_grid_sample_cuda(
    StnSampleDesc const* desc, void const* x, void const* grid, void* out, void* stream)
{
    using namespace stn_deploy;
    int32_t const status = cuda::checkCudaEntry(desc, /*fused=*/false);
    if (status != STN_OK)
    {
        return status;
    }
    return launchGridSample(*desc, x, grid, out, static_cast<cudaStream_t>(stream));
}
