/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSamplePlugin.h: STNGridSample (IPluginV3), out = torch.nn.functional.grid_sample(X, grid).
 * See README.md beside this file for inputs, outputs and fields.
 */
#pragma once

#include "stnPluginBase.h"

#include <array>
#include <string>
#include <vector>

namespace stn_deploy
{
namespace plugin
{

//! The fields of STNGridSample (== ONNX attributes; stn_deploy/schema.py): the shared three only.
struct GridSampleFields : SampleFields
{
};

class GridSamplePlugin : public StnPluginBase<GridSamplePlugin, GridSampleFields>
{
public:
    static constexpr char const* kNAME = "STNGridSample";
    static constexpr char const* kCOORD = "grid";
    static constexpr char const* kRANKS_HINT = " (4 or 5)";
    static constexpr char const* kCONFIGURE_RANKS
        = "configurePlugin: X, grid and output must all have rank 4 or all rank 5";
    //! The members of GridSampleFields in the order of fieldSpecs() (parsing and serialisation).
    static constexpr std::array<int32_t GridSampleFields::*, 3> kMEMBERS{
        &GridSampleFields::interpolationMode, &GridSampleFields::paddingMode, &GridSampleFields::alignCorners};

    explicit GridSamplePlugin(GridSampleFields const& fields);

    //! The field specs with their defaults.
    static std::vector<IntField> fieldSpecs();
    static bool checkFields(std::vector<IntField> const& specs, GridSampleFields const& fields);
    static int32_t coordRank(int32_t xRank) noexcept
    {
        return xRank;
    }
    static int32_t launch(StnSampleDesc const& desc, void const* x, void const* grid, void* out, cudaStream_t stream);

    int32_t outputShapes(nvinfer1::DimsExprs const& x, nvinfer1::DimsExprs const& g, nvinfer1::DimsExprs& o,
        nvinfer1::IExprBuilder& exprBuilder) const;
    std::string finishDesc(
        nvinfer1::Dims const& x, nvinfer1::Dims const& g, nvinfer1::Dims const& o, StnSampleDesc& d) const;
};

using GridSampleCreator = StnPluginCreator<GridSamplePlugin>;

} // namespace plugin
} // namespace stn_deploy
