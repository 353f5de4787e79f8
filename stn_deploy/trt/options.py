"""Build options and the ``--shapes`` syntax. No TensorRT import here: the CLI and the
parent process of a build use these without loading TensorRT.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from stn_deploy.errors import UserError
from stn_deploy.schema import PRECISION_NAMES, Precision

#: ``--trt`` choices; "auto" prefers full TensorRT where it is installed, else TensorRT-RTX.
FLAVOUR_CHOICES = ("auto", "tensorrt", "rtx")
#: ``--compute-capability`` choices (TensorRT-RTX only). "default" leaves the builder's own
#: choice (portable across sm80/86/89/120+); "current" targets the GPU of this machine
#: (needs one). TensorRT-RTX 1.7 has no sm90 target.
COMPUTE_CAPABILITY_CHOICES = ("default", "current", "sm75", "sm80", "sm86", "sm89", "sm120", "sm121")
#: Dynamic batch dimension of inputs not named by ``--shapes``: (min, opt, max).
DEFAULT_BATCH_RANGE = (1, 8, 64)
#: ``builder_optimization_level`` range accepted by TensorRT and TensorRT-RTX.
OPT_LEVEL_RANGE = (0, 5)


@dataclass(frozen=True)
class ShapeRange:
    """One input's optimisation-profile range: min, opt and max shapes."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise UserError(f"--shapes {self.name}: min, opt and max must have the same rank")
        for lo, mid, hi in zip(self.min, self.opt, self.max):
            if lo < 0 or not (lo <= mid <= hi):
                raise UserError(f"--shapes {self.name}: need 0 <= min <= opt <= max in every "
                                f"dimension, got {self.spec()}")

    def spec(self) -> str:
        """The ``NAME:MIN,OPT,MAX`` text of this range."""
        dims = lambda s: "x".join(map(str, s))  # noqa: E731
        return f"{self.name}:{dims(self.min)},{dims(self.opt)},{dims(self.max)}"

    def to_dict(self) -> dict:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, d: dict) -> ShapeRange:
        return cls(str(d["name"]), tuple(d["min"]), tuple(d["opt"]), tuple(d["max"]))

    def contains(self, shape: tuple[int, ...]) -> bool:
        """Whether ``shape`` lies inside [min, max] in every dimension."""
        return len(shape) == len(self.min) and all(
            lo <= s <= hi for s, lo, hi in zip(shape, self.min, self.max))


#: One shape: ours/trtexec's ``1x1x28x28`` or Polygraphy's ``[1,1,28,28]``.
_ONE_SHAPE = r"(?:\[\s*\d+(?:\s*,\s*\d+)*\s*\]|\d+(?:x\d+)*)"
_SPEC_RE = re.compile(rf"^(?P<name>.+?):(?P<shapes>{_ONE_SHAPE}(?:\s*,\s*{_ONE_SHAPE})*)$")
_SHAPES_HELP = ("expected NAME:MIN,OPT,MAX or NAME:SHAPE with shapes like 1x1x28x28 or [1,1,28,28], "
                "e.g. input:1x1x28x28,8x1x28x28,64x1x28x28")


def _dims(text: str) -> tuple[int, ...]:
    text = text.strip()
    parts = text[1:-1].split(",") if text.startswith("[") else text.split("x")
    return tuple(int(p) for p in parts)


def _split_specs(text: str) -> list[str]:
    """``a:1x2,b:[1,2]`` -> ``["a:1x2", "b:[1,2]"]``: commas outside brackets that start a new NAME:."""
    items, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    # Re-join "name:1x2,3x4,5x6" (a range of one name) split above: a piece without ":" continues.
    specs: list[str] = []
    for item in items:
        if specs and ":" not in item:
            specs[-1] += "," + item
        else:
            specs.append(item)
    return [s.strip() for s in specs if s.strip()]


def parse_shape_spec(spec: str) -> ShapeRange:
    """Parse ``NAME:MIN,OPT,MAX`` or ``NAME:SHAPE`` (min = opt = max).

    Shapes are dims joined by ``x`` (``1x1x28x28``, as trtexec writes them) or Polygraphy's
    bracketed lists (``[1,1,28,28]``). Example: ``input:1x1x28x28,8x1x28x28,64x1x28x28``.

    Raises:
        UserError: the text is malformed.
    """
    m = _SPEC_RE.match(spec.strip())
    if not m:
        raise UserError(f"malformed --shapes {spec!r}: {_SHAPES_HELP}")
    shapes = [_dims(t) for t in re.findall(_ONE_SHAPE, m.group("shapes"))]
    if len(shapes) == 1:
        shapes *= 3
    if len(shapes) != 3:
        raise UserError(f"malformed --shapes {spec!r}: {len(shapes)} shapes; give one (fixed) or three "
                        "(min, opt, max)")
    return ShapeRange(m.group("name"), *shapes)


def shapes_from_ranges(min_specs=(), opt_specs=(), max_specs=()) -> tuple[ShapeRange, ...]:
    """trtexec's ``--minShapes/--optShapes/--maxShapes`` (here ``--min-shapes`` ...): each a
    comma-separated ``NAME:SHAPE`` list, repeatable. As in trtexec, a name given only an opt
    shape gets min = max = opt; min and max without opt is an error.

    Raises:
        UserError: a malformed spec, a name given twice for one bound, or a name without opt.
    """
    bounds: dict[str, dict[str, tuple[int, ...]]] = {}
    for bound, specs in (("min", min_specs), ("opt", opt_specs), ("max", max_specs)):
        for text in specs or ():
            for item in _split_specs(text):
                m = _SPEC_RE.match(item)
                found = re.findall(_ONE_SHAPE, m.group("shapes")) if m else []
                if m is None or len(found) != 1:
                    raise UserError(f"malformed --{bound}-shapes {item!r}: expected NAME:SHAPE "
                                    "(1x1x28x28 or [1,1,28,28]), comma-separated for several inputs")
                entry = bounds.setdefault(m.group("name"), {})
                if bound in entry:
                    raise UserError(f"--{bound}-shapes names {m.group('name')} twice")
                entry[bound] = _dims(found[0])
    out = []
    for name, b in bounds.items():
        if "opt" not in b:
            raise UserError(f"--opt-shapes is missing for {name} (given: "
                            f"{', '.join(f'--{k}-shapes' for k in b)})")
        out.append(ShapeRange(name, b.get("min", b["opt"]), b["opt"], b.get("max", b["opt"])))
    return tuple(out)


@dataclass(frozen=True)
class BuildOptions:
    """What ``trt.build`` builds and how.

    Attributes:
        onnx: the ONNX model to build (standard or plugin ops).
        engine: where to write the serialised engine; a sidecar JSON goes to
            ``<engine>.json``. Both are written atomically.
        flavour: "auto", "tensorrt" or "rtx" (TensorRT-RTX). Default "auto".
        precision: compute precision, "fp32" (default), "fp16" or "bf16". Network I/O stays
            fp32. Strongly typed backends (TensorRT-RTX) get a converted copy of the graph;
            weakly typed ones (TensorRT 10) get the builder flag.
        shapes: optimisation-profile ranges for dynamic inputs (one profile). Inputs not
            named get ``DEFAULT_BATCH_RANGE`` on a dynamic first dimension.
        timing_cache: file to read and update (full TensorRT; a no-op in TensorRT-RTX).
        opt_level: builder optimisation level 0..5; None keeps the default (3).
        workspace_mib: workspace memory-pool limit in MiB; None keeps the default.
        compute_capabilities: TensorRT-RTX targets (``COMPUTE_CAPABILITY_CHOICES`` less
            "default"); empty = the builder default.
        plugin_library: the plugin library to load; None = ``kernels.library_path()`` when
            the graph holds our plugin ops, else none.
        doctor: run ``doctor.doctor`` first and stop on its errors.
    """

    onnx: Path
    engine: Path
    flavour: str = "auto"
    precision: Precision = Precision.FP32
    shapes: tuple[ShapeRange, ...] = ()
    timing_cache: Path | None = None
    opt_level: int | None = None
    workspace_mib: int | None = None
    compute_capabilities: tuple[str, ...] = ()
    plugin_library: Path | None = None
    doctor: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "onnx", Path(self.onnx))
        object.__setattr__(self, "engine", Path(self.engine))
        if self.flavour not in FLAVOUR_CHOICES:
            raise UserError(f"unknown TensorRT flavour {self.flavour!r}; choose from {', '.join(FLAVOUR_CHOICES)}")
        if self.precision not in PRECISION_NAMES:
            raise UserError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISION_NAMES)}")
        object.__setattr__(self, "precision", Precision(self.precision))
        if self.opt_level is not None and not OPT_LEVEL_RANGE[0] <= self.opt_level <= OPT_LEVEL_RANGE[1]:
            raise UserError(f"--opt-level must be in {OPT_LEVEL_RANGE[0]}..{OPT_LEVEL_RANGE[1]}, got {self.opt_level}")
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise UserError(f"--workspace must be a positive number of MiB, got {self.workspace_mib}")
        for cc in self.compute_capabilities:
            if cc not in COMPUTE_CAPABILITY_CHOICES or cc == "default":
                raise UserError(f"unknown compute capability {cc!r}; choose from "
                                f"{', '.join(c for c in COMPUTE_CAPABILITY_CHOICES if c != 'default')}")
        names = [s.name for s in self.shapes]
        if len(set(names)) != len(names):
            raise UserError(f"--shapes names an input twice: {', '.join(sorted(names))}")

    @property
    def sidecar(self) -> Path:
        """The sidecar JSON path, ``<engine>.json``."""
        return sidecar_path(self.engine)


def sidecar_path(engine: Path | str) -> Path:
    """``model.engine`` -> ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


@dataclass(frozen=True)
class BuildResult:
    """What a build produced. ``sidecar`` is the dict written to ``sidecar_path``."""

    engine: Path
    sidecar_path: Path
    seconds: float
    sidecar: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BuildJob:
    """One build as the parent sends it to the worker process (``build_worker``): the
    options resolved (absolute paths, the plugin library found, default ranges filled in).

    Crosses the process boundary as one JSON line (``to_json`` / ``from_json``).
    """

    onnx: Path
    flavour: str
    precision: Precision
    shapes: tuple[ShapeRange, ...]
    default_batch: tuple[int, int, int]
    timing_cache: Path | None
    opt_level: int | None
    workspace_mib: int | None
    compute_capabilities: tuple[str, ...]
    plugin_library: Path | None
    plugin_ops: tuple[str, ...]
    #: The (temporary) engine file to write, and the file for native stderr; set per run.
    out: Path | None = None
    stderr: Path | None = None

    def to_json(self) -> str:
        d = asdict(self)
        d["shapes"] = [s.to_dict() for s in self.shapes]
        return json.dumps(d, default=str)

    @classmethod
    def from_json(cls, text: str) -> BuildJob:
        d = json.loads(text)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"build job has unknown keys: {', '.join(sorted(unknown))}")

        def path(v):
            return Path(v) if v is not None else None

        return cls(
            onnx=Path(d["onnx"]), flavour=d["flavour"], precision=Precision(d["precision"]),
            shapes=tuple(ShapeRange.from_dict(s) for s in d["shapes"]),
            default_batch=tuple(d["default_batch"]), timing_cache=path(d["timing_cache"]),
            opt_level=d["opt_level"], workspace_mib=d["workspace_mib"],
            compute_capabilities=tuple(d["compute_capabilities"]), plugin_library=path(d["plugin_library"]),
            plugin_ops=tuple(d["plugin_ops"]), out=path(d.get("out")), stderr=path(d.get("stderr")),
        )
