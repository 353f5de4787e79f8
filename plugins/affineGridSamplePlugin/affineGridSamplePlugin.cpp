/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * affineGridSamplePlugin.cpp: STNAffineGridSample, IPluginV3 + creator. Build-time methods are CPU only.
 * Output spatial size comes from the fields out_d (0 for 4-D), out_h, out_w.
 */
#include "affineGridSamplePlugin.h"

#include "affineGridSampleKernel.h"
#include "sampleDesc.h"

namespace stn_deploy
{
namespace plugin
{
// ---------------------------------------------------------------------------------------- plugin

AffineGridSamplePlugin::AffineGridSamplePlugin(AffineGridSampleFields const& fields)
    : StnPluginBase(fields)
{
}

std::vector<IntField> AffineGridSamplePlugin::fieldSpecs()
{
    constexpr int32_t kMAX = 2147483647;
    std::vector<IntField> specs = sampleFieldSpecs();
    specs.insert(specs.end(), {
        {"transform", 0, 1, "must be 0 (affine) or 1 (projective)", 0},
        {"out_d", 0, kMAX, "must be 0 (4-D input) or the output depth >= 1", 0},
        {"out_h", 1, kMAX, "must be the output height >= 1", -1},
        {"out_w", 1, kMAX, "must be the output width >= 1", -1},
    });
    return specs;
}

bool AffineGridSamplePlugin::checkFields(std::vector<IntField> const& specs, AffineGridSampleFields const& f)
{
    for (int32_t i = 5; i <= 6; ++i)
    {
        if (specs[i].value < 0)
        {
            logError(kNAME, std::string("field '") + specs[i].name + "' is missing (" + specs[i].meaning + ")");
            return false;
        }
    }
    if (f.transform == 1 && f.outD != 0)
    {
        logError(kNAME, "field 'transform' = 1 (projective) needs a 4-D input (out_d = 0), got out_d = "
                + std::to_string(f.outD));
        return false;
    }
    if (f.interpolationMode == 2 && f.outD != 0)
    {
        logError(kNAME, "field 'interpolation_mode' = 2 (bicubic) supports 4-D input only (out_d = 0), got out_d = "
                + std::to_string(f.outD));
        return false;
    }
    return true;
}

int32_t AffineGridSamplePlugin::launch(
    StnSampleDesc const& desc, void const* x, void const* theta, void* out, cudaStream_t stream)
{
    return launchAffineGridSample(desc, x, theta, out, stream);
}

int32_t AffineGridSamplePlugin::outputShapes(nvinfer1::DimsExprs const& x, nvinfer1::DimsExprs const& t,
    nvinfer1::DimsExprs& o, nvinfer1::IExprBuilder& exprBuilder) const
{
    if (x.nbDims != 4 && x.nbDims != 5)
    {
        logError(kNAME, "input 'X' must have rank 4 [N,C,H,W] or 5 [N,C,D,H,W], got rank " + std::to_string(x.nbDims));
        return -1;
    }
    if (x.nbDims == 4 && mFields.outD != 0)
    {
        logError(kNAME, "field 'out_d' = " + std::to_string(mFields.outD) + " must be 0 for a 4-D input 'X'");
        return -1;
    }
    if (x.nbDims == 5 && mFields.outD == 0)
    {
        logError(kNAME, "field 'out_d' must be >= 1 for a 5-D input 'X'");
        return -1;
    }
    if (t.nbDims != 3)
    {
        logError(kNAME, "input 'theta' must have rank 3 ([N,2,3], [N,3,3] or [N,3,4]), got rank "
                + std::to_string(t.nbDims));
        return -1;
    }
    int64_t const wantRows = (x.nbDims == 4 && mFields.transform == 0) ? 2 : 3;
    int64_t const wantCols = x.nbDims == 5 ? 4 : 3;
    int64_t const rows = constantOr(t.d[1]);
    int64_t const cols = constantOr(t.d[2]);
    if ((rows >= 0 && rows != wantRows) || (cols >= 0 && cols != wantCols))
    {
        logError(kNAME, "input 'theta' must be [N," + std::to_string(wantRows) + "," + std::to_string(wantCols)
                + "] for transform=" + std::to_string(mFields.transform) + " and a " + std::to_string(x.nbDims)
                + "-D input, got [N," + std::to_string(rows) + "," + std::to_string(cols) + "]");
        return -1;
    }
    int64_t const nx = constantOr(x.d[0]);
    int64_t const nt = constantOr(t.d[0]);
    if (nx >= 0 && nt >= 0 && nx != nt)
    {
        logError(kNAME, "inputs 'X' and 'theta' must have the same batch size, got " + std::to_string(nx) + " and "
                + std::to_string(nt));
        return -1;
    }
    o.nbDims = x.nbDims;
    o.d[0] = x.d[0];
    o.d[1] = x.d[1];
    int32_t i = 2;
    if (x.nbDims == 5)
    {
        o.d[i++] = exprBuilder.constant(mFields.outD);
    }
    o.d[i++] = exprBuilder.constant(mFields.outH);
    o.d[i] = exprBuilder.constant(mFields.outW);
    for (int32_t k = 0; k < o.nbDims; ++k)
    {
        if (o.d[k] == nullptr)
        {
            logError(kNAME, "could not build the output shape");
            return -1;
        }
    }
    return 0;
}

std::string AffineGridSamplePlugin::finishDesc(
    nvinfer1::Dims const& x, nvinfer1::Dims const& t, nvinfer1::Dims const& o, StnSampleDesc& d) const
{
    int32_t const r = d.rank;
    d.transform = mFields.transform;
    int64_t const wantRows = (r == 4 && d.transform == 0) ? 2 : 3;
    int64_t const wantCols = r == 5 ? 4 : 3;
    bool const consistent = t.d[0] == d.n && t.d[1] == wantRows && t.d[2] == wantCols && o.d[0] == d.n
        && o.d[1] == d.c && d.out_h == mFields.outH && d.out_w == mFields.outW
        && (r == 4 || d.out_d == mFields.outD);
    if (!consistent)
    {
        return "shapes of X " + dimsString(x) + ", theta " + dimsString(t) + " and output " + dimsString(o)
            + " do not match the fields";
    }
    return validateDesc(d, /*fused=*/true);
}

} // namespace plugin
} // namespace stn_deploy
