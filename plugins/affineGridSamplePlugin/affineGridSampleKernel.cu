/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * affineGridSampleKernel.cu: CUDA kernels of STNAffineGridSample. Each thread builds its base-grid
 * point (affine_grid's linspace), transforms it by theta in registers (2-D affine, projective with
 * the homogeneous divide, or 3-D affine) and samples with gridSampleMath.h: no grid tensor is
 * read or written. Taps are computed once per position and reused across channels; the paired
 * kernel handles two adjacent positions per thread with vectorised stores.
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

//! P adjacent positions (pos .. pos + P - 1, same row when P = 2 and out_w is even) per thread.
template <typename T, int kRank, int P, typename Writer>
__device__ __forceinline__ void fusedPoint(T const* __restrict__ x, cuda::CoordReader const& theta,
    StnSampleDesc const& d, math::SampleOptions const& o, int64_t n, int64_t pos, bool small, Writer const& write)
{
    int64_t const inPlane = d.in_d * d.in_h * d.in_w;
    bool const ac = o.alignCorners;
    float t[12];
    loadTheta(theta, n, d.rank == 5 ? 12 : (d.transform == 1 ? 9 : 6), t);
    T const* in = x + n * d.c * inPlane;
    float gx[P], gy[P];
    if (kRank == 4)
    {
        STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            int64_t h, w;
            cuda::divMod(pos + p, d.out_w, small, h, w);
            math::transformPoint2d(t, d.transform == 1, math::baseCoordinate(w, d.out_w, ac),
                math::baseCoordinate(h, d.out_h, ac), gx[p], gy[p]);
        }
        math::sample2d<P>(in, d.c, d.in_h, d.in_w, gx, gy, o, write);
    }
    else
    {
        float gz[P];
        STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            int64_t zh, w, z, h;
            cuda::divMod(pos + p, d.out_w, small, zh, w);
            cuda::divMod(zh, d.out_h, small, z, h);
            math::transformPoint3d(t, math::baseCoordinate(w, d.out_w, ac), math::baseCoordinate(h, d.out_h, ac),
                math::baseCoordinate(z, d.out_d, ac), gx[p], gy[p], gz[p]);
        }
        math::sample3d<P>(in, d.c, d.in_d, d.in_h, d.in_w, gx, gy, gz, o, write);
    }
}

template <typename T, int kRank>
__global__ void __launch_bounds__(cuda::kTHREADS)
    affineGridSampleKernel(T const* __restrict__ x, cuda::CoordReader theta, T* __restrict__ out,
        StnSampleDesc d, math::SampleOptions o)
{
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const total = d.n * outPlane;
    bool const small = total < (int64_t{1} << 31);
    for (int64_t i = globalThread(); i < total; i += gridStride())
    {
        int64_t n, pos;
        cuda::divMod(i, outPlane, small, n, pos);
        math::PlaneWriter<T, 1> const write{out + n * d.c * outPlane, outPlane, pos};
        fusedPoint<T, kRank, 1>(x, theta, d, o, n, pos, small, write);
    }
}

template <typename T, int kRank>
__global__ void __launch_bounds__(cuda::kTHREADS)
    affineGridSamplePairKernel(T const* __restrict__ x, cuda::CoordReader theta, T* __restrict__ out,
        StnSampleDesc d, math::SampleOptions o)
{
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const pairs = d.n * outPlane / 2;
    bool const small = 2 * pairs < (int64_t{1} << 31);
    for (int64_t j = globalThread(); j < pairs; j += gridStride())
    {
        int64_t const i = 2 * j;
        int64_t n, pos;
        cuda::divMod(i, outPlane, small, n, pos);
        cuda::PairWriter<T> const write{out + n * d.c * outPlane, outPlane, pos};
        fusedPoint<T, kRank, 2>(x, theta, d, o, n, pos, small, write);
    }
}

struct Launch
{
    StnSampleDesc const& d;
    void const* x;
    void const* theta;
    void* out;
    cudaStream_t stream;

    template <typename T>
    void operator()() const
    {
        math::SampleOptions const o = sampleOptions(d, /*cuda=*/true);
        int64_t const outPlane = d.out_d * d.out_h * d.out_w;
        T const* xp = static_cast<T const*>(x);
        cuda::CoordReader const tp{theta, d.coord_dtype};
        T* op = static_cast<T*>(out);
        // Pairs stay inside one row when out_w is even.
        if (d.out_w % 2 == 0 && cuda::aligned(out, 2 * sizeof(T)))
        {
            unsigned int const blocks = cuda::blocksFor(d.n * outPlane / 2);
            if (d.rank == 4)
            {
                affineGridSamplePairKernel<T, 4><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, tp, op, d, o);
            }
            else
            {
                affineGridSamplePairKernel<T, 5><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, tp, op, d, o);
            }
            return;
        }
        unsigned int const blocks = cuda::blocksFor(d.n * outPlane);
        if (d.rank == 4)
        {
            affineGridSampleKernel<T, 4><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, tp, op, d, o);
        }
        else
        {
            affineGridSampleKernel<T, 5><<<blocks, cuda::kTHREADS, 0, stream>>>(xp, tp, op, d, o);
        }
    }
};

} // namespace

int32_t launchAffineGridSample(
    StnSampleDesc const& desc, void const* x, void const* theta, void* out, cudaStream_t stream)
{
    if (desc.n * desc.c * desc.out_d * desc.out_h * desc.out_w == 0)
    {
        return STN_OK;
    }
    cuda::dispatchTypes(desc, Launch{desc, x, theta, out, stream});
    return cuda::checkLaunch("STNAffineGridSample kernel launch");
}

} // namespace stn_deploy

extern "C" STN_API int32_t stn_affine_grid_sample_cuda(
    StnSampleDesc const* desc, void const* x, void const* theta, void* out, void* stream)
{
    using namespace stn_deploy;
    if (desc == nullptr)
    {
        return setLastError(STN_ERROR_INVALID_ARGUMENT, "desc is NULL");
    }
    std::string const why = validateDesc(*desc, /*fused=*/true);
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
    return launchAffineGridSample(*desc, x, theta, out, static_cast<cudaStream_t>(stream));
}
