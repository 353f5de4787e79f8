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

Effective bytes of a case (``stn_deploy.bench.sampler_bytes``): output + theta (grid for
plugin-grid) + input actually read (taps x output pixels, capped at the input). GB/s = bytes /
median time. Ratios (same run): ``fraction_of_copy`` = copy time / time (the fraction of the
copy bandwidth reached), ``speedup_vs_eager`` and ``speedup_vs_compile`` = their time / the
plugin's (fused) time.

On CUDA: the four shapes of the GPU issue, fp32/fp16/bf16, bilinear/nearest/bicubic, median
of >= 100 runs timed with CUDA events. On the CPU a reduced shape set, fp32, median of 20
runs, every implementation on the same number of threads (``--threads``). Implementations
are timed in interleaved rounds so that a change of load hits them alike. Writes ``sampler-<cpu|cuda>.json`` and ``.png`` (GB/s per case against the copy) into
``benchmarks/results/`` (``-o`` to change). Not collected by pytest.

Usage:
    python benchmarks/sampler.py                 # everything for this device
    python benchmarks/sampler.py --quick         # one small case per mode, few runs
    python benchmarks/sampler.py --cases mnist --dtypes fp32,bf16 --modes bilinear
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from stn_deploy import bench  # noqa: E402
from stn_deploy.errors import UserError  # noqa: E402
from stn_deploy.io import save_figure, write_json  # noqa: E402

#: name -> ((N, C, H, W), (Ho, Wo)); the GPU issue's shapes.
CUDA_CASES: dict[str, tuple[tuple[int, int, int, int], tuple[int, int]]] = {
    "mnist": ((256, 1, 28, 28), (28, 28)),
    "imagenet": ((64, 3, 224, 224), (224, 224)),
    "features": ((32, 64, 56, 56), (56, 56)),
    "hd-crop": ((8, 3, 1080, 1920), (512, 512)),
}
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


class _Skip(Exception):
    pass


def _impls(case: dict, x, theta, grid, device: str, use_compile: bool, use_ort: bool,
           threads: int) -> dict[str, Callable[[], Any] | str]:
    """impl name -> zero-argument callable, or the reason it cannot run."""
    import torch
    import torch.nn.functional as F

    mode, size = case["mode"], tuple(case["out_size"])
    full = (x.shape[0], x.shape[1], *size)
    out: dict[str, Callable[[], Any] | str] = {}
    try:
        from stn_deploy import kernels

        kernels.load_library()
        theta32 = theta.float().contiguous()
        # num_threads only matters on the CPU: the same thread count as torch and ORT.
        out["plugin-fused"] = lambda: kernels.affine_grid_sample(x, theta32, size, mode, "zeros", False, num_threads=threads)
        out["plugin-grid"] = lambda: kernels.grid_sample(x, grid, mode, "zeros", False, num_threads=threads)
    except (ImportError, UserError) as exc:
        out["plugin-fused"] = out["plugin-grid"] = f"plugin library unavailable: {exc}"

    theta_x = theta.to(x.dtype)

    def eager():
        g = F.affine_grid(theta_x, full, align_corners=False)
        return F.grid_sample(x, g, mode=mode, padding_mode="zeros", align_corners=False)

    out["torch-eager"] = eager
    if use_compile:
        compiled = torch.compile(eager, dynamic=False)
        out["torch-compile"] = compiled
    else:
        out["torch-compile"] = "not requested (--compile)" if device == "cpu" else "disabled (--no-compile)"
    if not use_ort:
        out["ort"] = "disabled (--no-ort)"
    elif device != "cpu":
        out["ort"] = "CPU only (the CUDA provider is not installed here)"
    elif x.dtype != torch.float32:
        out["ort"] = "ONNX Runtime's CPU GridSample is fp32 only"
    else:
        session = _ort_session(mode, size, threads)
        feed = {"x": x.numpy(), "theta": theta.float().numpy()}
        out["ort"] = lambda: session.run(None, feed)
    return out


def run_case(case: dict, device: str, *, warmup: int, iters: int, use_compile: bool, use_ort: bool, seed: int,
             threads: int) -> dict:
    """Time every implementation of one case; fill ``case`` with bytes, results and ratios."""
    import torch
    import torch.nn.functional as F

    dtype = getattr(torch, DTYPES[case["dtype"]])
    n, c, h, w = case["shape"]
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=gen).to(device=device, dtype=dtype)
    theta = random_theta(n, seed).to(device)
    grid = F.affine_grid(theta.to(dtype), (n, c, *case["out_size"]), align_corners=False).contiguous()
    elem = x.element_size()
    by_theta = bench.sampler_bytes(x.shape, case["out_size"], param_bytes=theta.numel() * theta.element_size(),
                                   elem_bytes=elem, mode=case["mode"])
    by_grid = bench.sampler_bytes(x.shape, case["out_size"], param_bytes=grid.numel() * grid.element_size(),
                                  elem_bytes=elem, mode=case["mode"])
    case["bytes"] = by_theta
    case["bytes_plugin_grid"] = by_grid
    cuda = device == "cuda"
    results: dict[str, dict] = {}
    half = by_theta["total"] // 2  # the copy reads and writes half each: the same bytes moved
    runnable: dict[str, Callable[[], Any]] = {"copy": bench.copy_fn(half, device)}
    for impl, fn in _impls(case, x, theta, grid, device, use_compile, use_ort, threads).items():
        if isinstance(fn, str):
            results[impl] = {"status": "skipped", "reason": fn}
            continue
        try:
            t0 = time.perf_counter()
            fn()  # first call: compiles (torch-compile), builds caches; excluded from timing
            if cuda:
                torch.cuda.synchronize()
            first_s = time.perf_counter() - t0
        except Exception as exc:  # one implementation failing is a result, not the end of the run
            results[impl] = {"status": "failed", "reason": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            continue
        runnable[impl] = fn
        if impl == "torch-compile":
            results[impl] = {"compile_s": round(first_s, 2)}
    # Interleaved rounds: load changes on a shared machine hit every implementation alike.
    samples = bench.time_interleaved(runnable, warmup=warmup, iters=iters, cuda=cuda)
    copy = bench.copy_stats(samples.pop("copy"), half)
    results["copy"] = {"status": "ok", "median_ms": copy["p50_ms"], "p90_ms": copy["p90_ms"], "min_ms": copy["min_ms"],
                       "iters": copy["iters"], "gbps": copy["gbps"], "bytes": by_theta["total"]}
    for impl, times in samples.items():
        stats = bench.latency_stats(times)
        nbytes = by_grid["total"] if impl == "plugin-grid" else by_theta["total"]
        gbps = nbytes / (stats["p50_ms"] * 1e-3) / 1e9
        results.setdefault(impl, {}).update(
            status="ok", median_ms=stats["p50_ms"], p90_ms=stats["p90_ms"], min_ms=stats["min_ms"], iters=stats["iters"],
            gbps=gbps, bytes=nbytes, fraction_of_copy=gbps / copy["gbps"],
        )
    results = {name: results[name] for name in IMPLS if name in results}  # report in a fixed order
    case["results"] = results
    case["ratios"] = _ratios(results)
    return case


def _ratios(results: dict[str, dict]) -> dict[str, float | None]:
    def ms(name):
        r = results.get(name, {})
        return r.get("median_ms") if r.get("status") == "ok" else None

    plugin = ms("plugin-fused")
    out: dict[str, float | None] = {"plugin_fraction_of_copy": None}
    if plugin:
        out["plugin_fraction_of_copy"] = ms("copy") / plugin
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
    fig, axes = plt.subplots(len(dtypes) or 1, 1, figsize=(max(8, 0.9 * n_cases + 3), 3.6 * max(1, len(dtypes))),
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
            ax.hlines(c["results"]["copy"]["gbps"], i - 0.45, i + 0.45, colors="black", linewidth=1.5,
                      label="copy (same bytes)" if i == 0 else None)
        ax.set_xticks(range(len(cases)))
        ax.set_xticklabels([f"{c['name']}\n{c['mode']}" for c in cases], fontsize=7)
        ax.set_ylabel("effective GB/s")
        ax.set_yscale("log")
        ax.set_title(f"{dtype} on {report['device'].get('gpu') or report['device'].get('cpu')}", fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    save_figure(fig, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: cuda when present")
    parser.add_argument("--cases", default=None, help=f"comma-separated case names from {', '.join(CUDA_CASES)} (default all)")
    parser.add_argument("--dtypes", default=None, help="comma-separated from fp32,fp16,bf16 (default: all on CUDA, fp32 on the CPU)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated interpolation modes (default all)")
    parser.add_argument("--iters", type=int, default=None, help="timed runs per implementation (default 100 on CUDA, 20 on the CPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 10 on CUDA, 3 on the CPU)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None, help="time torch.compile (default on CUDA)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--no-ort", dest="ort", action="store_false", default=True)
    parser.add_argument("--quick", action="store_true", help="mnist case only, fp32, few runs: a smoke test")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch, the plugin's CPU reference and ORT alike (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
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
    iters = args.iters or (5 if args.quick else 100 if device == "cuda" else 20)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 10 if device == "cuda" else 3)
    use_compile = args.compile if args.compile is not None else device == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    report: dict[str, Any] = {
        "format": "stn-deploy-sampler-bench",
        "version": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **bench.environment(),
        "settings": {"device": device, "iters": iters, "warmup": warmup, "timer": "cuda-events" if device == "cuda" else "perf_counter",
                     "statistic": "median", "cpu_threads": threads, "interleaved": True, "padding_mode": "zeros", "align_corners": False, "compile": use_compile,
                     "bytes": "output + theta (grid for plugin-grid) + input actually read (taps x output pixels, capped at the input)",
                     "copy": "device-to-device copy" if device == "cuda" else "host memcpy",
                     "fraction_of_copy": "copy time / time, same bytes"},
        "cases": [],
    }
    torch.manual_seed(args.seed)
    for name in names:
        shape, out_size = table[name]
        for dtype in dtypes:
            for mode in modes:
                case = {"name": name, "shape": list(shape), "out_size": list(out_size), "dtype": dtype, "mode": mode}
                run_case(case, device, warmup=warmup, iters=iters, use_compile=use_compile, use_ort=args.ort, seed=args.seed,
                         threads=threads)
                report["cases"].append(case)
                print(_line(case), flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()

    args.output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_dir / f"sampler-{device}"
    plot(report, stem.with_suffix(".png"))
    write_json(stem.with_suffix(".json"), report)
    print(f"wrote {stem}.json and {stem}.png")
    return 0


def _line(case: dict) -> str:
    parts = [f"{case['name']:>9} {case['dtype']} {case['mode']:<8}"]
    for impl in IMPLS:
        r = case["results"].get(impl, {})
        if r.get("status") == "ok":
            parts.append(f"{impl} {r['median_ms']:.3f} ms {r['gbps']:.1f} GB/s")
    ratios = case["ratios"]
    if ratios.get("plugin_fraction_of_copy") is not None:
        parts.append(f"plugin = {100 * ratios['plugin_fraction_of_copy']:.0f}% of copy")
        if ratios.get("plugin_speedup_vs_torch_eager"):
            parts.append(f"{ratios['plugin_speedup_vs_torch_eager']:.2f}x eager")
    return " | ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
