/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSamplePlugin.h: STNGridSample (IPluginV3), out = torch.nn.functional.grid_sample(X, grid).
 * See README.md beside this file for inputs, outputs and fields.
 */
#pragma once

#include "NvInferRuntime.h"
#include "pluginUtils.h"

#include <string>
#include <vector>

namespace stn_deploy
{
namespace plugin
{

//! The fields of STNGridSample (== ONNX attributes; stn_deploy/schema.py).
struct GridSampleFields
{
    int32_t interpolationMode{0}; //!< 0 bilinear, 1 nearest, 2 bicubic (4-D only)
    int32_t paddingMode{0};       //!< 0 zeros, 1 border, 2 reflection
    int32_t alignCorners{0};      //!< 0 or 1
};

class GridSamplePlugin : public nvinfer1::IPluginV3,
                         public nvinfer1::IPluginV3OneCore,
                         public nvinfer1::IPluginV3OneBuild,
                         public nvinfer1::IPluginV3OneRuntime
{
public:
    explicit GridSamplePlugin(GridSampleFields const& fields);
    GridSamplePlugin(GridSamplePlugin const&) = delete;
    GridSamplePlugin& operator=(GridSamplePlugin const&) = delete;
    ~GridSamplePlugin() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override;
    nvinfer1::IPluginV3* clone() noexcept override;

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV3OneBuild (run on the CPU at build time: no CUDA calls)
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t getNbOutputs() const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

    //! The descriptor of a runtime call, or an error message (empty descriptor error == ok).
    std::string makeDesc(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs, StnSampleDesc& desc) const;

private:
    GridSampleFields mFields;
    std::vector<nvinfer1::PluginField> mSerial;
    nvinfer1::PluginFieldCollection mSerialFc{};
};

class GridSampleCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    GridSampleCreator();
    nvinfer1::IPluginV3* createPlugin(
        char const* name, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase phase) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    char const* getPluginNamespace() const noexcept override;

    //! The field specs with their defaults (also used by the fuzz driver).
    static std::vector<IntField> fieldSpecs();

private:
    std::vector<nvinfer1::PluginField> mNames;
    nvinfer1::PluginFieldCollection mFc{};
};

} // namespace plugin
} // namespace stn_deploy
