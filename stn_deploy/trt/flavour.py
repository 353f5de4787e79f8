"""Flavour adapter: full TensorRT (``tensorrt``) or TensorRT-RTX (``tensorrt_rtx``).

Both expose the same Python API for what we use (Builder, OnnxParser, Runtime). The
differences we paper over are listed on :class:`Flavour`. ``tensorrt`` is imported only when
a flavour is asked for, so that ``stn-deploy --help`` works on machines without TensorRT.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from stn_deploy.errors import UserError
from stn_deploy.io import require_file

#: flavour name -> Python module.
MODULES = {"tensorrt": "tensorrt", "rtx": "tensorrt_rtx"}
#: first 4 bytes of a serialised engine -> flavour name ("ftrt" TensorRT, "vtrt" TensorRT-RTX).
ENGINE_MAGIC = {b"ftrt": "tensorrt", b"vtrt": "rtx"}


@dataclass(frozen=True)
class Flavour:
    """An imported TensorRT flavour.

    Attributes:
        name: "tensorrt" or "rtx".
        trt: the imported module (``tensorrt`` or ``tensorrt_rtx``).
        version: the module's ``__version__``.
    """

    name: str
    trt: ModuleType
    version: str

    @property
    def strongly_typed(self) -> bool:
        """True where precision comes from the graph's types only (TensorRT-RTX, TensorRT 11):
        there is no FP16 builder flag, so reduced precision means converting the graph."""
        return not hasattr(self.trt.BuilderFlag, "FP16")

    @property
    def has_compute_capabilities(self) -> bool:
        """TensorRT-RTX builds ahead of time for a list of compute capabilities."""
        return hasattr(self.trt, "ComputeCapability")

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.name == 'rtx' else 'TensorRT'} {self.version}"

    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split(".")[:3] if p.isdigit())


#: TensorRT DataType names -> numpy-style names (what callers pass to numpy/torch).
_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8",
           "INT32": "int32", "INT64": "int64", "BOOL": "bool", "UINT8": "uint8",
           "FP8": "float8", "INT4": "int4", "FP4": "float4"}


def dtype_name(dtype) -> str:
    """``trt.DataType.HALF`` -> "float16" (numpy-style names, as in sidecars and reports)."""
    name = str(dtype).split(".")[-1]
    return _DTYPES.get(name, name.lower())


def available_flavours() -> list[str]:
    """Names of the installed backends, without importing them."""
    return [name for name, mod in MODULES.items() if importlib.util.find_spec(mod) is not None]


@functools.cache
def get_flavour(choice: str = "auto") -> Flavour:
    """Import and return a flavour.

    Args:
        choice: "tensorrt", "rtx", or "auto" (full TensorRT where installed, else RTX).

    Raises:
        UserError: the chosen flavour is not installed.
    """
    if choice == "auto":
        found = available_flavours()
        if not found:
            raise UserError("no TensorRT found: install tensorrt, or tensorrt-rtx "
                            "(pip install 'stn-deploy[rtx]')")
        choice = found[0]
    if choice not in MODULES:
        raise UserError(f"unknown TensorRT flavour {choice!r}; choose from auto, {', '.join(MODULES)}")
    try:
        module = importlib.import_module(MODULES[choice])
    except ImportError as exc:
        raise UserError(f"--trt {choice}: cannot import {MODULES[choice]} ({exc})") from None
    return Flavour(choice, module, str(getattr(module, "__version__", "unknown")))


def make_logger(flavour: Flavour, sink=None, min_severity: str | None = None):
    """A logger that forwards messages at ``min_severity`` or worse to ``sink(sev, msg)``.

    ``min_severity`` defaults to the ``stn-deploy --verbose/--quiet`` level
    (``verbosity.tensorrt_severity``: WARNING unless changed).

    Every message is also kept in ``logger.messages`` so that failures can quote the
    builder's and the plugin creator's own words.
    """
    from stn_deploy import verbosity

    trt = flavour.trt
    threshold = getattr(trt.ILogger.Severity, min_severity or verbosity.tensorrt_severity())

    class _Logger(trt.ILogger):  # type: ignore[name-defined]  # the flavour's module, known at run time
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[tuple[str, str]] = []

        def log(self, severity, msg):  # noqa: D401 - TensorRT callback
            if severity <= threshold:
                name = severity.name
                self.messages.append((name, msg))
                if sink is not None:
                    sink(name, msg)

    return _Logger()


def load_plugin_library(flavour: Flavour, registry, path: Path | str) -> None:
    """Load our plugin library into ``registry`` (the builder's or the runtime's).

    Call it after a Builder or Runtime exists: before that, TensorRT's registry returns
    silently without loading anything (DESIGN.md).

    Raises:
        UserError: the file is missing or TensorRT cannot load it.
    """
    path = require_file(path, "plugin library", hint="build it with: stn-deploy plugins build")
    try:
        handle = registry.load_library(str(path))
    except Exception as exc:  # TensorRT raises plain RuntimeError/TypeError here
        raise UserError(f"{flavour.label} cannot load plugin library {path}: {exc}") from None
    if handle is None:
        raise UserError(f"{flavour.label} cannot load plugin library {path}")


def default_plugin_library() -> Path | None:
    """``kernels.library_path()`` when the kernels module is importable and the file exists."""
    try:
        from stn_deploy import kernels
    except ImportError:
        return None
    try:
        path = Path(kernels.library_path())
    except UserError:
        return None
    return path if path.is_file() else None


@functools.lru_cache(maxsize=1)
def cuda_driver() -> ctypes.CDLL | None:
    """The CUDA driver library, initialised and with at least one device; None otherwise. Asked
    of the driver itself (no torch, no TensorRT), once per process."""
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            cuda = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        ready = cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
        return cuda if ready else None
    return None


def gpu_available() -> bool:
    """Whether a CUDA device can be used: TensorRT cannot deserialise an engine without one
    (cudaError 35)."""
    return cuda_driver() is not None


def engine_flavour_from_header(head: bytes) -> str | None:
    """"tensorrt" or "rtx" from an engine's magic bytes; None when it is not an engine."""
    return ENGINE_MAGIC.get(head[:4])


def engine_version_from_header(head: bytes) -> tuple[int, int, int] | None:
    """(major, minor, patch) written in a TensorRT-RTX engine header (bytes 24..26).

    Read from engines built with TensorRT-RTX 1.7.1 (bytes ``01 07 01``); the layout is not
    documented, so callers treat a mismatch as a strong hint and the runtime as the judge.
    """
    if engine_flavour_from_header(head) != "rtx" or len(head) < 27:
        return None
    return head[24], head[25], head[26]
