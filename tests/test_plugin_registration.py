"""The plugin library is found by TensorRT-RTX the ways other tools load plugins (plugins/register.cpp).

Each route runs in its own process: registration happens when the library is loaded, and a
parser abort would take pytest down.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers_trt import needs_rtx, plugin_graph
from stn_deploy import schema

pytestmark = [needs_rtx, pytest.mark.plugin]

# Parses and builds a one-node plugin graph; "route" says how the library got in.
_SCRIPT = textwrap.dedent("""
    import ctypes, sys
    import tensorrt_rtx as trt
    route, library, onnx_path = sys.argv[1:4]
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    if route == "dlopen":
        ctypes.CDLL(library)
    elif route == "dlopen-then-load-library":
        ctypes.CDLL(library)
        assert trt.get_plugin_registry().load_library(library) is not None, "load_library refused"
    elif route == "load-library":
        assert builder.get_plugin_registry().load_library(library) is not None, "load_library refused"
    names = sorted(c.name for c in trt.get_plugin_registry().all_creators if c.name.startswith("STN"))
    print("global registry:", names)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(open(onnx_path, "rb").read()):
        print("parse failed:", parser.get_error(0).desc())
        sys.exit(3)
    engine = builder.build_serialized_network(network, builder.create_builder_config())
    print("engine bytes:", engine.nbytes if engine is not None else 0)
    sys.exit(0 if engine is not None else 4)
""")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    fields = {schema.FIELD_INTERPOLATION_MODE: 0, schema.FIELD_PADDING_MODE: 0, schema.FIELD_ALIGN_CORNERS: 0}
    return plugin_graph(tmp_path_factory.mktemp("reg") / "plugin.onnx", schema.GRID_SAMPLE_OP, fields)


def _rtx_libs() -> str:
    return importlib.util.find_spec("tensorrt_rtx_libs").submodule_search_locations[0]


def _run(args, env_extra=None, timeout=120, unset=()) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    for name in ("LD_PRELOAD", *unset):
        env.pop(name, None)
    env.update(env_extra or {})
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, check=False)


@pytest.mark.parametrize("route", ["dlopen", "dlopen-then-load-library", "load-library", "ld-preload", "ld-preload-as-typed"])
def test_route_builds_a_plugin_engine(route, library, onnx_path):
    env, unset = {}, ()
    if route == "ld-preload":
        # Loaded before Python: the library loads libtensorrt_rtx.so.1 by name, as a plugin
        # linked against TensorRT would through its DT_NEEDED entry.
        env = {"LD_PRELOAD": str(library), "LD_LIBRARY_PATH": _rtx_libs()}
    elif route == "ld-preload-as-typed":
        # Python is not running yet, so no sys.path: the site-packages of the Python the process was
        # started as (argv[0], the venv's bin/python), with no LD_LIBRARY_PATH or VIRTUAL_ENV.
        env, unset = {"LD_PRELOAD": str(library)}, ("LD_LIBRARY_PATH", "VIRTUAL_ENV")
    r = _run([sys.executable, "-c", _SCRIPT, route, str(library), str(onnx_path)], env, unset=unset)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "engine bytes:" in r.stdout
    if route in ("dlopen", "ld-preload", "ld-preload-as-typed"):
        assert "global registry: ['STNAffineGridSample', 'STNGridSample']" in r.stdout


def test_without_the_library_the_op_is_not_found(library, onnx_path):
    """The control: what makes the routes above pass is the library, not TensorRT-RTX itself."""
    r = _run([sys.executable, "-c", _SCRIPT, "none", str(library), str(onnx_path)])
    assert r.returncode == 3, r.stdout + r.stderr
    assert "Plugin not found" in r.stdout


@pytest.mark.parametrize("how", ["as-typed", "ld-library-path", "runtime-listed-first"])
def test_polygraphy_convert_with_plugins(how, library, onnx_path, tmp_path):
    polygraphy = Path(sys.executable).with_name("polygraphy")
    engine = tmp_path / "x.engine"
    # Polygraphy dlopens --plugins before it imports TensorRT-RTX: the plugin library loads the
    # wheel's libtensorrt_rtx.so.1 from Python's site-packages ("as-typed": the command a user
    # types, no LD_LIBRARY_PATH), from the loader's path, or finds it already loaded when
    # --plugins names it first (plugins/README.md).
    env = {"POLYGRAPHY_USE_TENSORRT_RTX": "1"}
    plugins = [str(library)]
    if how == "ld-library-path":
        env["LD_LIBRARY_PATH"] = _rtx_libs()
    elif how == "runtime-listed-first":
        plugins.insert(0, str(Path(_rtx_libs()) / "libtensorrt_rtx.so.1"))
    r = _run([str(polygraphy), "convert", str(onnx_path), "--plugins", *plugins, "-o", str(engine)],
             env, unset=("LD_LIBRARY_PATH", "VIRTUAL_ENV") if how == "as-typed" else ())
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert engine.stat().st_size > 1000


def test_kernel_api_does_not_pull_tensorrt_in(library):
    """kernels.py turns the load-by-name off: the CPU reference must not load TensorRT."""
    code = ("import stn_deploy.kernels as k; k.load_library(); "
            "print(any('libtensorrt_rtx' in line for line in open('/proc/self/maps')))")
    env = {"LD_LIBRARY_PATH": _rtx_libs(), "STN_DEPLOY_PLUGIN_LIBRARY": str(library),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    r = _run([sys.executable, "-c", code], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# A creator's error, as the ONNX parser would trigger it, seen by the application's logger.
_LOGGER_SCRIPT = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    import tensorrt_rtx as trt
    route, library = sys.argv[1:3]

    class Collecting(trt.ILogger):
        def __init__(self):
            super().__init__()
            self.messages = []

        def log(self, severity, msg):
            self.messages.append((severity, msg))

    logger = Collecting()
    builder = trt.Builder(logger)
    registry = builder.get_plugin_registry()
    if route == "load-library":
        assert registry.load_library(library) is not None, "load_library refused"
    else:
        ctypes.CDLL(library)
    creator = registry.get_creator("STNGridSample", "1", "")
    field = trt.PluginField("interpolation_mode", np.array([7], dtype=np.int32), trt.PluginFieldType.INT32)
    plugin = creator.create_plugin("node", trt.PluginFieldCollection([field]), trt.TensorRTPhase.BUILD)
    print("plugin:", plugin)
    for severity, msg in logger.messages:
        if msg.startswith("STN"):
            print("logged:", severity.name, msg)
""")


@pytest.mark.parametrize("route", ["load-library", "dlopen"])
def test_plugin_errors_reach_the_applications_logger(route, library):
    """TensorRT-RTX 1.7.1 hands over an ILoggerFinder and ILogger in the TensorRT 11 layout; the
    library calls them through it (before, findLogger was called as getAPILanguage and the
    message went to stderr). Load-time registration logs through the runtime's getLogger()."""
    r = _run([sys.executable, "-c", _LOGGER_SCRIPT, route, str(library)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "plugin: None" in r.stdout
    assert ("logged: ERROR STNGridSample: field 'interpolation_mode' = 7 is invalid: "
            "must be 0 (bilinear), 1 (nearest) or 2 (bicubic)") in r.stdout, r.stdout
    assert "[stn_deploy_plugins]" not in r.stderr, r.stderr
