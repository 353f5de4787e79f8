"""The GPU check: from a bare GPU machine to result files in one command (``scripts/gpu-check.sh``).

Steps, each a child process with its own time limit, all inside one wall budget (default
360 s, so that a rerun fits in the device time):

    environment  GPU, driver, CUDA, torch, nvcc, ncu, cmake (nvidia-smi, a torch probe)
    wheels       install the wheels carried in .whl/ (scripts/gpu-wheels.sh) into /tmp/site
    build        the plugin/kernel library for sm_90 only, all cores (the library carried in
                 .whl/prebuilt/ if the build fails)
    parity       ``pytest -m gpu``: the CUDA kernels against PyTorch on CUDA
    sampler      ``benchmarks/sampler.py``: the GPU issue's cases against a copy of the same
                 bytes, torch eager and torch.compile, the static prediction beside each
    profile      Nsight Compute on the main case's fused kernel (failure recorded, not fatal)

Result files (at most 8, each under 16 MiB) go to ``--out`` or ``$OUT``:
``gpu-check-<gpu>.json`` (device, versions, every step, parity, the sampler table, the targets,
the profile), ``gpu-check-<gpu>.log`` (every step's output), ``sampler-<gpu>.json/.png``,
``parity-<gpu>.xml`` (JUnit), ``ncu-<gpu>.csv`` and ``ncu-<gpu>.ncu-rep``.

``--dry-run`` runs what needs no CUDA here (arguments, the wheel list and, where .whl/ exists,
its install into a temporary folder, the plan of every command, the sampler's report and plot
on synthetic numbers, the summary and its targets), names every file ``*-dry-run*`` and marks
it ``dry_run: true``. The driver imports only the standard library (and stn_deploy.io), so
it runs before the wheels are installed and a hung CUDA call cannot hang it.

Usage:
    scripts/gpu-check.sh                       # on the GPU machine: everything, into $OUT
    scripts/gpu-check.sh --dry-run --out /tmp/gpu-dry
    scripts/gpu-check.sh --only environment,build,parity --budget-s 200
"""

from __future__ import annotations

import argparse
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
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from stn_deploy.errors import UserError  # noqa: E402
from stn_deploy.io import write_json  # noqa: E402

#: name -> the most seconds the step may take (less when the wall budget has less left).
STEP_LIMITS_S: dict[str, float] = {
    "environment": 30, "wheels": 40, "build": 150, "parity": 110, "sampler": 210, "profile": 75,
}
STEPS = tuple(STEP_LIMITS_S)
#: Seconds kept back for each later step, so that a slow step leaves the later ones something.
STEP_FLOORS_S: dict[str, float] = {
    "environment": 10, "wheels": 10, "build": 60, "parity": 40, "sampler": 90, "profile": 45,
}
DEFAULT_BUDGET_S = 360.0
#: Kept back from the budget for writing the summary.
RESERVE_S = 8.0
#: A step that would get less than this is skipped rather than started.
MIN_STEP_S = 10.0
#: The device tool brings back at most this many files, each under this size.
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
WHEEL_LIST = REPO / "scripts" / "gpu-wheels.txt"
#: What the GPU machine's pip accepts (CPython 3.12 on x86-64 Linux, glibc 2.39).
GPU_MACHINE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                         "manylinux2014_x86_64", "manylinux1_x86_64", "linux_x86_64")
CUDA_ARCH = "90"
#: The fused kernel of the main case, for Nsight Compute's filter.
PROFILE_KERNEL = "regex:affineGridSample"
PROFILE_SECTIONS = ("SpeedOfLight", "Occupancy", "LaunchStats", "ComputeWorkloadAnalysis", "MemoryWorkloadAnalysis")
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


@dataclass
class Step:
    """What one step did: the summary's ``steps[]`` row."""

    name: str
    status: str = "pending"  # ok | failed | timeout | skipped | planned (dry run)
    seconds: float = 0.0
    limit_s: float = 0.0
    commands: list[str] = field(default_factory=list)
    reason: str | None = None
    tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 1), "limit_s": round(self.limit_s),
                "commands": self.commands, "reason": self.reason, "tail": self.tail}


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
        self.log_lines: list[str] = []
        self.library: dict[str, Any] = {}
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
        self.log_lines.append(text if text.endswith("\n") else text + "\n")

    def run(self, step: Step, cmd: list[str], timeout: float, *, env: dict | None = None,
            stdout_path: Path | None = None) -> tuple[int | None, str]:
        """Run ``cmd`` with a time limit; its output goes to the log (and ``stdout_path``).

        Returns (exit code, or None when it ran out of time, output). The child gets its own
        process group, not its own session, so that nothing it starts outlives the check.
        """
        shown = " ".join(cmd)
        step.commands.append(shown)
        self.log(f"$ {shown}")
        with tempfile.TemporaryFile(mode="w+b") as sink:
            try:
                proc = subprocess.Popen(cmd, cwd=REPO, env=env or self.env, stdout=sink, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, process_group=0)
            except OSError as exc:
                self.log(f"cannot start: {exc}")
                return 127, f"cannot start {cmd[0]}: {exc.strerror or exc}"
            try:
                code: int | None = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                code = None
            sink.seek(0)
            text = sink.read().decode(errors="replace")
        if stdout_path is not None:
            stdout_path.write_text(text)
        self.log(text)
        self.log(f"[exit {code if code is not None else f'timeout after {timeout:.0f} s'}]")
        return code, text

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
            code, text = self.run(step, cmd, min(15.0, self.limit("environment")))
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            info[key] = _version_line(key, lines) if code == 0 and lines else f"failed: {text[-200:]}"
        code, text = self.run(step, [self.python, "-c", _TORCH_PROBE], max(5.0, self.limit("environment")))
        step.commands[-1] = f"{self.python} -c <torch probe: version, CUDA, device properties, one kernel>"
        torch_info = _last_json_line(text)
        if code == 0 and torch_info is not None:
            info["torch"] = torch_info
        else:
            info["torch"] = {"error": text.strip().splitlines()[-1][:300] if text.strip() else f"exit {code}"}
        gpu = (info.get("torch") or {}).get("gpu")
        if gpu and not self.dry_run:
            self.slug = gpu_slug(gpu)
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
        code, text = self.run(step, cmd, self.limit("wheels"))
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
            code, text = self.run(step, configure, self.limit("build"))
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
            code, text = self.run(step, configure, self.limit("build"))
            if code == 0:
                code, text = self.run(step, build, self.limit("build"))
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
        code, text = self.run(step, ["cuobjdump", "-res-usage", str(library)], min(20.0, self.limit("build")))
        return {"resource_usage": parse_res_usage(text)} if code == 0 else {}

    def use_library(self, path: Path, built_here: bool) -> None:
        self.library = {"path": str(path), "built_here": built_here}
        self.env["STN_DEPLOY_PLUGIN_LIBRARY"] = str(path)

    def parity(self, step: Step) -> dict[str, Any]:
        xml = self.work / "parity.xml"
        cmd = [self.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
               f"--junitxml={xml}", "tests"]
        if _has_module(self.python, "pytest_timeout", self.env) and not self.dry_run:
            cmd.insert(-1, "--timeout=90")
        if self.dry_run:
            # Collect only: the selection and every test module's imports, without CUDA.
            code, text = self.run(step, [*cmd[:-1], "--collect-only", cmd[-1]], self.limit("parity"))
            step.commands[-1] = " ".join(cmd)
            match = re.search(r"(\d+)(?:/\d+)? tests? collected", text)
            step.status = "planned" if code == 0 else "failed"
            step.reason = f"dry run: collected {match.group(1) if match else '?'} gpu tests" if code == 0 else _last_line(text)
            return {"collected": int(match.group(1)) if match else None}
        code, text = self.run(step, cmd, self.limit("parity"))
        summary = parse_junit(xml) if xml.is_file() else {"error": "no JUnit report (pytest did not finish)"}
        if "not_passed" in summary:
            # No TensorRT on the GPU machine: engine tests fail for that alone, the kernels' parity is the rest.
            summary["need_tensorrt"] = [f["test"] for f in summary["not_passed"] if _needs_tensorrt(f["message"])]
        summary["pytest_summary"] = _last_line(text)
        if xml.is_file():
            self.keep(xml, f"parity-{self.slug}.xml")
        if code is None:
            step.status, step.reason = "timeout", f"pytest ran past {self.limit('parity'):.0f} s"
        elif code != 0:
            step.status, step.reason = "failed", summary["pytest_summary"]
        return summary

    def sampler(self, step: Step) -> dict[str, Any]:
        limit = self.limit("sampler")
        stem = f"sampler-{self.slug}"
        cmd = [self.python, str(REPO / "benchmarks" / "sampler.py"), "--matrix", "issue",
               "--time-budget-s", f"{max(5.0, limit - 30):.0f}", "--compile-budget-s", "100",
               "-o", str(self.out), "--stem", stem]
        cmd += ["--synthetic"] if self.dry_run else ["--device", "cuda"]
        code, text = self.run(step, cmd, limit)
        report_path = self.out / f"{stem}.json"
        if not report_path.is_file():
            step.status = "timeout" if code is None else "failed"
            step.reason = "no report written: " + (_last_error(text) if code is not None else "ran out of time")
            return {}
        report = json.loads(report_path.read_text())
        if code is None:
            step.status, step.reason = "timeout", "stopped from outside: the report holds the cases finished before"
            if not (self.out / f"{stem}.png").is_file():  # it plots at the end: plot what was measured
                self.run(step, [self.python, str(REPO / "benchmarks" / "sampler.py"), "--plot-only", str(report_path)],
                         max(5.0, min(30.0, self.remaining())))
        elif code != 0:
            step.status, step.reason = "failed", _last_error(text)
        return condense_sampler(report)

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
            step.status, step.reason = "skipped", "ncu is not on PATH"
            return info
        code, text = self.run(step, cmd, self.limit("profile"))
        problems = [ln.strip() for ln in text.splitlines() if ln.startswith(("==ERROR==", "==WARNING=="))]
        info["messages"] = problems[:10]
        report = rep.with_suffix(".ncu-rep")
        if code != 0 or not report.is_file():
            step.status = "timeout" if code is None else "failed"
            step.reason = (problems[0] if problems else _last_line(text)) or "ncu wrote no report"
            return info
        csv_path = self.work / "ncu.csv"
        code, text = self.run(step, ["ncu", "--import", str(report), "--csv", "--page", "raw"],
                              min(30.0, self.limit("profile")), stdout_path=csv_path)
        self.keep(report, f"ncu-{self.slug}.ncu-rep")
        if code != 0:
            step.status, step.reason = "failed", f"ncu --import: {_last_line(text)}"
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


def parse_junit(path: Path) -> dict[str, Any]:
    """Counts and the failing tests (id and first line of the message) of a JUnit XML report."""
    root = ET.parse(path).getroot()
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failures: list[dict[str, str]] = []
    skips: dict[str, int] = {}
    for case in root.iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        outcome = next((child for child in case if child.tag in ("failure", "error", "skipped")), None)
        if outcome is None:
            counts["passed"] += 1
        elif outcome.tag == "skipped":
            counts["skipped"] += 1
            reason = (outcome.get("message") or "").strip()[:160]
            skips[reason] = skips.get(reason, 0) + 1
        else:
            counts["failed" if outcome.tag == "failure" else "errors"] += 1
            message = (outcome.get("message") or outcome.text or "").strip().splitlines()
            failures.append({"test": test_id, "kind": outcome.tag, "message": message[0][:300] if message else ""})
    return {**counts, "total": sum(counts.values()), "not_passed": failures, "skip_reasons": skips}


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
                impls[name] = {"status": r.get("status"), "reason": r.get("reason")}
        fused_pred = case.get("prediction", {}).get("fused", {})
        rows.append({"case": case["name"], "key": case.get("key"), "dtype": case["dtype"], "mode": case["mode"],
                     "impls": impls, "ratios": case.get("ratios", {}),
                     "predicted_us": _number(fused_pred.get("predicted_us")),
                     "predicted_fraction_of_copy": _number(fused_pred.get("predicted_fraction_of_copy")),
                     "prediction": case.get("prediction", {}).get("status")})
    return {"dry_run": report.get("dry_run", False), "complete": report.get("complete"),
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
    if "total" in parity:
        trt_only = len(parity.get("need_tensorrt", []))
        ok = parity["failed"] + parity["errors"] - trt_only == 0 and parity["passed"] > 0
        out.append({"target": "CUDA parity: every gpu test passes", "value": f"{parity['passed']} passed, "
                    f"{parity['failed']} failed, {parity['errors']} errors, {parity['skipped']} skipped"
                    + (f" ({trt_only} failed only for want of TensorRT, absent there)" if trt_only else ""), "met": ok})
    else:
        out.append({"target": "CUDA parity: every gpu test passes", "value": None, "met": None})
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
        "format": "stn-deploy-gpu-check", "version": 1, "dry_run": args.dry_run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "budget_s": args.budget_s,
        "steps": [], "files": [],
    }
    if args.dry_run:
        summary["note"] = "DRY RUN on a machine without CUDA: every number below is synthetic"
    results: dict[str, Any] = {}
    handlers = {"environment": check.environment, "wheels": check.wheels_step, "build": check.build,
                "parity": check.parity, "sampler": check.sampler, "profile": check.profile}
    try:
        for name in STEPS:
            step = Step(name)
            if name not in selected:
                step.status, step.reason = "skipped", "not selected (--only/--skip)"
            elif check.remaining() < MIN_STEP_S:
                step.status, step.reason = "skipped", f"wall budget of {args.budget_s:g} s spent"
            else:
                check.step_started = None
                step.limit_s = check.limit(name)
                check.log(f"===== {name} (limit {step.limit_s:.0f} s)")
                t0 = check.step_started = time.monotonic()
                try:
                    results[name] = handlers[name](step)
                except Exception as exc:  # one step's bug is a result, not the end of the check
                    step.status, step.reason = "failed", f"{type(exc).__name__}: {exc}"[:300]
                step.seconds = time.monotonic() - t0
                if step.status == "pending":
                    step.status = "ok"
                if step.status in ("failed", "timeout"):
                    step.tail = "".join(check.log_lines[-3:])[-800:]
            summary["steps"].append(step.to_dict())
            print(f"[gpu-check] {name:<11} {step.status:<8} {step.seconds:6.1f} s  {step.reason or ''}", flush=True)
    finally:  # interrupted or not, the folder gets the summary of what ran
        _summarise(check, summary, results)
    print(render_table(summary), flush=True)
    failed = [s["name"] for s in summary["steps"] if s["status"] in ("failed", "timeout")]
    return 1 if failed else 0


def _summarise(check: Check, summary: dict[str, Any], results: dict[str, Any]) -> None:
    env = results.get("environment", {})
    torch_info = env.get("torch") or {}
    summary["device"] = {k: v for k, v in torch_info.items() if k not in ("version", "cuda_runtime")}
    summary["device"]["nvidia_smi"] = env.get("nvidia_smi")
    summary["device"]["nvidia_smi_clocks"] = env.get("nvidia_smi_clocks")
    summary["versions"] = {"torch": torch_info.get("version"), "cuda_runtime": torch_info.get("cuda_runtime"),
                           "python": env.get("python_driver"), "nvcc": env.get("nvcc"), "ncu": env.get("ncu"),
                           "cmake": env.get("cmake"), "ninja": env.get("ninja"), "stn_deploy_commit": env.get("repo_commit")}
    summary["wheels"] = results.get("wheels")
    summary["library"] = {**results.get("build", {}), **check.library}
    summary["parity"] = results.get("parity")
    summary["sampler"] = results.get("sampler")
    summary["profile"] = results.get("profile")
    summary["targets"] = evaluate_targets(results.get("sampler") or {}, results.get("parity") or {})
    summary["seconds"] = round(time.monotonic() - check.started, 1)
    _finish(check, summary)


def _finish(check: Check, summary: dict[str, Any]) -> None:
    """Write the log and the summary, then hold the folder to the tool's limits (8 files, 16 MiB)."""
    log_path = check.out / f"gpu-check-{check.slug}.log"
    summary_path = check.out / f"gpu-check-{check.slug}.json"
    log_path.write_text("".join(check.log_lines)[-(MAX_FILE_BYTES - 4096):])
    files = sorted(p for p in check.out.iterdir() if p.is_file())
    summary["files"] = [p.name for p in files] + ([summary_path.name] if summary_path not in files else [])
    if len(summary["files"]) > MAX_FILES:
        summary["files_warning"] = f"{len(summary['files'])} files: the device tool brings back only {MAX_FILES}"
    write_json(summary_path, summary)
    shutil.rmtree(check.work, ignore_errors=True)


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
                     f"{ratio('plugin_speedup_vs_torch_compile', '{:.2f}x'):>6} compile")
    parity = summary.get("parity") or {}
    if "total" in parity:
        lines.append(f"  parity: {parity['passed']} passed, {parity['failed']} failed, {parity['errors']} errors, "
                     f"{parity['skipped']} skipped")
        lines += [f"    {f['test']}: {f['message'][:120]}" for f in parity["not_passed"][:8]]
    metrics = (summary.get("profile") or {}).get("metrics") or {}
    if metrics:
        lines.append("  ncu: " + ", ".join(f"{k} {v['value']} {v['unit']}".strip() for k, v in metrics.items()
                                           if k in ("duration", "dram_throughput_pct_of_peak", "issue_slots_busy_pct",
                                                    "achieved_occupancy_pct", "registers_per_thread")))
    for t in summary["targets"]:
        mark = {True: "MET", False: "MISSED", None: "n/a"}[t["met"]]
        value = f"{t['value']:.3g}" if isinstance(t["value"], float) else t["value"]
        lines.append(f"  target {mark:<6} {t['target']}: {value}")
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
