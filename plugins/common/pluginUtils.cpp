/*
 * SPDX-License-Identifier: Apache-2.0
 */
#include "pluginUtils.h"

#include <atomic>
#include <cstdio>
#include <cstring>
#include <limits>

namespace stn_deploy
{
namespace plugin
{
namespace
{
std::atomic<nvinfer1::ILoggerFinder*> gLoggerFinder{nullptr};

void logAt(nvinfer1::ILogger::Severity severity, char const* op, std::string const& message) noexcept
{
    try
    {
        std::string const line = std::string(op) + ": " + message;
        nvinfer1::ILoggerFinder* finder = gLoggerFinder.load();
        nvinfer1::ILogger* logger = finder != nullptr ? finder->findLogger() : nullptr;
        if (logger != nullptr)
        {
            logger->log(severity, line.c_str());
        }
        else
        {
            std::fprintf(stderr, "[stn_deploy_plugins] %s\n", line.c_str());
        }
    }
    catch (...)
    {
        // Logging must never take the process down.
    }
}

bool readInteger(nvinfer1::PluginField const& f, int64_t& v, std::string& why)
{
    if (f.data == nullptr || f.length != 1)
    {
        why = "must hold exactly one value (got length " + std::to_string(f.length)
            + (f.data == nullptr ? ", no data)" : ")");
        return false;
    }
    switch (f.type)
    {
    case nvinfer1::PluginFieldType::kINT32: v = *static_cast<int32_t const*>(f.data); return true;
    case nvinfer1::PluginFieldType::kINT64: v = *static_cast<int64_t const*>(f.data); return true;
    case nvinfer1::PluginFieldType::kINT16: v = *static_cast<int16_t const*>(f.data); return true;
    case nvinfer1::PluginFieldType::kINT8: v = *static_cast<int8_t const*>(f.data); return true;
    default: why = "must be an integer (kINT32), got field type " + std::to_string(static_cast<int32_t>(f.type)); return false;
    }
}
} // namespace

void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept
{
    gLoggerFinder.store(finder);
}

void logError(char const* op, std::string const& message) noexcept
{
    logAt(nvinfer1::ILogger::Severity::kERROR, op, message);
}

void logWarning(char const* op, std::string const& message) noexcept
{
    logAt(nvinfer1::ILogger::Severity::kWARNING, op, message);
}

bool parseIntFields(char const* op, nvinfer1::PluginFieldCollection const* fc, std::vector<IntField>& fields) noexcept
{
    try
    {
        if (fc == nullptr)
        {
            return true; // all defaults
        }
        if (fc->nbFields < 0 || (fc->nbFields > 0 && fc->fields == nullptr))
        {
            logError(op, "malformed field collection (nbFields " + std::to_string(fc->nbFields) + ")");
            return false;
        }
        bool ok = true;
        for (int32_t i = 0; i < fc->nbFields; ++i)
        {
            nvinfer1::PluginField const& f = fc->fields[i];
            if (f.name == nullptr)
            {
                logError(op, "field " + std::to_string(i) + " has no name");
                ok = false;
                continue;
            }
            IntField* match = nullptr;
            for (IntField& spec : fields)
            {
                if (std::strcmp(spec.name, f.name) == 0)
                {
                    match = &spec;
                }
            }
            if (match == nullptr)
            {
                logWarning(op, std::string("ignoring unknown field '") + f.name + "'");
                continue;
            }
            int64_t v = 0;
            std::string why;
            if (!readInteger(f, v, why))
            {
                logError(op, std::string("field '") + match->name + "' " + why);
                ok = false;
                continue;
            }
            if (v < match->minValue || v > match->maxValue)
            {
                logError(op, std::string("field '") + match->name + "' = " + std::to_string(v) + " is invalid: "
                        + match->meaning);
                ok = false;
                continue;
            }
            match->value = static_cast<int32_t>(v);
        }
        return ok;
    }
    catch (...)
    {
        logError(op, "could not read the fields (out of memory?)");
        return false;
    }
}

std::vector<nvinfer1::PluginField> fieldNames(std::vector<IntField> const& fields)
{
    std::vector<nvinfer1::PluginField> out;
    out.reserve(fields.size());
    for (IntField const& f : fields)
    {
        out.emplace_back(f.name, nullptr, nvinfer1::PluginFieldType::kINT32, 1);
    }
    return out;
}

int32_t stnDtype(nvinfer1::DataType t) noexcept
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return STN_DTYPE_FLOAT32;
    case nvinfer1::DataType::kHALF: return STN_DTYPE_FLOAT16;
    case nvinfer1::DataType::kBF16: return STN_DTYPE_BFLOAT16;
    default: return -1;
    }
}

bool isSupportedData(nvinfer1::DataType t) noexcept
{
    return stnDtype(t) >= 0;
}

char const* dataTypeName(nvinfer1::DataType t) noexcept
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return "FLOAT";
    case nvinfer1::DataType::kHALF: return "HALF";
    case nvinfer1::DataType::kINT8: return "INT8";
    case nvinfer1::DataType::kINT32: return "INT32";
    case nvinfer1::DataType::kBOOL: return "BOOL";
    case nvinfer1::DataType::kUINT8: return "UINT8";
    case nvinfer1::DataType::kFP8: return "FP8";
    case nvinfer1::DataType::kBF16: return "BF16";
    case nvinfer1::DataType::kINT64: return "INT64";
    case nvinfer1::DataType::kINT4: return "INT4";
    case nvinfer1::DataType::kFP4: return "FP4";
    case nvinfer1::DataType::kE8M0: return "E8M0";
    }
    return "UNKNOWN";
}

std::string dimsString(nvinfer1::Dims const& d)
{
    std::string s = "[";
    for (int32_t i = 0; i < d.nbDims && i < nvinfer1::Dims::MAX_DIMS; ++i)
    {
        s += (i ? "," : "") + std::to_string(d.d[i]);
    }
    return s + "]";
}

int64_t constantOr(nvinfer1::IDimensionExpr const* e) noexcept
{
    return (e != nullptr && e->isConstant()) ? e->getConstantValue() : -1;
}

} // namespace plugin
} // namespace stn_deploy
