"""Where an engine can run, and whether the plugin library's CUDA code can run there too.

An engine runs on a set of GPUs: TensorRT-RTX builds ahead of time for a list of compute
capabilities (``--compute-capability``; its default is sm80/86/89/120), full TensorRT for the
GPU it was built on. A plugin layer inside it runs our library's kernels, which exist only for
the architectures the library was compiled for: SASS for ``sm_XY`` runs on every GPU of
major X and minor >= Y (CUDA's binary compatibility), PTX for ``compute_Z`` is compiled by the
driver for any GPU of capability >= Z. A quick build (``STN_CUDA_ARCHS=90``) inside an RTX
engine therefore builds fine and fails at run time on sm80/86/89: :func:`check` says so before.

No TensorRT and no CUDA import here; the build GPU is asked of the driver through ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

#: TensorRT-RTX 1.7's targets when ``--compute-capability`` is not given (see ``trt.options``).
RTX_DEFAULT_TARGETS: tuple[int, ...] = (80, 86, 89, 120)
#: CUdevice_attribute values of cuda.h (CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR / _MINOR).
_CC_MAJOR, _CC_MINOR = 75, 76


def cc_number(name: str | int) -> int:
    """``"sm86"`` / ``"sm_86"`` / ``"86"`` / ``86`` -> 86.

    Raises:
        ValueError: not a compute capability.
    """
    m = re.fullmatch(r"(?:sm_?)?(\d{2,3})", str(name).strip().lower())
    if m is None:
        raise ValueError(f"not a compute capability: {name!r}")
    return int(m.group(1))


def cc_name(cc: int) -> str:
    return f"sm{cc}"


def library_code(architectures: Iterable[str]) -> tuple[frozenset[int], frozenset[int]]:
    """(SASS architectures, PTX architectures) of a library's CMake architecture list.

    CMake's syntax: ``86-real`` = SASS only, ``75-virtual`` = PTX only, a bare ``86`` = both.
    """
    sass: set[int] = set()
    ptx: set[int] = set()
    for item in architectures:
        item = item.strip()
        m = re.fullmatch(r"(\d{2,3})[a-z]?(?:-(real|virtual))?", item)
        if m is None:
            continue
        arch, kind = int(m.group(1)), m.group(2)
        if kind != "virtual":
            sass.add(arch)
        if kind != "real":
            ptx.add(arch)
    return frozenset(sass), frozenset(ptx)


def how_plugin_runs(cc: int, sass: Iterable[int], ptx: Iterable[int]) -> str | None:
    """How the library's kernels run on a GPU of capability ``cc``: "sass sm_XY",
    "ptx compute_Z (JIT)", or None when they cannot."""
    major, minor = divmod(cc, 10)
    fitting = [a for a in sass if a // 10 == major and a % 10 <= minor]
    if fitting:
        return f"sass sm_{max(fitting)}"
    jit = [a for a in ptx if a <= cc]
    if jit:
        return f"ptx compute_{max(jit)} (JIT)"
    return None


@dataclass(frozen=True)
class TargetCheck:
    """The engine's GPUs against the plugin library's code.

    Attributes:
        engine_targets: the GPUs the engine can run on ("sm86", ...); empty when unknown.
        source: where ``engine_targets`` come from ("--compute-capability", "TensorRT-RTX
            default", "build GPU").
        library_architectures: the library's CMake architecture list.
        plugin_runs: target -> how the plugin runs there ("sass sm_86", "ptx compute_75 (JIT)").
        plugin_missing: the targets where the plugin cannot run.
    """

    engine_targets: tuple[str, ...]
    source: str
    library_architectures: tuple[str, ...]
    plugin_runs: dict[str, str]
    plugin_missing: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.plugin_missing

    def warning(self) -> str | None:
        """One line for the user when the plugin cannot run on some of the engine's GPUs."""
        if self.ok:
            return None
        return (f"the plugin library has no code for {', '.join(self.plugin_missing)} "
                f"(built for {','.join(self.library_architectures) or 'nothing known'}), but the engine "
                f"targets {', '.join(self.engine_targets)} ({self.source}): its plugin layers fail there; "
                "rebuild the library for them (stn-deploy plugins build, without STN_CUDA_ARCHS) "
                "or build the engine for fewer GPUs (--compute-capability)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check(engine_targets: Sequence[int], source: str, architectures: Sequence[str]) -> TargetCheck:
    """Compare an engine's GPUs with a library's architectures (:func:`library_code`)."""
    sass, ptx = library_code(architectures)
    runs: dict[str, str] = {}
    missing: list[str] = []
    for cc in sorted(set(engine_targets)):
        how = how_plugin_runs(cc, sass, ptx)
        if how is None:
            missing.append(cc_name(cc))
        else:
            runs[cc_name(cc)] = how
    return TargetCheck(tuple(cc_name(c) for c in sorted(set(engine_targets))), source,
                       tuple(architectures), runs, tuple(missing))


@functools.lru_cache(maxsize=1)
def current_gpu_cc() -> int | None:
    """Compute capability of CUDA device 0 (e.g. 90), asked of the driver once per process (a
    plugin build asks twice: its doctor and its sidecar); None without one."""
    from stn_deploy.trt.flavour import cuda_driver

    cuda = cuda_driver()
    if cuda is None:
        return None
    device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    if (cuda.cuDeviceGet(ctypes.byref(device), 0) != 0
            or cuda.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, device) != 0
            or cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, device) != 0):
        return None
    return major.value * 10 + minor.value


def engine_targets(backend: str, compute_capabilities: Sequence[str]) -> tuple[list[int], str]:
    """(GPUs an engine of ``backend`` built with these ``--compute-capability`` values runs on,
    where that comes from). Full TensorRT: the build GPU (an empty list without one)."""
    if backend == "rtx":
        named = [c for c in compute_capabilities if c not in ("default", "current")]
        ccs = [cc_number(c) for c in named]
        if "current" in compute_capabilities:
            cc = current_gpu_cc()
            if cc is not None:
                ccs.append(cc)
        if ccs:
            return ccs, "--compute-capability"
        return list(RTX_DEFAULT_TARGETS), "TensorRT-RTX default"
    cc = current_gpu_cc()
    return ([cc] if cc is not None else []), "build GPU"


def check_library(engine_ccs: Sequence[int], source: str, library: str | None) -> TargetCheck | None:
    """:func:`check` against the architectures the library at ``library`` reports; None when the
    library cannot be read (not ours, or built before it reported its architectures)."""
    from stn_deploy import kernels
    from stn_deploy.errors import UserError

    try:
        info = kernels.build_info(None if library is None else Path(library))
    except (UserError, OSError):
        return None
    archs = info.get("architectures")
    if not archs:
        return None
    return check(engine_ccs, source, archs)
