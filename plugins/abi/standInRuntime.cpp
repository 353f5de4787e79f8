/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * standInRuntime.cpp: NOT TensorRT. A stand-in for the runtime library a plugin library is loaded
 * into, so that tests/test_plugin_abi.py can check plugins/register.cpp and the logging of
 * plugins/common/pluginUtils.cpp in TensorRT 10, 11 and TensorRT-RTX 1 processes without any of them.
 *
 * It reproduces only the contract the plugin library relies on, written from the published headers
 * of NVIDIA/TensorRT (tag v10.14 for STANDIN_LAYOUT=10, tag v11.1 for STANDIN_LAYOUT=11; files
 * NvInferRuntime.h, NvInferRuntimeBase.h, NvInferRuntimeCommon.h, NvInferPluginBase.h) - no header
 * text is copied, and no TensorRT header is included, so the layouts here are an independent
 * statement of those headers, not the plugin's own declarations:
 *   - extern "C" getInferLibVersion() (major * 10000 + minor * 100 + patch), getPluginRegistry(),
 *     getLogger() (the "global" logger, the latest Builder's in TensorRT);
 *   - IPluginRegistry in that major's virtual order, every slot a distinct function that records
 *     its name, so a call through the wrong table shows up as the wrong name (or a deprecated one);
 *   - ILoggerFinder / ILogger in that major's layout (11: IVersionedInterface first).
 * TensorRT-RTX 1.x is built from the 11 layout (the same registry order was found slot by slot in
 * RTX 1.7.1, and its finder answers getInterfaceInfo {"ILoggerFinder", 1, 0}) under its own name.
 *
 * Build (the test does it): g++ -shared -fPIC -DSTANDIN_LAYOUT=11 -DSTANDIN_VERSION=110100
 *   -Wl,-soname,libnvinfer.so.11 -o libnvinfer.so.11 standInRuntime.cpp -ldl
 * Besides the TensorRT entry points it exports standin_* functions for abiDriver.cpp: the names of
 * the calls made on its objects, the messages its loggers received, loadLibrary, and a creator's
 * createPlugin called the way the ONNX parser does.
 */
#include <dlfcn.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#ifndef STANDIN_LAYOUT
#error "define STANDIN_LAYOUT (10 or 11)"
#endif
#ifndef STANDIN_VERSION
#error "define STANDIN_VERSION (getInferLibVersion's value)"
#endif

#define STANDIN_EXPORT extern "C" __attribute__((visibility("default")))

namespace standin
{
std::string gCalls;    // "name;name;..." of every call on the objects this runtime owns
std::string gMessages; // "<logger>|<severity>|<message>\n" per message its loggers received

void called(char const* name)
{
    gCalls += name;
    gCalls += ";";
}

// ---- what the plugin implements (same in both majors; NvInferPluginBase.h, NvInferRuntime.h) ----

struct InterfaceInfo
{
    char const* kind;
    int32_t major;
    int32_t minor;
};

struct PluginField
{
    char const* name;
    void const* data;
    int32_t type; // PluginFieldType: kINT32 = 5
    int32_t length;
};

struct PluginFieldCollection
{
    int32_t nbFields;
    PluginField const* fields;
};

class VersionedInterface
{
public:
    virtual int32_t getAPILanguage() const noexcept = 0;         // 0
    virtual InterfaceInfo getInterfaceInfo() const noexcept = 0; // 1
    virtual ~VersionedInterface() noexcept = default;            // 2, 3
};

//! IPluginCreatorV3One (the plugin's creators): IVersionedInterface, then these.
class CreatorV3One : public VersionedInterface
{
public:
    virtual VersionedInterface* createPlugin(char const* name, PluginFieldCollection const* fc, int32_t phase) noexcept
        = 0;                                                                // 4
    virtual PluginFieldCollection const* getFieldNames() noexcept = 0;     // 5
    virtual char const* getPluginName() const noexcept = 0;                // 6
    virtual char const* getPluginVersion() const noexcept = 0;             // 7
    virtual char const* getPluginNamespace() const noexcept = 0;           // 8
};

using Creator = VersionedInterface; // IPluginCreatorInterface adds no method

// ---- what the runtime implements, in this major's layout ----

struct Registered
{
    Creator* creator;
    std::string ns;
};
std::vector<Registered> gCreators;

bool addCreator(Creator& creator, char const* ns)
{
    auto* v3 = static_cast<CreatorV3One*>(&creator);
    for (Registered const& r : gCreators)
    {
        if (std::strcmp(static_cast<CreatorV3One*>(r.creator)->getPluginName(), v3->getPluginName()) == 0)
        {
            return false; // "plugin creator of ... exists already", as TensorRT refuses it
        }
    }
    gCreators.push_back({&creator, ns != nullptr ? ns : ""});
    return true;
}

bool removeCreator(Creator const& creator)
{
    for (auto it = gCreators.begin(); it != gCreators.end(); ++it)
    {
        if (it->creator == &creator)
        {
            gCreators.erase(it);
            return true;
        }
    }
    return false;
}

std::vector<Creator*> gListed;

// The bodies both layouts share; each layout below still declares every slot itself, in its order,
// so the slot numbers stay readable (10 puts a deprecated slot between the shared ones).

//! IPluginRegistry::getAllCreators.
Creator* const* listCreators(int32_t* n)
{
    called("IPluginRegistry::getAllCreators");
    gListed.clear();
    for (Registered const& r : gCreators)
    {
        gListed.push_back(r.creator);
    }
    *n = static_cast<int32_t>(gListed.size());
    return gListed.data();
}

//! ILogger::log of the logger named `logger`.
void logged(char const* logger, int32_t severity, char const* message)
{
    called("ILogger::log");
    gMessages += std::string(logger) + "|" + std::to_string(severity) + "|" + message + "\n";
}

#if STANDIN_LAYOUT == 10
// v10.14 NvInferRuntime.h: ILogger and ILoggerFinder have no base class.
class Logger
{
public:
    explicit Logger(char const* name)
        : mName(name)
    {
    }
    virtual void log(int32_t severity, char const* message) noexcept // 0
    {
        logged(mName, severity, message);
    }
    virtual ~Logger() = default; // 1, 2

private:
    char const* mName;
};

class LoggerFinder
{
public:
    explicit LoggerFinder(Logger* logger)
        : mLogger(logger)
    {
    }
    virtual Logger* findLogger() // 0
    {
        called("ILoggerFinder::findLogger");
        return mLogger;
    }
    virtual ~LoggerFinder() = default; // 1, 2

private:
    Logger* mLogger;
};

// v10.14 NvInferRuntimeCommon.h: the deprecated IPluginCreator methods first.
class PluginRegistry
{
public:
    virtual bool registerCreatorV2(void*, char const*) noexcept // 0
    {
        called("IPluginRegistry::registerCreator(IPluginCreator)");
        return false;
    }
    virtual void* const* getPluginCreatorList(int32_t* n) const noexcept // 1
    {
        called("IPluginRegistry::getPluginCreatorList");
        *n = 0;
        return nullptr;
    }
    virtual void* getPluginCreator(char const*, char const*, char const*) noexcept // 2
    {
        called("IPluginRegistry::getPluginCreator");
        return nullptr;
    }
    virtual ~PluginRegistry() noexcept = default; // 3, 4
    virtual void setErrorRecorder(void*) noexcept // 5
    {
        called("IPluginRegistry::setErrorRecorder");
    }
    virtual void* getErrorRecorder() const noexcept // 6
    {
        called("IPluginRegistry::getErrorRecorder");
        return nullptr;
    }
    virtual bool deregisterCreatorV2(void const*) noexcept // 7
    {
        called("IPluginRegistry::deregisterCreator(IPluginCreator)");
        return false;
    }
    virtual bool isParentSearchEnabled() const // 8
    {
        called("IPluginRegistry::isParentSearchEnabled");
        return true;
    }
    virtual void setParentSearchEnabled(bool) // 9
    {
        called("IPluginRegistry::setParentSearchEnabled");
    }
    virtual void* loadLibrary(char const*) noexcept; // 10
    virtual void deregisterLibrary(void*) noexcept   // 11
    {
        called("IPluginRegistry::deregisterLibrary");
    }
    virtual bool registerCreator(Creator& creator, char const* ns) noexcept // 12
    {
        called("IPluginRegistry::registerCreator");
        return addCreator(creator, ns);
    }
    virtual Creator* const* getAllCreators(int32_t* n) const noexcept // 13
    {
        return listCreators(n);
    }
    virtual Creator* getCreator(char const*, char const*, char const*) noexcept // 14
    {
        called("IPluginRegistry::getCreator");
        return nullptr;
    }
    virtual bool deregisterCreator(Creator const& creator) noexcept // 15
    {
        called("IPluginRegistry::deregisterCreator");
        return removeCreator(creator);
    }
    virtual void* acquirePluginResource(char const*, void*) noexcept // 16
    {
        called("IPluginRegistry::acquirePluginResource");
        return nullptr;
    }
    virtual int32_t releasePluginResource(char const*) noexcept // 17
    {
        called("IPluginRegistry::releasePluginResource");
        return -1;
    }
    virtual Creator* const* getAllCreatorsRecursive(int32_t* n) noexcept // 18
    {
        called("IPluginRegistry::getAllCreatorsRecursive");
        *n = 0;
        return nullptr;
    }
};
#elif STANDIN_LAYOUT == 11
// v11.1 NvInferRuntime.h: ILogger and ILoggerFinder derive from IVersionedInterface.
class Logger : public VersionedInterface
{
public:
    explicit Logger(char const* name)
        : mName(name)
    {
    }
    int32_t getAPILanguage() const noexcept override // 0
    {
        called("ILogger::getAPILanguage");
        return 0;
    }
    InterfaceInfo getInterfaceInfo() const noexcept override // 1
    {
        called("ILogger::getInterfaceInfo");
        return {"ILogger", 1, 0};
    }
    virtual void log(int32_t severity, char const* message) noexcept // 4
    {
        logged(mName, severity, message);
    }

private:
    char const* mName;
};

class LoggerFinder : public VersionedInterface
{
public:
    explicit LoggerFinder(Logger* logger)
        : mLogger(logger)
    {
    }
    int32_t getAPILanguage() const noexcept override // 0
    {
        called("ILoggerFinder::getAPILanguage");
        return 0;
    }
    InterfaceInfo getInterfaceInfo() const noexcept override // 1
    {
        called("ILoggerFinder::getInterfaceInfo");
        return {"ILoggerFinder", 1, 0};
    }
    virtual Logger* findLogger() // 4
    {
        called("ILoggerFinder::findLogger");
        return mLogger;
    }

private:
    Logger* mLogger;
};

// v11.1 NvInferRuntimeCommon.h: destructor first, no IPluginCreator methods.
class PluginRegistry
{
public:
    virtual ~PluginRegistry() noexcept = default; // 0, 1
    virtual void setErrorRecorder(void*) noexcept // 2
    {
        called("IPluginRegistry::setErrorRecorder");
    }
    virtual void* getErrorRecorder() const noexcept // 3
    {
        called("IPluginRegistry::getErrorRecorder");
        return nullptr;
    }
    virtual bool isParentSearchEnabled() const // 4
    {
        called("IPluginRegistry::isParentSearchEnabled");
        return true;
    }
    virtual void setParentSearchEnabled(bool) // 5
    {
        called("IPluginRegistry::setParentSearchEnabled");
    }
    virtual void* loadLibrary(char const*) noexcept; // 6
    virtual void deregisterLibrary(void*) noexcept   // 7
    {
        called("IPluginRegistry::deregisterLibrary");
    }
    virtual bool registerCreator(Creator& creator, char const* ns) noexcept // 8
    {
        called("IPluginRegistry::registerCreator");
        return addCreator(creator, ns);
    }
    virtual Creator* const* getAllCreators(int32_t* n) const noexcept // 9
    {
        return listCreators(n);
    }
    virtual Creator* getCreator(char const*, char const*, char const*) noexcept // 10
    {
        called("IPluginRegistry::getCreator");
        return nullptr;
    }
    virtual bool deregisterCreator(Creator const& creator) noexcept // 11
    {
        called("IPluginRegistry::deregisterCreator");
        return removeCreator(creator);
    }
    virtual void* acquirePluginResource(char const*, void*) noexcept // 12
    {
        called("IPluginRegistry::acquirePluginResource");
        return nullptr;
    }
    virtual int32_t releasePluginResource(char const*) noexcept // 13
    {
        called("IPluginRegistry::releasePluginResource");
        return -1;
    }
    virtual Creator* const* getAllCreatorsRecursive(int32_t* n) noexcept // 14
    {
        called("IPluginRegistry::getAllCreatorsRecursive");
        *n = 0;
        return nullptr;
    }
};
#else
#error "STANDIN_LAYOUT must be 10 or 11"
#endif

Logger gBuilderLogger("builder");  // what a loadLibrary's finder hands out
Logger gGlobalLogger("global");    // what getLogger() returns
LoggerFinder gFinder(&gBuilderLogger);
PluginRegistry gRegistry;

//! What TensorRT's loadLibrary does with a plugin library: dlopen, setLoggerFinder, getCreators,
//! register each creator (refusing names that exist already).
void* PluginRegistry::loadLibrary(char const* path) noexcept
{
    called("IPluginRegistry::loadLibrary");
    void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr)
    {
        return nullptr;
    }
    using SetFinder = void (*)(void*);
    using GetCreators = Creator* const* (*) (int32_t&);
    auto setFinder = reinterpret_cast<SetFinder>(dlsym(handle, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(handle, "getCreators"));
    if (setFinder == nullptr || getCreators == nullptr)
    {
        return nullptr;
    }
    setFinder(&gFinder);
    int32_t n = 0;
    Creator* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        if (!addCreator(*creators[i], ""))
        {
            return nullptr;
        }
    }
    return handle;
}
} // namespace standin

STANDIN_EXPORT int32_t getInferLibVersion() noexcept
{
    return STANDIN_VERSION;
}

STANDIN_EXPORT void* getPluginRegistry() noexcept
{
    return &standin::gRegistry;
}

STANDIN_EXPORT void* getLogger() noexcept
{
    return &standin::gGlobalLogger;
}

STANDIN_EXPORT char const* standin_calls()
{
    return standin::gCalls.c_str();
}

STANDIN_EXPORT char const* standin_messages()
{
    return standin::gMessages.c_str();
}

STANDIN_EXPORT void standin_reset()
{
    standin::gCalls.clear();
    standin::gMessages.clear();
}

STANDIN_EXPORT int32_t standin_load_library(char const* path)
{
    return standin::gRegistry.loadLibrary(path) != nullptr ? 1 : 0;
}

//! "name,name" of the registered creators, in registration order.
STANDIN_EXPORT char const* standin_creator_names()
{
    static std::string names;
    names.clear();
    for (standin::Registered const& r : standin::gCreators)
    {
        names += (names.empty() ? "" : ",");
        names += static_cast<standin::CreatorV3One*>(r.creator)->getPluginName();
    }
    return names.c_str();
}

//! createPlugin of a registered creator with one kINT32 field, as the ONNX parser calls it in the
//! build phase: 1 created (and destroyed), 0 refused, -1 no such creator.
STANDIN_EXPORT int32_t standin_create_plugin(char const* creatorName, char const* field, int32_t value)
{
    for (standin::Registered const& r : standin::gCreators)
    {
        auto* creator = static_cast<standin::CreatorV3One*>(r.creator);
        if (std::strcmp(creator->getPluginName(), creatorName) != 0)
        {
            continue;
        }
        standin::PluginField const f{field, &value, 5, 1};
        standin::PluginFieldCollection const fc{1, &f};
        standin::VersionedInterface* plugin = creator->createPlugin("node", &fc, 0);
        delete plugin; // IPluginV3's virtual destructor
        return plugin != nullptr ? 1 : 0;
    }
    return -1;
}
