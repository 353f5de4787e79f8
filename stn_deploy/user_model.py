"""The user's own PyTorch model, and models with any number of named inputs.

A user's model enters as a ``torch.export`` program (``.pt2``), the format PyTorch
recommends for a deployable model::

    ep = torch.export.export(model, example_args, dynamic_shapes=...)
    torch.export.save(ep, "model.pt2")

(``save_program`` does both for an ``nn.Module``). Every command that takes a checkpoint
takes a ``.pt2`` too: ``export`` (``program_to_onnx``), ``run``, ``validate`` and ``bench``
(the program's module). Other formats of a PyTorch model cannot be run safely or without
their source code (a pickled module, a state dict, TorchScript): ``foreign_format`` names
them and says how to produce a ``.pt2`` instead.

Inputs are described by ``InputSpec`` (name, dtype, dims with names for the dynamic ones),
whatever the model: ``resolve_shapes`` fixes the dynamic dims (``--shapes``, the batch, the
program's example inputs), ``input_kind`` tells an image from a sampling grid, an affine
theta or a displacement field, and ``random_feed`` / ``adversarial_feeds`` make inputs fit
for each kind. Only numpy and the standard library are imported at module level.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stn_deploy.errors import UserError

if TYPE_CHECKING:
    import onnx
    from torch import nn
    from torch.export import ExportedProgram

PROGRAM_SUFFIXES = (".pt2",)
#: How to make a ``.pt2``: the hint of every "not a model we can read" message.
HOW_TO_SAVE = ("save it with torch.export: ep = torch.export.export(model, example_args, dynamic_shapes=...); "
               "torch.export.save(ep, 'model.pt2')")
#: Interpolation and padding modes in the order of ATen's ``grid_sampler`` integer arguments.
_ATEN_MODES = ("bilinear", "nearest", "bicubic")
_ATEN_PADDINGS = ("zeros", "border", "reflection")
#: ONNX GridSample (opset 20) mode names of ``_ATEN_MODES``.
_ONNX_MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic"}


# --------------------------------------------------------------------------- file formats


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def is_program_file(path: Path | str) -> bool:
    """Whether ``path`` is a ``torch.export.save`` archive (its ``archive_format`` record)."""
    names = _zip_names(Path(path))
    return any(n.endswith("/archive_format") or n == "archive_format" for n in names)


def is_torchscript_file(path: Path | str) -> bool:
    """Whether ``path`` is a ``torch.jit.save`` archive (its ``constants.pkl`` and ``code/``)."""
    names = _zip_names(Path(path))
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def foreign_format(path: Path | str) -> str | None:
    """What kind of PyTorch file ``path`` is when it is one stn-deploy cannot read as a model
    (TorchScript, a pickled ``nn.Module``, a state dict), with how to make a ``.pt2``; None
    for anything else. Never unpickles arbitrary objects (a weights-only load at most)."""
    p = Path(path)
    if is_torchscript_file(p):
        return f"{p.name} is a TorchScript archive (torch.jit.save), not a model stn-deploy runs: {HOW_TO_SAVE}"
    import torch

    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here; only a refused pickle tells us something
        if "Unsupported global" in str(exc):
            return (f"{p.name} holds pickled Python objects (torch.save of a whole module?), which cannot be "
                    f"loaded safely: {HOW_TO_SAVE}")
        return None
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return (f"{p.name} is a state dict (weights without the model's code); load it into your model and "
                f"{HOW_TO_SAVE}")
    return None


def load_program(path: Path | str) -> ExportedProgram:
    """The ``torch.export`` program saved at ``path``.

    Raises:
        UserError: a missing file, or one ``torch.export.load`` cannot read.
    """
    import torch

    from stn_deploy.io import require_file

    p = require_file(path)
    try:
        return torch.export.load(str(p))
    except Exception as exc:  # torch.export raises many types for a damaged or foreign archive
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{p}: not a readable torch.export program ({type(exc).__name__}: {first[:200]}); "
                        f"{HOW_TO_SAVE}") from None


def save_program(module: nn.Module, example_inputs: Mapping[str, Any] | Sequence[Any], path: Path | str,
                 dynamic_shapes: Any = None) -> Path:
    """``torch.export`` an ``nn.Module`` and save it as a ``.pt2`` (atomically): the one way a
    Python model enters ``export``/``run``/``validate``/``bench``.

    Args:
        module: the model (put in eval mode).
        example_inputs: example tensors, by ``forward`` argument name or in order.
        path: the ``.pt2`` to write.
        dynamic_shapes: ``torch.export``'s ``dynamic_shapes`` (e.g. ``{"image": {0: Dim("batch")}}``);
            None = every dimension fixed.

    Raises:
        UserError: ``torch.export`` could not capture the module.
    """
    import torch

    from stn_deploy.io import atomic_path

    program = export_module_program(module, example_inputs, dynamic_shapes)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: the temp name has no .pt2 suffix
        torch.export.save(program, f)
    return Path(path)


def export_module_program(module: nn.Module, example_inputs: Mapping[str, Any] | Sequence[Any],
                          dynamic_shapes: Any = None) -> ExportedProgram:
    """``torch.export.export`` of ``module`` (in eval mode) on ``example_inputs`` (by name or in order).

    Raises:
        UserError: ``torch.export`` could not capture the module (its first line).
    """
    import torch

    args, kwargs = ((), dict(example_inputs)) if isinstance(example_inputs, Mapping) else (tuple(example_inputs), {})
    try:
        return torch.export.export(module.eval(), args, kwargs, dynamic_shapes=dynamic_shapes)
    except Exception as exc:  # torch.export's own error types (constraint violations, unsupported ops)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"torch.export.export failed: {first[:300]}") from None


# --------------------------------------------------------------------------- input specs


@dataclass(frozen=True)
class InputSpec:
    """One named input: numpy dtype name and dims (an int, or a name for a dynamic one)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]

    @property
    def rank(self) -> int:
        return len(self.dims)

    def text(self) -> str:
        return f"{self.name} {self.dtype}[{', '.join(map(str, self.dims))}]"


def specs_from_metadata(metadata) -> list[InputSpec]:
    """``InputSpec`` per input of a Polygraphy ``TensorMetadata`` (``runner.get_input_metadata()``)."""
    out = []
    for name, meta in metadata.items():
        dtype = np.dtype(meta.dtype.numpy() if hasattr(meta.dtype, "numpy") else meta.dtype).name
        dims = tuple(d if isinstance(d, int) and d >= 0 else (str(d) if isinstance(d, str) and d else "?")
                     for d in meta.shape)
        out.append(InputSpec(name, dtype, dims))
    return out


def program_input_specs(program: ExportedProgram) -> list[InputSpec]:
    """The user inputs of a program, dynamic dims named by their symbol (``s0``, ...)."""
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    out = []
    for name in program.graph_signature.user_inputs:
        val = nodes[name].meta.get("val") if name in nodes else None
        if val is None or not hasattr(val, "shape"):
            raise UserError(f"program input {name!r} is not a tensor; stn-deploy feeds tensors only")
        dims = tuple(int(d) if isinstance(d, int) else str(d) for d in val.shape)
        out.append(InputSpec(name, str(val.dtype).removeprefix("torch."), dims))
    return out


def program_output_names(program: ExportedProgram) -> list[str]:
    """The program's output names (those its ONNX export gives its graph outputs)."""
    return [str(n) for n in program.graph_signature.user_outputs]


def program_example_feed(program: ExportedProgram) -> dict[str, np.ndarray]:
    """The example inputs saved with the program, by input name ({} when none were saved)."""
    import torch.utils._pytree as pytree

    example = getattr(program, "example_inputs", None)
    if not example:
        return {}
    leaves = pytree.tree_leaves(example)
    names = list(program.graph_signature.user_inputs)
    if len(leaves) != len(names):
        return {}
    return {n: leaf.detach().cpu().numpy() for n, leaf in zip(names, leaves) if hasattr(leaf, "detach")}


def call_program(module, program: ExportedProgram, feed: Mapping[str, Any]) -> list:
    """Call the program's module on ``feed`` (tensors by input name), outputs flattened."""
    import torch.utils._pytree as pytree

    names = list(program.graph_signature.user_inputs)
    args, kwargs = pytree.tree_unflatten([feed[n] for n in names], program.call_spec.in_spec)
    return pytree.tree_leaves(module(*args, **kwargs))


def parse_shapes(specs: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """``["image:4x3x32x32", "cond:[4,8]"]`` -> shapes by input name (the ``--shapes`` syntax
    of ``build``, one shape per input; a ``MIN,OPT,MAX`` range gives its OPT shape).

    Raises:
        UserError: a malformed spec or a name given twice.
    """
    from stn_deploy.trt.options import _split_specs, parse_shape_spec

    out: dict[str, tuple[int, ...]] = {}
    for text in specs or ():
        for item in _split_specs(text):
            shape_range = parse_shape_spec(item)
            if shape_range.name in out:
                raise UserError(f"--shapes names input {shape_range.name!r} twice")
            out[shape_range.name] = tuple(shape_range.opt)
    return out


def resolve_shapes(specs: Sequence[InputSpec], *, batch: int = 1, shapes: Mapping[str, Sequence[int]] | None = None,
                   examples: Mapping[str, Sequence[int]] | None = None,
                   sample_shape: Sequence[int] | None = None) -> dict[str, tuple[int, ...]]:
    """A concrete shape per input.

    A dynamic dim takes, in order: the shape given for its input (``--shapes``); the value a
    dim of the same name got elsewhere (``s0`` shared by two inputs is one number); the batch
    when it is dim 0; the same dim of ``examples`` (a program's example inputs, an ONNX's
    recorded ``sample_shape`` for a single input).

    Raises:
        UserError: ``shapes`` naming an unknown input, a shape of the wrong rank or against a
            fixed dim, or a dynamic dim nothing fixes (naming ``--shapes``).
    """
    examples = dict(examples or {})
    by_name = {s.name: s for s in specs}
    unknown = [n for n in shapes or {} if n not in by_name]
    if unknown:
        raise UserError(f"--shapes names input(s) {', '.join(unknown)}; the model takes {', '.join(by_name)}")
    given_shapes = {k: tuple(int(d) for d in v) for k, v in (shapes or {}).items()}
    symbols: dict[str, int] = {}
    for s in specs:  # given shapes first, so that their symbols reach the other inputs
        if s.name in given_shapes:
            given = given_shapes[s.name]
            if len(given) != s.rank or any(isinstance(d, int) and d != g for d, g in zip(s.dims, given)):
                raise UserError(f"--shapes {s.name}:{'x'.join(map(str, given))} does not fit input {s.text()}")
            for d, g in zip(s.dims, given):
                if isinstance(d, str) and d != "?":
                    symbols.setdefault(d, g)
    out = {}
    for s in specs:
        if s.name in given_shapes:
            out[s.name] = given_shapes[s.name]
            continue
        example = examples.get(s.name)
        if example is None and sample_shape is not None and len(specs) == 1 and len(sample_shape) == s.rank - 1:
            example = (batch, *sample_shape)
        dims = []
        for i, d in enumerate(s.dims):
            if isinstance(d, int):
                dims.append(d)
            elif d in symbols:
                dims.append(symbols[d])
            elif i == 0:
                dims.append(batch)
            elif example is not None and len(example) == s.rank:
                dims.append(int(example[i]))
            else:
                raise UserError(f"input {s.text()}: dimension {i} ({d}) is dynamic; give its shape with "
                                f"--shapes {s.name}:{'x'.join('N' if isinstance(x, str) else str(x) for x in s.dims)} "
                                "or an --inputs file")
            if isinstance(d, str) and d != "?":
                symbols.setdefault(d, dims[-1])
        out[s.name] = tuple(dims)
    return out


# --------------------------------------------------------------------------- input kinds

IMAGE, GRID, THETA, DISPLACEMENT, INDEX, TENSOR = "image", "grid", "theta", "displacement", "index", "tensor"
_NAME_HINTS = ((DISPLACEMENT, ("flow", "disp", "ddf", "deform", "offset", "field", "warp")),
               (GRID, ("grid",)), (THETA, ("theta", "matrix", "affine", "homograph", "transform", "pose")))


def input_kind(name: str, dtype: str, shape: Sequence[int]) -> str:
    """What an input is, by its shape (and name where the shape is ambiguous):

    ``grid`` [N, H, W, 2] / [N, D, H, W, 3]; ``theta`` [N, 2, 3] / [N, 3, 3] / [N, 3, 4];
    ``displacement`` [N, 2, H, W] / [N, 3, D, H, W] named like a flow or field (else an image);
    ``image`` any other float 4-D/5-D; ``index`` integer or boolean; ``tensor`` the rest.
    """
    if np.dtype(dtype).kind in "biu":
        return INDEX
    rank = len(shape)
    lowered = name.lower()
    hinted = next((kind for kind, words in _NAME_HINTS if any(w in lowered for w in words)), None)
    if rank == 3 and tuple(shape[1:]) in ((2, 3), (3, 3), (3, 4)):
        return THETA
    if rank in (4, 5) and shape[-1] == rank - 2 and (hinted in (GRID, None) or shape[1] != rank - 2):
        return GRID
    if rank in (4, 5) and shape[1] == rank - 2 and hinted == DISPLACEMENT:
        return DISPLACEMENT
    if rank in (4, 5):
        return IMAGE
    return TENSOR


def _identity_theta(shape: Sequence[int]) -> np.ndarray:
    rows, cols = int(shape[-2]), int(shape[-1])
    return np.broadcast_to(np.eye(rows, cols), tuple(shape)).copy()


def random_feed(specs: Sequence[InputSpec], shapes: Mapping[str, Sequence[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs fit for each input's kind: standard-normal images and tensors
    (the spread of normalised inputs), grids U(-1.3, 1.3) (partly outside the image), thetas
    the identity plus N(0, 0.1), displacements N(0, 0.5), indices 0..3."""
    from stn_deploy.io import check_fits_in_memory

    rng = np.random.default_rng(seed)
    feed = {}
    for s in specs:
        shape = tuple(int(d) for d in shapes[s.name])
        dtype = np.dtype(s.dtype)
        check_fits_in_memory(shape, dtype.itemsize, f"input {s.name!r}")
        kind = input_kind(s.name, s.dtype, shape)
        value: np.ndarray
        if kind == INDEX:
            value = rng.integers(0, 2 if dtype.kind == "b" else 4, shape)
        elif kind == GRID:
            value = rng.uniform(-1.3, 1.3, shape)
        elif kind == THETA:
            eye = _identity_theta(shape)
            value = eye + rng.normal(0, 0.1, shape)
            if shape[-2] == 3:  # a projective row this far from [0, 0, 1] puts the horizon in the image
                value[..., 2, :] = eye[..., 2, :] + rng.normal(0, 1e-3, (*shape[:-2], shape[-1]))
        elif kind == DISPLACEMENT:
            value = rng.normal(0, 0.5, shape)
        else:
            value = rng.standard_normal(shape)
        feed[s.name] = np.asarray(value).astype(dtype)
    return feed


def _image_size(feed: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> tuple[int, ...] | None:
    """Spatial size of the first image input (what grids and displacements sample)."""
    for s in specs:
        arr = feed[s.name]
        if input_kind(s.name, s.dtype, arr.shape) == IMAGE:
            return tuple(arr.shape[2:])
    return None


def _half_pixel_grid(shape: Sequence[int], size: Sequence[int] | None) -> np.ndarray:
    """Grid coordinates exactly half-way between pixels of ``size`` (ties for nearest,
    equal weights for bilinear), under align_corners False on even rows and True on odd ones."""
    rng = np.random.default_rng(1)
    grid = np.empty(shape, dtype=np.float64)
    spatial = list(size) if size else [max(2, int(d)) for d in shape[1:-1]]
    for axis in range(shape[-1]):  # grid axis 0 is x (the last spatial dim)
        n = max(2, int(spatial[-1 - axis]))
        k = rng.integers(0, n - 1, shape[:-1])
        off = (2 * k + 2) / n - 1  # pixel k + 0.5 with align_corners=False
        on = (2 * k + 1) / (n - 1) - 1  # pixel k + 0.5 with align_corners=True
        rows = np.arange(shape[1]).reshape([1, -1] + [1] * (len(shape) - 3)) % 2 == 1
        grid[..., axis] = np.where(rows, on, off)
    return grid


def adversarial_feeds(specs: Sequence[InputSpec], base: Mapping[str, np.ndarray],
                      seed: int = 0) -> list[tuple[str, dict[str, np.ndarray], dict[str, str]]]:
    """Inputs that push a sampler where bugs hide, one case per recognisable input kind:
    (case name, feed, {perturbed input: how}). Other inputs keep their ``base`` values.

    image: blank, saturated x4, negated, pixel-pitch checkerboard, N(0, 3) noise.
    grid: far outside the image (|g| in 1.5..4), exact half-pixel ties, all points on one
    pixel centre. theta: leave the image (shift 1.37), zoom out x3, zoom in x0.05, rotate 180
    degrees, a near-singular projective map (3x3). displacement: x20, a shift of half the
    image, half-pixel ties (0.5 everywhere).
    """
    rng = np.random.default_rng(seed)
    size = _image_size(base, specs)
    cases: list[tuple[str, dict[str, np.ndarray], dict[str, str]]] = []

    def add(spec: InputSpec, case: str, value: np.ndarray, how: str) -> None:
        feed = dict(base)
        feed[spec.name] = np.asarray(value).astype(base[spec.name].dtype)
        cases.append((f"{spec.name}:{case}", feed, {spec.name: how}))

    for s in specs:
        x = base[s.name]
        kind = input_kind(s.name, s.dtype, x.shape)
        if kind == IMAGE:
            idx = np.indices(x.shape[2:]).sum(0) % 2
            add(s, "blank", np.zeros_like(x), "all zeros")
            add(s, "saturated-x4", 4 * x, "values x4")
            add(s, "negated", -x, "sign flipped")
            add(s, "checkerboard", np.broadcast_to(idx, x.shape), "pixel-pitch 0/1 checkerboard")
            add(s, "gaussian-x3", rng.normal(0, 3, x.shape), "N(0, 3) noise")
        elif kind == GRID:
            sign = rng.choice([-1.0, 1.0], x.shape)
            add(s, "leave-image", sign * rng.uniform(1.5, 4.0, x.shape), "every coordinate outside [-1, 1] (|g| 1.5..4)")
            add(s, "half-pixel-ties", _half_pixel_grid(x.shape, size), "coordinates exactly between two pixels")
            add(s, "one-point", np.zeros_like(x), "every point at the image centre")
        elif kind == THETA:
            eye = _identity_theta(x.shape)
            shift = np.zeros(x.shape)
            # 1.37, not 1.5: a matrix in pixel units would put nearest sampling on exact ties,
            # where two correct implementations may round a 1-ulp grid difference apart.
            shift[..., :2, -1] = 1.37
            add(s, "leave-image", eye + shift, "identity shifted by 1.37 (out of the image)")
            add(s, "zoom-out-x3", 3 * eye, "identity x3")
            add(s, "zoom-in-x0.05", 0.05 * eye, "identity x0.05")
            rot = eye.copy()
            rot[..., :2, :2] *= -1
            add(s, "rotate-180", rot, "rotated 180 degrees")
            if x.shape[-2:] == (3, 3):
                near = eye.copy()
                near[..., 2, 0] = -0.95  # denominator 1 - 0.95 x: 0.05 at the left edge
                add(s, "projective-near-singular", near, "denominator down to 0.05 at the image edge")
        elif kind == DISPLACEMENT:
            add(s, "x20", 20 * x, "values x20")
            half = max(size) / 2 if size else 8.0
            add(s, "shift-half-image", np.full(x.shape, half), f"a constant shift of {half:g}")
            add(s, "half-pixel-ties", np.full(x.shape, 0.5), "0.5 everywhere (ties in pixel units)")
    return cases


def _internal_sampler_tensor(module) -> tuple[Any, str] | None:
    """The first theta (``affine_grid_generator``'s input) or grid (``grid_sampler``'s) that
    the program computes rather than takes as an input: (fx node, kind), or None."""
    import torch
    import torch.fx

    aten = torch.ops.aten
    samplers = (aten.grid_sampler.default, aten.grid_sampler_2d.default, aten.grid_sampler_3d.default)
    for node in module.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target is aten.affine_grid_generator.default:
            arg, kind = node.args[0], THETA
        elif node.target in samplers:
            arg, kind = node.args[1], GRID
            if isinstance(arg, torch.fx.Node) and arg.target is aten.affine_grid_generator.default:
                continue  # the theta before it is the one to steer
        else:
            continue
        if isinstance(arg, torch.fx.Node) and arg.op != "placeholder":
            return arg, kind
    return None


def crafted_feeds(program: ExportedProgram, specs: Sequence[InputSpec], base: Mapping[str, np.ndarray],
                  steps: int = 60) -> list[tuple[str, dict[str, np.ndarray], dict[str, str], dict]]:
    """Inputs that drive a tensor *inside* the program - the theta its ``F.affine_grid`` gets,
    or the grid its ``F.grid_sample`` gets - towards extremes: Adam on the program's float
    inputs (images, features, displacements; thetas and grids given as inputs stay as in
    ``base``), from ``base``, for ``steps`` steps per target.

    Targets: theta zoom-out x3, zoom-in x0.05, leave-image (shift 1.37), rotate-180; grid x3,
    x0.05 and outside the image. Returns (case, feed, {input: how}, {what was reached}) per
    target; [] when the program computes no theta or grid, or has no input to steer.
    """
    import torch
    import torch.fx

    module = program.module()
    found = _internal_sampler_tensor(module)
    placeholders = [n for n in module.graph.nodes if n.op == "placeholder"]
    if found is None or len(placeholders) != len(specs):
        return []
    node, kind = found
    steer = [s.name for s in specs if np.dtype(s.dtype).kind == "f"
             and input_kind(s.name, s.dtype, base[s.name].shape) not in (THETA, GRID)]
    if not steer:
        return []
    for p in module.parameters():
        p.requires_grad_(False)

    class Probe(torch.fx.Interpreter):
        """Runs the graph and keeps the value of ``node``."""

        value: Any = None

        def run_node(self, n):
            out = super().run_node(n)
            if n is node:
                self.value = out
            return out

    def probe(tensors: dict) -> Any:
        interpreter = Probe(module)
        interpreter.run(*[tensors[s.name] for s in specs])
        return interpreter.value

    with torch.no_grad():
        start = probe({k: torch.from_numpy(np.asarray(v)) for k, v in base.items()})
    if not isinstance(start, torch.Tensor) or not start.is_floating_point():
        return []
    if kind == THETA:
        eye = torch.from_numpy(_identity_theta(start.shape)).to(start.dtype)
        shift = torch.zeros_like(start)
        shift[..., :2, -1] = 1.37
        rot = eye.clone()
        rot[..., :2, :2] *= -1
        targets = {"zoom-out-x3": 3 * eye, "zoom-in-x0.05": 0.05 * eye, "leave-image": eye + shift, "rotate-180": rot}
    else:
        targets = {"zoom-out-x3": 3 * start, "zoom-in-x0.05": 0.05 * start,
                   "leave-image": torch.sign(start) * 2.5 + (start == 0).to(start.dtype) * 2.5}
    out = []
    for name, target in targets.items():
        tensors = {k: torch.tensor(np.asarray(v)) for k, v in base.items()}
        params = [tensors[k].requires_grad_(True) for k in steer]
        opt = torch.optim.Adam(params, lr=0.5)
        with torch.enable_grad():
            for _ in range(steps):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(probe(tensors), target)
                if not loss.requires_grad:  # the tensor does not depend on the steered inputs
                    return []
                loss.backward()
                opt.step()
        with torch.no_grad():
            reached = probe(tensors)
        feed = {k: v.detach().numpy().astype(base[k].dtype) for k, v in tensors.items()}
        how = {k: f"steered ({steps} Adam steps): internal {kind} {node.name!r} -> {name}" for k in steer}
        notes = {"target": name, "tensor": node.name, "kind": kind,
                 "rmse_to_target": round(float((reached - target).pow(2).mean().sqrt()), 4),
                 "min": round(float(reached.min()), 4), "max": round(float(reached.max()), 4),
                 "finite": bool(torch.isfinite(reached).all())}
        out.append((f"{node.name}:{name}", feed, how, notes))
    return out


def describe_mismatch(candidate: Sequence[InputSpec], reference: Sequence[InputSpec]) -> str | None:
    """Why the two models cannot take the same inputs (missing/extra names, dtype, rank, a
    fixed dim), or None when they can."""
    cand = {s.name: s for s in candidate}
    ref = {s.name: s for s in reference}
    problems = []
    missing = [n for n in ref if n not in cand]
    extra = [n for n in cand if n not in ref]
    if missing:
        problems.append(f"the candidate lacks input(s) {', '.join(missing)}")
    if extra:
        problems.append(f"the reference lacks input(s) {', '.join(extra)}")
    for name in (n for n in cand if n in ref):
        c, r = cand[name], ref[name]
        if c.dtype != r.dtype:
            problems.append(f"input {name}: dtype {c.dtype} (candidate) vs {r.dtype} (reference)")
        elif c.rank != r.rank:
            problems.append(f"input {name}: rank {c.rank} [{', '.join(map(str, c.dims))}] (candidate) vs "
                            f"{r.rank} [{', '.join(map(str, r.dims))}] (reference)")
        else:
            fixed = [i for i, (a, b) in enumerate(zip(c.dims, r.dims)) if isinstance(a, int) and isinstance(b, int) and a != b]
            if fixed:
                problems.append(f"input {name}: dimension {fixed[0]} is {c.dims[fixed[0]]} (candidate) vs "
                                f"{r.dims[fixed[0]]} (reference)")
    return "; ".join(problems) or None


# --------------------------------------------------------------------------- export


def _translation_table(opset: int) -> dict:
    """ATen ops -> ONNX for the dynamo exporter: ``affine_grid_generator`` as one
    ``AffineGrid`` (the exporter would decompose it, DESIGN.md "A user's .pt2") and
    ``grid_sampler*`` as ``GridSample`` with opset-20 mode names."""
    import onnxscript
    import torch

    op: Any = onnxscript.values.Opset("", opset)

    def affine_grid_generator(theta, size, align_corners: bool = False):
        parts = [op.Constant(value_ints=[int(s)]) if isinstance(s, int) else op.Reshape(s, op.Constant(value_ints=[1]))
                 for s in size]
        return op.AffineGrid(theta, op.Concat(*parts, axis=0), align_corners=int(align_corners))

    def grid_sampler(x, grid, interpolation_mode: int = 0, padding_mode: int = 0, align_corners: bool = False):
        return op.GridSample(x, grid, mode=_ONNX_MODES[_ATEN_MODES[interpolation_mode]],
                             padding_mode=_ATEN_PADDINGS[padding_mode], align_corners=int(align_corners))

    aten = torch.ops.aten
    return {aten.affine_grid_generator.default: affine_grid_generator, aten.grid_sampler.default: grid_sampler,
            aten.grid_sampler_2d.default: grid_sampler, aten.grid_sampler_3d.default: grid_sampler}


def program_to_onnx(program: ExportedProgram, *, ops: str = "standard", opset: int = 20) -> onnx.ModelProto:
    """ONNX of a ``torch.export`` program with standard, plugin or native sampler ops.

    The dynamo exporter translates the program (its dynamic dims stay dynamic), with
    ``AffineGrid`` + ``GridSample`` for ATen's grid ops (``_translation_table``); ``plugin``
    then rewrites every sampler to our ops (``graph.rewrite_model``: an affine grid, however
    the program computed it, is fused into ``STNAffineGridSample`` where its size is static),
    ``native`` to ops stock TensorRT imports (``native.to_native``).

    Raises:
        UserError: the exporter failed.
    """
    import logging
    import warnings

    import torch

    from stn_deploy import verbosity

    # "torchvision is not installed. Skipping torchvision::nms": about ops no sampler uses.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and pytree notices
        try:
            exported = torch.onnx.export(program, dynamo=True, opset_version=opset, optimize=True,
                                         custom_translation_table=_translation_table(opset),
                                         verbose=verbosity.level() > verbosity.DEFAULT)
        except Exception as exc:  # the exporter's many error types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"torch.onnx.export of the program failed at opset {opset}: {first[:300]}") from None
    if exported is None:  # only with f= given, which we do not
        raise UserError("torch.onnx.export returned no ONNX program")
    proto = exported.model_proto
    if ops == "plugin":
        from stn_deploy.graph import rewrite_model

        proto = rewrite_model(proto)
    elif ops == "native":
        from stn_deploy.native import to_native

        proto = to_native(proto)
    return proto
