/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * gridSampleKernel.h: CUDA launcher of STNGridSample on raw device pointers (no TensorRT include).
 */
#pragma once

#include "stnKernelApi.h"

#include <cuda_runtime_api.h>

namespace stn_deploy
{

//! out = grid_sample(x, grid) for a validated descriptor (rank 4 or 5). Asynchronous on `stream`.
//! Returns STN_OK or STN_ERROR_CUDA (message via stn_last_error()).
int32_t launchGridSample(StnSampleDesc const& desc, void const* x, void const* grid, void* out, cudaStream_t stream);

} // namespace stn_deploy
