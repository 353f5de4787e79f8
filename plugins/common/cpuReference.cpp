/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * cpuReference.cpp: the CPU reference of STNGridSample and STNAffineGridSample: the maths header
 * (gridSampleMath.h) compiled for the host, behind the C entry points of stnKernelApi.h.
 * Output positions are split across std::threads when num_threads > 1.
 */
#include "gridSampleMath.h"
#include "sampleDesc.h"
#include "stnKernelApi.h"

#include <algorithm>
#include <exception>
#include <thread>
#include <type_traits>
#include <vector>

namespace stn_deploy
{
namespace
{
using math::BFloat16;
using math::Half;

//! Runs body(begin, end) over [0, total) on up to numThreads threads.
template <typename F>
void parallelFor(int64_t total, int32_t numThreads, F const& body)
{
    constexpr int64_t kMinPerThread = 4096;
    int64_t const threads = std::max<int64_t>(1, std::min<int64_t>(numThreads, total / kMinPerThread));
    if (threads <= 1)
    {
        body(int64_t{0}, total);
        return;
    }
    std::vector<std::thread> pool;
    int64_t const chunk = (total + threads - 1) / threads;
    for (int64_t t = 1; t < threads; ++t)
    {
        int64_t const b = t * chunk;
        int64_t const e = std::min(total, b + chunk);
        if (b < e)
        {
            pool.emplace_back([&body, b, e] { body(b, e); });
        }
    }
    body(int64_t{0}, std::min(total, chunk));
    for (auto& th : pool)
    {
        th.join();
    }
}

//! body(std::integral_constant<int, rank>{}): one loop per rank, a compile-time constant (with
//! both samplers in one loop GCC inlined the 3-D one there and the 2-D path ran ~6 % slower).
template <typename F>
void withRank(int32_t rank, F const& body)
{
    if (rank == 4)
    {
        body(std::integral_constant<int, 4>{});
    }
    else
    {
        body(std::integral_constant<int, 5>{});
    }
}

template <typename T, typename G>
void gridSampleCpu(StnSampleDesc const& d, T const* x, G const* grid, T* out, int32_t numThreads)
{
    math::SampleOptions const o = sampleOptions(d, /*cuda=*/false);
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const inPlane = d.in_d * d.in_h * d.in_w;
    int64_t const total = d.n * outPlane;
    withRank(d.rank, [&](auto rank) {
        constexpr int kRank = decltype(rank)::value;
        parallelFor(total, numThreads, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i)
            {
                int64_t const n = i / outPlane;
                int64_t const pos = i - n * outPlane;
                T const* in = x + n * d.c * inPlane;
                math::PlaneWriter<T, 1> const write{out + n * d.c * outPlane + pos, outPlane};
                G const* g = grid + i * (kRank - 2);
                float const gx[1] = {math::toFloat(g[0])};
                float const gy[1] = {math::toFloat(g[1])};
                if constexpr (kRank == 4)
                {
                    math::sample2d<1>(in, d.c, d.in_h, d.in_w, gx, gy, o, write);
                }
                else
                {
                    float const gz[1] = {math::toFloat(g[2])};
                    math::sample3d<1>(in, d.c, d.in_d, d.in_h, d.in_w, gx, gy, gz, o, write);
                }
            }
        });
    });
}

template <typename T, typename G>
void affineGridSampleCpu(StnSampleDesc const& d, T const* x, G const* theta, T* out, int32_t numThreads)
{
    math::SampleOptions const o = sampleOptions(d, /*cuda=*/false);
    int64_t const outPlane = d.out_d * d.out_h * d.out_w;
    int64_t const inPlane = d.in_d * d.in_h * d.in_w;
    int64_t const total = d.n * outPlane;
    int32_t const nt = thetaSize(d);
    bool const ac = d.align_corners != 0;
    bool const projective = d.transform == 1;
    // The base grid's axes as tables: each point once per call, not once per output position.
    auto const axisTable = [ac](int64_t n) {
        auto const axis = math::BaseAxis<int64_t>::make(n, ac);
        std::vector<float> table(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i)
        {
            table[static_cast<size_t>(i)] = axis.at(i);
        }
        return table;
    };
    std::vector<float> const baseX = axisTable(d.out_w);
    std::vector<float> const baseY = axisTable(d.out_h);
    std::vector<float> const baseZ = axisTable(d.out_d);
    withRank(d.rank, [&](auto rank) {
        constexpr int kRank = decltype(rank)::value;
        parallelFor(total, numThreads, [&](int64_t begin, int64_t end) {
            int64_t cachedN = -1;
            float t[12] = {};
            for (int64_t i = begin; i < end; ++i)
            {
                int64_t const n = i / outPlane;
                int64_t const pos = i - n * outPlane;
                if (n != cachedN)
                {
                    for (int32_t k = 0; k < nt; ++k)
                    {
                        t[k] = math::toFloat(theta[n * nt + k]);
                    }
                    cachedN = n;
                }
                T const* in = x + n * d.c * inPlane;
                math::PlaneWriter<T, 1> const write{out + n * d.c * outPlane + pos, outPlane};
                int64_t const w = pos % d.out_w;
                int64_t const h = (pos / d.out_w) % d.out_h;
                float const bx = baseX[static_cast<size_t>(w)];
                float const by = baseY[static_cast<size_t>(h)];
                if constexpr (kRank == 4)
                {
                    float gx[1], gy[1];
                    math::transformPoint2d(t, projective, bx, by, gx[0], gy[0]);
                    math::sample2d<1>(in, d.c, d.in_h, d.in_w, gx, gy, o, write);
                }
                else
                {
                    int64_t const z = pos / (d.out_w * d.out_h);
                    float const bz = baseZ[static_cast<size_t>(z)];
                    float gx[1], gy[1], gz[1];
                    math::transformPoint3d(t, bx, by, bz, gx[0], gy[0], gz[0]);
                    math::sample3d<1>(in, d.c, d.in_d, d.in_h, d.in_w, gx, gy, gz, o, write);
                }
            }
        });
    });
}

//! Dispatch on (X dtype, coordinate dtype): coordinates are float32 or the dtype of X.
template <template <typename, typename> class Op, typename... Args>
void dispatch(StnSampleDesc const& d, void const* x, void const* coords, void* out, Args... args)
{
    switch (d.x_dtype)
    {
    case STN_DTYPE_FLOAT32:
        Op<float, float>::run(d, x, coords, out, args...);
        return;
    case STN_DTYPE_FLOAT16:
        if (d.coord_dtype == STN_DTYPE_FLOAT32)
        {
            Op<Half, float>::run(d, x, coords, out, args...);
        }
        else
        {
            Op<Half, Half>::run(d, x, coords, out, args...);
        }
        return;
    case STN_DTYPE_BFLOAT16:
        if (d.coord_dtype == STN_DTYPE_FLOAT32)
        {
            Op<BFloat16, float>::run(d, x, coords, out, args...);
        }
        else
        {
            Op<BFloat16, BFloat16>::run(d, x, coords, out, args...);
        }
        return;
    }
}

template <typename T, typename G>
struct GridSampleOp
{
    static void run(StnSampleDesc const& d, void const* x, void const* g, void* out, int32_t threads)
    {
        gridSampleCpu<T, G>(d, static_cast<T const*>(x), static_cast<G const*>(g), static_cast<T*>(out), threads);
    }
};

template <typename T, typename G>
struct AffineGridSampleOp
{
    static void run(StnSampleDesc const& d, void const* x, void const* t, void* out, int32_t threads)
    {
        affineGridSampleCpu<T, G>(
            d, static_cast<T const*>(x), static_cast<G const*>(t), static_cast<T*>(out), threads);
    }
};

template <template <typename, typename> class Op>
int32_t runCpu(StnSampleDesc const* desc, void const* x, void const* coords, void* out, int32_t numThreads, bool fused)
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
    int64_t const outVolume = desc->n * desc->c * desc->out_d * desc->out_h * desc->out_w;
    if (outVolume == 0)
    {
        return STN_OK;
    }
    if (x == nullptr || coords == nullptr || out == nullptr)
    {
        return setLastError(STN_ERROR_INVALID_ARGUMENT, "a data pointer is NULL");
    }
    try
    {
        dispatch<Op>(*desc, x, coords, out, numThreads);
    }
    catch (std::exception const& e)
    {
        return setLastError(STN_ERROR_INVALID_ARGUMENT, std::string("CPU reference failed: ") + e.what());
    }
    return STN_OK;
}

} // namespace
} // namespace stn_deploy

extern "C" STN_API int32_t stn_grid_sample_cpu(
    StnSampleDesc const* desc, void const* x, void const* grid, void* out, int32_t num_threads)
{
    return stn_deploy::runCpu<stn_deploy::GridSampleOp>(desc, x, grid, out, num_threads, false);
}

extern "C" STN_API int32_t stn_affine_grid_sample_cpu(
    StnSampleDesc const* desc, void const* x, void const* theta, void* out, int32_t num_threads)
{
    return stn_deploy::runCpu<stn_deploy::AffineGridSampleOp>(desc, x, theta, out, num_threads, true);
}
