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
    if info["tensorrt_headers"] is None:
        pytest.skip("library built before stn_tensorrt_header_version existed; rebuild it")
    assert re.fullmatch(r"1[01]\.\d+\.\d+", info["tensorrt_headers"])
    assert info["runtimes"] == ["TensorRT 10", "TensorRT 11", "TensorRT-RTX 1"]


def _headers(folder, major: int, minor: int, patch: int, style: str = "enterprise"):
    """A TensorRT include folder whose NvInferVersion.h spells the version as 10.x+ (TRT_*_ENTERPRISE)
    or as 8.x did (NV_TENSORRT_* numbers)."""
    folder.mkdir(parents=True)
    (folder / "NvInferRuntime.h").write_text("// stand-in\n")
    if style == "enterprise":
        text = (f"#define TRT_MAJOR_ENTERPRISE {major}\n#define TRT_MINOR_ENTERPRISE {minor}\n"
                f"#define TRT_PATCH_ENTERPRISE {patch}\n#define NV_TENSORRT_MAJOR TRT_MAJOR_ENTERPRISE\n")
    else:
        text = f"#define NV_TENSORRT_MAJOR {major}\n#define NV_TENSORRT_MINOR {minor}\n#define NV_TENSORRT_PATCH {patch}\n"
    (folder / "NvInferVersion.h").write_text(text)
    return folder


def test_bundled_headers_version_is_read():
    if not (kernels.BUNDLED_TENSORRT_INCLUDE / "NvInferVersion.h").exists():
        pytest.skip("TensorRT headers not fetched (scripts/setup.sh)")
    assert kernels.tensorrt_header_version(kernels.BUNDLED_TENSORRT_INCLUDE) == (10, 14, 1)


def test_users_tensorrt_headers_are_found_before_the_bundled_ones(monkeypatch, tmp_path):
    bundled = _headers(tmp_path / "bundled", 10, 14, 1)
    old_system = _headers(tmp_path / "usr-include", 8, 6, 1, style="old")  # a Debian TensorRT 8: passed over
    debian = _headers(tmp_path / "usr-include-x86_64", 11, 1, 0)
    monkeypatch.setattr(kernels, "BUNDLED_TENSORRT_INCLUDE", bundled)
    monkeypatch.delenv(kernels.TENSORRT_ROOT_ENV, raising=False)
    monkeypatch.setattr(kernels, "SYSTEM_TENSORRT_INCLUDES", (old_system,))
    assert kernels.find_tensorrt_include() == (bundled, (10, 14, 1))
    monkeypatch.setattr(kernels, "SYSTEM_TENSORRT_INCLUDES", (old_system, debian))
    assert kernels.find_tensorrt_include() == (debian, (11, 1, 0))
    tarball = _headers(tmp_path / "TensorRT-11.4.0" / "include", 11, 4, 0)
    monkeypatch.setenv(kernels.TENSORRT_ROOT_ENV, str(tarball.parent))
    assert kernels.find_tensorrt_include() == (tarball, (11, 4, 0))
    assert kernels.find_tensorrt_include(bundled) == (bundled, (10, 14, 1))  # --tensorrt-include wins


def test_unusable_tensorrt_headers_are_refused(monkeypatch, tmp_path):
    with pytest.raises(UserError, match="no NvInferRuntime.h there"):
        kernels.find_tensorrt_include(tmp_path)
    old = _headers(tmp_path / "trt8", 8, 6, 1, style="old")
    with pytest.raises(UserError, match="8.6.1 .* need TensorRT 10.0 or newer"):
        kernels.find_tensorrt_include(old)
    (tmp_path / "rtx").mkdir()
    (tmp_path / "rtx" / "NvInferRuntime.h").write_text("")
    with pytest.raises(UserError, match="cannot read the TensorRT version"):
        kernels.find_tensorrt_include(tmp_path / "rtx")
    monkeypatch.delenv(kernels.TENSORRT_ROOT_ENV, raising=False)
    monkeypatch.setattr(kernels, "SYSTEM_TENSORRT_INCLUDES", (old,))
    monkeypatch.setattr(kernels, "BUNDLED_TENSORRT_INCLUDE", tmp_path / "missing")
    with pytest.raises(UserError, match="no TensorRT 10\\+ headers found"):
        kernels.find_tensorrt_include()


def test_build_passes_the_headers_it_found_to_cmake(monkeypatch, tmp_path):
    """Always passed, so a build without --tensorrt-include after one with it does not keep CMake's cached folder."""
    headers = _headers(tmp_path / "include", 11, 1, 0)
    commands = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    monkeypatch.setattr(kernels.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(kernels, "find_nvcc", lambda major: ("/usr/bin/nvcc", (13, 0)))
    monkeypatch.setattr(kernels.subprocess, "run", lambda cmd, **kw: commands.append(cmd) or Done())
    with pytest.raises(UserError, match="is missing"):  # nothing was really built
        kernels.build_library(build_dir=tmp_path / "build", archs="90", tensorrt_include=headers)
    assert f"-DSTN_TENSORRT_INCLUDE_DIR={headers.resolve()}" in commands[0]


def test_cli_names_a_header_folder_without_headers(tmp_path):
    result = CliRunner().invoke(main, ["plugins", "build", "--tensorrt-include", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --tensorrt-include")
