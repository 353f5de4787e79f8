"""Plugin vs native engines of the same model (``export --ops plugin`` / ``--ops native``):
build time, engine size and layers on any machine, latency on a GPU."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from stn_deploy.errors import UserError


@dataclass
class OpsComparison:
    """Plugin vs native engines of one model (``compare_ops``)."""

    model: str
    flavour: str
    flavour_version: str
    plugin: dict  # build_seconds, engine_bytes, layers, engine path; latency_ms on a GPU
    native: dict
    gpu: bool

    def to_dict(self) -> dict:
        return asdict(self)


def compare_ops(
    checkpoint: Path,
    workdir: Path,
    *,
    flavour: str = "auto",
    batches: tuple[int, ...] = (1, 64),
    plugin_library: Path | None = None,
    repeats: int = 50,
) -> OpsComparison:
    """Export one checkpoint as plugin and as native ONNX, build both engines in one child
    process, and compare them.

    On the CPU: build seconds and engine bytes of each. On a GPU (engines deserialise):
    also the median latency in ms per batch in ``batches``.

    Args:
        checkpoint: a checkpoint written by ``stn-deploy train``.
        workdir: folder for the ONNX files and engines (created).
        backend: TensorRT ops, as ``trt.BuildOptions.backend``; default "auto".
        batches: batch sizes of the GPU latency; default (1, 64).
        plugin_library: the plugin library; default ``kernels.library_path()``.
        repeats: timed runs per batch on a GPU; default 50.

    Raises:
        UserError: a bad checkpoint, or either build failed (its one-line reason).
    """
    from stn_deploy import trt
    from stn_deploy.jobs.export import ExportOptions, export

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    profile_batch = (1, max(batches), max(batches))
    out: dict[str, dict] = {}
    options = []
    for ops in ("plugin", "native"):
        onnx_path = workdir / f"{ops}.onnx"
        res = export(ExportOptions(checkpoint, onnx_path, ops=ops, dynamic_hw=False))
        c, h, w = (int(v) for v in res.input_shape[1:])
        shapes = (trt.parse_shape_spec(f"{res.input_name}:" + ",".join(f"{b}x{c}x{h}x{w}" for b in profile_batch)),)
        options.append(trt.BuildOptions(onnx_path, workdir / f"{ops}.engine", flavour=flavour, shapes=shapes,
                                        plugin_library=plugin_library if ops == "plugin" else None))
    outcomes = trt.build_many(options)
    version = ""
    name = ""
    for ops, outcome in zip(("plugin", "native"), outcomes):
        if outcome.error is not None:
            raise UserError(f"{ops} build failed: {outcome.error}")
        side = outcome.result.sidecar
        version, name = side["backend"]["version"], side["backend"]["name"]
        out[ops] = {
            "onnx": str(outcome.options.onnx),
            "engine": str(outcome.options.engine),
            "build_seconds": float(outcome.result.seconds),
            "engine_bytes": int(side["engine"]["bytes"]),
            "layers": [layer.get("type") for layer in side["network"]["layers"]],
        }
    gpu = trt.gpu_available()
    if gpu:
        for ops in ("plugin", "native"):
            out[ops]["latency_ms"] = _engine_latency(
                Path(out[ops]["engine"]), batches, repeats, (c, h, w), res.input_name,
                plugin_library if ops == "plugin" else None)
    return OpsComparison(model=str(checkpoint), flavour=name, flavour_version=version,
                             plugin=out["plugin"], native=out["native"], gpu=bool(gpu))


def _engine_latency(engine: Path, batches, repeats: int, chw, input_name: str,
                    plugin_library: Path | None) -> dict[str, float]:
    """Median ms per inference of an engine at each batch (GPU; Polygraphy's per-call time,
    which includes the host/device copies of both engines alike)."""
    import numpy as np

    from stn_deploy import trt

    medians = {}
    runner = trt.EngineRunner(engine, plugin_library=plugin_library)
    with runner:
        for b in batches:
            x = np.random.default_rng(0).standard_normal((b, *chw)).astype(np.float32)
            for _ in range(5):
                runner.infer({input_name: x})
            times = []
            for _ in range(repeats):
                runner.infer({input_name: x})
                times.append(runner.last_inference_time() * 1e3)
            medians[str(b)] = float(np.median(times))
    return medians
