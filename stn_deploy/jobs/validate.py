"""Numerical validation of a deployed model against PyTorch.

The candidate (a TensorRT engine run on the GPU, or a plugin / standard ONNX run in ONNX
Runtime on the CPU) and the reference (a checkpoint run in PyTorch, or an ONNX run in ONNX
Runtime) see the same inputs, in sets that are compared and reported separately:

``test-images``
    The distorted-digit test set of the checkpoint's dataset (``data.make_dataset(...,
    split="test")``); task accuracy of both models is computed on it and must agree within
    ``max_accuracy_drop`` points.
``adversarial-stress``
    Model-agnostic images that push the localisation net outside what it was trained on:
    blank, saturated (x4), negated, pixel-pitch checkerboards, uniform and large Gaussian
    noise. They need nothing but the input shape, so they are used for any reference.
``adversarial-crafted`` (checkpoint reference only)
    The sampler only ever sees the transform that the localisation net computes from the
    image, so the honest way to feed extreme transforms through a candidate we cannot edit
    (an engine) is to craft *images* that make the model itself produce them: starting from
    test images, gradient descent on the input drives the first spatial transformer's
    sampling grid towards a target grid — grids leaving the image (shifted by 1.5),
    zoomed out x3 and in x0.05, shifted by half a pixel (ties between pixels), rotated 180
    degrees, and a near-singular projective map (denominator down to 0.05 at the image
    edge). Each generator gets as close as its family allows (an affine net cannot make a
    projective grid); the report records how close it came (fraction of grid points outside
    the image, coordinate range, remaining error). Images are unconstrained reals.
``inputs-file``
    Inputs from ``--inputs`` (``.npz`` or Polygraphy JSON), when given.

Models with any number of inputs, or a ``torch.export`` program (``.pt2``) on either side, or
an image size no test set has, are compared on generated inputs instead (``_validate_generated``):
random inputs drawn per kind of input, adversarial cases for every input recognisable as an
image, grid, theta or displacement, inputs crafted so that a theta or grid a program computes
becomes extreme, and ``--inputs``; the report names which inputs each set perturbed and how.

Each output of each set is compared with the per-dtype tolerance of the candidate's compute
precision (``tolerances.TOLERANCES``; fp16/bf16 engines get looser ones), reporting max /
mean / median absolute and relative error and the worst index. Runners come from
``run.open_runner``; Polygraphy's ``Comparator.run`` drives them over the same feeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stn_deploy.errors import UserError
from stn_deploy.model_files import (
    ModelKind,
    detect_kind,
    load_model,
    onnx_metadata,
    recorded_input_shapes,
    sample_shape,
)
from stn_deploy.schema import PRECISION_NAMES, Precision
from stn_deploy.tolerances import TOLERANCES, ErrorStats, Tolerance, compare, tolerance_for

#: Size (H, W) -> dataset used when neither the checkpoint nor the ONNX names one.
_DATASET_BY_SIZE = {(28, 28): "R", (42, 42): "RTS", (60, 60): "cluttered"}
#: Crafted-input targets: name -> what the grid should do.
CRAFTED_TARGETS = ("leave-image", "zoom-out-x3", "zoom-in-x0.05", "half-pixel-shift", "rotate-180",
                   "projective-near-singular")


@dataclass(frozen=True)
class ValidateOptions:
    """What ``validate`` compares and how strictly.

    Attributes:
        candidate: an engine (.engine/.plan), a plugin ONNX, a standard ONNX or a
            ``torch.export`` program (``.pt2``).
        reference: a checkpoint or a ``.pt2`` (PyTorch), an ONNX model (ONNX Runtime), or a Polygraphy
            ``RunResults`` JSON of recorded outputs (then ``inputs`` are the inputs they
            came from, and only those are compared).
        atol, rtol: tolerances for every output, by output name ("" = all outputs);
            unset entries come from ``tolerances.TOLERANCES`` for the candidate's precision.
        inputs: extra inputs (``.npz`` / Polygraphy JSON, every iteration) to compare on as well.
        dataset: test set to use; default: the checkpoint's training set, else by input size.
        report: where to write the JSON report (atomically); None = nowhere.
        adversarial: include the adversarial sets; default True.
        max_images: cap on test images (default: the whole test set, 539 x 4).
        batch_size: images per inference call (capped by an engine's profile).
        max_accuracy_drop: allowed accuracy difference in percentage points; default 0.1;
            None = 0.1, or ``quantize.INT8_ACCURACY_DROP`` (0.5) for an INT8 candidate.
        crafted_steps: gradient steps of the crafted inputs; default 60.
        seed: seed of the random adversarial images.
        shapes: shapes of generated inputs by input name (``--shapes image:2x3x64x64``) for
            dynamic dims; models without a test set (any inputs, ``.pt2`` programs) only.
        batch: batch (a dynamic first dim) of generated inputs; default 2.
    """

    candidate: Path
    reference: Path
    atol: dict[str, float] = field(default_factory=dict)
    rtol: dict[str, float] = field(default_factory=dict)
    inputs: Path | None = None
    dataset: str | None = None
    report: Path | None = None
    adversarial: bool = True
    max_images: int | None = None
    batch_size: int = 256
    max_accuracy_drop: float | None = 0.1
    crafted_steps: int = 60
    seed: int = 0
    shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    batch: int = 2

    def __post_init__(self) -> None:
        for name in ("candidate", "reference", "inputs", "report"):  # str paths from the Python API
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        drop = self.max_accuracy_drop
        if drop is not None and not (math.isfinite(drop) and drop >= 0):
            raise UserError(f"--max-accuracy-drop must be a finite number >= 0, got {self.max_accuracy_drop}")
        for what, value in (("--batch-size", self.batch_size), ("--max-images", self.max_images or 1),
                            ("crafted_steps", self.crafted_steps), ("--batch", self.batch)):
            if value < 1:
                raise UserError(f"{what} must be at least 1, got {value}")


def parse_tolerance(specs, what: str = "--atol") -> dict[str, float]:
    """``["1e-3", "output:1e-2"]`` -> ``{"": 1e-3, "output": 1e-2}`` (Polygraphy's syntax).

    Raises:
        UserError: a value that is not a non-negative number.
    """
    out: dict[str, float] = {}
    for spec in specs or ():
        name, _, value = str(spec).rpartition(":")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"malformed {what} {spec!r}: expected a number or OUTPUT:NUMBER") from None
        if not math.isfinite(number) or number < 0:
            raise UserError(f"{what} must be a finite non-negative number, got {spec!r}")
        out[name] = number
    return out


@dataclass
class SetResult:
    """One input set: per-output statistics and whether all passed."""

    name: str
    count: int
    outputs: dict[str, ErrorStats]
    notes: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.outputs.values())

    def to_dict(self) -> dict:
        return {"name": self.name, "count": self.count, "passed": self.passed,
                "outputs": {k: v.to_dict() for k, v in self.outputs.items()}, **self.notes}


@dataclass
class ValidationReport:
    """Everything ``validate`` found; ``passed`` is the verdict."""

    candidate: dict
    reference: dict
    dataset: str
    tolerances: dict[str, dict]
    sets: list[SetResult]
    accuracy: dict
    seconds: float = 0.0
    #: Generated inputs: name -> dtype, shape, kind (image, grid, theta, ...); {} otherwise.
    inputs: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.sets) and bool(self.accuracy.get("passed", True))

    def failures(self) -> list[str]:
        """One phrase per failed check."""
        out = []
        for s in self.sets:
            for name, st in s.outputs.items():
                if not st.passed:
                    out.append(f"{s.name} output {name}: {st.mismatches} values outside tolerance "
                               f"(max abs {st.max_abs:.3g} at {list(st.worst_index)})")
        acc = self.accuracy
        if acc and not acc.get("passed", True):
            out.append(f"accuracy {acc['candidate']:.2f}% vs {acc['reference']:.2f}% "
                       f"(difference {acc['difference']:.2f} > {acc['limit']} points)")
        return out

    def to_dict(self) -> dict:
        return {"format": "stn-deploy-validation", "version": 1, "passed": self.passed,
                "candidate": self.candidate, "reference": self.reference, "dataset": self.dataset,
                "tolerances": self.tolerances, "accuracy": self.accuracy,
                **({"inputs": self.inputs} if self.inputs else {}),
                "sets": [s.to_dict() for s in self.sets], "failures": self.failures(),
                "seconds": round(self.seconds, 3)}

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [f"candidate {self.candidate['path']} ({self.candidate['kind']}, {self.candidate['precision']}) "
               f"vs reference {self.reference['path']} ({self.reference['kind']}), dataset {self.dataset}"]
        if self.inputs:
            out.append("inputs: " + ", ".join(f"{k} {v['dtype']}{v['shape']} ({v['kind']})" for k, v in self.inputs.items()))
        for s in self.sets:
            for name, st in s.outputs.items():
                out.append(f"{'ok  ' if st.passed else 'FAIL'} {s.name:<20} {name} [{s.count}]: {st.line()}")
            if s.notes.get("perturbed"):
                out.append(f"     {'':<20} perturbed: " + "; ".join(f"{k}: {v}" for k, v in s.notes["perturbed"].items()))
        acc = self.accuracy
        if acc:
            out.append(f"{'ok  ' if acc['passed'] else 'FAIL'} accuracy: candidate {acc['candidate']:.2f}%, "
                       f"reference {acc['reference']:.2f}% (difference {acc['difference']:.3f} points, "
                       f"limit {acc['limit']})")
        out.append(("PASSED" if self.passed else "FAILED") + f" in {self.seconds:.1f} s")
        return out


# --------------------------------------------------------------------------- models


def _describe(path: Path) -> tuple[ModelKind, Precision]:
    """(kind, compute precision) of a model file."""
    kind = detect_kind(path)
    if kind == ModelKind.ENGINE:
        from stn_deploy.trt.engine_file import read_sidecar

        side = read_sidecar(path) or {}
        if any(layer.get("type") == "QUANTIZE" for layer in (side.get("network") or {}).get("layers", [])):
            return kind, Precision.INT8  # built from a QDQ graph (stn-deploy quantize)
        recorded = side.get("precision")
        return kind, Precision(recorded) if recorded in PRECISION_NAMES else Precision.FP32
    if kind.is_onnx:
        return kind, _onnx_precision(path)
    return kind, Precision.FP32


def _onnx_precision(path: Path) -> Precision:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        return Precision.INT8  # judged by task accuracy (``_tolerance``)
    counts = {TensorProto.FLOAT: 0, TensorProto.FLOAT16: 0, TensorProto.BFLOAT16: 0}
    for init in model.graph.initializer:
        if init.data_type in counts:
            counts[init.data_type] += 1
    top = max(counts, key=lambda t: counts[t])
    if not counts[top]:
        return Precision.FP32
    return {TensorProto.FLOAT16: Precision.FP16, TensorProto.BFLOAT16: Precision.BF16}.get(top, Precision.FP32)


def _reference_model(path: Path):
    """(torch model, config, train info) of a checkpoint reference; (None, None, {}) for ONNX."""
    if detect_kind(path) != ModelKind.CHECKPOINT:
        return None, None, {}
    from stn_deploy.jobs.train import read_checkpoint

    model, config = load_model(path)
    return model, config, dict(read_checkpoint(path).get("train") or {})


def _choose_dataset(options: ValidateOptions, train_info: dict, input_shape) -> str:
    from stn_deploy.data import DATASETS, IMAGE_SIZES

    spatial = input_shape[-2:]
    hw = tuple(int(d) for d in spatial) if all(isinstance(d, int) and d > 0 for d in spatial) else None
    if options.dataset:
        if options.dataset not in DATASETS:
            raise UserError(f"unknown dataset {options.dataset!r}; choose from {', '.join(DATASETS)}")
        name = options.dataset
    elif train_info.get("dataset") in DATASETS:
        name = train_info["dataset"]
    else:
        if hw not in _DATASET_BY_SIZE:
            raise UserError(f"cannot tell which test set fits input shape {list(input_shape)}; pass --dataset")
        name = _DATASET_BY_SIZE[hw]
    if hw is not None and hw != IMAGE_SIZES[name]:
        raise UserError(f"dataset {name} has {IMAGE_SIZES[name]} images but the model takes {list(hw)}")
    return name


def _check_same_input(candidate: list, reference: list) -> None:
    """UserError when the two models cannot take the same input (rank, or a fixed size)."""
    def text(shape):
        return "[" + ", ".join(str(d) for d in shape) + "]"

    fixed = [(c, r) for c, r in zip(candidate[1:], reference[1:]) if isinstance(c, int) and isinstance(r, int)
             and c >= 0 and r >= 0]
    if len(candidate) != len(reference) or any(c != r for c, r in fixed):
        raise UserError(f"the candidate takes input {text(candidate)} and the reference {text(reference)}: "
                        "they are not models of the same input")


def _batch_limit(candidate: Path, kind: ModelKind, input_shape, wanted: int) -> tuple[int, bool]:
    """(batch size, fixed?) the candidate accepts: an engine's profile max, a fixed ONNX batch."""
    first = input_shape[0] if input_shape else -1
    if isinstance(first, int) and first > 0:
        return first, True
    if kind == ModelKind.ENGINE:
        from stn_deploy.trt.engine_file import read_sidecar

        side = read_sidecar(candidate) or {}
        for profile in side.get("profiles", [])[:1]:
            for r in profile:
                return max(1, min(wanted, int(r["max"][0]))), False
    return wanted, False


# --------------------------------------------------------------------------- inputs


def stress_images(shape: tuple[int, ...], test_images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Model-agnostic adversarial images of ``shape`` (C, H, W) and their names."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    some = test_images[:4] if len(test_images) else np.zeros((4, c, h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    checker = ((yy + xx) % 2).astype(np.float32)[None].repeat(c, 0)
    items = [("blank", np.zeros((c, h, w), np.float32)), ("ones", np.ones((c, h, w), np.float32)),
             ("checkerboard", checker), ("checkerboard-x4", 4 * checker)]
    items += [(f"saturated-x4-{i}", 4 * img) for i, img in enumerate(some)]
    items += [(f"negated-{i}", -img) for i, img in enumerate(some)]
    items += [(f"uniform-{i}", rng.uniform(0, 1, (c, h, w))) for i in range(4)]
    items += [(f"gaussian-x3-{i}", rng.normal(0, 3, (c, h, w))) for i in range(4)]
    return np.stack([x for _, x in items]).astype(np.float32), [n for n, _ in items]


def _target_grid(name: str, n: int, size, align_corners: bool):
    """The grid a crafted input should make the transformer sample at."""
    import torch
    import torch.nn.functional as F

    h, w = size[-2:]
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    if name == "projective-near-singular":
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        # Denominator 1 - 0.95 x: 0.05 at the left edge, so coordinates reach 20.
        den = 1 - 0.95 * xs
        grid = torch.stack([xs / den, ys / den], -1)
        return grid.expand(n, h, w, 2).clone()
    theta = {
        "leave-image": eye + torch.tensor([[0, 0, 1.5], [0, 0, -1.5]]),
        "zoom-out-x3": 3 * eye,
        "zoom-in-x0.05": 0.05 * eye,
        "half-pixel-shift": eye + torch.tensor([[0, 0, 1.0 / w], [0, 0, 1.0 / h]]),
        "rotate-180": -eye,
    }[name]
    return F.affine_grid(theta.expand(n, 2, 3), [n, 1, h, w], align_corners=align_corners)


def crafted_images(model, images: np.ndarray, steps: int = 60, per_target: int = 3,
                   seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Images that make ``model``'s first spatial transformer sample at extreme grids.

    All targets are optimised together as one batch (Adam on the pixels, MSE between the
    sampling grid and the target grid). Returns the images (``per_target`` per entry of
    ``CRAFTED_TARGETS``) and, per target, what was reached. Models without a spatial
    transformer (or with a 3-D one) get none.
    """
    import torch

    from stn_deploy.models import spatial_transformers

    sts = spatial_transformers(model)
    if not sts or len(images) == 0:
        return np.zeros((0, *images.shape[1:]), np.float32), []
    st = sts[0]
    gen = torch.Generator().manual_seed(seed)
    n = per_target * len(CRAFTED_TARGETS)
    pick = torch.randint(0, len(images), (n,), generator=gen)
    x = torch.tensor(images[pick.numpy()], dtype=torch.float32).requires_grad_(True)
    with torch.no_grad():
        probe = st.sampling_grid(x, st.localisation(x))
    if probe.dim() != 4:
        return np.zeros((0, *images.shape[1:]), np.float32), []
    target = torch.cat([_target_grid(name, per_target, probe.shape[1:3], st.settings.align_corners)
                        for name in CRAFTED_TARGETS])
    # Pixels are unconstrained reals; a large step reaches far grids in few steps.
    opt = torch.optim.Adam([x], lr=1.0)
    frozen = [p for p in st.parameters() if p.requires_grad]
    for p in frozen:  # gradients for the pixels only
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            opt.zero_grad()
            grid = st.sampling_grid(x, st.localisation(x))
            torch.nn.functional.mse_loss(grid, target).backward()
            opt.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    notes = []
    with torch.no_grad():
        grid = st.sampling_grid(x, st.localisation(x))
        for k, name in enumerate(CRAFTED_TARGETS):
            g, t = grid[k * per_target:(k + 1) * per_target], target[k * per_target:(k + 1) * per_target]
            notes.append({"target": name, "images": per_target,
                          "grid_rmse_to_target": round(float(torch.nn.functional.mse_loss(g, t).sqrt()), 4),
                          "grid_outside_image": round(float((g.abs() > 1).any(-1).float().mean()), 4),
                          "grid_min": round(float(g.min()), 4), "grid_max": round(float(g.max()), 4),
                          "finite": bool(torch.isfinite(g).all())})
    return x.detach().numpy().astype(np.float32), notes


# --------------------------------------------------------------------------- running


def _run_pair(candidate_runner, reference_runner, image_sets: list[np.ndarray], batch: int, fixed: bool,
              cand_name: str, ref_name: str) -> list[tuple[dict, dict]]:
    """Run both runners over every set in batches with Polygraphy's ``Comparator.run``
    (one activation per runner); per set, the concatenated (candidate, reference) outputs."""
    from polygraphy.comparator import Comparator
    from polygraphy.logger import G_LOGGER

    feeds_c, feeds_r, sizes, owner = [], [], [], []
    for k, images in enumerate(image_sets):
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            sizes.append(len(chunk))
            owner.append(k)
            if fixed and len(chunk) < batch:  # a fixed-batch model: pad, drop the padding after
                chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            feeds_c.append({cand_name: np.ascontiguousarray(chunk, dtype=np.float32)})
            feeds_r.append({ref_name: np.ascontiguousarray(chunk, dtype=np.float32)})
    from stn_deploy import verbosity

    severity = G_LOGGER.module_severity
    G_LOGGER.module_severity = verbosity.polygraphy_severity()  # no [I] lines per Comparator pass
    try:
        if cand_name == ref_name:
            # By position: two runners may carry the same name (same file stem).
            c_iters, r_iters = Comparator.run([candidate_runner, reference_runner], data_loader=feeds_c).values()
        else:
            (c_iters,) = Comparator.run([candidate_runner], data_loader=feeds_c).values()
            (r_iters,) = Comparator.run([reference_runner], data_loader=feeds_r).values()
    finally:
        G_LOGGER.module_severity = severity

    def gather(iterations, k: int) -> dict:
        outs: dict[str, list] = {}
        for it, n, o in zip(iterations, sizes, owner):
            if o == k:
                for name, v in it.items():
                    outs.setdefault(name, []).append(np.array(v)[:n])
        return {name: np.concatenate(v) for name, v in outs.items()}

    return [(gather(c_iters, k), gather(r_iters, k)) for k in range(len(image_sets))]


def _pair_outputs(cand: dict, ref: dict) -> list[tuple[str, str]]:
    """(candidate name, reference name) pairs: by name, else by position."""
    if set(cand) == set(ref):
        return [(k, k) for k in cand]
    if len(cand) == len(ref):
        return list(zip(cand, ref))
    raise UserError(f"candidate outputs {list(cand)} do not match reference outputs {list(ref)}")


def _compare_set(name: str, cand: dict, ref: dict, tols: dict[str, Tolerance], notes: dict | None = None) -> SetResult:
    stats = {}
    for c_name, r_name in _pair_outputs(cand, ref):
        if cand[c_name].shape != ref[r_name].shape:
            raise UserError(f"output {c_name}: candidate shape {list(cand[c_name].shape)} vs reference "
                            f"{list(ref[r_name].shape)}")
        # A NaN in the candidate never passes, even against a NaN of the reference.
        stats[c_name] = compare(cand[c_name], ref[r_name], tols[c_name], nan_equal=False)
    return SetResult(name, len(next(iter(cand.values()))) if cand else 0, stats, notes or {})


def _compare_sets(plan: list, outputs: list, precision: Precision, options: ValidateOptions,
                  ) -> tuple[list[SetResult], dict[str, Tolerance]]:
    """Each planned set's (candidate, reference) outputs compared under the per-output tolerances
    (``--atol/--rtol`` may name outputs: every name must be one of the candidate's)."""
    cand_out = outputs[0][0]
    unknown = sorted({k for k in (*options.atol, *options.rtol) if k and k not in cand_out})
    if unknown:
        raise UserError(f"--atol/--rtol name output(s) {', '.join(unknown)}; the candidate's outputs are "
                        f"{', '.join(cand_out)}")
    tols = {name: _tolerance(cand_out[name], precision, options, name) for name in cand_out}
    return [_compare_set(name, c, r, tols, notes) for (name, _, notes), (c, r) in zip(plan, outputs)], tols


def _tolerance_report(tols: dict[str, Tolerance], precision: Precision) -> dict[str, dict]:
    """Per output: atol, rtol (None where unbounded) and the dtype whose table they come from."""
    return {k: {"atol": v.atol if math.isfinite(v.atol) else None,
                "rtol": v.rtol if math.isfinite(v.rtol) else None, "dtype": precision.dtype}
            for k, v in tols.items()}


def _tolerance(output: np.ndarray, precision: Precision, options: ValidateOptions, name: str) -> Tolerance:
    """Per output: the table entry for the candidate's precision (exact for integer and
    boolean outputs), then the user's overrides by output name or for all outputs."""
    atol = options.atol.get(name, options.atol.get(""))
    rtol = options.rtol.get(name, options.rtol.get(""))
    if output.dtype.kind in "biu":
        return Tolerance(0.0 if atol is None else atol, 0.0 if rtol is None else rtol)
    if precision == Precision.INT8:
        # INT8 logits differ from float ones by design: the statistics are reported, the
        # verdict is the task accuracy (and any tolerance the user sets).
        return Tolerance(math.inf if atol is None else atol, math.inf if rtol is None else rtol)
    return tolerance_for(precision.dtype, atol, rtol)


def _logits_name(outputs: dict, num_classes: int | None) -> str | None:
    for name, value in outputs.items():
        if value.ndim == 2 and (num_classes is None or value.shape[1] == num_classes):
            return name
    return None


def validate(options: ValidateOptions, progress: Callable[[str], None] | None = None) -> ValidationReport:
    """Compare a candidate with its reference; write the JSON report if asked.

    Args:
        options: candidate, reference, inputs and tolerances (``ValidateOptions``).
        progress: called with one line per step; default silent.

    Returns:
        The report; ``report.passed`` is the verdict (the CLI exits 1 when False).

    Raises:
        UserError: unreadable or unsuitable files, a candidate that cannot run here (an
            engine without a GPU), malformed inputs.
    """
    from stn_deploy.data import make_dataset
    from stn_deploy.io import check_outputs_distinct
    from stn_deploy.jobs import run

    check_outputs_distinct([options.report], [options.candidate, options.reference, options.inputs])
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    if options.reference.suffix.lower() == ".json":
        return _validate_against_outputs(options, say, started)
    cand_kind, precision = _describe(options.candidate)
    if cand_kind == ModelKind.CHECKPOINT:
        raise UserError(f"{options.candidate.name} is a checkpoint: the candidate is an engine, an ONNX model "
                        "or a torch.export program")
    ref_kind, _ = _describe(options.reference)
    if ref_kind == ModelKind.ENGINE:
        raise UserError(f"{options.reference.name} is an engine: the reference is a checkpoint, a torch.export "
                        "program or an ONNX model")
    model, config, train_info = _reference_model(options.reference)
    if not train_info.get("dataset") and cand_kind.is_onnx:
        train_info["dataset"] = onnx_metadata(options.candidate).get("dataset")

    cand_runner = run.open_runner(options.candidate)
    ref_runner = run.open_runner(options.reference)
    with cand_runner:
        cand_meta = cand_runner.get_input_metadata(use_numpy_dtypes=False)
    with ref_runner:
        ref_meta = ref_runner.get_input_metadata(use_numpy_dtypes=False)
    if not _has_test_set(options, cand_kind, ref_kind, cand_meta, ref_meta, train_info, config):
        return _validate_generated(options, say, started, (cand_kind, precision, cand_runner, cand_meta),
                                   (ref_kind, ref_runner, ref_meta))
    cand_name, cand_info = next(iter(cand_meta.items()))
    ref_name, ref_info = next(iter(ref_meta.items()))
    _check_same_input(list(cand_info.shape), list(ref_info.shape))
    input_shape = [d if isinstance(d, int) else -1 for d in cand_info.shape]
    if config is not None and len(input_shape) == 1 + len(config.input_shape):
        input_shape = [input_shape[0], *config.input_shape]
    dataset = _choose_dataset(options, train_info, input_shape)
    batch, fixed = _batch_limit(options.candidate, cand_kind, input_shape, options.batch_size)

    say(f"test images: {dataset}")
    test = make_dataset(dataset, "test")
    images, labels = test.images.numpy(), test.labels.numpy()
    if options.max_images:
        images, labels = images[:options.max_images], labels[:options.max_images]
    # (name, images, notes) of every input set; all run in one Comparator pass.
    plan: list[tuple[str, np.ndarray, dict]] = [("test-images", images, {})]
    if options.adversarial:
        stress, stress_names = stress_images(tuple(images.shape[1:]), images, options.seed)
        plan.append(("adversarial-stress", stress, {"images": stress_names}))
        if model is not None:
            say("adversarial: crafting images for extreme sampling grids")
            crafted, notes = crafted_images(model, images, steps=options.crafted_steps, seed=options.seed)
            if len(crafted):
                plan.append(("adversarial-crafted", crafted, {"targets": notes}))
    if options.inputs is not None:
        # Every iteration of the file (polygraphy --save-inputs --iterations N), one set.
        chunks = []
        for feed in run.load_input_iterations(options.inputs):
            if len(feed) != 1:
                raise UserError(f"{options.inputs}: expected one input array, found {list(feed)}")
            extra = np.asarray(next(iter(feed.values())), dtype=np.float32)
            if extra.ndim != images.ndim or extra.shape[1:] != images.shape[1:]:
                raise UserError(f"{options.inputs}: input shape {list(extra.shape)} does not fit the model "
                                f"(N x {list(images.shape[1:])})")
            chunks.append(extra)
        plan.append(("inputs-file", np.concatenate(chunks), {"iterations": len(chunks)}))

    say(f"running candidate and reference on {sum(len(p[1]) for p in plan)} inputs")
    outputs = _run_pair(cand_runner, ref_runner, [p[1] for p in plan], batch, fixed, cand_name, ref_name)
    sets, tols = _compare_sets(plan, outputs, precision, options)
    cand_out = outputs[0][0]

    accuracy: dict = {}
    ref_out = outputs[0][1]
    c_logits = _logits_name(cand_out, config.num_classes if config is not None else None)
    if c_logits is not None:
        r_logits = dict(_pair_outputs(cand_out, ref_out))[c_logits]
        acc_c = float((cand_out[c_logits].argmax(1) == labels).mean() * 100)
        acc_r = float((ref_out[r_logits].argmax(1) == labels).mean() * 100)
        diff = abs(acc_c - acc_r)
        limit = options.max_accuracy_drop
        if limit is None:
            from stn_deploy.quantize import INT8_ACCURACY_DROP

            limit = INT8_ACCURACY_DROP if precision == Precision.INT8 else 0.1
        accuracy = {"output": c_logits, "images": int(len(labels)), "candidate": round(acc_c, 4),
                    "reference": round(acc_r, 4), "difference": round(diff, 4),
                    "limit": limit, "passed": diff <= limit + 1e-9}

    report = ValidationReport(
        candidate={"path": str(options.candidate), "kind": cand_kind.value, "precision": precision.dtype},
        reference={"path": str(options.reference), "kind": ref_kind,
                   "model": config.name if config is not None
                   else onnx_metadata(options.reference).get("model")},
        dataset=dataset,
        # None: no elementwise bound (INT8 is judged by task accuracy); JSON has no infinity.
        tolerances=_tolerance_report(tols, precision),
        sets=sets, accuracy=accuracy, seconds=time.perf_counter() - started)
    return _saved(report, options)


def _has_test_set(options: ValidateOptions, cand_kind: ModelKind, ref_kind: ModelKind, cand_meta, ref_meta,
                  train_info: dict, config) -> bool:
    """Whether the pair is validated on a distorted-digit test set (with task accuracy): one
    image input on both sides, no ``torch.export`` program, and a test set that fits (named,
    recorded, or told by the image size). Anything else is validated on generated inputs."""
    if ModelKind.PROGRAM in (cand_kind, ref_kind) or len(cand_meta) != 1 or len(ref_meta) != 1:
        return False
    if options.dataset or config is not None or train_info.get("dataset"):
        return True
    shape = list(next(iter(cand_meta.values())).shape)
    hw = tuple(shape[-2:])
    return len(shape) == 4 and hw in _DATASET_BY_SIZE


def _validate_generated(options: ValidateOptions, say: Callable[[str], None], started: float,
                        candidate: tuple, reference: tuple) -> ValidationReport:
    """Any inputs, any number of them: the candidate and the reference on generated inputs.

    Sets: ``random`` and ``random-2`` (two seeds; ``user_model.random_feed``: each input
    drawn for its kind), one ``adversarial:<input>:<case>`` set per case of every input
    recognisable as an image, grid, theta or displacement (``user_model.adversarial_feeds``;
    the set notes which input was perturbed and how), ``crafted:<tensor>:<target>`` when a
    ``.pt2`` is compared (inputs steered so that a theta or grid the program computes becomes
    extreme, ``user_model.crafted_feeds``), and ``inputs-file`` (every iteration of
    ``--inputs``). Dynamic dims: ``--shapes``, the batch (``options.batch``), a program's
    example inputs, an export's recorded input shapes.
    """
    from stn_deploy import user_model
    from stn_deploy.jobs import run

    cand_kind, precision, cand_runner, cand_meta = candidate
    ref_kind, ref_runner, ref_meta = reference
    cand_specs = user_model.specs_from_metadata(cand_meta)
    ref_specs = user_model.specs_from_metadata(ref_meta)
    rename: dict[str, str] = {}
    if len(cand_specs) == len(ref_specs) == 1 and cand_specs[0].name != ref_specs[0].name:
        rename = {cand_specs[0].name: ref_specs[0].name}  # one input each: paired by position
        ref_specs = [user_model.InputSpec(cand_specs[0].name, ref_specs[0].dtype, ref_specs[0].dims)]
    problem = user_model.describe_mismatch(cand_specs, ref_specs)
    if problem:
        raise UserError(f"the candidate and the reference do not take the same inputs: {problem}")

    examples: dict = {}
    for runner in (cand_runner, ref_runner):
        if hasattr(runner, "example_shapes"):
            examples.update(runner.example_shapes())
    recorded = None
    for path, kind in ((options.candidate, cand_kind), (options.reference, ref_kind)):  # None / {} but for an ONNX
        recorded = recorded or sample_shape(path, kind)
        examples = {**recorded_input_shapes(path, kind), **examples}
    # A dim fixed on either side is fixed for both (a static-batch program vs a dynamic ONNX).
    ref_dims = {s.name: s.dims for s in ref_specs}
    both = [user_model.InputSpec(s.name, s.dtype, tuple(r if isinstance(r, int) else c for c, r in zip(s.dims, ref_dims[s.name])))
            for s in cand_specs]
    shapes = user_model.resolve_shapes(both, batch=options.batch, shapes=options.shapes, examples=examples,
                                       sample_shape=recorded)

    # (set name, feeds, notes); every feed is one inference of both models.
    plan: list[tuple[str, list[dict[str, np.ndarray]], dict]] = []
    base = user_model.random_feed(cand_specs, shapes, options.seed)
    plan.append(("random", [base], {"seed": options.seed}))
    plan.append(("random-2", [user_model.random_feed(cand_specs, shapes, options.seed + 1)], {"seed": options.seed + 1}))
    if options.adversarial:
        for case, feed, how in user_model.adversarial_feeds(cand_specs, base, options.seed):
            plan.append((f"adversarial:{case}", [feed], {"perturbed": how}))
        if len(plan) == 2:
            say("adversarial: no input is recognisably an image, grid, theta or displacement")
        program = next((r.program for r in (ref_runner, cand_runner) if getattr(r, "program", None) is not None), None)
        if program is not None:
            say("adversarial: crafting inputs for extreme thetas / grids inside the program")
            for case, feed, how, reached in user_model.crafted_feeds(program, cand_specs, base, options.crafted_steps):
                plan.append((f"crafted:{case}", [feed], {"perturbed": how, "reached": reached}))
    if options.inputs is not None:
        feeds = run.load_input_iterations(options.inputs)
        plan.append(("inputs-file", feeds, {"iterations": len(feeds)}))

    say(f"running candidate and reference on {sum(len(p[1]) for p in plan)} input feeds "
        f"({', '.join(f'{k} {list(v)}' for k, v in shapes.items())})")
    results = []
    with cand_runner, ref_runner:
        for name, feeds, _notes in plan:
            c_iters, r_iters = [], []
            for feed in feeds:
                if name == "inputs-file":
                    run.check_inputs(feed, cand_meta)
                # Copies: runners may reuse their output buffers between calls.
                c_iters.append({k: np.array(v, copy=True) for k, v in cand_runner.infer(feed, check_inputs=False).items()})
                r_feed = {rename.get(k, k): v for k, v in feed.items()}
                r_iters.append({k: np.array(v, copy=True) for k, v in ref_runner.infer(r_feed, check_inputs=False).items()})
            results.append((_joined(c_iters), _joined(r_iters)))
    sets, tols = _compare_sets(plan, results, precision, options)
    for result, (_, feeds, _notes) in zip(sets, plan):
        result.count = sum(len(next(iter(f.values()))) if f else 0 for f in feeds)
    report = ValidationReport(
        candidate={"path": str(options.candidate), "kind": cand_kind.value, "precision": precision.dtype},
        reference={"path": str(options.reference), "kind": ref_kind.value},
        dataset="none (generated inputs)",
        tolerances=_tolerance_report(tols, precision),
        sets=sets, accuracy={}, seconds=time.perf_counter() - started,
        inputs={s.name: {"dtype": s.dtype, "shape": list(shapes[s.name]),
                         "kind": user_model.input_kind(s.name, s.dtype, shapes[s.name])} for s in cand_specs})
    return _saved(report, options)


def _joined(iterations: list[dict]) -> dict[str, np.ndarray]:
    """One feed's outputs as they are (the worst index keeps its meaning); several feeds'
    (an inputs file's iterations, shapes may differ) flattened and concatenated."""
    if len(iterations) == 1:
        return iterations[0]
    return {k: np.concatenate([it[k].reshape(-1) for it in iterations]) for k in iterations[0]}


def _validate_against_outputs(options: ValidateOptions, say: Callable[[str], None],
                              started: float) -> ValidationReport:
    """The candidate on ``--inputs`` against recorded outputs: a Polygraphy ``RunResults``
    JSON given as ``--reference`` (``polygraphy run --save-outputs``, ``stn-deploy run -o
    x.json``), iteration by iteration. No test set or accuracy: the outputs fix the inputs."""
    from stn_deploy.jobs import run

    if options.inputs is None:
        raise UserError(f"--reference {options.reference} holds outputs, not a model: give the inputs they "
                        "were computed from with --inputs (polygraphy run --save-inputs)")
    runner_name, expected = run.load_run_results(options.reference)
    feeds = run.load_input_iterations(options.inputs)
    if len(feeds) != len(expected):
        raise UserError(f"{options.inputs} holds {len(feeds)} input iterations but {options.reference} holds "
                        f"outputs of {len(expected)}")
    cand_kind, precision = _describe(options.candidate)
    runner = run.open_runner(options.candidate)
    say(f"running candidate on {len(feeds)} input iteration(s) of {options.inputs}")
    got = []
    with runner:
        meta = runner.get_input_metadata(use_numpy_dtypes=False)
        for feed in feeds:
            run.check_inputs(feed, meta)
            got.append({k: np.array(v, copy=True) for k, v in runner.infer(feed, check_inputs=False).items()})
    plan = [(f"iteration-{i}", None, None) for i in range(len(got))]
    sets, tols = _compare_sets(plan, list(zip(got, expected)), precision, options)
    report = ValidationReport(
        candidate={"path": str(options.candidate), "kind": cand_kind.value, "precision": precision.dtype},
        reference={"path": str(options.reference), "kind": "polygraphy-outputs", "runner": runner_name},
        dataset="none (recorded outputs)",
        tolerances=_tolerance_report(tols, precision),
        sets=sets, accuracy={}, seconds=time.perf_counter() - started)
    return _saved(report, options)


def _saved(report: ValidationReport, options: ValidateOptions) -> ValidationReport:
    """``report``, written to ``options.report`` (JSON, atomically) when one is asked for."""
    if options.report is not None:
        from stn_deploy.io import write_json

        write_json(options.report, report.to_dict())
    return report


def check(report: ValidationReport) -> None:
    """Raise ``ValidationFailed`` (exit 1) with a one-line summary unless the report passed."""
    from stn_deploy.errors import ValidationFailed

    if not report.passed:
        fails = report.failures()
        raise ValidationFailed(f"{len(fails)} check(s) failed: {fails[0]}"
                               + (f"; and {len(fails) - 1} more" if len(fails) > 1 else ""))


__all__ = ["TOLERANCES", "ValidateOptions", "ValidationReport", "SetResult", "validate", "check",
           "parse_tolerance", "stress_images", "crafted_images", "CRAFTED_TARGETS"]
