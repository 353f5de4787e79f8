/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * cudaBuildInfo.h: what the library was built with (CUDA runtime, architectures) and what that
 * needs (the minimum driver), plus the one-line CUDA error text of every message. Host code only.
 */
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#ifndef STN_CUDA_ARCHS_TEXT
#define STN_CUDA_ARCHS_TEXT "unknown" // CMake passes the list it built (STN_CUDA_ARCHITECTURES)
#endif

namespace stn_deploy
{
namespace cuda
{

//! "cudaErrorName: text", as cudaGetErrorName / cudaGetErrorString give them.
inline std::string cudaErrorText(cudaError_t e)
{
    return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

//! "13.0" for a CUDA version number such as 13000 (CUDART_VERSION, cudaDriverGetVersion).
inline std::string cudaVersionText(int v)
{
    return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 10);
}

//! The oldest Linux driver that runs code built with this toolkit: CUDA 13 needs r580; CUDA 12
//! runs on r525+ through minor-version compatibility (SASS only: a driver older than the toolkit
//! cannot JIT the toolkit's PTX).
constexpr char const* minimumDriver()
{
#if CUDART_VERSION >= 13000
    return "580.65.06";
#elif CUDART_VERSION >= 12000
    return "525.60.13";
#else
    return "450.80.02";
#endif
}

} // namespace cuda
} // namespace stn_deploy
