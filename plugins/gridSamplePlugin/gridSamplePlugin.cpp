/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSamplePlugin.cpp: STNGridSample, IPluginV3 + creator. Build-time methods are CPU only.
 */
#include "gridSamplePlugin.h"

#include "gridSampleKernel.h"
#include "sampleDesc.h"

#include <new>

namespace stn_deploy
{
namespace plugin
{
namespace
{
constexpr char const* kNAME = "STNGridSample";
constexpr char const* kVERSION = "1";
constexpr char const* kNAMESPACE = "";
constexpr int32_t kX = 0;
constexpr int32_t kGRID = 1;
} // namespace

// ---------------------------------------------------------------------------------------- plugin

GridSamplePlugin::GridSamplePlugin(GridSampleFields const& fields)
    : mFields(fields)
{
    mSerial.emplace_back("interpolation_mode", &mFields.interpolationMode, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("padding_mode", &mFields.paddingMode, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("align_corners", &mFields.alignCorners, nvinfer1::PluginFieldType::kINT32, 1);
    mSerialFc.nbFields = static_cast<int32_t>(mSerial.size());
    mSerialFc.fields = mSerial.data();
}

nvinfer1::IPluginCapability* GridSamplePlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* GridSamplePlugin::clone() noexcept
{
    return new (std::nothrow) GridSamplePlugin(mFields);
}

char const* GridSamplePlugin::getPluginName() const noexcept
{
    return kNAME;
}

char const* GridSamplePlugin::getPluginVersion() const noexcept
{
    return kVERSION;
}

char const* GridSamplePlugin::getPluginNamespace() const noexcept
{
    return kNAMESPACE;
}

int32_t GridSamplePlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t GridSamplePlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || outputTypes == nullptr || inputTypes == nullptr)
    {
        logError(kNAME, "expects 2 inputs (X, grid) and 1 output, got " + std::to_string(nbInputs) + " inputs and "
                + std::to_string(nbOutputs) + " outputs");
        return -1;
    }
    if (!isSupportedData(inputTypes[kX]))
    {
        logError(kNAME, std::string("input 'X' has dtype ") + dataTypeName(inputTypes[kX])
                + "; supported: FLOAT, HALF, BF16");
        return -1;
    }
    if (inputTypes[kGRID] != nvinfer1::DataType::kFLOAT && inputTypes[kGRID] != inputTypes[kX])
    {
        logError(kNAME, std::string("input 'grid' has dtype ") + dataTypeName(inputTypes[kGRID])
                + "; supported: FLOAT or the dtype of X (" + dataTypeName(inputTypes[kX]) + ")");
        return -1;
    }
    outputTypes[0] = inputTypes[kX];
    return 0;
}

int32_t GridSamplePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || inputs == nullptr || outputs == nullptr)
    {
        logError(kNAME, "expects 2 inputs (X, grid) and 1 output");
        return -1;
    }
    nvinfer1::DimsExprs const& x = inputs[kX];
    nvinfer1::DimsExprs const& g = inputs[kGRID];
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
    nvinfer1::DimsExprs& o = outputs[0];
    o.nbDims = x.nbDims;
    o.d[0] = x.d[0];
    o.d[1] = x.d[1];
    for (int32_t i = 2; i < x.nbDims; ++i)
    {
        o.d[i] = g.d[i - 1];
    }
    return 0;
}

bool GridSamplePlugin::supportsFormatCombination(
    int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (inOut == nullptr || nbInputs != 2 || nbOutputs != 1 || pos < 0 || pos >= 3)
    {
        return false;
    }
    nvinfer1::PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != nvinfer1::TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case kX: return isSupportedData(d.type);
    case kGRID: return d.type == nvinfer1::DataType::kFLOAT || d.type == inOut[kX].desc.type;
    default: return d.type == inOut[kX].desc.type; // pos 2: the output
    }
}

int32_t GridSamplePlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        logError(kNAME, "configurePlugin: expects 2 inputs and 1 output");
        return -1;
    }
    int32_t const rank = in[kX].desc.dims.nbDims;
    if ((rank != 4 && rank != 5) || in[kGRID].desc.dims.nbDims != rank || out[0].desc.dims.nbDims != rank)
    {
        logError(kNAME, "configurePlugin: X, grid and output must all have rank 4 or all rank 5");
        return -1;
    }
    return 0;
}

std::string GridSamplePlugin::makeDesc(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs, StnSampleDesc& d) const
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        return "expects 2 inputs and 1 output";
    }
    nvinfer1::Dims const& x = in[kX].dims;
    nvinfer1::Dims const& g = in[kGRID].dims;
    nvinfer1::Dims const& o = out[0].dims;
    int32_t const r = x.nbDims;
    if ((r != 4 && r != 5) || g.nbDims != r || o.nbDims != r)
    {
        return "ranks of X " + dimsString(x) + ", grid " + dimsString(g) + " and output " + dimsString(o)
            + " do not match (4 or 5)";
    }
    d = StnSampleDesc{};
    d.rank = r;
    d.interpolation_mode = mFields.interpolationMode;
    d.padding_mode = mFields.paddingMode;
    d.align_corners = mFields.alignCorners;
    d.semantics = STN_SEMANTICS_ATEN_CUDA;
    d.x_dtype = stnDtype(in[kX].type);
    d.coord_dtype = stnDtype(in[kGRID].type);
    d.n = x.d[0];
    d.c = x.d[1];
    d.in_d = r == 5 ? x.d[2] : 1;
    d.in_h = x.d[r - 2];
    d.in_w = x.d[r - 1];
    d.out_d = r == 5 ? o.d[2] : 1;
    d.out_h = o.d[r - 2];
    d.out_w = o.d[r - 1];
    bool const consistent = g.d[0] == d.n && g.d[r - 1] == r - 2 && o.d[0] == d.n && o.d[1] == d.c
        && g.d[1] == o.d[2] && g.d[2] == o.d[3] && (r == 4 || g.d[3] == o.d[4]);
    if (!consistent)
    {
        return "shapes of X " + dimsString(x) + ", grid " + dimsString(g) + " and output " + dimsString(o)
            + " do not match";
    }
    return validateDesc(d, /*fused=*/false);
}

int32_t GridSamplePlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    try
    {
        StnSampleDesc d;
        std::string const why = makeDesc(in, nbInputs, out, nbOutputs, d);
        if (!why.empty())
        {
            logError(kNAME, why);
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        logError(kNAME, "onShapeChange failed");
        return -1;
    }
}

int32_t GridSamplePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
    nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs, void* const* outputs,
    void* /*workspace*/, cudaStream_t stream) noexcept
{
    try
    {
        StnSampleDesc d;
        std::string const why = makeDesc(inputDesc, 2, outputDesc, 1, d);
        if (!why.empty())
        {
            logError(kNAME, why);
            return -1;
        }
        int32_t const status = launchGridSample(d, inputs[kX], inputs[kGRID], outputs[0], stream);
        if (status != STN_OK)
        {
            logError(kNAME, stn_last_error());
            return -1;
        }
        return 0;
    }
    catch (...)
    {
        logError(kNAME, "enqueue failed");
        return -1;
    }
}

nvinfer1::IPluginV3* GridSamplePlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* GridSamplePlugin::getFieldsToSerialize() noexcept
{
    return &mSerialFc;
}

// --------------------------------------------------------------------------------------- creator

std::vector<IntField> GridSampleCreator::fieldSpecs()
{
    return {
        {"interpolation_mode", 0, 2, "must be 0 (bilinear), 1 (nearest) or 2 (bicubic)", 0},
        {"padding_mode", 0, 2, "must be 0 (zeros), 1 (border) or 2 (reflection)", 0},
        {"align_corners", 0, 1, "must be 0 or 1", 0},
    };
}

GridSampleCreator::GridSampleCreator()
    : mNames(fieldNames(fieldSpecs()))
{
    mFc.nbFields = static_cast<int32_t>(mNames.size());
    mFc.fields = mNames.data();
}

nvinfer1::IPluginV3* GridSampleCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::vector<IntField> specs = fieldSpecs();
        if (!parseIntFields(kNAME, fc, specs))
        {
            return nullptr;
        }
        GridSampleFields f;
        f.interpolationMode = specs[0].value;
        f.paddingMode = specs[1].value;
        f.alignCorners = specs[2].value;
        return new GridSamplePlugin(f);
    }
    catch (...)
    {
        logError(kNAME, "createPlugin failed (out of memory?)");
        return nullptr;
    }
}

nvinfer1::PluginFieldCollection const* GridSampleCreator::getFieldNames() noexcept
{
    return &mFc;
}

char const* GridSampleCreator::getPluginName() const noexcept
{
    return kNAME;
}

char const* GridSampleCreator::getPluginVersion() const noexcept
{
    return kVERSION;
}

char const* GridSampleCreator::getPluginNamespace() const noexcept
{
    return kNAMESPACE;
}

} // namespace plugin
} // namespace stn_deploy
