/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * pluginUtils.h: what both TensorRT plugins share: the logger found through setLoggerFinder,
 * integer field parsing with validation, DataType/format helpers and the StnSampleDesc of a
 * runtime tensor pair.
 */
#pragma once

#include "NvInferRuntime.h"
#include "stnKernelApi.h"

#include <string>
#include <vector>

namespace stn_deploy
{
namespace plugin
{

//! Stores the finder given by TensorRT / TensorRT-RTX (setLoggerFinder entry point).
void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept;

//! Logs through TensorRT's logger (stderr when none was set): "<op>: <message>".
void logError(char const* op, std::string const& message) noexcept;
void logWarning(char const* op, std::string const& message) noexcept;

//! One integer field of a plugin: name, inclusive range, meaning of its values (for messages).
struct IntField
{
    char const* name;
    int32_t minValue;
    int32_t maxValue;
    char const* meaning;
    int32_t value; // in: default; out: parsed value
};

//! Reads `fc` into `fields`; every listed field is checked (type, length, range). A bad value
//! is logged with the field's name and false is returned. Unknown names are logged as warnings
//! and ignored. Never throws.
bool parseIntFields(char const* op, nvinfer1::PluginFieldCollection const* fc, std::vector<IntField>& fields) noexcept;

//! The field list of a creator's getFieldNames (kINT32, length 1, no data).
std::vector<nvinfer1::PluginField> fieldNames(std::vector<IntField> const& fields);

//! STN_DTYPE_* of a TensorRT type, or -1 when unsupported.
int32_t stnDtype(nvinfer1::DataType t) noexcept;
char const* dataTypeName(nvinfer1::DataType t) noexcept;
bool isSupportedData(nvinfer1::DataType t) noexcept;

//! "[2,3,4]" for messages.
std::string dimsString(nvinfer1::Dims const& d);

//! Value of a dimension expression if it is a build-time constant, else -1.
int64_t constantOr(nvinfer1::IDimensionExpr const* e) noexcept;

} // namespace plugin
} // namespace stn_deploy
