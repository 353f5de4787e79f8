"""Triton ``config.pbtxt``: built as Triton's own ``ModelConfig`` protobuf message, rendered to
text, and checked against that schema (``tritonclient``'s ``model_config_pb2`` with protobuf
``text_format``, which rejects unknown fields and wrong types) plus the rules Triton applies
when it loads a model (batch sizes, dims, one of platform/backend, GPU instances for engines).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

from stn_deploy.errors import UserError

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2

#: The kinds of entry a repository model can be: (platform, backend) as Triton names them.
PLATFORM_TENSORRT = "tensorrt_plan"
BACKEND_ONNXRUNTIME = "onnxruntime"
BACKEND_PYTHON = "python"
KNOWN_PLATFORMS = (PLATFORM_TENSORRT, "onnxruntime_onnx", "pytorch_libtorch", "tensorflow_savedmodel", "ensemble")
KNOWN_BACKENDS = (BACKEND_ONNXRUNTIME, BACKEND_PYTHON, "tensorrt", "pytorch", "tensorflow", "openvino")

#: numpy dtype names -> Triton data types (``TYPE_*`` in the config, the short form on the wire).
DTYPES = {"float32": "FP32", "float16": "FP16", "bfloat16": "BF16", "int32": "INT32", "int64": "INT64",
          "int8": "INT8", "uint8": "UINT8", "bool": "BOOL"}


def _pb2():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as exc:  # tritonclient[grpc] is in the test and triton extras
        raise UserError(f"tritonclient is not installed ({exc}); pip install 'tritonclient[grpc,http]'") from None
    return model_config_pb2


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as Triton sees it: dims exclude the batch axis (-1 = dynamic)."""

    name: str
    dtype: str  # numpy name, a key of DTYPES
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ConfigSpec:
    """What ``render_config`` writes.

    Attributes:
        name: model name (must equal its folder in the repository).
        platform: Triton platform (``tensorrt_plan``) or None.
        backend: Triton backend (``onnxruntime``, ``python``) or None.
        max_batch_size: largest batch one execution takes; 0 = no batch axis.
        inputs, outputs: tensors without the batch axis.
        dynamic_batching: add a ``dynamic_batching`` block.
        preferred_batch_sizes: sizes the batcher aims for (each <= max_batch_size).
        max_queue_delay_us: how long the batcher may hold a request to fill a batch, µs.
        instances: model instances; ``instance_kind`` ``KIND_CPU`` or ``KIND_GPU``.
        default_model_filename: the file in the version folder (``model.plan``, ...).
        parameters: string parameters handed to the backend.
    """

    name: str
    platform: str | None
    backend: str | None
    max_batch_size: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dynamic_batching: bool = True
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 100
    instances: int = 1
    instance_kind: str = "KIND_CPU"
    default_model_filename: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()


def _tensor(message, spec: TensorSpec, pb2) -> None:
    if spec.dtype not in DTYPES:
        raise UserError(f"tensor {spec.name!r}: dtype {spec.dtype} has no Triton type")
    message.name = spec.name
    message.data_type = pb2.DataType.Value(f"TYPE_{DTYPES[spec.dtype]}")
    message.dims.extend(int(d) for d in spec.dims)


def build_config(spec: ConfigSpec) -> model_config_pb2.ModelConfig:
    """The ``ModelConfig`` message of ``spec`` (checked with ``check_config``)."""
    pb2 = _pb2()
    config = pb2.ModelConfig(name=spec.name, max_batch_size=spec.max_batch_size)
    if spec.platform:
        config.platform = spec.platform
    if spec.backend:
        config.backend = spec.backend
    if spec.default_model_filename:
        config.default_model_filename = spec.default_model_filename
    for t in spec.inputs:
        _tensor(config.input.add(), t, pb2)
    for t in spec.outputs:
        _tensor(config.output.add(), t, pb2)
    if spec.dynamic_batching:
        config.dynamic_batching.preferred_batch_size.extend(spec.preferred_batch_sizes)
        config.dynamic_batching.max_queue_delay_microseconds = spec.max_queue_delay_us
    group = config.instance_group.add()
    group.count = spec.instances
    group.kind = pb2.ModelInstanceGroup.Kind.Value(spec.instance_kind)
    for key, value in spec.parameters:
        config.parameters[key].string_value = value
    check_config(config, spec.name)
    return config


def render_config(spec: ConfigSpec, header: Sequence[str] = ()) -> str:
    """``config.pbtxt`` text of ``spec``, with ``header`` lines as ``#`` comments on top.

    The text is parsed back and checked before it is returned, so what is written is what
    Triton's schema reads.
    """
    from google.protobuf import text_format

    text = text_format.MessageToString(build_config(spec))
    comments = "".join(f"# {line}\n" for line in header)
    out = comments + text
    parse_config(out, spec.name)
    return out


def parse_config(text: str, name: str | None = None) -> model_config_pb2.ModelConfig:
    """Parse ``config.pbtxt`` text with Triton's schema and check it (``check_config``).

    Raises:
        UserError: a syntax error, an unknown field or enum value, or a rule Triton enforces.
    """
    from google.protobuf import text_format

    pb2 = _pb2()
    config = pb2.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise UserError(f"config.pbtxt{f' of {name}' if name else ''}: {exc}") from None
    check_config(config, name)
    return config


def check_config(config: model_config_pb2.ModelConfig, name: str | None = None) -> None:
    """The load-time rules of Triton that the schema alone does not express.

    Raises:
        UserError: naming the model and the broken rule.
    """
    pb2 = _pb2()
    where = f"config of {config.name or name or '?'}"

    def fail(msg: str) -> NoReturn:
        raise UserError(f"{where}: {msg}")

    if name is not None and config.name != name:
        fail(f"name {config.name!r} differs from its folder {name!r}")
    if not config.platform and not config.backend:
        fail("set a platform or a backend")
    if config.platform and config.platform not in KNOWN_PLATFORMS:
        fail(f"unknown platform {config.platform!r}")
    if config.backend and config.backend not in KNOWN_BACKENDS:
        fail(f"unknown backend {config.backend!r}")
    if config.max_batch_size < 0:
        fail("max_batch_size must be >= 0")
    if not config.input or not config.output:
        fail("needs at least one input and one output")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        names = [t.name for t in tensors]
        if len(set(names)) != len(names):
            fail(f"duplicate {kind} names {names}")
        for t in tensors:
            if not t.name:
                fail(f"an {kind} has no name")
            if t.data_type == pb2.DataType.TYPE_INVALID:
                fail(f"{kind} {t.name!r} has no data_type")
            if not t.dims or any(d < -1 or d == 0 for d in t.dims):
                fail(f"{kind} {t.name!r} dims {list(t.dims)}: each must be > 0 or -1 (dynamic)")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            fail("dynamic_batching needs max_batch_size > 0")
        bad = [b for b in config.dynamic_batching.preferred_batch_size if b < 1 or b > config.max_batch_size]
        if bad:
            fail(f"preferred_batch_size {bad} outside 1..max_batch_size {config.max_batch_size}")
    for group in config.instance_group:
        if group.count < 1:
            fail("instance_group count must be >= 1")
        if config.platform == PLATFORM_TENSORRT and group.kind != pb2.ModelInstanceGroup.KIND_GPU:
            fail("tensorrt_plan models run on GPU instances (KIND_GPU)")
