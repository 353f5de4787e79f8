"""The GPU check: from a bare GPU machine to result files in one command (``scripts/gpu-check.sh``).

Steps, each a child process with its own time limit, all inside one wall budget (default
300 s, so that a rerun fits in the device time):

    environment  GPU, driver, CUDA, torch, nvcc, ncu, cmake (nvidia-smi, a torch probe)
    wheels       install the wheels carried in .whl/ (scripts/gpu-wheels.sh) into /tmp/site
    build        the plugin/kernel library for sm_90 only, all cores (the library carried in
                 .whl/prebuilt/ if the build fails)
    parity       MAIN: the kernel parity tests (``pytest -m gpu`` of tests/test_kernels.py and
                 tests/test_kernels_cuda.py): the CUDA kernels against PyTorch on CUDA
    sampler      MAIN: ``benchmarks/sampler.py``: the GPU issue's cases against a copy of the same
                 bytes, torch eager and torch.compile, the static prediction beside each
    profile      optional: Nsight Compute on the main case's fused kernel
    gpu-tests    optional: the other ``gpu`` tests (exports with the machine's torch, engines)

Nothing measured is lost on the way: pytest appends every test's outcome to a JSON-lines file
as it happens (``benchmarks/pytest_progress.py``), the sampler rewrites its JSON after every
case, children write straight into the log, and the summary is rewritten before and after
every step. A watchdog kills a test or a sampler case that stops making progress (a kernel
hung inside a CUDA call cannot be interrupted from within); a test or case that hangs, crashes
its process or leaves CUDA unusable (a sticky error such as an illegal address) is recorded
where it happened, and the rest runs on in a fresh process. SIGTERM or SIGINT at any point
(the GPU machine's runner at its time limit) leaves the summary with ``complete: false`` and
the reason.

Exit code 0 when the main results were measured (every kernel parity test has an outcome; the
main sampler cases have rows), whatever the optional steps did; 1 when a main result is
missing (a rerun can help); 2 for bad arguments.

Result files (at most 8, each under 16 MiB) go to ``--out`` or ``$OUT``:
``gpu-check-<gpu>.json`` (device, versions, every step, parity, the sampler table, the targets,
the profile), ``gpu-check-<gpu>.log`` (every step's output), ``sampler-<gpu>.json/.png``,
``parity-<gpu>.jsonl`` and ``gpu-tests-<gpu>.jsonl`` (per test), ``ncu-<gpu>.csv`` and
``ncu-<gpu>.ncu-rep``.

``--dry-run`` runs what needs no CUDA here (arguments, the wheel list and, where .whl/ exists,
its install into a temporary folder, the plan of every command, the sampler's report and plot
on synthetic numbers, the summary and its targets), names every file ``*-dry-run*`` and marks
it ``dry_run: true``. The driver imports only the standard library (and stn_deploy.io), so
it runs before the wheels are installed and a hung CUDA call cannot hang it.

Simulations (``tests/test_gpu_check.py``; a real run sets none of these):
``STN_GPU_CHECK_SYNTHETIC_SAMPLER=1`` runs the sampler on made-up timings,
``STN_GPU_CHECK_PARITY_TESTS`` replaces the parity selection (space-separated pytest
arguments), ``STN_GPU_CHECK_TEST_LIMIT_S`` / ``STN_GPU_CHECK_STALL_S`` shorten the watchdog's
limits, and the sampler's ``STN_SAMPLER_FAULT`` injects a fault into a synthetic case.

Usage:
    scripts/gpu-check.sh                       # on the GPU machine: everything, into $OUT
    scripts/gpu-check.sh --dry-run --out /tmp/gpu-dry
    scripts/gpu-check.sh --only environment,build,parity --budget-s 200
"""

from __future__ import annotations

import argparse
import collections
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from stn_deploy.errors import UserError  # noqa: E402
from stn_deploy.io import write_json  # noqa: E402

#: name -> the most seconds the step may take (less when the wall budget has less left).
STEP_LIMITS_S: dict[str, float] = {
    "environment": 30, "wheels": 40, "build": 150, "parity": 100, "sampler": 180, "profile": 60, "gpu-tests": 45,
}
STEPS = tuple(STEP_LIMITS_S)
#: Seconds kept back for each later step, so that a slow step leaves the later ones something
#: (none for the last, optional step: it runs on what is left).
STEP_FLOORS_S: dict[str, float] = {
    "environment": 10, "wheels": 10, "build": 45, "parity": 35, "sampler": 75, "profile": 30, "gpu-tests": 0,
}
#: The steps whose results the run is for: the exit code says whether they were measured.
MAIN_STEPS = ("parity", "sampler")
DEFAULT_BUDGET_S = 300.0
#: Kept back from the budget for writing the summary.
RESERVE_S = 8.0
#: A step that would get less than this is skipped rather than started.
MIN_STEP_S = 10.0
#: The device tool brings back at most this many files, each under this size.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
#: The kernel parity tests (the MAIN parity step), and the other gpu tests (optional).
PARITY_TESTS = ("tests/test_kernels.py", "tests/test_kernels_cuda.py")
OTHER_GPU_TESTS = ("tests", *(f"--ignore={t}" for t in PARITY_TESTS))
#: A test running longer than this is killed as hung (a parity test takes well under a second;
#: the first one also initialises CUDA and loads the library).
TEST_LIMIT_S = 30.0
#: A sampler case with no progress for this long is killed as hung (a cold torch.compile of
#: the first case takes tens of seconds).
SAMPLER_STALL_S = 90.0
#: Fresh processes a step may start after a hang, a crash or a lost CUDA context.
MAX_RESTARTS = 4
#: The sampler's exit code when a sticky CUDA error left its context unusable (sampler.py).
SAMPLER_CONTEXT_LOST = 3
#: The sampler's implementations (sampler.py's IMPLS).
SAMPLER_IMPLS = ("copy", "plugin-fused", "plugin-grid", "torch-eager", "torch-compile", "ort")
#: Seconds of the sampler step's limit kept for its last case, the plot and the report.
SAMPLER_MARGIN_S = 20.0
#: How often a running child is checked on (watchdog, limit).
POLL_S = 0.25
WHEEL_LIST = REPO / "scripts" / "gpu-wheels.txt"
#: What the GPU machine's pip accepts (CPython 3.12 on x86-64 Linux, glibc 2.39).
GPU_MACHINE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                         "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64")
CUDA_ARCH = "90"
#: The fused kernel of the main case, for Nsight Compute's filter.
PROFILE_KERNEL = "regex:affineGridSample"
PROFILE_SECTIONS = ("SpeedOfLight", "Occupancy", "LaunchStats", "ComputeWorkloadAnalysis", "MemoryWorkloadAnalysis")
#: Nsight Compute's error when the driver withholds the performance counters from this user.
NCU_NO_PERMISSION = "ERR_NVGPUCTRPERM"
#: Nsight Compute metrics the summary names (when the sections above collected them).
PROFILE_METRICS = {
    "duration": "gpu__time_duration.sum",
    "dram_throughput_pct_of_peak": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram_bytes_per_second": "dram__bytes.sum.per_second",
    "dram_bytes_read": "dram__bytes_read.sum",
    "dram_bytes_write": "dram__bytes_write.sum",
    "memory_throughput_pct_of_peak": "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
    "sm_throughput_pct_of_peak": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "issue_slots_busy_pct": "sm__inst_issued.avg.pct_of_peak_sustained_active",
    "issue_active_pct": "smsp__issue_active.avg.pct_of_peak_sustained_active",
    "achieved_occupancy_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "theoretical_occupancy_pct": "sm__maximum_warps_per_active_cycle_pct",
    "registers_per_thread": "launch__registers_per_thread",
    "block_size": "launch__block_size",
    "grid_size": "launch__grid_size",
    "l2_hit_rate_pct": "lts__t_sector_hit_rate.pct",
    "l1_hit_rate_pct": "l1tex__t_sector_hit_rate.pct",
}
#: The GPU issue's targets, on the main case (64x3x224x224 -> 224^2, affine, bilinear).
MAIN_CASE = "imagenet"
TARGETS = (
    ("fp16", "plugin_fraction_of_copy", 0.85, "fused affine bilinear fp16 >= 85 % of the copy's GB/s"),
    ("fp32", "plugin_speedup_vs_torch_eager", 2.0, ">= 2x torch eager in fp32"),
    ("fp16", "plugin_speedup_vs_torch_eager", 3.0, ">= 3x torch eager in fp16"),
    ("fp32", "plugin_speedup_vs_torch_compile", 1.0, "faster than torch.compile in fp32"),
    ("fp16", "plugin_speedup_vs_torch_compile", 1.0, "faster than torch.compile in fp16"),
)
#: The sampler cases whose rows make the sampler's main result (the targets are on them).
MAIN_SAMPLER_CASES = tuple((MAIN_CASE, dtype, "bilinear") for dtype in ("fp32", "fp16"))


@dataclass
class Step:
    """What one step did: the summary's ``steps[]`` row."""

    name: str
    # ok | failed | timeout | unavailable (expected on some machines) | interrupted | skipped | planned (dry run)
    status: str = "pending"
    seconds: float = 0.0
    limit_s: float = 0.0
    commands: list[str] = field(default_factory=list)
    reason: str | None = None
    tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 1), "limit_s": round(self.limit_s),
                "commands": self.commands, "reason": self.reason, "tail": self.tail}


@dataclass(frozen=True)
class Ran:
    """How a child process ended: its exit code (None when killed), its output, and who killed it
    (``"limit"``: the step's time; ``"watchdog"``: no progress) and why."""

    code: int | None
    text: str
    killed_by: str | None = None
    why: str | None = None


class Interrupted(Exception):
    """SIGTERM or SIGINT reached the driver: stop, keep everything, say why."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} received")


def _raise_interrupted(signum: int, frame: Any) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):  # a second signal must not cut the summary's writing
        signal.signal(sig, signal.SIG_IGN)
    raise Interrupted(signum)


class Check:
    """One run of the GPU check: the budget, the log, the child processes' environment."""

    def __init__(self, out: Path, dry_run: bool, budget_s: float, wheels: Path, site: Path, build_dir: Path,
                 jobs: int, python: str) -> None:
        self.out = out
        self.dry_run = dry_run
        self.budget_s = budget_s
        self.wheels = wheels
        self.site = site
        self.build_dir = build_dir
        self.jobs = jobs
        self.python = python
        self.started = time.monotonic()
        self.selected: tuple[str, ...] = STEPS
        self.step_started: float | None = None
        self.work = Path(tempfile.mkdtemp(prefix="stn-gpu-check-"))
        self.slug = "dry-run" if dry_run else "gpu"
        self.recent: collections.deque[str] = collections.deque(maxlen=40)  # for a failed step's tail
        self.log_path = out / f"gpu-check-{self.slug}.log"
        # Unbuffered, appended: every line is on disk at once, and the children write into it too.
        self.log_file = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 (open for the whole run)
        self.library: dict[str, Any] = {}
        self.results: dict[str, Any] = {}
        self.synthetic_sampler = dry_run or os.environ.get("STN_GPU_CHECK_SYNTHETIC_SAMPLER") == "1"
        self.test_limit_s = float(os.environ.get("STN_GPU_CHECK_TEST_LIMIT_S") or TEST_LIMIT_S)
        self.stall_s = float(os.environ.get("STN_GPU_CHECK_STALL_S") or SAMPLER_STALL_S)
        self.env = dict(os.environ)
        self.env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg")
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        cuda_bin = Path("/usr/local/cuda/bin")
        if shutil.which("nvcc") is None and (cuda_bin / "nvcc").is_file():  # CMake finds nvcc on PATH
            self.env["PATH"] = f"{cuda_bin}{os.pathsep}{self.env.get('PATH', '')}"
            os.environ["PATH"] = self.env["PATH"]

    # ------------------------------------------------------------------ time and processes

    def remaining(self) -> float:
        return self.budget_s - (time.monotonic() - self.started) - RESERVE_S

    def limit(self, name: str) -> float:
        """Seconds the step ``name`` may still take: its own limit (from its start), the wall budget
        less the floors of the steps after it, and at least MIN_STEP_S while the budget lasts."""
        later = STEPS[STEPS.index(name) + 1:]
        kept_back = sum(STEP_FLOORS_S[s] for s in later if s in self.selected)
        own = STEP_LIMITS_S[name] if self.step_started is None else STEP_LIMITS_S[name] - (time.monotonic() - self.step_started)
        return max(min(own, self.remaining() - kept_back), min(MIN_STEP_S, self.remaining()))

    def log(self, text: str) -> None:
        text = text if text.endswith("\n") else text + "\n"
        self.recent.append(text)
        self.log_file.write(text.encode(errors="replace"))

    def rename_log(self, slug: str) -> None:
        """The log and the summary take the GPU's name once the environment step knows it."""
        target = self.out / f"gpu-check-{slug}.log"
        if target != self.log_path:
            os.replace(self.log_path, target)  # the open file follows its name
            self.log_path = target
            summary = self.out / f"gpu-check-{self.slug}.json"
            if summary.is_file():
                os.replace(summary, self.out / f"gpu-check-{slug}.json")
        self.slug = slug

    def run(self, step: Step, cmd: list[str], timeout: float, *, env: dict | None = None,
            stdout_path: Path | None = None, watchdog: Callable[[], str | None] | None = None) -> Ran:
        """Run ``cmd`` with a time limit; its output goes straight into the log (and ``stdout_path``).

        ``watchdog`` is asked every POLL_S seconds: a reason to kill the child, or None. The child
        gets its own process group, not its own session, so that nothing it starts outlives the
        check; on SIGTERM / SIGINT to the driver the child's group is stopped before ``Interrupted``
        goes on up.
        """
        shown = " ".join(cmd)
        step.commands.append(shown)
        self.log(f"$ {shown}")
        sink = open(stdout_path, "wb") if stdout_path is not None else self.log_file  # noqa: SIM115
        start = self.log_path.stat().st_size
        try:
            try:
                proc = subprocess.Popen(cmd, cwd=REPO, env=env or self.env, stdout=sink, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, process_group=0)
            except OSError as exc:
                self.log(f"cannot start: {exc}")
                return Ran(127, f"cannot start {cmd[0]}: {exc.strerror or exc}")
            deadline = time.monotonic() + max(1.0, timeout)
            killed_by = why = None
            try:
                while True:
                    try:
                        code: int | None = proc.wait(timeout=POLL_S)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    if time.monotonic() >= deadline:
                        killed_by, why = "limit", f"ran past its limit of {timeout:.0f} s"
                    elif watchdog is not None and (reason := watchdog()):
                        killed_by, why = "watchdog", reason
                    if killed_by:
                        _kill_group(proc)
                        code = None
                        break
            except BaseException:  # Interrupted: the child's group goes first
                _kill_group(proc)
                raise
        finally:
            if stdout_path is not None:
                sink.close()
        if stdout_path is not None:
            text = stdout_path.read_text(errors="replace")
            self.log(text)
        else:
            with open(self.log_path, "rb") as log:
                log.seek(start)
                text = log.read().decode(errors="replace")
            self.recent.append(text[-2000:])
        self.log(f"[exit {code}]" if killed_by is None else f"[killed: {why}]")
        return Ran(code, text, killed_by, why)
    @staticmethod
    def _ran(ran: Ran) -> tuple[int | None, str]:
        return ran.code, ran.text

    # ------------------------------------------------------------------------- the steps

    def environment(self, step: Step) -> dict[str, Any]:
        commit_file = self.wheels / "COMMIT"  # written by scripts/gpu-wheels.sh, for a copy without .git
        info: dict[str, Any] = {"python_driver": sys.version.split()[0], "repo_commit": _git_commit() or (
            " ".join(commit_file.read_text().split()) if commit_file.is_file() else None)}
        probes = {
            "nvidia_smi": ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            # Apart: an unknown field fails the whole query, and the driver version must not go with it.
            "nvidia_smi_clocks": ["nvidia-smi", "--query-gpu=clocks.sm,clocks.max.sm,clocks.mem,power.limit,"
                                                "persistence_mode", "--format=csv"],
            "nvcc": ["nvcc", "--version"],
            "ncu": ["ncu", "--version"],
            "cmake": ["cmake", "--version"],
            "ninja": ["ninja", "--version"],
        }
        for key, cmd in probes.items():
            if shutil.which(cmd[0]) is None:
                info[key] = None
                continue
            code, text = self._ran(self.run(step, cmd, min(15.0, self.limit("environment"))))
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            info[key] = _version_line(key, lines) if code == 0 and lines else f"failed: {text[-200:]}"
        code, text = self._ran(self.run(step, [self.python, "-c", _TORCH_PROBE], max(5.0, self.limit("environment"))))
        step.commands[-1] = f"{self.python} -c <torch probe: version, CUDA, device properties, one kernel>"
        torch_info = _last_json_line(text)
        if code == 0 and torch_info is not None:
            info["torch"] = torch_info
        else:
            info["torch"] = {"error": text.strip().splitlines()[-1][:300] if text.strip() else f"exit {code}"}
        gpu = (info.get("torch") or {}).get("gpu")
        if gpu and not self.dry_run:
            self.rename_log(gpu_slug(gpu))
        if not self.dry_run and not (info.get("torch") or {}).get("cuda"):
            step.status, step.reason = "failed", "torch sees no CUDA GPU"
        return info

    def wheels_step(self, step: Step) -> dict[str, Any]:
        wanted = read_wheel_list(WHEEL_LIST)
        found = sorted(p.name for p in self.wheels.glob("*.whl")) if self.wheels.is_dir() else []
        missing = [spec for spec in wanted if not any(_wheel_matches(name, spec) for name in found)]
        info: dict[str, Any] = {"wanted": wanted, "found": found, "missing": missing, "folder": str(self.wheels),
                                "tensorrt_include": str(self.tensorrt_include() or "absent"),
                                "prebuilt_library": str(self.prebuilt_library() or "absent")}
        if not found:
            step.status = "skipped" if self.dry_run else "failed"
            step.reason = f"{self.wheels} holds no wheel: run scripts/gpu-wheels.sh here and carry .whl"
            return info
        target = self.work / "site" if self.dry_run else self.site
        cmd = [self.python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
               "--upgrade", "--target", str(target)]
        if self.dry_run:  # here: check that the wheels install for the GPU machine's CPython 3.12 manylinux
            cmd += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
                    *[f"--platform={tag}" for tag in GPU_MACHINE_PLATFORMS]]
        cmd += [str(self.wheels / name) for name in found]
        code, text = self._ran(self.run(step, cmd, self.limit("wheels")))
        if code != 0:
            step.status = "failed"
            step.reason = "pip install timed out" if code is None else _last_line(text)
            return info
        info["installed_into"] = str(target)
        if not self.dry_run:
            self.env["PYTHONPATH"] = os.pathsep.join((str(REPO), str(target), os.environ.get("PYTHONPATH", ""))).rstrip(os.pathsep)
        if missing:
            step.status, step.reason = "failed", f"missing from {self.wheels}: {', '.join(missing)}"
        return info

    def tensorrt_include(self) -> Path | None:
        for folder in (self.wheels / "tensorrt-include", REPO / "third_party" / "tensorrt" / "include"):
            if (folder / "NvInferRuntime.h").is_file():
                return folder
        return None

    def prebuilt_library(self) -> Path | None:
        path = self.wheels / "prebuilt" / "libstn_deploy_plugins.so"
        return path if path.is_file() else None

    def build(self, step: Step) -> dict[str, Any]:
        include = self.tensorrt_include()
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        configure = ["cmake", "-S", str(REPO / "plugins"), "-B", str(self.build_dir), *generator,
                     "-DCMAKE_BUILD_TYPE=Release", f"-DSTN_CUDA_ARCHITECTURES={CUDA_ARCH}-real",
                     "-DSTN_BUILD_FUZZ=OFF", f"-DSTN_TENSORRT_INCLUDE_DIR={include or 'MISSING'}"]
        build = ["cmake", "--build", str(self.build_dir), "-j", str(self.jobs)]
        built = self.build_dir / "libstn_deploy_plugins.so"
        info: dict[str, Any] = {"archs": f"sm_{CUDA_ARCH}", "jobs": self.jobs, "build_dir": str(self.build_dir)}
        if self.dry_run:
            # Configure only (catches a wrong option or header path; compiling is the GPU machine's job).
            step.status = "planned"
            if include is None or shutil.which("cmake") is None or shutil.which("nvcc") is None:
                step.commands += [" ".join(configure), " ".join(build)]
                step.reason = "dry run: " + ("no TensorRT headers yet (scripts/gpu-wheels.sh)" if include is None
                                             else "cmake or nvcc missing here: not configured")
                return info
            configure[configure.index("-B") + 1] = str(self.work / "build")
            code, text = self._ran(self.run(step, configure, self.limit("build")))
            step.commands.append(" ".join(build))
            if code != 0:
                step.status, step.reason = "failed", f"configure: {_last_error(text)}"
            else:
                step.reason = "dry run: configured, not compiled"
            return info
        reason = None
        if include is None:
            reason = "no TensorRT headers (.whl/tensorrt-include): run scripts/gpu-wheels.sh"
        else:
            t0 = time.monotonic()
            code, text = self._ran(self.run(step, configure, self.limit("build")))
            if code == 0:
                code, text = self._ran(self.run(step, build, self.limit("build")))
            info["build_s"] = round(time.monotonic() - t0, 1)
            if code == 0 and built.is_file():
                self.use_library(built, built_here=True)
                info["library"] = str(built)
                info.update(self.kernel_resources(step, built))
                return info
            reason = "timed out" if code is None else _last_error(text)
        fallback = self.prebuilt_library()
        step.status, step.reason = "failed", f"build {reason}"
        if fallback is not None:
            self.use_library(fallback, built_here=False)
            info["library"] = str(fallback)
            step.reason += f"; using the library built off the machine ({fallback})"
        return info

    def kernel_resources(self, step: Step, library: Path) -> dict[str, Any]:
        """Registers, shared memory and spills of each kernel (cuobjdump -res-usage), into the log."""
        if shutil.which("cuobjdump") is None:
            return {}
        code, text = self._ran(self.run(step, ["cuobjdump", "-res-usage", str(library)], min(20.0, self.limit("build"))))
        return {"resource_usage": parse_res_usage(text)} if code == 0 else {}

    def use_library(self, path: Path, built_here: bool) -> None:
        self.library = {"path": str(path), "built_here": built_here}
        self.env["STN_DEPLOY_PLUGIN_LIBRARY"] = str(path)

    def parity(self, step: Step) -> dict[str, Any]:
        selection = os.environ.get("STN_GPU_CHECK_PARITY_TESTS", "").split() or list(PARITY_TESTS)
        return self.pytest_step(step, "parity", selection)

    def gpu_tests(self, step: Step) -> dict[str, Any]:
        summary = self.pytest_step(step, "gpu-tests", list(OTHER_GPU_TESTS))
        if "not_passed" in summary:
            # No TensorRT on the GPU machine: engine tests fail for that alone.
            summary["need_tensorrt"] = [f["test"] for f in summary["not_passed"] if _needs_tensorrt(f["message"])]
        return summary

    def pytest_step(self, step: Step, name: str, selection: list[str]) -> dict[str, Any]:
        """``pytest -m gpu`` of ``selection``, every outcome appended to ``<name>-<gpu>.jsonl`` as it
        happens; a test that hangs (watchdog), crashes pytest or leaves CUDA unusable is recorded
        as such and the tests not yet run go on in a fresh process."""
        progress = (self.work if self.dry_run else self.out) / f"{name}-{self.slug}.jsonl"
        done_list = self.work / f"{name}-done.txt"
        options = ["-m", "gpu", "-v", "-p", "no:cacheprovider", "-p", "benchmarks.pytest_progress",
                   "--continue-on-collection-errors"]
        if self.dry_run:
            # Collect only: the selection and every test module's imports, without CUDA.
            cmd = [self.python, "-m", "pytest", *options, "--collect-only", *selection]
            code, text = self._ran(self.run(step, cmd, self.limit(name)))
            match = re.search(r"(\d+)(?:/\d+)? tests? collected", text)
            step.status = "planned" if code == 0 else "failed"
            step.reason = f"dry run: collected {match.group(1) if match else '?'} gpu tests" if code == 0 else _last_line(text)
            return {"collected": int(match.group(1)) if match else None, "selection": selection}
        if _has_module(self.python, "pytest_timeout", self.env):  # interrupts what Python can; the watchdog the rest
            options.append(f"--timeout={max(1, int(self.test_limit_s * 0.8))}")
        cmd = [self.python, "-m", "pytest", *options, *selection]
        env = dict(self.env, STN_GPU_CHECK_PROGRESS=str(progress), STN_GPU_CHECK_SKIP=str(done_list))
        rounds: list[dict[str, Any]] = []
        lost_contexts = 0
        while True:
            ran = self.run(step, cmd, self.limit(name), env=env, watchdog=lambda: _hung_test(progress, self.test_limit_s))
            summary = read_test_progress(progress)
            entry: dict[str, Any] = {"exit": ran.code, "killed": ran.why}
            lost = summary["in_flight"]
            if lost is not None and ran.killed_by != "limit":
                outcome = "hung" if ran.killed_by == "watchdog" else "crashed"
                message = (ran.why or "") if outcome == "hung" else f"pytest ended (exit {ran.code}) during this test: {_last_error(ran.text)}"
                _append_line(progress, {"event": "outcome", "test": lost, "outcome": outcome, "message": message[:300],
                                        "by": "gpu-check"})
                entry[outcome] = lost
                summary = read_test_progress(progress)
            fresh_context_lost = len(summary["context_lost"]) > lost_contexts
            lost_contexts = len(summary["context_lost"])
            rounds.append(entry)
            restart = (lost is not None and ran.killed_by != "limit") or fresh_context_lost
            if not restart or summary["not_run"] == 0 or len(rounds) > MAX_RESTARTS or self.limit(name) < MIN_STEP_S:
                break
            done_list.write_text("\n".join(summary["finished"]) + "\n")
            self.log(f"[gpu-check] {name}: {entry.get('hung') or entry.get('crashed') or 'CUDA context lost'}; "
                     f"{summary['not_run']} tests left, going on in a fresh process")
        summary["rounds"] = rounds
        summary["pytest_summary"] = _last_line(ran.text)
        summary["file"] = progress.name
        summary["measured"] = summary["total"] > 0 and summary["not_run"] == 0 and not summary["collect_errors"]
        bad = {k: summary[k] for k in ("failed", "errors", "hung", "crashed") if summary[k]}
        counts = ", ".join(f"{v} {k}" for k, v in bad.items())
        if ran.killed_by == "limit":
            step.status, step.reason = "timeout", f"pytest {ran.why}: {summary['not_run']} tests not run"
        elif summary["collect_errors"]:
            step.status, step.reason = "failed", f"collection: {summary['collect_errors'][0]['message']}"
        elif summary["not_run"] or summary["total"] == 0:
            step.status = "failed"
            step.reason = f"{summary['not_run']} of {summary['total']} tests not run: {summary['pytest_summary']}"
        elif bad:
            step.status, step.reason = "failed", counts
        return summary

    def sampler(self, step: Step) -> dict[str, Any]:
        stem = f"sampler-{self.slug}"
        report_path = self.out / f"{stem}.json"
        progress = self.work / "sampler-progress.jsonl"
        base = [self.python, str(REPO / "benchmarks" / "sampler.py"), "--matrix", "issue", "--compile-budget-s", "100",
                "-o", str(self.out), "--stem", stem, "--progress", str(progress)]
        base += ["--synthetic"] if self.synthetic_sampler else ["--device", "cuda"]
        restarts: list[dict[str, Any]] = []
        while True:
            limit = self.limit("sampler")
            cmd = [*base, "--time-budget-s", f"{max(5.0, limit - SAMPLER_MARGIN_S):.0f}", *(["--resume"] if restarts else [])]
            progress.unlink(missing_ok=True)  # the last process's case in flight is not this one's
            ran = self.run(step, cmd, limit, watchdog=lambda: _stalled_case(progress, self.stall_s))
            if ran.code in (0, 2) or not report_path.is_file():
                break
            # Stopped in a case: by a sticky CUDA error (the sampler recorded it), a hang or a crash (recorded here).
            restart: dict[str, Any] = {"exit": ran.code, "killed": ran.why}
            in_flight = _case_in_flight(progress)
            if in_flight is not None and ran.code != SAMPLER_CONTEXT_LOST:
                how = ran.why if ran.killed_by else f"the sampler ended (exit {ran.code}): {_last_error(ran.text)}"
                what = "hung" if ran.killed_by == "watchdog" else "not finished" if ran.killed_by == "limit" else "crashed"
                restart["case"] = {k: in_flight.get(k) for k in ("case", "dtype", "mode", "impl", "phase")}
                restart["case"]["then"] = _record_lost_case(report_path, in_flight, f"{what} in {in_flight.get('impl', '?')} "
                                                                                  f"({in_flight.get('phase', '?')}): {how}")
            elif ran.code == SAMPLER_CONTEXT_LOST:
                restart["stopped"] = json.loads(report_path.read_text()).get("stopped")
            restarts.append(restart)
            if ran.killed_by == "limit" or len(restarts) > MAX_RESTARTS or self.limit("sampler") < MIN_STEP_S:
                break
            self.log(f"[gpu-check] sampler: {restart.get('stopped') or restart.get('killed') or 'crashed'}; "
                     "going on in a fresh process (--resume)")
        if not report_path.is_file():
            step.status = "timeout" if ran.killed_by == "limit" else "failed"
            step.reason = "no report written: " + (ran.why or _last_error(ran.text))
            return {"restarts": restarts} if restarts else {}
        report = json.loads(report_path.read_text())
        if not (self.out / f"{stem}.png").is_file():  # it plots at the end: plot what was measured
            self.run(step, [self.python, str(REPO / "benchmarks" / "sampler.py"), "--plot-only", str(report_path)],
                     max(5.0, min(30.0, self.remaining())))
        condensed = condense_sampler(report)
        condensed["restarts"] = restarts
        condensed["measured"] = main_cases_measured(report)
        if ran.killed_by == "limit":
            step.status, step.reason = "timeout", "stopped at the step's limit: the report holds the cases finished before"
        elif ran.code not in (0, None) and not restarts:
            step.status, step.reason = "failed", _last_error(ran.text)
        elif restarts:  # each fault, hang or crash is recorded in its case: a result, not a failure of the step
            step.reason = f"measured in {len(restarts) + 1} processes after a fault, hang or crash (sampler.restarts)"
        return condensed

    def profile(self, step: Step) -> dict[str, Any]:
        rep = self.work / "ncu-main"
        sampler = [self.python, str(REPO / "benchmarks" / "sampler.py"), "--device", "cuda", "--cases", MAIN_CASE,
                   "--dtypes", "fp16", "--modes", "bilinear", "--profile-launches", "2"]
        cmd = ["ncu", "--clock-control", "none", "--target-processes", "all", "--kernel-name", PROFILE_KERNEL,
               "--launch-skip", "1", "--launch-count", "1"]
        for section in PROFILE_SECTIONS:
            cmd += ["--section", section]
        cmd += ["-f", "-o", str(rep), *sampler]
        info: dict[str, Any] = {"case": f"{MAIN_CASE} fp16 bilinear, fused kernel, second launch",
                                "clock_control": "none"}
        if self.dry_run:
            step.commands.append(" ".join(cmd))
            step.status = "planned"
            step.reason = "dry run: needs a GPU" + ("" if shutil.which("ncu") else "; ncu is not on PATH here")
            return info
        if shutil.which("ncu") is None:
            step.status, step.reason = "unavailable", "ncu is not on PATH"
            return info
        ran = self.run(step, cmd, self.limit("profile"))
        problems = [ln.strip() for ln in ran.text.splitlines() if ln.startswith(("==ERROR==", "==WARNING=="))]
        info["messages"] = problems[:10]
        report = rep.with_suffix(".ncu-rep")
        if NCU_NO_PERMISSION in ran.text:
            # The driver withholds the counters from this user (NVreg_RestrictProfilingToAdminUsers):
            # a fact of the machine, not something a rerun changes.
            step.status = "unavailable"
            step.reason = f"ncu: no access to the GPU performance counters here ({NCU_NO_PERMISSION})"
            return info
        if ran.code != 0 or not report.is_file():
            step.status = "timeout" if ran.killed_by else "failed"
            step.reason = (problems[0] if problems else ran.why or _last_line(ran.text)) or "ncu wrote no report"
            return info
        csv_path = self.work / "ncu.csv"
        ran = self.run(step, ["ncu", "--import", str(report), "--csv", "--page", "raw"],
                       min(30.0, self.limit("profile")), stdout_path=csv_path)
        self.keep(report, f"ncu-{self.slug}.ncu-rep")
        if ran.code != 0:
            step.status, step.reason = "failed", f"ncu --import: {_last_line(ran.text)}"
            return info
        self.keep(csv_path, f"ncu-{self.slug}.csv")
        info.update(parse_ncu_csv(csv_path.read_text()))
        if not info.get("metrics"):
            step.status, step.reason = "failed", "no kernel row in the profile (did the kernel name match?)"
        return info

    def keep(self, path: Path, name: str) -> None:
        """Copy a result into the output folder if it is under the size the tool brings back."""
        if path.stat().st_size >= MAX_FILE_BYTES:
            self.log(f"not kept: {path} is {path.stat().st_size} bytes (limit {MAX_FILE_BYTES})")
            return
        shutil.copyfile(path, self.out / name)

    def salvage(self, name: str) -> dict[str, Any] | None:
        """What an interrupted step had measured, from the files it writes as it goes."""
        if name in ("parity", "gpu-tests") and not self.dry_run:
            path = self.out / f"{name}-{self.slug}.jsonl"
            if path.is_file():
                summary = read_test_progress(path)
                summary["measured"] = False
                summary["file"] = path.name
                return summary
        if name == "sampler":
            path = self.out / f"sampler-{self.slug}.json"
            if path.is_file():
                try:
                    report = json.loads(path.read_text())
                except ValueError:
                    return None
                return {**condense_sampler(report), "measured": main_cases_measured(report)}
        return None
_TORCH_PROBE = r"""
import json, torch
info = {"version": torch.__version__, "cuda_runtime": torch.version.cuda, "cuda": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, compute_capability=f"{p.major}.{p.minor}", sm_count=p.multi_processor_count,
                memory_gib=round(p.total_memory / 2**30, 1), l2_bytes=getattr(p, "L2_cache_size", None),
                cudnn=torch.backends.cudnn.version())
    x = torch.ones(1, device="cuda")
    info["cuda_works"] = float((x + 1).item()) == 2.0
print(json.dumps(info))
"""


# ---------------------------------------------------------------------------- pure helpers


def gpu_slug(name: str) -> str:
    """``"NVIDIA H200"`` -> ``"h200"``: the GPU's name as it goes into file names."""
    text = re.sub(r"^nvidia\s+", "", name.strip(), flags=re.I).lower()
    slug = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return slug or "gpu"


def parse_res_usage(text: str) -> list[dict[str, Any]]:
    """Per kernel of ``cuobjdump -res-usage``: its name (mangled and short), registers, stack,
    shared and local memory."""
    usage = []
    name = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Function "):
            name = stripped[len("Function "):].rstrip(":")
        elif name and stripped.startswith("REG:"):
            fields = dict(item.split(":", 1) for item in stripped.split() if ":" in item)
            short = re.search(r"(?<![0-9])[0-9]+([A-Za-z]+Kernel)I(.+?)EEv", name)  # <len>nameI<args>EEv
            usage.append({"function": name, "short": f"{short.group(1)}<{short.group(2)}>" if short else name,
                          **{k.lower(): int(v) for k, v in fields.items() if k in ("REG", "STACK", "SHARED", "LOCAL")}})
            name = None
    return usage


def read_wheel_list(path: Path) -> list[str]:
    """``NAME==VERSION`` lines of ``scripts/gpu-wheels.txt`` (comments and blanks dropped)."""
    specs = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line):
            raise UserError(f"{path}:{number}: expected NAME==VERSION, got {line!r}")
        specs.append(line)
    return specs


def _wheel_matches(filename: str, spec: str) -> bool:
    name, version = spec.split("==")
    return filename.lower().startswith(f"{re.sub(r'[-_.]+', '_', name).lower()}-{version.lower()}-")


def parse_ncu_csv(text: str) -> dict[str, Any]:
    """The named metrics (value, unit) of the first kernel in ``ncu --csv --page raw`` output."""
    lines = [ln for ln in text.splitlines() if ln.startswith('"')]  # drop ==PROF== lines
    rows = list(csv.reader(io.StringIO("\n".join(lines))))
    if len(rows) < 3:
        return {"metrics": {}}
    header, units, first = rows[0], rows[1], rows[2]
    column = {name: i for i, name in enumerate(header)}
    metrics: dict[str, Any] = {}
    for key, metric in PROFILE_METRICS.items():
        i = column.get(metric)
        if i is None or i >= len(first):
            continue
        raw = first[i].replace(",", "")
        try:
            value: float | str = float(raw)
        except ValueError:
            value = first[i]
        metrics[key] = {"metric": metric, "value": value, "unit": units[i] if i < len(units) else ""}
    kernel = first[column["Kernel Name"]] if "Kernel Name" in column and column["Kernel Name"] < len(first) else None
    return {"kernel": kernel, "metrics": metrics, "metric_count": len(header)}


def read_test_progress(path: Path) -> dict[str, Any]:
    """Per-test outcomes of a ``benchmarks/pytest_progress.py`` file, over every process that
    appended to it: counts, what did not pass and why, the tests not run, the test in flight
    when the last process ended (started, no outcome) and when it started."""
    collected: dict[str, None] = {}
    outcomes: dict[str, dict[str, Any]] = {}
    context_lost: list[dict[str, Any]] = []
    collect_errors: list[dict[str, Any]] = []
    in_flight: tuple[str, float] | None = None
    for record in _json_lines(path):
        event, test = record.get("event"), record.get("test")
        if event == "collected":
            collected.update(dict.fromkeys(record.get("tests", [])))
        elif event == "collect_error":
            collect_errors.append({"module": record.get("module"), "message": record.get("message", "")})
        elif event == "start":
            in_flight = (test, float(record.get("t", 0.0)))
        elif event == "outcome":
            previous = outcomes.get(test)
            if previous is None or previous["outcome"] not in ("failed", "error") or record["outcome"] in ("failed", "error"):
                outcomes[test] = record  # a failed teardown after a pass is an error; nothing undoes a failure
            if in_flight is not None and in_flight[0] == test:
                in_flight = None
        elif event == "context_lost":
            context_lost.append({"test": test, "error": record.get("error")})
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0, "hung": 0, "crashed": 0}
    not_passed: list[dict[str, Any]] = []
    skips: dict[str, int] = {}
    for test, record in outcomes.items():
        outcome = record["outcome"]
        counts["errors" if outcome == "error" else outcome] = counts.get("errors" if outcome == "error" else outcome, 0) + 1
        if outcome == "skipped":
            reason = str(record.get("message", "")).strip()[:160]
            skips[reason] = skips.get(reason, 0) + 1
        elif outcome != "passed":
            not_passed.append({"test": test, "kind": outcome, "message": str(record.get("message", ""))[:300]})
    not_run = [t for t in collected if t not in outcomes]
    return {**counts, "total": len(collected), "not_run": len(not_run), "not_run_tests": not_run[:20],
            "not_passed": not_passed, "skip_reasons": skips, "context_lost": context_lost,
            "collect_errors": collect_errors, "finished": list(outcomes),
            "in_flight": in_flight[0] if in_flight else None, "in_flight_since": in_flight[1] if in_flight else None}


def _append_line(path: Path, record: dict[str, Any]) -> None:
    record["t"] = round(time.time(), 3)
    with path.open("a") as sink:
        sink.write(json.dumps(record) + "\n")


def _hung_test(progress: Path, limit_s: float) -> str | None:
    """The watchdog of the pytest steps: why to kill pytest (a test past ``limit_s``), or None."""
    state = read_test_progress(progress)
    since = state["in_flight_since"]
    if state["in_flight"] is not None and since is not None and time.time() - since > limit_s:
        return f"hung: {state['in_flight']} still running after {time.time() - since:.0f} s (limit {limit_s:g} s)"
    return None


def _json_lines(progress: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines progress file (none when it is absent)."""
    events = []
    for line in (progress.read_text(errors="replace") if progress.is_file() else "").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return events


def _case_in_flight(progress: Path) -> dict[str, Any] | None:
    """The sampler case started and not finished (``--progress`` events), with its last phase."""
    current: dict[str, Any] | None = None
    for event in _json_lines(progress):
        kind = event.get("event")
        if kind == "case":
            current = dict(event)
        elif kind == "phase" and current is not None:
            current.update(impl=event.get("impl"), phase=event.get("phase"), t=event.get("t"))
        elif kind == "done":
            current = None
    return current


def _stalled_case(progress: Path, stall_s: float) -> str | None:
    """The watchdog of the sampler step: why to kill it (no progress in a case for ``stall_s``), or None."""
    current = _case_in_flight(progress)
    if current is None or time.time() - float(current.get("t", time.time())) <= stall_s:
        return None
    return (f"hung: no progress for {time.time() - float(current['t']):.0f} s (limit {stall_s:g} s) in "
            f"{current.get('case')} {current.get('dtype')} {current.get('mode')}, {current.get('impl', '-')} "
            f"{current.get('phase', '')}".rstrip())


def _record_lost_case(report_path: Path, case: dict[str, Any], reason: str) -> str:
    """Put a case whose process hung or crashed into the sampler's report, and say how.

    The first time, as a faulted row naming the implementation it was in, so that ``--resume``
    measures the case again without it; a case lost again, or lost outside any one
    implementation's call, as a final skip, so that ``--resume`` goes on after it.
    """
    report = json.loads(report_path.read_text())
    ident = (case.get("case"), case.get("dtype"), case.get("mode"))
    index = next((i for i, c in enumerate(report.get("cases", [])) if (c["name"], c["dtype"], c["mode"]) == ident), None)
    earlier = report["cases"][index].get("faults", []) if index is not None else []
    impl = str(case.get("impl") or "")
    report["complete"] = False
    if impl in SAMPLER_IMPLS and all(f.get("impl") != impl for f in earlier) and len(earlier) < 3:
        fault = {"impl": impl, "status": "failed", "reason": reason[:400], "phase": case.get("phase"), "cuda_error": None,
                 "context": "process hung or crashed: measured again in a fresh process without it"}
        row = {"name": ident[0], "key": case.get("key"), "dtype": ident[1], "mode": ident[2], "status": "faulted",
               "fault": fault, "faults": [*earlier, fault], "results": {}, "ratios": {}}
        if index is None:
            report.setdefault("cases", []).append(row)
        else:
            report["cases"][index] = row
        outcome = "retried without " + impl
    else:
        if index is not None:
            del report["cases"][index]
        report.setdefault("skipped_cases", []).append(
            {"name": ident[0], "key": case.get("key"), "dtype": ident[1], "mode": ident[2], "reason": reason[:400],
             "final": True})
        outcome = "given up"
    write_json(report_path, report)
    return outcome


def main_cases_measured(report: dict[str, Any]) -> bool:
    """Whether the sampler report holds the main cases (a row, or a fault, hang or crash recorded there)."""
    seen = {(c.get("name"), c.get("dtype"), c.get("mode")) for c in report.get("cases", [])}
    seen |= {(c.get("name"), c.get("dtype"), c.get("mode")) for c in report.get("skipped_cases", []) if c.get("final")}
    return all(case in seen for case in MAIN_SAMPLER_CASES)


def condense_sampler(report: dict[str, Any]) -> dict[str, Any]:
    """The sampler report's table: per case the medians, GB/s, ratios and the prediction."""
    rows = []
    for case in report.get("cases", []):
        impls = {}
        for name, r in case.get("results", {}).items():
            if r.get("status") == "ok":
                impls[name] = {"median_us": round(r["median_ms"] * 1e3, 2), "gbps": round(r["gbps"], 1),
                               **({"compile_s": r["compile_s"]} if "compile_s" in r else {})}
            else:
                impls[name] = {k: r.get(k) for k in ("status", "reason", "phase", "cuda_error", "context") if k in r}
        fused_pred = case.get("prediction", {}).get("fused", {})
        rows.append({"case": case["name"], "key": case.get("key"), "dtype": case["dtype"], "mode": case["mode"],
                     "impls": impls, "ratios": case.get("ratios", {}),
                     "predicted_us": _number(fused_pred.get("predicted_us")),
                     "predicted_fraction_of_copy": _number(fused_pred.get("predicted_fraction_of_copy")),
                     "prediction": case.get("prediction", {}).get("status"),
                     **({"fault": case["fault"]} if case.get("fault") else {})})
    return {"dry_run": report.get("dry_run", False), "complete": report.get("complete"), "stopped": report.get("stopped"),
            "prediction_source": report.get("settings", {}).get("prediction"), "cases": rows,
            "skipped_cases": report.get("skipped_cases", [])}


def _number(value: Any) -> float | None:
    """A number from another tool's JSON, or None (absent, null or not a number)."""
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def evaluate_targets(sampler: dict[str, Any], parity: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPU issue's targets against what was measured: met true/false, or null when unmeasured."""
    out = []
    by_dtype = {row["dtype"]: row for row in sampler.get("cases", [])
                if row["case"] == MAIN_CASE and row["mode"] == "bilinear"}
    for dtype, ratio, threshold, text in TARGETS:
        value = by_dtype.get(dtype, {}).get("ratios", {}).get(ratio)
        met = None if value is None else (value > threshold if ratio.endswith("compile") and threshold == 1.0
                                          else value >= threshold)
        out.append({"target": text, "case": f"{MAIN_CASE} {dtype} bilinear", "ratio": ratio, "threshold": threshold,
                    "value": value, "met": met})
    name = "CUDA parity: every kernel parity test passes"
    if parity.get("total"):
        bad = sum(parity.get(k, 0) for k in ("failed", "errors", "hung", "crashed"))
        value = (f"{parity['passed']} passed, {parity['failed']} failed, {parity['errors']} errors, "
                 f"{parity.get('hung', 0)} hung, {parity.get('crashed', 0)} crashed, {parity['skipped']} skipped"
                 + (f", {parity['not_run']} not run" if parity.get("not_run") else ""))
        met = False if bad else (None if parity.get("not_run") else parity["passed"] > 0)
        out.append({"target": name, "value": value, "met": met})
    else:
        out.append({"target": name, "value": None, "met": None})
    return out


def _needs_tensorrt(message: str) -> bool:
    """A failure that says TensorRT is missing (stn_deploy.trt's error, or an import of it)."""
    return "no TensorRT found" in message or "No module named 'tensorrt" in message


def _kill_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def _version_line(tool: str, lines: list[str]) -> str:
    """The line of a tool's version output that holds the version."""
    if tool.startswith("nvidia_smi"):
        return "; ".join(lines)
    if tool == "nvcc":
        return next((ln for ln in lines if "release" in ln), lines[-1])
    if tool == "ncu":
        return lines[-1]
    return lines[0]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _has_module(python: str, module: str, env: dict) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([python, "-c", code], env=env, capture_output=True).returncode == 0


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def _parse_steps(text: str | None, what: str) -> list[str]:
    if text is None:
        return []
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STEPS]
    if bad:
        raise UserError(f"unknown step {bad[0]!r} in {what}; choose from {', '.join(STEPS)}")
    return names


# ----------------------------------------------------------------------------------- main


def run_check(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "runs" / "gpu-check"
    only, skip = _parse_steps(args.only, "--only"), _parse_steps(args.skip, "--skip")
    if args.budget_s <= 0 or args.budget_s > 590:
        raise UserError(f"--budget-s must be in (0, 590] (a device command runs at most 600 s), got {args.budget_s:g}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {out}: {exc.strerror}") from None
    stale = [p.name for p in out.iterdir()]
    if stale and not args.dry_run and not args.keep_existing:
        raise UserError(f"{out} is not empty ({', '.join(stale[:3])}...): give an empty folder, or --keep-existing")
    check = Check(out, args.dry_run, args.budget_s, Path(args.wheels), Path(args.site), Path(args.build_dir),
                  args.jobs or os.cpu_count() or 2, args.python)
    selected = [s for s in STEPS if (not only or s in only) and s not in skip]
    check.selected = tuple(selected)
    summary: dict[str, Any] = {
        "format": "stn-deploy-gpu-check", "version": 2, "dry_run": args.dry_run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget_s,
        "complete": False, "stopped": None, "running": None, "steps": [], "files": [],
    }
    if args.dry_run:
        summary["note"] = "DRY RUN on a machine without CUDA: every number below is synthetic"
    handlers = {"environment": check.environment, "wheels": check.wheels_step, "build": check.build,
                "parity": check.parity, "sampler": check.sampler, "profile": check.profile, "gpu-tests": check.gpu_tests}
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    interrupted: Interrupted | None = None
    try:
        for name in STEPS:
            step = Step(name)
            if name not in selected:
                step.status, step.reason = "skipped", "not selected (--only/--skip)"
            elif interrupted is not None:
                step.status, step.reason = "skipped", f"not started: {interrupted}"
            elif check.remaining() < MIN_STEP_S:
                step.status, step.reason = "skipped", f"wall budget of {args.budget_s:g} s spent"
            else:
                check.step_started = None
                step.limit_s = check.limit(name)
                summary["running"] = name
                _summarise(check, summary)  # a kill from outside during the step still leaves the steps before
                check.log(f"===== {name} (limit {step.limit_s:.0f} s)")
                t0 = check.step_started = time.monotonic()
                try:
                    check.results[name] = handlers[name](step)
                except Interrupted as exc:
                    interrupted = exc
                    step.status, step.reason = "interrupted", f"{exc} during this step: what it measured so far is kept"
                    check.results[name] = check.salvage(name)
                except Exception as exc:  # one step's bug is a result, not the end of the check
                    step.status, step.reason = "failed", f"{type(exc).__name__}: {exc}"[:300]
                    check.results[name] = check.salvage(name)
                step.seconds = time.monotonic() - t0
                if step.status == "pending":
                    step.status = "ok"
                if step.status in ("failed", "timeout", "interrupted"):
                    step.tail = "".join(check.recent)[-800:]
                summary["running"] = None
            summary["steps"].append(step.to_dict())
            if interrupted is None or step.status == "interrupted":
                print(f"[gpu-check] {name:<11} {step.status:<11} {step.seconds:6.1f} s  {step.reason or ''}", flush=True)
            _summarise(check, summary)
        if interrupted is not None:
            summary["stopped"] = f"{interrupted} during {_interrupted_step(summary)}"
        else:
            summary["complete"] = all(s["status"] not in ("timeout", "interrupted") and not
                                      (s["status"] == "skipped" and "budget" in (s["reason"] or "")) for s in summary["steps"])
    except Interrupted as exc:  # between steps, or while writing the summary
        interrupted = exc
        summary["stopped"] = f"{exc} between steps"
    finally:  # interrupted or not, the folder gets the summary of what ran
        summary["exit_code"] = _exit_code(summary, check.results)
        _summarise(check, summary, final=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(render_table(summary), flush=True)
    return int(summary["exit_code"])


def _interrupted_step(summary: dict[str, Any]) -> str:
    return next((s["name"] for s in summary["steps"] if s["status"] == "interrupted"), "the check")


def _exit_code(summary: dict[str, Any], results: dict[str, Any]) -> int:
    """0 when the main results were measured (whatever the optional steps did), else 1. A dry
    run is judged by its main steps' plans, a run that selects no main step by its steps: 1
    when one failed."""
    main = [name for name in MAIN_STEPS if any(s["name"] == name and s["reason"] != "not selected (--only/--skip)"
                                                for s in summary["steps"])]
    judged = main if summary["dry_run"] and main else None if main else STEPS  # a dry run measures nothing: its plan
    if judged is not None:
        return 1 if any(s["status"] in ("failed", "timeout", "interrupted") for s in summary["steps"] if s["name"] in judged) else 0
    return 0 if all((results.get(name) or {}).get("measured") for name in main) else 1


def _summarise(check: Check, summary: dict[str, Any], final: bool = False) -> None:
    results = check.results
    env = results.get("environment") or {}
    torch_info = env.get("torch") or {}
    summary["device"] = {k: v for k, v in torch_info.items() if k not in ("version", "cuda_runtime")}
    summary["device"]["nvidia_smi"] = env.get("nvidia_smi")
    summary["device"]["nvidia_smi_clocks"] = env.get("nvidia_smi_clocks")
    summary["versions"] = {"torch": torch_info.get("version"), "cuda_runtime": torch_info.get("cuda_runtime"),
                           "python": env.get("python_driver"), "nvcc": env.get("nvcc"), "ncu": env.get("ncu"),
                           "cmake": env.get("cmake"), "ninja": env.get("ninja"), "stn_deploy_commit": env.get("repo_commit")}
    summary["wheels"] = results.get("wheels")
    summary["library"] = {**(results.get("build") or {}), **check.library}
    summary["parity"] = results.get("parity")
    summary["sampler"] = results.get("sampler")
    summary["profile"] = results.get("profile")
    summary["gpu_tests"] = results.get("gpu-tests")
    summary["main_results"] = {name: bool((results.get(name) or {}).get("measured")) for name in MAIN_STEPS
                               if name in check.selected}
    summary["optional_not_ok"] = [{"step": s["name"], "status": s["status"], "reason": s["reason"]} for s in summary["steps"]
                                  if s["name"] not in MAIN_STEPS and s["status"] not in ("ok", "planned")
                                  and s["reason"] != "not selected (--only/--skip)"]
    summary["targets"] = evaluate_targets(results.get("sampler") or {}, results.get("parity") or {})
    summary["seconds"] = round(time.monotonic() - check.started, 1)
    _finish(check, summary, final)


def _finish(check: Check, summary: dict[str, Any], final: bool) -> None:
    """Write the summary (and, at the end, cap the log), holding the folder to the tool's limits
    (8 files, 16 MiB each)."""
    summary_path = check.out / f"gpu-check-{check.slug}.json"
    if final:
        check.log_file.close()
        if check.log_path.stat().st_size > MAX_FILE_BYTES - 4096:  # keep the head and the end
            data = check.log_path.read_bytes()
            keep = (MAX_FILE_BYTES - 8192) // 2
            check.log_path.write_bytes(data[:keep] + b"\n[... log cut to the tool's 16 MiB ...]\n" + data[-keep:])
        shutil.rmtree(check.work, ignore_errors=True)
    files = sorted(p for p in check.out.iterdir() if p.is_file() and not p.name.startswith("."))
    summary["files"] = [p.name for p in files] + ([summary_path.name] if summary_path not in files else [])
    if len(summary["files"]) > MAX_FILES:
        summary["files_warning"] = f"{len(summary['files'])} files: the device tool brings back only {MAX_FILES}"
    write_json(summary_path, summary)


def render_table(summary: dict[str, Any]) -> str:
    """The short table printed last (the device tool's reply holds the end of the output)."""
    lines = ["", f"GPU check{' (DRY RUN, synthetic numbers)' if summary['dry_run'] else ''}: "
                 f"{summary['device'].get('gpu') or 'no GPU'}, torch {summary['versions'].get('torch')}, "
                 f"{summary['seconds']:.0f} s of {summary['budget_s']:.0f}"]
    for row in (summary.get("sampler") or {}).get("cases", []):
        r, i = row["ratios"], row["impls"]

        def us(name, i=i):
            return f"{i[name]['median_us']:.1f}" if "median_us" in i.get(name, {}) else "-"

        def ratio(key, fmt, r=r):
            return fmt.format(r[key]) if r.get(key) is not None else "-"

        pred = f"{row['predicted_us']:.1f}" if row.get("predicted_us") else "-"
        lines.append(f"  {row['case']:>8} {row['dtype']} {row['mode']:<8} fused {us('plugin-fused'):>7} us "
                     f"(pred {pred:>6}) copy {us('copy'):>7} us  {ratio('plugin_fraction_of_copy', '{:.0%}'):>5} of copy  "
                     f"{ratio('plugin_speedup_vs_torch_eager', '{:.2f}x'):>6} eager  "
                     f"{ratio('plugin_speedup_vs_torch_compile', '{:.2f}x'):>6} compile"
                     + (f"  FAULT in {row['fault'].get('impl')}: {row['fault'].get('reason')}" if row.get("fault") else ""))
    for name in ("parity", "gpu_tests"):
        tests = summary.get(name) or {}
        if "total" in tests:
            lines.append(f"  {name.replace('_', '-')}: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
                         f"{tests['hung']} hung, {tests['crashed']} crashed, {tests['skipped']} skipped, {tests['not_run']} not run")
            lines += [f"    {f['kind']} {f['test']}: {f['message'][:120]}" for f in tests["not_passed"][:8]]
    metrics = (summary.get("profile") or {}).get("metrics") or {}
    if metrics:
        lines.append("  ncu: " + ", ".join(f"{k} {v['value']} {v['unit']}".strip() for k, v in metrics.items()
                                           if k in ("duration", "dram_throughput_pct_of_peak", "issue_slots_busy_pct",
                                                    "achieved_occupancy_pct", "registers_per_thread")))
    for t in summary["targets"]:
        mark = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        value = f"{t['value']:.3g}" if isinstance(t["value"], float) else t["value"]
        lines.append(f"  target {mark:<6} {t['target']}: {value}")
    for row in summary.get("optional_not_ok", []):
        lines.append(f"  optional {row['step']} {row['status']}: {row['reason']}")
    if summary.get("stopped"):
        lines.append(f"  STOPPED: {summary['stopped']}")
    main = summary.get("main_results", {})
    measured = "none (dry run: plans and synthetic numbers)" if summary["dry_run"] else ", ".join(f"{k} {v}" for k, v in main.items())
    lines.append(f"  main results measured: {measured or 'none selected'}; exit {summary.get('exit_code')}")
    lines.append(f"  files: {', '.join(summary['files'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--out", default=None, help="result folder (default: $OUT, else runs/gpu-check)")
    parser.add_argument("--dry-run", action="store_true", help="no CUDA: plan, synthetic numbers, every file")
    parser.add_argument("--only", default=None, help=f"comma-separated steps from {', '.join(STEPS)}")
    parser.add_argument("--skip", default=None, help="comma-separated steps to leave out")
    parser.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                        help=f"wall seconds for all steps together (default {DEFAULT_BUDGET_S:g})")
    parser.add_argument("--wheels", default=str(REPO / ".whl"), help="the carried folder (scripts/gpu-wheels.sh; default <repo>/.whl)")
    parser.add_argument("--site", default="/tmp/site", help="where the carried wheels are installed (default /tmp/site)")
    parser.add_argument("--build-dir", default="/tmp/stn-build-sm90", help="CMake build folder of the sm_90 library (default /tmp/stn-build-sm90)")
    parser.add_argument("--jobs", type=int, default=None, help="build jobs (default: every core)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the child steps (default: this one)")
    parser.add_argument("--keep-existing", action="store_true", help="write into a folder that already holds files")
    args = parser.parse_args(argv)
    try:
        return run_check(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
