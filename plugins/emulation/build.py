"""Build the CUDA host emulation test driver (``stn_emulation_test``) under ASan + UBSan.

The plugin's ``.cu`` launchers and kernels are compiled *as written* by the host C++ compiler,
with ``cudaHostShim.h`` force-included, together with the CPU reference they are checked
against. No GPU, no nvcc: only CUDA's headers (for the host ``__half`` / ``dim3`` types).

    python plugins/emulation/build.py OUT_DIR [-Dmacro ...]    # prints the driver's path

Objects are cached in OUT_DIR by a hash of their source text and flags, so a rebuild after
one edit (or one injected mutation) recompiles one file. Used by tests/test_cuda_emulation.py
and plugins/emulation/mutations.py.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[1]

#: Compiled with the shim (the CUDA sources and the emulated runtime / driver).
EMULATED_SOURCES = (
    "gridSamplePlugin/gridSampleKernel.cu",
    "affineGridSamplePlugin/affineGridSampleKernel.cu",
    "emulation/cudaHostRuntime.cpp",
    "emulation/emulationTest.cpp",
)
#: Compiled as in the plugin library (the CPU reference and what it shares).
HOST_SOURCES = (
    "common/cpuReference.cpp",
    "common/sampleDesc.cpp",
    "common/cudaBuildInfo.cpp",
)
INCLUDE_DIRS = ("common", "gridSamplePlugin", "affineGridSamplePlugin", "emulation")
SANITIZERS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer")
# -ffp-contract=off: no FMA contraction on either side (the default on aarch64 would fuse).
CXXFLAGS = ("-std=c++17", "-O1", "-g1", "-ffp-contract=off", "-Wall", "-Wextra", "-Wno-unused-parameter",
            '-DSTN_CUDA_ARCHS_TEXT="host-emulation"')


class BuildError(RuntimeError):
    """The compiler is missing or a source failed to compile (message: the compiler's output)."""


def cuda_include_dir() -> Path | None:
    """The folder holding ``cuda_runtime_api.h``: $CUDA_HOME / $CUDA_PATH, else /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(Path(nvcc).resolve().parents[1]))
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_runtime_api.h").exists():
            return Path(c) / "include"
    return None


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")


def _headers_digest(root: Path) -> str:
    """Digest of every header in the folders the sources include from (``root/*/`` and the shim)."""
    h = hashlib.sha256()
    for header in sorted(p for pattern in ("*/*.h", "*/*.cuh") for p in root.glob(pattern)):
        h.update(str(header.relative_to(root)).encode() + b"\0" + header.read_bytes())
    return h.hexdigest()


_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _include_closure(rel: str, emulated: bool) -> set[str]:
    """The plugin files a source includes, directly or not, and itself (paths relative to plugins/),
    resolved as the compiler does: beside the including file, then the -I folders."""
    seen: set[str] = set()
    todo = [rel, *(["emulation/cudaHostShim.h"] if emulated else [])]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in _INCLUDE.findall((PLUGINS / current).read_text()):
            for folder in (str(Path(current).parent), *INCLUDE_DIRS):
                candidate = (Path(folder) / name).as_posix()
                if (PLUGINS / candidate).is_file():
                    todo.append(candidate)
                    break
    return seen


def _compile(cxx: str, root: Path, rel: str, obj_dir: Path, flags: list[str]) -> Path:
    """Compile ``root/rel`` unless cached (the key: its text, the flags - which name ``root`` -, the
    compiler and every header under ``root``, so a header change never reuses an object)."""
    src = root / rel
    key = hashlib.sha256((src.read_text() + "\0" + " ".join(flags) + "\0" + cxx + "\0" + _headers_digest(root))
                         .encode()).hexdigest()[:16]
    obj = obj_dir / f"{src.stem}-{key}.o"
    if obj.exists():
        return obj
    tmp = f"{obj}.{os.getpid()}.{threading.get_ident()}.tmp"  # concurrent builds may share the cache
    cmd = [cxx, *flags, "-c", "-o", tmp, *(["-x", "c++"] if src.suffix == ".cu" else []), str(src)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{rel}: {proc.stderr.strip()[-4000:]}")
    os.replace(tmp, obj)
    return obj


def build(out_dir: Path, defines: tuple[str, ...] = (), replacements: dict[str, str] | None = None,
          jobs: int = 2) -> Path:
    """Build ``stn_emulation_test`` in ``out_dir``; returns its path.

    Args:
        out_dir: build folder (object cache and the driver).
        defines: extra ``-D`` flags for every source.
        replacements: path (relative to ``plugins/``) of a source or a header ->
            text to compile instead of the file (the mutation check's mutants). The driver is
            named after the hash of its objects, so each mutant gets its own.
        jobs: parallel compiler processes.

    Raises:
        BuildError: no compiler or no CUDA headers, or a compile/link error.
    """
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler (g++) on PATH")
    cuda_inc = cuda_include_dir()
    if cuda_inc is None:
        raise BuildError("CUDA headers (cuda_runtime_api.h) not found: set CUDA_HOME")
    replacements = replacements or {}
    out_dir = Path(out_dir)
    obj_dir = out_dir / "obj"
    obj_dir.mkdir(parents=True, exist_ok=True)
    root = PLUGINS
    if replacements:
        # A mutant: a copy of the source folders with the replacements applied, compiled from there,
        # so that every #include "..." - also one resolved beside the including file, which comes
        # before any -I folder - sees the mutated file.
        tag = hashlib.sha256(repr(sorted(replacements.items())).encode()).hexdigest()[:12]
        root = out_dir / f"tree-{tag}"
        if not root.exists():
            tmp_root = Path(f"{root}.{os.getpid()}.{threading.get_ident()}.tmp")
            for folder in INCLUDE_DIRS:
                shutil.copytree(PLUGINS / folder, tmp_root / folder, dirs_exist_ok=True)
            for rel, text in replacements.items():
                if not (PLUGINS / rel).is_file():
                    raise BuildError(f"replacement for {rel}: no such source")
                (tmp_root / rel).write_text(text)
            try:
                os.replace(tmp_root, root)
            except OSError:  # a concurrent build made the same tree
                shutil.rmtree(tmp_root, ignore_errors=True)

    def job(rel: str, emulated: bool) -> tuple[Path, str, list[str]]:
        # A source compiles from the mutant's tree when it or a file it includes is replaced, else
        # from plugins/ (its object then cached across mutants).
        tree = root if _include_closure(rel, emulated) & replacements.keys() else PLUGINS
        flags = [*CXXFLAGS, *SANITIZERS, *defines, *(f"-I{tree / d}" for d in INCLUDE_DIRS), "-isystem", str(cuda_inc)]
        if emulated:
            flags += ["-DSTN_CUDA_HOST_EMULATION=1", "-include", str(tree / "emulation" / "cudaHostShim.h")]
        return tree, rel, flags

    work = [job(rel, True) for rel in EMULATED_SOURCES] + [job(rel, False) for rel in HOST_SOURCES]
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_compile, cxx, tree, rel, obj_dir, flags) for tree, rel, flags in work]
        objects = [f.result() for f in futures]
    tag = hashlib.sha256("".join(sorted(o.name for o in objects)).encode()).hexdigest()[:12]
    exe = out_dir / f"stn_emulation_test-{tag}"
    if not exe.exists():
        tmp = f"{exe}.{os.getpid()}.{threading.get_ident()}.tmp"
        proc = subprocess.run([cxx, *SANITIZERS, "-o", tmp, *map(str, objects), "-lpthread"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"link: {proc.stderr.strip()[-4000:]}")
        os.replace(tmp, exe)
    return exe


def sanitizer_env() -> dict[str, str]:
    """Environment for running the driver: fail on the first report, no leak check noise."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = "abort_on_error=0:halt_on_error=1:detect_leaks=1:allocator_may_return_null=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1"
    return env


if __name__ == "__main__":
    usage = "usage: build.py OUT_DIR [-Dmacro ...]"
    if sys.argv[1:2] in (["-h"], ["--help"]):
        print(usage)
        sys.exit(0)
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):  # an option is not an output folder
        print(f"error: no output folder given\n{usage}", file=sys.stderr)
        sys.exit(2)
    try:
        print(build(Path(sys.argv[1]), tuple(sys.argv[2:])))
    except BuildError as exc:
        sys.exit(f"error: {exc}")
