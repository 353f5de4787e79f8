/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * affineGridSampleKernel.cu: CUDA kernels of STNAffineGridSample. Each thread builds its base-grid
 * point (affine_grid's linspace), transforms it by theta in registers (2-D affine, projective with
 * the homogeneous divide, or 3-D affine) and samples with gridSampleMath.h: no grid tensor is
 * read or written. Taps are computed once per position and reused across channels; fp16/bf16
 * threads handle two adjacent positions with vectorised stores (see gridSampleKernel.cu).
 */
#include "affineGridSampleKernel.h"
#include "kernelCommon.cuh"

namespace stn_deploy
{
namespace
{
using cuda::globalThread;
using cuda::gridStride;

__device__ __forceinline__ void loadTheta(cuda::CoordReader const& theta, int64_t n, int32_t count, float (&t)[12])
{
    STN_UNROLL
    for (int32_t k = 0; k < 12; ++k)
    {
        t[k] = k < count ? theta[n * count + k] : 0.0f;
    }
}

//! P adjacent output positions of one batch item per thread (P = 1 for fp32, 2 for fp16/bf16):
//! base-grid points and their transforms in registers, then the shared sampler.
template <typename T, int kRank, int P, typename Options>
__global__ void __launch_bounds__(cuda::kTHREADS)
    affineGridSampleKernel(T const* __restrict__ x, cuda::CoordReader theta, T* __restrict__ out, StnSampleDesc d,
        Options o, bool vectorStore)
{
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const inPlane = d.in_d * d.in_h * d.in_w;
    int64_t const perItem = (outPlane + P - 1) / P;
    int64_t const work = d.n * perItem;
    bool const small = d.n * outPlane < (int64_t{1} << 31);
    bool const ac = o.alignCorners;
    int32_t const count = kRank == 5 ? 12 : (d.transform == 1 ? 9 : 6);
    for (int64_t j = globalThread(); j < work; j += gridStride())
    {
        int64_t n, k;
        cuda::divMod(j, perItem, small, n, k);
        int64_t const pos = k * P;
        bool const second = P == 2 && pos + 1 < outPlane;
        float t[12];
        loadTheta(theta, n, count, t);
        float gx[P], gy[P], gz[P];
        STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            int64_t const q = (p == 0 || second) ? pos + p : pos; // past the plane's end: repeat the first
            int64_t zh, w;
            cuda::divMod(q, d.out_w, small, zh, w);
            float const bx = math::baseCoordinate(w, d.out_w, ac);
            if (kRank == 4)
            {
                math::transformPoint2d(t, d.transform == 1, bx, math::baseCoordinate(zh, d.out_h, ac), gx[p], gy[p]);
                gz[p] = 0.0f;
            }
            else
            {
                int64_t z, h;
                cuda::divMod(zh, d.out_h, small, z, h);
                math::transformPoint3d(t, bx, math::baseCoordinate(h, d.out_h, ac), math::baseCoordinate(z, d.out_d, ac),
                    gx[p], gy[p], gz[p]);
            }
        }
        T const* in = x + n * d.c * inPlane;
        T* o_ = out + n * d.c * outPlane;
        cuda::sampleItem<T, kRank, P, Options>(in, o_, d, o, outPlane, pos, vectorStore, second, gx, gy, gz);
    }
}

//! The kernel of one dtype and rank.
struct Sampler
{
    template <typename T, int kRank>
    static void launch(cuda::LaunchConfig<T> const& c, cudaStream_t stream)
    {
        constexpr int P = cuda::LaunchConfig<T>::P;
        cuda::withOptions<kRank>(c.o, [&](auto const o) {
            using Options = std::remove_const_t<decltype(o)>;
            STN_LAUNCH(c.blocks, cuda::kTHREADS, 0, stream, affineGridSampleKernel<T, kRank, P, Options>)(
                c.x, c.coord, c.out, c.d, o, c.vectorStore);
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
