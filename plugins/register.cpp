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
#include "gridSamplePlugin.h"
#include "pluginUtils.h"

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
    return "stn_deploy_plugins 1.0.0 (STNGridSample 1, STNAffineGridSample 1)";
}
