"""``bench`` against a model served by Triton: closed-loop async gRPC load of batch-N requests at
several concurrencies, and optionally the same model in-process in ONNX Runtime in the same
run, so the serving overhead is a ratio measured on one machine at one time.

``stn-deploy bench --backend triton --url HOST:PORT --model-name N [--onnx M.onnx]`` maps onto
``bench_triton(TritonBenchOptions(...))``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stn_deploy.errors import UserError

DEFAULT_CONCURRENCY = (1, 4, 16)


@dataclass(frozen=True)
class TritonBenchOptions:
    """Options of ``bench_triton``.

    Attributes:
        url: gRPC endpoint, ``HOST:PORT`` or ``grpc://HOST:PORT``.
        model_name: the served model.
        concurrency: requests in flight, one load run each; default 1, 4, 16.
        requests: timed requests per concurrency; default 1000.
        warmup: untimed requests before each run; default 50.
        batch: batch of each request; default 1.
        seed: seed of the random request inputs; default 0.
        onnx: the same model as ONNX, timed in-process in ONNX Runtime at ``batch`` for the
            overhead ratio; default none.
        threads: ONNX Runtime threads of that baseline; default 1.
    """

    url: str
    model_name: str
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    requests: int = 1000
    warmup: int = 50
    batch: int = 1
    seed: int = 0
    onnx: Path | None = None
    threads: int = 1


@dataclass
class TritonBenchResult:
    """Rows of ``bench_triton``: one per concurrency (``backend: triton``), then the in-process
    baseline (``backend: ort-in-process``) when an ONNX was given. Latencies in ms, throughput
    in requests/s (and samples/s = requests/s x batch)."""

    rows: list[dict] = field(default_factory=list)
    baseline: dict | None = None

    def to_dict(self) -> dict:
        return {"rows": self.rows, "baseline": self.baseline}


def _feed(target, batch: int, seed: int) -> dict[str, np.ndarray]:
    from stn_deploy.triton.client import _NUMPY, model_io

    inputs, _ = model_io(target)
    rng = np.random.default_rng(seed)
    feed = {}
    for t in inputs:
        shape = [batch if i == 0 and d < 0 else d for i, d in enumerate(t["shape"])]
        if any(d < 0 for d in shape):
            raise UserError(f"input {t['name']!r} has dynamic dims {t['shape']} beyond the batch; cannot make inputs")
        feed[t["name"]] = rng.standard_normal(shape).astype(_NUMPY[t["datatype"]])
    return feed


def _ort_baseline(onnx_path: Path, feed: dict[str, np.ndarray], iters: int, threads: int) -> dict:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    for _ in range(50):
        session.run(None, feed)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    ms = np.asarray(times)
    p50 = float(np.percentile(ms, 50))
    return {"backend": "ort-in-process", "threads": threads, "iters": iters, "p50_ms": p50,
            "p90_ms": float(np.percentile(ms, 90)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput_rps": 1e3 / p50}


def bench_triton(options: TritonBenchOptions) -> TritonBenchResult:
    """Load the served model at each concurrency; time the ONNX in-process when given.

    Each Triton row: ``backend``, ``model``, ``concurrency``, ``batch``, ``requests``,
    ``succeeded``, ``failed``, ``throughput_rps``, ``throughput_sps``, ``p50_ms``, ``p90_ms``,
    ``p99_ms``, ``mean_ms``, ``batch_sizes`` (server executions per batch size: what the
    dynamic batcher merged), ``errors``, and with a baseline ``latency_over_in_process``
    (this p50 / the in-process p50) and ``in_process_throughput_over_this``.

    Raises:
        UserError: a bad URL, an unreachable server or unknown model, bad counts.
    """
    from stn_deploy.triton.client import LoadOptions, load_test, parse_target

    if options.batch < 1 or options.requests < 1 or not options.concurrency or min(options.concurrency) < 1:
        raise UserError("batch, requests and every concurrency must be at least 1")
    target = parse_target(options.url, options.model_name)
    feed = _feed(target, options.batch, options.seed)
    result = TritonBenchResult()
    if options.onnx is not None:
        if not Path(options.onnx).is_file():
            raise UserError(f"{options.onnx}: no such ONNX model")
        result.baseline = _ort_baseline(Path(options.onnx), feed, max(200, options.requests // 4), options.threads)
    for c in options.concurrency:
        r = load_test(LoadOptions(target, feed, concurrency=c, requests=options.requests, warmup=options.warmup))
        row = {"backend": "triton", "model": options.model_name, "batch": options.batch,
               **r.to_dict(), "throughput_rps": r.throughput, "throughput_sps": r.throughput * options.batch}
        row.pop("throughput")
        if result.baseline is not None:
            row["latency_over_in_process"] = r.p50_ms / result.baseline["p50_ms"]
            row["in_process_throughput_over_this"] = result.baseline["throughput_rps"] / r.throughput \
                if r.throughput else None
        result.rows.append(row)
    return result
