/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * affineGridSamplePlugin.cpp: STNAffineGridSample, IPluginV3 + creator. Build-time methods are CPU only.
 * Output spatial size comes from the fields out_d (0 for 4-D), out_h, out_w.
 */
#include "affineGridSamplePlugin.h"

#include "affineGridSampleKernel.h"
#include "sampleDesc.h"

#include <new>

namespace stn_deploy
{
namespace plugin
{
namespace
{
constexpr char const* kNAME = "STNAffineGridSample";
constexpr char const* kVERSION = "1";
constexpr char const* kNAMESPACE = "";
constexpr int32_t kX = 0;
constexpr int32_t kTHETA = 1;
} // namespace

// ---------------------------------------------------------------------------------------- plugin

AffineGridSamplePlugin::AffineGridSamplePlugin(AffineGridSampleFields const& fields)
    : mFields(fields)
{
    mSerial.emplace_back("interpolation_mode", &mFields.interpolationMode, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("padding_mode", &mFields.paddingMode, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("align_corners", &mFields.alignCorners, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("transform", &mFields.transform, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("out_d", &mFields.outD, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("out_h", &mFields.outH, nvinfer1::PluginFieldType::kINT32, 1);
    mSerial.emplace_back("out_w", &mFields.outW, nvinfer1::PluginFieldType::kINT32, 1);
    mSerialFc.nbFields = static_cast<int32_t>(mSerial.size());
    mSerialFc.fields = mSerial.data();
}

nvinfer1::IPluginCapability* AffineGridSamplePlugin::getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept
{
    switch (type)
    {
    case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
    case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
    case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
    }
    return nullptr;
}

nvinfer1::IPluginV3* AffineGridSamplePlugin::clone() noexcept
{
    return new (std::nothrow) AffineGridSamplePlugin(mFields);
}

char const* AffineGridSamplePlugin::getPluginName() const noexcept
{
    return kNAME;
}

char const* AffineGridSamplePlugin::getPluginVersion() const noexcept
{
    return kVERSION;
}

char const* AffineGridSamplePlugin::getPluginNamespace() const noexcept
{
    return kNAMESPACE;
}

int32_t AffineGridSamplePlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t AffineGridSamplePlugin::getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
    nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || outputTypes == nullptr || inputTypes == nullptr)
    {
        logError(kNAME, "expects 2 inputs (X, theta) and 1 output, got " + std::to_string(nbInputs) + " inputs and "
                + std::to_string(nbOutputs) + " outputs");
        return -1;
    }
    if (!isSupportedData(inputTypes[kX]))
    {
        logError(kNAME, std::string("input 'X' has dtype ") + dataTypeName(inputTypes[kX])
                + "; supported: FLOAT, HALF, BF16");
        return -1;
    }
    if (inputTypes[kTHETA] != nvinfer1::DataType::kFLOAT && inputTypes[kTHETA] != inputTypes[kX])
    {
        logError(kNAME, std::string("input 'theta' has dtype ") + dataTypeName(inputTypes[kTHETA])
                + "; supported: FLOAT or the dtype of X (" + dataTypeName(inputTypes[kX]) + ")");
        return -1;
    }
    outputTypes[0] = inputTypes[kX];
    return 0;
}

int32_t AffineGridSamplePlugin::getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
    nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
    int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 2 || nbOutputs != 1 || inputs == nullptr || outputs == nullptr)
    {
        logError(kNAME, "expects 2 inputs (X, theta) and 1 output");
        return -1;
    }
    nvinfer1::DimsExprs const& x = inputs[kX];
    nvinfer1::DimsExprs const& t = inputs[kTHETA];
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
    nvinfer1::DimsExprs& o = outputs[0];
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

bool AffineGridSamplePlugin::supportsFormatCombination(
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
    case kTHETA: return d.type == nvinfer1::DataType::kFLOAT || d.type == inOut[kX].desc.type;
    default: return d.type == inOut[kX].desc.type; // pos 2: the output
    }
}

int32_t AffineGridSamplePlugin::configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        logError(kNAME, "configurePlugin: expects 2 inputs and 1 output");
        return -1;
    }
    int32_t const rank = in[kX].desc.dims.nbDims;
    if ((rank != 4 && rank != 5) || in[kTHETA].desc.dims.nbDims != 3 || out[0].desc.dims.nbDims != rank)
    {
        logError(kNAME, "configurePlugin: X and output must have rank 4 or 5 and theta rank 3");
        return -1;
    }
    return 0;
}

std::string AffineGridSamplePlugin::makeDesc(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
    nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs, StnSampleDesc& d) const
{
    if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
    {
        return "expects 2 inputs and 1 output";
    }
    nvinfer1::Dims const& x = in[kX].dims;
    nvinfer1::Dims const& t = in[kTHETA].dims;
    nvinfer1::Dims const& o = out[0].dims;
    int32_t const r = x.nbDims;
    if ((r != 4 && r != 5) || t.nbDims != 3 || o.nbDims != r)
    {
        return "ranks of X " + dimsString(x) + ", theta " + dimsString(t) + " and output " + dimsString(o)
            + " do not match";
    }
    d = StnSampleDesc{};
    d.rank = r;
    d.interpolation_mode = mFields.interpolationMode;
    d.padding_mode = mFields.paddingMode;
    d.align_corners = mFields.alignCorners;
    d.transform = mFields.transform;
    d.semantics = STN_SEMANTICS_ATEN_CUDA;
    d.x_dtype = stnDtype(in[kX].type);
    d.coord_dtype = stnDtype(in[kTHETA].type);
    d.n = x.d[0];
    d.c = x.d[1];
    d.in_d = r == 5 ? x.d[2] : 1;
    d.in_h = x.d[r - 2];
    d.in_w = x.d[r - 1];
    d.out_d = r == 5 ? o.d[2] : 1;
    d.out_h = o.d[r - 2];
    d.out_w = o.d[r - 1];
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

int32_t AffineGridSamplePlugin::onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
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

int32_t AffineGridSamplePlugin::enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
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
        int32_t const status = launchAffineGridSample(d, inputs[kX], inputs[kTHETA], outputs[0], stream);
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

nvinfer1::IPluginV3* AffineGridSamplePlugin::attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept
{
    return clone();
}

nvinfer1::PluginFieldCollection const* AffineGridSamplePlugin::getFieldsToSerialize() noexcept
{
    return &mSerialFc;
}

// --------------------------------------------------------------------------------------- creator

std::vector<IntField> AffineGridSampleCreator::fieldSpecs()
{
    constexpr int32_t kMAX = 2147483647;
    return {
        {"interpolation_mode", 0, 2, "must be 0 (bilinear), 1 (nearest) or 2 (bicubic)", 0},
        {"padding_mode", 0, 2, "must be 0 (zeros), 1 (border) or 2 (reflection)", 0},
        {"align_corners", 0, 1, "must be 0 or 1", 0},
        {"transform", 0, 1, "must be 0 (affine) or 1 (projective)", 0},
        {"out_d", 0, kMAX, "must be 0 (4-D input) or the output depth >= 1", 0},
        {"out_h", 1, kMAX, "must be the output height >= 1", -1},
        {"out_w", 1, kMAX, "must be the output width >= 1", -1},
    };
}

AffineGridSampleCreator::AffineGridSampleCreator()
    : mNames(fieldNames(fieldSpecs()))
{
    mFc.nbFields = static_cast<int32_t>(mNames.size());
    mFc.fields = mNames.data();
}

nvinfer1::IPluginV3* AffineGridSampleCreator::createPlugin(
    char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept
{
    try
    {
        std::vector<IntField> specs = fieldSpecs();
        if (!parseIntFields(kNAME, fc, specs))
        {
            return nullptr;
        }
        AffineGridSampleFields f;
        f.interpolationMode = specs[0].value;
        f.paddingMode = specs[1].value;
        f.alignCorners = specs[2].value;
        f.transform = specs[3].value;
        f.outD = specs[4].value;
        f.outH = specs[5].value;
        f.outW = specs[6].value;
        for (int32_t i = 5; i <= 6; ++i)
        {
            if (specs[i].value < 0)
            {
                logError(kNAME, std::string("field '") + specs[i].name + "' is missing (" + specs[i].meaning + ")");
                return nullptr;
            }
        }
        if (f.transform == 1 && f.outD != 0)
        {
            logError(kNAME, "field 'transform' = 1 (projective) needs a 4-D input (out_d = 0), got out_d = "
                    + std::to_string(f.outD));
            return nullptr;
        }
        if (f.interpolationMode == 2 && f.outD != 0)
        {
            logError(kNAME, "field 'interpolation_mode' = 2 (bicubic) supports 4-D input only (out_d = 0), got out_d = "
                    + std::to_string(f.outD));
            return nullptr;
        }
        return new AffineGridSamplePlugin(f);
    }
    catch (...)
    {
        logError(kNAME, "createPlugin failed (out of memory?)");
        return nullptr;
    }
}

nvinfer1::PluginFieldCollection const* AffineGridSampleCreator::getFieldNames() noexcept
{
    return &mFc;
}

char const* AffineGridSampleCreator::getPluginName() const noexcept
{
    return kNAME;
}

char const* AffineGridSampleCreator::getPluginVersion() const noexcept
{
    return kVERSION;
}

char const* AffineGridSampleCreator::getPluginNamespace() const noexcept
{
    return kNAMESPACE;
}

} // namespace plugin
} // namespace stn_deploy
