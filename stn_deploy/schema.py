"""The one schema of the sampler's settings, shared by the models, the export, the plugin
fields, the ONNX attributes, the CLI choices and the kernel bindings.

Enum values follow PyTorch's order (``torch.nn.functional.grid_sample``) and are the integers
the C++ plugin expects in its fields (``plugins/common/gridSampleMath.h``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from stn_deploy.errors import UserError

PLUGIN_VERSION = "1"


class Precision(StrEnum):
    """Compute precision of an engine or graph; engine I/O stays fp32. ``--precision`` of a
    build takes the float ones (``PRECISION_NAMES``); INT8 comes from a quantised (QDQ) graph."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @property
    def dtype(self) -> str:
        """The numpy-style dtype name: the key of the tolerance tables (float ones)."""
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}[self.value]

    @classmethod
    def from_dtype(cls, dtype: str) -> Precision:
        """``"float16"`` -> ``Precision.FP16``; UserError for another dtype."""
        for p in cls:
            if p.dtype == dtype:
                return p
        raise UserError(f"no precision for dtype {dtype!r}; known: {', '.join(p.dtype for p in cls)}")


#: The precisions a build can be asked for (``--precision``).
PRECISION_NAMES = (Precision.FP32.value, Precision.FP16.value, Precision.BF16.value)
#: ONNX domain of our plugin ops; the TensorRT parser uses it as plugin namespace, and our
#: creators have an empty namespace so they match any domain.
PLUGIN_DOMAIN = "stn_deploy"
GRID_SAMPLE_OP = "STNGridSample"
AFFINE_GRID_SAMPLE_OP = "STNAffineGridSample"

#: ONNX attribute the TensorRT parser reads to pick the creator's version.
FIELD_PLUGIN_VERSION = "plugin_version"

# Plugin field names == ONNX attribute names of the plugin ops.
FIELD_INTERPOLATION_MODE = "interpolation_mode"
FIELD_PADDING_MODE = "padding_mode"
FIELD_ALIGN_CORNERS = "align_corners"
#: STNAffineGridSample only: 0 = affine theta ([N,2,3] or [N,3,4]), 1 = projective ([N,3,3]).
FIELD_TRANSFORM = "transform"
#: STNAffineGridSample only: output spatial size; out_d = 0 for 4-D (image) inputs.
FIELD_OUT_D = "out_d"
FIELD_OUT_H = "out_h"
FIELD_OUT_W = "out_w"

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class FieldSpec:
    """One integer plugin field (== ONNX attribute): its range and default, as the C++
    creators' ``fieldSpecs()`` declare them. ``default`` None: the field must be given."""

    name: str
    lo: int
    hi: int
    meaning: str
    default: int | None = 0


_SAMPLE_SPECS = (
    FieldSpec("interpolation_mode", 0, 2, "must be 0 (bilinear), 1 (nearest) or 2 (bicubic)"),
    FieldSpec("padding_mode", 0, 2, "must be 0 (zeros), 1 (border) or 2 (reflection)"),
    FieldSpec("align_corners", 0, 1, "must be 0 or 1"),
)
#: The plugin fields of each op, in the creators' ``getFieldNames()`` order.
OP_FIELD_SPECS: dict[str, tuple[FieldSpec, ...]] = {
    GRID_SAMPLE_OP: _SAMPLE_SPECS,
    AFFINE_GRID_SAMPLE_OP: (*_SAMPLE_SPECS,
                            FieldSpec("transform", 0, 1, "must be 0 (affine) or 1 (projective)"),
                            FieldSpec("out_d", 0, _INT32_MAX, "must be 0 (4-D input) or the output depth >= 1"),
                            FieldSpec("out_h", 1, _INT32_MAX, "must be the output height >= 1", None),
                            FieldSpec("out_w", 1, _INT32_MAX, "must be the output width >= 1", None)),
}
OP_FIELDS = {op: tuple(f.name for f in specs) for op, specs in OP_FIELD_SPECS.items()}
SAMPLE_FIELDS = OP_FIELDS[GRID_SAMPLE_OP]


def plugin_attribute_problems(op: str, attrs: dict[str, object]) -> list[str]:
    """Why the attributes of one of our plugin nodes would be rejected by its creator, in
    the creator's words (empty when they are fine). The one check that export, rewrite,
    doctor, the ONNX Runtime ops and the build share.

    Args:
        op: ``STNGridSample`` or ``STNAffineGridSample``.
        attrs: attribute name -> value as read from the node (ints; anything else is a problem).
    """
    specs = OP_FIELD_SPECS.get(op)
    if specs is None:
        return [f"unknown plugin op {op!r}; ours are {', '.join(OP_FIELD_SPECS)}"]
    problems = []
    values: dict[str, int] = {}
    for spec in specs:
        value = attrs.get(spec.name, spec.default)
        if value is None:
            problems.append(f"attribute {spec.name!r} is missing ({spec.meaning})")
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"attribute {spec.name!r} must be an integer, got {value!r}")
            continue
        if not spec.lo <= value <= spec.hi:
            problems.append(f"attribute {spec.name!r} = {value} {spec.meaning}")
            continue
        values[spec.name] = value
    if op == AFFINE_GRID_SAMPLE_OP and values.get(FIELD_OUT_D, 0) != 0:
        if values.get(FIELD_TRANSFORM) == Transform.PROJECTIVE:
            problems.append(f"attribute 'transform' = 1 (projective) needs a 4-D input (out_d = 0), "
                            f"got out_d = {values[FIELD_OUT_D]}")
        if values.get(FIELD_INTERPOLATION_MODE) == InterpolationMode.BICUBIC:
            problems.append(f"attribute 'interpolation_mode' = 2 (bicubic) supports 4-D input only "
                            f"(out_d = 0), got out_d = {values[FIELD_OUT_D]}")
    return problems


class InterpolationMode(IntEnum):
    BILINEAR = 0
    NEAREST = 1
    BICUBIC = 2


class PaddingMode(IntEnum):
    ZEROS = 0
    BORDER = 1
    REFLECTION = 2


class Transform(IntEnum):
    AFFINE = 0
    PROJECTIVE = 1


INTERPOLATION_NAMES = tuple(m.name.lower() for m in InterpolationMode)
PADDING_NAMES = tuple(m.name.lower() for m in PaddingMode)


def interpolation_from_name(name: str) -> InterpolationMode:
    try:
        return InterpolationMode[name.upper()]
    except KeyError:
        raise UserError(f"unknown interpolation mode {name!r}; choose from {', '.join(INTERPOLATION_NAMES)}") from None


def padding_from_name(name: str) -> PaddingMode:
    try:
        return PaddingMode[name.upper()]
    except KeyError:
        raise UserError(f"unknown padding mode {name!r}; choose from {', '.join(PADDING_NAMES)}") from None


@dataclass(frozen=True)
class SamplerSettings:
    """How a spatial transformer samples its input (``F.grid_sample`` arguments)."""

    mode: str = "bilinear"
    padding_mode: str = "zeros"
    align_corners: bool = False

    def __post_init__(self) -> None:
        interpolation_from_name(self.mode)
        padding_from_name(self.padding_mode)

    def plugin_fields(self) -> dict[str, int]:
        """The plugin's integer fields (== ONNX attributes of our ops)."""
        return {
            FIELD_INTERPOLATION_MODE: int(interpolation_from_name(self.mode)),
            FIELD_PADDING_MODE: int(padding_from_name(self.padding_mode)),
            FIELD_ALIGN_CORNERS: int(self.align_corners),
        }
