/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSamplePlugin.cpp: STNGridSample, IPluginV3 + creator. Build-time methods are CPU only.
 */
#include "gridSamplePlugin.h"

#include "gridSampleKernel.h"
#include "sampleDesc.h"

namespace stn_deploy
{
namespace plugin
{
// ---------------------------------------------------------------------------------------- plugin

GridSamplePlugin::GridSamplePlugin(GridSampleFields const& fields)
    : StnPluginBase(fields)
{
}

std::vector<IntField> GridSamplePlugin::fieldSpecs()
{
    return sampleFieldSpecs();
}

bool GridSamplePlugin::checkFields(std::vector<IntField> const& /*specs*/, GridSampleFields const& /*fields*/)
{
    return true; // every combination of the ranges is valid; bicubic on 5-D is rejected in outputShapes
}

int32_t GridSamplePlugin::launch(
    StnSampleDesc const& desc, void const* x, void const* grid, void* out, cudaStream_t stream)
{
    return launchGridSample(desc, x, grid, out, stream);
}

int32_t GridSamplePlugin::outputShapes(nvinfer1::DimsExprs const& x, nvinfer1::DimsExprs const& g,
    nvinfer1::DimsExprs& o, nvinfer1::IExprBuilder& /*exprBuilder*/) const
{
    if (x.nbDims != 4 && x.nbDims != 5)
    {
        logError(kNAME, "input 'X' must have rank 4 [N,C,H,W] or 5 [N,C,D,H,W], got rank " + std::to_string(x.nbDims));
        return -1;
    }
    if (g.nbDims != x.nbDims)
    {
        logError(kNAME, "input 'grid' must have rank " + std::to_string(x.nbDims) + " like X ([N,Ho,Wo,2] or "
                "[N,Do,Ho,Wo,3]), got rank " + std::to_string(g.nbDims));
        return -1;
    }
    int64_t const last = constantOr(g.d[g.nbDims - 1]);
    if (last >= 0 && last != x.nbDims - 2)
    {
        logError(kNAME, "input 'grid' must end in " + std::to_string(x.nbDims - 2) + " coordinates, got "
                + std::to_string(last));
        return -1;
    }
    int64_t const nx = constantOr(x.d[0]);
    int64_t const ng = constantOr(g.d[0]);
    if (nx >= 0 && ng >= 0 && nx != ng)
    {
        logError(kNAME, "inputs 'X' and 'grid' must have the same batch size, got " + std::to_string(nx) + " and "
                + std::to_string(ng));
        return -1;
    }
    if (x.nbDims == 5 && mFields.interpolationMode == 2)
    {
        logError(kNAME, "field 'interpolation_mode' = 2 (bicubic) supports 4-D input only (as PyTorch)");
        return -1;
    }
    o.nbDims = x.nbDims;
    o.d[0] = x.d[0];
    o.d[1] = x.d[1];
    for (int32_t i = 2; i < x.nbDims; ++i)
    {
        o.d[i] = g.d[i - 1];
    }
    return 0;
}

std::string GridSamplePlugin::finishDesc(
    nvinfer1::Dims const& x, nvinfer1::Dims const& g, nvinfer1::Dims const& o, StnSampleDesc& d) const
{
    int32_t const r = d.rank;
    bool const consistent = g.d[0] == d.n && g.d[r - 1] == r - 2 && o.d[0] == d.n && o.d[1] == d.c
        && g.d[1] == o.d[2] && g.d[2] == o.d[3] && (r == 4 || g.d[3] == o.d[4]);
    if (!consistent)
    {
        return "shapes of X " + dimsString(x) + ", grid " + dimsString(g) + " and output " + dimsString(o)
            + " do not match";
    }
    return validateDesc(d, /*fused=*/false);
}

} // namespace plugin
} // namespace stn_deploy
