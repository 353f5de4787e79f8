/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * kernelCommon.cuh: device helpers shared by the STN CUDA kernels (no TensorRT include):
 * element types per STN_DTYPE, coordinate loads, vectorised pair stores, launch geometry.
 */
#pragma once

#include "gridSampleMath.h"
#include "sampleDesc.h"
#include "stnKernelApi.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <string>

namespace stn_deploy
{
namespace cuda
{

constexpr int kTHREADS = 256;

//! Number of blocks for a grid-stride loop over `work` items.
inline unsigned int blocksFor(int64_t work)
{
    int64_t const b = (work + kTHREADS - 1) / kTHREADS;
    return static_cast<unsigned int>(b < 1 ? 1 : (b > (int64_t{1} << 30) ? (int64_t{1} << 30) : b));
}

__device__ __forceinline__ int64_t globalThread()
{
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t gridStride()
{
    return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

template <typename G>
__device__ __forceinline__ float loadCoord(G const* p)
{
    return math::toFloat(__ldg(p));
}

//! Stores P = 2 consecutive outputs of one channel plane with one 8/4-byte store.
template <typename T>
struct PairWriter;

template <>
struct PairWriter<float>
{
    float* out;
    int64_t outPlane;
    int64_t pos; // even
    __device__ __forceinline__ void operator()(int64_t c, float const (&v)[2]) const
    {
        *reinterpret_cast<float2*>(out + c * outPlane + pos) = make_float2(v[0], v[1]);
    }
};

template <>
struct PairWriter<__half>
{
    __half* out;
    int64_t outPlane;
    int64_t pos;
    __device__ __forceinline__ void operator()(int64_t c, float const (&v)[2]) const
    {
        *reinterpret_cast<__half2*>(out + c * outPlane + pos) = __floats2half2_rn(v[0], v[1]);
    }
};

template <>
struct PairWriter<__nv_bfloat16>
{
    __nv_bfloat16* out;
    int64_t outPlane;
    int64_t pos;
    __device__ __forceinline__ void operator()(int64_t c, float const (&v)[2]) const
    {
        *reinterpret_cast<__nv_bfloat162*>(out + c * outPlane + pos) = __floats2bfloat162_rn(v[0], v[1]);
    }
};

inline bool aligned(void const* p, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

//! Maps a CUDA error to STN_ERROR_CUDA with a one-line message.
inline int32_t checkLaunch(char const* what)
{
    cudaError_t const e = cudaGetLastError();
    if (e != cudaSuccess)
    {
        return setLastError(STN_ERROR_CUDA, std::string(what) + ": " + cudaGetErrorString(e));
    }
    return STN_OK;
}

//! Calls f.template operator()<T, G>() for the descriptor's (X dtype, coordinate dtype).
template <typename F>
void dispatchTypes(StnSampleDesc const& d, F&& f)
{
    switch (d.x_dtype)
    {
    case STN_DTYPE_FLOAT32: f.template operator()<float, float>(); return;
    case STN_DTYPE_FLOAT16:
        if (d.coord_dtype == STN_DTYPE_FLOAT32)
        {
            f.template operator()<__half, float>();
        }
        else
        {
            f.template operator()<__half, __half>();
        }
        return;
    case STN_DTYPE_BFLOAT16:
        if (d.coord_dtype == STN_DTYPE_FLOAT32)
        {
            f.template operator()<__nv_bfloat16, float>();
        }
        else
        {
            f.template operator()<__nv_bfloat16, __nv_bfloat16>();
        }
        return;
    }
}

} // namespace cuda
} // namespace stn_deploy
