/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * stnPluginBase.h: what STNGridSample and STNAffineGridSample share as IPluginV3 plugins with
 * two inputs (X, a coordinate tensor: grid or theta) and one output of X's dtype:
 *   StnPluginBase<Derived, Fields>  the IPluginV3OneCore/Build/Runtime methods that do not depend
 *                                   on the op (capabilities, names, dtypes, formats, counts,
 *                                   serialisation, onShapeChange/enqueue around makeDesc);
 *   StnPluginCreator<Plugin>        the IPluginCreatorV3One (field names, parsing, createPlugin).
 * Fields derives from SampleFields. Derived provides (see gridSamplePlugin.h):
 *   static constexpr char const* kNAME            op name, also the prefix of every message
 *   static constexpr char const* kCOORD           name of input 1 ("grid" / "theta")
 *   static constexpr char const* kRANKS_HINT      appended to makeDesc's rank mismatch message
 *   static constexpr char const* kCONFIGURE_RANKS configurePlugin's rank mismatch message
 *   static constexpr std::array<int32_t Fields::*, N> kMEMBERS   in the order of fieldSpecs()
 *   static std::vector<IntField> fieldSpecs()      names, ranges, meanings, defaults
 *   static int32_t coordRank(int32_t xRank)        expected rank of input 1
 *   static bool checkFields(std::vector<IntField> const&, Fields const&)   creator, logs why not
 *   static int32_t launch(StnSampleDesc const&, void const* x, void const* coord, void* out, cudaStream_t)
 *   int32_t outputShapes(DimsExprs const& x, DimsExprs const& coord, DimsExprs& out, IExprBuilder&)
 *   std::string finishDesc(Dims const& x, Dims const& coord, Dims const& out, StnSampleDesc&) const
 * The templates are instantiated where used (the plugin's .cpp, register.cpp); no extra source file.
 */
#pragma once

#include "NvInferRuntime.h"
#include "pluginUtils.h"

#include <array>
#include <cassert>
#include <cstddef>
#include <new>
#include <string>
#include <vector>

namespace stn_deploy
{
namespace plugin
{

//! Version and namespace of both plugins (bump the version when the fields change).
constexpr char const* kSTN_PLUGIN_VERSION = "1";
constexpr char const* kSTN_PLUGIN_NAMESPACE = "";

//! The fields both ops share (== ONNX attributes; stn_deploy/schema.py), enums in PyTorch's order.
struct SampleFields
{
    int32_t interpolationMode{0}; //!< 0 bilinear, 1 nearest, 2 bicubic (4-D only)
    int32_t paddingMode{0};       //!< 0 zeros, 1 border, 2 reflection
    int32_t alignCorners{0};      //!< 0 or 1
};

//! The specs of SampleFields' fields, in their order, with their defaults.
inline std::vector<IntField> sampleFieldSpecs()
{
    return {
        {"interpolation_mode", 0, 2, "must be 0 (bilinear), 1 (nearest) or 2 (bicubic)", 0},
        {"padding_mode", 0, 2, "must be 0 (zeros), 1 (border) or 2 (reflection)", 0},
        {"align_corners", 0, 1, "must be 0 or 1", 0},
    };
}

template <typename Derived, typename Fields>
class StnPluginBase : public nvinfer1::IPluginV3,
                      public nvinfer1::IPluginV3OneCore,
                      public nvinfer1::IPluginV3OneBuild,
                      public nvinfer1::IPluginV3OneRuntime
{
public:
    using FieldsType = Fields;
    static constexpr int32_t kX = 0;
    static constexpr int32_t kCOORD_INPUT = 1;

    explicit StnPluginBase(Fields const& fields)
        : mFields(fields)
    {
        std::vector<IntField> const specs = Derived::fieldSpecs();
        assert(specs.size() == Derived::kMEMBERS.size());
        for (std::size_t i = 0; i < Derived::kMEMBERS.size(); ++i)
        {
            mSerial.emplace_back(specs[i].name, &(mFields.*Derived::kMEMBERS[i]), nvinfer1::PluginFieldType::kINT32, 1);
        }
        mSerialFc.nbFields = static_cast<int32_t>(mSerial.size());
        mSerialFc.fields = mSerial.data();
    }
    StnPluginBase(StnPluginBase const&) = delete;
    StnPluginBase& operator=(StnPluginBase const&) = delete;
    ~StnPluginBase() override = default;

    // IPluginV3
    nvinfer1::IPluginCapability* getCapabilityInterface(nvinfer1::PluginCapabilityType type) noexcept override
    {
        switch (type)
        {
        case nvinfer1::PluginCapabilityType::kCORE: return static_cast<nvinfer1::IPluginV3OneCore*>(this);
        case nvinfer1::PluginCapabilityType::kBUILD: return static_cast<nvinfer1::IPluginV3OneBuild*>(this);
        case nvinfer1::PluginCapabilityType::kRUNTIME: return static_cast<nvinfer1::IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }

    nvinfer1::IPluginV3* clone() noexcept override
    {
        return new (std::nothrow) Derived(mFields);
    }

    // IPluginV3OneCore
    char const* getPluginName() const noexcept override
    {
        return Derived::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kSTN_PLUGIN_VERSION;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return kSTN_PLUGIN_NAMESPACE;
    }

    // IPluginV3OneBuild (run on the CPU at build time: no CUDA calls)
    int32_t getNbOutputs() const noexcept override
    {
        return 1;
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1 || outputTypes == nullptr || inputTypes == nullptr)
        {
            logError(Derived::kNAME, std::string("expects 2 inputs (X, ") + Derived::kCOORD + ") and 1 output, got "
                    + std::to_string(nbInputs) + " inputs and " + std::to_string(nbOutputs) + " outputs");
            return -1;
        }
        if (!isSupportedData(inputTypes[kX]))
        {
            logError(Derived::kNAME, std::string("input 'X' has dtype ") + dataTypeName(inputTypes[kX])
                    + "; supported: FLOAT, HALF, BF16");
            return -1;
        }
        nvinfer1::DataType const coord = inputTypes[kCOORD_INPUT];
        if (coord != nvinfer1::DataType::kFLOAT && coord != inputTypes[kX])
        {
            logError(Derived::kNAME, std::string("input '") + Derived::kCOORD + "' has dtype " + dataTypeName(coord)
                    + "; supported: FLOAT or the dtype of X (" + dataTypeName(inputTypes[kX]) + ")");
            return -1;
        }
        outputTypes[0] = inputTypes[kX];
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& exprBuilder) noexcept override
    {
        if (nbInputs != 2 || nbOutputs != 1 || inputs == nullptr || outputs == nullptr)
        {
            logError(Derived::kNAME, std::string("expects 2 inputs (X, ") + Derived::kCOORD + ") and 1 output");
            return -1;
        }
        return derived().outputShapes(inputs[kX], inputs[kCOORD_INPUT], outputs[0], exprBuilder);
    }

    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override
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
        if (pos == kX)
        {
            return isSupportedData(d.type);
        }
        if (pos == kCOORD_INPUT)
        {
            return d.type == nvinfer1::DataType::kFLOAT || d.type == inOut[kX].desc.type;
        }
        return d.type == inOut[kX].desc.type; // pos 2: the output
    }

    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override
    {
        if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
        {
            logError(Derived::kNAME, "configurePlugin: expects 2 inputs and 1 output");
            return -1;
        }
        int32_t const rank = in[kX].desc.dims.nbDims;
        if ((rank != 4 && rank != 5) || in[kCOORD_INPUT].desc.dims.nbDims != Derived::coordRank(rank)
            || out[0].desc.dims.nbDims != rank)
        {
            logError(Derived::kNAME, Derived::kCONFIGURE_RANKS);
            return -1;
        }
        return 0;
    }

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override
    {
        try
        {
            StnSampleDesc d;
            std::string const why = makeDesc(in, nbInputs, out, nbOutputs, d);
            if (!why.empty())
            {
                logError(Derived::kNAME, why);
                return -1;
            }
            return 0;
        }
        catch (...)
        {
            logError(Derived::kNAME, "onShapeChange failed");
            return -1;
        }
    }

    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept override
    {
        try
        {
            StnSampleDesc d;
            std::string const why = makeDesc(inputDesc, 2, outputDesc, 1, d);
            if (!why.empty())
            {
                logError(Derived::kNAME, why);
                return -1;
            }
            int32_t const status = Derived::launch(d, inputs[kX], inputs[kCOORD_INPUT], outputs[0], stream);
            if (status != STN_OK)
            {
                logError(Derived::kNAME, stn_last_error());
                return -1;
            }
            return 0;
        }
        catch (...)
        {
            logError(Derived::kNAME, "enqueue failed");
            return -1;
        }
    }

    nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* /*context*/) noexcept override
    {
        return clone();
    }

    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override
    {
        return &mSerialFc;
    }

    //! The descriptor of a runtime call, or an error message (empty descriptor error == ok): the
    //! counts, the ranks and the fields/dims common to both ops here, the rest in Derived::finishDesc.
    std::string makeDesc(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs, StnSampleDesc& d) const
    {
        if (in == nullptr || out == nullptr || nbInputs != 2 || nbOutputs != 1)
        {
            return "expects 2 inputs and 1 output";
        }
        nvinfer1::Dims const& x = in[kX].dims;
        nvinfer1::Dims const& c = in[kCOORD_INPUT].dims;
        nvinfer1::Dims const& o = out[0].dims;
        int32_t const r = x.nbDims;
        if ((r != 4 && r != 5) || c.nbDims != Derived::coordRank(r) || o.nbDims != r)
        {
            return "ranks of X " + dimsString(x) + ", " + Derived::kCOORD + " " + dimsString(c) + " and output "
                + dimsString(o) + " do not match" + Derived::kRANKS_HINT;
        }
        d = StnSampleDesc{};
        d.rank = r;
        d.interpolation_mode = mFields.interpolationMode;
        d.padding_mode = mFields.paddingMode;
        d.align_corners = mFields.alignCorners;
        d.semantics = STN_SEMANTICS_ATEN_CUDA;
        d.x_dtype = stnDtype(in[kX].type);
        d.coord_dtype = stnDtype(in[kCOORD_INPUT].type);
        d.n = x.d[0];
        d.c = x.d[1];
        d.in_d = r == 5 ? x.d[2] : 1;
        d.in_h = x.d[r - 2];
        d.in_w = x.d[r - 1];
        d.out_d = r == 5 ? o.d[2] : 1;
        d.out_h = o.d[r - 2];
        d.out_w = o.d[r - 1];
        return derived().finishDesc(x, c, o, d);
    }

protected:
    Derived const& derived() const noexcept
    {
        return static_cast<Derived const&>(*this);
    }

    Fields mFields;

private:
    std::vector<nvinfer1::PluginField> mSerial;
    nvinfer1::PluginFieldCollection mSerialFc{};
};

//! The creator of a StnPluginBase plugin: getFieldNames from Plugin::fieldSpecs(), createPlugin
//! parses and range-checks every field (parseIntFields), then Plugin::checkFields.
template <typename Plugin>
class StnPluginCreator : public nvinfer1::IPluginCreatorV3One
{
public:
    StnPluginCreator()
        : mNames(fieldNames(fieldSpecs()))
    {
        mFc.nbFields = static_cast<int32_t>(mNames.size());
        mFc.fields = mNames.data();
    }

    nvinfer1::IPluginV3* createPlugin(
        char const* /*name*/, nvinfer1::PluginFieldCollection const* fc, nvinfer1::TensorRTPhase /*phase*/) noexcept override
    {
        try
        {
            std::vector<IntField> specs = fieldSpecs();
            if (!parseIntFields(Plugin::kNAME, fc, specs))
            {
                return nullptr;
            }
            typename Plugin::FieldsType f;
            for (std::size_t i = 0; i < Plugin::kMEMBERS.size(); ++i)
            {
                f.*Plugin::kMEMBERS[i] = specs[i].value;
            }
            if (!Plugin::checkFields(specs, f))
            {
                return nullptr;
            }
            return new Plugin(f);
        }
        catch (...)
        {
            logError(Plugin::kNAME, "createPlugin failed (out of memory?)");
            return nullptr;
        }
    }

    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override
    {
        return &mFc;
    }

    char const* getPluginName() const noexcept override
    {
        return Plugin::kNAME;
    }

    char const* getPluginVersion() const noexcept override
    {
        return kSTN_PLUGIN_VERSION;
    }

    char const* getPluginNamespace() const noexcept override
    {
        return kSTN_PLUGIN_NAMESPACE;
    }

    //! The field specs with their defaults (also used by the fuzz driver).
    static std::vector<IntField> fieldSpecs()
    {
        return Plugin::fieldSpecs();
    }

private:
    std::vector<nvinfer1::PluginField> mNames;
    nvinfer1::PluginFieldCollection mFc{};
};

} // namespace plugin
} // namespace stn_deploy
