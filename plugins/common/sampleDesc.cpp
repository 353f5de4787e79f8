/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * sampleDesc.cpp: descriptor validation and the C API's thread-local error message.
 */
#include "sampleDesc.h"

#include <cstdint>
#include <limits>

namespace stn_deploy
{
namespace
{
thread_local std::string tLastError;

bool validDtype(int32_t t)
{
    return t == STN_DTYPE_FLOAT32 || t == STN_DTYPE_FLOAT16 || t == STN_DTYPE_BFLOAT16;
}

//! a * b * ... without overflowing int64 (false on overflow or a negative factor).
bool checkedVolume(int64_t const* dims, int32_t n, int64_t& out)
{
    int64_t v = 1;
    for (int32_t i = 0; i < n; ++i)
    {
        if (dims[i] < 0)
        {
            return false;
        }
        if (dims[i] != 0 && v > std::numeric_limits<int64_t>::max() / dims[i])
        {
            return false;
        }
        v *= dims[i];
    }
    out = v;
    return true;
}
} // namespace

int32_t setLastError(int32_t code, std::string const& message)
{
    tLastError = message;
    return code;
}

std::string validateDesc(StnSampleDesc const& d, bool fused)
{
    if (d.rank != 4 && d.rank != 5)
    {
        return "rank must be 4 (N,C,H,W) or 5 (N,C,D,H,W), got " + std::to_string(d.rank);
    }
    if (d.interpolation_mode < 0 || d.interpolation_mode > 2)
    {
        return "interpolation_mode must be 0 (bilinear), 1 (nearest) or 2 (bicubic), got "
            + std::to_string(d.interpolation_mode);
    }
    if (d.interpolation_mode == 2 && d.rank == 5)
    {
        return "interpolation_mode=2 (bicubic) supports 4-D input only (as PyTorch)";
    }
    if (d.padding_mode < 0 || d.padding_mode > 2)
    {
        return "padding_mode must be 0 (zeros), 1 (border) or 2 (reflection), got " + std::to_string(d.padding_mode);
    }
    if (d.align_corners != 0 && d.align_corners != 1)
    {
        return "align_corners must be 0 or 1, got " + std::to_string(d.align_corners);
    }
    if (fused)
    {
        if (d.transform != 0 && d.transform != 1)
        {
            return "transform must be 0 (affine) or 1 (projective), got " + std::to_string(d.transform);
        }
        if (d.transform == 1 && d.rank != 4)
        {
            return "transform=1 (projective) needs a 4-D input";
        }
    }
    if (d.semantics < -1 || d.semantics > 2)
    {
        return "semantics must be -1, 0, 1 or 2, got " + std::to_string(d.semantics);
    }
    if (!validDtype(d.x_dtype))
    {
        return "x_dtype must be float32 (0), float16 (1) or bfloat16 (2), got " + std::to_string(d.x_dtype);
    }
    if (d.coord_dtype != STN_DTYPE_FLOAT32 && d.coord_dtype != d.x_dtype)
    {
        return std::string(fused ? "theta" : "grid") + " dtype must be float32 or the dtype of X, got "
            + std::to_string(d.coord_dtype);
    }
    if (d.rank == 4 && (d.in_d != 1 || d.out_d != 1))
    {
        return "in_d and out_d must be 1 for a 4-D input";
    }
    int64_t const inDims[5] = {d.n, d.c, d.in_d, d.in_h, d.in_w};
    int64_t const outDims[5] = {d.n, d.c, d.out_d, d.out_h, d.out_w};
    int64_t const gridDims[5] = {d.n, d.out_d, d.out_h, d.out_w, 3};
    int64_t const thetaDims[5] = {d.n, 12, 1, 1, 1};
    int64_t inVolume = 0;
    int64_t outVolume = 0;
    int64_t gridVolume = 0;
    for (int32_t i = 0; i < 5; ++i)
    {
        if (inDims[i] < 0 || outDims[i] < 0)
        {
            return "shape dimensions must be >= 0";
        }
    }
    if (!checkedVolume(inDims, 5, inVolume) || !checkedVolume(outDims, 5, outVolume)
        || !checkedVolume(gridDims, 5, gridVolume) || !checkedVolume(thetaDims, 5, gridVolume))
    {
        return "tensor size overflows int64";
    }
    if (inVolume == 0 && outVolume > 0)
    {
        return "input X is empty but the output is not";
    }
    return {};
}

math::SampleOptions sampleOptions(StnSampleDesc const& d, bool cuda)
{
    math::SampleOptions o{};
    o.interpolation = static_cast<math::Interpolation>(d.interpolation_mode);
    o.padding = static_cast<math::Padding>(d.padding_mode);
    o.alignCorners = d.align_corners != 0;
    if (d.semantics >= 0)
    {
        o.semantics = static_cast<math::Semantics>(d.semantics);
    }
    else if (cuda)
    {
        o.semantics = math::Semantics::kATEN_CUDA;
    }
    else
    {
        o.semantics = d.rank == 4 ? math::Semantics::kATEN_CPU_4D : math::Semantics::kATEN_CPU_5D;
    }
    return o;
}

} // namespace stn_deploy

extern "C" STN_API char const* stn_last_error(void)
{
    return stn_deploy::tLastError.c_str();
}

extern "C" STN_API int32_t stn_abi_version(void)
{
    return STN_ABI_VERSION;
}

extern "C" STN_API int32_t stn_validate_desc(StnSampleDesc const* desc, int32_t fused)
{
    if (desc == nullptr)
    {
        return stn_deploy::setLastError(STN_ERROR_INVALID_ARGUMENT, "desc is NULL");
    }
    std::string const why = stn_deploy::validateDesc(*desc, fused != 0);
    return why.empty() ? STN_OK : stn_deploy::setLastError(STN_ERROR_INVALID_ARGUMENT, why);
}
