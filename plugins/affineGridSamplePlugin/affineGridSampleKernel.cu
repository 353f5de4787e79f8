/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * affineGridSampleKernel.cu: CUDA kernels of STNAffineGridSample. Each thread builds its base-grid
 * point (affine_grid's linspace, from axes made on the host: no division per point), transforms
 * it by theta in registers (2-D affine, projective with the homogeneous divide, or 3-D affine)
 * and samples with gridSampleMath.h: no grid tensor is read or written. Taps are computed once
 * per position and reused across channels; the specialised fp16/bf16 threads handle two adjacent
 * positions with vectorised stores (see gridSampleKernel.cu for the two kernels per dtype).
 */
#include "affineGridSampleKernel.h"
#include "kernelCommon.cuh"

namespace stn_deploy
{
namespace
{
//! P adjacent output positions of one batch item per thread (PositionsPerThread: 2 for the
//! specialised fp16/bf16 kernels, else 1):
//! base-grid points (the host-made axes: no division) and their transforms in registers, then the
//! shared sampler. I: the index type (int32_t where fitsIndex32 holds, else int64_t: generic
//! kernel only).
template <typename T, int kRank, int P, typename Options, typename I>
__global__ void __launch_bounds__(cuda::kTHREADS) __maxnreg__((cuda::MaxRegisters<Options, I>::value))
    affineGridSampleKernel(T const* __restrict__ x, cuda::CoordReader theta, T* __restrict__ out,
        cuda::Geometry<I> geo, Options o, bool vectorStore)
{
    using Flat = typename cuda::Geometry<I>::Flat;
    int32_t const count = kRank == 5 ? 12 : (geo.transform == 1 ? 9 : 6);
    for (Flat j = cuda::globalThread<Flat>(); j < geo.work; j += cuda::gridStride<Flat>())
    {
        I n, k;
        geo.split.item(j, n, k);
        I const pos = k * P;
        bool const second = P == 2 && pos + 1 < geo.outPlane;
        float t[12];
        theta.row(n * count, count, t);
        float gx[P], gy[P], gz[P];
        STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            I const q = (p == 0 || second) ? pos + p : pos; // past the plane's end: repeat the first
            I zh, w;
            geo.split.row(q, zh, w);
            float const bx = geo.baseX.at(w);
            if (kRank == 4)
            {
                math::transformPoint2d(t, geo.transform == 1, bx, geo.baseY.at(zh), gx[p], gy[p]);
                gz[p] = 0.0f;
            }
            else
            {
                I z, h;
                geo.split.slice(zh, z, h);
                math::transformPoint3d(t, bx, geo.baseY.at(h), geo.baseZ.at(z), gx[p], gy[p], gz[p]);
            }
        }
        cuda::Chunk<T, I> const chunk(x, out, geo, n);
        cuda::sampleItem<T, kRank, P>(
            chunk.in, chunk.out, chunk.channels, geo, o, pos, vectorStore, second, gx, gy, gz);
    }
}

//! The kernel of one dtype and rank.
struct Sampler
{
    static constexpr bool kFused = true;
    template <typename T, int kRank>
    static void launch(cuda::LaunchConfig<T> const& c, cudaStream_t stream)
    {
        cuda::withKernel<kRank>(c.o, c.index32, c.pairable, [&](auto const o, auto const index) {
            using Options = std::remove_const_t<decltype(o)>;
            using I = std::remove_const_t<decltype(index)>;
            constexpr int P = cuda::PositionsPerThread<T, Options>::value;
            auto const geo = cuda::Geometry<I>::make(c.d, P, c.template chunkOf<P>());
            STN_LAUNCH(c.template grid<P>(), cuda::kTHREADS, 0, stream,
                affineGridSampleKernel<T, kRank, P, Options, I>)(c.x, c.coord, c.out, geo, o, c.template vectorStore<P>());
        });
    }
};

} // namespace

int32_t launchAffineGridSample(
    StnSampleDesc const& desc, void const* x, void const* theta, void* out, cudaStream_t stream)
{
    return cuda::launchSampler<Sampler>(desc, x, theta, out, stream, "STNAffineGridSample kernel launch");
}

} // namespace stn_deploy

extern "C" STN_API int32_t stn_affine_grid_sample_cuda(
    StnSampleDesc const* desc, void const* x, void const* theta, void* out, void* stream)
{
    using namespace stn_deploy;
    int32_t const status = cuda::checkCudaEntry(desc, /*fused=*/true);
    if (status != STN_OK)
    {
        return status;
    }
    return launchAffineGridSample(*desc, x, theta, out, static_cast<cudaStream_t>(stream));
}
