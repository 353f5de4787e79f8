"""Serving an STN with a real Triton Inference Server on the CPU: dynamic batching on vs off,
against the same model in-process in ONNX Runtime, same run.

Two servers (the bundled Triton 2.51, python backend running the standard ONNX export in ONNX
Runtime, one instance, one ONNX Runtime thread) serve the same model, one with
``dynamic_batching`` and one without. A closed-loop async gRPC client
(``stn_deploy.triton.client.load_test``) sends batch-1 requests at concurrency 1, 4 and 16; the
two servers are loaded in alternating blocks so that a change of machine load hits both.
The in-process baseline runs the same ONNX in ONNX Runtime (one thread) at batch 1.

Targets (the issue's, reported, never asserted): at concurrency 16, batching >= 2x the
throughput of batching off, p99 <= 3x p50, 0 failed requests over >= 10,000 requests.

Not collected by pytest. Usage::

    .venv/bin/python benchmarks/triton_cpu.py [--requests 10000] [--blocks 5]

Writes ``benchmarks/results/triton_cpu.json`` and ``benchmarks/results/triton_cpu.png``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CONCURRENCY = (1, 4, 16)
TARGET_BATCHING_RATIO = 2.0
TARGET_P99_OVER_P50 = 3.0
MIN_REQUESTS = 10_000


def _device() -> dict:
    from stn_deploy.jobs.bench.report import cpu_name

    cpu = cpu_name()
    return {"kind": "cpu", "cpu": cpu, "cores": os.cpu_count(), "load_average_1min": os.getloadavg()[0]}


def _versions(server_log: Path) -> dict:
    import onnxruntime
    import tritonclient

    import stn_deploy

    version = "?"
    for line in server_log.read_text(errors="replace").splitlines():
        if "server_version" in line:
            version = line.split("|")[2].strip()
            break
    return {"stn_deploy": stn_deploy.__version__, "tritonserver": version,
            "tritonclient": getattr(tritonclient, "__version__", "?"), "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _model(work: Path, checkpoint: Path | None, name: str, size: int) -> Path:
    """A checkpoint: the given one, or zoo model ``name`` at ``size``x``size`` with weights
    moved off the identity initialisation (serving speed does not depend on training)."""
    if checkpoint is not None:
        return checkpoint
    import torch

    from stn_deploy.jobs.train import save_checkpoint
    from stn_deploy.models import ModelConfig, build_model

    torch.manual_seed(0)
    config = ModelConfig(name, in_size=(size, size))
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return Path(save_checkpoint(work / f"{name}.pt", model, config, {"dataset": "R" if size == 28 else "cluttered"}))


def _ort_baseline(onnx_path: Path, x: np.ndarray, iters: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    out = {}
    for batch in (1, 16):
        feed = {"input": np.repeat(x, batch, axis=0)}
        for _ in range(50):
            session.run(None, feed)
        times = []
        for _ in range(iters if batch == 1 else iters // 8):
            t0 = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - t0) * 1e3)
        ms = np.asarray(times)
        p50 = float(np.percentile(ms, 50))
        out[f"batch{batch}"] = {"p50_ms": p50, "p99_ms": float(np.percentile(ms, 99)),
                                "throughput_sps": 1e3 * batch / p50, "iters": len(times)}
    return out


def _merge(blocks: list) -> dict:
    """One row from several load_test blocks: percentiles over all their latencies."""
    lat = np.concatenate([b["latencies"] for b in blocks]) if blocks else np.zeros(0)
    seconds = sum(b["result"].seconds for b in blocks)
    batches: dict[int, int] = {}
    for b in blocks:
        for k, v in b["result"].batch_sizes.items():
            batches[k] = batches.get(k, 0) + v
    ok = int(lat.size)
    failed = sum(b["result"].failed for b in blocks)
    p50, p90, p99 = (float(np.percentile(lat, q)) for q in (50, 90, 99)) if ok else (float("nan"),) * 3
    executions = sum(batches.values())
    return {"requests": ok + failed, "succeeded": ok, "failed": failed, "seconds": seconds,
            "throughput_rps": ok / seconds if seconds else 0.0, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99,
            "p99_over_p50": p99 / p50 if ok else float("nan"),
            "mean_batch": (sum(k * v for k, v in batches.items()) / executions) if executions else None,
            "batch_sizes": {str(k): v for k, v in sorted(batches.items())},
            "errors": sorted({e for b in blocks for e in b["result"].errors})[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a perturbed --model")
    parser.add_argument("--model", default="st-cnn-affine", help="zoo model when no --checkpoint")
    parser.add_argument("--in-size", type=int, default=28, help="input H = W (28 digits, 60 cluttered)")
    parser.add_argument("--requests", type=int, default=MIN_REQUESTS, help="requests per server at concurrency 16")
    parser.add_argument("--low-requests", type=int, default=2000, help="requests per server at concurrency 1 and 4")
    parser.add_argument("--blocks", type=int, default=5, help="alternating blocks per concurrency")
    parser.add_argument("--max-queue-delay-us", type=int, default=100)
    parser.add_argument("--output", type=Path, default=RESULTS / "triton_cpu.json")
    args = parser.parse_args()

    import stn_deploy.triton.client as tc
    from stn_deploy.io import save_figure, write_json
    from stn_deploy.jobs.export import ExportOptions, export
    from stn_deploy.triton.repository import RepositoryOptions, write_repository
    from stn_deploy.triton.server import ServerOptions, TritonServer, free_ports

    with tempfile.TemporaryDirectory(prefix="triton-bench-") as tmp:
        work = Path(tmp)
        ckpt = _model(work, args.checkpoint, args.model, args.in_size)
        onnx_path = work / "model.onnx"
        res = export(ExportOptions(ckpt, onnx_path, dynamic_hw=False))
        shape = [1, *(int(d) for d in res.input_shape[1:])]
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        servers = {}
        try:
            for label, batching in (("batching", True), ("no-batching", False)):
                repo = work / label
                write_repository(RepositoryOptions(models=(onnx_path,), output=repo, name="stn", serve_as=("python",),
                                                   dynamic_batching=batching, max_batch_size=64,
                                                   max_queue_delay_us=args.max_queue_delay_us, intra_op_threads=1))
                h, g, m = free_ports(3)
                servers[label] = TritonServer(ServerOptions(repo, http_port=h, grpc_port=g, metrics_port=m,
                                                            log_file=work / f"{label}.log")).start()
            versions = _versions(work / "batching.log")
            raw: dict = {label: {c: [] for c in CONCURRENCY} for label in servers}
            for c in CONCURRENCY:
                total = args.requests if c == 16 else args.low_requests
                per_block = -(-total // args.blocks)
                for block in range(args.blocks):
                    for label, server in servers.items():
                        target = tc.TritonTarget(server.grpc_url, "stn-python")
                        result = tc.load_test(tc.LoadOptions(target, {"input": x}, concurrency=c, requests=per_block,
                                                             warmup=32 if block == 0 else 0))
                        raw[label][c].append({"result": result, "latencies": np.asarray(result.latencies_ms)})
                        print(f"c={c} {label} block {block}: {result.throughput:.0f} req/s, p50 {result.p50_ms:.2f} ms, "
                              f"p99 {result.p99_ms:.2f} ms, failed {result.failed}", flush=True)
        finally:
            for server in servers.values():
                server.stop()
        ort_base = _ort_baseline(onnx_path, x, iters=4000)

    rows = {label: {str(c): _merge(blocks) for c, blocks in per_c.items()} for label, per_c in raw.items()}
    on, off = rows["batching"]["16"], rows["no-batching"]["16"]
    base = ort_base["batch1"]
    summary = {
        "batching_throughput_ratio_c16": on["throughput_rps"] / off["throughput_rps"],
        "batching_p99_over_p50_c16": on["p99_over_p50"],
        "failed_c16": on["failed"] + off["failed"],
        "requests_c16_per_server": on["requests"],
        "serving_latency_overhead_c1": rows["batching"]["1"]["p50_ms"] / base["p50_ms"],
        "ort_batch1_throughput_over_triton_c16": base["throughput_sps"] / on["throughput_rps"],
        "targets": {"batching_throughput_ratio_c16": f">= {TARGET_BATCHING_RATIO}",
                    "batching_p99_over_p50_c16": f"<= {TARGET_P99_OVER_P50}", "failed_c16": "0",
                    "requests_c16_per_server": f">= {MIN_REQUESTS}"},
    }
    summary["targets_met"] = {
        "batching_throughput_ratio_c16": summary["batching_throughput_ratio_c16"] >= TARGET_BATCHING_RATIO,
        "batching_p99_over_p50_c16": summary["batching_p99_over_p50_c16"] <= TARGET_P99_OVER_P50,
        "failed_c16": summary["failed_c16"] == 0,
        "requests_c16_per_server": on["requests"] >= MIN_REQUESTS,
    }
    report = {
        "benchmark": "triton_cpu", "device": _device(), "versions": versions,
        "setup": {"model": f"{args.checkpoint or args.model} (standard ONNX export, opset 20)", "input": shape,
                  "backend": "python (ONNX Runtime, 1 thread, 1 instance)", "max_batch_size": 64,
                  "max_queue_delay_us": args.max_queue_delay_us, "client": "tritonclient async gRPC, closed loop",
                  "blocks": args.blocks, "note": "client and server share the machine's cores"},
        "triton": rows, "ort_in_process": ort_base, "summary": summary,
    }
    write_json(args.output, report)
    save_figure(_plot(report), args.output.with_suffix(".png"))
    print(f"wrote {args.output} and {args.output.with_suffix('.png')}")
    for key, value in summary.items():
        if key not in ("targets", "targets_met"):
            print(f"  {key}: {value:.3g}" if isinstance(value, float) else f"  {key}: {value}")
    print(f"  targets met: {summary['targets_met']}")


def _plot(report: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    conc = [str(c) for c in CONCURRENCY]
    width = 0.38
    pos = np.arange(len(conc))
    colors = {"batching": "tab:blue", "no-batching": "tab:orange"}
    for i, label in enumerate(("batching", "no-batching")):
        rows = report["triton"][label]
        ax_t.bar(pos + (i - 0.5) * width, [rows[c]["throughput_rps"] for c in conc], width, label=f"Triton, {label}",
                 color=colors[label])
        ax_l.plot(conc, [rows[c]["p50_ms"] for c in conc], "o-", color=colors[label], label=f"{label} p50")
        ax_l.plot(conc, [rows[c]["p99_ms"] for c in conc], "s--", color=colors[label], label=f"{label} p99")
    base = report["ort_in_process"]["batch1"]
    ax_t.axhline(base["throughput_sps"], color="k", ls=":", label="ONNX Runtime in-process, batch 1")
    ax_l.axhline(base["p50_ms"], color="k", ls=":", label="ONNX Runtime in-process p50")
    ax_t.set_xticks(pos, conc)
    ax_t.set_xlabel("concurrent batch-1 requests")
    ax_t.set_ylabel("requests / s")
    ax_t.set_title("throughput")
    ax_t.legend(fontsize=8)
    ax_l.set_yscale("log")
    ax_l.set_xlabel("concurrent batch-1 requests")
    ax_l.set_ylabel("latency, ms")
    ax_l.set_title("latency")
    ax_l.legend(fontsize=7)
    s = report["summary"]
    model = f"{report['setup']['model'].split()[0]} {'x'.join(map(str, report['setup']['input']))}"
    fig.suptitle(f"{model} on Triton {report['versions']['tritonserver']} (python backend, CPU, "
                 f"{report['device']['cores']} cores): batching {s['batching_throughput_ratio_c16']:.1f}x at 16, "
                 f"{s['failed_c16']} failed", fontsize=10)
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
