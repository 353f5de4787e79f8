/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * affineGridSampleKernel.h: CUDA launcher of STNAffineGridSample (fused affine_grid + grid_sample,
 * no grid tensor in memory) on raw device pointers (no TensorRT include).
 */
#pragma once

#include "stnKernelApi.h"

#include <cuda_runtime_api.h>

namespace stn_deploy
{

//! out = grid_sample(x, affine_grid(theta, size)) (projective: homogeneous divide) for a validated
//! descriptor. Asynchronous on `stream`. Returns STN_OK or STN_ERROR_CUDA.
int32_t launchAffineGridSample(
    StnSampleDesc const& desc, void const* x, void const* theta, void* out, cudaStream_t stream);

} // namespace stn_deploy
