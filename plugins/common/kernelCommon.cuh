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

//! q = a / b, r = a % b for a, b >= 0; 32-bit arithmetic when `small` (everything < 2^31), which
//! is several times cheaper than the emulated 64-bit division.
__device__ __forceinline__ void divMod(int64_t a, int64_t b, bool small, int64_t& q, int64_t& r)
{
    if (small)
    {
        uint32_t const qa = static_cast<uint32_t>(a) / static_cast<uint32_t>(b);
        q = qa;
        r = static_cast<uint32_t>(a) - qa * static_cast<uint32_t>(b);
    }
    else
    {
        q = a / b;
        r = a - q * b;
    }
}

//! Reads grid / theta elements of a runtime dtype (float32 or the 16-bit dtype of X) as float.
//! A runtime switch (uniform across the grid) instead of a template parameter halves the number
//! of kernel instantiations, i.e. the build time.
struct CoordReader
{
    void const* p;
    int32_t dtype; // STN_DTYPE_*

    __device__ __forceinline__ float operator[](int64_t i) const
    {
        switch (dtype)
        {
        case STN_DTYPE_FLOAT16: return __half2float(__ldg(static_cast<__half const*>(p) + i));
        case STN_DTYPE_BFLOAT16: return __bfloat162float(__ldg(static_cast<__nv_bfloat16 const*>(p) + i));
        case STN_DTYPE_FLOAT32: return __ldg(static_cast<float const*>(p) + i);
        }
        return 0.0f; // unreachable: validateDesc admits only the three dtypes
    }
};

//! Stores the P = 2 outputs of one thread: one 4/8-byte vector store (float2 / __half2 /
//! __nv_bfloat162) when the plane size is even and the output aligned, else element stores
//! (the second one only when it exists, at the end of an odd plane).
template <typename T>
struct PairWriter
{
    T* out;
    int64_t outPlane;
    int64_t pos;
    bool vector;
    bool second;
    __device__ __forceinline__ void operator()(int64_t c, float const (&v)[2]) const
    {
        T* p = out + c * outPlane + pos;
        if (vector)
        {
            storePair(p, v[0], v[1]);
            return;
        }
        p[0] = math::fromFloat<T>(v[0]);
        if (second)
        {
            p[1] = math::fromFloat<T>(v[1]);
        }
    }
    static __device__ __forceinline__ void storePair(float* p, float a, float b)
    {
        *reinterpret_cast<float2*>(p) = make_float2(a, b);
    }
    static __device__ __forceinline__ void storePair(__half* p, float a, float b)
    {
        *reinterpret_cast<__half2*>(p) = __floats2half2_rn(a, b);
    }
    static __device__ __forceinline__ void storePair(__nv_bfloat16* p, float a, float b)
    {
        *reinterpret_cast<__nv_bfloat162*>(p) = __floats2bfloat162_rn(a, b);
    }
};

//! Positions per thread: 1 for fp32 (4-byte stores already fill a warp's 128-byte segment),
//! 2 for fp16/bf16 (vectorised 4-byte stores). One kernel per (dtype, rank) keeps the build short.
template <typename T>
struct PositionsPerThread
{
    static constexpr int value = 2;
};
template <>
struct PositionsPerThread<float>
{
    static constexpr int value = 1;
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

//! Calls f.template operator()<T>() for the descriptor's X dtype.
template <typename F>
void dispatchTypes(StnSampleDesc const& d, F&& f)
{
    switch (d.x_dtype)
    {
    case STN_DTYPE_FLOAT32: f.template operator()<float>(); return;
    case STN_DTYPE_FLOAT16: f.template operator()<__half>(); return;
    case STN_DTYPE_BFLOAT16: f.template operator()<__nv_bfloat16>(); return;
    }
}

} // namespace cuda
} // namespace stn_deploy
