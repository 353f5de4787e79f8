/*
 * SPDX-License-Identifier: Apache-2.0
 */
#include "pluginUtils.h"

#include <dlfcn.h>
#include <link.h>

#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>

namespace stn_deploy
{
namespace plugin
{
//! The logger finder and logger as each TensorRT lays them out, written from the published
//! headers (NVIDIA/TensorRT NvInferRuntime.h, NvInferRuntimeBase.h; tags v10.14 and v11.1; slot
//! tables in plugins/README.md). Declared here, not taken from the headers of the build, so that
//! one binary calls every runtime through that runtime's own layout. Never instantiated. Outside
//! the unnamed namespace on purpose: a class there has no derived classes elsewhere, so the
//! compiler may turn calls of its pure virtuals into __cxa_pure_virtual.
namespace abi10
{
class Logger
{
public:
    virtual void log(int32_t severity, char const* message) noexcept = 0; // slot 0
    virtual ~Logger() = default;
};

class LoggerFinder
{
public:
    virtual Logger* findLogger() = 0; // slot 0
protected:
    virtual ~LoggerFinder() = default;
};
} // namespace abi10

//! TensorRT 11.x and TensorRT-RTX 1.x: both classes derive from IVersionedInterface.
namespace abi11
{
struct InterfaceInfo
{
    char const* kind;
    int32_t major;
    int32_t minor;
};

class VersionedInterface
{
public:
    virtual int32_t getAPILanguage() const noexcept = 0;         // slot 0
    virtual InterfaceInfo getInterfaceInfo() const noexcept = 0; // slot 1
    virtual ~VersionedInterface() noexcept = default;            // slots 2, 3
};

class Logger : public VersionedInterface
{
public:
    virtual void log(int32_t severity, char const* message) noexcept = 0; // slot 4
};

class LoggerFinder : public VersionedInterface
{
public:
    virtual Logger* findLogger() = 0; // slot 4
};

//! An object of this layout says what it is (slot 1); checked before calling its slot 4.
STN_CALLS_RUNTIME_OBJECTS bool isInterface(VersionedInterface const* object, char const* kind) noexcept
{
    InterfaceInfo const info = object->getInterfaceInfo();
    return info.kind != nullptr && std::strcmp(info.kind, kind) == 0 && info.major == 1;
}
} // namespace abi11

namespace
{
using GetLogger = void* (*) ();

//! Where messages go. Guarded by gLoggingMutex: logging is rare, and the finder and its layout
//! must change together.
struct LoggingTarget
{
    void* finder = nullptr;
    RuntimeAbi finderAbi = RuntimeAbi::kUnknown;
    GetLogger runtimeLogger = nullptr; // the fallback runtime's getLogger()
    RuntimeAbi runtimeAbi = RuntimeAbi::kUnknown;
};
std::mutex gLoggingMutex;
LoggingTarget gLoggingTarget;

bool isVersioned(RuntimeAbi abi)
{
    return abi == RuntimeAbi::kTensorRT11 || abi == RuntimeAbi::kTensorRTRtx1;
}

STN_CALLS_RUNTIME_OBJECTS void* findLogger(RuntimeAbi abi, void* finder)
{
    if (abi == RuntimeAbi::kTensorRT10)
    {
        return static_cast<abi10::LoggerFinder*>(finder)->findLogger();
    }
    if (isVersioned(abi))
    {
        auto* versioned = static_cast<abi11::LoggerFinder*>(finder);
        return abi11::isInterface(versioned, "ILoggerFinder") ? versioned->findLogger() : nullptr;
    }
    return nullptr;
}

STN_CALLS_RUNTIME_OBJECTS bool logThrough(RuntimeAbi abi, void* logger, int32_t severity, char const* line)
{
    if (abi == RuntimeAbi::kTensorRT10)
    {
        static_cast<abi10::Logger*>(logger)->log(severity, line);
        return true;
    }
    if (isVersioned(abi))
    {
        auto* versioned = static_cast<abi11::Logger*>(logger);
        if (abi11::isInterface(versioned, "ILogger"))
        {
            versioned->log(severity, line);
            return true;
        }
    }
    return false;
}

void logAt(nvinfer1::ILogger::Severity severity, char const* op, std::string const& message) noexcept
{
    try
    {
        std::string const line = std::string(op) + ": " + message;
        LoggingTarget target;
        {
            std::lock_guard<std::mutex> lock(gLoggingMutex);
            target = gLoggingTarget;
        }
        auto const level = static_cast<int32_t>(severity);
        void* logger = target.finder != nullptr ? findLogger(target.finderAbi, target.finder) : nullptr;
        if (logger != nullptr && logThrough(target.finderAbi, logger, level, line.c_str()))
        {
            return;
        }
        logger = target.runtimeLogger != nullptr ? target.runtimeLogger() : nullptr;
        if (logger != nullptr && logThrough(target.runtimeAbi, logger, level, line.c_str()))
        {
            return;
        }
        std::fprintf(stderr, "[stn_deploy_plugins] %s\n", line.c_str());
    }
    catch (...)
    {
        // Logging must never take the process down.
    }
}

char const* baseName(char const* path)
{
    char const* slash = std::strrchr(path, '/');
    return slash != nullptr ? slash + 1 : path;
}

// libnvinfer_plugin.so / libnvinfer_builder_resource.so do not match "libnvinfer.so".
bool isTensorRTName(char const* base)
{
    return std::strncmp(base, "libnvinfer.so", 13) == 0;
}

bool isRtxName(char const* base)
{
    return std::strncmp(base, "libtensorrt_rtx.so", 18) == 0;
}

bool isRuntimeName(char const* path)
{
    char const* base = baseName(path);
    return isTensorRTName(base) || isRtxName(base);
}

int firstRuntimeLibrary(dl_phdr_info* info, size_t /*size*/, void* data)
{
    if (info->dlpi_name != nullptr && isRuntimeName(info->dlpi_name))
    {
        *static_cast<std::string*>(data) = info->dlpi_name;
        return 1;
    }
    return 0;
}

//! The layout of a (non-RTX) TensorRT of this major.
RuntimeAbi tensorRTAbi(int32_t major)
{
    switch (major)
    {
    case 10: return RuntimeAbi::kTensorRT10;
    case 11: return RuntimeAbi::kTensorRT11;
    default: return RuntimeAbi::kUnknown;
    }
}

//! The layout the headers of this build describe: the contract of a finder made by code
//! compiled against them (a test driver, an application) rather than by a TensorRT library.
RuntimeAbi headerAbi()
{
    return tensorRTAbi(NV_TENSORRT_MAJOR);
}

} // namespace

void* loadedSymbol(std::string const& libraryPath, char const* name) noexcept
{
    // RTLD_NOLOAD: a handle to the copy already loaded, never a new load.
    void* handle = dlopen(libraryPath.c_str(), RTLD_NOLOAD | RTLD_LAZY);
    if (handle == nullptr)
    {
        return nullptr;
    }
    void* symbol = dlsym(handle, name);
    dlclose(handle); // drops only the reference RTLD_NOLOAD added; the library stays loaded
    return symbol;
}

void warnUnknownRuntime(Runtime const& runtime) noexcept
{
    static std::once_flag once;
    std::call_once(once, [&runtime] {
        std::fprintf(stderr,
            "[stn_deploy_plugins] %s (getInferLibVersion %d) is not a TensorRT whose interface layout this library "
            "knows (TensorRT 10.x, 11.x, TensorRT-RTX 1.x): its logger and registry are never called; messages go to "
            "stderr and only IPluginRegistry::loadLibrary registers the plugins\n",
            runtime.library.empty() ? "the TensorRT in this process" : runtime.library.c_str(), runtime.version);
    });
}

RuntimeAbi runtimeAbi(char const* libraryPath, int32_t version) noexcept
{
    char const* base = baseName(libraryPath);
    int32_t const major = version / 10000;
    if (isRtxName(base))
    {
        return major == 1 ? RuntimeAbi::kTensorRTRtx1 : RuntimeAbi::kUnknown;
    }
    return isTensorRTName(base) ? tensorRTAbi(major) : RuntimeAbi::kUnknown;
}

char const* runtimeAbiName(RuntimeAbi abi) noexcept
{
    switch (abi)
    {
    case RuntimeAbi::kUnknown: return "unknown";
    case RuntimeAbi::kTensorRT10: return "TensorRT 10";
    case RuntimeAbi::kTensorRT11: return "TensorRT 11";
    case RuntimeAbi::kTensorRTRtx1: return "TensorRT-RTX 1";
    }
    return "unknown";
}

Runtime identifyRuntime(std::string const& libraryPath) noexcept
{
    Runtime runtime;
    if (libraryPath.empty() || !isRuntimeName(libraryPath.c_str()))
    {
        return runtime;
    }
    runtime.library = libraryPath;
    using GetVersion = int32_t (*)();
    auto getVersion = reinterpret_cast<GetVersion>(loadedSymbol(libraryPath, "getInferLibVersion"));
    if (getVersion != nullptr)
    {
        runtime.version = getVersion();
        runtime.abi = runtimeAbi(libraryPath.c_str(), runtime.version);
    }
    return runtime;
}

Runtime loadedRuntime() noexcept
{
    std::string library;
    dl_iterate_phdr(firstRuntimeLibrary, &library);
    return identifyRuntime(library);
}

void setLoggerFinder(void* finder) noexcept
{
    Runtime owner;
    if (finder != nullptr)
    {
        // The finder's vtable lives in the library that made it: TensorRT's loadLibrary passes its own.
        Dl_info info{};
        if (dladdr(*static_cast<void* const*>(finder), &info) != 0 && info.dli_fname != nullptr)
        {
            owner = identifyRuntime(info.dli_fname);
        }
        if (owner.library.empty())
        {
            owner = loadedRuntime();
        }
        if (owner.library.empty())
        {
            owner.abi = headerAbi();
        }
        if (owner.abi == RuntimeAbi::kUnknown)
        {
            warnUnknownRuntime(owner);
        }
    }
    std::lock_guard<std::mutex> lock(gLoggingMutex);
    gLoggingTarget.finder = owner.abi != RuntimeAbi::kUnknown ? finder : nullptr;
    gLoggingTarget.finderAbi = owner.abi;
}

void setFallbackRuntime(Runtime const& runtime) noexcept
{
    GetLogger getLogger = runtime.abi != RuntimeAbi::kUnknown
        ? reinterpret_cast<GetLogger>(loadedSymbol(runtime.library, "getLogger"))
        : nullptr;
    std::lock_guard<std::mutex> lock(gLoggingMutex);
    gLoggingTarget.runtimeLogger = getLogger;
    gLoggingTarget.runtimeAbi = runtime.abi;
}

namespace
{
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
