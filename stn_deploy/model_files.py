"""What kind of model file is this, and how is it opened: the one place that knows.

Every command that takes a model (``run``, ``export``, ``bench``, ``validate``, ``demo``)
asks ``detect_kind`` what it was given and opens a checkpoint with ``load_model``; a
missing or unreadable path is reported by ``io.require_file`` in the same words everywhere.
The names of the exported graph's input/output and of its metadata live here too, since
they are what ties a checkpoint to the ONNX and engines made from it.

Only the standard library is imported at module level.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stn_deploy.errors import UserError
from stn_deploy.io import require_file

if TYPE_CHECKING:
    from torch import nn

    from stn_deploy.models import ModelConfig

#: Name of the exported graph's input, and of its output (``output_<i>`` for several).
INPUT_NAME = "input"
OUTPUT_NAME = "output"
#: Prefix of the ONNX metadata keys the export writes (``stn_deploy.input_shape``, ...).
META_PREFIX = "stn_deploy."
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
#: torch.save writes a zip archive (PK..) by default, a pickle (0x80) with the legacy format.
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


class ModelKind(StrEnum):
    """The kinds of model file the pipeline reads; the value is what reports print."""

    CHECKPOINT = "checkpoint"
    #: A user's own model: a ``torch.export`` program (``.pt2``, ``user_model``).
    PROGRAM = "program"
    ONNX_STANDARD = "onnx-standard"
    ONNX_PLUGIN = "onnx-plugin"
    ENGINE = "engine"
    #: Not a file: a model behind a Triton server (``--backend triton --url HOST:PORT``).
    SERVED = "served"

    @property
    def is_onnx(self) -> bool:
        return self in (ModelKind.ONNX_STANDARD, ModelKind.ONNX_PLUGIN)

    @property
    def is_torch(self) -> bool:
        """A model PyTorch runs: a checkpoint or a ``torch.export`` program."""
        return self in (ModelKind.CHECKPOINT, ModelKind.PROGRAM)

    @property
    def family(self) -> str:
        """``checkpoint``, ``onnx`` or ``engine``: the kind without the op flavour."""
        return "onnx" if self.is_onnx else self.value


def detect_kind(path: Path | str) -> ModelKind:
    """Which kind of model ``path`` is.

    Engines are told by suffix, ``torch.export`` programs by their archive's records,
    checkpoints by suffix or content, ONNX models by parsing them (a plugin ONNX holds our
    plugin ops).

    Raises:
        UserError: missing file, a TorchScript archive (with how to make a ``.pt2``), or
            neither a checkpoint, a program, an ONNX model nor an engine (including a
            truncated ONNX file).
    """
    p = require_file(path)
    if p.suffix.lower() in ENGINE_SUFFIXES:
        return ModelKind.ENGINE
    if p.suffix.lower() == ".json":
        # onnx.load would parse it as a JSON-encoded ModelProto and fail with a protobuf error.
        raise UserError(f"{p} is a JSON file, not a model (a checkpoint, an ONNX model or a TensorRT engine); "
                        "Polygraphy inputs go in --inputs, recorded outputs in validate --reference")
    with open(p, "rb") as f:
        head = f.read(8)
    from stn_deploy.user_model import PROGRAM_SUFFIXES, foreign_format, is_program_file, is_torchscript_file

    if head.startswith(b"PK\x03\x04") and is_program_file(p):
        return ModelKind.PROGRAM
    if p.suffix.lower() in PROGRAM_SUFFIXES:
        raise UserError(f"{p} is not a torch.export program (no archive_format record)")
    if p.suffix.lower() in CHECKPOINT_SUFFIXES or head.startswith(_CHECKPOINT_MAGIC):
        if head.startswith(b"PK\x03\x04") and is_torchscript_file(p):
            raise UserError(foreign_format(p) or f"{p} is a TorchScript archive")
        return ModelKind.CHECKPOINT
    from stn_deploy.graph import load_onnx
    from stn_deploy.ort_ops import has_plugin_ops

    try:
        model = load_onnx(p)
    except UserError:
        if p.suffix.lower() == ".onnx":
            raise
        raise UserError(f"{p} is not a checkpoint, an ONNX model or a TensorRT engine (.engine/.plan)") from None
    return ModelKind.ONNX_PLUGIN if has_plugin_ops(model) else ModelKind.ONNX_STANDARD


def require_kind(path: Path | str, *kinds: ModelKind, hint: str = "") -> ModelKind:
    """``detect_kind(path)`` when it is one of ``kinds``, else a UserError naming both."""
    kind = detect_kind(path)
    if kind not in kinds:
        wanted = " or ".join(k.value for k in kinds)
        raise UserError(f"{Path(path).name} is {kind.value}, not {wanted}" + (f": {hint}" if hint else ""))
    return kind


def load_model(checkpoint: Path | str) -> tuple[nn.Module, ModelConfig]:
    """(model in eval mode on the CPU, its ``ModelConfig``) from a training checkpoint.

    Raises:
        UserError: a missing, foreign or mismatched checkpoint (``train.load_checkpoint``);
            a state dict or a pickled module is named as such, with how to make a ``.pt2``.
    """
    from stn_deploy.jobs.train import load_checkpoint
    from stn_deploy.user_model import foreign_format

    path = require_file(checkpoint, "checkpoint")
    try:
        model, config = load_checkpoint(path)
    except UserError as exc:
        if "not an stn-deploy checkpoint" not in str(exc):
            raise
        raise UserError(foreign_format(path) or f"{exc}; a model of your own goes in as a torch.export "
                        "program (.pt2)") from None
    return model.eval(), config


def onnx_metadata(path: Path | str) -> dict[str, str]:
    """The ``stn_deploy.*`` metadata of an exported ONNX, keys without the prefix ({} if none)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def _recorded(path: Path | str, kind: ModelKind | None, key: str) -> Any:
    """The JSON an export recorded under metadata ``key``; None for a model other than an
    ONNX, or where nothing (readable) was recorded."""
    kind = kind or detect_kind(path)
    if not kind.is_onnx:
        return None
    text = onnx_metadata(path).get(key)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def sample_shape(path: Path | str, kind: ModelKind | None = None) -> tuple[int, ...] | None:
    """(C, H, W) per sample as recorded by the export, for filling dynamic H/W; None if unknown."""
    shape = _recorded(path, kind, "input_shape")
    try:
        return tuple(int(v) for v in shape) if shape is not None else None
    except (ValueError, TypeError):
        return None


def recorded_input_shapes(path: Path | str, kind: ModelKind | None = None) -> dict[str, list[int]]:
    """Example input shapes by name that an export of a ``.pt2`` recorded ({} if none): what
    fills the dynamic dims of generated inputs."""
    shapes = _recorded(path, kind, "input_shapes")
    try:
        return {str(k): [int(d) for d in v] for k, v in shapes.items()} if shapes is not None else {}
    except (ValueError, TypeError, AttributeError):
        return {}
