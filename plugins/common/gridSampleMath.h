/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSampleMath.h: the sampling maths of STNGridSample and STNAffineGridSample as
 * __host__ __device__ functions. This one header is compiled for the host into the CPU
 * reference (cpuReference.cpp) and for the device into the CUDA kernels (*Kernel.cu).
 * It includes no TensorRT header.
 *
 * Credits: the semantics follow PyTorch's ATen grid sampler (aten/src/ATen/native/GridSampler.h,
 * cuda/GridSampler.cuh, cpu/GridSamplerKernel.cpp; BSD-3-Clause) and the base grid of
 * aten/src/ATen/native/AffineGridGenerator.cpp. The maths was re-derived from reading them;
 * no code was copied.
 *
 * Coordinate unnormalisation (x in [-1, 1] -> pixel space, size = W, H or D):
 *   align_corners = 1: -1 and +1 are the centres of the corner pixels:  u = (x + 1) / 2 * (size - 1)
 *   align_corners = 0: -1 and +1 are the outer edges of the corner pixels: u = ((x + 1) * size - 1) / 2
 *
 * Padding (applied to u for bilinear/nearest, and to every tap for bicubic, as PyTorch):
 *   zeros:      taps outside [0, size-1] read 0
 *   border:     u clipped to [0, size-1]
 *   reflection: u reflected about the border (pixel centres for align_corners = 1, pixel edges
 *               for align_corners = 0), then clipped
 *
 * Non-finite coordinates. PyTorch itself differs between its kernels, so `Semantics` names which
 * one to reproduce (PyTorch on the same device as the caller):
 *   kAtenCuda  : clipping maps NaN to 0 (fmaxf); a non-finite or out-of-int-range coordinate
 *                samples nothing (0) in bilinear/nearest; bicubic gives NaN.
 *   kAtenCpu4d : (vectorised CPU kernel, 4-D) unnormalises as (x + 1) * (size [-1]) / 2 [- 0.5];
 *                clipping maps NaN to 0; bilinear with a non-finite coordinate gives NaN
 *                (weights are NaN); nearest gives 0; bicubic NaN.
 *   kAtenCpu5d : (scalar CPU kernel, 5-D) clipping maps NaN to size - 1 (std::min/std::max
 *                order); a non-finite coordinate samples nothing.
 */
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__) || defined(STN_CUDA_HOST_EMULATION)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define STN_HD __host__ __device__ __forceinline__
#else
#define STN_HD inline
#endif
// Linear taps outside the input: the kernels read a clamped index and mask the value (no branch,
// no predicated load: the GPU's form); the CPU reference skips the tap (PyTorch's form, and what a
// CPU's branch predictor runs fastest). The emulation runs both and requires the same bits.
#if defined(__CUDA_ARCH__) || defined(STN_CUDA_HOST_EMULATION)
#define STN_MASKED_TAPS 1
#else
#define STN_MASKED_TAPS 0
#endif

#if defined(__CUDA_ARCH__)
#define STN_UNROLL _Pragma("unroll")
#define STN_NO_UNROLL _Pragma("unroll 1")
#define STN_UNROLL_TWICE _Pragma("unroll 2")
#else
#define STN_UNROLL
#define STN_NO_UNROLL
#define STN_UNROLL_TWICE
#endif

namespace stn_deploy
{
namespace math
{

//! Interpolation modes, PyTorch's order (torch.nn.functional.grid_sample).
enum class Interpolation : int32_t
{
    kBILINEAR = 0,
    kNEAREST = 1,
    kBICUBIC = 2,
};

//! Padding modes, PyTorch's order.
enum class Padding : int32_t
{
    kZEROS = 0,
    kBORDER = 1,
    kREFLECTION = 2,
};

//! Which PyTorch kernel's handling of non-finite coordinates to reproduce (see the file comment).
enum class Semantics : int32_t
{
    kATEN_CUDA = 0,
    kATEN_CPU_4D = 1,
    kATEN_CPU_5D = 2,
};

struct SampleOptions
{
    Interpolation interpolation;
    Padding padding;
    bool alignCorners;
    Semantics semantics;
    static constexpr bool kPairedTaps = false; //!< see FixedOptions
};

// Mode and padding fixed at compile time: tag types, so that the kernels' specialisations are
// told apart by name in the SASS (enum values would demangle as bare numbers).
struct Bilinear
{
    static constexpr Interpolation kVALUE = Interpolation::kBILINEAR;
};
struct Nearest
{
    static constexpr Interpolation kVALUE = Interpolation::kNEAREST;
};
struct Bicubic
{
    static constexpr Interpolation kVALUE = Interpolation::kBICUBIC;
};
struct Zeros
{
    static constexpr Padding kVALUE = Padding::kZEROS;
};
struct Border
{
    static constexpr Padding kVALUE = Padding::kBORDER;
};
struct Reflection
{
    static constexpr Padding kVALUE = Padding::kREFLECTION;
};

//! SampleOptions whose mode, padding and semantics (PyTorch's CUDA kernel: what the device path
//! runs unless a CPU semantics is asked for) are constants: every function below that takes an
//! `Options const&` folds its switches on them away (one instantiation of the same maths, no
//! copy of it); alignCorners stays a run-time value.
//! kPairedTaps: 4-D bilinear reads the two columns of a row from one address and the second row
//! one row further (makePairedAxis), which needs an input at least 2 x 2: the host launches these
//! specialisations only then.
template <typename Mode, typename Pad>
struct FixedOptions
{
    static constexpr Interpolation interpolation = Mode::kVALUE;
    static constexpr Padding padding = Pad::kVALUE;
    static constexpr Semantics semantics = Semantics::kATEN_CUDA;
    static constexpr bool kPairedTaps = true;
    bool alignCorners;
};

// ---- float helpers that compile on both sides -------------------------------------------------
#if defined(__CUDA_ARCH__)
STN_HD float fFloor(float x) { return floorf(x); }
STN_HD float fNearbyint(float x) { return nearbyintf(x); }
STN_HD float fAbs(float x) { return fabsf(x); }
STN_HD float fMod(float x, float y) { return fmodf(x, y); }
STN_HD bool fIsFinite(float x) { return isfinite(x); }
STN_HD float fFma(float a, float b, float c) { return fmaf(a, b, c); }
STN_HD float fMin(float a, float b) { return fminf(a, b); }
STN_HD float fMax(float a, float b) { return fmaxf(a, b); }
#else
STN_HD float fFloor(float x) { return std::floor(x); }
STN_HD float fNearbyint(float x) { return std::nearbyint(x); }
STN_HD float fAbs(float x) { return std::fabs(x); }
STN_HD float fMod(float x, float y) { return std::fmod(x, y); }
STN_HD bool fIsFinite(float x) { return std::isfinite(x); }
STN_HD float fFma(float a, float b, float c) { return std::fma(a, b, c); }
STN_HD float fMin(float a, float b) { return std::fmin(a, b); }
STN_HD float fMax(float a, float b) { return std::fmax(a, b); }
#endif
STN_HD bool fIsNan(float x) { return x != x; }

//! An index that is never inside a tensor (PyTorch uses -100 for the same purpose).
constexpr int32_t kOUTSIDE = -100;

//! Index arithmetic: I = int64_t (the CPU reference and the kernels' 64-bit path) or int32_t (the
//! kernels' 32-bit path, chosen on the host when every offset fits). Both give the same results
//! wherever the 32-bit path is taken.

//! A floored/rounded float coordinate as an index; kOUTSIDE for NaN, inf or |x| >= 2^31
//! (never undefined behaviour, for either index type).
template <typename I>
STN_HD I toIndex(float x)
{
    return (x > -2147483648.0f && x < 2147483648.0f) ? static_cast<I>(x) : I{kOUTSIDE};
}

STN_HD float unnormalize(float coord, int64_t size, bool alignCorners, Semantics sem)
{
    float const s = static_cast<float>(size);
    if (sem == Semantics::kATEN_CPU_4D)
    {
        // Vectorised CPU kernel: a precomputed scale.
        return alignCorners ? (coord + 1.0f) * ((s - 1.0f) / 2.0f) : (coord + 1.0f) * (s / 2.0f) - 0.5f;
    }
    return alignCorners ? ((coord + 1.0f) / 2.0f) * (s - 1.0f) : ((coord + 1.0f) * s - 1.0f) / 2.0f;
}

//! Clip to [0, size - 1]; NaN goes to 0 or to size - 1 depending on the semantics.
STN_HD float clipCoordinate(float x, int64_t size, Semantics sem)
{
    float const hi = static_cast<float>(size - 1);
    if (fIsNan(x))
    {
        return sem == Semantics::kATEN_CPU_5D ? hi : 0.0f;
    }
    return x < 0.0f ? 0.0f : (x > hi ? hi : x);
}

//! Reflect x into [twiceLow / 2, twiceHigh / 2] (the bounds are given doubled so that half
//! pixel edges stay integers). Period 2 * span; NaN/inf give NaN (then clipped).
STN_HD float reflectCoordinate(float x, int64_t twiceLow, int64_t twiceHigh)
{
    if (twiceLow == twiceHigh)
    {
        return 0.0f;
    }
    float const lo = static_cast<float>(twiceLow) / 2.0f;
    float const span = static_cast<float>(twiceHigh - twiceLow) / 2.0f;
    float const t = fMod(fAbs(x - lo), 2.0f * span);
    return (t > span ? 2.0f * span - t : t) + lo;
}

//! PyTorch's compute_coordinates: padding applied to an unnormalised coordinate.
STN_HD float applyPadding(float x, int64_t size, Padding padding, bool alignCorners, Semantics sem)
{
    switch (padding)
    {
    case Padding::kZEROS: return x;
    case Padding::kBORDER: return clipCoordinate(x, size, sem);
    case Padding::kREFLECTION:
        x = alignCorners ? reflectCoordinate(x, 0, 2 * (size - 1)) : reflectCoordinate(x, -1, 2 * size - 1);
        return clipCoordinate(x, size, sem);
    }
    return x; // unreachable: every enumerator is handled above
}

//! Unnormalise + pad: the source coordinate of bilinear and nearest sampling.
template <typename Options>
STN_HD float sourceCoordinate(float coord, int64_t size, Options const& o)
{
    return applyPadding(unnormalize(coord, size, o.alignCorners, o.semantics), size, o.padding, o.alignCorners,
        o.semantics);
}

template <typename I>
STN_HD bool inside(I i, I size)
{
    return i >= 0 && i < size;
}

//! A mask that keeps every bit (the tap is read) or none (the tap reads 0).
STN_HD uint32_t keepMask(bool valid)
{
    return valid ? 0xFFFFFFFFu : 0u;
}

// ---- bicubic (Keys, A = -0.75, as PyTorch) --------------------------------------------------------
STN_HD float cubicConvolution1(float x, float a)
{
    return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
}

STN_HD float cubicConvolution2(float x, float a)
{
    return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
}

STN_HD void cubicCoefficients(float t, float c[4])
{
    float const a = -0.75f;
    c[0] = cubicConvolution2(t + 1.0f, a);
    c[1] = cubicConvolution1(t, a);
    float const u = 1.0f - t;
    c[2] = cubicConvolution1(u, a);
    c[3] = cubicConvolution2(u + 1.0f, a);
}

// ---- taps: where to read and with which weights, computed once per output position and reused
// ---- for every channel. Indices are kOUTSIDE (or any out-of-range value) for taps that read 0.

//! Linear (bilinear / trilinear) taps along one axis, branch-free: both indices are clamped into
//! the axis (a tap outside reads index 0, which exists whenever anything is sampled), and a mask
//! per tap keeps or zeroes the value read. Adding a zeroed tap is exact: weights are finite and
//! >= 0 and the accumulator starts at +0 (it is never -0), so acc + 0 * w = acc, where skipping
//! the tap (PyTorch) leaves acc; a zero weight on an unmasked value would not be (0 * inf = NaN).
template <typename I>
struct LinearAxis
{
    I i0, i1;       // lower and upper index, clamped: always readable
    uint32_t m0, m1; // keepMask of i0 and i1
    float w0, w1;   // weights of i0 and i1
};

//! Returns false when the coordinate is non-finite (after padding): no tap is read then.
template <typename I>
STN_HD bool makeLinearAxis(float u, I size, LinearAxis<I>& a)
{
    bool const finite = fIsFinite(u);
    float const f = fFloor(u);
    I const i = finite ? toIndex<I>(f) : I{kOUTSIDE}; // kOUTSIDE (or 2^31 away) is outside any axis
    bool const valid0 = inside(i, size);
    bool const valid1 = i >= -1 && i < size - 1; // inside(i + 1, size), without the overflow of i + 1
    a.i0 = valid0 ? i : I{0};
    a.i1 = valid1 ? i + 1 : I{0};
    a.m0 = keepMask(valid0);
    a.m1 = keepMask(valid1);
    a.w0 = finite ? (f + 1.0f) - u : 0.0f; // (x_se - x), PyTorch's form
    a.w1 = finite ? u - f : 0.0f;
    return finite;
}

//! One axis of a specialised bilinear kernel (FixedOptions) as a LinearAxis of two adjacent slots
//! (i0, i1) = (f, f + 1), f = floor(u) clamped into [0, size - 2] (so size >= 2): the two columns
//! of a row come from one address, the second row is one row further. Each tap that is inside
//! lands in one slot with its weight - inside the axis, tap k in slot k; at u in [-1, 0), tap 1
//! (index 0) in slot 0; at u in [size - 1, size), tap 0 (index size - 1) in slot 1 - and a slot
//! no tap lands in is masked (its weight any finite value >= 0). Exact against makeLinearAxis:
//! only zeroed (+0) terms change places in the sum.
//! u must lie in [-2, size] (tapCoordinate), so that floor(u) converts without a range check.
template <typename I>
STN_HD LinearAxis<I> makePairedAxis(float u, I size)
{
    float const f = fFloor(u);
    I const i = static_cast<I>(f);
    float const w0 = (f + 1.0f) - u; // the taps' weights, as makeLinearAxis
    float const w1 = u - f;
    LinearAxis<I> s;
    s.i0 = i < 0 ? I{0} : (i > size - 2 ? size - 2 : i);
    s.i1 = s.i0 + 1;
    // d = 0: both taps inside; 1: only tap 1, in slot 0; -1: only tap 0, in slot 1; else none.
    I const d = s.i0 - i;
    s.m0 = keepMask(d == 0 || d == 1);
    s.m1 = keepMask(d == 0 || d == -1);
    s.w0 = d == 0 ? w0 : w1;
    s.w1 = d == 0 ? w1 : w0;
    return s;
}

//! The source coordinate of a specialised bilinear kernel (CUDA semantics), within [-2, size]:
//! border padding clips into [0, size - 1] already; for zeros padding a NaN goes to -2 (fmax
//! returns the number) and +-inf or anything beyond to the bounds, where no tap is inside, as
//! for the unclamped coordinate: the same +0 sum, and no range check before the conversion.
template <typename I, typename Options>
STN_HD float tapCoordinate(float coord, I size, Options const& o)
{
    float const u = sourceCoordinate(coord, size, o);
    if constexpr (Options::padding == Padding::kZEROS)
    {
        return fMin(fMax(u, -2.0f), static_cast<float>(size));
    }
    return u;
}

template <typename I>
STN_HD I nearestIndex(float u, I size)
{
    I const i = toIndex<I>(fNearbyint(u));
    return inside(i, size) ? i : I{kOUTSIDE};
}

//! Bicubic taps along one axis: four indices (padding applied per tap) and four weights.
template <typename I>
struct CubicAxis
{
    I i[4];
    float c[4];
};

//! u: unnormalised coordinate (no padding); returns false when it is non-finite.
template <typename I, typename Options>
STN_HD bool makeCubicAxis(float u, I size, Options const& o, CubicAxis<I>& a)
{
    float const f = fFloor(u);
    cubicCoefficients(u - f, a.c);
STN_UNROLL
    for (int k = 0; k < 4; ++k)
    {
        float const tap = applyPadding(f - 1.0f + static_cast<float>(k), size, o.padding, o.alignCorners, o.semantics);
        I const idx = toIndex<I>(tap);
        a.i[k] = inside(idx, size) ? idx : I{kOUTSIDE};
    }
    return fIsFinite(u);
}

// ---- element conversion: T is float or a 16-bit type with toFloat/fromFloat overloads ------------
STN_HD float toFloat(float v)
{
    return v;
}

template <typename T>
STN_HD T fromFloat(float v);

template <>
STN_HD float fromFloat<float>(float v)
{
    return v;
}

STN_HD float quietNan()
{
#if defined(__CUDA_ARCH__)
    return __int_as_float(0x7fffffff);
#else
    return std::nanf("");
#endif
}

//! 16-bit storage types of the CPU reference (bit patterns of IEEE half and bfloat16). The CUDA
//! kernels use __half / __nv_bfloat16 instead.
struct Half
{
    uint16_t bits;
};
struct BFloat16
{
    uint16_t bits;
};

STN_HD uint32_t floatBits(float f)
{
#if defined(__CUDA_ARCH__)
    return __float_as_uint(f);
#else
    uint32_t u;
    __builtin_memcpy(&u, &f, sizeof(u));
    return u;
#endif
}

STN_HD float bitsFloat(uint32_t u)
{
#if defined(__CUDA_ARCH__)
    return __uint_as_float(u);
#else
    float f;
    __builtin_memcpy(&f, &u, sizeof(f));
    return f;
#endif
}

//! IEEE half -> float (exact; subnormals, inf and NaN included).
STN_HD float toFloat(Half h)
{
    uint32_t const w = static_cast<uint32_t>(h.bits) << 16;
    uint32_t const sign = w & 0x80000000u;
    uint32_t const twoW = w + w;
    float const normalized = bitsFloat((twoW >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    float const denormalized = bitsFloat((twoW >> 17) | (126u << 23)) - 0.5f;
    uint32_t const r = twoW < (1u << 27) ? floatBits(denormalized) : floatBits(normalized);
    return bitsFloat(sign | r);
}

//! float -> IEEE half, round to nearest even (as torch), overflow to inf, NaN kept quiet.
template <>
STN_HD Half fromFloat<Half>(float f)
{
    float base = (fAbs(f) * 0x1.0p+112f) * 0x1.0p-110f;
    uint32_t const w = floatBits(f);
    uint32_t const shl1W = w + w;
    uint32_t const sign = w & 0x80000000u;
    uint32_t bias = shl1W & 0xFF000000u;
    if (bias < 0x71000000u)
    {
        bias = 0x71000000u;
    }
    base = bitsFloat((bias >> 1) + 0x07800000u) + base;
    uint32_t const bits = floatBits(base);
    uint32_t const expBits = (bits >> 13) & 0x00007C00u;
    uint32_t const mantissaBits = bits & 0x00000FFFu;
    uint32_t const nonsign = expBits + mantissaBits;
    return Half{static_cast<uint16_t>((sign >> 16) | (shl1W > 0xFF000000u ? 0x7E00u : nonsign))};
}

STN_HD float toFloat(BFloat16 h)
{
    return bitsFloat(static_cast<uint32_t>(h.bits) << 16);
}

//! float -> bfloat16, round to nearest even (as torch), NaN kept quiet.
template <>
STN_HD BFloat16 fromFloat<BFloat16>(float f)
{
    uint32_t const u = floatBits(f);
    if (fIsNan(f))
    {
        return BFloat16{static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u)};
    }
    uint32_t const rounded = u + 0x7FFFu + ((u >> 16) & 1u);
    return BFloat16{static_cast<uint16_t>(rounded >> 16)};
}

#if defined(__CUDACC__) || defined(STN_CUDA_HOST_EMULATION) // the host emulation uses CUDA's host __half
STN_HD float toFloat(__half v)
{
    return __half2float(v);
}
template <>
STN_HD __half fromFloat<__half>(float v)
{
    return __float2half_rn(v);
}
STN_HD float toFloat(__nv_bfloat16 v)
{
    return __bfloat162float(v);
}
template <>
STN_HD __nv_bfloat16 fromFloat<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}
#endif

//! v with its bits ANDed with a keepMask: v itself, or +0 (the branch-free read of a linear tap).
STN_HD float keep(float v, uint32_t m)
{
    return bitsFloat(floatBits(v) & m);
}
STN_HD Half keep(Half v, uint32_t m)
{
    return Half{static_cast<uint16_t>(v.bits & m)};
}
STN_HD BFloat16 keep(BFloat16 v, uint32_t m)
{
    return BFloat16{static_cast<uint16_t>(v.bits & m)};
}
#if defined(__CUDACC__) || defined(STN_CUDA_HOST_EMULATION)
STN_HD __half keep(__half v, uint32_t m)
{
    return __ushort_as_half(static_cast<unsigned short>(__half_as_ushort(v) & m));
}
STN_HD __nv_bfloat16 keep(__nv_bfloat16 v, uint32_t m)
{
    return __ushort_as_bfloat16(static_cast<unsigned short>(__bfloat16_as_ushort(v) & m));
}
#endif

//! acc += the tap at `at` times w, where its mask keeps it (see STN_MASKED_TAPS): exact either
//! way, as a masked tap adds +0 * w to an accumulator that is never -0.
template <typename T>
STN_HD void addTap(float& acc, T const* at, uint32_t mask, float w)
{
#if STN_MASKED_TAPS
    acc += toFloat(keep(*at, mask)) * w;
#else
    if (mask != 0)
    {
        acc += toFloat(*at) * w;
    }
#endif
}

//! The 16-bit types whose two taps of a paired row are read as one masked word (kPairedTaps): the
//! kernels' __half / __nv_bfloat16 (the CPU reference never runs a paired path).
template <typename T>
struct PackedPair
{
    static constexpr bool kVALUE = false;
};
#if defined(__CUDACC__) || defined(STN_CUDA_HOST_EMULATION)
template <>
struct PackedPair<__half>
{
    static constexpr bool kVALUE = true;
    static STN_HD uint32_t bits(__half v) { return __half_as_ushort(v); }
    static STN_HD void toFloats(uint32_t w, float& a, float& b)
    {
        __half2 h;
        __builtin_memcpy(&h, &w, sizeof(h));
        a = __low2float(h);
        b = __high2float(h);
    }
};
template <>
struct PackedPair<__nv_bfloat16>
{
    static constexpr bool kVALUE = true;
    static STN_HD uint32_t bits(__nv_bfloat16 v) { return __bfloat16_as_ushort(v); }
    static STN_HD void toFloats(uint32_t w, float& a, float& b)
    {
        a = bitsFloat(w << 16);
        b = bitsFloat(w & 0xFFFF0000u);
    }
};
#endif

//! The two columns of a paired row (at[0], at[1]) masked in one operation: their bits packed in
//! one word and ANDed with the row's pair mask (low half: slot 0's keepMask, high half: slot 1's),
//! then converted - exactly keep() per element, in fewer registers than a mask per tap.
template <typename T>
STN_HD void readPair(T const* at, uint32_t pairMask, float& a, float& b)
{
    uint32_t const w = (PackedPair<T>::bits(at[0]) | (PackedPair<T>::bits(at[1]) << 16)) & pairMask;
    PackedPair<T>::toFloats(w, a, b);
}

// ---- per-position samplers: taps once per position, then every channel -------------------------
//
// P output positions are sampled together (P = 1, or 2 for the vectorised 16-bit CUDA path);
// `write(v)` receives the P values of one channel and moves on to the next channel (a writer is a
// cursor: one pointer step per channel, no per-channel address arithmetic). in: [C, (D,) H, W]
// of one batch item.

//! Writes P consecutive positions of each channel plane, one element at a time; `out` points at
//! the first position in channel 0.
template <typename TOut, int P, typename I = int64_t>
struct PlaneWriter
{
    TOut* out;
    I outPlane;
    STN_HD void operator()(float const (&v)[P])
    {
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            out[p] = fromFloat<TOut>(v[p]);
        }
        out += outPlane;
    }
};

//! Nearest: for every channel, the input at each position's offset in the plane (-1: outside, 0).
template <int P, typename I, typename T, typename Writer>
STN_HD void gatherNearest(T const* in, I C, I plane, I const (&off)[P], Writer write)
{
    T const* q = in;
    for (I c = 0; c < C; ++c, q += plane)
    {
        float v[P];
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            v[p] = off[p] >= 0 ? toFloat(q[off[p]]) : 0.0f;
        }
        write(v);
    }
}

template <int P, typename I, typename T, typename Options, typename Writer>
STN_HD void sample2d(T const* in, I C, I H, I W, float const (&gx)[P], float const (&gy)[P], Options const& o,
    Writer write)
{
    I const plane = H * W;
    switch (o.interpolation)
    {
    case Interpolation::kBILINEAR:
    {
        // Per position, once: the four taps' clamped offsets, masks and weights, and the start of
        // the sum (+0, or NaN where the semantics give NaN for a non-finite coordinate: NaN + 0
        // stays NaN). The channel loop is then straight-line code: load, mask, convert, FMA.
        // Tap k = 2 * row + column reads in[off[p][k]] (paired taps: off[p][2 * row] + column).
        // 16-bit paired taps: both columns of a row masked as one word (readPair).
        constexpr bool kPacked = Options::kPairedTaps && PackedPair<T>::kVALUE;
        I off[P][4];
        uint32_t mask[P][4];
        uint32_t pairMask[P][2];
        float weight[P][4];
        float start[P];
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            LinearAxis<I> a, b; // columns, rows
            if constexpr (Options::kPairedTaps)
            {
                a = makePairedAxis(tapCoordinate(gx[p], W, o), W);
                b = makePairedAxis(tapCoordinate(gy[p], H, o), H);
                start[p] = 0.0f;
            }
            else
            {
                bool const finite = makeLinearAxis(sourceCoordinate(gx[p], W, o), W, a)
                    & makeLinearAxis(sourceCoordinate(gy[p], H, o), H, b);
                start[p] = !finite && o.semantics == Semantics::kATEN_CPU_4D ? quietNan() : 0.0f;
            }
            I const x[2] = {a.i0, a.i1};
            uint32_t const m[2] = {a.m0, a.m1};
            float const w[2] = {a.w0, a.w1};
            I const rows[2] = {b.i0 * W, b.i1 * W};
            uint32_t const rowMasks[2] = {b.m0, b.m1};
            float const rowWeights[2] = {b.w0, b.w1};
STN_UNROLL
            for (int k = 0; k < 4; ++k)
            {
                off[p][k] = rows[k / 2] + x[k % 2];
                mask[p][k] = rowMasks[k / 2] & m[k % 2];
                weight[p][k] = w[k % 2] * rowWeights[k / 2];
            }
            if constexpr (kPacked)
            {
                uint32_t const columns = (m[0] & 0x0000FFFFu) | (m[1] & 0xFFFF0000u);
                pairMask[p][0] = rowMasks[0] & columns;
                pairMask[p][1] = rowMasks[1] & columns;
            }
        }
        // Paired: each tap row's address (its second column at +1); else the plane's, with an
        // offset per tap (four pointers would cost the generic kernels registers). Stepped one
        // plane per channel: one pointer step per row and channel.
        constexpr int kRows = Options::kPairedTaps ? 2 : 1;
        T const* at[P][kRows];
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
STN_UNROLL
            for (int j = 0; j < kRows; ++j)
            {
                at[p][j] = Options::kPairedTaps ? in + off[p][2 * j] : in;
            }
        }
        auto const channel = [&]() {
            float v[P];
STN_UNROLL
            for (int p = 0; p < P; ++p)
            {
                float acc = start[p];
                if constexpr (kPacked)
                {
STN_UNROLL
                    for (int r = 0; r < 2; ++r)
                    {
                        float a, b;
                        readPair(at[p][r], pairMask[p][r], a, b);
                        acc += a * weight[p][2 * r];
                        acc += b * weight[p][2 * r + 1];
                    }
                }
                else
                {
STN_UNROLL
                    for (int k = 0; k < 4; ++k)
                    {
                        T const* const tap = Options::kPairedTaps ? at[p][k / 2] + (k & 1) : at[p][0] + off[p][k];
                        addTap(acc, tap, mask[p][k], weight[p][k]);
                    }
                }
                v[p] = acc;
STN_UNROLL
                for (int j = 0; j < kRows; ++j)
                {
                    at[p][j] += plane;
                }
            }
            write(v);
        };
        if constexpr (P == 1)
        {
            for (I c = 0; c < C; ++c) // unrolled by the compiler
            {
                channel();
            }
        }
        else if constexpr (Options::padding == Padding::kZEROS)
        {
            // Two channels per trip (the trip's overhead halved) fit in 64 registers here...
STN_UNROLL_TWICE
            for (I c = 0; c < C; ++c)
            {
                channel();
            }
        }
        else
        {
            // ...but not with border padding's clipping in the set-up (8 bytes would spill).
STN_NO_UNROLL
            for (I c = 0; c < C; ++c)
            {
                channel();
            }
        }
        return;
    }
    case Interpolation::kNEAREST:
    {
        I off[P];
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            I const ix = nearestIndex(sourceCoordinate(gx[p], W, o), W);
            I const iy = nearestIndex(sourceCoordinate(gy[p], H, o), H);
            off[p] = (ix >= 0 && iy >= 0) ? iy * W + ix : I{-1};
        }
        gatherNearest<P>(in, C, plane, off, write);
        return;
    }
    case Interpolation::kBICUBIC:
    {
        CubicAxis<I> ax[P], ay[P];
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            makeCubicAxis(unnormalize(gx[p], W, o.alignCorners, o.semantics), W, o, ax[p]);
            makeCubicAxis(unnormalize(gy[p], H, o.alignCorners, o.semantics), H, o, ay[p]);
        }
        // 32-bit: the sixteen tap offsets are held (one wide multiply-add per tap). 64-bit: they
        // would take 32 registers, so each tap row's address is held instead (a row outside:
        // row 0's, masked, never read), stepped one plane per channel.
        constexpr bool kRowPointers = sizeof(I) == 8;
        T const* row[P][4];
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
STN_UNROLL
            for (int r = 0; r < 4; ++r)
            {
                row[p][r] = in + (ay[p].i[r] >= 0 ? ay[p].i[r] : I{0}) * W;
            }
        }
        T const* q = in;
        for (I c = 0; c < C; ++c, q += plane)
        {
            float v[P];
STN_UNROLL
            for (int p = 0; p < P; ++p)
            {
                CubicAxis<I> const& a = ax[p];
                CubicAxis<I> const& b = ay[p];
                float rows[4];
STN_UNROLL
                for (int r = 0; r < 4; ++r)
                {
                    float t[4];
STN_UNROLL
                    for (int k = 0; k < 4; ++k)
                    {
                        t[k] = (b.i[r] >= 0 && a.i[k] >= 0)
                            ? toFloat(kRowPointers ? row[p][r][a.i[k]] : q[b.i[r] * W + a.i[k]])
                            : 0.0f;
                    }
                    rows[r] = t[0] * a.c[0] + t[1] * a.c[1] + t[2] * a.c[2] + t[3] * a.c[3];
                    if constexpr (kRowPointers)
                    {
                        row[p][r] += plane;
                    }
                }
                v[p] = rows[0] * b.c[0] + rows[1] * b.c[1] + rows[2] * b.c[2] + rows[3] * b.c[3];
            }
            write(v);
        }
        return;
    }
    }
}

template <int P, typename I, typename T, typename Options, typename Writer>
STN_HD void sample3d(T const* in, I C, I D, I H, I W, float const (&gx)[P], float const (&gy)[P], float const (&gz)[P],
    Options const& o, Writer write)
{
    I const plane = D * H * W;
    I const slice = H * W;
    switch (o.interpolation)
    {
    case Interpolation::kBILINEAR:
    {
        LinearAxis<I> ax[P], ay[P], az[P];
        float start[P]; // as in sample2d
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            bool const finite = makeLinearAxis(sourceCoordinate(gx[p], W, o), W, ax[p])
                & makeLinearAxis(sourceCoordinate(gy[p], H, o), H, ay[p])
                & makeLinearAxis(sourceCoordinate(gz[p], D, o), D, az[p]);
            start[p] = !finite && o.semantics == Semantics::kATEN_CPU_4D ? quietNan() : 0.0f;
        }
        T const* q = in;
        // Not unrolled: each unrolled copy holds its own eight tap offsets (64-bit ones spill at 96
        // registers; the 32-bit grid kernels took 80 registers, not 48-56).
STN_NO_UNROLL
        for (I c = 0; c < C; ++c, q += plane)
        {
            float v[P];
STN_UNROLL
            for (int p = 0; p < P; ++p)
            {
                float acc = start[p];
STN_UNROLL
                for (int k = 0; k < 8; ++k)
                {
                    I const iz = (k & 4) ? az[p].i1 : az[p].i0;
                    I const iy = (k & 2) ? ay[p].i1 : ay[p].i0;
                    I const ix = (k & 1) ? ax[p].i1 : ax[p].i0;
                    uint32_t const m = ((k & 4) ? az[p].m1 : az[p].m0) & ((k & 2) ? ay[p].m1 : ay[p].m0)
                        & ((k & 1) ? ax[p].m1 : ax[p].m0);
                    float const w = ((k & 1) ? ax[p].w1 : ax[p].w0) * ((k & 2) ? ay[p].w1 : ay[p].w0)
                        * ((k & 4) ? az[p].w1 : az[p].w0);
                    addTap(acc, q + (iz * slice + iy * W + ix), m, w);
                }
                v[p] = acc;
            }
            write(v);
        }
        return;
    }
    case Interpolation::kNEAREST:
    {
        I off[P];
STN_UNROLL
        for (int p = 0; p < P; ++p)
        {
            I const ix = nearestIndex(sourceCoordinate(gx[p], W, o), W);
            I const iy = nearestIndex(sourceCoordinate(gy[p], H, o), H);
            I const iz = nearestIndex(sourceCoordinate(gz[p], D, o), D);
            off[p] = (ix >= 0 && iy >= 0 && iz >= 0) ? iz * slice + iy * W + ix : I{-1};
        }
        gatherNearest<P>(in, C, plane, off, write);
        return;
    }
    case Interpolation::kBICUBIC:
    {
        // Rejected before any launch (PyTorch has no 3-D bicubic); write zeros, never read.
        for (I c = 0; c < C; ++c)
        {
            float v[P];
STN_UNROLL
            for (int p = 0; p < P; ++p)
            {
                v[p] = 0.0f;
            }
            write(v);
        }
        return;
    }
    }
}

// ---- the fused op: base grid (as torch.nn.functional.affine_grid) and the transform -------------

//! One axis of affine_grid's base grid: point i of torch.linspace(-1, 1, n) in float, times
//! (n - 1) / n when !alignCorners. Made once per axis (on the host for the kernels), so that a
//! point costs no division: the step 2 / (n - 1) and 1 / n are IEEE quotients computed in make();
//! the per-point (v * (n - 1)) / n is q = a * (1 / n) plus one residual correction (Markstein:
//! with 1 / n correctly rounded and q within an ulp, the residual a - q * n is exact in an FMA and
//! q + residual * (1 / n) is the correctly rounded quotient), i.e. the division, bit for bit. The
//! product alone is wrong in about a quarter of the points; the emulation's units suite checks
//! every point of every n <= 4096 and samples beyond against the division.
template <typename I>
struct BaseAxis
{
    I half;           //!< n / 2: points below count from -1, the others from +1 (as linspace)
    I last;           //!< n - 1
    float step;       //!< 2 / (n - 1)
    float scale;      //!< n - 1 (the !alignCorners numerator factor)
    float size;       //!< n
    float reciprocal; //!< 1 / n
    bool single;      //!< n <= 1: the one point is 0
    bool alignCorners;

    static STN_HD BaseAxis make(I n, bool alignCorners)
    {
        BaseAxis a{};
        a.single = n <= 1;
        a.alignCorners = alignCorners;
        a.half = n / 2;
        a.last = n - 1;
        a.scale = static_cast<float>(n - 1);
        a.size = static_cast<float>(n);
        a.step = a.single ? 0.0f : 2.0f / a.scale;
        a.reciprocal = a.single ? 0.0f : 1.0f / a.size;
        return a;
    }

    STN_HD float at(I i) const
    {
        if (single)
        {
            return 0.0f;
        }
        float v = (i < half) ? -1.0f + step * static_cast<float>(i) : 1.0f - step * static_cast<float>(last - i);
        if (!alignCorners)
        {
            float const a = v * scale;
            float const q = a * reciprocal;
            v = fFma(fFma(-q, size, a), reciprocal, q);
        }
        return v;
    }
};

//! 2-D affine ([2,3], row-major) or projective ([3,3]) transform of a base point.
STN_HD void transformPoint2d(float const* t, bool projective, float x, float y, float& gx, float& gy)
{
    gx = x * t[0] + y * t[1] + t[2];
    gy = x * t[3] + y * t[4] + t[5];
    if (projective)
    {
        float const w = x * t[6] + y * t[7] + t[8];
        gx = gx / w;
        gy = gy / w;
    }
}

//! 3-D affine ([3,4], row-major) transform of a base point.
STN_HD void transformPoint3d(float const* t, float x, float y, float z, float& gx, float& gy, float& gz)
{
    gx = x * t[0] + y * t[1] + z * t[2] + t[3];
    gy = x * t[4] + y * t[5] + z * t[6] + t[7];
    gz = x * t[8] + y * t[9] + z * t[10] + t[11];
}

} // namespace math
} // namespace stn_deploy
