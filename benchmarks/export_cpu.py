"""CPU latency: the standard ONNX export in ONNX Runtime vs PyTorch eager, same run.

The standard export (``AffineGrid`` + ``GridSample``, legacy exporter, opset 20) is the CPU
serving path; it must keep ONNX Runtime's lead over eager PyTorch (>= 2.5x at batch 64 on the
exported STN classifiers). Also measures what one of our plugin ops costs as an
onnxruntime-extensions Python op, over the bare CPU reference kernel.

Not collected by pytest. Usage::

    nice .venv/bin/python benchmarks/export_cpu.py [--iters 50] [--models tutorial-stn,st-cnn-affine]

Writes ``benchmarks/results/export_cpu.json`` (device, versions, shapes, medians, ratios) and
``benchmarks/results/export_cpu.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: The issue's bar: ORT standard export vs eager at batch 64.
TARGET_RATIO = 2.5


#: Timed calls per block of one backend (see bench_models).
BLOCK = 20


def _samples_ms(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _median_ms(fn, warmup: int, iters: int) -> float:
    return statistics.median(_samples_ms(fn, warmup, iters))


def _versions() -> dict:
    import onnx
    import onnxruntime
    import onnxruntime_extensions
    import torch

    import stn_deploy

    return {
        "stn_deploy": stn_deploy.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__, "onnxruntime_extensions": onnxruntime_extensions.__version__,
        "numpy": np.__version__, "python": platform.python_version(),
    }


def _device() -> dict:
    import torch

    from stn_deploy.jobs.bench.report import cpu_name

    cpu = cpu_name()
    return {"kind": "cpu", "cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0]}


def bench_models(names: list[str], batches: list[int], warmup: int, iters: int, workdir: Path,
                 threads: int | None = None) -> list[dict]:
    import torch

    from stn_deploy.jobs.export import export_module
    from stn_deploy.models import ModelConfig, build_model
    from stn_deploy.ort_ops import ort_session

    rows = []
    for name in names:
        config = ModelConfig(name)
        model = build_model(config).eval()
        res = export_module(model, config.input_shape, workdir / f"{name}.onnx", ops="standard")
        session = ort_session(res.path, threads=threads)
        for batch in batches:
            x = torch.randn(batch, *config.input_shape)
            xn = x.numpy()

            def eager():
                with torch.no_grad():
                    model(x)

            def ort():
                session.run(None, {"input": xn})

            # Alternate blocks (BLOCK eager calls, BLOCK ORT calls, ...) so that load from other
            # processes hits both alike. Not single calls: each library's thread pool keeps
            # spinning after a call and would slow the other's next call on 2 cores. Each block
            # starts with `warmup` untimed calls; the paired ratio is the median of block medians.
            eager_ms: list[float] = []
            ort_ms: list[float] = []
            block_ratios: list[float] = []
            for _ in range(max(1, iters // BLOCK)):
                e_block = _samples_ms(eager, warmup, BLOCK)
                o_block = _samples_ms(ort, warmup, BLOCK)
                eager_ms += e_block
                ort_ms += o_block
                block_ratios.append(statistics.median(e_block) / statistics.median(o_block))
            e, o = statistics.median(eager_ms), statistics.median(ort_ms)
            paired = statistics.median(block_ratios)
            rows.append({"model": name, "batch": batch, "input_shape": [batch, *config.input_shape],
                         "eager_ms": e, "ort_standard_ms": o, "speedup_ort_vs_eager": e / o,
                         "speedup_paired_median": paired,
                         "eager_min_ms": min(eager_ms), "ort_standard_min_ms": min(ort_ms),
                         "speedup_of_minima": min(eager_ms) / min(ort_ms), "samples": len(eager_ms)})
            print(f"{name:16s} batch {batch:3d}: eager {e:8.3f} ms  ORT {o:8.3f} ms  ratio {e / o:5.2f}x "
                  f"paired {paired:5.2f}x (minima {min(eager_ms):.3f} / {min(ort_ms):.3f} ms = "
                  f"{min(eager_ms) / min(ort_ms):.2f}x)")
    return rows


def bench_python_op(warmup: int, iters: int) -> dict:
    """Per-call cost of STNGridSample as an onnxruntime-extensions Python op vs the bare kernel."""
    import onnx
    from onnx import TensorProto, helper

    from stn_deploy import kernels, schema
    from stn_deploy.graph import PLUGIN_VERSION_ATTR
    from stn_deploy.ort_ops import ort_session

    out = {}
    for shape in ((1, 1, 28, 28), (64, 1, 28, 28)):
        n, c, h, w = shape
        node = helper.make_node(schema.GRID_SAMPLE_OP, ["x", "grid"], ["y"], domain=schema.PLUGIN_DOMAIN,
                                **{PLUGIN_VERSION_ATTR: schema.PLUGIN_VERSION, **schema.SamplerSettings().plugin_fields()})
        model = helper.make_model(
            helper.make_graph([node], "op", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
                                             helper.make_tensor_value_info("grid", TensorProto.FLOAT, [n, h, w, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))]),
            opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid(schema.PLUGIN_DOMAIN, 1)])
        onnx.checker.check_model(model)
        session = ort_session(model)
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape).astype(np.float32)
        grid = rng.uniform(-1, 1, (n, h, w, 2)).astype(np.float32)
        ort_ms = _median_ms(lambda: session.run(None, {"x": x, "grid": grid}), warmup, iters)
        kernel_ms = _median_ms(lambda: kernels.grid_sample(x, grid), warmup, iters)
        key = "x".join(map(str, shape))
        out[key] = {"ort_python_op_ms": ort_ms, "kernel_ms": kernel_ms, "overhead_ms": ort_ms - kernel_ms}
        print(f"STNGridSample {key}: ORT Python op {ort_ms:.3f} ms, bare kernel {kernel_ms:.3f} ms, "
              f"overhead {ort_ms - kernel_ms:.3f} ms/call")
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    from stn_deploy.io import save_figure

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['model']}\nbatch {r['batch']}" for r in rows]
    xs = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 2, 4))
    ax.bar(xs - 0.2, [r["eager_ms"] for r in rows], 0.4, label="PyTorch eager")
    ax.bar(xs + 0.2, [r["ort_standard_ms"] for r in rows], 0.4, label="ONNX Runtime (standard export)")
    for x, r in zip(xs, rows):
        ax.text(x, max(r["eager_ms"], r["ort_standard_ms"]), f"{r['speedup_ort_vs_eager']:.1f}x", ha="center", va="bottom")
    ax.set_xticks(xs, labels)
    ax.set_yscale("log")
    ax.set_ylabel("median latency (ms, log)")
    ax.set_title("CPU latency: ORT standard export vs PyTorch eager")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tutorial-stn,st-cnn-affine")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=120)
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for both PyTorch and ONNX Runtime; 0 = each library's default")
    parser.add_argument("--output", type=Path, default=RESULTS / "export_cpu.json")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    from stn_deploy.io import write_json

    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_models(args.models.split(","), [int(b) for b in args.batches.split(",")],
                            args.warmup, args.iters, Path(tmp), threads=args.threads or None)
    try:
        python_op = bench_python_op(args.warmup, args.iters)
    except Exception as exc:  # no kernel library: report the export numbers anyway
        python_op = {"skipped": str(exc)}
    at64 = [r["speedup_ort_vs_eager"] for r in rows if r["batch"] == 64]
    result = {
        "benchmark": "export_cpu", "device": _device(), "versions": _versions(),
        "method": f"{args.iters} timed calls per backend in alternating blocks of {BLOCK} (eager, ORT, ...), "
                  f"each block after {args.warmup} untimed calls; medians, the median of per-block ratios "
                  "(speedup_paired_median), and minima; "
                  "torch.no_grad eval; ORT CPUExecutionProvider; "
                  + (f"{args.threads} thread(s) each" if args.threads else "each library's default threads"),
        "baseline": "PyTorch eager", "target_ratio_batch64": TARGET_RATIO,
        "results": rows,
        "meets_target": bool(at64) and min(at64) >= TARGET_RATIO,
        "plugin_python_op": python_op,
    }
    write_json(args.output, result)
    plot(rows, args.output.with_suffix(".png"))
    print(f"wrote {args.output}; min batch-64 ratio {min(at64) if at64 else float('nan'):.2f}x (target {TARGET_RATIO}x)")


if __name__ == "__main__":
    main()
