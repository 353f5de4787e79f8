"""The child process that runs TensorRT's parser and builder.

A parser or builder abort (``std::abort`` in a plugin, a fatal error in TensorRT) kills the
process that runs it; running them here keeps the CLI and the test runner alive, and lets
the parent delete the partial engine. Protocol: one JSON job per line on stdin; JSON events
per line on the file descriptor that was stdout (``progress``, ``log``, ``result``). Anything
TensorRT prints itself goes to stderr, which the parent keeps for error messages.

Run as ``python -m stn_deploy.trt.build_worker``; not a public interface.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from stn_deploy.errors import UserError
from stn_deploy.trt.flavour import Flavour, dtype_name, get_flavour, load_plugin_library, make_logger
from stn_deploy.trt.options import BuildJob

_events: TextIO = sys.stdout  # main() points it at the real stdout before any job runs


def emit(event: str, **fields) -> None:
    _events.write(json.dumps({"event": event, **fields}) + "\n")
    _events.flush()


def _tensor_info(t) -> dict:
    return {"name": t.name, "dtype": dtype_name(t.dtype), "shape": list(t.shape)}


def _layer_info(flavour: Flavour, layer) -> dict:
    trt = flavour.trt
    info = {"name": layer.name, "type": layer.type.name,
            "outputs": [dtype_name(layer.get_output(i).dtype) for i in range(layer.num_outputs)]}
    if layer.type == trt.LayerType.PLUGIN_V3:
        # Python hands back the base ILayer; re-class it to reach the plugin (as Polygraphy does).
        layer.__class__ = trt.IPluginV3Layer
        try:
            core = layer.plugin.get_capability_interface(trt.PluginCapabilityType.CORE)
            core.__class__ = trt.IPluginV3OneCore
            info["plugin"] = {"name": core.plugin_name, "version": core.plugin_version,
                              "namespace": core.plugin_namespace}
        except Exception as exc:  # the layer still builds; only its description is poorer
            info["plugin"] = {"error": str(exc)}
    elif layer.type == trt.LayerType.GRID_SAMPLE:
        # What the parser made of the mode names (opset-20 names read as nearest: #4646).
        layer.__class__ = trt.IGridSampleLayer
        info["grid_sample"] = {"interpolation": layer.interpolation_mode.name, "sample_mode": layer.sample_mode.name,
                               "align_corners": bool(layer.align_corners)}
    return info


def _parser_errors(parser, detail: bool = True) -> list[str]:
    """One phrase per parser error: which node, what code, TensorRT's words (when useful)."""
    out = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = f"node {err.node()}" if err.node() >= 0 else "the graph"
        if err.node_name():
            node += f" {err.node_name()!r}"
        if err.node_operator():
            node += f" ({err.node_operator()})"
        code = str(err.code()).split(".")[-1]
        desc = " ".join(err.desc().split())
        said = "" if desc in ("", "false") or not detail else f": {desc}"
        out.append(f"{node}: {code} in {err.func()}{said}")
    return out


#: Logger lines that only frame the parser's report.
_NOISE = ("--- Begin node ---", "--- End node ---", "While parsing node number")


def _fail(logger, *first: str) -> str:
    """One line: our own words first, then TensorRT's and the plugin creator's errors."""
    errors = []
    for sev, msg in logger.messages:
        if sev not in ("ERROR", "INTERNAL_ERROR") or any(n in msg for n in _NOISE):
            continue
        text = " ".join(msg.split())
        # The parser's own report (already in ``first``) repeated with file and line.
        if text.endswith("] false") or text.endswith(":") or text.startswith("ModelImporter.cpp"):
            continue
        errors.append(text)
    parts = [p for p in first if p] + errors
    return "; ".join(dict.fromkeys(parts)) or "TensorRT reported no reason"


#: Prefix of the lines our plugin library writes to stderr when it has no logger to use (before
#: any TensorRT is found, or under a runtime whose layout it does not know; plugins/README.md).
#: Usually its messages reach the builder's logger instead.
PLUGIN_PREFIX = "[stn_deploy_plugins]"


def _native_errors(job: BuildJob) -> list[str]:
    """What the plugin library wrote to stderr during this job (it names the bad field)."""
    path = job.stderr
    if not path:
        return []
    try:
        sys.stderr.flush()
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [" ".join(line.split(PLUGIN_PREFIX, 1)[1].split()) for line in lines if PLUGIN_PREFIX in line]


def _profile_shapes(job: BuildJob, network) -> list[dict]:
    """Resolve one optimisation profile: named ranges from --shapes, defaults elsewhere."""
    given = {s.name: s.to_dict() for s in job.shapes}
    inputs = {network.get_input(i).name: network.get_input(i) for i in range(network.num_inputs)}
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise UserError(f"--shapes names {', '.join(unknown)}, not an input of the network "
                        f"(inputs: {', '.join(inputs)})")
    lo_b, opt_b, hi_b = job.default_batch
    ranges = []
    for name, tensor in inputs.items():
        shape = list(tensor.shape)
        if name in given:
            s = given[name]
            if len(s["min"]) != len(shape):
                raise UserError(f"--shapes {name}: rank {len(s['min'])} but the input has rank "
                                f"{len(shape)} (shape {shape})")
            for d, fixed in enumerate(shape):
                if fixed >= 0 and any(v[d] != fixed for v in (s["min"], s["opt"], s["max"])):
                    raise UserError(f"--shapes {name}: dimension {d} is fixed at {fixed} in the model")
            ranges.append(s)
        elif any(d < 0 for d in shape):
            if any(d < 0 for d in shape[1:]):
                raise UserError(f"input {name} has dynamic dimensions {shape} beyond the batch: "
                                "give its range with --shapes NAME:MIN,OPT,MAX")
            ranges.append({"name": name, "min": [lo_b] + shape[1:], "opt": [opt_b] + shape[1:],
                           "max": [hi_b] + shape[1:]})
        else:
            ranges.append({"name": name, "min": shape, "opt": shape, "max": shape})
    return ranges


def _progress_monitor(trt):
    class _Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps):
            emit("progress", kind="start", phase=phase_name, parent=parent_phase, steps=num_steps)

        def step_complete(self, phase_name, step):
            emit("progress", kind="step", phase=phase_name, step=step)
            return True

        def phase_finish(self, phase_name):
            emit("progress", kind="finish", phase=phase_name)

    return _Monitor()


def _parser_version(trt) -> int | None:
    """The ONNX parser's version number as TensorRT reports it (an encoded integer)."""
    try:
        return int(trt.get_nv_onnx_parser_version())
    except Exception:  # not every TensorRT Python build exposes it
        return None


def run_job(job: BuildJob) -> dict:
    """Parse, configure and build one engine; write it to ``job.out``. Returns its info."""
    import onnx

    from stn_deploy.trt import precision as precision_mod

    flavour = get_flavour(job.flavour)
    trt = flavour.trt
    logger = make_logger(flavour, sink=lambda sev, msg: emit("log", severity=sev, message=msg))
    # The Builder must exist before plugins load (the registry ignores them otherwise).
    builder = trt.Builder(logger)
    if job.plugin_library:
        load_plugin_library(flavour, builder.get_plugin_registry(), job.plugin_library)

    precision = job.precision
    flags = 0
    convert_graph = precision != "fp32" and flavour.strongly_typed
    if flavour.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    onnx_path = job.onnx
    if convert_graph:
        model = precision_mod.convert(onnx.load(str(onnx_path)), precision)
        data = model.SerializeToString()
    else:
        data = onnx_path.read_bytes()
    if not parser.parse(data, str(onnx_path)):
        native = _native_errors(job)
        # The plugin's own line names the bad field or input; TensorRT's echo of it is noise.
        raise UserError(f"cannot parse {onnx_path.name}: " + (
            "; ".join([*native, *_parser_errors(parser, detail=False)]) if native
            else _fail(logger, *_parser_errors(parser))))

    config = builder.create_builder_config()
    if precision != "fp32" and not convert_graph:
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        if precision_mod.keep_coordinates_fp32(network, trt):  # theta / grid stay fp32
            config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    if job.opt_level is not None:
        config.builder_optimization_level = job.opt_level
    if job.workspace_mib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, job.workspace_mib << 20)
    ccs = job.compute_capabilities
    if ccs:
        config.num_compute_capabilities = len(ccs)
        for i, cc in enumerate(ccs):
            config.set_compute_capability(getattr(trt.ComputeCapability, cc.upper()), i)
    cache = None
    if job.timing_cache and flavour.name != "rtx":
        cache_path = job.timing_cache
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)

    ranges = _profile_shapes(job, network)
    # Any dynamic input needs a profile, also one pinned to min = opt = max by --shapes NAME:SHAPE.
    dynamic = any(d < 0 for i in range(network.num_inputs) for d in network.get_input(i).shape)
    if dynamic or any(r["min"] != r["max"] for r in ranges):
        profile = builder.create_optimization_profile()
        for r in ranges:
            profile.set_shape(r["name"], r["min"], r["opt"], r["max"])
        config.add_optimization_profile(profile)
    config.progress_monitor = _progress_monitor(trt)
    # Layer names, types and plugin details stay readable by the engine inspector.
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED

    network_info = {
        "inputs": [_tensor_info(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [_tensor_info(network.get_output(i)) for i in range(network.num_outputs)],
        "layers": [_layer_info(flavour, network.get_layer(i)) for i in range(network.num_layers)],
    }
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise UserError(f"{flavour.label} could not build {onnx_path.name}: "
                        + _fail(logger, *_native_errors(job)))
    if job.out is None:
        raise UserError("build job without an output path")  # the parent always sets one
    with open(job.out, "wb") as f:
        f.write(serialized)
    if cache is not None and job.timing_cache is not None:
        from stn_deploy.io import write_bytes

        write_bytes(job.timing_cache, bytes(config.get_timing_cache().serialize()))
    return {
        "backend": {"name": flavour.name, "version": flavour.version,
                    "onnx_parser": _parser_version(trt)},
        "build_seconds": round(seconds, 4),
        "profiles": [ranges],
        "network": network_info,
        "strongly_typed": flavour.strongly_typed,
        "graph_converted_to": precision.value if convert_graph else None,
        "warnings": [m for sev, m in logger.messages if sev == "WARNING"][:20],
    }


def _die_with_parent() -> None:
    """Ask Linux for SIGTERM when the parent dies (even by SIGKILL): a build must not outlive
    the command that asked for it."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):  # not Linux: the parent still kills us on every exit it sees
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(1)


def main() -> int:
    global _events
    # Events go to the real stdout; fd 1 now points at stderr so that TensorRT's own prints
    # cannot corrupt the event stream.
    _events = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # The parent owns Ctrl-C: it stops us and removes the partial engine.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    for line in sys.stdin:
        if not line.strip():
            continue
        job = BuildJob.from_json(line)
        # Native stderr (TensorRT, the plugin) goes to the job's file, which the parent
        # reads if we die and we read to explain a failure.
        saved = os.dup(2)
        if job.stderr:
            fd = os.open(job.stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 2)
            os.dup2(fd, 1)
            os.close(fd)
        try:
            info = run_job(job)
        except UserError as exc:
            result = {"ok": False, "error": str(exc)}
        except Exception as exc:  # report anything else as a one-line build failure too
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        else:
            result = {"ok": True, "info": info}
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.dup2(saved, 1)
            os.close(saved)
        emit("result", **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
