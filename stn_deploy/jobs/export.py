"""PyTorch -> ONNX with standard or plugin grid-sample ops.

``standard``: the legacy (TorchScript) exporter at opset 20 emits ``AffineGrid`` +
``GridSample``, which every runtime with opset 20 runs and which ONNX Runtime runs fast. The
dynamo exporter is not used: it decomposes ``F.affine_grid`` into Mul + ReduceSum, 200x
slower in ONNX Runtime, and fixes the output H/W silently (DESIGN.md, "Export").

``plugin``: every ``SpatialTransformer.warp`` is swapped, for the export only, for a
``torch.autograd.Function`` whose ``symbolic`` emits one of our ops: the fused
``STNAffineGridSample`` when the generator has a matrix (affine, attention, 3-D affine:
``transform=0``; projective [N,3,3]: ``transform=1``), else ``STNGridSample`` on the
generator's grid (thin-plate spline). Attribute names come from ``schema``, the same names
the plugin's creators list as fields.

A user's own model, a ``torch.export`` program (``.pt2``), has no spatial transformer modules to
swap: ``export_program`` exports it with the dynamo exporter (the program is already a graph,
dynamic dims included) and maps ATen's grid ops itself (``user_model.program_to_onnx``); the
plugin and native flavours are then graph rewrites (``graph.rewrite_model``, ``native.to_native``).
"""

from __future__ import annotations

import contextlib
import io
import json
import types
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stn_deploy import __version__, schema
from stn_deploy.errors import UserError
from stn_deploy.io import check_outputs_distinct, file_sha256
from stn_deploy.model_files import INPUT_NAME, META_PREFIX, OUTPUT_NAME, ModelKind, load_model, require_kind

if TYPE_CHECKING:
    import onnx
    import torch
    from torch import nn

OPS_CHOICES = ("standard", "plugin", "native")
DEFAULT_OPSET = 20
#: AffineGrid exists from opset 20; opset-16 GridSample alone cannot express affine STNs.
MIN_OPSET = 20
#: The highest opset the legacy (TorchScript) exporter of torch 2.13 was checked to write.
MAX_OPSET = 21
BATCH_DIM, HEIGHT_DIM, WIDTH_DIM, DEPTH_DIM = "batch", "height", "width", "depth"


@dataclass(frozen=True)
class ExportOptions:
    """Options of ``export``.

    Attributes:
        checkpoint: a checkpoint written by ``stn-deploy train``, or the user's own model as a
            ``torch.export`` program (``.pt2``, ``user_model.save_program``), whose dynamic
            dims come from its ``dynamic_shapes`` (``dynamic_batch``/``dynamic_hw`` left at
            their defaults).
        output: the ``.onnx`` file to write (atomically).
        ops: ``standard`` (AffineGrid + GridSample), ``plugin`` (our TensorRT plugin ops) or
            ``native`` (ops stock TensorRT imports, ``stn_deploy.native``).
        opset: ONNX opset of the default domain; default 20 (the first with AffineGrid).
            A native graph is lowered to opset 17 afterwards (its GridSample mode names).
        dynamic_batch: make the batch dimension dynamic; default True.
        dynamic_hw: make input H/W dynamic: None = where the model allows (auto), True =
            required (UserError if the model cannot), False = fixed.
    """

    checkpoint: Path
    output: Path
    ops: str = "standard"
    opset: int = DEFAULT_OPSET
    dynamic_batch: bool = True
    dynamic_hw: bool | None = None


@dataclass
class ExportResult:
    """What ``export`` wrote."""

    path: str
    ops: str
    opset: int
    input_name: str
    input_shape: list  # ints and dimension names
    output_names: list[str]
    dynamic_hw: bool
    samplers: list[dict] = field(default_factory=list)
    #: Every graph input: name -> dims (ints and dimension names).
    inputs: dict[str, list] = field(default_factory=dict)
    op_counts: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- plugin symbolics


def _plugin_attrs(fields: dict[str, int]) -> dict:
    from stn_deploy.graph import PLUGIN_VERSION_ATTR

    attrs: dict[str, int | str] = {f"{k}_i": int(v) for k, v in fields.items()}
    attrs[f"{PLUGIN_VERSION_ATTR}_s"] = schema.PLUGIN_VERSION
    return attrs


def _out_type(x, spatial: Sequence):
    sizes = x.type().varyingSizes() if hasattr(x.type(), "varyingSizes") else None
    n, c = (sizes[0], sizes[1]) if sizes else (None, None)
    return x.type().with_sizes([n, c, *spatial])


def _grid_sample_fn():
    import torch
    import torch.nn.functional as F

    class GridSampleFn(torch.autograd.Function):
        """F.grid_sample in eager mode; ``stn_deploy::STNGridSample`` in the legacy exporter."""

        @staticmethod
        def forward(ctx, x, grid, mode: str, padding: str, align_corners: bool):
            return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)

        @staticmethod
        def symbolic(g, x, grid, mode, padding, align_corners):
            fields = schema.SamplerSettings(mode, padding, bool(align_corners)).plugin_fields()
            out = g.op(f"{schema.PLUGIN_DOMAIN}::{schema.GRID_SAMPLE_OP}", x, grid, **_plugin_attrs(fields))
            gsizes = grid.type().varyingSizes() if hasattr(grid.type(), "varyingSizes") else None
            spatial = list(gsizes[1:-1]) if gsizes else []
            out.setType(_out_type(x, spatial))
            return out

    return GridSampleFn


def _affine_grid_sample_fn():
    import torch
    import torch.nn.functional as F

    from stn_deploy.models.generators import projective_grid

    class AffineGridSampleFn(torch.autograd.Function):
        """Grid from theta, then sample; ``stn_deploy::STNAffineGridSample`` when exported."""

        @staticmethod
        def forward(ctx, x, theta, out_size: tuple, transform: int, mode: str, padding: str, align_corners: bool):
            size = [x.shape[0], x.shape[1], *out_size]
            if transform == schema.Transform.PROJECTIVE:
                grid = projective_grid(theta, size, align_corners)
            else:
                grid = F.affine_grid(theta, size, align_corners=align_corners)
            return F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)

        @staticmethod
        def symbolic(g, x, theta, out_size, transform, mode, padding, align_corners):
            fields = schema.SamplerSettings(mode, padding, bool(align_corners)).plugin_fields()
            spatial = [int(s) for s in out_size]
            fields.update({
                schema.FIELD_TRANSFORM: int(transform),
                schema.FIELD_OUT_D: spatial[0] if len(spatial) == 3 else 0,
                schema.FIELD_OUT_H: spatial[-2],
                schema.FIELD_OUT_W: spatial[-1],
            })
            out = g.op(f"{schema.PLUGIN_DOMAIN}::{schema.AFFINE_GRID_SAMPLE_OP}", x, theta, **_plugin_attrs(fields))
            out.setType(_out_type(x, spatial))
            return out

    return AffineGridSampleFn


def _is_transformer(module) -> bool:
    """Duck-typed ``models.SpatialTransformer`` (localisation, generator, out_size, settings, warp)."""
    return all(hasattr(module, a) for a in ("generator", "settings", "out_size", "warp", "localisation"))


def transformers(model: nn.Module) -> list[tuple[str, Any]]:
    """(qualified name, module) of every spatial transformer inside ``model``."""
    return [(name or "<root>", m) for name, m in model.named_modules() if _is_transformer(m)]


def transform_kind(theta) -> schema.Transform:
    """AFFINE for [N,2,3] / [N,3,4] thetas, PROJECTIVE for [N,3,3]."""
    return schema.Transform.PROJECTIVE if tuple(theta.shape[-2:]) == (3, 3) else schema.Transform.AFFINE


@contextlib.contextmanager
def plugin_warps(model: nn.Module) -> Iterator[None]:
    """Within the block, every spatial transformer's ``warp`` emits our plugin ops on export."""
    gs_fn, ags_fn = _grid_sample_fn(), _affine_grid_sample_fn()

    def warp(self, x, params):
        s = self.settings
        theta = self.generator.theta(params)
        if theta is None:
            grid = self.generator.grid(params, (x.shape[0], x.shape[1], *self.out_size), s.align_corners)
            return gs_fn.apply(x, grid, s.mode, s.padding_mode, s.align_corners)
        return ags_fn.apply(
            x, theta, tuple(int(v) for v in self.out_size), int(transform_kind(theta)),
            s.mode, s.padding_mode, s.align_corners,
        )

    patched = [m for _, m in transformers(model)]
    for m in patched:
        m.warp = types.MethodType(warp, m)  # an instance attribute shadows the class method
    try:
        yield
    finally:
        for m in patched:
            m.__dict__.pop("warp", None)


# --------------------------------------------------------------------------- export


def _hw_allowed(model: nn.Module, input_shape: Sequence[int]) -> bool:
    """Whether the model accepts another H/W (a localisation net with FC layers does not)."""
    import torch

    c, *spatial = input_shape
    other = [s + 8 for s in spatial]
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, *other))
    except Exception:  # a shape mismatch inside the model, whatever its type
        return False
    return True


def _samplers_meta(model: nn.Module) -> list[dict]:
    out = []
    for name, m in transformers(model):
        s = m.settings
        out.append({
            "module": name,
            "generator": getattr(m.generator, "kind", type(m.generator).__name__),
            "mode": s.mode,
            "padding_mode": s.padding_mode,
            "align_corners": bool(s.align_corners),
            "out_size": [int(v) for v in m.out_size],
        })
    return out


def to_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    ops: str = "standard",
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool = False,
    metadata: dict[str, str] | None = None,
) -> onnx.ModelProto:
    """Export ``model`` for inputs [N, *input_shape]; returns a checked model.

    The model is put in eval mode on the CPU (in place).

    Raises:
        UserError: unknown ``ops``, an opset below 20, or a graph that fails the checker.
    """
    import onnx
    import torch

    from stn_deploy.graph import PLUGIN_OPSET, check_model, register_onnx_schemas

    if ops not in OPS_CHOICES:
        raise UserError(f"unknown --ops {ops!r}; choose from {', '.join(OPS_CHOICES)}")
    if opset < MIN_OPSET:
        raise UserError(f"opset {opset} has no AffineGrid; use {MIN_OPSET} or later")
    if opset > MAX_OPSET:
        raise UserError(f"opset {opset} is above what the legacy exporter writes ({MAX_OPSET})")
    register_onnx_schemas()
    model = model.eval().cpu()
    example = torch.randn(2, *[int(s) for s in input_shape])
    with torch.no_grad():
        sample_out = model(example)
    n_out = len(sample_out) if isinstance(sample_out, (tuple, list)) else 1
    output_names = [OUTPUT_NAME] if n_out == 1 else [f"{OUTPUT_NAME}_{i}" for i in range(n_out)]
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {}}
    if dynamic_batch:
        axes[INPUT_NAME][0] = BATCH_DIM
        for o in output_names:
            axes[o] = {0: BATCH_DIM}
    if dynamic_hw:
        names = [DEPTH_DIM, HEIGHT_DIM, WIDTH_DIM][-(len(input_shape) - 1):]
        for i, n in enumerate(names):
            axes[INPUT_NAME][2 + i] = n
    buf = io.BytesIO()
    ctx = plugin_warps(model) if ops == "plugin" else contextlib.nullcontext()
    with ctx, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice: chosen on purpose
        try:
            torch.onnx.export(
                model, (example,), buf, dynamo=False, opset_version=opset,  # type: ignore[arg-type]  # BytesIO works
                input_names=[INPUT_NAME], output_names=output_names, dynamic_axes=axes,
                custom_opsets={schema.PLUGIN_DOMAIN: PLUGIN_OPSET} if ops == "plugin" and transformers(model) else None,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter's many error types (unsupported opset/op, tracing)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"torch.onnx.export failed at opset {opset}: {first[:300]}") from None
    proto = onnx.load_from_string(buf.getvalue())
    proto = fold_constant_affine_grids(proto)
    if ops == "native":
        from stn_deploy.native import to_native

        proto = to_native(proto)
    for k, v in (metadata or {}).items():
        proto.metadata_props.add(key=k, value=str(v))
    check_model(proto)
    _check_flavour(proto, ops, len(transformers(model)))
    return proto


def fold_constant_affine_grids(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``AffineGrid`` nodes whose inputs are all constants by an initializer.

    The thin-plate spline builds its base points with ``F.affine_grid`` of a constant
    identity; left as a node, it would be an ``AffineGrid`` that TensorRT cannot import.
    onnx-graphsurgeon's constant folding does the work (evaluated by ONNX Runtime), limited to
    ``AffineGrid`` so that the rest of the exported graph stays as the exporter wrote it.
    """
    if not any(n.op_type == "AffineGrid" for n in model.graph.node):
        return model
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    constant = [n for n in graph.nodes if n.op == "AffineGrid"
                and all(isinstance(t, gs.Constant) or (t.inputs and t.inputs[0].op == "Constant") for t in n.inputs)]
    if not constant:
        return model
    graph.fold_constants(fold_shapes=False, error_ok=False,
                         should_exclude_node=lambda node: node.op not in ("AffineGrid", "Constant"))
    graph.cleanup()  # the folded nodes and the constants only they used
    folded = gs.export_onnx(graph, do_type_check=False)
    del model.graph.node[:]
    model.graph.node.extend(folded.graph.node)
    del model.graph.initializer[:]
    model.graph.initializer.extend(folded.graph.initializer)
    return model


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How many nodes of each op type the graph's top level holds."""
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def _check_flavour(model: onnx.ModelProto, ops: str, n_samplers: int) -> None:
    counts = _op_counts(model)
    if ops == "plugin":
        left = {k: counts[k] for k in ("GridSample", "AffineGrid") if counts.get(k)}
        n_plugin = counts.get(schema.GRID_SAMPLE_OP, 0) + counts.get(schema.AFFINE_GRID_SAMPLE_OP, 0)
        if left or n_plugin != n_samplers:
            raise UserError(f"plugin export left standard ops {left} or {n_plugin}/{n_samplers} samplers converted")
    else:
        if counts.get("GridSample", 0) != n_samplers:
            raise UserError(f"standard export: {counts.get('GridSample', 0)} GridSample for {n_samplers} samplers")
        from stn_deploy.jobs.doctor import decomposed_grid_nodes

        if ops == "native":
            from stn_deploy.native import native_problems

            problems = native_problems(model)
            if problems:
                raise UserError(f"native export left {'; '.join(problems)}")
        if decomposed_grid_nodes(model):
            raise UserError("standard export produced a decomposed affine grid (Mul+ReduceSum); expected AffineGrid")


def _provenance(ops: str, source: Path | str | None, model_name: str) -> dict[str, str]:
    """The metadata every export stamps: versions, flavour, and the file and model it came from."""
    return {
        f"{META_PREFIX}version": __version__,
        f"{META_PREFIX}plugin_version": schema.PLUGIN_VERSION,
        f"{META_PREFIX}ops": ops,
        f"{META_PREFIX}source_sha256": file_sha256(source) if source else "",
        f"{META_PREFIX}source": Path(source).name if source else "",
        f"{META_PREFIX}model": model_name,
    }


def export(options: ExportOptions) -> ExportResult:
    """Export a training checkpoint to ONNX with standard or plugin grid-sample ops.

    Args:
        options: see ``ExportOptions``.

    Returns:
        What was written: path, input/output names and shape, samplers, op counts, metadata.

    Raises:
        UserError: a missing/foreign checkpoint, an unknown flavour, a model that cannot take
            dynamic H/W when required, or an unwritable output.
    """
    ckpt = Path(options.checkpoint)
    check_outputs_distinct([options.output], [ckpt])
    kind = require_kind(ckpt, ModelKind.CHECKPOINT, ModelKind.PROGRAM,
                        hint="stn-deploy train writes checkpoints, torch.export.save programs (.pt2)")
    if kind == ModelKind.PROGRAM:
        if not options.dynamic_batch or options.dynamic_hw is not None:
            raise UserError(f"{ckpt.name} is a torch.export program: its dynamic dims are those of its "
                            "dynamic_shapes; drop --static-batch / --dynamic-hw")
        from stn_deploy.user_model import load_program

        return export_program(load_program(ckpt), options.output, ops=options.ops, opset=options.opset,
                              source=ckpt, model_name=ckpt.stem)
    model, config = load_model(ckpt)
    from stn_deploy.jobs.train import read_checkpoint

    train = read_checkpoint(ckpt).get("train") or {}
    extra = {f"{META_PREFIX}{k}": str(train[k]) for k in ("dataset", "test_error", "seed") if k in train}
    return export_module(
        model, config.input_shape, options.output, ops=options.ops, opset=options.opset,
        dynamic_batch=options.dynamic_batch, dynamic_hw=options.dynamic_hw,
        source=ckpt, model_name=config.name, extra_metadata=extra,
    )


def export_module(
    model: nn.Module,
    input_shape: Sequence[int],
    output: Path,
    *,
    ops: str = "standard",
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = True,
    dynamic_hw: bool | None = None,
    source: Path | None = None,
    model_name: str = "",
    extra_metadata: dict[str, str] | None = None,
) -> ExportResult:
    """``export`` for an in-memory module (tests, the demo). Same arguments as ``ExportOptions``."""
    import onnx

    from stn_deploy.io import atomic_path

    allowed = _hw_allowed(model, input_shape)
    if dynamic_hw and not allowed:
        raise UserError("this model takes one input H/W only (its localisation net has FC layers); drop --dynamic-hw")
    hw = allowed if dynamic_hw is None else bool(dynamic_hw)
    meta = {**_provenance(ops, source, model_name),
            f"{META_PREFIX}input_shape": json.dumps([int(s) for s in input_shape]),
            f"{META_PREFIX}samplers": json.dumps(_samplers_meta(model)),
            **(extra_metadata or {})}
    proto = to_onnx(model, input_shape, ops=ops, opset=opset, dynamic_batch=dynamic_batch, dynamic_hw=hw, metadata=meta)
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    counts = _op_counts(proto)
    from stn_deploy.graph import opset_version

    return ExportResult(
        path=str(output), ops=ops, opset=opset_version(proto), input_name=INPUT_NAME, input_shape=dims,
        output_names=[o.name for o in proto.graph.output], dynamic_hw=hw,
        samplers=_samplers_meta(model), op_counts=counts,
        metadata={p.key: p.value for p in proto.metadata_props}, inputs={INPUT_NAME: dims},
    )


def export_program(
    program,
    output: Path,
    *,
    ops: str = "standard",
    opset: int = DEFAULT_OPSET,
    source: Path | None = None,
    model_name: str = "",
) -> ExportResult:
    """``export`` of a ``torch.export`` program (``user_model.program_to_onnx``): any inputs,
    dynamic dims as its ``dynamic_shapes`` made them. The example inputs' shapes are recorded
    (metadata ``stn_deploy.input_shapes``) so that ``run``/``validate``/``bench`` fill the
    dynamic dims from them.

    Raises:
        UserError: unknown ``ops``, an opset outside 20..21, a failed export, samplers the
            requested flavour could not convert, an unwritable output.
    """
    import onnx

    from stn_deploy.graph import check_model, opset_version, register_onnx_schemas
    from stn_deploy.io import atomic_path
    from stn_deploy.user_model import program_example_feed, program_to_onnx

    if ops not in OPS_CHOICES:
        raise UserError(f"unknown --ops {ops!r}; choose from {', '.join(OPS_CHOICES)}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"opset {opset}: use {MIN_OPSET}..{MAX_OPSET} (AffineGrid exists from {MIN_OPSET})")
    register_onnx_schemas()
    proto = program_to_onnx(program, ops=ops, opset=opset)
    examples = {k: list(v.shape) for k, v in program_example_feed(program).items()}
    meta = {**_provenance(ops, source, model_name), f"{META_PREFIX}input_shapes": json.dumps(examples)}
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    check_model(proto)
    _check_program_flavour(proto, ops)
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))
    initializers = {i.name for i in proto.graph.initializer}
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
              for i in proto.graph.input if i.name not in initializers}
    counts = _op_counts(proto)
    first = next(iter(inputs), "")
    return ExportResult(
        path=str(output), ops=ops, opset=opset_version(proto), input_name=first, input_shape=inputs.get(first, []),
        output_names=[o.name for o in proto.graph.output], dynamic_hw=False, op_counts=counts,
        metadata={p.key: p.value for p in proto.metadata_props}, inputs=inputs,
    )


def _check_program_flavour(model: onnx.ModelProto, ops: str) -> None:
    """A plugin export has no standard sampler left, a native one nothing TensorRT cannot import."""
    counts = _op_counts(model)
    if ops == "plugin":
        left = {k: counts[k] for k in ("GridSample", "AffineGrid") if counts.get(k)}
        if left:
            raise UserError(f"plugin export left standard ops {left} (stn-deploy rewrite --json names the reason)")
    elif ops == "native":
        from stn_deploy.native import native_problems

        problems = native_problems(model)
        if problems:
            raise UserError(f"native export left {'; '.join(problems)}")


def export_user_module(module: nn.Module, example_inputs: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
                       output: Path | str, *, ops: str = "standard", opset: int = DEFAULT_OPSET,
                       dynamic_shapes: Any = None) -> ExportResult:
    """``export`` of an ``nn.Module`` given directly (Python API): ``torch.export`` it with
    ``example_inputs`` (by name or in order) and ``dynamic_shapes``, then ``export_program``.

    Args:
        module: the model (its ``forward`` is what is exported).
        example_inputs: tensors in ``forward``'s order, or a dict of them by parameter name.
        output: the ``.onnx`` to write (atomically).
        ops: "standard" (default), "plugin" or "native", as ``ExportOptions.ops``.
        opset: ONNX opset; default ``DEFAULT_OPSET``.
        dynamic_shapes: ``torch.export``'s ``dynamic_shapes`` (``torch.export.Dim``); default
            none (static shapes).

    Returns:
        What was written, as ``export`` returns it.

    Raises:
        UserError: as ``export_program``, or ``torch.export`` could not capture the module.
    """
    from stn_deploy.user_model import export_module_program

    program = export_module_program(module, example_inputs, dynamic_shapes)
    return export_program(program, Path(output), ops=ops, opset=opset, model_name=type(module).__name__)
