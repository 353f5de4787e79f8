"""The pip wheel: built with the plugin library inside from a clean copy of the sources, installed
into a fresh venv and used from a folder outside any checkout; and where the package looks for its
library ($STN_DEPLOY_PLUGIN_LIBRARY, the installed package, a source tree's plugins/build).

The slow test: ``python -m build`` (the sdist, then the wheel built from that sdist, as pip
builds a downloaded sdist) for one architecture (``STN_CUDA_ARCHS=90``), then train, export
with plugin ops and run them in ONNX Runtime through the installed package's library.
It needs nvcc, cmake and the package index (build requirements and the TensorRT headers are
fetched at build time, as on a user's machine).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from stn_deploy import kernels
from stn_deploy.errors import UserError
from stn_deploy.kernels import LIBRARY_ENV, LIBRARY_NAME

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def layout(monkeypatch, tmp_path: Path) -> tuple[Path, Path]:
    """A package folder and a source tree's plugins/ of our own, in place of this checkout's."""
    package, plugins = tmp_path / "site-packages" / "stn_deploy", tmp_path / "checkout" / "plugins"
    package.mkdir(parents=True)
    (plugins / "build").mkdir(parents=True)
    (plugins / "CMakeLists.txt").write_text("project(x)\n")
    monkeypatch.delenv(LIBRARY_ENV, raising=False)
    monkeypatch.setattr(kernels.resources, "files", lambda name: package if name == "stn_deploy" else None)
    monkeypatch.setattr(kernels, "PLUGIN_SOURCE_DIR", plugins)
    monkeypatch.setattr(kernels, "DEFAULT_BUILD_DIR", plugins / "build")
    return package, plugins


def test_library_lookup_order_env_then_package_then_build_folder(layout, monkeypatch, tmp_path: Path) -> None:
    package, plugins = layout
    assert kernels.library_path() == plugins / "build" / LIBRARY_NAME  # nothing built yet: where the build puts it
    (package / LIBRARY_NAME).write_bytes(b"")
    (plugins / "build" / LIBRARY_NAME).write_bytes(b"")
    assert kernels.library_path() == package / LIBRARY_NAME
    monkeypatch.setenv(LIBRARY_ENV, str(tmp_path / "mine.so"))
    assert kernels.library_path() == tmp_path / "mine.so"


def test_wheel_install_without_sources_names_the_package_library_and_how_to_rebuild(layout) -> None:
    package, plugins = layout
    (plugins / "CMakeLists.txt").unlink()
    assert kernels.library_path() == package / LIBRARY_NAME  # missing: the wheel's place, not a build folder
    with pytest.raises(UserError, match=r"no plugin sources here.*STN_CUDA_ARCHS=86,90 pip install --force-reinstall"):
        kernels.build_library()


def _copy_sources(dest: Path) -> None:
    """What a clean clone holds, plus the working tree's uncommitted files (tracked or new, never
    ignored ones such as plugins/build or third_party), so the test builds the tree under test."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the working tree is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _run(cmd: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the sources as a git checkout")
@pytest.mark.skipif(shutil.which("nvcc") is None or shutil.which("cmake") is None, reason="needs nvcc and cmake")
def test_wheel_from_clean_sources_runs_plugin_ops_outside_the_checkout(tmp_path: Path) -> None:
    src, dist, venv, work = (tmp_path / d for d in ("src", "dist", "venv", "work"))
    _copy_sources(src)
    work.mkdir()
    # No path into the checkout or to its library may leak into the installed package's runs.
    env = {k: v for k, v in os.environ.items() if k not in (LIBRARY_ENV, "PYTHONPATH", "VIRTUAL_ENV")}

    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    venv_python = venv / "bin" / "python"
    venv_site = Path(subprocess.run([venv_python, "-c", "import sysconfig; print(sysconfig.get_paths()['platlib'])"],
                                    check=True, capture_output=True, text=True).stdout.strip()).resolve()
    # The dependencies (torch and friends, ~1.4 GB, minutes to install) come from this test's own
    # environment, appended after the venv's site-packages: the wheel's stn_deploy is found first,
    # which the assertions below check rather than assume.
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (venv_site / "_stn_test_dependencies.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    _run([venv_python, "-m", "pip", "install", "-q", "build>=1.2"], tmp_path, env)

    started = time.monotonic()
    _run([venv_python, "-m", "build", "--outdir", dist, src], tmp_path, {**env, "STN_CUDA_ARCHS": "90"}, timeout=1800)
    build_s = time.monotonic() - started
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    assert wheel.name.endswith(f"-py3-none-{platform}.whl"), wheel.name
    with tarfile.open(sdist) as tf:
        sdist_files = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"plugins/CMakeLists.txt", "plugins/register.cpp", "scripts/fetch_wheel_files.py", "stn_deploy/kernels.py"} <= sdist_files
    assert not any(n.startswith(("third_party/", "plugins/build/")) or n.endswith(".so") for n in sdist_files)
    with zipfile.ZipFile(wheel) as zf:
        assert f"stn_deploy/{LIBRARY_NAME}" in zf.namelist()
    print(f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.2f} MB, sdist + wheel built in {build_s:.0f} s")

    _run([venv_python, "-m", "pip", "install", "-q", "--no-deps", wheel], tmp_path, env)
    # The wheel's declared dependencies are what the borrowed environment holds.
    check = _run([venv_python, "-c", (
        "from importlib import metadata\n"
        "from packaging.requirements import Requirement\n"
        "for text in metadata.requires('stn-deploy'):\n"
        "    r = Requirement(text)\n"
        "    if r.marker is None or r.marker.evaluate({'extra': ''}):\n"
        "        assert r.specifier.contains(metadata.version(r.name), prereleases=True), (text, metadata.version(r.name))\n"
        "import stn_deploy, stn_deploy.kernels as k\n"
        "print(stn_deploy.__file__); print(k.library_path())\n")], work, env)
    package_file, library = (Path(line).resolve() for line in check.stdout.split())
    assert package_file.is_relative_to(venv_site), package_file
    assert library == venv_site / "stn_deploy" / LIBRARY_NAME and library.is_file()

    cli = venv / "bin" / "stn-deploy"
    assert _run([cli, "plugins", "path"], work, env).stdout.strip() == str(library)
    _run([cli, "train", "--model", "tutorial-stn", "--dataset", "R", "--epochs", "1", "--batch-size", "256", "--no-progress",
          "-o", "run"], work, env)
    _run([cli, "export", "run/model.pt", "--ops", "plugin", "-o", "plugin.onnx"], work, env)
    ops = {(n.domain, n.op_type) for n in onnx.load(work / "plugin.onnx").graph.node}
    assert ("stn_deploy", "STNAffineGridSample") in ops, ops
    ran = json.loads(_run([cli, "run", "plugin.onnx", "-o", "plugin.npz", "--json"], work, env).stdout)
    assert ran["backend"] == "ort"
    _run([cli, "run", "run/model.pt", "-o", "torch.npz"], work, env)
    # Same seeded inputs: the plugin ops (our library's CPU reference in ONNX Runtime) match torch.
    np.testing.assert_allclose(np.load(work / "plugin.npz")["output"], np.load(work / "torch.npz")["output"], atol=1e-4)

    # A wheel install has no sources to build: one error line saying what to do instead.
    rebuild = subprocess.run([cli, "plugins", "build"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert rebuild.returncode == 2
    assert rebuild.stderr.startswith("error: no plugin sources here") and "pip install" in rebuild.stderr
    assert len(rebuild.stderr.strip().splitlines()) == 1
