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

//! Which interface layout the TensorRT in this process has, for the objects it owns and the
//! plugin calls (logger finder, logger, plugin registry). Everything else the plugin touches kept
//! its layout from 10.0 to 11.1 (plugins/README.md, "One library for TensorRT 10, 11 and RTX 1").
enum class RuntimeAbi : int32_t
{
    kUnknown = 0,      //!< not a TensorRT whose layout was verified: never called through a guessed table
    kTensorRT10 = 1,   //!< libnvinfer.so.10: ILoggerFinder/ILogger without a base, 10.x IPluginRegistry
    kTensorRT11 = 2,   //!< libnvinfer.so.11: IVersionedInterface bases, IPluginRegistry without IPluginCreator
    kTensorRTRtx1 = 3, //!< libtensorrt_rtx.so.1: the same layouts as TensorRT 11
};

//! On a function that calls a runtime's object through this library's own declaration of its
//! layout (not the class the runtime defined): UBSan's type-identity check (vptr) cannot apply there.
#define STN_CALLS_RUNTIME_OBJECTS __attribute__((no_sanitize("vptr")))

//! A TensorRT runtime library loaded in this process.
struct Runtime
{
    RuntimeAbi abi = RuntimeAbi::kUnknown;
    int32_t version = 0; //!< its getInferLibVersion(): major * 10000 + minor * 100 + patch
    std::string library; //!< path as the loader knows it; empty when none
};

//! The layout of a runtime given its library path and getInferLibVersion().
RuntimeAbi runtimeAbi(char const* libraryPath, int32_t version) noexcept;
char const* runtimeAbiName(RuntimeAbi abi) noexcept;

//! dlsym in a library already loaded in this process (by path; never loads it), NULL if absent.
void* loadedSymbol(std::string const& libraryPath, char const* name) noexcept;

//! The runtime an already loaded library is (by path); abi kUnknown when it is no TensorRT.
Runtime identifyRuntime(std::string const& libraryPath) noexcept;

//! The first TensorRT / TensorRT-RTX runtime library loaded in this process (library empty: none).
Runtime loadedRuntime() noexcept;

//! The one stderr line saying that a runtime's layout is unknown, so it is never called.
void warnUnknownRuntime(Runtime const& runtime) noexcept;

//! Stores the finder given by TensorRT / TensorRT-RTX (setLoggerFinder entry point) and picks its
//! layout once: from the library its vtable lives in (the runtime that made it), else the
//! TensorRT loaded in the process, else the headers this library was built with.
void setLoggerFinder(void* finder) noexcept;

//! Where messages go before any setLoggerFinder (registration at load time): the runtime's
//! exported getLogger(), the logger of its latest Builder/Runtime.
void setFallbackRuntime(Runtime const& runtime) noexcept;

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
