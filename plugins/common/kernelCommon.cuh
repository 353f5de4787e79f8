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

#include <algorithm>
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

//! The register cap of a kernel (__maxnreg__): 64 for the specialised kernels (4 blocks of 256 per
//! SM), 96 for the generic ones on 32-bit offsets, whose bicubic paths would otherwise take
//! 100-150, and 128 on 64-bit offsets (a plane past 2^31 elements), where 96 would spill on some
//! architectures (sm_120: 8-32 bytes) for no more blocks per SM (2 at 96 or 128 registers).
template <typename Options, typename I>
struct MaxRegisters
{
    static constexpr int value = 64;
};
template <>
struct MaxRegisters<math::SampleOptions, int32_t>
{
    static constexpr int value = 96;
};
template <>
struct MaxRegisters<math::SampleOptions, int64_t>
{
    static constexpr int value = 128;
};

//! Blocks a launch should have at least, for the channel split (channelChunks): a few per SM on
//! any current GPU (132 SMs on an H200), so that latency is hidden by other warps.
constexpr int64_t kTARGET_BLOCKS = 1024;

//! Channels per chunk of the grid's y: where the positions alone make few blocks - many channels
//! on a small plane, e.g. (32, 64, 56, 56) fp16: 196 blocks for 132 SMs, each looping over 64
//! channels - the channels are split across gridDim.y so that about kTARGET_BLOCKS blocks run,
//! each sampling its chunk (the positions' set-up is repeated per chunk, which is why the split
//! stops there).
inline int64_t channelsPerChunk(int64_t channels, unsigned int blocks)
{
    int64_t const chunks = std::min<int64_t>(channels, std::max<int64_t>(1, (kTARGET_BLOCKS + blocks - 1) / blocks));
    return std::max<int64_t>(1, (channels + chunks - 1) / chunks);
}

//! Number of blocks for a grid-stride loop over `work` items.
inline unsigned int blocksFor(int64_t work)
{
    int64_t const b = (work + kTHREADS - 1) / kTHREADS;
    return static_cast<unsigned int>(b < 1 ? 1 : (b > (int64_t{1} << 30) ? (int64_t{1} << 30) : b));
}

//! The flat index of this thread and the grid's stride, in the launch's thread-index type.
template <typename Flat>
__device__ __forceinline__ Flat globalThread()
{
    return static_cast<Flat>(blockIdx.x) * blockDim.x + threadIdx.x;
}

template <typename Flat>
__device__ __forceinline__ Flat gridStride()
{
    return static_cast<Flat>(gridDim.x) * blockDim.x;
}

//! x / d and x % d for 0 <= x < 2^(B-1), 1 <= d < 2^(B-1), B = the bits of U (uint32_t or
//! uint64_t), with no division instruction (a 64-bit one is a called subroutine on a GPU): a
//! multiply-high, an add and a shift by constants made once on the host (Granlund & Montgomery,
//! "Division by invariant integers using multiplication", 1994, the round-up method: l =
//! ceil(log2 d), m = floor(2^B (2^l - d) / d) + 1, x / d = (mulhi(m, x) + x) >> l; the sum cannot
//! overflow as x < 2^(B-1)). The emulation's units suite checks both widths against / and %.
template <typename U>
struct FastDivisor
{
    U divisor;
    U multiplier;
    uint32_t shift;

    static FastDivisor make(U d)
    {
        using Wide = std::conditional_t<sizeof(U) == 4, uint64_t, unsigned __int128>;
        constexpr uint32_t kBits = 8 * sizeof(U);
        uint32_t l = 0;
        while ((Wide{1} << l) < d)
        {
            ++l;
        }
        Wide const m = ((Wide{1} << kBits) * ((Wide{1} << l) - d)) / d + 1;
        return FastDivisor{d, static_cast<U>(m), l};
    }
    static __host__ __device__ __forceinline__ U mulhi(U a, U b)
    {
        if constexpr (sizeof(U) == 4)
        {
            return static_cast<U>((static_cast<uint64_t>(a) * b) >> 32);
        }
        else
        {
#if defined(__CUDA_ARCH__)
            return __umul64hi(a, b);
#else
            return static_cast<U>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
        }
    }
    __host__ __device__ __forceinline__ U div(U x) const
    {
        return (mulhi(x, multiplier) + x) >> shift;
    }
    template <typename I>
    __host__ __device__ __forceinline__ void operator()(U x, I& q, I& r) const
    {
        U const qu = div(x);
        q = static_cast<I>(qu);
        r = static_cast<I>(x - qu * divisor);
    }
};

//! Splits the flat thread index into (batch item, position group), a position into (row, column)
//! and a row index into (slice, row), by FastDivisors of the index type's width.
template <typename I>
struct Split
{
    using U = std::make_unsigned_t<I>;
    FastDivisor<U> perItem, outW, outH;
    template <typename Flat>
    __device__ __forceinline__ void item(Flat j, I& n, I& k) const { perItem(static_cast<U>(j), n, k); }
    __device__ __forceinline__ void row(I q, I& zh, I& w) const { outW(static_cast<U>(q), zh, w); }
    __device__ __forceinline__ void slice(I zh, I& z, I& h) const { outH(static_cast<U>(zh), z, h); }
};

//! The shape of a launch in the kernels' index type I, with what every thread would otherwise
//! derive from it made once on the host: strides, the work, the splitters, the base-grid axes.
template <typename I>
struct Geometry
{
    using Flat = std::conditional_t<std::is_same<I, int32_t>::value, uint32_t, int64_t>; //!< thread index
    I c, inD, inH, inW;
    I inPlane;         //!< in_d * in_h * in_w
    I outPlane;        //!< out_d * out_h * out_w
    I chunk;           //!< channels per chunk: block (x, y) samples channels [y * chunk, (y + 1) * chunk)
    Flat work;         //!< n * position groups per item
    int32_t transform; //!< fused: 0 affine, 1 projective
    Split<I> split;
    math::BaseAxis<I> baseX, baseY, baseZ; //!< fused: the output's base grid

    static Geometry make(StnSampleDesc const& d, int positionsPerThread, int64_t channelsPerChunk)
    {
        int64_t const outPlane = d.out_d * d.out_h * d.out_w;
        int64_t const perItem = (outPlane + positionsPerThread - 1) / positionsPerThread;
        bool const ac = d.align_corners != 0;
        Geometry g{};
        g.c = static_cast<I>(d.c);
        g.inD = static_cast<I>(d.in_d);
        g.inH = static_cast<I>(d.in_h);
        g.inW = static_cast<I>(d.in_w);
        g.inPlane = static_cast<I>(d.in_d * d.in_h * d.in_w);
        g.chunk = static_cast<I>(channelsPerChunk);
        g.outPlane = static_cast<I>(outPlane);
        g.work = static_cast<Flat>(d.n * perItem);
        g.transform = d.transform;
        using U = std::make_unsigned_t<I>;
        g.split = Split<I>{FastDivisor<U>::make(static_cast<U>(perItem)), FastDivisor<U>::make(static_cast<U>(d.out_w)),
            FastDivisor<U>::make(static_cast<U>(d.out_h))};
        g.baseX = math::BaseAxis<I>::make(static_cast<I>(d.out_w), ac);
        g.baseY = math::BaseAxis<I>::make(static_cast<I>(d.out_h), ac);
        g.baseZ = math::BaseAxis<I>::make(static_cast<I>(d.out_d), ac);
        return g;
    }
};

//! Grid elements (grid op) or theta elements (fused op) per batch item.
inline int64_t coordsPerItem(StnSampleDesc const& d, bool fused)
{
    return fused ? thetaSize(d) : d.out_d * d.out_h * d.out_w * (d.rank - 2);
}

//! Whether a launch can take the 32-bit path: what the kernels count in their index type - the
//! elements of one channel plane of X (taps), the batch's positions (n * out plane, also the
//! thread count), grid / theta elements and the batch's channel planes (n * c) - below 2^31. A
//! plane's first element is addressed in 64 bits (Chunk), so a batch item, or the whole tensor,
//! may exceed 2^31 elements on this path.
inline bool fitsIndex32(StnSampleDesc const& d, bool fused)
{
    int64_t const limit = int64_t{1} << 31;
    return d.in_d * d.in_h * d.in_w < limit && d.n * d.out_d * d.out_h * d.out_w < limit
        && d.n * coordsPerItem(d, fused) < limit && d.n * d.c < limit;
}

//! Reads grid / theta elements of a runtime dtype (float32 or the 16-bit dtype of X) as float.
//! A runtime switch (uniform across the grid) instead of a template parameter halves the number
//! of kernel instantiations, i.e. the build time.
struct CoordReader
{
    void const* p;
    int32_t dtype; // STN_DTYPE_*

    template <typename I>
    __device__ __forceinline__ float operator[](I i) const
    {
        switch (dtype)
        {
        case STN_DTYPE_FLOAT16: return __half2float(__ldg(static_cast<__half const*>(p) + i));
        case STN_DTYPE_BFLOAT16: return __bfloat162float(__ldg(static_cast<__nv_bfloat16 const*>(p) + i));
        case STN_DTYPE_FLOAT32: return __ldg(static_cast<float const*>(p) + i);
        }
        return 0.0f; // unreachable: validateDesc admits only the three dtypes
    }

    //! t[k] = element first + k for k < count, 0 beyond: one switch for the whole row (theta).
    template <typename I>
    __device__ __forceinline__ void row(I first, int32_t count, float (&t)[12]) const
    {
        switch (dtype)
        {
        case STN_DTYPE_FLOAT16: rowAs(static_cast<__half const*>(p) + first, count, t); return;
        case STN_DTYPE_BFLOAT16: rowAs(static_cast<__nv_bfloat16 const*>(p) + first, count, t); return;
        case STN_DTYPE_FLOAT32: rowAs(static_cast<float const*>(p) + first, count, t); return;
        }
    }
    template <typename E>
    static __device__ __forceinline__ void rowAs(E const* e, int32_t count, float (&t)[12])
    {
        STN_UNROLL
        for (int32_t k = 0; k < 12; ++k)
        {
            t[k] = k < count ? math::toFloat(__ldg(e + k)) : 0.0f;
        }
    }
};

//! Stores the P = 2 outputs of one thread, channel after channel (a cursor, as math::PlaneWriter):
//! one 4/8-byte vector store (float2 / __half2 / __nv_bfloat162) when the plane size is even and
//! the output aligned, else element stores (the second one only when it exists, at the end of an
//! odd plane). `out` points at the first position in channel 0.
template <typename T, typename I>
struct PairWriter
{
    T* out;
    I outPlane;
    bool vector;
    bool second;
    __device__ __forceinline__ void operator()(float const (&v)[2])
    {
        if (vector)
        {
            storePair(out, v[0], v[1]);
        }
        else
        {
            out[0] = math::fromFloat<T>(v[0]);
            if (second)
            {
                out[1] = math::fromFloat<T>(v[1]);
            }
        }
        out += outPlane;
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

//! The input and output of this block's channel chunk of batch item n, and its channel count.
template <typename T, typename I>
struct Chunk
{
    T const* in;
    T* out;
    I channels;
    __device__ __forceinline__ Chunk(T const* x, T* y, Geometry<I> const& g, I n)
    {
        I const first = static_cast<I>(blockIdx.y) * g.chunk;
        channels = g.c - first < g.chunk ? g.c - first : g.chunk;
        I const plane = n * g.c + first; // of the batch's channel planes
        in = x + static_cast<int64_t>(plane) * g.inPlane;
        out = y + static_cast<int64_t>(plane) * g.outPlane;
    }
};

//! Positions per thread of the specialised kernels: 1 for fp32 (4-byte stores already fill a
//! warp's 128-byte segment), 2 for fp16/bf16 (vectorised 4-byte stores); 1 for every generic
//! kernel (its bicubic taps for two positions would not fit in 96 registers).
template <typename T, typename Options>
struct PositionsPerThread
{
    static constexpr int value
        = std::is_same<T, float>::value || std::is_same<Options, math::SampleOptions>::value ? 1 : 2;
};

//! Samples the P positions (pos, pos + 1) of one batch item's channel chunk (`in`: its input,
//! `o_`: its output, `channels` of them) at the coordinates (gx, gy[, gz]) and stores them:
//! element stores for P = 1, PairWriter for P = 2. The tail of both kernels, inlined into each.
template <typename T, int kRank, int P, typename Options, typename I>
__device__ __forceinline__ void sampleItem(T const* in, T* o_, I channels, Geometry<I> const& g, Options const& o,
    I pos, bool vectorStore, bool second, float const (&gx)[P], float const (&gy)[P], float const (&gz)[P])
{
    if constexpr (P == 1)
    {
        math::PlaneWriter<T, 1, I> const write{o_ + pos, g.outPlane};
        if (kRank == 4)
        {
            math::sample2d<1>(in, channels, g.inH, g.inW, gx, gy, o, write);
        }
        else
        {
            math::sample3d<1>(in, channels, g.inD, g.inH, g.inW, gx, gy, gz, o, write);
        }
    }
    else
    {
        PairWriter<T, I> const write{o_ + pos, g.outPlane, vectorStore, second};
        if (kRank == 4)
        {
            math::sample2d<2>(in, channels, g.inH, g.inW, gx, gy, o, write);
        }
        else
        {
            math::sample3d<2>(in, channels, g.inD, g.inH, g.inW, gx, gy, gz, o, write);
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

//! What a launch of one dtype T needs, computed once for both launchers: the maths options, the
//! output plane size, whether the 32-bit path may run, and per positions-per-thread P the block
//! count and whether outputs go out in vector stores.
template <typename T>
struct LaunchConfig
{
    StnSampleDesc const& d;
    math::SampleOptions o;
    int64_t outPlane;
    bool index32;  //!< fitsIndex32: a 32-bit kernel may run
    bool pairable; //!< an input >= 2 x 2: the specialised (paired-tap) kernels may run
    T const* x;
    CoordReader coord; //!< grid or theta
    T* out;

    LaunchConfig(StnSampleDesc const& desc, bool fused, void const* xp, void const* coordp, void* outp)
        : d(desc)
        , o(sampleOptions(desc, /*cuda=*/true))
        , outPlane(desc.out_d * desc.out_h * desc.out_w)
        , index32(fitsIndex32(desc, fused))
        , pairable(desc.in_w >= 2 && desc.in_h >= 2)
        , x(static_cast<T const*>(xp))
        , coord{coordp, desc.coord_dtype}
        , out(static_cast<T*>(outp))
    {
    }
    template <int P>
    bool evenPlane() const
    {
        return outPlane % P == 0;
    }
    //! P == 2, even plane and aligned output: one vector store per channel and thread.
    template <int P>
    bool vectorStore() const
    {
        return P == 2 && evenPlane<P>() && aligned(out, P * sizeof(T));
    }
    //! Blocks over the positions (a grid-stride loop), P positions per thread.
    template <int P>
    unsigned int positionBlocks() const
    {
        return blocksFor(d.n * ((outPlane + P - 1) / P));
    }
    //! Channels per chunk of the grid's y (channelsPerChunk).
    template <int P>
    int64_t chunkOf() const
    {
        return channelsPerChunk(d.c, positionBlocks<P>());
    }
    //! The grid: x over the positions, y over the channel chunks.
    template <int P>
    dim3 grid() const
    {
        int64_t const chunk = chunkOf<P>();
        return dim3(positionBlocks<P>(), static_cast<unsigned int>((d.c + chunk - 1) / chunk));
    }
};

//! Calls launch(options, index) with the kernel's options and index type (`index` is a value of it):
//! mode, padding and semantics fixed at compile time where such a specialisation is built - 4-D
//! bilinear with zeros or border padding and CUDA semantics, what STNs use, on an input at least
//! 2 x 2 - else the run-time options
//! (one generic kernel); 32-bit indices where fitsIndex32 holds, else 64-bit (the generic kernel
//! only).
template <int kRank, typename Launch>
void withKernel(math::SampleOptions const& o, bool index32, bool pairable, Launch const& launch)
{
    using math::Interpolation;
    using math::Padding;
    if (!index32)
    {
        return launch(o, int64_t{});
    }
    if constexpr (kRank == 4)
    {
        bool const specialisable = pairable && o.interpolation == Interpolation::kBILINEAR
            && o.semantics == math::Semantics::kATEN_CUDA;
        if (specialisable && o.padding == Padding::kZEROS)
        {
            return launch(math::FixedOptions<math::Bilinear, math::Zeros>{o.alignCorners}, int32_t{});
        }
        if (specialisable && o.padding == Padding::kBORDER)
        {
            return launch(math::FixedOptions<math::Bilinear, math::Border>{o.alignCorners}, int32_t{});
        }
    }
    launch(o, int32_t{});
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
        LaunchConfig<T> const c(d, Sampler::kFused, x, coord, out);
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
