"""Build options of the CUDA library (architectures, CUDA 12/13 toolkit) and its build facts
(``stn-deploy plugins path --json``). No GPU and no build needed."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from stn_deploy import kernels
from stn_deploy.cli import main
from stn_deploy.errors import UserError


def test_default_architectures_cover_every_generation(monkeypatch):
    monkeypatch.delenv(kernels.ARCHS_ENV, raising=False)
    assert kernels._default_archs((13, 0)) == ("75", "80", "86", "89", "90", "100", "103", "110", "120")
    assert kernels._cmake_archs(kernels._default_archs((13, 0))).endswith(";120-real;75-virtual")
    cuda12_9 = kernels._default_archs((12, 9))
    assert "110" not in cuda12_9 and {"100", "101", "103", "120"} <= set(cuda12_9)
    assert not {"100", "101", "103", "120"} & set(kernels._default_archs((12, 4)))


def test_archs_environment_override(monkeypatch):
    monkeypatch.setenv(kernels.ARCHS_ENV, "90")
    assert kernels._cmake_archs(kernels._default_archs((13, 0))) == "90-real;90-virtual"
    monkeypatch.setenv(kernels.ARCHS_ENV, "86,90")
    assert kernels._cmake_archs(kernels._default_archs((12, 9))) == "86-real;90-real;86-virtual"


def test_cuda12_toolkit_missing_says_what_pypi_lacks(monkeypatch, tmp_path):
    monkeypatch.setenv(kernels.CUDA12_HOME_ENV, str(tmp_path))
    monkeypatch.setattr(kernels, "_nvcc_release", lambda nvcc: (13, 0))  # every nvcc found is CUDA 13
    with pytest.raises(UserError, match="no CUDA 12 toolkit found.*only ptxas and libnvvm"):
        kernels.find_nvcc(12)


def test_tensorrt_wheel_sets_the_default_cuda_major(monkeypatch):
    class Dist:
        def __init__(self, name):
            self.metadata = {"Name": name}

    from importlib import metadata

    monkeypatch.setattr(metadata, "distributions", lambda: [Dist("numpy"), Dist("tensorrt_cu12"), Dist("onnx")])
    assert kernels.installed_tensorrt_cuda_major() == 12
    monkeypatch.setattr(metadata, "distributions", lambda: [Dist("tensorrt-rtx-cu13"), Dist("tensorrt_rtx")])
    assert kernels.installed_tensorrt_cuda_major() == 13
    monkeypatch.setattr(metadata, "distributions", lambda: [Dist("torch")])
    assert kernels.installed_tensorrt_cuda_major() is None


def test_cli_refuses_an_unknown_cuda_major():
    result = CliRunner().invoke(main, ["plugins", "build", "--cuda", "11"])
    assert result.exit_code == 2 and "'11' is not one of '12', '13'" in result.output


@pytest.mark.plugin
def test_plugins_path_json_reports_runtime_driver_and_architectures():
    if not kernels.library_path().exists():
        pytest.skip(f"plugin library {kernels.library_path()} not built")
    result = CliRunner().invoke(main, ["plugins", "path", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["path"] == str(kernels.library_path())
    assert info["version"].startswith("stn_deploy_plugins ")
    if info["cuda_runtime"] is None:
        pytest.skip("library built before stn_cuda_runtime_version existed; rebuild it")
    major = int(info["cuda_runtime"].split(".")[0])
    assert info["min_driver"].startswith({13: "580.", 12: "525."}[major])
    assert f"needs driver >= {info['min_driver']}" in info["version"]
    assert info["architectures"] and all(re.fullmatch(r"\d+-(real|virtual)", a) for a in info["architectures"])
    assert any(a.endswith("-virtual") for a in info["architectures"])
    assert info["driver_cuda"] is None or re.fullmatch(r"\d+\.\d+", info["driver_cuda"])
