/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * affineGridSamplePlugin.h: STNAffineGridSample (IPluginV3), out = grid_sample(X, affine_grid(theta, size)),
 * fused (no grid tensor); projective theta [N,3,3] with the homogeneous divide.
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

//! The fields of STNAffineGridSample (== ONNX attributes; stn_deploy/schema.py): the shared three
//! (interpolation_mode, padding_mode, align_corners), then these.
struct AffineGridSampleFields : SampleFields
{
    int32_t transform{0};         //!< 0 affine ([N,2,3] / [N,3,4]), 1 projective ([N,3,3], 4-D only)
    int32_t outD{0};              //!< output depth; 0 for a 4-D input
    int32_t outH{0};              //!< output height (>= 1)
    int32_t outW{0};              //!< output width (>= 1)
};

class AffineGridSamplePlugin : public StnPluginBase<AffineGridSamplePlugin, AffineGridSampleFields>
{
public:
    static constexpr char const* kNAME = "STNAffineGridSample";
    static constexpr char const* kCOORD = "theta";
    static constexpr char const* kRANKS_HINT = "";
    static constexpr char const* kCONFIGURE_RANKS
        = "configurePlugin: X and output must have rank 4 or 5 and theta rank 3";
    //! The members of AffineGridSampleFields in the order of fieldSpecs() (parsing and serialisation).
    static constexpr std::array<int32_t AffineGridSampleFields::*, 7> kMEMBERS{&AffineGridSampleFields::interpolationMode,
        &AffineGridSampleFields::paddingMode, &AffineGridSampleFields::alignCorners, &AffineGridSampleFields::transform,
        &AffineGridSampleFields::outD, &AffineGridSampleFields::outH, &AffineGridSampleFields::outW};

    explicit AffineGridSamplePlugin(AffineGridSampleFields const& fields);

    //! The field specs with their defaults (out_h, out_w: -1 = missing).
    static std::vector<IntField> fieldSpecs();
    //! out_h / out_w given; projective and bicubic only with out_d = 0. Logs why not.
    static bool checkFields(std::vector<IntField> const& specs, AffineGridSampleFields const& fields);
    static int32_t coordRank(int32_t /*xRank*/) noexcept
    {
        return 3;
    }
    static int32_t launch(StnSampleDesc const& desc, void const* x, void const* theta, void* out, cudaStream_t stream);

    int32_t outputShapes(nvinfer1::DimsExprs const& x, nvinfer1::DimsExprs const& t, nvinfer1::DimsExprs& o,
        nvinfer1::IExprBuilder& exprBuilder) const;
    std::string finishDesc(
        nvinfer1::Dims const& x, nvinfer1::Dims const& t, nvinfer1::Dims const& o, StnSampleDesc& d) const;
};

using AffineGridSampleCreator = StnPluginCreator<AffineGridSamplePlugin>;

} // namespace plugin
} // namespace stn_deploy
