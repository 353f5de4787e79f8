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
    """Compute precision of an engine or graph (``--precision``); engine I/O stays fp32."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def dtype(self) -> str:
        """The numpy-style dtype name: the key of the tolerance tables."""
        return {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.value]

    @classmethod
    def from_dtype(cls, dtype: str) -> Precision:
        """``"float16"`` -> ``Precision.FP16``; UserError for another dtype."""
        for p in cls:
            if p.dtype == dtype:
                return p
        raise UserError(f"no precision for dtype {dtype!r}; known: {', '.join(p.dtype for p in cls)}")


PRECISION_NAMES = tuple(p.value for p in Precision)
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

#: The plugin fields of each op, in the creators' ``getFieldNames()`` order.
SAMPLE_FIELDS = (FIELD_INTERPOLATION_MODE, FIELD_PADDING_MODE, FIELD_ALIGN_CORNERS)
OP_FIELDS = {
    GRID_SAMPLE_OP: SAMPLE_FIELDS,
    AFFINE_GRID_SAMPLE_OP: (*SAMPLE_FIELDS, FIELD_TRANSFORM, FIELD_OUT_D, FIELD_OUT_H, FIELD_OUT_W),
}


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
