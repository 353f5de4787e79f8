/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * cudaBuildInfo.cpp: the C API's build facts (stnKernelApi.h): CUDA runtime, minimum driver,
 * architectures, and the driver found at run time.
 */
#include "cudaBuildInfo.h"
#include "stnKernelApi.h"

extern "C" STN_API int32_t stn_cuda_runtime_version(void)
{
    return CUDART_VERSION;
}

extern "C" STN_API char const* stn_cuda_min_driver(void)
{
    return stn_deploy::cuda::minimumDriver();
}

extern "C" STN_API char const* stn_cuda_architectures(void)
{
    return STN_CUDA_ARCHS_TEXT;
}

extern "C" STN_API int32_t stn_cuda_driver_version(void)
{
    int version = 0;
    if (cudaDriverGetVersion(&version) != cudaSuccess)
    {
        cudaGetLastError();
        return 0;
    }
    return version;
}
