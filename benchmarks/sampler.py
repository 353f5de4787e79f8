"""Sampler micro-benchmark: the plugin's kernels against PyTorch, ONNX Runtime and a memory copy.

One *case* is a shape (N, C, H, W) -> (Ho, Wo), a dtype and an interpolation mode; the job is
``grid_sample(x, affine_grid(theta, [N, C, Ho, Wo]))`` with a random similarity transform per
sample (rotation +-30 deg, scale 0.8-1.25, shift +-0.2, so some samples leave the image),
zeros padding, align_corners=False. Implementations, all timed in the same run:

    copy            the limit: a copy moving the same number of bytes (device-to-device on a
                    GPU, a host memcpy on the CPU)
    plugin-fused    ``kernels.affine_grid_sample``: theta -> sample, no grid tensor (the
                    STNAffineGridSample plugin's kernel)
    plugin-grid     ``kernels.grid_sample`` on a precomputed grid (the STNGridSample kernel)
    torch-eager     ``F.affine_grid`` + ``F.grid_sample``
    torch-compile   ``torch.compile`` of the same function (default on CUDA; ``--compile`` on
                    the CPU, where each case compiles for seconds)
    ort             ONNX Runtime ``AffineGrid`` + ``GridSample`` (opset 20), CPU, fp32 only

Effective bytes of a case (``stn_deploy.jobs.bench.sampler_bytes``): output + theta (grid for
plugin-grid) + input actually read (taps x output pixels, capped at the input). GB/s = bytes /
median time. Ratios (same run): ``fraction_of_copy`` = copy time / time (the fraction of the
copy bandwidth reached), ``speedup_vs_eager`` and ``speedup_vs_compile`` = their time / the
plugin's (fused) time.

On CUDA (``--matrix issue``, the default there): the four shapes of the GPU issue in
fp32/fp16/bf16, bilinear on all of them, nearest and bicubic on the main case
(64x3x224x224 -> 224^2); median of >= 100 runs timed with CUDA events, the queue filled by a
GPU sleep first so that the events time the GPU's work and not Python's launch overhead, and
enough input sets cycled through that the inputs come from memory, not the L2 cache.
``--compile-budget-s`` stops compiling new cases once torch.compile has taken that long (the
cases run in order of importance), ``--time-budget-s`` stops starting new cases (the rest are
listed in ``skipped_cases``); the JSON is rewritten after every case, so a run stopped from
outside keeps what it measured. Beside each case, the static resource report's roofline
prediction (``--resources``, default ``benchmarks/results/kernel-resources.json``) or why there is
none. ``--synthetic`` (the GPU check's dry run) walks the CUDA plan with made-up timings, marked
synthetic, to test the report and the plot without a GPU.

On the CPU (``--matrix product``) a reduced shape set, fp32, median of 20 runs, every
implementation on the same number of threads (``--threads``), timed in interleaved rounds so
that a change of load hits them alike. Writes ``sampler-<cpu|cuda>.json`` and ``.png`` (GB/s per
case against the copy) into ``benchmarks/results/`` (``-o``, ``--stem`` to change). Not collected
by pytest.

Usage:
    python benchmarks/sampler.py                 # everything for this device
    python benchmarks/sampler.py --quick         # one small case per mode, few runs
    python benchmarks/sampler.py --cases mnist --dtypes fp32,bf16 --modes bilinear
    python benchmarks/sampler.py --synthetic -o /tmp/dry   # no GPU: the CUDA plan, made-up numbers
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from stn_deploy.errors import UserError  # noqa: E402
from stn_deploy.io import save_figure, write_json  # noqa: E402
from stn_deploy.jobs import bench  # noqa: E402

#: name -> ((N, C, H, W), (Ho, Wo)); the GPU issue's shapes, its main case first.
CUDA_CASES: dict[str, tuple[tuple[int, int, int, int], tuple[int, int]]] = {
    "imagenet": ((64, 3, 224, 224), (224, 224)),
    "features": ((32, 64, 56, 56), (56, 56)),
    "mnist": ((256, 1, 28, 28), (28, 28)),
    "hd-crop": ((8, 3, 1080, 1920), (512, 512)),
}
#: The case the GPU issue's targets are about; nearest and bicubic run on it alone (``--matrix issue``).
MAIN_CASE = "imagenet"
#: The CPU's reduced set: the same kinds of shape at a size 2 cores time in seconds.
CPU_CASES: dict[str, tuple[tuple[int, int, int, int], tuple[int, int]]] = {
    "mnist": ((256, 1, 28, 28), (28, 28)),
    "imagenet": ((8, 3, 224, 224), (224, 224)),
    "features": ((4, 64, 56, 56), (56, 56)),
    "hd-crop": ((1, 3, 1080, 1920), (512, 512)),
}
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MODES = ("bilinear", "nearest", "bicubic")
ORT_MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}
IMPLS = ("copy", "plugin-fused", "plugin-grid", "torch-eager", "torch-compile", "ort")
#: Exit code when a sticky CUDA error (an illegal address, a kernel fault) left this process's
#: context unusable: the case is recorded with the fault, and ``--resume`` in a fresh process
#: measures the rest (that case again, without the implementation that faulted).
EXIT_CONTEXT_LOST = 3


class ContextLost(Exception):
    """A CUDA error after which nothing more can run in this process."""

    def __init__(self, impl: str, record: dict[str, Any], results: dict[str, dict]) -> None:
        super().__init__(f"CUDA context lost in {impl}: {record.get('reason')}")
        self.impl, self.record, self.results = impl, record, results


#: Where progress events go (``--progress``): one JSON line per case and per implementation
#: phase, so that a watchdog outside sees what a hung or crashed process was doing.
_progress_path: list[Path] = []
#: The CUDA error an injected sticky fault left (synthetic runs only, ``STN_SAMPLER_FAULT``).
_simulated_context_error: list[str] = []


def progress(event: str, **fields: Any) -> None:
    """Append one progress event (``case``, ``phase`` or ``done``) to the ``--progress`` file."""
    if _progress_path:
        with _progress_path[0].open("a") as sink:  # opened per line: it survives any kill of this process
            sink.write(json.dumps({"event": event, **fields, "t": round(time.time(), 3)}) + "\n")


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:300]


def cuda_context_error() -> str | None:
    """Why CUDA is unusable in this process after a failure (a sticky error), or None: a
    synchronise and a trivial kernel either work or raise the error that poisoned the context."""
    if _simulated_context_error:
        return _simulated_context_error[0]
    import torch

    try:
        torch.cuda.synchronize()
        if float(torch.ones(1, device="cuda").add_(1).item()) != 2.0:
            return "a trivial kernel gave a wrong result"
    except Exception as exc:  # the error itself is the answer
        return _first_line(exc)
    return None


def record_failure(results: dict[str, dict], impl: str, exc: BaseException, phase: str, cuda: bool) -> None:
    """Record ``impl``'s failure (the error, CUDA's error name, the launch it surfaced at) and, on
    CUDA, judge the process: raise ContextLost when the error is sticky."""
    text = str(exc)
    name = re.search(r"\b(cuda(?:Error)?[A-Z]\w+)|CUDA error: ([^\n]+)", text)
    record: dict[str, Any] = {"status": "failed", "reason": _first_line(exc), "phase": phase,
                              "cuda_error": (name.group(1) or name.group(2)).strip() if name else None}
    results[impl] = record
    if cuda:
        state = cuda_context_error()
        record["context"] = "usable" if state is None else f"lost: {state}"
        if state is not None:
            raise ContextLost(impl, record, results)


def random_theta(n: int, seed: int):
    """[n, 2, 3] float32 similarity transforms: rotation +-30 deg, scale 0.8-1.25, shift +-0.2."""
    import torch

    g = torch.Generator().manual_seed(seed)
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(30)
    scale = 0.8 + torch.rand(n, generator=g) * 0.45
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)


def _ort_session(mode: str, out_size: tuple[int, int], threads: int):
    """ORT session of AffineGrid + GridSample (opset 20) taking x [N,C,H,W] and theta [N,2,3]."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Shape", ["x"], ["nc"], start=0, end=2),
        helper.make_node("Concat", ["nc", "hw"], ["size"], axis=0),
        helper.make_node("AffineGrid", ["theta", "size"], ["grid"], align_corners=0),
        helper.make_node("GridSample", ["x", "grid"], ["y"], mode=ORT_MODES[mode], padding_mode="zeros", align_corners=0),
    ]
    graph = helper.make_graph(
        nodes, "sampler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C", "H", "W"]),
         helper.make_tensor_value_info("theta", TensorProto.FLOAT, ["N", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C", "Ho", "Wo"])],
        initializer=[helper.make_tensor("hw", TensorProto.INT64, [2], list(out_size))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _rotating(fn: Callable[..., Any], arg_sets: list[tuple]) -> Callable[[], Any]:
    """A zero-argument callable calling ``fn(*args)`` on each of ``arg_sets`` in turn."""
    if len(arg_sets) == 1:
        args = arg_sets[0]
        return lambda: fn(*args)
    cycle = itertools.cycle(arg_sets)
    return lambda: fn(*next(cycle))


def _impls(case: dict, sets: list[tuple], device: str, use_compile: str | bool, use_ort: bool,
           threads: int) -> dict[str, Callable[[], Any] | str]:
    """impl name -> zero-argument callable, or the reason it cannot run.

    ``sets`` holds one or more (x, theta, grid) input sets of the case; each callable cycles
    through them (on a GPU, so that the inputs are read from memory rather than the L2 cache).
    ``use_compile`` is True, False or the reason torch.compile is skipped for this case.
    """
    import torch
    import torch.nn.functional as F

    mode, size = case["mode"], tuple(case["out_size"])
    x0 = sets[0][0]
    full = (x0.shape[0], x0.shape[1], *size)
    out: dict[str, Callable[[], Any] | str] = {}
    try:
        from stn_deploy import kernels

        kernels.load_library()
        fused_sets = [(x, theta.float().contiguous()) for x, theta, _ in sets]
        grid_sets = [(x, grid) for x, _, grid in sets]
        # num_threads only matters on the CPU: the same thread count as torch and ORT.
        out["plugin-fused"] = _rotating(
            lambda x, t: kernels.affine_grid_sample(x, t, size, mode, "zeros", False, num_threads=threads), fused_sets)
        out["plugin-grid"] = _rotating(
            lambda x, g: kernels.grid_sample(x, g, mode, "zeros", False, num_threads=threads), grid_sets)
    except (ImportError, UserError) as exc:
        out["plugin-fused"] = out["plugin-grid"] = f"plugin library unavailable: {exc}"

    eager_sets = [(x, theta.to(x.dtype)) for x, theta, _ in sets]

    def eager(x, theta_x):
        g = F.affine_grid(theta_x, full, align_corners=False)
        return F.grid_sample(x, g, mode=mode, padding_mode="zeros", align_corners=False)

    out["torch-eager"] = _rotating(eager, eager_sets)
    if use_compile is True:
        # Every case recompiles the same code object (other shape, dtype, mode): past dynamo's
        # recompile limit (8) it would silently run eager. A fresh start per case avoids that.
        torch._dynamo.reset()
        out["torch-compile"] = _rotating(torch.compile(eager, dynamic=False), eager_sets)
    elif isinstance(use_compile, str):
        out["torch-compile"] = use_compile
    else:
        out["torch-compile"] = "not requested (--compile)" if device == "cpu" else "disabled (--no-compile)"
    if not use_ort:
        out["ort"] = "disabled (--no-ort)"
    elif device != "cpu":
        out["ort"] = "CPU only (the CUDA provider is not installed here)"
    elif x0.dtype != torch.float32:
        out["ort"] = "ONNX Runtime's CPU GridSample is fp32 only"
    else:
        session = _ort_session(mode, size, threads)
        feed = {"x": x0.numpy(), "theta": sets[0][1].float().numpy()}
        out["ort"] = lambda: session.run(None, feed)
    return out


def _copy_fn(half: int, device: str, n_sets: int) -> Callable[[], Any]:
    """The copy baseline: ``half`` bytes read and ``half`` written, over ``n_sets`` buffer pairs."""
    if n_sets == 1:
        return bench.copy_fn(half, device)
    import torch

    n = max(1, int(half))
    pairs = [(torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255),
              torch.empty(n, dtype=torch.uint8, device=device)) for _ in range(n_sets)]
    return _rotating(lambda src, dst: dst.copy_(src), pairs)


#: GPU clock cycles per millisecond assumed to size the queue-filling sleep (H200 boost ~1.98 GHz;
#: a slower clock only lengthens the sleep).
SLEEP_CYCLES_PER_MS = 2.0e6
SLEEP_MAX_MS = 50.0


def time_cuda(fns: dict[str, Callable[[], Any]], *, warmup: int, iters: int, rounds: int = 5,
              on_failure: Callable[[str, BaseException, str], None] | None = None
              ) -> tuple[dict[str, list[float]], dict[str, float], bool]:
    """Per-call GPU times (ms) of several callables: CUDA events around every call, interleaved rounds.

    Before each block of timed calls the stream gets a GPU sleep (``torch.cuda._sleep``) longer
    than the host needs to queue the block, so every call is queued before the GPU reaches it and
    the events time the GPU's work alone, not the Python launch overhead (tens of microseconds
    through ctypes or the dispatcher, longer than a 10 us kernel).

    Each block of one callable's calls ends in a synchronise, so an asynchronous CUDA error
    surfaces in the block that caused it: ``on_failure(name, error, phase)`` records it (and may
    raise when the context is lost); that callable is dropped and the others go on.

    Returns:
        (samples per name, host microseconds per call per name, whether the queue was pre-filled).
    """
    import torch

    def failed(name: str, exc: BaseException, phase: str) -> None:
        if on_failure is None:
            raise exc
        on_failure(name, exc, phase)
        fns.pop(name, None)
        out.pop(name, None)

    fns = dict(fns)
    out: dict[str, list[float]] = {name: [] for name in fns}
    sleep = getattr(torch.cuda, "_sleep", None)
    host_us: dict[str, float] = {}
    for name, fn in list(fns.items()):
        try:
            for _ in range(warmup):
                fn()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(5):
                fn()
            host_us[name] = (time.perf_counter() - t0) / 5 * 1e6
            torch.cuda.synchronize()
        except Exception as exc:  # one implementation failing is a result, not the end of the case
            failed(name, exc, f"warm-up ({warmup} + 5 calls)")
    rounds = max(1, min(rounds, iters))
    for r in range(rounds):
        n = iters // rounds + (1 if r < iters % rounds else 0)
        for name, fn in list(fns.items()):
            try:
                starts = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
                ends = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
                if sleep is not None:
                    ms = min(SLEEP_MAX_MS, 0.5 + 2.0 * n * host_us[name] / 1e3)
                    sleep(int(ms * SLEEP_CYCLES_PER_MS))
                for start, end in zip(starts, ends):
                    start.record()
                    fn()
                    end.record()
                torch.cuda.synchronize()
                out[name].extend(start.elapsed_time(end) for start, end in zip(starts, ends))
            except Exception as exc:
                failed(name, exc, f"timed round {r + 1} of {rounds} ({n} calls)")
    return out, host_us, sleep is not None


def _buffer_sets(per_set_bytes: int, device: str) -> int:
    """How many input sets to cycle through: enough to exceed twice the GPU's L2 (at most 64)."""
    if device != "cuda":
        return 1
    import torch

    l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 64 * 2**20)
    return max(1, min(64, math.ceil(2 * l2 / max(1, per_set_bytes))))


def case_key(case: dict) -> str:
    """``"64x3x224x224->224x224"``: how kernel-resources.json names a shape."""
    return "x".join(map(str, case["shape"])) + "->" + "x".join(map(str, case["out_size"]))


def _case_bytes(case: dict) -> tuple[dict[str, int], dict[str, int]]:
    """Effective bytes of the fused call (theta in) and of the grid call (grid in)."""
    n, c, h, w = case["shape"]
    elem = {"fp32": 4, "fp16": 2, "bf16": 2}[case["dtype"]]
    ho, wo = case["out_size"]
    by_theta = bench.sampler_bytes((n, c, h, w), case["out_size"], param_bytes=n * 6 * 4, elem_bytes=elem,
                                   mode=case["mode"])
    by_grid = bench.sampler_bytes((n, c, h, w), case["out_size"], param_bytes=n * ho * wo * 2 * elem, elem_bytes=elem,
                                  mode=case["mode"])
    return by_theta, by_grid


def run_case(case: dict, device: str, *, warmup: int, iters: int, use_compile: str | bool, use_ort: bool, seed: int,
             threads: int, exclude: dict[str, dict] | None = None) -> dict:
    """Time every implementation of one case; fill ``case`` with bytes, results and ratios.

    ``exclude``: implementations not to run, with the result to report for them (the fault an
    earlier process recorded). Raises ContextLost when an implementation leaves CUDA unusable.
    """
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, DTYPES[case["dtype"]])
    n, c, h, w = case["shape"]
    by_theta, by_grid = _case_bytes(case)
    elem = torch.empty((), dtype=dtype).element_size()
    per_set = n * c * h * w * elem + by_grid["params"]
    n_sets = _buffer_sets(per_set, device)
    sets = []
    for k in range(n_sets):
        gen = torch.Generator().manual_seed(seed + k)
        x = torch.rand(n, c, h, w, generator=gen).to(device=device, dtype=dtype)
        theta = random_theta(n, seed + k).to(device)
        grid = F.affine_grid(theta.to(dtype), (n, c, *case["out_size"]), align_corners=False).contiguous()
        sets.append((x, theta, grid))
    case["bytes"] = by_theta
    case["bytes_plugin_grid"] = by_grid
    case["input_sets"] = n_sets
    cuda = device == "cuda"
    results: dict[str, dict] = dict(exclude or {})
    half = by_theta["total"] // 2  # the copy reads and writes half each: the same bytes moved
    runnable: dict[str, Callable[[], Any]] = {"copy": _copy_fn(half, device, n_sets)}
    for impl, fn in _impls(case, sets, device, use_compile, use_ort, threads).items():
        if impl in results:
            continue
        if isinstance(fn, str):
            results[impl] = {"status": "skipped", "reason": fn}
            continue
        progress("phase", impl=impl, phase="first call")
        try:
            t0 = time.perf_counter()
            fn()  # first call: compiles (torch-compile), builds caches; excluded from timing
            if cuda:
                torch.cuda.synchronize()
            first_s = time.perf_counter() - t0
        except Exception as exc:  # one implementation failing is a result, not the end of the run
            record_failure(results, impl, exc, "first call", cuda)
            continue
        runnable[impl] = fn
        if impl == "torch-compile":
            results[impl] = {"compile_s": round(first_s, 2)}
    host_us: dict[str, float] = {}
    progress("phase", impl=",".join(runnable), phase="timing")
    if cuda:
        samples, host_us, prefilled = time_cuda(
            runnable, warmup=warmup, iters=iters,
            on_failure=lambda impl, exc, phase: record_failure(results, impl, exc, phase, cuda=True))
        case["queue_prefilled"] = prefilled
    else:
        # Interleaved rounds: load changes on a shared machine hit every implementation alike.
        samples = bench.time_interleaved(runnable, warmup=warmup, iters=iters, cuda=False)
    _summarise(case, results, samples, half, by_theta, by_grid, host_us)
    return case


def _summarise(case: dict, results: dict[str, dict], samples: dict[str, list[float]], half: int,
               by_theta: dict[str, int], by_grid: dict[str, int], host_us: dict[str, float]) -> None:
    """Statistics, GB/s and fractions of the copy per implementation, then the ratios, into ``case``."""
    copy = bench.copy_stats(samples.pop("copy"), half) if "copy" in samples else None
    if copy is not None:
        results["copy"] = {"status": "ok", "median_ms": copy["p50_ms"], "p90_ms": copy["p90_ms"], "min_ms": copy["min_ms"],
                           "iters": copy["iters"], "gbps": copy["gbps"], "bytes": by_theta["total"]}
    for impl, times in samples.items():
        stats = bench.latency_stats(times)
        nbytes = by_grid["total"] if impl == "plugin-grid" else by_theta["total"]
        gbps = nbytes / (stats["p50_ms"] * 1e-3) / 1e9
        results.setdefault(impl, {}).update(
            status="ok", median_ms=stats["p50_ms"], p90_ms=stats["p90_ms"], min_ms=stats["min_ms"], iters=stats["iters"],
            gbps=gbps, bytes=nbytes, fraction_of_copy=gbps / copy["gbps"] if copy else None,
        )
    for impl, us in host_us.items():
        results.setdefault(impl, {})["host_us_per_call"] = round(us, 1)
    # The GPU issue's names, per implementation: how much faster than eager and compile it is.
    for base, key in (("torch-eager", "speedup_vs_eager"), ("torch-compile", "speedup_vs_compile")):
        if results.get(base, {}).get("status") == "ok":
            for r in results.values():
                if r.get("status") == "ok" and "median_ms" in r:
                    r[key] = results[base]["median_ms"] / r["median_ms"]
    ordered = {name: results[name] for name in IMPLS if name in results}  # report in a fixed order
    case["results"] = ordered
    case["ratios"] = _ratios(ordered)


#: A simulated CUDA error for ``STN_SAMPLER_FAULT``, worded as PyTorch raises it (c10 ``C10_CUDA_CHECK``).
SIMULATED_CUDA_ERRORS = {
    "sticky": "CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be asynchronously "
              "reported at some other API call, so the stacktrace below might be incorrect.",
    "error": "CUDA error: invalid configuration argument",
}


def injected_fault(position: int) -> tuple[str, str] | None:
    """(implementation, kind) of the fault ``STN_SAMPLER_FAULT=IMPL@N[:KIND]`` puts into the N-th
    case of the plan (1-based; synthetic runs only): KIND ``sticky`` (default: an illegal address
    that leaves the context unusable), ``error`` (a CUDA error after which CUDA still works),
    ``hang`` (the call never returns) or ``crash`` (the process aborts)."""
    spec = os.environ.get("STN_SAMPLER_FAULT", "")
    match = re.fullmatch(r"([a-z-]+)@(\d+)(?::(sticky|error|hang|crash))?", spec)
    if not match or int(match.group(2)) != position:
        return None
    return match.group(1), match.group(3) or "sticky"


def synthetic_case(case: dict, *, iters: int, use_compile: str | bool, seed: int, position: int = 0,
                   exclude: dict[str, dict] | None = None) -> dict:
    """Fill ``case`` with made-up timings (``--synthetic``, the GPU check's dry run): no GPU, no
    torch kernels; the same statistics, ratios, prediction and plot code as a real run, and the
    same fault handling for a fault ``injected_fault`` puts into the case at ``position``.

    The numbers are a caricature of an H200 (copy at 4 TB/s, the plugin at 80 % of it, eager 3x
    and compile 1.5x slower) and every result says ``synthetic: true``.
    """
    import random

    rng = random.Random(f"{seed}/{case_key(case)}/{case['dtype']}/{case['mode']}")
    by_theta, by_grid = _case_bytes(case)
    case["bytes"] = by_theta
    case["bytes_plugin_grid"] = by_grid
    case["input_sets"] = 1
    half = by_theta["total"] // 2
    copy_ms = by_theta["total"] / 4.0e12 * 1e3 + 0.002
    model = {"copy": copy_ms, "plugin-fused": copy_ms / 0.8, "plugin-grid": by_grid["total"] / 4.0e12 * 1e3 / 0.8 + 0.002,
             "torch-eager": 3 * copy_ms / 0.8}
    results: dict[str, dict] = dict(exclude or {})
    if use_compile is True:
        model["torch-compile"] = 1.5 * copy_ms / 0.8
        results.setdefault("torch-compile", {"compile_s": 8.0})  # made up too: exercises the compile budget
    else:
        results["torch-compile"] = {"status": "skipped", "reason": use_compile or "disabled (--no-compile)"}
    results["ort"] = {"status": "skipped", "reason": "CPU only (the CUDA provider is not installed here)"}
    model = {name: ms for name, ms in model.items() if results.get(name, {}).get("status") != "failed"}
    fault = injected_fault(position)
    for impl in list(model):
        progress("phase", impl=impl, phase="first call")
        if fault is None or fault[0] != impl:
            continue
        if fault[1] == "hang":
            time.sleep(3600)
        if fault[1] == "crash":
            os.abort()
        if fault[1] == "sticky":
            _simulated_context_error.append(SIMULATED_CUDA_ERRORS["sticky"].splitlines()[0])
        del model[impl]
        record_failure(results, impl, RuntimeError(SIMULATED_CUDA_ERRORS.get(fault[1], "")), "first call", cuda=True)
    samples = {name: [ms * (1 + 0.02 * rng.random()) for _ in range(iters)] for name, ms in model.items()}
    _summarise(case, results, samples, half, by_theta, by_grid, {})
    for r in case["results"].values():
        r["synthetic"] = True
    return case


def plan_cases(names: list[str], dtypes: list[str], modes: list[str], matrix: str) -> list[tuple[str, str, str]]:
    """(case, dtype, mode) in the order they run.

    ``product``: every combination. ``issue`` (the GPU issue's set): bilinear on every shape,
    nearest and bicubic on the main case only; bilinear first, so that a time budget that
    runs out cuts the modes that matter least.
    """
    if matrix == "product":
        return [(n, d, m) for n in names for d in dtypes for m in modes]
    plan = [(n, d, "bilinear") for n in names for d in dtypes] if "bilinear" in modes else []
    if MAIN_CASE in names:
        plan += [(MAIN_CASE, d, m) for m in modes if m != "bilinear" for d in dtypes]
    return plan


# ------------------------------------------------------------------------- static prediction

_DTYPE_ALIASES = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "fp16": "fp16", "float16": "fp16", "half": "fp16",
                  "bf16": "bf16", "bfloat16": "bf16"}


def load_predictions(path: Path) -> tuple[dict[tuple[str, str, str, str], dict], str]:
    """The static resource report's roofline rows by (case key, op, dtype, mode), and a status line.

    ``path`` is ``kernel-resources.json``: ``{"roofline": [{"case": "64x3x224x224->224x224",
    "op": "fused"|"grid", "dtype", "mode", "kernel", "predicted_us", "predicted_fraction_of_copy"}]}``.
    A missing or malformed file gives no rows and says why.
    """
    import json

    if not path.is_file():
        return {}, f"absent: {path} not found (no static prediction)"
    try:
        rows = json.loads(path.read_text())["roofline"]
        table = {}
        for row in rows:
            dtype = _DTYPE_ALIASES.get(str(row["dtype"]).lower(), str(row["dtype"]))
            row = dict(row)
            for key in ("predicted_us", "predicted_fraction_of_copy"):  # numbers or None, whatever came in
                try:
                    row[key] = float(row[key]) if row.get(key) is not None else None
                except (TypeError, ValueError):
                    row[key] = None
            table[(str(row["case"]), str(row["op"]), dtype, str(row["mode"]))] = row
    except (ValueError, KeyError, TypeError) as exc:
        return {}, f"unreadable: {path}: {type(exc).__name__}: {exc}"
    return table, f"ok: {len(table)} rows from {path}"


def attach_prediction(case: dict, table: dict, status: str) -> None:
    """Put the prediction beside the measurement: ``case["prediction"]`` per plugin op."""
    if not table:
        case["prediction"] = {"status": status}
        return
    pred: dict[str, Any] = {"status": "ok"}
    for op, impl in (("fused", "plugin-fused"), ("grid", "plugin-grid")):
        row = table.get((case_key(case), op, case["dtype"], case["mode"]))
        if row is None:
            pred[op] = {"status": "no row for this case in the resource report"}
            continue
        # The whole row (kernel, predicted_us, predicted_fraction_of_copy, and whatever else the
        # report says, e.g. what bounds it) beside the measurement.
        entry = {"status": "ok", **{k: v for k, v in row.items() if k not in ("case", "op", "dtype", "mode")}}
        measured = case["results"].get(impl, {})
        if measured.get("status") == "ok":
            entry["measured_us"] = measured["median_ms"] * 1e3
            entry["measured_fraction_of_copy"] = measured["fraction_of_copy"]
            if row.get("predicted_us"):
                entry["measured_over_predicted"] = entry["measured_us"] / float(row["predicted_us"])
        pred[op] = entry
    case["prediction"] = pred


def _ratios(results: dict[str, dict]) -> dict[str, float | None]:
    def ms(name):
        r = results.get(name, {})
        return r.get("median_ms") if r.get("status") == "ok" else None

    plugin = ms("plugin-fused")
    out: dict[str, float | None] = {"plugin_fraction_of_copy": None}
    if plugin:
        out["plugin_fraction_of_copy"] = ms("copy") / plugin if ms("copy") else None
        for other in ("torch-eager", "torch-compile", "ort", "plugin-grid"):
            key = f"plugin_speedup_vs_{other.replace('-', '_')}"
            out[key] = ms(other) / plugin if ms(other) else None
    return out


def plot(report: dict, target: Path) -> None:
    """Bars of GB/s per implementation for every case, the copy's GB/s as a black line over each
    case; one panel per dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dtypes = list(dict.fromkeys(c["dtype"] for c in report["cases"]))
    impls = [i for i in IMPLS if i != "copy" and any(c["results"].get(i, {}).get("status") == "ok" for c in report["cases"])]
    n_cases = max(1, max(sum(1 for c in report["cases"] if c["dtype"] == d) for d in dtypes) if dtypes else 1)
    fig, axes = plt.subplots(len(dtypes) or 1, 1, figsize=(max(9, 0.9 * n_cases + 5), 3.6 * max(1, len(dtypes))),
                             dpi=110, squeeze=False)
    width = 0.8 / max(1, len(impls))
    for ax, dtype in zip(axes[:, 0], dtypes or ["-"]):
        cases = [c for c in report["cases"] if c["dtype"] == dtype]
        for j, impl in enumerate(impls):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(cases))]
            ys = [c["results"].get(impl, {}).get("gbps", 0.0) if c["results"].get(impl, {}).get("status") == "ok" else 0.0
                  for c in cases]
            ax.bar(xs, ys, width, label=impl)
        for i, c in enumerate(cases):
            if c["results"].get("copy", {}).get("status") == "ok":  # absent where the case faulted before it
                ax.hlines(c["results"]["copy"]["gbps"], i - 0.45, i + 0.45, colors="black", linewidth=1.5,
                          label="copy (same bytes)" if i == 0 else None)
        predicted = [(i, c["bytes"]["total"] / (float(c["prediction"]["fused"]["predicted_us"]) * 1e-6) / 1e9)
                     for i, c in enumerate(cases) if c.get("prediction", {}).get("fused", {}).get("predicted_us")]
        if predicted:
            ax.plot([i for i, _ in predicted], [g for _, g in predicted], "rx", label="plugin-fused predicted")
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"{c['name']}\n{c['mode']}" for c in cases], fontsize=7)
        ax.set_ylabel("effective GB/s")
        ax.set_yscale("log")
        ax.set_title(f"{dtype} on {report['device'].get('gpu') or report['device'].get('cpu')}", fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save_figure(fig, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when present")
    parser.add_argument("--cases", default=None, help=f"comma-separated case names from {', '.join(CUDA_CASES)} (default all)")
    parser.add_argument("--dtypes", default=None, help="comma-separated from fp32,fp16,bf16 (default: all on CUDA, fp32 on the CPU)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated interpolation modes (default all)")
    parser.add_argument("--matrix", choices=("auto", "issue", "product"), default="auto",
                        help="issue: bilinear on every shape, nearest/bicubic on the main case only; product: every "
                             "combination (default: issue on CUDA, product on the CPU)")
    parser.add_argument("--iters", type=int, default=None, help="timed runs per implementation (default 100 on CUDA, 20 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10 on CUDA, 3 on the CPU)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None, help="time torch.compile (default on CUDA)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-budget-s", type=float, default=None,
                        help="stop compiling new cases once torch.compile has taken this many seconds (default: none)")
    parser.add_argument("--time-budget-s", type=float, default=None,
                        help="start no case that would end past this many seconds; the rest are listed as skipped")
    parser.add_argument("--no-ort", dest="ort", action="store_false", default=True)
    parser.add_argument("--quick", action="store_true", help="mnist case only, fp32, few runs: a smoke test")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch, the plugin's CPU reference and ORT alike (default: torch's)")
    parser.add_argument("--resources", type=Path, default=REPO / "benchmarks" / "results" / "kernel-resources.json",
                        help="the static resource report whose roofline prediction goes beside each case")
    parser.add_argument("--synthetic", action="store_true",
                        help="dry run: the CUDA plan with made-up timings (no GPU needed), marked synthetic")
    parser.add_argument("--profile-launches", type=int, default=0,
                        help="no timing: launch the fused kernel of each planned case this many times and exit "
                             "(for Nsight Compute)")
    parser.add_argument("--plot-only", type=Path, default=None, metavar="JSON",
                        help="no timing: draw the PNG of an existing report (one a stopped run left) beside it")
    parser.add_argument("--progress", type=Path, default=None, metavar="JSONL",
                        help="append a JSON line per case and per implementation phase (for a watchdog outside)")
    parser.add_argument("--resume", action="store_true",
                        help="go on with the report already at -o/--stem: skip its cases, rerun a case that lost the "
                             "CUDA context without the implementation that faulted, reconsider cases skipped for time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stem", default=None, help="output file name without suffix (default sampler-<cpu|cuda>)")
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    _progress_path[:] = [args.progress] if args.progress else []
    _simulated_context_error.clear()
    if args.plot_only is not None:
        if not args.plot_only.is_file():
            print(f"error: report {args.plot_only} not found", file=sys.stderr)
            return 2
        plot(json.loads(args.plot_only.read_text()), args.plot_only.with_suffix(".png"))
        print(f"wrote {args.plot_only.with_suffix('.png')}")
        return 0

    import torch

    if args.synthetic:
        device = "cuda"
    elif args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    else:
        device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    table = CUDA_CASES if device == "cuda" else CPU_CASES
    names = args.cases.split(",") if args.cases else (["mnist"] if args.quick else list(table))
    dtypes = args.dtypes.split(",") if args.dtypes else (["fp32"] if args.quick or device == "cpu" else list(DTYPES))
    modes = args.modes.split(",")
    for value, known, what in ((names, table, "case"), (dtypes, DTYPES, "dtype"), (modes, MODES, "mode")):
        bad = [v for v in value if v not in known]
        if bad:
            print(f"error: unknown {what} {bad[0]!r}; choose from {', '.join(known)}", file=sys.stderr)
            return 2
    for flag, value in (("--iters", args.iters), ("--time-budget-s", args.time_budget_s),
                        ("--compile-budget-s", args.compile_budget_s)):
        if value is not None and value <= 0:
            print(f"error: {flag} must be positive, got {value}", file=sys.stderr)
            return 2
    matrix = args.matrix if args.matrix != "auto" else ("issue" if device == "cuda" else "product")
    plan = plan_cases(names, dtypes, modes, matrix)
    if not plan:
        print("error: the chosen cases, dtypes and modes leave nothing to run", file=sys.stderr)
        return 2
    if args.profile_launches:
        return _profile(plan, table, device, args.profile_launches, args.seed)
    iters = args.iters or (5 if args.quick else 100 if device == "cuda" else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10 if device == "cuda" else 3)
    use_compile = args.compile if args.compile is not None else device == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    predictions, prediction_status = load_predictions(args.resources)

    env = bench.environment()
    if args.synthetic:
        env["device"]["gpu"] = "synthetic (dry run, no GPU)"
    report: dict[str, Any] = {
        "format": "stn-deploy-sampler-bench",
        "version": 3,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dry_run": args.synthetic,
        "complete": False,
        "stopped": None,
        **env,
        "settings": {"device": device, "matrix": matrix, "iters": iters, "warmup": warmup,
                     "timer": "synthetic" if args.synthetic else "cuda-events" if device == "cuda" else "perf_counter",
                     "queue_prefill": "a GPU sleep before each block of timed calls: the events time the GPU's work, "
                                      "not the host's launch overhead" if device == "cuda" else None,
                     "input_sets": "on CUDA, enough input sets cycled through to exceed twice the L2 cache",
                     "statistic": "median", "cpu_threads": threads, "interleaved": True, "padding_mode": "zeros", "align_corners": False,
                     "compile": use_compile, "compile_budget_s": args.compile_budget_s, "time_budget_s": args.time_budget_s,
                     "bytes": "output + theta (grid for plugin-grid) + input actually read (taps x output pixels, capped at the input)",
                     "copy": "device-to-device copy" if device == "cuda" else "host memcpy",
                     "fraction_of_copy": "copy time / time, same bytes",
                     "prediction": prediction_status},
        "cases": [],
        "skipped_cases": [],
        "processes": 1,
    }
    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / (args.stem or f"sampler-{device}")
    json_path = stem.with_suffix(".json")
    if args.resume and json_path.is_file():
        try:
            earlier = json.loads(json_path.read_text())
        except ValueError as exc:
            print(f"error: --resume: {json_path} is not JSON ({exc})", file=sys.stderr)
            return 2
        if earlier.get("format") != report["format"]:
            print(f"error: --resume: {json_path} is not a sampler report", file=sys.stderr)
            return 2
        report["cases"] = earlier.get("cases", [])
        report["skipped_cases"] = [s for s in earlier.get("skipped_cases", []) if s.get("final")]  # hung, crashed
        report["processes"] = int(earlier.get("processes", 1)) + 1
        report["created"] = earlier.get("created", report["created"])
    # Cases measured already, and cases whose process lost the CUDA context: run again without the faulting impls.
    retry = {(c["name"], c["dtype"], c["mode"]): c for c in report["cases"] if c.get("status") == "faulted"}
    finished = {(c["name"], c["dtype"], c["mode"]) for c in report["cases"]} - set(retry)
    finished |= {(c["name"], c["dtype"], c["mode"]) for c in report["skipped_cases"]}
    current: dict[str, Any] = {}

    def stop(signum: int, frame: Any) -> None:
        """SIGTERM / SIGINT (the GPU check's limit or watchdog, the runner's kill): the report as it
        stands, the case in progress named, then out (raising could land inside torch's C++)."""
        report["complete"] = False
        report["stopped"] = f"{signal.Signals(signum).name} received" + (f" during {current['case']}" if current else "")
        report["seconds"] = round(time.perf_counter() - started, 1)
        write_json(json_path, report)
        os._exit(128 + signum)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        write_json(json_path, report)  # a process that dies in its first case still leaves a report
        torch.manual_seed(args.seed)
        compile_times = [c["results"]["torch-compile"]["compile_s"] for c in report["cases"]
                         if "compile_s" in c.get("results", {}).get("torch-compile", {})]
        compile_spent = sum(compile_times)
        compile_failed = ""
        # The longest case without its compile: the first, cold compile must not make every later case look long.
        longest_case_s = max((c.get("seconds", 0.0) - c.get("compile_s", 0.0) for c in report["cases"]), default=0.0)
        for position, (name, dtype, mode) in enumerate(plan, 1):
            if (name, dtype, mode) in finished:
                continue
            shape, out_size = table[name]
            key = "x".join(map(str, shape)) + "->" + "x".join(map(str, out_size))
            case: dict[str, Any] = {"name": name, "key": key, "shape": list(shape), "out_size": list(out_size),
                                    "dtype": dtype, "mode": mode}
            elapsed = time.perf_counter() - started
            if args.time_budget_s is not None and elapsed + longest_case_s > args.time_budget_s:
                report["skipped_cases"].append({k: case[k] for k in ("name", "key", "dtype", "mode")}
                                               | {"reason": f"time budget of {args.time_budget_s:g} s: {elapsed:.0f} s spent"})
                continue
            compile_now = compile_decision(use_compile, failed_on=compile_failed, spent_s=compile_spent,
                                           compile_budget_s=args.compile_budget_s, time_budget_s=args.time_budget_s,
                                           elapsed_s=elapsed, longest_case_s=longest_case_s, compile_times=compile_times)
            earlier = retry.get((name, dtype, mode), {})
            earlier_faults = earlier.get("faults") or ([earlier["fault"]] if earlier.get("fault") else [])
            exclude = {f["impl"]: {k: v for k, v in f.items() if k != "impl"} for f in earlier_faults}
            current["case"] = f"{name} {dtype} {mode}"
            progress("case", case=name, key=key, dtype=dtype, mode=mode, position=position)
            t0 = time.perf_counter()
            try:
                if args.synthetic:
                    synthetic_case(case, iters=iters, use_compile=compile_now, seed=args.seed, position=position, exclude=exclude)
                else:
                    run_case(case, device, warmup=warmup, iters=iters, use_compile=compile_now, use_ort=args.ort, seed=args.seed,
                             threads=threads, exclude=exclude)
            except ContextLost as lost:
                case["seconds"] = round(time.perf_counter() - t0, 2)
                case["status"] = "faulted"
                case["fault"] = {"impl": lost.impl, **lost.record}
                case["faults"] = [*earlier_faults, case["fault"]]
                case["results"] = {impl: lost.results.get(impl, {"status": "not measured",
                                                                 "reason": "the CUDA context was lost in this case"})
                                   for impl in IMPLS}
                case["ratios"] = {}
                attach_prediction(case, predictions, prediction_status)
                _put_case(report, case)
                report["stopped"] = (f"CUDA context lost in {name} {dtype} {mode} by {lost.impl} ({lost.record['phase']}): "
                                     f"{lost.record['reason']}; the rest needs a fresh process (--resume)")
                report["seconds"] = round(time.perf_counter() - started, 1)
                write_json(json_path, report)
                progress("done", case=name, dtype=dtype, mode=mode)
                print(f"FAULT {report['stopped']}", flush=True)
                return EXIT_CONTEXT_LOST
            case["seconds"] = round(time.perf_counter() - t0, 2)
            compiled = case["results"].get("torch-compile", {})
            if compiled.get("compile_s"):
                case["compile_s"] = compiled["compile_s"]
                compile_times.append(compiled["compile_s"])
                compile_spent += compiled["compile_s"]
            longest_case_s = max(longest_case_s, case["seconds"] - case.get("compile_s", 0.0))
            if compiled.get("status") == "failed":  # it would fail again, at a compile's cost each time
                compile_failed = f"{case['name']} {dtype} {mode}"
            if earlier_faults:
                case["fault"], case["faults"] = earlier_faults[-1], earlier_faults
                case["status"] = "measured in a fresh process after the fault"
            attach_prediction(case, predictions, prediction_status)
            _put_case(report, case)
            print(_line(case), flush=True)
            write_json(json_path, report)  # a run stopped from outside keeps what it measured
            progress("done", case=name, dtype=dtype, mode=mode)
            current.clear()
            if device == "cuda" and not args.synthetic:
                torch.cuda.empty_cache()

        report["complete"] = not report["skipped_cases"] and not any(c.get("status") == "faulted" for c in report["cases"])
        report["seconds"] = round(time.perf_counter() - started, 1)
        plot(report, stem.with_suffix(".png"))
        write_json(json_path, report)
        for skipped in report["skipped_cases"]:
            print(f"skipped {skipped['name']} {skipped['dtype']} {skipped['mode']}: {skipped['reason']}")
        print(f"wrote {stem}.json and {stem}.png")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def compile_decision(use_compile: bool, *, failed_on: str, spent_s: float, compile_budget_s: float | None,
                     time_budget_s: float | None, elapsed_s: float, longest_case_s: float,
                     compile_times: list[float]) -> str | bool:
    """Whether the next case compiles (True), or why not: torch.compile failed before, its
    budget is spent, or the time left holds the case's other timings but not a compile too.

    ``longest_case_s`` is the longest case so far without its compile; the next compile is
    expected to take as long as the last warm one (the first, cold one says nothing of it).
    Either way the case's eager / plugin / copy timings still run.
    """
    if not use_compile:
        return False
    if failed_on:
        return f"skipped: torch.compile failed on an earlier case ({failed_on})"
    if compile_budget_s is not None and spent_s >= compile_budget_s:
        return f"skipped: compile budget of {compile_budget_s:g} s spent"
    expected_s = compile_times[-1] if len(compile_times) > 1 else 0.0
    if time_budget_s is not None and elapsed_s + longest_case_s + expected_s > time_budget_s:
        return f"skipped: too little time left to compile (~{expected_s:.0f} s) as well"
    return True


def _put_case(report: dict[str, Any], case: dict[str, Any]) -> None:
    """Add ``case`` to the report, in the place of its earlier (faulted) row if there is one."""
    ident = (case["name"], case["dtype"], case["mode"])
    for i, other in enumerate(report["cases"]):
        if (other["name"], other["dtype"], other["mode"]) == ident:
            report["cases"][i] = case
            return
    report["cases"].append(case)


def _profile(plan: list[tuple[str, str, str]], table: dict, device: str, launches: int, seed: int) -> int:
    """Launch the fused kernel of each planned case ``launches`` times (a profiler picks them up)."""
    import torch

    from stn_deploy import kernels

    if device != "cuda":
        print("error: --profile-launches needs CUDA", file=sys.stderr)
        return 2
    for name, dtype, mode in plan:
        shape, out_size = table[name]
        gen = torch.Generator().manual_seed(seed)
        x = torch.rand(*shape, generator=gen).to(device=device, dtype=getattr(torch, DTYPES[dtype]))
        theta = random_theta(shape[0], seed).to(device)
        for _ in range(launches):
            kernels.affine_grid_sample(x, theta, out_size, mode, "zeros", False)
        torch.cuda.synchronize()
        print(f"profiled {name} {dtype} {mode}: {launches} launches of the fused kernel", flush=True)
    return 0


def _line(case: dict) -> str:
    parts = [f"{case['name']:>9} {case['dtype']} {case['mode']:<8}"]
    for impl in IMPLS:
        r = case["results"].get(impl, {})
        if r.get("status") == "ok":
            parts.append(f"{impl} {r['median_ms'] * 1e3:.1f} us {r['gbps']:.3g} GB/s")
    ratios = case["ratios"]
    if ratios.get("plugin_fraction_of_copy") is not None:
        parts.append(f"plugin = {100 * ratios['plugin_fraction_of_copy']:.0f}% of copy")
        for other, label in (("torch_eager", "eager"), ("torch_compile", "compile")):
            if ratios.get(f"plugin_speedup_vs_{other}"):
                parts.append(f"{ratios[f'plugin_speedup_vs_{other}']:.2f}x {label}")
    fused = case.get("prediction", {}).get("fused", {})
    if fused.get("predicted_us"):
        parts.append(f"predicted {float(fused['predicted_us']):.1f} us")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
