"""ctypes binding of the plugin library's C kernel API (``plugins/common/stnKernelApi.h``).

The same ``libstn_deploy_plugins.so`` holds the TensorRT plugins ``STNGridSample`` /
``STNAffineGridSample`` and plain C entry points: a CPU reference (the sampling maths header
compiled for the host) and the CUDA launchers. This module calls them on numpy arrays or torch
tensors, so parity with ``torch.nn.functional.grid_sample`` is testable without TensorRT and the
CPU path of the toolkit (the ONNX Runtime custom op) can run the plugin's own maths.

CPU tensors and numpy arrays go to the CPU reference; CUDA tensors go to the CUDA launchers on
torch's current stream. torch is imported lazily (numpy inputs never import it).

Example:
    >>> from stn_deploy import kernels
    >>> out = kernels.grid_sample(x, grid, mode="bilinear", padding_mode="zeros")
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from enum import IntEnum
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from stn_deploy import schema
from stn_deploy.errors import UserError
from stn_deploy.io import require_file

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The CMake project of the plugins and kernels.
PLUGIN_SOURCE_DIR = REPO_ROOT / "plugins"
DEFAULT_BUILD_DIR = PLUGIN_SOURCE_DIR / "build"
LIBRARY_NAME = "libstn_deploy_plugins.so"
#: Environment variable that overrides the library path.
LIBRARY_ENV = "STN_DEPLOY_PLUGIN_LIBRARY"
#: Default CUDA architectures of a CUDA 13 build: SASS for every generation TensorRT users run
#: (Turing, Ampere, Ada, Hopper, Blackwell B200/GB200/B300, Thor, RTX 50), plus PTX of the lowest.
DEFAULT_CUDA_ARCHS: tuple[str, ...] = ("75", "80", "86", "89", "90", "100", "103", "110", "120")
#: The same for a CUDA 12 toolkit (Thor is sm_101 there; 101 needs 12.8, 103 needs 12.9).
DEFAULT_CUDA12_ARCHS: tuple[str, ...] = ("75", "80", "86", "89", "90", "100", "101", "103", "120")
#: Environment variable overriding the default architectures (e.g. ``90`` for a fast local build).
ARCHS_ENV = "STN_CUDA_ARCHS"
#: Where ``build_library(cuda_major=12)`` looks for a CUDA 12 toolkit first.
CUDA12_HOME_ENV = "STN_CUDA12_HOME"
#: C ABI version this module was written for (STN_ABI_VERSION).
ABI_VERSION = 1
#: The TensorRT 10.14 headers scripts/setup.sh fetches (kernel-lens wheel).
BUNDLED_TENSORRT_INCLUDE = REPO_ROOT / "third_party" / "tensorrt" / "include"
#: Environment variable naming an unpacked TensorRT tarball (its ``include/`` holds the headers).
TENSORRT_ROOT_ENV = "TENSORRT_ROOT"
#: Where TensorRT's Debian/RPM packages (libnvinfer-headers-dev, NGC containers) and the usual
#: tarball location put NvInferRuntime.h.
SYSTEM_TENSORRT_INCLUDES: tuple[Path, ...] = (
    Path("/usr/include/x86_64-linux-gnu"),
    Path("/usr/include/aarch64-linux-gnu"),
    Path("/usr/include"),
    Path("/usr/local/tensorrt/include"),
)
#: The oldest headers the plugins compile against (IPluginV3 arrived in TensorRT 10.0).
MIN_TENSORRT_HEADERS = (10, 0)

_DTYPE_CODES = {"float32": 0, "float16": 1, "bfloat16": 2}
_SEMANTICS = {"device": -1, "cuda": 0, "cpu": None}  # cpu: 1 (4-D) or 2 (5-D)


class _Desc(ctypes.Structure):
    """Mirror of ``StnSampleDesc`` (stnKernelApi.h)."""

    _fields_ = [
        ("rank", ctypes.c_int32),
        ("interpolation_mode", ctypes.c_int32),
        ("padding_mode", ctypes.c_int32),
        ("align_corners", ctypes.c_int32),
        ("transform", ctypes.c_int32),
        ("semantics", ctypes.c_int32),
        ("x_dtype", ctypes.c_int32),
        ("coord_dtype", ctypes.c_int32),
        ("n", ctypes.c_int64),
        ("c", ctypes.c_int64),
        ("in_d", ctypes.c_int64),
        ("in_h", ctypes.c_int64),
        ("in_w", ctypes.c_int64),
        ("out_d", ctypes.c_int64),
        ("out_h", ctypes.c_int64),
        ("out_w", ctypes.c_int64),
    ]


# ------------------------------------------------------------------------------- the library


def library_path() -> Path:
    """Path of ``libstn_deploy_plugins.so``.

    ``$STN_DEPLOY_PLUGIN_LIBRARY`` when set; else the library inside the installed package (what
    ``pip install`` of a wheel or sdist puts there); else the source tree's
    ``<repo>/plugins/build/libstn_deploy_plugins.so``, built by :func:`build_library`. The file may
    not exist yet: then the source tree's path where there are plugin sources, the package's otherwise.
    """
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser().resolve()
    packaged = Path(str(resources.files("stn_deploy") / LIBRARY_NAME))
    if packaged.is_file() or not _has_plugin_sources():
        return packaged
    return DEFAULT_BUILD_DIR / LIBRARY_NAME


def _has_plugin_sources() -> bool:
    """Whether this install sits in a source tree (a checkout, an editable install) that can build the library."""
    return (PLUGIN_SOURCE_DIR / "CMakeLists.txt").is_file()


def _cmake_archs(archs: Sequence[str] | str) -> str:
    """``["75", "86"]`` or ``"75;86"`` -> ``"75-real;86-real;75-virtual"`` (SASS each, PTX of the lowest,
    which every newer GPU can JIT)."""
    items = archs.replace(",", ";").split(";") if isinstance(archs, str) else list(archs)
    items = [str(a).strip() for a in items if str(a).strip()]
    if not items:
        raise UserError("no CUDA architecture given (e.g. --archs 75;86)")
    out: list[str] = []
    for a in items:
        base = a.split("-")[0]
        if not base.isdigit():
            raise UserError(f"bad CUDA architecture {a!r}: expected a number such as 86 (or 86-real / 86-virtual)")
        out.append(a if "-" in a else f"{a}-real")
    if not any(a.endswith("-virtual") for a in out):
        out.append(f"{min(int(a.split('-')[0]) for a in items)}-virtual")
    return ";".join(out)


def _nvcc_release(nvcc: str) -> tuple[int, int] | None:
    """(major, minor) of an nvcc, from ``nvcc --version`` ("release 12.9, V12.9.86")."""
    try:
        text = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def installed_tensorrt_cuda_major() -> int | None:
    """CUDA major of the installed TensorRT / TensorRT-RTX wheels (``*-cu12`` / ``*-cu13``), if any."""
    from importlib import metadata

    majors = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        m = re.match(r"tensorrt(?:-rtx)?-cu(\d+)", name)
        if m:
            majors.add(int(m.group(1)))
    return max(majors) if majors else None


def find_nvcc(cuda_major: int | None) -> tuple[str, tuple[int, int]]:
    """The nvcc of a CUDA major (None: the one on PATH) and its release.

    CUDA 12: ``$STN_CUDA12_HOME/bin/nvcc``, ``/usr/local/cuda-12*/bin/nvcc``, then PATH.

    Raises:
        UserError: no nvcc of that major. PyPI cannot supply one: ``nvidia-cuda-nvcc-cu12``
            (12.x) ships only ptxas, libnvvm and headers, not the nvcc driver, cicc, cudafe++,
            fatbinary or nvlink that compiling ``.cu`` files needs.
    """
    candidates: list[str] = []
    if cuda_major == 12:
        home = os.environ.get(CUDA12_HOME_ENV)
        if home:
            candidates.append(str(Path(home) / "bin" / "nvcc"))
        candidates += [str(p / "bin" / "nvcc") for p in sorted(Path("/usr/local").glob("cuda-12*"), reverse=True)]
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(on_path)
    for nvcc in candidates:
        if not Path(nvcc).exists():
            continue
        release = _nvcc_release(nvcc)
        if release and (cuda_major is None or release[0] == cuda_major):
            return nvcc, release
    if cuda_major == 12:
        raise UserError(
            f"no CUDA 12 toolkit found (looked in ${CUDA12_HOME_ENV}, /usr/local/cuda-12*, PATH); install CUDA 12.8+ "
            f"from NVIDIA and set {CUDA12_HOME_ENV}: PyPI's nvidia-cuda-nvcc-cu12 has only ptxas and libnvvm, "
            "not the nvcc, cicc, cudafe++ and fatbinary a .cu build needs")
    raise UserError(f"no nvcc for CUDA {cuda_major} found on PATH" if cuda_major else "nvcc not found on PATH")


def _default_archs(release: tuple[int, int]) -> tuple[str, ...]:
    env = os.environ.get(ARCHS_ENV, "").strip()
    if env:
        return tuple(a for a in env.replace(",", ";").split(";") if a.strip())
    if release[0] >= 13:
        return DEFAULT_CUDA_ARCHS
    drop = {"101"} if release < (12, 8) else set()
    drop |= {"103"} if release < (12, 9) else set()
    drop |= {"100", "120"} if release < (12, 8) else set()
    return tuple(a for a in DEFAULT_CUDA12_ARCHS if a not in drop)


def build_library(
    build_dir: Path | None = None,
    archs: Sequence[str] | str | None = None,
    jobs: int | None = None,
    tensorrt_include: Path | None = None,
    build_type: str = "Release",
    verbose: bool = False,
    cuda_major: int | None = None,
) -> Path:
    """Configure and build the plugin/kernel library with CMake.

    Args:
        build_dir: CMake build folder (default ``<repo>/plugins/build``).
        archs: CUDA architectures, e.g. ``["75", "86"]`` or ``"75;86"`` (default ``$STN_CUDA_ARCHS``,
            else every architecture the toolkit has of :data:`DEFAULT_CUDA_ARCHS` /
            :data:`DEFAULT_CUDA12_ARCHS`); SASS for each plus PTX of the lowest.
        cuda_major: CUDA toolkit major to build with (12 or 13; None: the installed TensorRT
            wheel's CUDA major, else the nvcc on PATH). The CUDA runtime is linked statically,
            so this sets the oldest driver the library runs on (13: r580, 12: r525).
        jobs: parallel build jobs (default: CPU count).
        tensorrt_include: folder with ``NvInferRuntime.h`` (default: found by :func:`find_tensorrt_include`:
            ``$TENSORRT_ROOT/include``, a system install, else the headers ``scripts/setup.sh`` fetched).
        build_type: CMake build type.
        verbose: stream CMake's output instead of capturing it.

    Returns:
        Path of the built ``libstn_deploy_plugins.so``.

    Raises:
        UserError: no plugin sources (a wheel install: the message says how to rebuild), cmake/nvcc
            missing or the build failed (one line; the log's last error line).
    """
    if not _has_plugin_sources():
        raise UserError(
            f"no plugin sources here: this stn-deploy was installed from a wheel, whose library is {library_path()}; "
            f"to build it for other GPUs, reinstall from the sources (a clone or the sdist): "
            f"{ARCHS_ENV}=86,90 pip install --force-reinstall --no-deps <source folder or sdist>")
    if shutil.which("cmake") is None:
        raise UserError("cmake not found on PATH; install CMake >= 3.24 to build the plugins")
    include_dir, _ = find_tensorrt_include(tensorrt_include)
    build_dir = Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR
    if cuda_major is None:
        cuda_major = installed_tensorrt_cuda_major()
    nvcc, release = find_nvcc(cuda_major)
    configure = [
        "cmake",
        "-S",
        str(PLUGIN_SOURCE_DIR),
        "-B",
        str(build_dir),
        f"-DCMAKE_BUILD_TYPE={build_type}",
        f"-DSTN_CUDA_ARCHITECTURES={_cmake_archs(archs if archs is not None else _default_archs(release))}",
        f"-DCMAKE_CUDA_COMPILER={nvcc}",  # CMake finds the toolkit (and its cudart) from it
        # Always passed: CMake caches it, so a build without --tensorrt-include after one with it
        # would otherwise keep the old headers.
        f"-DSTN_TENSORRT_INCLUDE_DIR={include_dir}",
    ]
    build = ["cmake", "--build", str(build_dir), "-j", str(jobs or os.cpu_count() or 2)]
    for step, cmd in (("configure", configure), ("build", build)):
        proc = subprocess.run(cmd, capture_output=not verbose, text=True)
        if proc.returncode != 0:
            log = (proc.stdout or "") + (proc.stderr or "")
            raise UserError(f"plugin {step} failed: {_last_error_line(log)} (rerun with --verbose for the full log)")
    path = build_dir / LIBRARY_NAME
    if not path.exists():
        raise UserError(f"the build finished but {path} is missing")
    return path


def tensorrt_header_version(include_dir: Path) -> tuple[int, int, int] | None:
    """(major, minor, patch) of the TensorRT headers in a folder (``NvInferVersion.h``), None if unreadable.

    10.x headers define ``TRT_MAJOR_ENTERPRISE`` and friends (older ones ``NV_TENSORRT_MAJOR``
    directly); both spellings are read.
    """
    try:
        text = (Path(include_dir) / "NvInferVersion.h").read_text(errors="replace")
    except OSError:
        return None
    parts = []
    for part in ("MAJOR", "MINOR", "PATCH"):
        m = (re.search(rf"#define\s+TRT_{part}_ENTERPRISE\s+(\d+)", text)
             or re.search(rf"#define\s+NV_TENSORRT_{part}\s+(\d+)", text))
        if m is None:
            return None
        parts.append(int(m.group(1)))
    return parts[0], parts[1], parts[2]


def find_tensorrt_include(given: Path | None = None) -> tuple[Path, tuple[int, int, int]]:
    """The TensorRT headers to build against and their version.

    Order: ``given`` (``--tensorrt-include``), ``$TENSORRT_ROOT/include`` (an unpacked tarball), a
    system install (:data:`SYSTEM_TENSORRT_INCLUDES`: Debian/RPM packages, NGC containers), then the
    TensorRT 10.14 headers scripts/setup.sh fetched. The user's own TensorRT wins over the bundled
    headers; the library calls every runtime through that runtime's own layout whichever headers it
    was built with (plugins/README.md).

    Raises:
        UserError: the named folder has no NvInferRuntime.h, its version cannot be read or is
            older than 10.0, or no headers were found at all.
    """
    def usable(folder: Path) -> bool:
        return (folder / "NvInferRuntime.h").is_file()

    if given is not None:
        folder = Path(given).expanduser().resolve()
        if not usable(folder):
            raise UserError(f"--tensorrt-include {folder}: no NvInferRuntime.h there (give the folder of "
                            "TensorRT's C++ headers, e.g. <TensorRT tarball>/include or /usr/include/x86_64-linux-gnu)")
        version = tensorrt_header_version(folder)
        if version is None:
            raise UserError(f"cannot read the TensorRT version from {folder / 'NvInferVersion.h'} "
                            "(TensorRT-RTX headers are not supported for building; use TensorRT 10 or 11 headers)")
        if version[:2] < MIN_TENSORRT_HEADERS:
            raise UserError(f"TensorRT headers {'.'.join(map(str, version))} in {folder}: the plugins need TensorRT "
                            "10.0 or newer headers (IPluginV3)")
        return folder, version
    root = os.environ.get(TENSORRT_ROOT_ENV)
    candidates = [Path(root) / "include"] if root else []
    candidates += [*SYSTEM_TENSORRT_INCLUDES, BUNDLED_TENSORRT_INCLUDE]
    for candidate in candidates:
        # A system TensorRT too old for IPluginV3 (8.x), or one whose version cannot be read, is
        # passed over, not an error.
        found = tensorrt_header_version(candidate) if usable(candidate) else None
        if found is not None and found[:2] >= MIN_TENSORRT_HEADERS:
            return candidate.resolve(), found
    raise UserError("no TensorRT 10+ headers found (looked in $TENSORRT_ROOT/include, "
                    f"{', '.join(map(str, SYSTEM_TENSORRT_INCLUDES))} and {BUNDLED_TENSORRT_INCLUDE}); "
                    "run scripts/setup.sh, which fetches them, or pass --tensorrt-include")


def _last_error_line(log: str) -> str:
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower():
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


_LOCK = threading.Lock()
_LIBS: dict[Path, ctypes.CDLL] = {}
_NO_TENSORRT_LOAD = "STN_DEPLOY_PLUGINS_LOAD_TENSORRT"


@contextlib.contextmanager
def no_tensorrt_load() -> Iterator[None]:
    """While loading the library for its kernel API or version only: keep its load-time
    registration from loading a TensorRT (pip's or by name; plugins/register.cpp); a TensorRT already
    loaded in the process is still used."""
    previous = os.environ.get(_NO_TENSORRT_LOAD)
    os.environ[_NO_TENSORRT_LOAD] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_NO_TENSORRT_LOAD, None)
        else:
            os.environ[_NO_TENSORRT_LOAD] = previous


def load_library(path: Path | None = None) -> ctypes.CDLL:
    """Load (once) the library and declare the C signatures.

    Raises:
        UserError: the library is missing or is not the expected ABI.
    """
    path = Path(path) if path is not None else library_path()
    with _LOCK:
        lib = _LIBS.get(path)
        if lib is not None:
            return lib
        require_file(path, "plugin library", hint="run `stn-deploy plugins build`")
        try:
            with no_tensorrt_load():
                lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise UserError(f"cannot load plugin library {path}: {exc}") from None
        try:
            for name in ("stn_grid_sample_cpu", "stn_affine_grid_sample_cpu"):
                fn = getattr(lib, name)
                fn.argtypes = [ctypes.POINTER(_Desc), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32]
                fn.restype = ctypes.c_int32
            for name in ("stn_grid_sample_cuda", "stn_affine_grid_sample_cuda"):
                fn = getattr(lib, name)
                fn.argtypes = [ctypes.POINTER(_Desc), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
                fn.restype = ctypes.c_int32
            lib.stn_validate_desc.argtypes = [ctypes.POINTER(_Desc), ctypes.c_int32]
            lib.stn_validate_desc.restype = ctypes.c_int32
            lib.stn_last_error.argtypes = []
            lib.stn_last_error.restype = ctypes.c_char_p
            lib.stn_abi_version.argtypes = []
            lib.stn_abi_version.restype = ctypes.c_int32
            lib.stn_library_version.argtypes = []
            lib.stn_library_version.restype = ctypes.c_char_p
        except AttributeError as exc:
            raise UserError(f"{path} is not a stn-deploy plugin library ({exc}); run `stn-deploy plugins build`") from None
        if lib.stn_abi_version() != ABI_VERSION:
            raise UserError(
                f"{path} has C ABI {lib.stn_abi_version()}, expected {ABI_VERSION}; run `stn-deploy plugins build`"
            )
        _LIBS[path] = lib
        return lib


def plugin_versions(path: Path | None = None) -> dict[str, list[str]]:
    """Plugin op -> versions its creators implement, from ``stn_library_version()``
    (text like "0.1.0 (STNGridSample 1, STNAffineGridSample 1)").

    Raises:
        UserError: the library is missing or is not ours (``load_library``).
    """
    text = load_library(path).stn_library_version().decode(errors="replace")
    inner = re.search(r"\((.*)\)", text)
    found: dict[str, list[str]] = {}
    for part in inner.group(1).split(",") if inner else []:
        bits = part.split()
        if len(bits) == 2:
            found.setdefault(bits[0], []).append(bits[1])
    return found


def build_info(path: Path | None = None) -> dict[str, Any]:
    """What the library was built with and needs: ``version``, ``cuda_runtime`` ("13.0"),
    ``min_driver`` ("580.65.06"), ``architectures`` (CMake syntax), ``driver_cuda`` (the
    installed driver's CUDA version, None without a driver), ``tensorrt_headers`` (the TensorRT
    headers it was compiled with, "10.14.1") and ``runtimes`` (the TensorRT runtimes whose
    interface layouts it calls through: "TensorRT 10", "TensorRT 11", "TensorRT-RTX 1").
    Libraries built before these entry points existed give None for them."""
    lib = load_library(path)

    def text(name: str) -> str | None:
        fn = getattr(lib, name, None)
        if fn is None:
            return None
        fn.restype = ctypes.c_char_p
        return fn().decode(errors="replace")

    def number(name: str) -> int | None:
        fn = getattr(lib, name, None)
        if fn is None:
            return None
        fn.restype = ctypes.c_int32
        return int(fn())

    def version(v: int | None) -> str | None:
        return f"{v // 1000}.{(v % 1000) // 10}" if v else None

    archs = text("stn_cuda_architectures")
    headers = number("stn_tensorrt_header_version")
    runtimes = text("stn_supported_runtimes")
    return {
        "path": str(Path(path) if path is not None else library_path()),
        "version": text("stn_library_version"),
        "cuda_runtime": version(number("stn_cuda_runtime_version")),
        "min_driver": text("stn_cuda_min_driver"),
        "architectures": archs.split(",") if archs else None,
        "driver_cuda": version(number("stn_cuda_driver_version")),
        "tensorrt_headers": f"{headers // 10000}.{headers // 100 % 100}.{headers % 100}" if headers else None,
        "runtimes": runtimes.split(",") if runtimes else None,
    }


# ------------------------------------------------------------------------------ array access


class _Array:
    """A contiguous numpy array or torch tensor seen through its data pointer."""

    def __init__(self, obj: Any, name: str):
        self.name = name
        self.is_torch = not isinstance(obj, np.ndarray)
        if self.is_torch:
            if not hasattr(obj, "data_ptr"):
                raise UserError(f"{name} must be a numpy array or a torch tensor, got {type(obj).__name__}")
            self.obj = obj.contiguous()
            self.dtype = str(self.obj.dtype).removeprefix("torch.")
            self.device = self.obj.device
            self.is_cuda = self.obj.is_cuda
            self.ptr = self.obj.data_ptr()
        else:
            self.obj = np.ascontiguousarray(obj)
            self.dtype = self.obj.dtype.name
            self.device = None
            self.is_cuda = False
            self.ptr = self.obj.ctypes.data
        self.shape = tuple(int(s) for s in self.obj.shape)

    @property
    def code(self) -> int:
        try:
            return _DTYPE_CODES[self.dtype]
        except KeyError:
            raise UserError(f"{self.name} has dtype {self.dtype}; supported: float32, float16, bfloat16") from None


def _enum(value: str | int, enum: type[IntEnum], from_name, what: str) -> int:
    """A mode given by name (``"bilinear"``) or by its plugin integer (``0``, as in ONNX attributes)."""
    if isinstance(value, str):
        return int(from_name(value))
    try:
        return int(enum(int(value)))
    except (TypeError, ValueError):
        raise UserError(f"unknown {what} {value!r}; choose from {', '.join(m.name.lower() for m in enum)}") from None


def _options(mode: str | int, padding_mode: str | int, align_corners: bool | int) -> tuple[int, int, int]:
    return (
        _enum(mode, schema.InterpolationMode, schema.interpolation_from_name, "interpolation mode"),
        _enum(padding_mode, schema.PaddingMode, schema.padding_from_name, "padding mode"),
        1 if align_corners else 0,
    )


def _semantics(semantics: str, rank: int) -> int:
    if semantics not in _SEMANTICS:
        raise UserError(f"unknown semantics {semantics!r}; choose from {', '.join(_SEMANTICS)}")
    code = _SEMANTICS[semantics]
    return (1 if rank == 4 else 2) if code is None else code


def _default_threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _run(fused: bool, x: _Array, coords: _Array, desc: _Desc, num_threads: int | None):
    lib = load_library()
    if x.is_torch != coords.is_torch:
        raise UserError(f"input and {coords.name} must both be numpy arrays or both torch tensors")
    if x.is_torch and x.device != coords.device:
        raise UserError(f"input is on {x.device} but {coords.name} is on {coords.device}")
    if lib.stn_validate_desc(ctypes.byref(desc), int(fused)) != 0:
        raise UserError(lib.stn_last_error().decode(errors="replace"))
    out_shape = (desc.n, desc.c) + ((desc.out_d,) if desc.rank == 5 else ()) + (desc.out_h, desc.out_w)
    out: Any
    if x.is_torch:
        import torch

        out = torch.empty(out_shape, dtype=x.obj.dtype, device=x.device)
        out_ptr = out.data_ptr()
    else:
        out = np.empty(out_shape, dtype=x.obj.dtype)
        out_ptr = out.ctypes.data
    if x.is_cuda:
        import torch

        stream = torch.cuda.current_stream(x.device).cuda_stream
        with torch.cuda.device(x.device):
            fn = lib.stn_affine_grid_sample_cuda if fused else lib.stn_grid_sample_cuda
            status = fn(ctypes.byref(desc), x.ptr, coords.ptr, out_ptr, stream)
    else:
        fn = lib.stn_affine_grid_sample_cpu if fused else lib.stn_grid_sample_cpu
        status = fn(ctypes.byref(desc), x.ptr, coords.ptr, out_ptr, num_threads or _default_threads())
    if status != 0:
        raise UserError(lib.stn_last_error().decode(errors="replace"))
    return out


# ---------------------------------------------------------------------------------- the ops


def grid_sample(
    input: Any,
    grid: Any,
    mode: str | int = "bilinear",
    padding_mode: str | int = "zeros",
    align_corners: bool = False,
    *,
    semantics: str = "device",
    num_threads: int | None = None,
):
    """``torch.nn.functional.grid_sample`` through the plugin library.

    Args:
        input: X, [N, C, H, W] or [N, C, D, H, W]; float32, float16 or bfloat16 (numpy: float32/float16).
        grid: [N, Ho, Wo, 2] or [N, Do, Ho, Wo, 3]; float32 or the dtype of ``input``.
        mode: ``bilinear``, ``nearest`` or ``bicubic`` (4-D only), or the plugin integer 0/1/2.
        padding_mode: ``zeros``, ``border`` or ``reflection``, or 0/1/2.
        align_corners: as PyTorch (default False).
        semantics: non-finite coordinates as PyTorch on ``device`` (default: the device of the
            data), or as PyTorch's ``cuda`` / ``cpu`` kernel (e.g. to predict a TensorRT engine on the CPU).
        num_threads: CPU threads (default: CPU count, at most 8).

    Returns:
        The output, same type (numpy/torch), device and dtype as ``input``.

    Raises:
        UserError: bad shapes/dtypes/names, or the library is missing.
    """
    x = _Array(input, "input")
    g = _Array(grid, "grid")
    rank = len(x.shape)
    if rank not in (4, 5):
        raise UserError(f"input must be 4-D [N,C,H,W] or 5-D [N,C,D,H,W], got shape {list(x.shape)}")
    if len(g.shape) != rank or g.shape[-1] != rank - 2 or g.shape[0] != x.shape[0]:
        want = "[N,Ho,Wo,2]" if rank == 4 else "[N,Do,Ho,Wo,3]"
        raise UserError(f"grid must be {want} with N={x.shape[0]}, got shape {list(g.shape)}")
    if g.dtype not in ("float32", x.dtype):
        raise UserError(f"grid has dtype {g.dtype}; supported: float32 or the dtype of input ({x.dtype})")
    im, pm, ac = _options(mode, padding_mode, align_corners)
    spatial_in = x.shape[2:] if rank == 5 else (1,) + x.shape[2:]
    spatial_out = g.shape[1:-1] if rank == 5 else (1,) + g.shape[1:-1]
    desc = _Desc(
        rank, im, pm, ac, 0, _semantics(semantics, rank), x.code, g.code,
        x.shape[0], x.shape[1], *spatial_in, *spatial_out,
    )  # fmt: skip
    return _run(False, x, g, desc, num_threads)


def affine_grid_sample(
    input: Any,
    theta: Any,
    size: Sequence[int],
    mode: str | int = "bilinear",
    padding_mode: str | int = "zeros",
    align_corners: bool = False,
    *,
    semantics: str = "device",
    num_threads: int | None = None,
):
    """``grid_sample(input, affine_grid(theta, [N, C, *size]))`` fused, through the plugin library.

    The transform is inferred from theta: [N,2,3] 2-D affine, [N,3,3] projective (homogeneous
    divide: ``(x', y', w) = theta @ (x, y, 1)``, sample at ``(x'/w, y'/w)``), [N,3,4] 3-D affine
    (5-D input).

    Args:
        input: X, [N, C, H, W] or [N, C, D, H, W].
        theta: the transform, float32 or the dtype of ``input``.
        size: output spatial size (Ho, Wo) or (Do, Ho, Wo).
        mode, padding_mode, align_corners, semantics, num_threads: as :func:`grid_sample`.

    Returns:
        [N, C, *size], same type, device and dtype as ``input``.
    """
    x = _Array(input, "input")
    t = _Array(theta, "theta")
    rank = len(x.shape)
    if rank not in (4, 5):
        raise UserError(f"input must be 4-D [N,C,H,W] or 5-D [N,C,D,H,W], got shape {list(x.shape)}")
    size = tuple(int(s) for s in size)
    if len(size) != rank - 2 or any(s < 1 for s in size):
        raise UserError(f"size must be {rank - 2} positive integers for a {rank}-D input, got {list(size)}")
    wanted = {4: {(2, 3): 0, (3, 3): 1}, 5: {(3, 4): 0}}[rank]
    if len(t.shape) != 3 or t.shape[0] != x.shape[0] or t.shape[1:] not in wanted:
        shapes = " or ".join(f"[N,{r},{c}]" for r, c in wanted)
        raise UserError(f"theta must be {shapes} with N={x.shape[0]} for a {rank}-D input, got {list(t.shape)}")
    if t.dtype not in ("float32", x.dtype):
        raise UserError(f"theta has dtype {t.dtype}; supported: float32 or the dtype of input ({x.dtype})")
    im, pm, ac = _options(mode, padding_mode, align_corners)
    spatial_in = x.shape[2:] if rank == 5 else (1,) + x.shape[2:]
    spatial_out = size if rank == 5 else (1,) + size
    desc = _Desc(
        rank, im, pm, ac, wanted[t.shape[1:]], _semantics(semantics, rank), x.code, t.code,
        x.shape[0], x.shape[1], *spatial_in, *spatial_out,
    )  # fmt: skip
    return _run(True, x, t, desc, num_threads)
