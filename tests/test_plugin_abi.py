"""The plugin library in TensorRT 10, 11 and TensorRT-RTX 1 processes, without any TensorRT.

plugins/abi/standInRuntime.cpp is a stand-in runtime library written from the published headers
(NVIDIA/TensorRT tags v10.14 and v11.1): built here as ``libnvinfer.so.10``, ``libnvinfer.so.11``,
``libtensorrt_rtx.so.1`` (and ``libnvinfer.so.12``, a major whose layout nobody verified), each with
that SONAME, exporting getInferLibVersion / getPluginRegistry / getLogger, with a registry,
logger finder and loggers in that major's layout whose every virtual slot records its own name.
plugins/abi/abiDriver.cpp (ASan + UBSan) loads one stand-in and the real plugin library into a
fresh process, both RTLD_LOCAL, with no TensorRT on the loader's path, and reports what happened:
so a call through the wrong table shows up as the wrong name, and a message that misses the
runtime's logger shows up as an empty message list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from stn_deploy import kernels

pytestmark = pytest.mark.plugin

ABI_DIR = kernels.PLUGIN_SOURCE_DIR / "abi"
BAD_MODE = "STNGridSample: field 'interpolation_mode' = 7 is invalid"
PREFIX = "[stn_deploy_plugins]"

#: soname -> (layout of its headers, getInferLibVersion)
RUNTIMES = {
    "libnvinfer.so.10": (10, 101401),
    "libnvinfer.so.11": (11, 110100),
    "libtensorrt_rtx.so.1": (11, 10701),
    "libnvinfer.so.12": (11, 120000),
}

#: Every call the plugin may make on the runtime's objects, in order, per layout. 11 and RTX ask
#: the finder and the logger what they are (slot 1) before calling slot 4; 10 has no such slot.
_EXPECTED_CALLS = {
    10: {
        "load_time": ["IPluginRegistry::registerCreator"] * 2 + ["ILogger::log"],
        "load_library": ["IPluginRegistry::loadLibrary"] + ["IPluginRegistry::deregisterCreator"] * 2
        + ["ILoggerFinder::findLogger", "ILogger::log"],
    },
    11: {
        "load_time": ["IPluginRegistry::registerCreator"] * 2 + ["ILogger::getInterfaceInfo", "ILogger::log"],
        "load_library": ["IPluginRegistry::loadLibrary"] + ["IPluginRegistry::deregisterCreator"] * 2
        + ["ILoggerFinder::getInterfaceInfo", "ILoggerFinder::findLogger", "ILogger::getInterfaceInfo", "ILogger::log"],
    },
}
_NAMES = {"libnvinfer.so.10": "TensorRT 10", "libnvinfer.so.11": "TensorRT 11", "libtensorrt_rtx.so.1": "TensorRT-RTX 1"}


def _compile(args: list[str]) -> None:
    r = subprocess.run(["g++", "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror", *args, "-ldl"],
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The stand-ins (plain, so Python can load them too) and the ASan + UBSan driver (~2 s)."""
    if shutil.which("g++") is None:
        pytest.skip("g++ not found")
    out = tmp_path_factory.mktemp("abi")
    jobs = [[*("-shared", "-fPIC", f"-DSTANDIN_LAYOUT={layout}", f"-DSTANDIN_VERSION={version}",
              f"-Wl,-soname,{soname}", "-o", str(out / soname), str(ABI_DIR / "standInRuntime.cpp"))]
            for soname, (layout, version) in RUNTIMES.items()]
    jobs.append(["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-omit-frame-pointer",
                 "-o", str(out / "abiDriver"), str(ABI_DIR / "abiDriver.cpp")])
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(_compile, jobs))
    return out


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD", "VIRTUAL_ENV", "POLYGRAPHY_USE_TENSORRT_RTX",
                        "STN_DEPLOY_PLUGINS_LOAD_TENSORRT")}
    env.update(ASAN_OPTIONS="halt_on_error=1:detect_leaks=1", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    env.update(extra)
    return env


def _drive(built: Path, args: list[str], **env: str) -> tuple[dict, str]:
    r = subprocess.run([str(built / "abiDriver"), *args], capture_output=True, text=True, env=_env(**env),
                       timeout=120, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout), r.stderr


def _calls(text: str) -> list[str]:
    return [c for c in text.split(";") if c]


@pytest.mark.parametrize("soname", ["libnvinfer.so.10", "libnvinfer.so.11", "libtensorrt_rtx.so.1"])
def test_registers_and_logs_through_the_runtimes_own_layout(soname, built, library):
    layout, version = RUNTIMES[soname]
    report, stderr = _drive(built, [str(built / soname), str(library)])
    assert report["registered_runtime"] == f"{_NAMES[soname]} {built / soname} {version}"

    # Registration at load time (Polygraphy --plugins, LD_PRELOAD): both creators, and a creator's
    # error reaches the runtime's global logger (getLogger) at kERROR (1).
    load_time = report["load_time"]
    assert load_time["creators"] == "STNGridSample,STNAffineGridSample"
    assert load_time["create_bad"] == 0
    assert load_time["messages"].startswith(f"global|1|{BAD_MODE}")
    assert _calls(load_time["calls"]) == _EXPECTED_CALLS[layout]["load_time"]

    # loadLibrary: setLoggerFinder + getCreators (which takes the load-time registration back, or
    # the registry would refuse the names); the error reaches the logger the finder hands out.
    loaded = report["load_library"]
    assert loaded["ok"] == 1
    assert loaded["creators"] == "STNGridSample,STNAffineGridSample"
    assert (loaded["create_bad"], loaded["create_good"]) == (0, 1)
    assert loaded["messages"].startswith(f"builder|1|{BAD_MODE}")
    assert _calls(loaded["calls"]) == _EXPECTED_CALLS[layout]["load_library"]
    assert PREFIX not in stderr, stderr


def test_an_unverified_major_is_never_called(built, library):
    """libnvinfer.so.12: no registry or logger call, one warning, loadLibrary still works."""
    report, stderr = _drive(built, [str(built / "libnvinfer.so.12"), str(library)])
    assert report["registered_runtime"] == ""
    assert report["load_time"] == {"creators": "", "create_bad": -1, "messages": "", "calls": ""}
    loaded = report["load_library"]
    assert (loaded["ok"], loaded["create_bad"], loaded["create_good"]) == (1, 0, 1)
    assert loaded["creators"] == "STNGridSample,STNAffineGridSample"
    assert loaded["messages"] == ""
    assert _calls(loaded["calls"]) == ["IPluginRegistry::loadLibrary"]
    warnings = [ln for ln in stderr.splitlines() if "getInferLibVersion 120000" in ln]
    assert len(warnings) == 1 and "never called" in warnings[0], stderr
    assert f"{PREFIX} {BAD_MODE}" in stderr


def _site(tmp_path: Path, built: Path, *libs: tuple[str, str]) -> Path:
    """A site-packages with pip's layout: <folder>/<soname> per lib."""
    site = tmp_path / "site-packages"
    for folder, soname in libs:
        (site / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(built / soname, site / folder / soname)
    return site


@pytest.mark.parametrize("where", ["beside-the-library", "virtual-env"])
def test_finds_the_pip_install_from_a_process_that_is_not_python(where, built, library, tmp_path):
    """Loaded before any TensorRT by a process with no sys.path (trtexec --staticPlugins, LD_PRELOAD):
    installed as site-packages/stn_deploy/libstn_deploy_plugins.so (a wheel), or with $VIRTUAL_ENV set."""
    venv = tmp_path / "venv"
    site = _site(venv / "lib" / "python3.11", built, ("tensorrt_libs", "libnvinfer.so.11"))
    env = {}
    if where == "beside-the-library":
        (site / "stn_deploy").mkdir()
        library = shutil.copy2(library, site / "stn_deploy" / library.name)
    else:
        env["VIRTUAL_ENV"] = str(venv)
    report, _ = _drive(built, ["--after", "libnvinfer.so.11", str(library)], **env)
    assert report["runtime_loaded"] is True
    assert report["registered_runtime"] == f"TensorRT 11 {site / 'tensorrt_libs' / 'libnvinfer.so.11'} 110100"
    assert report["load_time"]["creators"] == "STNGridSample,STNAffineGridSample"


@pytest.mark.parametrize("polygraphy_rtx, expected", [("", "TensorRT 11"), ("1", "TensorRT-RTX 1")])
def test_finds_the_pip_install_on_pythons_path(polygraphy_rtx, expected, built, library, tmp_path):
    """Polygraphy --plugins: ctypes loads the library before Python imports TensorRT, and pip put
    TensorRT off the loader's path. The library reads sys.path; POLYGRAPHY_USE_TENSORRT_RTX picks RTX."""
    site = _site(tmp_path, built, ("tensorrt_libs", "libnvinfer.so.11"), ("tensorrt_rtx_libs", "libtensorrt_rtx.so.1"))
    code = ("import ctypes, sys; sys.path.insert(0, sys.argv[1]); "
            "lib = ctypes.CDLL(sys.argv[2], mode=ctypes.RTLD_LOCAL); lib.stn_registered_runtime.restype = ctypes.c_char_p; "
            "print(lib.stn_registered_runtime().decode())")
    env = _env(POLYGRAPHY_USE_TENSORRT_RTX=polygraphy_rtx) if polygraphy_rtx else _env()
    r = subprocess.run([sys.executable, "-c", code, str(site), str(library)], capture_output=True, text=True, env=env,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    folder = "tensorrt_rtx_libs/libtensorrt_rtx.so.1" if polygraphy_rtx else "tensorrt_libs/libnvinfer.so.11"
    assert r.stdout.strip().startswith(f"{expected} {site / folder} ")


def test_kernel_api_loads_no_runtime(built, library, tmp_path):
    """STN_DEPLOY_PLUGINS_LOAD_TENSORRT=0 (kernels.py): nothing is loaded, even with a pip install beside it."""
    site = _site(tmp_path, built, ("tensorrt_libs", "libnvinfer.so.11"))
    (site / "stn_deploy").mkdir()
    installed = shutil.copy2(library, site / "stn_deploy" / library.name)
    report, _ = _drive(built, ["--after", "libnvinfer.so.11", str(installed)], STN_DEPLOY_PLUGINS_LOAD_TENSORRT="0")
    assert report == {"runtime_loaded": False, "registered_runtime": ""}


@pytest.fixture(scope="module")
def asan_library(request) -> Path:
    """The plugin library with its host code under ASan + UBSan (CMake STN_ENABLE_ASAN, one
    architecture), kept in pytest's cache folder: CMake rebuilds only what changed (~75 s first)."""
    if shutil.which("cmake") is None or shutil.which("nvcc") is None:
        pytest.skip("cmake or nvcc not found")
    build = request.config.cache.mkdir("stn-plugin-asan")
    steps = [["cmake", "-S", str(kernels.PLUGIN_SOURCE_DIR), "-B", str(build), "-DSTN_ENABLE_ASAN=ON",
              "-DSTN_BUILD_FUZZ=OFF", "-DSTN_CUDA_ARCHITECTURES=75-real", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"],
             ["cmake", "--build", str(build), "-j", "2"]]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return build / kernels.LIBRARY_NAME


@pytest.mark.slow
@pytest.mark.parametrize("soname", ["libnvinfer.so.10", "libnvinfer.so.11", "libtensorrt_rtx.so.1", "libnvinfer.so.12"])
def test_register_and_logging_code_is_clean_under_sanitizers(soname, built, asan_library):
    """The same routes with the plugin's own register/logging code instrumented: no ASan or UBSan
    report (halt_on_error), and the same calls as the release build."""
    report, stderr = _drive(built, [str(built / soname), str(asan_library)])
    assert "runtime error" not in stderr and "AddressSanitizer" not in stderr, stderr
    layout, _ = RUNTIMES[soname]
    if soname == "libnvinfer.so.12":
        assert _calls(report["load_library"]["calls"]) == ["IPluginRegistry::loadLibrary"]
    else:
        assert _calls(report["load_library"]["calls"]) == _EXPECTED_CALLS[layout]["load_library"]
        assert report["load_library"]["messages"].startswith(f"builder|1|{BAD_MODE}")
