"""Client side of a served model: one inference (HTTP or gRPC), a Polygraphy runner for
``run``/``validate``, the server's batch statistics, and a closed-loop load test over async
gRPC (``load_test``) for ``bench --backend triton`` and ``benchmarks/triton_cpu.py``.

URLs are ``HOST:PORT`` (gRPC), ``grpc://HOST:PORT`` or ``http://HOST:PORT``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from stn_deploy.errors import UserError

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner

PROTOCOLS = ("grpc", "http")
#: numpy dtype names <-> Triton wire types.
_WIRE = {"float32": "FP32", "float16": "FP16", "int32": "INT32", "int64": "INT64", "int8": "INT8",
         "uint8": "UINT8", "bool": "BOOL", "float64": "FP64"}
_NUMPY = {v: k for k, v in _WIRE.items()}


class TritonRequestError(UserError):
    """The server answered a request with an error (its message is kept)."""


@dataclass(frozen=True)
class TritonTarget:
    """A model on a Triton server.

    Attributes:
        url: ``HOST:PORT`` of the protocol's endpoint.
        model_name: the served model.
        protocol: ``grpc`` or ``http``.
        timeout_s: per-request timeout, seconds; default 30.
    """

    url: str
    model_name: str
    protocol: str = "grpc"
    timeout_s: float = 30.0


def parse_target(url: str, model_name: str, timeout_s: float = 30.0) -> TritonTarget:
    """``TritonTarget`` from ``HOST:PORT`` (gRPC), ``grpc://HOST:PORT`` or ``http://HOST:PORT``."""
    protocol = "grpc"
    for scheme in PROTOCOLS:
        if url.startswith(f"{scheme}://"):
            protocol, url = scheme, url[len(scheme) + 3:]
    host, _, port = url.rstrip("/").rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--url {url!r}: expected HOST:PORT, grpc://HOST:PORT or http://HOST:PORT")
    if not model_name:
        raise UserError("give the served model's name (--model-name)")
    return TritonTarget(f"{host}:{port}", model_name, protocol, timeout_s)


def _module(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
    except ImportError as exc:
        raise UserError(f"tritonclient is not installed ({exc}); pip install 'tritonclient[grpc,http]'") from None
    return module


def _one_line(exc: Exception) -> str:
    text = exc.message() if hasattr(exc, "message") and callable(exc.message) else str(exc)
    return " ".join(str(text).split())


def client(target: TritonTarget):
    """A synchronous tritonclient ``InferenceServerClient`` for ``target``."""
    return _module(target.protocol).InferenceServerClient(target.url)


def model_io(target: TritonTarget) -> tuple[list[dict], list[dict]]:
    """(inputs, outputs) of the served model: dicts with name, datatype and shape (batch -1).

    Raises:
        TritonRequestError: the server is unreachable or does not serve the model.
    """
    from tritonclient.utils import InferenceServerException

    try:
        c = client(target)
        meta = c.get_model_metadata(target.model_name, as_json=True) if target.protocol == "grpc" else \
            c.get_model_metadata(target.model_name)
    except InferenceServerException as exc:
        raise TritonRequestError(f"{target.protocol}://{target.url} model {target.model_name!r}: {_one_line(exc)}") from None
    except Exception as exc:  # connection refused and the like come as other types over HTTP
        raise TritonRequestError(f"{target.protocol}://{target.url}: {_one_line(exc)}") from None

    def tensors(key: str) -> list[dict]:
        return [{"name": t["name"], "datatype": t["datatype"], "shape": [int(d) for d in t["shape"]]}
                for t in meta[key]]

    return tensors("inputs"), tensors("outputs")


def infer(target: TritonTarget, feed: Mapping[str, np.ndarray], output_names: list[str] | None = None,
          ) -> dict[str, np.ndarray]:
    """One inference request; outputs keyed by name.

    Raises:
        TritonRequestError: the server's error message (unknown model, wrong shape/dtype,
            batch too large, server down).
    """
    from tritonclient.utils import InferenceServerException

    module = _module(target.protocol)
    inputs = []
    for name, array in feed.items():
        array = np.ascontiguousarray(array)
        wire = _WIRE.get(str(array.dtype))
        if wire is None:
            raise UserError(f"input {name!r}: dtype {array.dtype} has no Triton type")
        t = module.InferInput(name, list(array.shape), wire)
        t.set_data_from_numpy(array)
        inputs.append(t)
    if output_names is None:
        output_names = [o["name"] for o in model_io(target)[1]]
    outputs = [module.InferRequestedOutput(n) for n in output_names]
    try:
        if target.protocol == "grpc":
            result = client(target).infer(target.model_name, inputs, outputs=outputs, client_timeout=target.timeout_s)
        else:
            c = module.InferenceServerClient(target.url, network_timeout=target.timeout_s)
            result = c.infer(target.model_name, inputs, outputs=outputs)
    except InferenceServerException as exc:
        raise TritonRequestError(f"model {target.model_name!r}: {_one_line(exc)}") from None
    except Exception as exc:  # sockets closed under HTTP
        raise TritonRequestError(f"{target.protocol}://{target.url}: {type(exc).__name__}: {_one_line(exc)}") from None
    return {n: result.as_numpy(n) for n in output_names}


def batch_stats(target: TritonTarget) -> dict[int, int]:
    """Executions per batch size the server ran for the model (its statistics extension)."""
    c = _module("grpc").InferenceServerClient(target.url) if target.protocol == "grpc" else client(target)
    stats = c.get_inference_statistics(target.model_name, as_json=True) if target.protocol == "grpc" else \
        c.get_inference_statistics(target.model_name)
    out: dict[int, int] = {}
    for model in stats.get("model_stats", []):
        for b in model.get("batch_stats", []):
            n = int(b["batch_size"])
            out[n] = out.get(n, 0) + int(b["compute_infer"].get("count", 0))
    return out


def triton_runner(target: TritonTarget) -> BaseRunner:
    """A Polygraphy runner that sends each ``infer`` to the served model (for ``run``)."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata
    from polygraphy.datatype import DataType

    class TritonRunner(BaseRunner):
        def __init__(self) -> None:
            super().__init__(name=f"triton-{target.model_name}", prefix="stn-triton-runner")
            self.inputs: list[dict] = []
            self.outputs: list[dict] = []

        def activate_impl(self):
            self.inputs, self.outputs = model_io(target)

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for t in self.inputs:
                dtype = DataType.from_dtype(np.dtype(_NUMPY[t["datatype"]]))
                meta.add(t["name"], dtype, tuple("batch" if d < 0 and i == 0 else d for i, d in enumerate(t["shape"])))
            return meta

        def infer_impl(self, feed_dict):
            start = time.perf_counter()
            out = infer(target, feed_dict, [o["name"] for o in self.outputs])
            self.inference_time = time.perf_counter() - start
            return OrderedDict(out)

        def deactivate_impl(self):
            pass

    return TritonRunner()


# --------------------------------------------------------------------------- load test


@dataclass(frozen=True)
class LoadOptions:
    """Options of ``load_test``.

    Attributes:
        target: the served model (gRPC endpoint; HTTP targets are refused).
        feed: one request's inputs, batch included (batch-1 requests: shape [1, ...]).
        concurrency: requests in flight at once (closed loop: each finished request starts the next).
        requests: timed requests in all.
        warmup: untimed requests first.
        keep_errors: how many distinct error messages to keep.
    """

    target: TritonTarget
    feed: Mapping[str, np.ndarray]
    concurrency: int = 16
    requests: int = 1000
    warmup: int = 50
    keep_errors: int = 5


@dataclass
class LoadResult:
    """What ``load_test`` measured. Latencies in ms, throughput in requests/s."""

    concurrency: int
    requests: int
    succeeded: int
    failed: int
    seconds: float
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    batch_sizes: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: every successful request's latency, ms, in completion order (not in ``to_dict``)
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        d = asdict(self)
        d.pop("latencies_ms")
        d["batch_sizes"] = {str(k): v for k, v in sorted(self.batch_sizes.items())}
        return d


async def _load(options: LoadOptions, count: int) -> tuple[list[float], int, list[str], float]:
    from tritonclient.grpc import aio

    target = options.target
    inputs = []
    for name, array in options.feed.items():
        t = aio.InferInput(name, list(array.shape), _WIRE[str(array.dtype)])
        t.set_data_from_numpy(np.ascontiguousarray(array))
        inputs.append(t)
    latencies: list[float] = []
    errors: list[str] = []
    failed = 0
    sent = 0
    async with aio.InferenceServerClient(target.url) as c:

        async def worker() -> None:
            nonlocal sent, failed
            while sent < count:
                sent += 1
                start = time.perf_counter()
                try:
                    await c.infer(target.model_name, inputs, client_timeout=target.timeout_s)
                    latencies.append(time.perf_counter() - start)
                except Exception as exc:  # noqa: BLE001  (every failure counts; the load goes on)
                    failed += 1
                    msg = _one_line(exc)[:200]
                    if len(errors) < options.keep_errors and msg not in errors:
                        errors.append(msg)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(options.concurrency)))
        seconds = time.perf_counter() - start
    return latencies, failed, errors, seconds


def load_test(options: LoadOptions) -> LoadResult:
    """Closed-loop load over async gRPC: ``concurrency`` requests in flight until ``requests``
    have been sent; failures are counted, not raised (a dying server gives failures).

    ``batch_sizes`` is the server's executions per batch size during the timed part (how
    far the dynamic batcher merged requests); empty when the statistics are unreachable.
    """
    if options.target.protocol != "grpc":
        raise UserError("the load test speaks async gRPC: give the gRPC endpoint (HOST:PORT or grpc://HOST:PORT)")
    if options.concurrency < 1 or options.requests < 1:
        raise UserError("concurrency and requests must be at least 1")
    if options.warmup:
        asyncio.run(_load(options, options.warmup))
    try:
        before = batch_stats(options.target)
    except Exception:  # the server may be down: the load itself reports that
        before = None
    latencies, failed, errors, seconds = asyncio.run(_load(options, options.requests))
    batches: dict[int, int] = {}
    if before is not None:
        # The server counts an execution a moment after its responses go out: poll briefly
        # until the statistics cover every answered request.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                after = batch_stats(options.target)
            except Exception:  # noqa: BLE001  (a dead server has no statistics)
                batches = {}
                break
            batches = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
            if sum(k * v for k, v in batches.items()) >= len(latencies) or time.monotonic() > deadline:
                break
            time.sleep(0.02)
    ms = np.asarray(latencies, dtype=np.float64) * 1e3
    pct = (lambda q: float(np.percentile(ms, q))) if ms.size else (lambda q: float("nan"))
    return LoadResult(
        concurrency=options.concurrency, requests=options.requests, succeeded=int(ms.size), failed=failed,
        seconds=seconds, throughput=ms.size / seconds if seconds > 0 else 0.0,
        p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99), mean_ms=float(ms.mean()) if ms.size else float("nan"),
        batch_sizes=batches, errors=errors, latencies_ms=ms.tolist())
