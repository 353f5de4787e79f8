/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * stnKernelApi.h: the plain C entry points of libstn_deploy_plugins.so (no TensorRT types).
 * Bound in Python by stn_deploy/kernels.py (ctypes). Tensors are dense, contiguous, row-major
 * (NCHW / NCDHW; grid [N, Ho, Wo, 2] / [N, Do, Ho, Wo, 3]; theta [N, 2, 3] / [N, 3, 3] / [N, 3, 4]).
 *
 * Every function returns STN_OK (0) or an error code; stn_last_error() then returns a one-line
 * message (thread-local, valid until the next call on the same thread).
 */
#ifndef STN_KERNEL_API_H
#define STN_KERNEL_API_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STN_API __attribute__((visibility("default")))

/* Version of this C ABI (StnSampleDesc layout and function signatures). */
#define STN_ABI_VERSION 1

/* Element types of X / output (grid or theta: STN_DTYPE_FLOAT32 or the dtype of X). */
enum
{
    STN_DTYPE_FLOAT32 = 0,
    STN_DTYPE_FLOAT16 = 1,
    STN_DTYPE_BFLOAT16 = 2
};

/* Return codes. */
enum
{
    STN_OK = 0,
    STN_ERROR_INVALID_ARGUMENT = 1,
    STN_ERROR_CUDA = 2,
    STN_ERROR_NO_CUDA = 3
};

/* Semantics for non-finite coordinates (see plugins/common/gridSampleMath.h). */
enum
{
    STN_SEMANTICS_DEVICE = -1, /* PyTorch on the same device: CUDA for the CUDA entry points, the
                                  CPU kernel of the rank (4-D vectorised, 5-D scalar) on the CPU */
    STN_SEMANTICS_ATEN_CUDA = 0,
    STN_SEMANTICS_ATEN_CPU_4D = 1,
    STN_SEMANTICS_ATEN_CPU_5D = 2
};

typedef struct StnSampleDesc
{
    int32_t rank;               /* 4 (images) or 5 (volumes) */
    int32_t interpolation_mode; /* 0 bilinear, 1 nearest, 2 bicubic (rank 4 only) */
    int32_t padding_mode;       /* 0 zeros, 1 border, 2 reflection */
    int32_t align_corners;      /* 0 or 1 */
    int32_t transform;          /* fused op only: 0 affine ([N,2,3] / [N,3,4]), 1 projective ([N,3,3]) */
    int32_t semantics;          /* STN_SEMANTICS_* */
    int32_t x_dtype;            /* STN_DTYPE_* of X and of the output */
    int32_t coord_dtype;        /* STN_DTYPE_* of grid / theta: FLOAT32 or x_dtype */
    int64_t n, c;               /* batch, channels */
    int64_t in_d, in_h, in_w;   /* input spatial size; in_d = 1 for rank 4 */
    int64_t out_d, out_h, out_w; /* output spatial size; out_d = 1 for rank 4 */
} StnSampleDesc;

/* CPU reference (the maths header compiled for the host). num_threads <= 1: single-threaded. */
STN_API int32_t stn_grid_sample_cpu(
    StnSampleDesc const* desc, void const* x, void const* grid, void* out, int32_t num_threads);
STN_API int32_t stn_affine_grid_sample_cpu(
    StnSampleDesc const* desc, void const* x, void const* theta, void* out, int32_t num_threads);

/* CUDA launchers on device pointers; stream is a cudaStream_t (NULL = legacy default stream).
 * Asynchronous: errors of the launch itself are returned, kernel faults surface later. */
STN_API int32_t stn_grid_sample_cuda(
    StnSampleDesc const* desc, void const* x, void const* grid, void* out, void* stream);
STN_API int32_t stn_affine_grid_sample_cuda(
    StnSampleDesc const* desc, void const* x, void const* theta, void* out, void* stream);

/* Checks a descriptor without running anything (fused: 1 for STNAffineGridSample). */
STN_API int32_t stn_validate_desc(StnSampleDesc const* desc, int32_t fused);

/* What the library was built with and needs (additions of ABI 1, absent from older builds):
 * CUDART_VERSION of the CUDA runtime it links (e.g. 13000), the oldest Linux driver that runs
 * it (e.g. "580.65.06"), its CUDA architectures (CMake syntax, e.g. "75-real;...;75-virtual"),
 * and the installed driver's CUDA version (cudaDriverGetVersion; 0 when there is no driver). */
STN_API int32_t stn_cuda_runtime_version(void);
STN_API char const* stn_cuda_min_driver(void);
STN_API char const* stn_cuda_architectures(void);
STN_API int32_t stn_cuda_driver_version(void);

STN_API char const* stn_last_error(void);
STN_API int32_t stn_abi_version(void);
STN_API char const* stn_library_version(void);

#ifdef __cplusplus
}
#endif

#endif /* STN_KERNEL_API_H */
