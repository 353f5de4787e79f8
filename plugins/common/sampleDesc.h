/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * sampleDesc.h: validation of StnSampleDesc and the thread-local error message of the C API.
 * Shared by the CPU reference, the CUDA launchers and the TensorRT plugins. No TensorRT include.
 */
#pragma once

#include "gridSampleMath.h"
#include "stnKernelApi.h"

#include <string>

namespace stn_deploy
{

//! Records a one-line error for stn_last_error() and returns `code`.
int32_t setLastError(int32_t code, std::string const& message);

//! Empty string when the descriptor is valid, otherwise a one-line reason naming the field.
std::string validateDesc(StnSampleDesc const& d, bool fused);

//! The options of the maths header for a (validated) descriptor; `cuda` picks the default
//! semantics of STN_SEMANTICS_DEVICE.
math::SampleOptions sampleOptions(StnSampleDesc const& d, bool cuda);

//! Number of theta elements per batch item: 6 (2-D affine), 9 (projective), 12 (3-D affine).
inline int32_t thetaSize(StnSampleDesc const& d)
{
    return d.rank == 5 ? 12 : (d.transform == 1 ? 9 : 6);
}

} // namespace stn_deploy
