/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * emulationTest.cpp: the CUDA entry points (stn_grid_sample_cuda, stn_affine_grid_sample_cuda),
 * compiled from the real .cu sources for the host (cudaHostShim.h) and run by the emulated grid,
 * checked bit for bit against the CPU reference with CUDA semantics. Built under ASan + UBSan by
 * plugins/emulation/build.sh; tests/test_cuda_emulation.py runs it. Suites:
 *   matrix  dtypes x coordinate dtypes x rank x mode x padding x align_corners x op (grid, fused
 *           affine, fused projective) x C 1..17 x odd/even planes x misaligned pointers x semantics
 *   stride  the same kernels on a capped grid (grid-stride loops take several trips)
 *   wide    the 64-bit index path: n * out_plane > 2^31 over lazily mapped buffers, a sparse launch
 *           (some blocks), sampled outputs checked, the rest of the touched items left unwritten
 *   planes  tensors past 2^31 elements whose planes fit: the 32-bit path on batch items and
 *           channels past 2^31 and 2^32 elements (a sparse launch of channel chunks, the planes
 *           beside them left unwritten); theta past 2^31 elements; and one plane of X past 2^31
 *           elements, the 64-bit kernels' case, in every mode
 *   errors  the C API's CUDA error reporting (no device, old driver, sticky fault, bad geometry)
 *   shim    the emulation itself: __syncthreads phases, __shared__, warp shuffles / ballot
 *   units   the kernels' division-free arithmetic against the divisions it replaces: the base-grid
 *           axis (every point of every n <= 4096, sampled n up to 2^31 - 1) and the multiply-high
 *           divisor (every divisor <= 4096 at sampled and boundary dividends, sampled divisors up to
 *           2^31 - 1) - the CPU reference shares the axis code, so this is its only oracle
 * Every output starts as a sentinel that no sampled value can produce, so an unwritten output is
 * a mismatch. Equal means the same bits, or NaN on both sides (the payload of a NaN differs
 * between CUDA's and the reference's float -> half conversions; a GPU returns canonical NaNs).
 *
 *   stn_emulation_test [--first-failure] [suite ...]
 *       -> "<suite>: N checks, 0 failures" per suite; exit 1 on a failure (at once with --first-failure)
 */
#include "cudaHostShim.h"
#include "kernelCommon.cuh"
#include "stnKernelApi.h"

#include <sys/mman.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace
{

int gFailures = 0;
int gChecks = 0;
bool gStopAtFirst = false; // --first-failure: the mutation check needs one failure, not all

void fail(std::string const& what)
{
    if (++gFailures <= 20)
    {
        std::printf("FAIL %s\n", what.c_str());
    }
    if (gStopAtFirst)
    {
        std::fflush(stdout);
        std::exit(1);
    }
}

size_t elementBytes(int32_t dtype)
{
    return dtype == STN_DTYPE_FLOAT32 ? 4 : 2;
}

uint32_t loadBits(void const* p, int32_t dtype, size_t i)
{
    if (dtype == STN_DTYPE_FLOAT32)
    {
        uint32_t v;
        std::memcpy(&v, static_cast<char const*>(p) + 4 * i, 4);
        return v;
    }
    uint16_t b;
    std::memcpy(&b, static_cast<char const*>(p) + 2 * i, 2);
    return b;
}

//! Element i of a buffer of `dtype` as float (for messages and NaN checks).
float loadFloat(void const* p, int32_t dtype, size_t i)
{
    uint32_t const bits = loadBits(p, dtype, i);
    if (dtype == STN_DTYPE_FLOAT16)
    {
        return __half2float(__ushort_as_half(static_cast<uint16_t>(bits)));
    }
    uint32_t const u = dtype == STN_DTYPE_FLOAT32 ? bits : bits << 16; // bf16: the high half of a float
    float v;
    std::memcpy(&v, &u, 4);
    return v;
}

void storeFloat(void* p, int32_t dtype, size_t i, float v)
{
    char* q = static_cast<char*>(p);
    if (dtype == STN_DTYPE_FLOAT32)
    {
        std::memcpy(q + 4 * i, &v, 4);
        return;
    }
    uint16_t const b = dtype == STN_DTYPE_FLOAT16 ? __half_as_ushort(__float2half_rn(v))
                                                  : __bfloat16_as_ushort(__float2bfloat16_rn(v));
    std::memcpy(q + 2 * i, &b, 2);
}

//! A value no sampler can produce from inputs in [-2, 2] (about -2000; finite, not NaN).
uint32_t sentinelBits(int32_t dtype)
{
    return dtype == STN_DTYPE_FLOAT32 ? 0xC4FA1234u : (dtype == STN_DTYPE_FLOAT16 ? 0xE7D1u : 0xC4FAu);
}

void fillSentinel(void* p, int32_t dtype, size_t count)
{
    uint32_t const s = sentinelBits(dtype);
    for (size_t i = 0; i < count; ++i)
    {
        if (dtype == STN_DTYPE_FLOAT32)
        {
            std::memcpy(static_cast<char*>(p) + 4 * i, &s, 4);
        }
        else
        {
            uint16_t const b = static_cast<uint16_t>(s);
            std::memcpy(static_cast<char*>(p) + 2 * i, &b, 2);
        }
    }
}

bool sameValue(void const* a, void const* b, int32_t dtype, size_t i)
{
    if (loadBits(a, dtype, i) == loadBits(b, dtype, i))
    {
        return true;
    }
    return std::isnan(loadFloat(a, dtype, i)) && std::isnan(loadFloat(b, dtype, i));
}

//! A heap buffer whose data starts `offset` bytes past a 16-byte-aligned malloc and ends at the
//! allocation's end, so AddressSanitizer sees any access past the data's end.
struct Buffer
{
    char* base = nullptr;
    void* data = nullptr;
    Buffer(size_t bytes, size_t offset)
    {
        base = static_cast<char*>(std::malloc(bytes + offset > 0 ? bytes + offset : 1)); // 16-byte aligned
        data = base + offset;
    }
    ~Buffer()
    {
        std::free(base);
    }
    Buffer(Buffer const&) = delete;
    Buffer& operator=(Buffer const&) = delete;
};

// ---- the matrix ----------------------------------------------------------------------------------

struct Case
{
    bool fused;
    StnSampleDesc d;
    size_t xOffset, coordOffset, outOffset; // bytes past an aligned address
    int32_t cpuSemantics;                   // what the CPU reference is asked for
    std::string name;
};

std::string describe(Case const& c)
{
    StnSampleDesc const& d = c.d;
    char buf[400];
    std::snprintf(buf, sizeof(buf),
        "%s rank=%d mode=%d pad=%d ac=%d transform=%d sem=%d x=%d coord=%d n=%lld c=%lld in=%lldx%lldx%lld "
        "out=%lldx%lldx%lld offsets=%zu/%zu/%zu",
        c.fused ? "fused" : "grid", d.rank, d.interpolation_mode, d.padding_mode, d.align_corners, d.transform,
        d.semantics, d.x_dtype, d.coord_dtype, static_cast<long long>(d.n), static_cast<long long>(d.c),
        static_cast<long long>(d.in_d), static_cast<long long>(d.in_h), static_cast<long long>(d.in_w),
        static_cast<long long>(d.out_d), static_cast<long long>(d.out_h), static_cast<long long>(d.out_w),
        c.xOffset, c.coordOffset, c.outOffset);
    return buf;
}

//! Grid coordinates: mostly U(-1.3, 1.3) (some leave the image), plus exact +-1, -0, pixel-centre
//! .5 ties for nearest, huge values, NaN and +-inf.
float gridValue(std::mt19937_64& rng, int64_t size, bool alignCorners)
{
    std::uniform_real_distribution<float> u(-1.3f, 1.3f);
    std::uniform_int_distribution<int> pick(0, 39);
    int const k = pick(rng);
    int64_t const s = size < 1 ? 1 : size;
    std::uniform_int_distribution<int64_t> pixel(0, s - 1);
    switch (k)
    {
    case 0: return 1.0f;
    case 1: return -1.0f;
    case 2: return -0.0f;
    case 3: return std::nanf("");
    case 4: return INFINITY;
    case 5: return -INFINITY;
    case 6: return 3.0e9f;
    case 7: return -7.5e7f;
    case 8:
    case 9:
    case 10:
    {
        // u = p + 0.5 exactly where the arithmetic allows: a rounding tie for nearest.
        float const p = static_cast<float>(pixel(rng)) + 0.5f;
        return alignCorners ? (s > 1 ? 2.0f * p / static_cast<float>(s - 1) - 1.0f : 0.0f)
                            : (2.0f * p + 1.0f) / static_cast<float>(s) - 1.0f;
    }
    default: return u(rng);
    }
}

void fillTheta(std::mt19937_64& rng, StnSampleDesc const& d, void* theta)
{
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    int32_t const count = d.rank == 5 ? 12 : (d.transform == 1 ? 9 : 6);
    for (int64_t n = 0; n < d.n; ++n)
    {
        float t[12];
        if (d.rank == 5)
        {
            for (int k = 0; k < 12; ++k)
            {
                t[k] = ((k % 5) == 0 ? 1.0f : 0.0f) + 0.4f * u(rng); // diagonal of [3,4] at 0, 5, 10
            }
        }
        else
        {
            float const a = 1.6f * u(rng);
            float const s = 1.0f + 0.3f * u(rng);
            float const base[9] = {s * std::cos(a), -s * std::sin(a), 0.3f * u(rng), s * std::sin(a), s * std::cos(a),
                0.3f * u(rng), 0.3f * u(rng), 0.3f * u(rng), 1.0f + 0.1f * u(rng)};
            for (int k = 0; k < count; ++k)
            {
                t[k] = base[k];
            }
        }
        if (n == 2)
        {
            t[1] = std::nanf(""); // a non-finite transform: every position of this item
        }
        if (n == 3 && d.transform == 1)
        {
            t[6] = t[7] = 0.0f;
            t[8] = 0.0f; // w = 0: the homogeneous divide gives inf / NaN
        }
        for (int k = 0; k < count; ++k)
        {
            storeFloat(theta, d.coord_dtype, static_cast<size_t>(n * count + k), t[k]);
        }
    }
}

int32_t runCuda(Case const& c, void const* x, void const* coord, void* out)
{
    return c.fused ? stn_affine_grid_sample_cuda(&c.d, x, coord, out, nullptr)
                   : stn_grid_sample_cuda(&c.d, x, coord, out, nullptr);
}

int32_t runCpu(Case const& c, StnSampleDesc const& d, void const* x, void const* coord, void* out)
{
    StnSampleDesc cpu = d;
    cpu.semantics = c.cpuSemantics;
    return c.fused ? stn_affine_grid_sample_cpu(&cpu, x, coord, out, 1) : stn_grid_sample_cpu(&cpu, x, coord, out, 1);
}

void runCase(Case const& c, std::mt19937_64& rng)
{
    StnSampleDesc const& d = c.d;
    int64_t const inVol = d.n * d.c * d.in_d * d.in_h * d.in_w;
    int64_t const outVol = d.n * d.c * d.out_d * d.out_h * d.out_w;
    int64_t const coordVol = c.fused ? d.n * (d.rank == 5 ? 12 : (d.transform == 1 ? 9 : 6))
                                     : d.n * d.out_d * d.out_h * d.out_w * (d.rank - 2);
    size_t const xb = elementBytes(d.x_dtype);
    size_t const cb = elementBytes(d.coord_dtype);
    Buffer x(inVol * xb, c.xOffset);
    Buffer coord(coordVol * cb, c.coordOffset);
    Buffer outCuda(outVol * xb, c.outOffset);
    Buffer outCpu(outVol * xb, 0);
    std::uniform_real_distribution<float> value(-2.0f, 2.0f);
    for (int64_t i = 0; i < inVol; ++i)
    {
        storeFloat(x.data, d.x_dtype, i, value(rng));
    }
    if (c.fused)
    {
        fillTheta(rng, d, coord.data);
    }
    else
    {
        int64_t const sizes[3] = {d.in_w, d.in_h, d.in_d};
        for (int64_t i = 0; i < coordVol; ++i)
        {
            storeFloat(coord.data, d.coord_dtype, i, gridValue(rng, sizes[i % (d.rank - 2)], d.align_corners != 0));
        }
    }
    fillSentinel(outCuda.data, d.x_dtype, outVol);
    fillSentinel(outCpu.data, d.x_dtype, outVol);
    ++gChecks;
    int32_t const sc = runCuda(c, x.data, coord.data, outCuda.data);
    int32_t const sr = runCpu(c, d, x.data, coord.data, outCpu.data);
    if (sc != STN_OK || sr != STN_OK)
    {
        fail(c.name + ": status cuda=" + std::to_string(sc) + " cpu=" + std::to_string(sr) + " (" + stn_last_error()
            + ") " + describe(c));
        return;
    }
    for (int64_t i = 0; i < outVol; ++i)
    {
        if (loadBits(outCpu.data, d.x_dtype, i) == sentinelBits(d.x_dtype))
        {
            fail(c.name + ": the CPU reference left output " + std::to_string(i) + " unwritten; " + describe(c));
            return;
        }
        if (!sameValue(outCuda.data, outCpu.data, d.x_dtype, i))
        {
            char buf[200];
            bool const unwritten = loadBits(outCuda.data, d.x_dtype, i) == sentinelBits(d.x_dtype);
            std::snprintf(buf, sizeof(buf), ": output %lld: cuda %.9g%s, cpu %.9g; ", static_cast<long long>(i),
                loadFloat(outCuda.data, d.x_dtype, i), unwritten ? " (unwritten)" : "",
                loadFloat(outCpu.data, d.x_dtype, i));
            fail(c.name + buf + describe(c));
            return;
        }
    }
}

struct Shape
{
    int64_t n, inD, inH, inW, outD, outH, outW;
};

void suiteMatrix(uint64_t maxBlocks)
{
    stn_emu_set_max_blocks(maxBlocks);
    std::mt19937_64 rng(maxBlocks == 0 ? 13 : 14);
    struct Types
    {
        int32_t x, coord;
    };
    Types const types[] = {{STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT32}, {STN_DTYPE_FLOAT16, STN_DTYPE_FLOAT32},
        {STN_DTYPE_FLOAT16, STN_DTYPE_FLOAT16}, {STN_DTYPE_BFLOAT16, STN_DTYPE_FLOAT32},
        {STN_DTYPE_BFLOAT16, STN_DTYPE_BFLOAT16}};
    // Odd and even output planes (the vector-store and tail paths), an input of one pixel, one
    // row or one column (no paired taps), and outputs bigger than one block of positions (300
    // positions > 256 threads for fp32).
    Shape const shapes4[] = {{4, 1, 5, 7, 1, 3, 5}, {4, 1, 6, 4, 1, 4, 6}, {4, 1, 1, 1, 1, 2, 3},
        {4, 1, 9, 8, 1, 15, 20}, {4, 1, 3, 2, 1, 1, 1}, {4, 1, 7, 7, 1, 5, 5}, {4, 1, 1, 6, 1, 3, 4},
        {4, 1, 5, 1, 1, 4, 3}};
    Shape const shapes5[] = {{4, 3, 4, 5, 2, 3, 3}, {4, 2, 3, 4, 3, 3, 3}, {4, 1, 2, 2, 1, 1, 1}};
    // Byte offsets of (x, coord, out): aligned, then each misaligned by one element.
    size_t const offsets[][3] = {{0, 0, 0}, {0, 0, 1}, {0, 1, 0}, {1, 1, 1}};
    int variant = 0;
    for (bool fused : {false, true})
    {
        for (int transform : {0, 1})
        {
            if (!fused && transform == 1)
            {
                continue;
            }
            for (int32_t rank : {4, 5})
            {
                if (transform == 1 && rank == 5)
                {
                    continue;
                }
                for (Types const& t : types)
                {
                    for (int32_t mode = 0; mode < (rank == 4 ? 3 : 2); ++mode)
                    {
                        for (int32_t pad = 0; pad < 3; ++pad)
                        {
                            for (int32_t ac = 0; ac < 2; ++ac)
                            {
                                // Two shapes per combination; C, offsets and semantics cycle so that
                                // every value meets every dtype and op.
                                for (int rep = 0; rep < 2; ++rep, ++variant)
                                {
                                    Shape const& s = rank == 4 ? shapes4[variant % 8] : shapes5[variant % 3];
                                    Case c{};
                                    c.fused = fused;
                                    c.d.rank = rank;
                                    c.d.interpolation_mode = mode;
                                    c.d.padding_mode = pad;
                                    c.d.align_corners = ac;
                                    c.d.transform = transform;
                                    int const semPick = variant % 5;
                                    c.d.semantics = semPick < 3 ? STN_SEMANTICS_DEVICE : (semPick == 3 ? 1 : 2);
                                    c.cpuSemantics = c.d.semantics == STN_SEMANTICS_DEVICE ? STN_SEMANTICS_ATEN_CUDA
                                                                                            : c.d.semantics;
                                    c.d.x_dtype = t.x;
                                    c.d.coord_dtype = t.coord;
                                    c.d.n = s.n;
                                    c.d.c = 1 + (variant * 7) % 17;
                                    c.d.in_d = s.inD;
                                    c.d.in_h = s.inH;
                                    c.d.in_w = s.inW;
                                    c.d.out_d = s.outD;
                                    c.d.out_h = s.outH;
                                    c.d.out_w = s.outW;
                                    size_t const* off = offsets[(variant / 3) % 4];
                                    c.xOffset = off[0] * elementBytes(t.x);
                                    c.coordOffset = off[1] * elementBytes(t.coord);
                                    c.outOffset = off[2] * elementBytes(t.x);
                                    c.name = "matrix#" + std::to_string(variant);
                                    runCase(c, rng);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    // Every C from 1 to 17 on the fp16 vector path and the fp32 path, odd and even planes.
    for (int32_t x : {STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT16, STN_DTYPE_BFLOAT16})
    {
        for (int64_t ch = 1; ch <= 17; ++ch)
        {
            for (bool fused : {false, true})
            {
                Case c{};
                c.fused = fused;
                c.d = StnSampleDesc{4, static_cast<int32_t>(ch % 3), static_cast<int32_t>(ch % 3 == 0 ? 2 : 0),
                    static_cast<int32_t>(ch % 2), 0, STN_SEMANTICS_DEVICE, x, STN_DTYPE_FLOAT32, 2, ch, 1, 6, 5, 1,
                    3, ch % 2 == 0 ? 4 : 5};
                c.cpuSemantics = STN_SEMANTICS_ATEN_CUDA;
                c.name = "channels#" + std::to_string(ch);
                runCase(c, rng);
            }
        }
    }
    // The channel split (gridDim.y): planes big enough that a chunk holds several channels (fp32:
    // 100 blocks -> 9 chunks of 2 for 17 channels; fp16: 50 blocks -> 21 chunks of 2 for 41), the
    // last chunk shorter than the others.
    for (int32_t x : {STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT16})
    {
        for (bool fused : {false, true})
        {
            Case c{};
            c.fused = fused;
            int64_t const ch = x == STN_DTYPE_FLOAT32 ? 17 : 41;
            c.d = StnSampleDesc{4, 0, 0, 0, 0, STN_SEMANTICS_DEVICE, x, STN_DTYPE_FLOAT32, 4, ch, 1, 20, 24, 1, 80, 80};
            c.cpuSemantics = STN_SEMANTICS_ATEN_CUDA;
            c.name = std::string("chunks ") + (fused ? "fused" : "grid") + " x=" + std::to_string(x);
            runCase(c, rng);
        }
    }
    stn_emu_set_max_blocks(0);
}

// ---- the 64-bit index path -------------------------------------------------------------------

//! Anonymous, lazily mapped (MAP_NORESERVE): only the pages a test touches take memory.
struct LazyMap
{
    void* p = nullptr;
    size_t bytes = 0;
    explicit LazyMap(size_t b)
        : bytes(b)
    {
        p = mmap(nullptr, b, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
        {
            std::printf("SKIP cannot map %zu bytes lazily\n", b);
            p = nullptr;
        }
    }
    ~LazyMap()
    {
        if (p != nullptr)
        {
            munmap(p, bytes);
        }
    }
};

//! n * outPlane > 2^31 (or 2^32) positions: a launch restricted to the first blocks, the blocks
//! around each power of two the positions cross (2^31, and 2^32 when `beyond32`), and the last
//! blocks; the batch items those blocks touch (and their neighbours) are filled, checked against
//! the CPU reference run on each item alone, and positions of unselected blocks must stay
//! unwritten.
void wideCase(bool fused, int32_t xDtype, int32_t coordDtype, int64_t c, int64_t outH, int64_t outW, int32_t mode,
    bool beyond32 = false)
{
    int64_t const outPlane = outH * outW;
    // 2.5 * 2^30 positions (2^31 well inside), or 2^32 + 2^30.
    int64_t const positions = (beyond32 ? (int64_t{5} << 30) : (int64_t{5} << 29)) + 3 * outPlane + 1;
    int64_t const n = (positions + outPlane - 1) / outPlane;
    StnSampleDesc d{4, mode, 1, 0, 0, STN_SEMANTICS_DEVICE, xDtype, coordDtype, n, c, 1, 3, 4, 1, outH, outW};
    int64_t const inPlane = d.in_h * d.in_w;
    int32_t const nt = 6;
    size_t const xb = elementBytes(xDtype);
    size_t const cb = elementBytes(coordDtype);
    int64_t const coordPerItem = fused ? nt : outPlane * 2;
    LazyMap x(static_cast<size_t>(n * c * inPlane) * xb);
    LazyMap coord(static_cast<size_t>(n * coordPerItem) * cb);
    LazyMap out(static_cast<size_t>(n * c * outPlane) * xb);
    if (x.p == nullptr || coord.p == nullptr || out.p == nullptr)
    {
        return;
    }
    int const P = 1; // past 2^31 positions the generic (64-bit) kernel runs: one position per thread
    int64_t const perItem = (outPlane + P - 1) / P;
    int64_t const work = n * perItem;
    int64_t const threads = 256;
    int64_t const blocks = (work + threads - 1) / threads;
    // The block holding the first thread of the item where the positions cross 2^k.
    auto crossingBlock = [&](int k) { return ((int64_t{1} << k) / outPlane * perItem) / threads; };
    std::vector<uint64_t> ranges = {0, 1};
    for (int k : {31, 32})
    {
        if (k == 32 && !beyond32)
        {
            continue;
        }
        int64_t const b = crossingBlock(k);
        ranges.push_back(static_cast<uint64_t>(b - 1));
        ranges.push_back(static_cast<uint64_t>(b + 2));
    }
    ranges.push_back(static_cast<uint64_t>(blocks - 2));
    ranges.push_back(static_cast<uint64_t>(blocks));
    int32_t const rangeCount = static_cast<int32_t>(ranges.size() / 2);
    stn_emu_set_block_ranges(ranges.data(), rangeCount);
    auto selectedPosition = [&](int64_t item, int64_t pos) {
        int64_t const b = (item * perItem + pos / P) / threads;
        for (int32_t r = 0; r < rangeCount; ++r)
        {
            if (b >= static_cast<int64_t>(ranges[2 * r]) && b < static_cast<int64_t>(ranges[2 * r + 1]))
            {
                return true;
            }
        }
        return false;
    };
    // The items the selected blocks touch, plus one on each side.
    std::vector<int64_t> items;
    for (int32_t r = 0; r < rangeCount; ++r)
    {
        int64_t const first = static_cast<int64_t>(ranges[2 * r]) * threads / perItem;
        int64_t const last = (static_cast<int64_t>(ranges[2 * r + 1]) * threads - 1) / perItem;
        for (int64_t i = first - 1; i <= last + 1; ++i)
        {
            if (i >= 0 && i < n && (items.empty() || items.back() < i))
            {
                items.push_back(i);
            }
        }
    }
    std::mt19937_64 rng(static_cast<uint64_t>(n));
    std::uniform_real_distribution<float> value(-2.0f, 2.0f);
    StnSampleDesc one = d;
    one.n = 1;
    for (int64_t i : items)
    {
        for (int64_t k = 0; k < c * inPlane; ++k)
        {
            storeFloat(x.p, xDtype, static_cast<size_t>(i * c * inPlane + k), value(rng));
        }
        if (fused)
        {
            StnSampleDesc th = one;
            fillTheta(rng, th, static_cast<char*>(coord.p) + i * nt * cb);
        }
        else
        {
            for (int64_t k = 0; k < coordPerItem; ++k)
            {
                storeFloat(coord.p, coordDtype, static_cast<size_t>(i * coordPerItem + k),
                    gridValue(rng, k % 2 == 0 ? d.in_w : d.in_h, false));
            }
        }
        fillSentinel(static_cast<char*>(out.p) + i * c * outPlane * xb, xDtype, static_cast<size_t>(c * outPlane));
    }
    ++gChecks;
    int32_t const status = fused ? stn_affine_grid_sample_cuda(&d, x.p, coord.p, out.p, nullptr)
                                 : stn_grid_sample_cuda(&d, x.p, coord.p, out.p, nullptr);
    stn_emu_set_block_ranges(nullptr, 0);
    std::string const name = std::string("wide ") + (fused ? "fused" : "grid") + " x=" + std::to_string(xDtype)
        + " coord=" + std::to_string(coordDtype) + " n=" + std::to_string(n) + " plane=" + std::to_string(outPlane);
    if (status != STN_OK)
    {
        fail(name + ": status " + std::to_string(status) + " " + stn_last_error());
        return;
    }
    std::vector<char> ref(static_cast<size_t>(c * outPlane) * xb);
    int64_t checkedPositions = 0;
    StnSampleDesc cpu = one;
    cpu.semantics = STN_SEMANTICS_ATEN_CUDA;
    for (int64_t i : items)
    {
        char const* xi = static_cast<char const*>(x.p) + i * c * inPlane * xb;
        char const* ci = static_cast<char const*>(coord.p) + i * coordPerItem * cb;
        int32_t const sr = fused ? stn_affine_grid_sample_cpu(&cpu, xi, ci, ref.data(), 1)
                                 : stn_grid_sample_cpu(&cpu, xi, ci, ref.data(), 1);
        if (sr != STN_OK)
        {
            fail(name + ": CPU reference status " + std::to_string(sr));
            return;
        }
        char const* oi = static_cast<char const*>(out.p) + i * c * outPlane * xb;
        for (int64_t ch = 0; ch < c; ++ch)
        {
            for (int64_t pos = 0; pos < outPlane; ++pos)
            {
                size_t const e = static_cast<size_t>(ch * outPlane + pos);
                bool const expectWritten = selectedPosition(i, pos);
                bool const ok = expectWritten ? sameValue(oi, ref.data(), xDtype, e)
                                              : loadBits(oi, xDtype, e) == sentinelBits(xDtype);
                checkedPositions += expectWritten ? 1 : 0;
                if (!ok)
                {
                    char buf[240];
                    std::snprintf(buf, sizeof(buf), ": item %lld channel %lld position %lld: got %.9g, %s %.9g",
                        static_cast<long long>(i), static_cast<long long>(ch), static_cast<long long>(pos),
                        loadFloat(oi, xDtype, e), expectWritten ? "reference" : "expected unwritten (sentinel)",
                        expectWritten ? loadFloat(ref.data(), xDtype, e) : loadFloat(oi, xDtype, e));
                    fail(name + buf);
                    return;
                }
            }
        }
    }
    uint64_t launchedBlocks = 0, launches = 0;
    uint32_t launchedThreads = 0;
    stn_emu_last_launch(&launchedBlocks, &launchedThreads, &launches);
    if (launchedBlocks != static_cast<uint64_t>(blocks) || launchedThreads != threads)
    {
        fail(name + ": launched " + std::to_string(launchedBlocks) + " blocks of " + std::to_string(launchedThreads)
            + ", expected " + std::to_string(blocks) + " of 256");
    }
    if (checkedPositions < (rangeCount - 1) * threads)
    {
        fail(name + ": only " + std::to_string(checkedPositions) + " positions were checked");
    }
}

//! Batch items and channels past 2^31 (and 2^32) elements on the 32-bit path, which needs only a
//! plane, the positions and the grid to fit: many channels on small planes, one block per batch
//! item (out plane = P x 256 positions) and the channels split over gridDim.y. A sparse launch runs
//! the chunks holding elements 2^31 and 2^32 of X and of the output and the last chunk, each
//! checked against the CPU reference on that chunk alone; the planes beside them stay unwritten.
void planesCase(bool fused, int32_t xDtype, int64_t n, int64_t c, int64_t inH, int64_t inW, int64_t outH,
    int64_t outW, int32_t mode, int32_t padding)
{
    StnSampleDesc const d{
        4, mode, padding, 0, 0, STN_SEMANTICS_DEVICE, xDtype, STN_DTYPE_FLOAT32, n, c, 1, inH, inW, 1, outH, outW};
    std::string const name = std::string("planes ") + (fused ? "fused" : "grid") + " x=" + std::to_string(xDtype)
        + " mode=" + std::to_string(mode) + " n=" + std::to_string(n) + " c=" + std::to_string(c);
    int64_t const inPlane = inH * inW;
    int64_t const outPlane = outH * outW;
    bool const specialised = mode == 0 && padding < 2;
    int64_t const P = specialised && xDtype != STN_DTYPE_FLOAT32 ? 2 : 1; // positions per thread
    int64_t const threads = 256;
    int64_t const chunk = stn_deploy::cuda::channelsPerChunk(c, static_cast<unsigned int>(n));
    int64_t const gridY = (c + chunk - 1) / chunk;
    ++gChecks;
    if (outPlane != P * threads || !stn_deploy::cuda::fitsIndex32(d, fused) || n * c * outPlane <= (int64_t{1} << 31))
    {
        fail(name + ": not a 32-bit case past 2^31 with one block per item");
        return;
    }
    size_t const xb = elementBytes(xDtype);
    int64_t const coordPerItem = stn_deploy::cuda::coordsPerItem(d, fused);
    LazyMap x(static_cast<size_t>(n * c * inPlane) * xb);
    LazyMap coord(static_cast<size_t>(n * coordPerItem) * 4);
    LazyMap out(static_cast<size_t>(n * c * outPlane) * xb);
    if (x.p == nullptr || coord.p == nullptr || out.p == nullptr)
    {
        return;
    }
    // The block sampling the batch's channel plane `plane`: linear index y * n + item, y its chunk.
    auto blockOf = [&](int64_t plane) { return (plane % c) / chunk * n + plane / c; };
    std::vector<int64_t> blocks;
    auto pick = [&](int64_t plane) {
        int64_t const b = blockOf(plane);
        if (std::find(blocks.begin(), blocks.end(), b) == blocks.end())
        {
            blocks.push_back(b);
        }
    };
    pick(0);
    for (int k : {31, 32})
    {
        for (int64_t planeSize : {inPlane, outPlane})
        {
            if ((int64_t{1} << k) < n * c * planeSize)
            {
                pick((int64_t{1} << k) / planeSize);
            }
        }
    }
    pick(n * c - 1);
    std::sort(blocks.begin(), blocks.end());
    std::vector<uint64_t> ranges;
    for (int64_t b : blocks)
    {
        ranges.push_back(static_cast<uint64_t>(b));
        ranges.push_back(static_cast<uint64_t>(b + 1));
    }
    std::mt19937_64 rng(static_cast<uint64_t>(c));
    std::uniform_real_distribution<float> value(-2.0f, 2.0f);
    StnSampleDesc one = d;
    one.n = 1;
    for (int64_t i = 0; i < n; ++i)
    {
        if (fused)
        {
            fillTheta(rng, one, static_cast<char*>(coord.p) + i * coordPerItem * 4);
            continue;
        }
        for (int64_t k = 0; k < coordPerItem; ++k)
        {
            storeFloat(coord.p, STN_DTYPE_FLOAT32, static_cast<size_t>(i * coordPerItem + k),
                gridValue(rng, k % 2 == 0 ? inW : inH, false));
        }
    }
    // The planes of a block: [first, first + count) of the batch's channel planes.
    auto planesOf = [&](int64_t b, int64_t& first, int64_t& count) {
        int64_t const item = b % n;
        int64_t const y = b / n;
        first = item * c + y * chunk;
        count = std::min(chunk, c - y * chunk);
    };
    for (int64_t b : blocks)
    {
        int64_t first, count;
        planesOf(b, first, count);
        for (int64_t e = first * inPlane; e < (first + count) * inPlane; ++e)
        {
            storeFloat(x.p, xDtype, static_cast<size_t>(e), value(rng));
        }
        int64_t const item = b % n;
        int64_t const from = std::max(item * c, first - 1); // and the planes beside, in the same item
        int64_t const to = std::min((item + 1) * c, first + count + 1);
        fillSentinel(
            static_cast<char*>(out.p) + from * outPlane * xb, xDtype, static_cast<size_t>((to - from) * outPlane));
    }
    stn_emu_set_block_ranges(ranges.data(), static_cast<int32_t>(blocks.size()));
    Case const run{fused, d, 0, 0, 0, STN_SEMANTICS_ATEN_CUDA, name};
    int32_t const status = runCuda(run, x.p, coord.p, out.p);
    stn_emu_set_block_ranges(nullptr, 0);
    if (status != STN_OK)
    {
        fail(name + ": status " + std::to_string(status) + " " + stn_last_error());
        return;
    }
    uint64_t launchedBlocks = 0, launches = 0;
    uint32_t launchedThreads = 0;
    stn_emu_last_launch(&launchedBlocks, &launchedThreads, &launches);
    if (launchedBlocks != static_cast<uint64_t>(n * gridY))
    {
        fail(name + ": launched " + std::to_string(launchedBlocks) + " blocks, expected " + std::to_string(n * gridY)
            + " (the 32-bit kernel, " + std::to_string(P) + " positions per thread)");
        return;
    }
    auto selectedPlane = [&](int64_t plane) {
        return std::find(blocks.begin(), blocks.end(), blockOf(plane)) != blocks.end();
    };
    StnSampleDesc chunkDesc = one;
    for (int64_t b : blocks)
    {
        int64_t first, count;
        planesOf(b, first, count);
        int64_t const item = b % n;
        chunkDesc.c = count;
        std::vector<char> ref(static_cast<size_t>(count * outPlane) * xb);
        char const* xi = static_cast<char const*>(x.p) + first * inPlane * xb;
        char const* ci = static_cast<char const*>(coord.p) + item * coordPerItem * 4;
        int32_t const sr = runCpu(run, chunkDesc, xi, ci, ref.data());
        if (sr != STN_OK)
        {
            fail(name + ": CPU reference status " + std::to_string(sr));
            return;
        }
        char const* o = static_cast<char const*>(out.p) + first * outPlane * xb;
        for (int64_t e = 0; e < count * outPlane; ++e)
        {
            if (!sameValue(o, ref.data(), xDtype, static_cast<size_t>(e)))
            {
                fail(name + ": plane " + std::to_string(first + e / outPlane) + " position "
                    + std::to_string(e % outPlane) + ": got " + std::to_string(loadFloat(o, xDtype, e)) + ", reference "
                    + std::to_string(loadFloat(ref.data(), xDtype, e)));
                return;
            }
        }
        for (int64_t plane : {first - 1, first + count})
        {
            if (plane < item * c || plane >= (item + 1) * c || selectedPlane(plane))
            {
                continue;
            }
            for (int64_t e = plane * outPlane; e < (plane + 1) * outPlane; ++e)
            {
                if (loadBits(out.p, xDtype, static_cast<size_t>(e)) != sentinelBits(xDtype))
                {
                    fail(name + ": plane " + std::to_string(plane) + " of an unlaunched block was written");
                    return;
                }
            }
        }
    }
}

//! One channel plane of X past 2^31 elements: the only case left to the 64-bit kernels. Every
//! coordinate lands in the plane's last rows (4-D) or slices (5-D), all past element 2^31, which
//! alone are filled (the rest of the lazily mapped X reads as zeros, for the reference too); two
//! channels, so each mode's per-channel step is crossed as well.
void giantPlaneCase(bool fused, int32_t xDtype, int64_t rank, int32_t mode, int32_t padding)
{
    int64_t const side = rank == 4 ? 50000 : 1400; // a plane of 2.5e9 / 2.7e9 elements
    int64_t const depth = rank == 4 ? 1 : side;
    int64_t const c = 2;
    int64_t const outD = rank == 4 ? 1 : 4;
    StnSampleDesc const d{static_cast<int32_t>(rank), mode, padding, 0, 0, STN_SEMANTICS_DEVICE, xDtype,
        STN_DTYPE_FLOAT32, 1, c, depth, side, side, outD, 8, 16};
    std::string const name = std::string("giant plane ") + (fused ? "fused" : "grid") + " rank="
        + std::to_string(rank) + " x=" + std::to_string(xDtype) + " mode=" + std::to_string(mode);
    int64_t const plane = depth * side * side;
    int64_t const outPlane = outD * 8 * 16;
    int64_t const last = rank == 4 ? side : side * side; // elements per row (4-D) or slice (5-D)
    int64_t const filled = rank == 4 ? 8 : 4;              // rows / slices filled at the plane's end
    ++gChecks;
    if (stn_deploy::cuda::fitsIndex32(d, fused) || (plane - filled * last) <= (int64_t{1} << 31))
    {
        fail(name + ": not a 64-bit case with its filled rows past 2^31");
        return;
    }
    size_t const xb = elementBytes(xDtype);
    int64_t const coordPerItem = stn_deploy::cuda::coordsPerItem(d, fused);
    LazyMap x(static_cast<size_t>(c * plane) * xb);
    std::vector<float> coord(static_cast<size_t>(coordPerItem));
    std::vector<char> out(static_cast<size_t>(c * outPlane) * xb);
    std::vector<char> ref(out.size());
    if (x.p == nullptr)
    {
        return;
    }
    std::mt19937_64 rng(static_cast<uint64_t>(rank * 16 + mode));
    std::uniform_real_distribution<float> value(-2.0f, 2.0f);
    for (int64_t ch = 0; ch < c; ++ch)
    {
        for (int64_t e = (ch + 1) * plane - filled * last; e < (ch + 1) * plane; ++e)
        {
            storeFloat(x.p, xDtype, static_cast<size_t>(e), value(rng));
        }
    }
    // Normalised coordinates of the last axis' final pixels (align_corners = 0: pixel u at
    // (2u + 1) / side - 1): u in [side - filled + 2, side - 1] (bicubic's taps reach u - 1 and u + 2).
    std::uniform_real_distribution<float> lastPixels(
        static_cast<float>(side - filled + 2), static_cast<float>(side - 1));
    std::uniform_real_distribution<float> anywhere(-1.1f, 1.1f);
    auto nearEnd = [&]() { return (2.0f * lastPixels(rng) + 1.0f) / static_cast<float>(side) - 1.0f; };
    if (fused)
    {
        // The output's base grid spans [-1, 1] on every axis: theta scales the last axis (y in 4-D,
        // z in 5-D) to a few pixels and moves it to the end; the other axes map across the plane.
        float const s = 3.0f / static_cast<float>(side);
        float const t = 1.0f - 4.0f / static_cast<float>(side);
        if (rank == 4)
        {
            float const th[6] = {0.9f, 0.1f, 0.05f, 0.0f, s, t};
            std::copy(th, th + 6, coord.begin());
        }
        else
        {
            float const th[12] = {0.9f, 0.1f, 0.0f, 0.05f, 0.1f, 0.8f, 0.0f, -0.1f, 0.0f, 0.0f, s, t};
            std::copy(th, th + 12, coord.begin());
        }
    }
    else
    {
        for (int64_t k = 0; k < coordPerItem; ++k)
        {
            bool const lastAxis = k % (rank - 2) == rank - 3; // y of (x, y), z of (x, y, z)
            coord[static_cast<size_t>(k)] = lastAxis ? nearEnd() : anywhere(rng);
        }
    }
    fillSentinel(out.data(), xDtype, static_cast<size_t>(c * outPlane));
    Case const run{fused, d, 0, 0, 0, STN_SEMANTICS_ATEN_CUDA, name};
    int32_t const status = runCuda(run, x.p, coord.data(), out.data());
    if (status != STN_OK)
    {
        fail(name + ": status " + std::to_string(status) + " " + stn_last_error());
        return;
    }
    int32_t const sr = runCpu(run, d, x.p, coord.data(), ref.data());
    if (sr != STN_OK)
    {
        fail(name + ": CPU reference status " + std::to_string(sr));
        return;
    }
    int64_t nonzero = 0;
    for (int64_t e = 0; e < c * outPlane; ++e)
    {
        if (!sameValue(out.data(), ref.data(), xDtype, static_cast<size_t>(e)))
        {
            fail(name + ": output " + std::to_string(e) + ": got " + std::to_string(loadFloat(out.data(), xDtype, e))
                + ", reference " + std::to_string(loadFloat(ref.data(), xDtype, e)));
            return;
        }
        nonzero += loadFloat(ref.data(), xDtype, e) != 0.0f ? 1 : 0;
    }
    if (nonzero < c * outPlane / 2)
    {
        fail(name + ": only " + std::to_string(nonzero) + " outputs read the filled rows");
    }
}

void suiteWide()
{
    wideCase(false, STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT32, 2, 4, 4, 0);
    wideCase(false, STN_DTYPE_FLOAT16, STN_DTYPE_FLOAT16, 3, 3, 5, 0);
    wideCase(true, STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT32, 1, 4, 4, 0);
    wideCase(true, STN_DTYPE_BFLOAT16, STN_DTYPE_FLOAT32, 2, 5, 7, 1);
    wideCase(true, STN_DTYPE_FLOAT16, STN_DTYPE_FLOAT32, 3, 64, 64, 0);
    // Past 2^32 positions (and threads): where 32-bit position arithmetic wraps.
    wideCase(false, STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT32, 1, 4, 4, 1, /*beyond32=*/true);
    wideCase(true, STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT32, 2, 4, 8, 0, /*beyond32=*/true);
}

//! Theta past 2^31 elements with few positions (n = 4e8 items of one 1 x 1 output): the 32-bit
//! path would overflow theta's offsets though positions and grid-free planes fit. The last blocks
//! alone run; their items are checked against the CPU reference.
void thetaCase()
{
    int64_t const n = 400000003;
    StnSampleDesc const d{
        4, 0, 0, 0, 0, STN_SEMANTICS_DEVICE, STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT32, n, 1, 1, 2, 2, 1, 1, 1};
    std::string const name = "theta past 2^31 elements";
    ++gChecks;
    if (stn_deploy::cuda::fitsIndex32(d, /*fused=*/true))
    {
        fail(name + ": the 32-bit path chosen");
        return;
    }
    LazyMap x(static_cast<size_t>(n * 4) * 4);
    LazyMap theta(static_cast<size_t>(n * 6) * 4);
    LazyMap out(static_cast<size_t>(n) * 4);
    if (x.p == nullptr || theta.p == nullptr || out.p == nullptr)
    {
        return;
    }
    int64_t const blocks = (n + 255) / 256; // one position per item, per thread (the 64-bit kernel)
    int64_t const firstItem = (blocks - 2) * 256;
    uint64_t const ranges[2] = {static_cast<uint64_t>(blocks - 2), static_cast<uint64_t>(blocks)};
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<float> value(-2.0f, 2.0f);
    StnSampleDesc one = d;
    one.n = 1;
    for (int64_t i = firstItem; i < n; ++i)
    {
        for (int64_t k = 0; k < 4; ++k)
        {
            storeFloat(x.p, STN_DTYPE_FLOAT32, static_cast<size_t>(i * 4 + k), value(rng));
        }
        fillTheta(rng, one, static_cast<char*>(theta.p) + i * 6 * 4);
    }
    fillSentinel(static_cast<char*>(out.p) + firstItem * 4, STN_DTYPE_FLOAT32, static_cast<size_t>(n - firstItem));
    stn_emu_set_block_ranges(ranges, 1);
    int32_t const status = stn_affine_grid_sample_cuda(&d, x.p, theta.p, out.p, nullptr);
    stn_emu_set_block_ranges(nullptr, 0);
    if (status != STN_OK)
    {
        fail(name + ": status " + std::to_string(status) + " " + stn_last_error());
        return;
    }
    one.semantics = STN_SEMANTICS_ATEN_CUDA;
    for (int64_t i = firstItem; i < n; ++i)
    {
        float ref = 0.0f;
        char const* xi = static_cast<char const*>(x.p) + i * 4 * 4;
        char const* ti = static_cast<char const*>(theta.p) + i * 6 * 4;
        if (stn_affine_grid_sample_cpu(&one, xi, ti, &ref, 1) != STN_OK
            || !sameValue(static_cast<char const*>(out.p) + i * 4, &ref, STN_DTYPE_FLOAT32, 0))
        {
            fail(name + ": item " + std::to_string(i) + ": got "
                + std::to_string(loadFloat(static_cast<char const*>(out.p) + i * 4, STN_DTYPE_FLOAT32, 0))
                + ", reference " + std::to_string(ref));
            return;
        }
    }
}

void suitePlanes()
{
    // Items past 2^31 (X past 2^32) on the 32-bit path: specialised and generic kernels.
    planesCase(true, STN_DTYPE_FLOAT16, 2, 2621443, 32, 32, 16, 32, 0, 0);
    planesCase(false, STN_DTYPE_BFLOAT16, 2, 2621443, 8, 8, 16, 32, 0, 1);
    planesCase(false, STN_DTYPE_FLOAT32, 1, 9000007, 8, 8, 16, 16, 0, 0);
    planesCase(true, STN_DTYPE_FLOAT32, 1, 9000007, 8, 8, 16, 16, 1, 2);
    thetaCase();
    // A plane past 2^31: the 64-bit kernels, every mode.
    for (bool fused : {false, true})
    {
        giantPlaneCase(fused, STN_DTYPE_FLOAT16, 4, 0, 0);
        giantPlaneCase(fused, STN_DTYPE_BFLOAT16, 4, 1, 1);
        giantPlaneCase(fused, STN_DTYPE_FLOAT16, 4, 2, 0);
        giantPlaneCase(fused, STN_DTYPE_FLOAT16, 5, 0, 0);
        giantPlaneCase(fused, STN_DTYPE_BFLOAT16, 5, 1, 0);
    }
    giantPlaneCase(false, STN_DTYPE_FLOAT32, 4, 2, 1);
}

// ---- CUDA error reporting -----------------------------------------------------------------------

void expectError(std::string const& name, int32_t status, int32_t code, std::vector<char const*> const& words)
{
    ++gChecks;
    std::string const message = stn_last_error();
    if (status != code)
    {
        fail(name + ": status " + std::to_string(status) + ", expected " + std::to_string(code) + " (" + message + ")");
        return;
    }
    for (char const* w : words)
    {
        if (message.find(w) == std::string::npos)
        {
            fail(name + ": message lacks '" + w + "': " + message);
            return;
        }
    }
}

void suiteErrors()
{
    StnSampleDesc const d{4, 0, 0, 0, 0, STN_SEMANTICS_DEVICE, STN_DTYPE_FLOAT32, STN_DTYPE_FLOAT32, 1, 1, 1, 2, 2, 1, 2,
        2};
    float x[4] = {1, 2, 3, 4};
    float grid[8] = {};
    float out[4];
    stn_emu_set_device_error(cudaErrorInsufficientDriver);
    expectError("old driver", stn_grid_sample_cuda(&d, x, grid, out, nullptr), STN_ERROR_NO_CUDA,
        {"driver is too old", "needs driver >= ", stn_cuda_min_driver(), "cudaErrorInsufficientDriver", "--cuda 12"});
    ++gChecks;
    // The minimum driver follows the CUDA runtime built against (13: r580; 12: r525, minor-version
    // compatibility): this suite runs with both toolkits' headers.
    if (std::string(stn_cuda_min_driver()) != (CUDART_VERSION >= 13000 ? "580.65.06" : "525.60.13")
        || stn_cuda_runtime_version() != CUDART_VERSION)
    {
        fail(std::string("minimum driver ") + stn_cuda_min_driver() + " for CUDA runtime "
            + std::to_string(stn_cuda_runtime_version()));
    }
    stn_emu_set_device_error(cudaErrorNoDevice);
    expectError("no device", stn_affine_grid_sample_cuda(&d, x, grid, out, nullptr), STN_ERROR_NO_CUDA,
        {"no CUDA device", "cudaErrorNoDevice: no CUDA-capable device is detected"});
    stn_emu_set_device_error(cudaSuccess);
    ++gChecks;
    if (cudaGetLastError() != cudaSuccess)
    {
        fail("a failed device query left an error pending");
    }
    // A non-sticky error of earlier, unrelated work: cleared, and the launch goes ahead.
    stn_emu_set_pending_error(cudaErrorInvalidConfiguration);
    ++gChecks;
    if (stn_grid_sample_cuda(&d, x, grid, out, nullptr) != STN_OK)
    {
        fail(std::string("a stale non-sticky error failed the launch: ") + stn_last_error());
    }
    // A sticky fault of an earlier kernel: not launched, reported as what it is.
    stn_emu_set_pending_error(cudaErrorIllegalAddress);
    uint64_t b0, l0, b1, l1;
    uint32_t t0, t1;
    stn_emu_last_launch(&b0, &t0, &l0);
    expectError("sticky fault", stn_grid_sample_cuda(&d, x, grid, out, nullptr), STN_ERROR_CUDA,
        {"not attempted", "earlier CUDA fault", "sticky", "cudaErrorIllegalAddress: an illegal memory access"});
    stn_emu_last_launch(&b1, &t1, &l1);
    ++gChecks;
    if (l1 != l0)
    {
        fail("a launch was attempted on a faulted context");
    }
    stn_emu_set_pending_error(cudaSuccess); // a fresh context
    ++gChecks;
    if (stn_grid_sample_cuda(&d, x, grid, out, nullptr) != STN_OK)
    {
        fail(std::string("launch after the fault was cleared: ") + stn_last_error());
    }
    // A GPU the library has no code for: the launch's own error, naming what was built.
    stn_emu_fail_next_launch(cudaErrorNoKernelImageForDevice);
    expectError("no kernel image", stn_affine_grid_sample_cuda(&d, x, grid, out, nullptr), STN_ERROR_CUDA,
        {"STNAffineGridSample kernel launch failed: cudaErrorNoKernelImageForDevice: no kernel image",
            "has code for host-emulation", "--archs"});
    ++gChecks;
    if (cudaGetLastError() != cudaSuccess)
    {
        fail("a failed launch left its error pending");
    }
    // A launch the runtime rejects: the launch's own error.
    stn_emu_set_pending_error(cudaSuccess);
    {
        dim3 const tooMany(1);
        dim3 const block(2048);
        stn_emu::launch(tooMany, block, 0, nullptr, +[](int) {})(0);
        ++gChecks;
        if (cudaGetLastError() != cudaErrorInvalidConfiguration)
        {
            fail("a block of 2048 threads was not rejected");
        }
    }
}

// ---- the shim itself: barriers, shared memory, warp intrinsics ---------------------------------

//! What a later kernel may rely on (a theta tile in shared memory, warp reductions): checked here
//! so the emulation is known to honour it before a shipped kernel uses it.
void suiteShim()
{
    // __syncthreads: phases between barriers with block-shared storage.
    {
        static int order[128];
        static int next;
        next = 0;
        auto kernel = +[](int* result) {
            __shared__ int tile[32];
            tile[threadIdx.x] = static_cast<int>(threadIdx.x) * 10;
            order[next++] = static_cast<int>(threadIdx.x);
            __syncthreads();
            order[next++] = 100 + static_cast<int>(threadIdx.x);
            result[blockIdx.x * 32 + threadIdx.x] = tile[31 - threadIdx.x] + static_cast<int>(blockIdx.x);
        };
        int result[64];
        std::memset(result, 0, sizeof(result));
        stn_emu::launch(dim3(2), dim3(32), 0, nullptr, kernel)(result);
        ++gChecks;
        bool ok = true;
        for (int b = 0; b < 2; ++b)
        {
            for (int t = 0; t < 32; ++t)
            {
                ok = ok && result[b * 32 + t] == (31 - t) * 10 + b;
            }
        }
        for (int t = 0; t < 32; ++t)
        {
            // Block by block; in each, every thread's first phase before any thread's second.
            ok = ok && order[t] == t && order[32 + t] == 100 + t && order[64 + t] == t && order[96 + t] == 100 + t;
        }
        if (!ok)
        {
            fail("__syncthreads / __shared__ emulation");
        }
    }
    // Warp shuffles: a reduction, a butterfly, a segmented broadcast, a scan; two warps per block.
    {
        auto kernel = +[](int* out) {
            int const lane = static_cast<int>(threadIdx.x % 32);
            int const v = lane + 1 + 100 * static_cast<int>(threadIdx.x / 32);
            int sum = v;
            for (int d = 16; d > 0; d /= 2)
            {
                sum += __shfl_down_sync(0xffffffffu, sum, d);
            }
            int all = v;
            for (int m = 1; m < 32; m *= 2)
            {
                all += __shfl_xor_sync(0xffffffffu, all, m);
            }
            int const fifth = __shfl_sync(0xffffffffu, v, 5, 16);
            int scan = v;
            for (int d = 1; d < 32; d *= 2)
            {
                int const up = __shfl_up_sync(0xffffffffu, scan, d);
                scan += lane >= d ? up : 0;
            }
            unsigned int const ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
            int const t = static_cast<int>(threadIdx.x);
            out[5 * t] = sum;
            out[5 * t + 1] = all;
            out[5 * t + 2] = fifth;
            out[5 * t + 3] = scan;
            out[5 * t + 4] = static_cast<int>(ballot);
        };
        int out[5 * 64];
        stn_emu::launch(dim3(1), dim3(64), 0, nullptr, kernel)(out);
        bool ok = true;
        for (int t = 0; t < 64; ++t)
        {
            int const lane = t % 32;
            int const base = 100 * (t / 32);
            int const total = 528 + 32 * base; // 1 + ... + 32, plus the warp's offset per lane
            ok = ok && out[5 * t + 1] == total;
            ok = ok && (lane != 0 || out[5 * t] == total);
            ok = ok && out[5 * t + 2] == (lane < 16 ? 6 : 22) + base;
            ok = ok && out[5 * t + 3] == (lane + 1) * (lane + 2) / 2 + (lane + 1) * base;
            ok = ok && static_cast<unsigned int>(out[5 * t + 4]) == 0x49249249u;
        }
        ++gChecks;
        if (!ok)
        {
            fail("warp shuffle / ballot emulation");
        }
    }
    // A partial last warp (40 threads: 32 + 8 lanes) and a theta-once-per-block pattern: thread 0
    // loads, the block waits, every thread reads; then a per-warp vote.
    {
        auto kernel = +[](float const* theta, float* out) {
            __shared__ float tile[6];
            if (threadIdx.x < 6)
            {
                tile[threadIdx.x] = theta[blockIdx.x * 6 + threadIdx.x];
            }
            __syncthreads();
            float acc = 0.0f;
            for (int k = 0; k < 6; ++k)
            {
                acc += tile[k];
            }
            unsigned int const ballot = __ballot_sync(0xffffffffu, 1);
            out[blockIdx.x * 40 + threadIdx.x] = acc + static_cast<float>(__builtin_popcount(ballot));
        };
        float theta[12] = {1, 2, 3, 4, 5, 6, 10, 20, 30, 40, 50, 60};
        float out[80];
        stn_emu::launch(dim3(2), dim3(40), 0, nullptr, kernel)(theta, out);
        bool ok = true;
        for (int b = 0; b < 2; ++b)
        {
            for (int t = 0; t < 40; ++t)
            {
                ok = ok && out[b * 40 + t] == (b == 0 ? 21.0f : 210.0f) + (t < 32 ? 32.0f : 8.0f);
            }
        }
        ++gChecks;
        if (!ok)
        {
            fail("shared tile + __syncthreads + partial-warp ballot emulation");
        }
    }
}

// ---- units: division-free arithmetic against the divisions -----------------------------------------

//! affine_grid's linspace point as the definition writes it, with its two IEEE divisions.
float baseByDivision(int64_t i, int64_t n, bool alignCorners)
{
    if (n <= 1)
    {
        return 0.0f;
    }
    float const step = 2.0f / static_cast<float>(n - 1);
    float v = (i < n / 2) ? -1.0f + step * static_cast<float>(i) : 1.0f - step * static_cast<float>(n - 1 - i);
    return alignCorners ? v : (v * static_cast<float>(n - 1)) / static_cast<float>(n);
}

template <typename I>
bool baseAxisAgrees(int64_t n, int64_t i, bool alignCorners)
{
    ++gChecks;
    auto const axis = stn_deploy::math::BaseAxis<I>::make(static_cast<I>(n), alignCorners);
    float const got = axis.at(static_cast<I>(i));
    float const want = baseByDivision(i, n, alignCorners);
    if (loadBits(&got, STN_DTYPE_FLOAT32, 0) == loadBits(&want, STN_DTYPE_FLOAT32, 0))
    {
        return true;
    }
    char buf[200];
    std::snprintf(buf, sizeof(buf), "base axis n=%lld i=%lld align_corners=%d (index %zu bytes): %a, division %a",
        static_cast<long long>(n), static_cast<long long>(i), alignCorners ? 1 : 0, sizeof(I), got, want);
    fail(buf);
    return false;
}

template <typename U>
bool divisorAgrees(U d, U x)
{
    ++gChecks;
    auto const f = stn_deploy::cuda::FastDivisor<U>::make(d);
    U q = 0, r = 0;
    f(x, q, r);
    if (q == x / d && r == x % d)
    {
        return true;
    }
    fail("fast divisor (" + std::to_string(8 * sizeof(U)) + "-bit) " + std::to_string(x) + " / " + std::to_string(d)
        + ": " + std::to_string(q) + " rem " + std::to_string(r));
    return false;
}

//! Small divisors at boundary and random dividends, then sampled divisors (powers of two and
//! their neighbours first), all below 2^(B-1) as the kernels use them.
template <typename U>
void checkDivisors(std::mt19937_64& rng)
{
    U const top = static_cast<U>(~U{0}) >> 1;
    std::uniform_int_distribution<U> dividend(0, top);
    for (U d = 1; d <= 4096; ++d)
    {
        for (U x : {U{0}, U{1}, U(d - 1), d, U(d + 1), U(2 * d - 1), top, U(top - 1), U(top - top % d),
                 U(top - top % d - 1), dividend(rng), dividend(rng), dividend(rng), dividend(rng)})
        {
            if (!divisorAgrees(d, x))
            {
                break;
            }
        }
    }
    std::uniform_int_distribution<U> divisor(4097, top);
    int const bits = 8 * sizeof(U) - 1;
    for (int k = 0; k < 20000; ++k)
    {
        U const d = k < 2 * bits ? U((U{1} << (k / 2 + 1)) - (k % 2)) : divisor(rng);
        if (d == 0 || d > top)
        {
            continue;
        }
        U const m = top / d * d; // the largest multiple of d that is a valid dividend
        for (U x : {U(d - 1), d, m, U(m - 1), top, dividend(rng), dividend(rng)})
        {
            divisorAgrees(d, x);
        }
    }
}

void suiteUnits()
{
    // Every point of every axis length up to 4096, both alignments, both index types (one failure
    // stops a length: the report stays short).
    for (int64_t n = 1; n <= 4096; ++n)
    {
        for (int64_t i = 0; i < n; ++i)
        {
            if (!baseAxisAgrees<int32_t>(n, i, false) || !baseAxisAgrees<int64_t>(n, i, false)
                || !baseAxisAgrees<int32_t>(n, i, true))
            {
                break;
            }
        }
    }
    std::mt19937_64 rng(17);
    std::uniform_int_distribution<int64_t> length(4097, (int64_t{1} << 31) - 1);
    for (int k = 0; k < 2000; ++k)
    {
        int64_t const n = k < 1000 ? (int64_t{1} << (12 + k % 19)) + (k / 19) - 26 : length(rng);
        std::uniform_int_distribution<int64_t> point(0, n - 1);
        for (int64_t i : {int64_t{0}, n / 2 - 1, n / 2, n - 1, point(rng), point(rng), point(rng), point(rng)})
        {
            if (i >= 0 && i < n)
            {
                baseAxisAgrees<int32_t>(n, i, false);
                baseAxisAgrees<int64_t>(n, i, true);
            }
        }
    }
    // The multiply-high divisors of both index widths.
    checkDivisors<uint32_t>(rng);
    checkDivisors<uint64_t>(rng);
}

} // namespace

int main(int argc, char** argv)
{
    std::vector<std::string> suites;
    for (int i = 1; i < argc; ++i)
    {
        if (std::string(argv[i]) == "--first-failure")
        {
            gStopAtFirst = true;
            continue;
        }
        suites.emplace_back(argv[i]);
    }
    if (suites.empty())
    {
        suites = {"matrix", "stride", "wide", "planes", "errors", "shim", "units"};
    }
    int total = 0;
    for (std::string const& s : suites)
    {
        int const before = gFailures;
        gChecks = 0;
        if (s == "matrix")
        {
            suiteMatrix(0);
        }
        else if (s == "stride")
        {
            suiteMatrix(1);
        }
        else if (s == "wide")
        {
            suiteWide();
        }
        else if (s == "planes")
        {
            suitePlanes();
        }
        else if (s == "errors")
        {
            suiteErrors();
        }
        else if (s == "shim")
        {
            suiteShim();
        }
        else if (s == "units")
        {
            suiteUnits();
        }
        else
        {
            std::printf("unknown suite %s (matrix, stride, wide, planes, errors, shim, units)\n", s.c_str());
            return 2;
        }
        std::printf("%s: %d checks, %d failures\n", s.c_str(), gChecks, gFailures - before);
        total += gFailures - before;
    }
    std::fflush(stdout);
    return total == 0 ? 0 : 1;
}
