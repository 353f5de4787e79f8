"""The plugin's CUDA kernels, run without a GPU: the real ``.cu`` sources compiled for the host
(plugins/emulation, ASan + UBSan), bit-identical to the CPU reference with CUDA semantics.

The C++ driver ``stn_emulation_test`` holds the case matrix (see its file comment); each test
here runs one of its suites in a subprocess (the sanitizers abort the process on a report).
The mutation check injects known CUDA-path bugs and requires every one to fail the driver.
Build: plugins/emulation/build.py into plugins/build/emulation (objects cached by content).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EMULATION = REPO / "plugins" / "emulation"
BUILD_DIR = REPO / "plugins" / "build" / "emulation"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"stn_emulation_{name}", EMULATION / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load("build")


@pytest.fixture(scope="module")
def driver() -> Path:
    if build.compiler() is None:
        pytest.skip("no C++ compiler (g++) on PATH")
    if build.cuda_include_dir() is None:
        pytest.skip("CUDA headers not found (set CUDA_HOME)")
    return build.build(BUILD_DIR)


def _run(driver: Path, *suites: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(driver), *suites], capture_output=True, text=True, env=build.sanitizer_env(),
                          timeout=600)


@pytest.mark.parametrize("suite", ["matrix", "stride", "wide", "planes", "errors", "shim", "units"])
def test_emulated_cuda_matches_cpu_reference(driver, suite):
    proc = _run(driver, suite)
    summary = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"{suite}:")]
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert summary and summary[0].endswith(", 0 failures"), proc.stdout
    checks = int(summary[0].split()[1])
    # The matrix sizes are part of what is tested: a silently shrunken matrix is a failure.
    assert checks >= {"matrix": 800, "stride": 800, "wide": 7, "planes": 15, "errors": 11, "shim": 3,
                      "units": 25_000_000}[suite], summary[0]


def test_unknown_suite_is_refused(driver):
    proc = _run(driver, "no-such-suite")
    assert proc.returncode == 2
    assert "unknown suite" in proc.stdout


@pytest.mark.slow
def test_every_injected_cuda_bug_is_caught(driver):
    mutations = _load("mutations")
    assert len(mutations.MUTATIONS) >= 6
    results = mutations.run_all(BUILD_DIR)
    missed = [r for r in results if not r["caught"]]
    assert not missed, missed
