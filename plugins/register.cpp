/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * register.cpp: how TensorRT and TensorRT-RTX find this library's plugin creators.
 *
 * 1. getCreators / setLoggerFinder: the entry points of IPluginRegistry::loadLibrary
 *    (trtexec --dynamicPlugins, Triton's plugins= backend config, registry.load_library).
 * 2. Registration at load time: when the library is dlopen'ed into a process that already has
 *    libnvinfer (TensorRT 10) or libtensorrt_rtx (TensorRT-RTX 1) loaded, a static initializer
 *    registers the creators in that library's global registry (Polygraphy --plugins, trtexec
 *    --staticPlugins, LD_PRELOAD in Triton, ctypes.CDLL before parsing). No link-time
 *    dependency: the registry is found with dl_iterate_phdr + dlopen(RTLD_NOLOAD) + dlsym,
 *    because Python loads TensorRT with RTLD_LOCAL, so dlsym(RTLD_DEFAULT) sees nothing.
 *    When no TensorRT is loaded yet, libnvinfer.so.10 / libtensorrt_rtx.so.1 is loaded by name.
 *
 * REGISTER_TENSORRT_PLUGIN cannot be used: it links getPluginRegistry and calls it through the
 * 10.x IPluginRegistry vtable, and TensorRT-RTX's registry has a different one (see below).
 */
#include "affineGridSamplePlugin.h"
#include "cudaBuildInfo.h"
#include "gridSamplePlugin.h"
#include "pluginUtils.h"

#include <dlfcn.h>
#include <link.h>

#include <cstdlib>
#include <cstring>
#include <string>

#define STN_EXPORT extern "C" __attribute__((visibility("default")))

namespace stn_deploy
{
namespace plugin
{
//! TensorRT-RTX 1.x's IPluginRegistry: the 10.x interface without its four deprecated methods
//! (registerCreator(IPluginCreator&), getPluginCreatorList, getPluginCreator,
//! deregisterCreator(IPluginCreator const&)). Verified on RTX 1.7.1 by calling each slot: the
//! 10.x header's registerCreator slot (12) crashes there; slot 8 registers, slot 9 lists.
//! Only the methods up to deregisterCreator are declared; the rest are never called.
//! Outside the unnamed namespace on purpose: a class there has no derived classes elsewhere, so
//! the compiler may turn calls of its pure virtuals into __cxa_pure_virtual.
class RtxPluginRegistry
{
public:
    virtual ~RtxPluginRegistry() noexcept = default;
    virtual void setErrorRecorder(void* recorder) noexcept = 0;
    virtual void* getErrorRecorder() const noexcept = 0;
    virtual bool isParentSearchEnabled() const = 0;
    virtual void setParentSearchEnabled(bool enabled) = 0;
    virtual void* loadLibrary(char const* path) noexcept = 0;
    virtual void deregisterLibrary(void* handle) noexcept = 0;
    virtual bool registerCreator(nvinfer1::IPluginCreatorInterface& creator, char const* pluginNamespace) noexcept = 0;
    virtual nvinfer1::IPluginCreatorInterface* const* getAllCreators(int32_t* nbCreators) const noexcept = 0;
    virtual nvinfer1::IPluginCreatorInterface* getCreator(
        char const* name, char const* version, char const* pluginNamespace) noexcept
        = 0;
    virtual bool deregisterCreator(nvinfer1::IPluginCreatorInterface const& creator) noexcept = 0;
};

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

enum class RegistryAbi
{
    kNone,
    kTensorRT10,   // nvinfer1::IPluginRegistry of the 10.x headers we compile against
    kTensorRTRtx1, // RtxPluginRegistry
};

struct HostRegistry
{
    RegistryAbi abi = RegistryAbi::kNone;
    void* registry = nullptr;
    std::string library;
    int32_t version = 0; // getInferLibVersion(): major * 10000 + minor * 100 + patch
};

bool startsWith(char const* s, char const* prefix)
{
    return std::strncmp(s, prefix, std::strlen(prefix)) == 0;
}

int findRuntimeLibrary(dl_phdr_info* info, size_t /*size*/, void* data)
{
    char const* path = info->dlpi_name;
    if (path == nullptr || *path == '\0')
    {
        return 0;
    }
    char const* slash = std::strrchr(path, '/');
    char const* base = slash != nullptr ? slash + 1 : path;
    // libnvinfer_plugin.so / libnvinfer_builder_resource.so do not match "libnvinfer.so".
    if (startsWith(base, "libnvinfer.so") || startsWith(base, "libtensorrt_rtx.so"))
    {
        static_cast<HostRegistry*>(data)->library = path;
        return 1;
    }
    return 0;
}

//! What a plugin linked against libnvinfer gets from its DT_NEEDED entry: TensorRT loaded with
//! the library, found by the loader's search path (LD_LIBRARY_PATH, ldconfig). Needed because
//! Polygraphy's --plugins and LD_PRELOAD load the library before TensorRT. Python's later
//! import reuses the copy loaded here (same soname). STN_DEPLOY_PLUGINS_LOAD_TENSORRT=0 turns
//! it off (kernels.py does, so the kernel API never pulls TensorRT in).
bool loadTensorRTByName()
{
    char const* setting = std::getenv("STN_DEPLOY_PLUGINS_LOAD_TENSORRT");
    if (setting != nullptr && std::strcmp(setting, "0") == 0)
    {
        return false;
    }
    for (char const* soname : {"libnvinfer.so.10", "libtensorrt_rtx.so.1"})
    {
        // Never closed: the registry must outlive our creators' registration.
        if (dlopen(soname, RTLD_LAZY | RTLD_LOCAL) != nullptr)
        {
            return true;
        }
    }
    return false;
}

//! The registry of the TensorRT loaded in this process, or kNone.
HostRegistry findHostRegistry()
{
    HostRegistry host;
    dl_iterate_phdr(findRuntimeLibrary, &host);
    if (host.library.empty() && loadTensorRTByName())
    {
        dl_iterate_phdr(findRuntimeLibrary, &host);
    }
    if (host.library.empty())
    {
        return host; // no TensorRT here (ctypes use of the kernel API, ONNX Runtime, ...)
    }
    // RTLD_NOLOAD: a handle to the copy already loaded, never a new load.
    void* handle = dlopen(host.library.c_str(), RTLD_NOLOAD | RTLD_LAZY);
    if (handle == nullptr)
    {
        return host;
    }
    using GetRegistry = void* (*) ();
    using GetVersion = int32_t (*)();
    auto getRegistry = reinterpret_cast<GetRegistry>(dlsym(handle, "getPluginRegistry"));
    auto getVersion = reinterpret_cast<GetVersion>(dlsym(handle, "getInferLibVersion"));
    dlclose(handle); // drops only the reference RTLD_NOLOAD added
    if (getRegistry == nullptr || getVersion == nullptr)
    {
        return host;
    }
    host.version = getVersion();
    int32_t const major = host.version / 10000;
    bool const rtx = std::strstr(host.library.c_str(), "libtensorrt_rtx.so") != nullptr;
    if (rtx && major == 1)
    {
        host.abi = RegistryAbi::kTensorRTRtx1;
    }
    else if (!rtx && major == 10)
    {
        host.abi = RegistryAbi::kTensorRT10;
    }
    if (host.abi != RegistryAbi::kNone)
    {
        host.registry = getRegistry();
    }
    return host;
}

bool registerIn(HostRegistry const& host, nvinfer1::IPluginCreatorInterface& creator)
{
    if (host.abi == RegistryAbi::kTensorRTRtx1)
    {
        return static_cast<RtxPluginRegistry*>(host.registry)->registerCreator(creator, "");
    }
    return static_cast<nvinfer1::IPluginRegistry*>(host.registry)->registerCreator(creator, "");
}

bool deregisterIn(HostRegistry const& host, nvinfer1::IPluginCreatorInterface const& creator)
{
    if (host.abi == RegistryAbi::kTensorRTRtx1)
    {
        return static_cast<RtxPluginRegistry*>(host.registry)->deregisterCreator(creator);
    }
    return static_cast<nvinfer1::IPluginRegistry*>(host.registry)->deregisterCreator(creator);
}

//! Where the load-time registration put our creators (kNone when it did not happen).
HostRegistry gAutoRegistered;

struct LoadTimeRegistration
{
    LoadTimeRegistration() noexcept
    {
        try
        {
            HostRegistry host = findHostRegistry();
            if (host.abi == RegistryAbi::kNone)
            {
                if (!host.library.empty())
                {
                    logWarning("stn_deploy_plugins",
                        "not registering at load time: " + host.library + " (version " + std::to_string(host.version)
                            + ") is neither TensorRT 10 nor TensorRT-RTX 1; load the library with "
                              "IPluginRegistry::loadLibrary instead");
                }
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
    stn_deploy::plugin::setLoggerFinder(finder);
}

STN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    using namespace stn_deploy::plugin;
    nvinfer1::IPluginCreatorInterface* const* creators = creatorList(nbCreators);
    // loadLibrary refuses names that already exist in the registry ("plugin creator of
    // STNGridSample exists already"), so the load-time registration steps aside for it.
    if (gAutoRegistered.abi != RegistryAbi::kNone)
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
