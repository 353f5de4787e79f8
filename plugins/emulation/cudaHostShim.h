/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * cudaHostShim.h: force-included (g++ -include) when the plugin's .cu files are compiled as host
 * C++ for the CUDA host emulation (STN_CUDA_HOST_EMULATION). The kernels and launchers compile
 * as written: the host-side __half / __nv_bfloat16 / float2 / dim3 types come from CUDA's own
 * headers, and this file adds what only nvcc provides:
 *   - threadIdx, blockIdx, blockDim, gridDim: thread-locals set by the emulated launch;
 *   - __ldg (a plain load), __syncthreads (a block barrier), __shared__ (block-shared storage);
 *   - STN_LAUNCH (kernelCommon.cuh) routes `kernel<<<...>>>(args)` to stn_emu::launch, which runs
 *     every (block, thread) of the grid.
 * Blocks run one after another; the threads of a block run as fibers, each until it finishes or
 * reaches a barrier, so barrier-free kernels run thread by thread (an exact schedule for them:
 * no thread reads what another writes) and kernels with barriers run in phases between barriers
 * (__syncthreads for the block, __syncwarp and the full-mask warp intrinsics __shfl*_sync /
 * __ballot_sync / __any_sync / __all_sync for a warp), with __shared__ storage common to the
 * block. Not provided: atomics, partial warp masks, cooperative groups: a kernel that uses one
 * fails to compile (or aborts) here, so it cannot ship untested. The runtime API the launchers call (cudaGetLastError, ...) is emulated in
 * cudaHostRuntime.cpp, with hooks for tests (stn_emu_*).
 */
#pragma once

#if defined(__CUDACC__)
#error "cudaHostShim.h is for host compilers only (the CUDA host emulation)"
#endif

#ifndef STN_CUDA_HOST_EMULATION
#define STN_CUDA_HOST_EMULATION 1
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <functional>

extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;

//! Read-only cache load: a plain load on the host.
template <typename T>
inline T __ldg(T const* p)
{
    return *p;
}

// CUDA's headers define the execution-space keywords as nothing for a host compiler, but not this one.
// ...and __maxnreg__ as an attribute g++ does not know.
#undef __maxnreg__
#define __maxnreg__(...)
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

// One copy per program, used by one block at a time (blocks run one after another): exactly
// the storage a block's threads share. The launch zero-fills nothing, as CUDA.
#undef __shared__
#define __shared__ static

namespace stn_emu
{

//! Runs body() once for every (block, thread) of the launch; a block's threads are fibers that
//! switch at __syncthreads. Returns the launch's cudaError_t (also recorded as the last error).
cudaError_t runGrid(dim3 grid, dim3 block, size_t sharedBytes, std::function<void()> const& body);

//! Block barrier of the emulated block (outside a launch: aborts).
void syncThreads();
//! Warp barrier; `mask` must name every lane of the warp (partial masks are not emulated).
void syncWarp(uint32_t mask);
//! Lane index of the running thread (linear thread index % 32).
uint32_t laneId();
//! Every lane of the warp contributes `bytes` (<= 16) from `mine`; `all` receives the 32 lanes'
//! values (zero past the end of a partial last warp). A warp-synchronous call.
void warpExchange(uint32_t mask, void const* mine, size_t bytes, void* all);

template <typename T>
T shuffleFrom(uint32_t mask, T var, uint32_t source)
{
    static_assert(sizeof(T) <= 16, "a warp shuffle moves at most 16 bytes");
    T all[32];
    warpExchange(mask, &var, sizeof(T), all);
    return all[source & 31u];
}

template <typename Kernel>
struct Launch
{
    dim3 grid;
    dim3 block;
    size_t sharedBytes;
    Kernel* kernel;

    // Arguments are evaluated and copied once, then copied again into each thread's parameters,
    // as a CUDA launch gives every thread its own copy of the parameter space.
    template <typename... Args>
    void operator()(Args... args) const
    {
        runGrid(grid, block, sharedBytes, [&] { kernel(args...); });
    }
};

template <typename Kernel>
Launch<Kernel> launch(dim3 grid, dim3 block, size_t sharedBytes, cudaStream_t /*stream*/, Kernel* kernel)
{
    return Launch<Kernel>{grid, block, sharedBytes, kernel};
}

} // namespace stn_emu

inline void __syncthreads()
{
    stn_emu::syncThreads();
}

// Warp intrinsics: every lane of the warp must take part (a full mask), as the kernels here
// would use them; the exchange is a warp barrier, so the schedule stays exact.
static constexpr int warpSize = 32;

inline void __syncwarp(unsigned int mask = 0xffffffffu)
{
    stn_emu::syncWarp(mask);
}

template <typename T>
T __shfl_sync(unsigned int mask, T var, int srcLane, int width = warpSize)
{
    uint32_t const lane = stn_emu::laneId();
    uint32_t const w = static_cast<uint32_t>(width);
    return stn_emu::shuffleFrom(mask, var, (lane & ~(w - 1)) + (static_cast<uint32_t>(srcLane) & (w - 1)));
}

template <typename T>
T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize)
{
    uint32_t const lane = stn_emu::laneId();
    uint32_t const w = static_cast<uint32_t>(width);
    return stn_emu::shuffleFrom(mask, var, (lane & (w - 1)) >= delta ? lane - delta : lane);
}

template <typename T>
T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize)
{
    uint32_t const lane = stn_emu::laneId();
    uint32_t const w = static_cast<uint32_t>(width);
    return stn_emu::shuffleFrom(mask, var, (lane & (w - 1)) + delta < w ? lane + delta : lane);
}

template <typename T>
T __shfl_xor_sync(unsigned int mask, T var, int laneMask, int width = warpSize)
{
    uint32_t const lane = stn_emu::laneId();
    uint32_t const w = static_cast<uint32_t>(width);
    uint32_t const source = lane ^ static_cast<uint32_t>(laneMask);
    return stn_emu::shuffleFrom(mask, var, (source & ~(w - 1)) == (lane & ~(w - 1)) ? source : lane);
}

inline unsigned int __ballot_sync(unsigned int mask, int predicate)
{
    int const mine = predicate != 0 ? 1 : 0;
    int all[32];
    stn_emu::warpExchange(mask, &mine, sizeof(mine), all);
    unsigned int bits = 0;
    for (int l = 0; l < 32; ++l)
    {
        bits |= all[l] != 0 ? (1u << l) : 0u;
    }
    return bits & mask;
}

inline int __any_sync(unsigned int mask, int predicate)
{
    return __ballot_sync(mask, predicate) != 0;
}

inline int __all_sync(unsigned int mask, int predicate)
{
    return __ballot_sync(mask, predicate) == mask;
}

// Test hooks (cudaHostRuntime.cpp), C linkage so ctypes and the test driver reach them.
extern "C"
{
    //! Runs only blocks whose linear index lies in one of the half-open ranges [b[2i], b[2i+1]);
    //! count = 0 runs every block (the default). For sparse launches over huge lazily mapped buffers.
    void stn_emu_set_block_ranges(uint64_t const* bounds, int32_t count);
    //! Caps the number of blocks a launch really gets (0: no cap), so the grid-stride loops of the
    //! kernels take more than one trip, as on a GPU with a capped grid.
    void stn_emu_set_max_blocks(uint64_t maxBlocks);
    //! Makes the next cudaGetDeviceCount fail with `error` (0: succeed with one device).
    void stn_emu_set_device_error(int32_t error);
    //! Makes the next launch fail with `error` without running (e.g. cudaErrorNoKernelImageForDevice).
    void stn_emu_fail_next_launch(int32_t error);
    //! Records `error` as pending, as an earlier asynchronous fault would (sticky when the CUDA
    //! runtime treats it as sticky, e.g. cudaErrorIllegalAddress).
    void stn_emu_set_pending_error(int32_t error);
    //! Geometry of the last launch: blocks and threads per block (x only), and the launch count.
    void stn_emu_last_launch(uint64_t* blocks, uint32_t* threads, uint64_t* launches);
}
