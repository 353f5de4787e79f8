/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * register.cpp: the two entry points TensorRT and TensorRT-RTX look for when they load this
 * library (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins, polygraphy --plugins ...):
 *   getCreators(int32_t&) -> the plugin creators (IPluginCreatorV3One, empty namespace)
 *   setLoggerFinder(ILoggerFinder*) -> where our messages go
 * No REGISTER_TENSORRT_PLUGIN, getPluginRegistry or getLogger: they do not work with RTX.
 */
#include "affineGridSamplePlugin.h"
#include "cudaBuildInfo.h"
#include "gridSamplePlugin.h"
#include "pluginUtils.h"

#include <string>

#define STN_EXPORT extern "C" __attribute__((visibility("default")))

STN_EXPORT void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    stn_deploy::plugin::setLoggerFinder(finder);
}

STN_EXPORT nvinfer1::IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static stn_deploy::plugin::GridSampleCreator gridSampleCreator;
    static stn_deploy::plugin::AffineGridSampleCreator affineGridSampleCreator;
    static nvinfer1::IPluginCreatorInterface* const creators[] = {&gridSampleCreator, &affineGridSampleCreator};
    nbCreators = static_cast<int32_t>(sizeof(creators) / sizeof(creators[0]));
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
