/*
 * SPDX-License-Identifier: Apache-2.0
 *
 * cudaHostRuntime.cpp: the CUDA host emulation's grid runner (blocks in order, a block's threads
 * as ucontext fibers switching at __syncthreads) and the few CUDA runtime API functions the
 * launchers call, with CUDA's error semantics: cudaGetLastError returns and clears the last
 * error, except a sticky one (a kernel fault), which every later call keeps returning.
 * Test hooks (stn_emu_*) inject device and pending errors and restrict a launch to some blocks.
 */
#include "cudaHostShim.h"

#include <ucontext.h>

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <cstdlib>
#include <array>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define STN_EMU_ASAN 1
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace stn_emu
{
namespace
{

// ---- emulated runtime state ------------------------------------------------------------------
cudaError_t gLastError = cudaSuccess;
bool gLastSticky = false;
cudaError_t gDeviceError = cudaSuccess;
cudaError_t gNextLaunchError = cudaSuccess;
std::vector<uint64_t> gBlockRanges;
uint64_t gMaxBlocks = 0;
uint64_t gLastBlocks = 0;
uint32_t gLastThreads = 0;
uint64_t gLaunches = 0;

bool isSticky(cudaError_t e)
{
    switch (e)
    {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorECCUncorrectable: return true;
    default: return false;
    }
}

void record(cudaError_t e)
{
    if (gLastSticky)
    {
        return; // a sticky fault outlives everything after it
    }
    gLastError = e;
    gLastSticky = isSticky(e);
}

// ---- fibers ------------------------------------------------------------------------------------
constexpr size_t kSTACK = size_t{256} << 10; // ASan frames are large; mapped lazily

//! What a fiber waits for: nothing (runnable), the block barrier, or its warp's barrier.
enum class Wait
{
    kNONE,
    kBLOCK,
    kWARP,
};

constexpr uint32_t kWARP_SIZE = 32;

struct Fiber
{
    ucontext_t context;
    void* stack = nullptr;
    uint3 index;
    bool done = false;
    Wait wait = Wait::kNONE;
#if STN_EMU_ASAN
    void* fakeStack = nullptr;
#endif
};

struct BlockRun
{
    ucontext_t scheduler;
    std::vector<Fiber> fibers;
    size_t current = 0;
    std::function<void()> const* body = nullptr;
    std::vector<std::array<unsigned char, 16>> lanes; // one slot per thread for warp exchanges
#if STN_EMU_ASAN
    void const* schedulerBottom = nullptr;
    size_t schedulerSize = 0;
#endif
};

thread_local BlockRun* tRun = nullptr;
std::vector<void*> gStacks; // reused by every launch: thread t of a block runs on gStacks[t]

[[noreturn]] void fatal(char const* message)
{
    std::fprintf(stderr, "CUDA host emulation: %s\n", message);
    std::abort();
}

//! From a fiber back to the scheduler (finished: the fiber's stack is not used again this round).
void yieldToScheduler(Fiber& f, bool finished)
{
    BlockRun& r = *tRun;
#if STN_EMU_ASAN
    __sanitizer_start_switch_fiber(finished ? nullptr : &f.fakeStack, r.schedulerBottom, r.schedulerSize);
#endif
    swapcontext(&f.context, &r.scheduler);
#if STN_EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fakeStack, &r.schedulerBottom, &r.schedulerSize);
#endif
}

void fiberEntry()
{
    BlockRun& r = *tRun;
    Fiber& f = r.fibers[r.current];
#if STN_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &r.schedulerBottom, &r.schedulerSize);
#endif
    (*r.body)();
    f.done = true;
    yieldToScheduler(f, /*finished=*/true);
    fatal("a finished fiber was resumed");
}

void resume(BlockRun& r, size_t t)
{
    Fiber& f = r.fibers[t];
    r.current = t;
    threadIdx = f.index;
#if STN_EMU_ASAN
    void* fake = nullptr;
    __sanitizer_start_switch_fiber(&fake, f.stack, kSTACK);
#endif
    swapcontext(&r.scheduler, &f.context);
#if STN_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
}

//! Releases the barriers every participant has reached: a warp's when all its lanes wait on it,
//! else the block's when every thread waits on it. False when nothing could be released.
bool releaseBarriers(BlockRun& r)
{
    bool released = false;
    size_t const n = r.fibers.size();
    for (size_t w = 0; w < n; w += kWARP_SIZE)
    {
        size_t const end = std::min(n, w + kWARP_SIZE);
        size_t waiting = 0;
        size_t finished = 0;
        for (size_t t = w; t < end; ++t)
        {
            waiting += r.fibers[t].wait == Wait::kWARP ? 1 : 0;
            finished += r.fibers[t].done ? 1 : 0;
        }
        if (waiting != 0 && finished != 0)
        {
            fatal("a warp-synchronous call (__shfl_*_sync, __ballot_sync, __syncwarp) with a full mask was not "
                  "reached by every lane: some lanes had exited");
        }
        if (waiting != 0 && waiting == end - w)
        {
            for (size_t t = w; t < end; ++t)
            {
                r.fibers[t].wait = Wait::kNONE;
            }
            released = true;
        }
    }
    if (released)
    {
        return true;
    }
    size_t atBlock = 0;
    size_t finished = 0;
    for (Fiber const& f : r.fibers)
    {
        atBlock += f.wait == Wait::kBLOCK ? 1 : 0;
        finished += f.done ? 1 : 0;
    }
    if (atBlock != 0 && atBlock + finished == n && finished != 0)
    {
        fatal("__syncthreads() was not reached by every thread of the block (undefined behaviour in CUDA)");
    }
    if (atBlock != 0 && atBlock == n)
    {
        for (Fiber& f : r.fibers)
        {
            f.wait = Wait::kNONE;
        }
        return true;
    }
    return false;
}

//! Runs one block: every runnable thread until it finishes or waits at a barrier, then releases
//! the barriers that are complete, until every thread has finished.
void runBlock(BlockRun& r)
{
    for (Fiber& f : r.fibers)
    {
        f.done = false;
        f.wait = Wait::kNONE;
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack;
        f.context.uc_stack.ss_size = kSTACK;
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiberEntry, 0);
    }
    for (;;)
    {
        size_t finished = 0;
        for (size_t t = 0; t < r.fibers.size(); ++t)
        {
            if (!r.fibers[t].done && r.fibers[t].wait == Wait::kNONE)
            {
                resume(r, t);
            }
            finished += r.fibers[t].done ? 1 : 0;
        }
        if (finished == r.fibers.size())
        {
            return;
        }
        if (!releaseBarriers(r))
        {
            fatal("deadlock: threads wait at __syncthreads() while others of the block wait in a warp-synchronous "
                  "call (undefined behaviour in CUDA)");
        }
    }
}

bool validGeometry(dim3 g, dim3 b, size_t sharedBytes)
{
    uint64_t const threads = uint64_t{b.x} * b.y * b.z;
    return g.x >= 1 && g.y >= 1 && g.z >= 1 && g.x <= 0x7fffffffu && g.y <= 65535 && g.z <= 65535 && threads >= 1
        && threads <= 1024 && b.z <= 64 && sharedBytes <= 48 * 1024;
}

bool selected(uint64_t linearBlock)
{
    if (gBlockRanges.empty())
    {
        return true;
    }
    for (size_t i = 0; i + 1 < gBlockRanges.size(); i += 2)
    {
        if (linearBlock >= gBlockRanges[i] && linearBlock < gBlockRanges[i + 1])
        {
            return true;
        }
    }
    return false;
}

} // namespace

cudaError_t runGrid(dim3 grid, dim3 block, size_t sharedBytes, std::function<void()> const& body)
{
    if (tRun != nullptr)
    {
        fatal("a kernel launch from inside a kernel (dynamic parallelism) is not emulated");
    }
    ++gLaunches;
    gLastBlocks = uint64_t{grid.x} * grid.y * grid.z;
    gLastThreads = block.x;
    if (gLastSticky)
    {
        return gLastError; // the context is unusable: nothing runs
    }
    if (gNextLaunchError != cudaSuccess)
    {
        cudaError_t const e = gNextLaunchError; // what a GPU without a matching kernel image says
        gNextLaunchError = cudaSuccess;
        record(e);
        return e;
    }
    if (!validGeometry(grid, block, sharedBytes))
    {
        record(cudaErrorInvalidConfiguration);
        return cudaErrorInvalidConfiguration;
    }
    if (gMaxBlocks != 0 && grid.x > gMaxBlocks)
    {
        grid.x = static_cast<unsigned int>(gMaxBlocks);
    }
    BlockRun run;
    run.body = &body;
    uint32_t const threads = block.x * block.y * block.z;
    run.fibers.resize(threads);
    run.lanes.resize(threads);
    for (uint32_t t = 0; t < threads; ++t)
    {
        Fiber& f = run.fibers[t];
        if (t == gStacks.size())
        {
            void* s = mmap(nullptr, kSTACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (s == MAP_FAILED)
            {
                fatal("cannot map a fiber stack");
            }
            gStacks.push_back(s);
        }
        f.stack = gStacks[t];
        f.index = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    }
    gridDim = grid;
    blockDim = block;
    tRun = &run;
    for (uint64_t z = 0; z < grid.z; ++z)
    {
        for (uint64_t y = 0; y < grid.y; ++y)
        {
            for (uint64_t x = 0; x < grid.x; ++x)
            {
                if (!selected((z * grid.y + y) * grid.x + x))
                {
                    continue;
                }
                blockIdx = uint3{static_cast<unsigned int>(x), static_cast<unsigned int>(y),
                    static_cast<unsigned int>(z)};
                runBlock(run);
            }
        }
    }
    tRun = nullptr;
    return cudaSuccess;
}

namespace
{

Fiber& currentFiber(char const* what)
{
    if (tRun == nullptr)
    {
        fatal((std::string(what) + " outside a kernel launch").c_str());
    }
    return tRun->fibers[tRun->current];
}

void waitFor(Fiber& f, Wait w)
{
    f.wait = w;
    yieldToScheduler(f, /*finished=*/false);
}

} // namespace

void syncThreads()
{
    waitFor(currentFiber("__syncthreads()"), Wait::kBLOCK);
}

uint32_t laneId()
{
    currentFiber("a warp intrinsic");
    return static_cast<uint32_t>(tRun->current % kWARP_SIZE);
}

void syncWarp(uint32_t mask)
{
    Fiber& f = currentFiber("__syncwarp()");
    size_t const first = tRun->current - tRun->current % kWARP_SIZE;
    size_t const lanes = std::min<size_t>(kWARP_SIZE, tRun->fibers.size() - first);
    uint32_t const full = lanes == kWARP_SIZE ? 0xffffffffu : ((1u << lanes) - 1u);
    if ((mask & full) != full)
    {
        fatal("warp-synchronous calls with a partial mask are not emulated (only every lane of the warp)");
    }
    waitFor(f, Wait::kWARP);
}

void warpExchange(uint32_t mask, void const* mine, size_t bytes, void* all)
{
    if (bytes > 16)
    {
        fatal("a warp exchange of more than 16 bytes");
    }
    currentFiber("a warp intrinsic");
    size_t const self = tRun->current;
    size_t const first = self - self % kWARP_SIZE;
    size_t const lanes = std::min<size_t>(kWARP_SIZE, tRun->fibers.size() - first);
    std::memcpy(tRun->lanes[self].data(), mine, bytes);
    syncWarp(mask); // every lane has written its slot
    for (size_t l = 0; l < kWARP_SIZE; ++l)
    {
        // Lanes past the end of a partial last warp read as zero.
        if (l < lanes)
        {
            std::memcpy(static_cast<unsigned char*>(all) + l * bytes, tRun->lanes[first + l].data(), bytes);
        }
        else
        {
            std::memset(static_cast<unsigned char*>(all) + l * bytes, 0, bytes);
        }
    }
    syncWarp(mask); // every lane has read before any slot is written again
}

} // namespace stn_emu

// ---- the CUDA runtime API subset the launchers use ---------------------------------------------
extern "C"
{

cudaError_t cudaGetLastError(void)
{
    cudaError_t const e = stn_emu::gLastError;
    if (!stn_emu::gLastSticky)
    {
        stn_emu::gLastError = cudaSuccess;
    }
    return e;
}

cudaError_t cudaPeekAtLastError(void)
{
    return stn_emu::gLastError;
}

cudaError_t cudaGetDeviceCount(int* count)
{
    cudaError_t const e = stn_emu::gDeviceError;
    *count = e == cudaSuccess ? 1 : 0;
    if (e != cudaSuccess)
    {
        stn_emu::record(e);
    }
    return e;
}

cudaError_t cudaDriverGetVersion(int* driverVersion)
{
    // The driver an r580 machine reports (CUDA 13.0); 0 when the injected error says "no driver".
    *driverVersion = stn_emu::gDeviceError == cudaErrorInsufficientDriver ? 12040 : 13000;
    return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* runtimeVersion)
{
    *runtimeVersion = CUDART_VERSION;
    return cudaSuccess;
}

char const* cudaGetErrorName(cudaError_t error)
{
    switch (error)
    {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorNoKernelImageForDevice: return "cudaErrorNoKernelImageForDevice";
    case cudaErrorUnsupportedPtxVersion: return "cudaErrorUnsupportedPtxVersion";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
    }
}

// The texts of CUDA 13.0's cudaGetErrorString for the codes the tests inject.
char const* cudaGetErrorString(cudaError_t error)
{
    switch (error)
    {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorNoKernelImageForDevice: return "no kernel image is available for execution on the device";
    case cudaErrorUnsupportedPtxVersion: return "the provided PTX was compiled with an unsupported toolchain.";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}

void stn_emu_set_block_ranges(uint64_t const* bounds, int32_t count)
{
    stn_emu::gBlockRanges.assign(bounds, bounds + 2 * static_cast<size_t>(count < 0 ? 0 : count));
}

void stn_emu_set_max_blocks(uint64_t maxBlocks)
{
    stn_emu::gMaxBlocks = maxBlocks;
}

void stn_emu_set_device_error(int32_t error)
{
    stn_emu::gDeviceError = static_cast<cudaError_t>(error);
}

void stn_emu_fail_next_launch(int32_t error)
{
    stn_emu::gNextLaunchError = static_cast<cudaError_t>(error);
}

void stn_emu_set_pending_error(int32_t error)
{
    // A test hook may also clear a sticky fault (a fresh context, as a new process would have).
    stn_emu::gLastSticky = false;
    stn_emu::record(static_cast<cudaError_t>(error));
}

void stn_emu_last_launch(uint64_t* blocks, uint32_t* threads, uint64_t* launches)
{
    *blocks = stn_emu::gLastBlocks;
    *threads = stn_emu::gLastThreads;
    *launches = stn_emu::gLaunches;
}

} // extern "C"
