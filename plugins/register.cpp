/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * register.cpp: how TensorRT 10, TensorRT 11 and TensorRT-RTX 1 find this library's plugin creators.
 *
 * 1. getCreators / setLoggerFinder: the entry points of IPluginRegistry::loadLibrary
 *    (trtexec --dynamicPlugins, Triton's plugins= backend config, registry.load_library).
 * 2. Registration at load time: when the library is dlopen'ed into a process that already has
 *    libnvinfer.so.10 / .so.11 or libtensorrt_rtx.so.1 loaded, a static initializer registers the
 *    creators in that library's global registry (Polygraphy --plugins, trtexec --staticPlugins,
 *    LD_PRELOAD in Triton, ctypes.CDLL before parsing). No link-time dependency: the registry is
 *    found with dl_iterate_phdr + dlopen(RTLD_NOLOAD) + dlsym, because Python loads TensorRT with
 *    RTLD_LOCAL, so dlsym(RTLD_DEFAULT) sees nothing. When no TensorRT is loaded yet, the one pip
 *    installed for this Python (site-packages/tensorrt_libs, tensorrt_rtx_libs) is loaded, else
 *    one on the loader's path by name.
 *
 * Every call on an object TensorRT owns goes through the layout of the runtime loaded in the process
 * (RuntimeAbi, pluginUtils.h): the registry classes below, the logger classes in pluginUtils.cpp.
 * REGISTER_TENSORRT_PLUGIN cannot be used: it calls getPluginRegistry through the layout of the
 * headers it was compiled with, which is wrong in every other major.
 */
#include "affineGridSamplePlugin.h"
#include "cudaBuildInfo.h"
#include "gridSamplePlugin.h"
#include "pluginUtils.h"

#include <dlfcn.h>
#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#define STN_EXPORT extern "C" __attribute__((visibility("default")))

namespace stn_deploy
{
namespace plugin
{
//! IPluginRegistry as each TensorRT lays it out, written from the published headers
//! (NvInferRuntimeCommon.h, tags v10.14 and v11.1; slot tables in plugins/README.md). Only the
//! methods up to the last one called are declared. Never instantiated. Outside the unnamed
//! namespace on purpose: a class there has no derived classes elsewhere, so the compiler may turn
//! calls of its pure virtuals into __cxa_pure_virtual.
namespace abi10
{
class PluginRegistry
{
public:
    virtual bool registerCreatorV2(void* creator, char const* pluginNamespace) noexcept = 0; // 0, deprecated
    virtual void* const* getPluginCreatorList(int32_t* nbCreators) const noexcept = 0;      // 1, deprecated
    virtual void* getPluginCreator(char const* name, char const* version, char const* ns) noexcept = 0; // 2
    virtual ~PluginRegistry() noexcept = default;                                           // 3, 4
    virtual void setErrorRecorder(void* recorder) noexcept = 0;                             // 5
    virtual void* getErrorRecorder() const noexcept = 0;                                    // 6
    virtual bool deregisterCreatorV2(void const* creator) noexcept = 0;                     // 7, deprecated
    virtual bool isParentSearchEnabled() const = 0;                                         // 8
    virtual void setParentSearchEnabled(bool enabled) = 0;                                  // 9
    virtual void* loadLibrary(char const* path) noexcept = 0;                               // 10
    virtual void deregisterLibrary(void* handle) noexcept = 0;                              // 11
    virtual bool registerCreator(nvinfer1::IPluginCreatorInterface& creator, char const* ns) noexcept = 0; // 12
    virtual nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* nbCreators) const noexcept = 0; // 13
    virtual nvinfer1::IPluginCreatorInterface* getCreator(char const* name, char const* version, char const* ns) noexcept
        = 0;                                                                                      // 14
    virtual bool deregisterCreator(nvinfer1::IPluginCreatorInterface const& creator) noexcept = 0; // 15
};
} // namespace abi10

//! TensorRT 11.x and TensorRT-RTX 1.x: the four IPluginCreator methods are gone (RTX 1.7.1 was
//! also checked slot by slot: slot 8 registers, slot 9 lists, the 10.x slot 12 crashes).
namespace abi11
{
class PluginRegistry
{
public:
    virtual ~PluginRegistry() noexcept = default;                                           // 0, 1
    virtual void setErrorRecorder(void* recorder) noexcept = 0;                             // 2
    virtual void* getErrorRecorder() const noexcept = 0;                                    // 3
    virtual bool isParentSearchEnabled() const = 0;                                         // 4
    virtual void setParentSearchEnabled(bool enabled) = 0;                                  // 5
    virtual void* loadLibrary(char const* path) noexcept = 0;                               // 6
    virtual void deregisterLibrary(void* handle) noexcept = 0;                              // 7
    virtual bool registerCreator(nvinfer1::IPluginCreatorInterface& creator, char const* ns) noexcept = 0; // 8
    virtual nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* nbCreators) const noexcept = 0; // 9
    virtual nvinfer1::IPluginCreatorInterface* getCreator(char const* name, char const* version, char const* ns) noexcept
        = 0;                                                                                      // 10
    virtual bool deregisterCreator(nvinfer1::IPluginCreatorInterface const& creator) noexcept = 0; // 11
};
} // namespace abi11

namespace
{

nvinfer1::IPluginCreatorInterface* const* creatorList(int32_t& nbCreators)
{
    static GridSampleCreator gridSampleCreator;
    static AffineGridSampleCreator affineGridSampleCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&gridSampleCreator, &affineGridSampleCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
    return creators;
}

bool isTrue(char const* value)
{
    if (value == nullptr)
    {
        return false;
    }
    std::string v(value);
    std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return v == "1" || v == "true" || v == "yes" || v == "on";
}

bool isFile(std::string const& path)
{
    struct stat st
    {
    };
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string parentOf(std::string const& path)
{
    size_t const slash = path.find_last_of('/');
    return slash == std::string::npos ? std::string(".") : (slash == 0 ? std::string("/") : path.substr(0, slash));
}

//! sys.path of the Python running this process, when it is one and this thread holds its GIL
//! (ctypes.CDLL does: Polygraphy --plugins). Read through Python's C API found with dlsym, so the
//! library needs no libpython; without the GIL nothing is called (taking it under the loader's lock
//! could deadlock against a thread importing an extension). CPython 3.6-3.13 keep the GIL in
//! ctypes.CDLL and export these symbols (checked, also Debian's statically linked python3.11).
std::vector<std::string> pythonPath()
{
    std::vector<std::string> out;
    using IntFn = int (*)();
    using GetObject = void* (*) (char const*);
    using Size = ptrdiff_t (*)(void*);
    using Item = void* (*) (void*, ptrdiff_t);
    using Utf8 = char const* (*) (void*);
    using Clear = void (*)();
    using Occurred = void* (*) ();
    auto isInitialized = reinterpret_cast<IntFn>(dlsym(RTLD_DEFAULT, "Py_IsInitialized"));
    auto holdsGil = reinterpret_cast<IntFn>(dlsym(RTLD_DEFAULT, "PyGILState_Check"));
    auto getObject = reinterpret_cast<GetObject>(dlsym(RTLD_DEFAULT, "PySys_GetObject"));
    auto listSize = reinterpret_cast<Size>(dlsym(RTLD_DEFAULT, "PyList_Size"));
    auto listItem = reinterpret_cast<Item>(dlsym(RTLD_DEFAULT, "PyList_GetItem"));
    auto utf8 = reinterpret_cast<Utf8>(dlsym(RTLD_DEFAULT, "PyUnicode_AsUTF8"));
    auto clearError = reinterpret_cast<Clear>(dlsym(RTLD_DEFAULT, "PyErr_Clear"));
    auto errorOccurred = reinterpret_cast<Occurred>(dlsym(RTLD_DEFAULT, "PyErr_Occurred"));
    if (!isInitialized || !holdsGil || !getObject || !listSize || !listItem || !utf8 || !clearError || !errorOccurred
        || !isInitialized() || !holdsGil() || errorOccurred() != nullptr)
    {
        return out; // (an exception already pending is not ours to clear)
    }
    void* path = getObject("path"); // borrowed
    ptrdiff_t const n = path != nullptr ? listSize(path) : -1;
    for (ptrdiff_t i = 0; i < n; ++i)
    {
        char const* entry = utf8(listItem(path, i)); // NULL (with an error set) for a non-str entry
        if (entry != nullptr && *entry != '\0')
        {
            out.emplace_back(entry);
        }
    }
    clearError();
    return out;
}

void addSitePackages(std::string const& prefix, std::vector<std::string>& out)
{
    glob_t found{};
    if (glob((prefix + "/lib/python3*/site-packages").c_str(), 0, nullptr, &found) == 0)
    {
        for (size_t i = 0; i < found.gl_pathc; ++i)
        {
            out.emplace_back(found.gl_pathv[i]);
        }
    }
    globfree(&found);
}

//! argv[0] as the process was started, when it names a Python (LD_PRELOAD runs us before Python
//! has a sys.path). Not /proc/self/exe: a virtual environment's python is a symlink, and resolving
//! it loses the environment.
std::string pythonArgv0()
{
    std::FILE* cmdline = std::fopen("/proc/self/cmdline", "rb");
    if (cmdline == nullptr)
    {
        return {};
    }
    std::string argv0;
    for (int c = std::fgetc(cmdline); c != EOF && c != '\0'; c = std::fgetc(cmdline))
    {
        argv0 += static_cast<char>(c);
    }
    std::fclose(cmdline);
    char const* base = std::strrchr(argv0.c_str(), '/');
    bool const isPython = std::strncmp(base != nullptr ? base + 1 : argv0.c_str(), "python", 6) == 0;
    return isPython && base != nullptr ? argv0 : std::string(); // a bare "python" would need a PATH search
}

//! Folders that may hold a pip-installed TensorRT's tensorrt_libs / tensorrt_rtx_libs: the
//! site-packages this library is installed in (site-packages/stn_deploy/), the running Python's
//! sys.path, the active virtual environment's site-packages, and those of the Python this process
//! was started as (<prefix>/bin/python -> <prefix>/lib/python3*/site-packages).
std::vector<std::string> pipFolders()
{
    std::vector<std::string> out;
    Dl_info self{};
    if (dladdr(reinterpret_cast<void*>(&creatorList), &self) != 0 && self.dli_fname != nullptr)
    {
        out.push_back(parentOf(parentOf(self.dli_fname)));
    }
    for (std::string const& entry : pythonPath())
    {
        out.push_back(entry);
    }
    if (char const* venv = std::getenv("VIRTUAL_ENV"))
    {
        addSitePackages(venv, out);
    }
    std::string const python = pythonArgv0();
    if (!python.empty())
    {
        addSitePackages(parentOf(parentOf(python)), out);
    }
    return out;
}

//! What a plugin linked against libnvinfer gets from its DT_NEEDED entry, and more: Polygraphy's
//! --plugins and LD_PRELOAD load the library before TensorRT. Python's later import reuses the
//! copy loaded here (same path, same soname). The pip install of this Python comes first (it is the
//! TensorRT that Python will import; it is off the loader's path), then the loader's path.
//! TensorRT before TensorRT-RTX unless POLYGRAPHY_USE_TENSORRT_RTX says the process will use RTX.
//! STN_DEPLOY_PLUGINS_LOAD_TENSORRT=0 turns it off (kernels.py does, so the kernel API never pulls
//! TensorRT in).
bool loadTensorRT()
{
    char const* setting = std::getenv("STN_DEPLOY_PLUGINS_LOAD_TENSORRT");
    if (setting != nullptr && std::strcmp(setting, "0") == 0)
    {
        return false;
    }
    struct Candidate
    {
        char const* pipFolder;
        char const* soname;
    };
    std::vector<Candidate> candidates{{"tensorrt_libs", "libnvinfer.so.11"}, {"tensorrt_libs", "libnvinfer.so.10"}};
    Candidate const rtx{"tensorrt_rtx_libs", "libtensorrt_rtx.so.1"};
    candidates.insert(isTrue(std::getenv("POLYGRAPHY_USE_TENSORRT_RTX")) ? candidates.begin() : candidates.end(), rtx);
    // Never closed: the registry must outlive our creators' registration.
    std::vector<std::string> const folders = pipFolders();
    for (Candidate const& c : candidates)
    {
        for (std::string const& folder : folders)
        {
            std::string const path = folder + "/" + c.pipFolder + "/" + c.soname;
            if (isFile(path) && dlopen(path.c_str(), RTLD_LAZY | RTLD_LOCAL) != nullptr)
            {
                return true;
            }
        }
    }
    for (Candidate const& c : candidates)
    {
        if (dlopen(c.soname, RTLD_LAZY | RTLD_LOCAL) != nullptr)
        {
            return true;
        }
    }
    return false;
}

//! The process's runtime and its global registry (registry NULL when its layout is unknown).
struct HostRegistry
{
    Runtime runtime;
    void* registry = nullptr;
};

HostRegistry findHostRegistry()
{
    HostRegistry host;
    host.runtime = loadedRuntime();
    if (host.runtime.library.empty() && loadTensorRT())
    {
        host.runtime = loadedRuntime();
    }
    if (host.runtime.abi == RuntimeAbi::kUnknown)
    {
        return host;
    }
    using GetRegistry = void* (*) ();
    auto getRegistry = reinterpret_cast<GetRegistry>(loadedSymbol(host.runtime.library, "getPluginRegistry"));
    host.registry = getRegistry != nullptr ? getRegistry() : nullptr;
    return host;
}

STN_CALLS_RUNTIME_OBJECTS bool registerIn(HostRegistry const& host, nvinfer1::IPluginCreatorInterface& creator)
{
    if (host.runtime.abi == RuntimeAbi::kTensorRT10)
    {
        return static_cast<abi10::PluginRegistry*>(host.registry)->registerCreator(creator, "");
    }
    return static_cast<abi11::PluginRegistry*>(host.registry)->registerCreator(creator, "");
}

STN_CALLS_RUNTIME_OBJECTS bool deregisterIn(HostRegistry const& host, nvinfer1::IPluginCreatorInterface const& creator)
{
    if (host.runtime.abi == RuntimeAbi::kTensorRT10)
    {
        return static_cast<abi10::PluginRegistry*>(host.registry)->deregisterCreator(creator);
    }
    return static_cast<abi11::PluginRegistry*>(host.registry)->deregisterCreator(creator);
}

//! Where the load-time registration put our creators (registry NULL when it did not happen).
HostRegistry gAutoRegistered;

struct LoadTimeRegistration
{
    LoadTimeRegistration() noexcept
    {
        try
        {
            HostRegistry host = findHostRegistry();
            if (host.runtime.library.empty())
            {
                return; // no TensorRT here (ctypes use of the kernel API, ONNX Runtime, ...)
            }
            if (host.runtime.abi == RuntimeAbi::kUnknown)
            {
                warnUnknownRuntime(host.runtime);
                return;
            }
            // Until a loadLibrary hands over its finder, messages go to the runtime's global logger.
            setFallbackRuntime(host.runtime);
            if (host.registry == nullptr)
            {
                return;
            }
            int32_t n = 0;
            nvinfer1::IPluginCreatorInterface* const* creators = creatorList(n);
            for (int32_t i = 0; i < n; ++i)
            {
                if (!registerIn(host, *creators[i]))
                {
                    // Usually: another copy of this library registered the same names first.
                    logWarning("stn_deploy_plugins", "could not register a creator at load time (already registered?)");
                }
            }
            gAutoRegistered = host;
        }
        catch (...)
        {
            // A failed registration must not fail dlopen; getCreators still works.
        }
    }
};

LoadTimeRegistration gLoadTimeRegistration;

} // namespace
} // namespace plugin
} // namespace stn_deploy

STN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    stn_deploy::plugin::setLoggerFinder(static_cast<void*>(finder));
}

STN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    using namespace stn_deploy::plugin;
    nvinfer1::IPluginCreatorInterface* const* creators = creatorList(nbCreators);
    // loadLibrary refuses names that already exist in the registry ("plugin creator of
    // STNGridSample exists already"), so the load-time registration steps aside for it.
    if (gAutoRegistered.registry != nullptr)
    {
        for (int32_t i = 0; i < nbCreators; ++i)
        {
            deregisterIn(gAutoRegistered, *creators[i]);
        }
        gAutoRegistered = HostRegistry{};
    }
    return creators;
}

STN_EXPORT char const* stn_library_version(void)
{
    // The CUDA runtime is linked statically: the driver it needs is part of what was built. The
    // parenthesis lists the plugin versions (parsed by stn_deploy.doctor); keep it the only one.
    static std::string const version = "stn_deploy_plugins 1.0.0 (STNGridSample 1, STNAffineGridSample 1) CUDA runtime "
        + stn_deploy::cuda::cudaVersionText(CUDART_VERSION) + " static, needs driver >= "
        + stn_deploy::cuda::minimumDriver();
    return version.c_str();
}

//! The TensorRT headers this library was compiled with: major * 10000 + minor * 100 + patch.
STN_EXPORT int32_t stn_tensorrt_header_version(void)
{
    return NV_TENSORRT_MAJOR * 10000 + NV_TENSORRT_MINOR * 100 + NV_TENSORRT_PATCH;
}

//! The runtimes whose layouts this library calls through (comma-separated; pluginUtils.h RuntimeAbi).
STN_EXPORT char const* stn_supported_runtimes(void)
{
    return "TensorRT 10,TensorRT 11,TensorRT-RTX 1";
}

//! The runtime the load-time registration used, "" when none ("TensorRT-RTX 1 <path> 10701").
STN_EXPORT char const* stn_registered_runtime(void)
{
    using namespace stn_deploy::plugin;
    static std::string text;
    Runtime const& r = gAutoRegistered.runtime;
    text = gAutoRegistered.registry == nullptr
        ? std::string()
        : std::string(runtimeAbiName(r.abi)) + " " + r.library + " " + std::to_string(r.version);
    return text.c_str();
}
