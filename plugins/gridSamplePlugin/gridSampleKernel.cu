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
 * Offsets are 64-bit, so tensors over 2^31 elements are addressed correctly; position
 * arithmetic uses 32-bit division when everything fits.
 */
#include "gridSampleKernel.h"
#include "kernelCommon.cuh"

namespace stn_deploy
{
namespace
{
using cuda::globalThread;
using cuda::gridStride;
using cuda::CoordReader;

//! P adjacent output positions of one batch item per thread (P = 1 for fp32, 2 for fp16/bf16).
//! vectorStore: even plane and aligned output -> one vector store per channel and thread.
//! vectorGrid: 4-D fp32 grid, suitably aligned -> the P (x, y) pairs come in one float2/float4 load.
template <typename T, int kRank, int P, typename Options>
__global__ void __launch_bounds__(cuda::kTHREADS)
    gridSampleKernel(T const* __restrict__ x, CoordReader grid, T* __restrict__ out, StnSampleDesc d,
        Options o, bool vectorStore, bool vectorGrid)
{
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const inPlane = d.in_d * d.in_h * d.in_w;
    int64_t const perItem = (outPlane + P - 1) / P;
    int64_t const work = d.n * perItem;
    bool const small = d.n * outPlane < (int64_t{1} << 31);
    for (int64_t j = globalThread(); j < work; j += gridStride())
    {
        int64_t n, k;
        cuda::divMod(j, perItem, small, n, k);
        int64_t const pos = k * P;
        int64_t const i = n * outPlane + pos; // global index of the first position
        bool const second = P == 2 && pos + 1 < outPlane;
        T const* in = x + n * d.c * inPlane;
        T* o_ = out + n * d.c * outPlane;
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
                int64_t const q = (p == 0 || second) ? i + p : i; // past the plane's end: repeat the first
                gx[p] = grid[(kRank - 2) * q];
                gy[p] = grid[(kRank - 2) * q + 1];
                gz[p] = kRank == 5 ? grid[(kRank - 2) * q + 2] : 0.0f;
            }
        }
        cuda::sampleItem<T, kRank, P, Options>(in, o_, d, o, outPlane, pos, vectorStore, second, gx, gy, gz);
    }
}

//! The kernel of one dtype and rank; the fp32 4-D grid is read with vector loads when aligned.
struct Sampler
{
    template <typename T, int kRank>
    static void launch(cuda::LaunchConfig<T> const& c, cudaStream_t stream)
    {
        constexpr int P = cuda::LaunchConfig<T>::P;
        bool const vectorGrid = kRank == 4 && c.d.coord_dtype == STN_DTYPE_FLOAT32 && c.evenPlane
            && cuda::aligned(c.coord.p, 8 * P);
        cuda::withOptions<kRank>(c.o, [&](auto const o) {
            using Options = std::remove_const_t<decltype(o)>;
            STN_LAUNCH(c.blocks, cuda::kTHREADS, 0, stream, gridSampleKernel<T, kRank, P, Options>)(
                c.x, c.coord, c.out, c.d, o, c.vectorStore, vectorGrid);
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
