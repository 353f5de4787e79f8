"""INT8 post-training quantisation with the sampler kept in float.

ONNX Runtime's static quantisation (QDQ format, symmetric INT8 as TensorRT's explicit
quantisation requires, per-channel weights, min/max calibration on the bundled digits):

- quantised: every ``Conv``, and the ``Gemm``/``MatMul`` of the classifier (nodes that do not
  feed a sampler's grid or theta);
- kept in float: everything else on the way to a sampler's grid/theta input (the
  localisation net's fully connected layers and its final regression layer, the grid
  generator) and the sampler itself, whose inputs never come from a ``DequantizeLinear``.
  A quantised theta moves the whole warp: ``warp_shift`` measures by how much.

Plugin ONNX is quantised through its native twin (``native.to_native``: the same graph with
standard sampler ops, which ONNX Runtime can calibrate), whose sampler subgraphs are then
put back as the original plugin nodes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from stn_deploy import schema
from stn_deploy.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import onnx

#: Ops that make a graph "already quantised".
QUANTISED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                           "MatMulInteger", "DynamicQuantizeLinear", "QGemm"})
#: Ops quantised when selected.
QUANTISABLE_OPS = ("Conv", "Gemm", "MatMul")
#: The accuracy drop the INT8 flavour aims at (percentage points on the RTS test set).
INT8_ACCURACY_DROP = 0.5
DEFAULT_SAMPLES = 512


@dataclass(frozen=True)
class QuantizeOptions:
    """Options of ``quantize``.

    Attributes:
        model: a float ONNX model (standard, native or plugin ops) with one image input.
        output: the INT8 (QDQ) ONNX to write, atomically; never the input.
        calibration: a dataset name from ``data.DATASETS`` (its training split, so the test
            set stays unseen) or an ``.npz`` of images [N, C, H, W]; default "RTS".
        samples: calibration images; default 512.
        quantize_regression: also quantise the localisation nets' fully connected layers and
            final regression (to measure what that does); default False.
        seed: seed of the calibration images drawn from a dataset; default 1.
    """

    model: Path
    output: Path
    calibration: str = "RTS"
    samples: int = DEFAULT_SAMPLES
    quantize_regression: bool = False
    seed: int = 1


@dataclass
class QuantizeReport:
    """What ``quantize`` did: INT8 nodes, float nodes (and why), calibration."""

    input: str
    output: str
    calibration: dict
    quantized: list[str] = field(default_factory=list)
    kept_float: dict[str, str] = field(default_factory=dict)
    samplers: list[str] = field(default_factory=list)
    qdq_nodes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def lines(self) -> list[str]:
        out = [(f"INT8: {len(self.quantized)} node(s) quantised ({self.qdq_nodes} Q/DQ nodes), "
                f"{len(self.kept_float)} kept in float, calibrated on {self.calibration['source']} "
                f"({self.calibration['samples']} images) in {self.seconds:.2f} s")]
        reasons: dict[str, int] = {}
        for why in self.kept_float.values():
            reasons[why] = reasons.get(why, 0) + 1
        out += [f"  float: {n} x {why}" for why, n in sorted(reasons.items())]
        if self.samplers:
            out.append(f"  samplers in float: {', '.join(self.samplers)}")
        return out


# --------------------------------------------------------------------------- graph analysis


def _is_sampler(node) -> bool:
    return (node.op_type == "GridSample" and (node.domain or "") in ("", "ai.onnx")) or (
        node.domain == schema.PLUGIN_DOMAIN and node.op_type in (schema.GRID_SAMPLE_OP, schema.AFFINE_GRID_SAMPLE_OP))


def _grid_cone(model: onnx.ModelProto) -> set[str]:
    """Names of the nodes that a sampler's grid/theta input depends on (localisation net and
    grid generator)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    cone: set[str] = set()
    stack = [n.input[1] for n in model.graph.node if _is_sampler(n) and len(n.input) > 1]
    seen: set[str] = set()
    while stack:
        t = stack.pop()
        if t in seen or t not in producer:
            continue
        seen.add(t)
        node = producer[t]
        cone.add(node.name)
        stack.extend(node.input)
    return cone


def select_nodes(model: onnx.ModelProto, quantize_regression: bool = False) -> tuple[list[str], dict[str, str]]:
    """(names to quantise, {name: why kept in float}) of the quantisable nodes of ``model``.

    Every node must have a name (``_name_nodes``)."""
    cone = _grid_cone(model)
    chosen, kept = [], {}
    for n in model.graph.node:
        if _is_sampler(n):
            kept[n.name] = "sampler"
        elif n.op_type not in QUANTISABLE_OPS:
            continue
        elif n.name in cone and n.op_type != "Conv" and not quantize_regression:
            kept[n.name] = "localisation FC / regression / grid generator (moves theta)"
        elif n.name in cone and n.op_type == "MatMul" and "/native/" in n.name:
            kept[n.name] = "grid generator"
        else:
            chosen.append(n.name)
    return chosen, kept


def _name_nodes(model: onnx.ModelProto) -> None:
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def _check_input(model: onnx.ModelProto, label: str) -> None:
    from onnx import TensorProto

    ops = {n.op_type for n in model.graph.node}
    if ops & QUANTISED_OPS:
        raise UserError(f"{label} is already quantised ({', '.join(sorted(ops & QUANTISED_OPS))}); "
                        "quantise the float model")
    if "Conv" not in ops:
        raise UserError(f"{label} has no convolutions to quantise (INT8 here targets conv nets)")
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise UserError(f"{label}: quantize takes models with one float32 image input")


# --------------------------------------------------------------------------- calibration


def calibration_images(source: str, input_dims: list, samples: int, seed: int = 1) -> tuple[np.ndarray, str]:
    """(images [N, C, H, W] float32, description) for calibration.

    Args:
        source: a dataset name (training split) or an ``.npz`` file (its first array).
        input_dims: the model input's dims (ints, or None where dynamic).
        samples: how many images to take (at most).
        seed: dataset seed.

    Raises:
        UserError: no images, an unknown dataset, images that do not fit the model input.
    """
    import numpy as np

    from stn_deploy.data import DATASETS, make_dataset

    if samples < 1:
        raise UserError("no calibration data: --samples must be at least 1")
    if source in DATASETS:
        images = make_dataset(source, "train", seed).images[:samples].numpy()
        what = f"{source} (train split, seed {seed})"
    elif source.endswith(".npz"):
        path = Path(source)
        if not path.is_file():
            raise UserError(f"{path}: no such calibration file")
        try:
            with np.load(path) as data:
                arrays = [data[k] for k in data.files]
        except Exception as exc:  # zip/pickle errors of a foreign file
            raise UserError(f"{path}: not a readable .npz ({type(exc).__name__})") from None
        if not arrays or arrays[0].size == 0:
            raise UserError(f"no calibration data: {path} holds no images")
        images = np.asarray(arrays[0], dtype=np.float32)[:samples]
        what = str(path)
    else:
        raise UserError(f"--calibration {source!r}: a dataset ({', '.join(DATASETS)}) or an .npz of images")
    if images.ndim != len(input_dims) or any(
            isinstance(d, int) and d > 0 and d != s for d, s in zip(input_dims[1:], images.shape[1:])):
        raise UserError(f"calibration images {list(images.shape[1:])} do not fit the model input "
                        f"{['N', *input_dims[1:]]}")
    return np.ascontiguousarray(images), what


def _reader(input_name: str, images: np.ndarray, batch: int = 64):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([images[i:i + batch] for i in range(0, len(images), batch)])

        def get_next(self):
            b = next(self._batches, None)
            return None if b is None else {input_name: b}

    return Reader()


# --------------------------------------------------------------------------- quantise


def _float_sampler_inputs(model: onnx.ModelProto) -> None:
    """Feed samplers the float tensors, not a DequantizeLinear of them (ONNX Runtime shares
    one Q/DQ pair among all consumers of a tensor it quantised for a Conv)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if not _is_sampler(n):
            continue
        for i, t in enumerate(n.input):
            dq = producer.get(t)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[i] = q.input[0]


def _restore_plugin_nodes(quantised: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Replace each native sampler subgraph (nodes named ``<plugin node>/native/...``) by the
    plugin node it came from."""
    plugin = {n.name: n for n in original.graph.node if n.domain == schema.PLUGIN_DOMAIN}
    out = []
    placed: set[str] = set()
    for n in quantised.graph.node:
        owner = next((p for p in plugin if n.name.startswith(f"{p}/native/")), None)
        if owner is None:
            out.append(n)
        elif owner not in placed:
            placed.add(owner)
            out.append(plugin[owner])
    # The subgraph's last node (the GridSample) sits where the plugin node must be: move each
    # plugin node to its subgraph's end by a topological sort.
    del quantised.graph.node[:]
    quantised.graph.node.extend(_toposort(out, quantised))
    used = {i for n in quantised.graph.node for i in n.input}
    keep = [t for t in quantised.graph.initializer if t.name in used]
    del quantised.graph.initializer[:]
    quantised.graph.initializer.extend(keep)
    for imp in original.opset_import:
        if imp.domain == schema.PLUGIN_DOMAIN and not any(i.domain == imp.domain for i in quantised.opset_import):
            quantised.opset_import.append(imp)


def _toposort(nodes: list, model: onnx.ModelProto) -> list:
    ready = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer} | {""}
    pending, out = list(nodes), []
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                out.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise UserError("quantised graph has a cycle or a dangling input: " + ", ".join(n.name for n in rest[:3]))
        pending = rest
    return out


def quantize_model(model: onnx.ModelProto, images: np.ndarray, *, quantize_regression: bool = False,
                   label: str = "the model") -> tuple[onnx.ModelProto, QuantizeReport]:
    """In-memory ``quantize`` on calibration ``images``; returns (INT8 model, report)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from stn_deploy.graph import check_model, register_onnx_schemas
    from stn_deploy.io import temporary_folder
    from stn_deploy.native import to_native

    register_onnx_schemas()
    started = time.perf_counter()
    _check_input(model, label)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _name_nodes(model)
    has_plugin = any(n.domain == schema.PLUGIN_DOMAIN for n in model.graph.node)
    work = to_native(model) if has_plugin else model
    chosen, kept = select_nodes(work, quantize_regression)
    if not chosen:
        raise UserError(f"{label}: no node left to quantise")
    input_name = next(i.name for i in work.graph.input if i.name not in {t.name for t in work.graph.initializer})
    with temporary_folder("stn-quant-") as tmp:
        src, dst = tmp / "float.onnx", tmp / "int8.onnx"
        onnx.save(work, str(src))
        # ORT logs "consider pre-processing" on the root logger; our graphs arrive shape-
        # inferred (graph.check_model) and have no BatchNorm to fold, so it is noise here.
        logging.disable(logging.WARNING)
        try:
            quantize_static(
                str(src), str(dst), _reader(input_name, images), quant_format=QuantFormat.QDQ,
                per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                nodes_to_quantize=chosen, op_types_to_quantize=list(QUANTISABLE_OPS),
                calibrate_method=CalibrationMethod.MinMax,
                # TensorRT's explicit quantisation takes symmetric scales (zero point 0) and
                # no INT32 bias DequantizeLinear (its parser rejects them); biases stay float.
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
        except Exception as exc:  # ORT's quantiser raises many types for graphs it cannot take
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{label}: ONNX Runtime's quantiser failed: {first[:300]}") from None
        finally:
            logging.disable(logging.NOTSET)
        out = onnx.load(str(dst))
    _float_sampler_inputs(out)
    if has_plugin:
        _restore_plugin_nodes(out, model)
    out = _drop_dead(out)
    check_model(out)
    report = QuantizeReport(input=label, output="", calibration={"samples": len(images)},
                            quantized=[n for n in chosen if _has_qdq_weight(out, n)],
                            kept_float={**{k: v for k, v in kept.items() if "/native/" not in k},
                                        **{n.name: "sampler" for n in out.graph.node if _is_sampler(n)}},
                            samplers=[n.name for n in out.graph.node if _is_sampler(n)],
                            qdq_nodes=sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in out.graph.node),
                            seconds=time.perf_counter() - started)
    return out, report


def _drop_dead(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove nodes whose outputs nobody reads (a Q/DQ pair bypassed for a sampler)."""
    needed = {o.name for o in model.graph.output}
    keep = []
    for n in reversed(list(model.graph.node)):
        if any(o in needed for o in n.output):
            keep.append(n)
            needed.update(n.input)
    del model.graph.node[:]
    model.graph.node.extend(reversed(keep))
    return model


def _has_qdq_weight(model: onnx.ModelProto, node_name: str) -> bool:
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next((n for n in model.graph.node if n.name == node_name), None)
    return node is not None and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                                    for i in node.input)


def quantize(options: QuantizeOptions) -> QuantizeReport:
    """Quantise a float ONNX model to INT8 (QDQ) with the samplers and theta kept in float.

    Args:
        options: see ``QuantizeOptions``.

    Returns:
        The report (INT8 nodes, float nodes and why, calibration source).

    Raises:
        UserError: not an ONNX model, already quantised, no convolutions, no or unfitting
            calibration data, output == input.
    """
    import onnx

    from stn_deploy.graph import load_onnx
    from stn_deploy.io import atomic_path

    src, dst = Path(options.model), Path(options.output)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the output would overwrite the input")
    model = load_onnx(src)
    _check_input(model, str(src))
    dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim]
    images, what = calibration_images(options.calibration, dims, options.samples, options.seed)
    out, report = quantize_model(model, images, quantize_regression=options.quantize_regression, label=str(src))
    out.metadata_props.add(key="stn_deploy.precision", value="int8")
    with atomic_path(dst) as tmp:
        onnx.save(out, str(tmp))
    report.output = str(dst)
    report.calibration["source"] = what
    return report


# --------------------------------------------------------------------------- measurements


def is_quantised(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANTISED_OPS for n in model.graph.node)


def task_error(model: onnx.ModelProto | Path, dataset: str, seed: int = 0, limit: int | None = None,
               batch: int = 256) -> float:
    """Test error (%) of an ONNX classifier in ONNX Runtime (plugin ops via ``ort_ops``)."""
    import numpy as np

    from stn_deploy.data import make_dataset
    from stn_deploy.ort_ops import ort_session

    test = make_dataset(dataset, "test", seed)
    images, labels = test.images.numpy(), test.labels.numpy()
    if limit:
        images, labels = images[:limit], labels[:limit]
    sess = ort_session(model)
    name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {name: images[i:i + batch]})[0] for i in range(0, len(images), batch)])
    return float((logits.argmax(1) != labels).mean() * 100)


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    import onnx

    m = onnx.ModelProto.FromString(model.SerializeToString())
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.helper.make_empty_tensor_value_info(n))
    return m


def warp_shift(model: onnx.ModelProto, images: np.ndarray, calibration: np.ndarray) -> dict:
    """How far the sampling grid moves, in input pixels, when the localisation net's FC and
    regression layers are quantised too, against keeping them float (the default).

    Both INT8 variants are compared with the float model on ``images``. Standard or native
    graphs (a ``GridSample`` whose grid is readable); plugin graphs go through their native twin.

    Returns:
        {"theta_float": {"mean_px", "max_px"}, "theta_int8": {...}} per variant, and the
        image size used for the pixel conversion.
    """
    import numpy as np

    from stn_deploy.native import to_native
    from stn_deploy.ort_ops import ort_session

    base = to_native(model) if any(n.domain == schema.PLUGIN_DOMAIN for n in model.graph.node) else model
    samplers = [n for n in base.graph.node if _is_sampler(n)]
    if not samplers:
        raise UserError("the model has no sampler whose grid could move")
    grids = [s.input[1] for s in samplers]
    h, w = images.shape[-2:]
    half = np.array([(w - 1) / 2, (h - 1) / 2], dtype=np.float64)  # normalised -> pixels (either convention, to 1 px/W)

    def run(m) -> list:
        sess = ort_session(_with_outputs(m, grids))
        name = sess.get_inputs()[0].name
        names = [o.name for o in sess.get_outputs()]
        res = sess.run(None, {name: images})
        return [res[names.index(g)] for g in grids]

    ref = run(base)
    out = {"image_hw": [int(h), int(w)], "images": len(images)}
    for key, qr in (("theta_float", False), ("theta_int8", True)):
        q, _ = quantize_model(base, calibration, quantize_regression=qr)
        moved = [np.abs(a.astype(np.float64) - r.astype(np.float64))[..., :2] * half for a, r in zip(run(q), ref)]
        dist = np.concatenate([np.sqrt((m ** 2).sum(-1)).reshape(-1) for m in moved])
        out[key] = {"mean_px": float(dist.mean()), "max_px": float(dist.max())}
    return out
