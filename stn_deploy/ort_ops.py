"""Our plugin ops in ONNX Runtime on the CPU, computed by the plugin's CPU reference.

The ONNX Runtime wheels ship no C headers, so a compiled custom-op library is out of reach
(DESIGN.md, "Export"). onnxruntime-extensions runs Python ops instead: each node of
``stn_deploy::STNGridSample`` / ``stn_deploy::STNAffineGridSample`` calls
``stn_deploy.kernels`` (the same C++ sampling header that the TensorRT plugin compiles for the
GPU). onnxruntime-extensions accepts an ``op_type`` of the form ``domain::Op``, so the ops are
registered directly in our domain and the model needs no remapping.

onnxruntime-extensions hands every output back through a Python list, so a call costs
about 0.2 ms more than the bare kernel at 1x1x28x28 and several ms at 64x1x28x28
(``benchmarks/export_cpu.py``): it is for validation on machines without a GPU, not for
serving. The standard export (``AffineGrid`` + ``GridSample``) is the CPU serving path.

onnxruntime-extensions terminates the process when a Python op raises, so the ops never
raise: they record the error and ``ort_session``'s session raises it as a ``UserError``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stn_deploy import schema
from stn_deploy.errors import UserError
from stn_deploy.graph import PLUGIN_VERSION_ATTR

if TYPE_CHECKING:
    import onnx
    import onnxruntime

_LOCK = threading.Lock()
_REGISTERED = False


def _mode_names(interpolation_mode: int, padding_mode: int) -> tuple[str, str]:
    try:
        mode = schema.InterpolationMode(int(interpolation_mode)).name.lower()
        padding = schema.PaddingMode(int(padding_mode)).name.lower()
    except ValueError:
        # Recorded by _guarded and raised by PluginSession.run as a UserError.
        raise ValueError(
            f"unsupported {schema.FIELD_INTERPOLATION_MODE}={interpolation_mode} or "
            f"{schema.FIELD_PADDING_MODE}={padding_mode}"
        ) from None
    return mode, padding


def _check_version(plugin_version: str) -> None:
    if plugin_version and plugin_version != schema.PLUGIN_VERSION:
        raise ValueError(
            f"plugin_version {plugin_version!r} is not supported by this stn-deploy "
            f"(it implements {schema.PLUGIN_VERSION!r})"
        )


def grid_sample_compute(x: np.ndarray, grid: np.ndarray, **attrs) -> np.ndarray:
    """What one ``STNGridSample`` node computes (``F.grid_sample`` semantics), by the kernels."""
    from stn_deploy import kernels

    _check_version(attrs.get(PLUGIN_VERSION_ATTR, schema.PLUGIN_VERSION))
    mode, padding = _mode_names(attrs[schema.FIELD_INTERPOLATION_MODE], attrs[schema.FIELD_PADDING_MODE])
    out = kernels.grid_sample(
        np.ascontiguousarray(x, dtype=np.float32),
        np.ascontiguousarray(grid, dtype=np.float32),
        mode,
        padding,
        bool(attrs[schema.FIELD_ALIGN_CORNERS]),
    )
    return np.asarray(out, dtype=np.float32)


def affine_grid_sample_compute(x: np.ndarray, theta: np.ndarray, **attrs) -> np.ndarray:
    """What one ``STNAffineGridSample`` node computes: grid from theta, then sample."""
    from stn_deploy import kernels

    _check_version(attrs.get(PLUGIN_VERSION_ATTR, schema.PLUGIN_VERSION))
    mode, padding = _mode_names(attrs[schema.FIELD_INTERPOLATION_MODE], attrs[schema.FIELD_PADDING_MODE])
    x = np.ascontiguousarray(x, dtype=np.float32)
    out_d, out_h, out_w = (int(attrs[k]) for k in (schema.FIELD_OUT_D, schema.FIELD_OUT_H, schema.FIELD_OUT_W))
    spatial = (out_d, out_h, out_w) if out_d > 0 else (out_h, out_w)
    projective = tuple(np.shape(theta)[-2:]) == (3, 3) and x.ndim == 4
    if int(attrs.get(schema.FIELD_TRANSFORM, 0)) != int(projective):
        raise ValueError(f"{schema.FIELD_TRANSFORM}={attrs.get(schema.FIELD_TRANSFORM)} does not fit theta of shape "
                         f"{list(np.shape(theta))} (1 = projective [N,3,3], 0 = affine [N,2,3] / [N,3,4])")
    out = kernels.affine_grid_sample(
        x,
        np.ascontiguousarray(theta, dtype=np.float32),
        spatial,
        mode,
        padding,
        bool(attrs[schema.FIELD_ALIGN_CORNERS]),
    )
    return np.asarray(out, dtype=np.float32)


_ERRORS: list[str] = []


def _placeholder(args, attrs) -> np.ndarray:
    """A float32 array of the op's output shape where it can be told, else one element."""
    try:
        x, second = np.asarray(args[0]), np.asarray(args[1])
        if schema.FIELD_OUT_H in attrs:
            d = int(attrs.get(schema.FIELD_OUT_D, 0))
            spatial = ((d,) if d > 0 else ()) + (int(attrs[schema.FIELD_OUT_H]), int(attrs[schema.FIELD_OUT_W]))
        else:
            spatial = tuple(second.shape[1:-1])
        return np.zeros((x.shape[0], x.shape[1], *spatial), dtype=np.float32)
    except Exception:  # malformed inputs: any array will do, the run is reported as failed
        return np.zeros((1,), dtype=np.float32)


def _guarded(compute):
    """onnxruntime-extensions aborts the whole process (std::terminate) when a Python op raises,
    so the op records the error, returns a placeholder, and ``PluginSession.run`` raises it."""

    def op(*args, **attrs):
        try:
            return compute(*args, **attrs)
        except BaseException as exc:  # noqa: BLE001 - anything escaping here kills the process
            msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            with _LOCK:
                _ERRORS.append(msg)
            return _placeholder(args, attrs)

    op.__name__ = compute.__name__
    return op


def _take_error() -> str | None:
    with _LOCK:
        msg = _ERRORS[0] if _ERRORS else None
        _ERRORS.clear()
    return msg


def register_ops() -> None:
    """Register both plugin ops with onnxruntime-extensions (idempotent, thread-safe)."""
    global _REGISTERED
    with _LOCK:
        if _REGISTERED:
            return
        from onnxruntime_extensions import PyCustomOpDef, onnx_op

        f32 = PyCustomOpDef.dt_float

        def attr_types(op: str) -> dict:
            return {k: PyCustomOpDef.dt_string if isinstance(v, str) else PyCustomOpDef.dt_int64
                    for k, v in _ATTRS[op].items()}

        for op, compute in ((schema.GRID_SAMPLE_OP, grid_sample_compute),
                            (schema.AFFINE_GRID_SAMPLE_OP, affine_grid_sample_compute)):
            onnx_op(op_type=f"{schema.PLUGIN_DOMAIN}::{op}", inputs=[f32, f32], outputs=[f32],
                    attrs=attr_types(op))(_guarded(compute))
        _REGISTERED = True


#: Attributes of each op with their defaults (None = required); every node must carry all of
#: them for onnxruntime-extensions, so missing optional ones are filled in a copy of the model.
_COMMON_ATTRS: dict = {
    PLUGIN_VERSION_ATTR: schema.PLUGIN_VERSION,
    schema.FIELD_INTERPOLATION_MODE: 0,
    schema.FIELD_PADDING_MODE: 0,
    schema.FIELD_ALIGN_CORNERS: 0,
}
_ATTRS: dict[str, dict] = {
    schema.GRID_SAMPLE_OP: dict(_COMMON_ATTRS),
    schema.AFFINE_GRID_SAMPLE_OP: {
        **_COMMON_ATTRS, schema.FIELD_TRANSFORM: 0, schema.FIELD_OUT_D: 0,
        schema.FIELD_OUT_H: None, schema.FIELD_OUT_W: None,
    },
}


def _complete_attributes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Check our nodes' op types and attributes; fill optional attributes that are missing."""
    import onnx

    copy = None
    for i, node in enumerate(model.graph.node):
        if node.domain != schema.PLUGIN_DOMAIN:
            continue
        if node.op_type not in _ATTRS:
            raise UserError(f"node {node.name!r}: unknown op {schema.PLUGIN_DOMAIN}::{node.op_type}")
        have = {a.name for a in node.attribute}
        for name, default in _ATTRS[node.op_type].items():
            if name in have:
                continue
            if default is None:
                raise UserError(f"node {node.name!r} ({node.op_type}) lacks attribute {name!r}")
            if copy is None:
                copy = onnx.ModelProto()
                copy.CopyFrom(model)
            copy.graph.node[i].attribute.append(onnx.helper.make_attribute(name, default))
    return copy if copy is not None else model


def has_plugin_ops(model: onnx.ModelProto) -> bool:
    """Whether any node of ``model`` is one of our plugin ops."""
    return any(n.domain == schema.PLUGIN_DOMAIN for n in model.graph.node)


def ort_session(
    model: Path | str | bytes | onnx.ModelProto,
    *,
    threads: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> onnxruntime.InferenceSession:
    """An ONNX Runtime session for a standard or plugin-op graph.

    Args:
        model: an ``.onnx`` path, serialised bytes or a ``ModelProto``.
        threads: intra-op threads; default ONNX Runtime's (all cores).
        providers: execution providers; default the CPU.

    Raises:
        UserError: the file is missing or not a loadable ONNX model, or it needs the plugin
            kernels and they are not built.
    """
    import onnxruntime as ort

    from stn_deploy.graph import load_onnx

    proto = model if not isinstance(model, (str, Path, bytes)) else load_onnx(model)
    from stn_deploy import verbosity

    opts = ort.SessionOptions()
    opts.log_severity_level = verbosity.ort_severity()
    if threads:
        opts.intra_op_num_threads = int(threads)
    if not has_plugin_ops(proto):
        try:
            return ort.InferenceSession(proto.SerializeToString(), opts, providers=list(providers))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise UserError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from None
    from onnxruntime_extensions import get_library_path

    from stn_deploy.graph import require_valid_plugin_nodes

    # What the TensorRT build would reject must not run here either.
    require_valid_plugin_nodes(proto, "plugin ONNX")
    _require_kernels()
    proto = _complete_attributes(proto)
    register_ops()
    opts.register_custom_ops_library(get_library_path())
    try:
        return _plugin_session_class()(proto.SerializeToString(), opts, providers=list(providers))
    except Exception as exc:
        raise UserError(f"ONNX Runtime cannot load the model: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


_SESSION_CLASS = None


def _plugin_session_class():
    """``InferenceSession`` whose ``run`` raises the errors our Python ops recorded."""
    global _SESSION_CLASS
    if _SESSION_CLASS is None:
        import onnxruntime as ort

        class PluginSession(ort.InferenceSession):
            def run(self, output_names, input_feed, run_options=None):
                _take_error()
                try:
                    out = super().run(output_names, input_feed, run_options)
                except Exception as exc:
                    err = _take_error()
                    if err:
                        raise UserError(f"plugin op failed: {err}") from None
                    raise UserError(f"ONNX Runtime run failed: {_first_line(exc)}") from None
                err = _take_error()
                if err:
                    raise UserError(f"plugin op failed: {err}")
                return out

        _SESSION_CLASS = PluginSession
    return _SESSION_CLASS


def _require_kernels() -> None:
    """Fail early, with one line, when the plugin's CPU reference is unavailable."""
    try:
        from stn_deploy import kernels
    except ImportError as exc:
        raise UserError(f"plugin ops need stn_deploy.kernels, which cannot be imported: {exc}") from None
    load = getattr(kernels, "load_library", None)
    if load is not None:
        load()  # UserError (one line) when the library is not built
