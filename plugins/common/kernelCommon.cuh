/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * kernelCommon.cuh: device helpers shared by the STN CUDA kernels (no TensorRT include):
 * element types per STN_DTYPE, coordinate loads, vectorised pair stores, launch geometry.
 */
#pragma once

#include "cudaBuildInfo.h"
#include "gridSampleMath.h"
#include "sampleDesc.h"
#include "stnKernelApi.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <string>
#include <type_traits>

//! `STN_LAUNCH(blocks, threads, sharedBytes, stream, kernel<T...>)(args...)`: every kernel launch
//! goes through this one macro, so the same source compiles for nvcc (a <<<...>>> launch) and for
//! the CUDA host emulation (plugins/emulation/cudaHostShim.h runs every block and thread).
#if defined(STN_CUDA_HOST_EMULATION)
#define STN_LAUNCH(blocks, threads, sharedBytes, stream, ...)                                                          \
    ::stn_emu::launch(dim3(blocks), dim3(threads), sharedBytes, stream, __VA_ARGS__)
#else
#define STN_LAUNCH(blocks, threads, sharedBytes, stream, ...) __VA_ARGS__<<<blocks, threads, sharedBytes, stream>>>
#endif

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

//! Samples the P positions (pos, pos + 1) of one batch item (`in`: its input, `o_`: its output)
//! at the coordinates (gx, gy[, gz]) for every channel and stores them: element stores for P = 1,
//! PairWriter for P = 2. The tail of both kernels, inlined into each.
template <typename T, int kRank, int P, typename Options>
__device__ __forceinline__ void sampleItem(T const* in, T* o_, StnSampleDesc const& d, Options const& o,
    int64_t outPlane, int64_t pos, bool vectorStore, bool second, float const (&gx)[P], float const (&gy)[P],
    float const (&gz)[P])
{
    if constexpr (P == 1)
    {
        math::PlaneWriter<T, 1> const write{o_, outPlane, pos};
        if (kRank == 4)
        {
            math::sample2d<1>(in, d.c, d.in_h, d.in_w, gx, gy, o, write);
        }
        else
        {
            math::sample3d<1>(in, d.c, d.in_d, d.in_h, d.in_w, gx, gy, gz, o, write);
        }
    }
    else
    {
        PairWriter<T> const write{o_, outPlane, pos, vectorStore, second};
        if (kRank == 4)
        {
            math::sample2d<2>(in, d.c, d.in_h, d.in_w, gx, gy, o, write);
        }
        else
        {
            math::sample3d<2>(in, d.c, d.in_d, d.in_h, d.in_w, gx, gy, gz, o, write);
        }
    }
}

inline bool aligned(void const* p, size_t bytes)
{
    return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

//! Before a launch: an error already pending on this thread. A sticky one (a kernel fault: the
//! context is unusable) fails the call with its own text, so it is not mistaken for a failure of
//! this launch; a non-sticky one belongs to earlier, unrelated work: cudaGetLastError clears it
//! and the launch goes ahead.
inline int32_t checkPendingFault(char const* what)
{
    cudaError_t const earlier = cudaGetLastError();
    if (earlier != cudaSuccess && cudaPeekAtLastError() != cudaSuccess)
    {
        return setLastError(STN_ERROR_CUDA,
            std::string(what) + " not attempted: an earlier CUDA fault left the context unusable (sticky error "
                + cudaErrorText(earlier) + "; it comes from work queued before this call)");
    }
    return STN_OK;
}

//! After a launch: the launch's own error, with a hint where the cause is the build.
inline int32_t checkLaunch(char const* what)
{
    cudaError_t const e = cudaGetLastError();
    if (e == cudaSuccess)
    {
        return STN_OK;
    }
    std::string message = std::string(what) + " failed: " + cudaErrorText(e);
    if (e == cudaErrorNoKernelImageForDevice || e == cudaErrorInvalidDeviceFunction
        || e == cudaErrorUnsupportedPtxVersion)
    {
        message += " (this library has code for " STN_CUDA_ARCHS_TEXT "; rebuild with `stn-deploy plugins build --archs` "
                   "for this GPU, or a driver >= " + std::string(minimumDriver()) + " for its PTX)";
    }
    return setLastError(STN_ERROR_CUDA, message);
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

//! What a launch of one dtype T needs, computed once for both launchers: positions per thread,
//! the maths options, the output plane size, the vector-store flag and the block count.
template <typename T>
struct LaunchConfig
{
    static constexpr int P = PositionsPerThread<T>::value;
    StnSampleDesc const& d;
    math::SampleOptions o;
    int64_t outPlane;
    bool evenPlane;   //!< outPlane % P == 0
    bool vectorStore; //!< P == 2, even plane and aligned output: one vector store per channel and thread
    unsigned int blocks;
    T const* x;
    CoordReader coord; //!< grid or theta
    T* out;

    LaunchConfig(StnSampleDesc const& desc, void const* xp, void const* coordp, void* outp)
        : d(desc)
        , o(sampleOptions(desc, /*cuda=*/true))
        , outPlane(desc.out_d * desc.out_h * desc.out_w)
        , evenPlane(outPlane % P == 0)
        , vectorStore(P == 2 && evenPlane && aligned(outp, P * sizeof(T)))
        , blocks(blocksFor(desc.n * ((outPlane + P - 1) / P)))
        , x(static_cast<T const*>(xp))
        , coord{coordp, desc.coord_dtype}
        , out(static_cast<T*>(outp))
    {
    }
};

//! Calls launch(options) with mode and padding fixed at compile time where a specialisation is
//! built - 4-D bilinear with zeros or border padding, what STNs use - else with the run-time
//! options (every other combination: one generic kernel).
template <int kRank, typename Launch>
void withOptions(math::SampleOptions const& o, Launch const& launch)
{
    using math::Interpolation;
    using math::Padding;
    if constexpr (kRank == 4)
    {
        if (o.interpolation == Interpolation::kBILINEAR && o.padding == Padding::kZEROS)
        {
            return launch(math::FixedOptions<math::Bilinear, math::Zeros>{o.alignCorners, o.semantics});
        }
        if (o.interpolation == Interpolation::kBILINEAR && o.padding == Padding::kBORDER)
        {
            return launch(math::FixedOptions<math::Bilinear, math::Border>{o.alignCorners, o.semantics});
        }
    }
    launch(o);
}

//! Launches Sampler::template launch<T, kRank>(LaunchConfig<T> const&, cudaStream_t) for the
//! descriptor's X dtype and rank (4 or 5).
template <typename Sampler>
struct LaunchByType
{
    StnSampleDesc const& d;
    void const* x;
    void const* coord;
    void* out;
    cudaStream_t stream;

    template <typename T>
    void operator()() const
    {
        LaunchConfig<T> const c(d, x, coord, out);
        if (d.rank == 4)
        {
            Sampler::template launch<T, 4>(c, stream);
        }
        else
        {
            Sampler::template launch<T, 5>(c, stream);
        }
    }
};

//! The launcher of a validated descriptor: nothing for an empty output, else the kernel of the
//! descriptor's dtype and rank; STN_OK or STN_ERROR_CUDA ("<what>: <CUDA error>").
template <typename Sampler>
int32_t launchSampler(
    StnSampleDesc const& desc, void const* x, void const* coord, void* out, cudaStream_t stream, char const* what)
{
    if (desc.n * desc.c * desc.out_d * desc.out_h * desc.out_w == 0)
    {
        return STN_OK;
    }
    int32_t const pending = checkPendingFault(what);
    if (pending != STN_OK)
    {
        return pending;
    }
    dispatchTypes(desc, LaunchByType<Sampler>{desc, x, coord, out, stream});
    return checkLaunch(what);
}

//! The checks of a C API CUDA entry point before its launch: a non-NULL valid descriptor and a
//! CUDA device. STN_OK, or the error code with stn_last_error() set.
inline int32_t checkCudaEntry(StnSampleDesc const* desc, bool fused)
{
    if (desc == nullptr)
    {
        return setLastError(STN_ERROR_INVALID_ARGUMENT, "desc is NULL");
    }
    std::string const why = validateDesc(*desc, fused);
    if (!why.empty())
    {
        return setLastError(STN_ERROR_INVALID_ARGUMENT, why);
    }
    int count = 0;
    cudaError_t const e = cudaGetDeviceCount(&count);
    if (e == cudaSuccess && count > 0)
    {
        return STN_OK;
    }
    cudaGetLastError(); // a failed device query is not sticky: leave nothing pending for the caller
    if (e == cudaErrorInsufficientDriver)
    {
        int driver = 0;
        cudaDriverGetVersion(&driver);
        return setLastError(STN_ERROR_NO_CUDA,
            "the NVIDIA driver is too old for this library: it links the CUDA " + cudaVersionText(CUDART_VERSION)
                + " runtime, which needs driver >= " + minimumDriver() + ", and the installed driver supports CUDA "
                + (driver > 0 ? cudaVersionText(driver) : std::string("none")) + " (" + cudaErrorText(e)
                + "); update the driver or rebuild with `stn-deploy plugins build --cuda 12`");
    }
    if (e == cudaSuccess || e == cudaErrorNoDevice)
    {
        return setLastError(STN_ERROR_NO_CUDA,
            "no CUDA device is available (" + cudaErrorText(e == cudaSuccess ? cudaErrorNoDevice : e) + ")");
    }
    return setLastError(STN_ERROR_NO_CUDA, "CUDA initialisation failed: " + cudaErrorText(e));
}

} // namespace cuda
} // namespace stn_deploy
