/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSampleKernel.cu: CUDA kernels of STNGridSample. The sampling maths is gridSampleMath.h
 * (PyTorch's grid sampler semantics; see the credits there), compiled here for the device.
 *
 * Memory plan: one thread per output position (two adjacent positions in the paired kernel);
 * the position's taps (indices, weights, validity) are computed once in registers and reused for
 * every channel; output stores are coalesced across the warp (consecutive threads write
 * consecutive positions of a channel plane) and, in the paired kernel, vectorised (float2,
 * __half2, __nv_bfloat162). Offsets are 64-bit, so tensors over 2^31 elements are addressed
 * correctly.
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

//! One position per thread (any shape).
template <typename T, int kRank>
__global__ void __launch_bounds__(cuda::kTHREADS)
    gridSampleKernel(T const* __restrict__ x, CoordReader grid, T* __restrict__ out, StnSampleDesc d,
        math::SampleOptions o)
{
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const inPlane = d.in_d * d.in_h * d.in_w;
    int64_t const total = d.n * outPlane;
    bool const small = total < (int64_t{1} << 31);
    for (int64_t i = globalThread(); i < total; i += gridStride())
    {
        int64_t n, pos;
        cuda::divMod(i, outPlane, small, n, pos);
        T const* in = x + n * d.c * inPlane;
        math::PlaneWriter<T, 1> const write{out + n * d.c * outPlane, outPlane, pos};
        if (kRank == 4)
        {
            float const gx[1] = {grid[2 * i]};
            float const gy[1] = {grid[2 * i + 1]};
            math::sample2d<1>(in, d.c, d.in_h, d.in_w, gx, gy, o, write);
        }
        else
        {
            float const gx[1] = {grid[3 * i]};
            float const gy[1] = {grid[3 * i + 1]};
            float const gz[1] = {grid[3 * i + 2]};
            math::sample3d<1>(in, d.c, d.in_d, d.in_h, d.in_w, gx, gy, gz, o, write);
        }
    }
}

//! Two adjacent positions per thread, vectorised stores; needs an even plane and aligned output.
//! 4-D with an fp32 grid 16-byte aligned: the four coordinates come in one float4 load.
template <typename T, int kRank>
__global__ void __launch_bounds__(cuda::kTHREADS)
    gridSamplePairKernel(T const* __restrict__ x, CoordReader grid, T* __restrict__ out, StnSampleDesc d,
        math::SampleOptions o, bool float4Grid)
{
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const inPlane = d.in_d * d.in_h * d.in_w;
    int64_t const pairs = d.n * outPlane / 2;
    bool const small = 2 * pairs < (int64_t{1} << 31);
    for (int64_t j = globalThread(); j < pairs; j += gridStride())
    {
        int64_t const i = 2 * j;
        int64_t n, pos;
        cuda::divMod(i, outPlane, small, n, pos);
        T const* in = x + n * d.c * inPlane;
        cuda::PairWriter<T> const write{out + n * d.c * outPlane, outPlane, pos};
        if (kRank == 4)
        {
            float gx[2], gy[2];
            if (float4Grid)
            {
                float4 const g = __ldg(static_cast<float4 const*>(grid.p) + j);
                gx[0] = g.x;
                gy[0] = g.y;
                gx[1] = g.z;
                gy[1] = g.w;
            }
            else
            {
                gx[0] = grid[2 * i];
                gy[0] = grid[2 * i + 1];
                gx[1] = grid[2 * i + 2];
                gy[1] = grid[2 * i + 3];
            }
            math::sample2d<2>(in, d.c, d.in_h, d.in_w, gx, gy, o, write);
        }
        else
        {
            float const gx[2] = {grid[3 * i], grid[3 * i + 3]};
            float const gy[2] = {grid[3 * i + 1], grid[3 * i + 4]};
            float const gz[2] = {grid[3 * i + 2], grid[3 * i + 5]};
            math::sample3d<2>(in, d.c, d.in_d, d.in_h, d.in_w, gx, gy, gz, o, write);
        }
    }
}

struct Launch
{
    StnSampleDesc const& d;
    void const* x;
    void const* grid;
    void* out;
    cudaStream_t stream;

    template <typename T>
    void operator()() const
    {
        math::SampleOptions const o = sampleOptions(d, /*cuda=*/true);
        int64_t const outPlane = d.out_d * d.out_h * d.out_w;
        T const* xp = static_cast<T const*>(x);
        CoordReader const gp{grid, d.coord_dtype};
        T* op = static_cast<T*>(out);
        bool const paired = outPlane % 2 == 0 && cuda::aligned(out, 2 * sizeof(T));
        if (paired)
        {
            bool const f4 = d.rank == 4 && d.coord_dtype == STN_DTYPE_FLOAT32 && cuda::aligned(grid, 16);
            unsigned int const blocks = cuda::blocksFor(d.n * outPlane / 2);
            if (d.rank == 4)
            {
                gridSamplePairKernel<T, 4><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, gp, op, d, o, f4);
            }
            else
            {
                gridSamplePairKernel<T, 5><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, gp, op, d, o, false);
            }
            return;
        }
        unsigned int const blocks = cuda::blocksFor(d.n * outPlane);
        if (d.rank == 4)
        {
            gridSampleKernel<T, 4><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, gp, op, d, o);
        }
        else
        {
            gridSampleKernel<T, 5><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, gp, op, d, o);
        }
    }
};

} // namespace

int32_t launchGridSample(StnSampleDesc const& desc, void const* x, void const* grid, void* out, cudaStream_t stream)
{
    if (desc.n * desc.c * desc.out_d * desc.out_h * desc.out_w == 0)
    {
        return STN_OK;
    }
    cuda::dispatchTypes(desc, Launch{desc, x, grid, out, stream});
    return cuda::checkLaunch("STNGridSample kernel launch");
}

} // namespace stn_deploy

extern "C" STN_API int32_t stn_grid_sample_cuda(
    StnSampleDesc const* desc, void const* x, void const* grid, void* out, void* stream)
{
    using namespace stn_deploy;
    if (desc == nullptr)
    {
        return setLastError(STN_ERROR_INVALID_ARGUMENT, "desc is NULL");
    }
    std::string const why = validateDesc(*desc, /*fused=*/false);
    if (!why.empty())
    {
        return setLastError(STN_ERROR_INVALID_ARGUMENT, why);
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
    {
        cudaGetLastError();
        return setLastError(STN_ERROR_NO_CUDA, "no CUDA device is available");
    }
    return launchGridSample(*desc, x, grid, out, static_cast<cudaStream_t>(stream));
}
