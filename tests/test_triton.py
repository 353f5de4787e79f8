"""``stn_deploy.triton``: repositories checked against Triton's schema, a KServe manifest, and a
real Triton Inference Server (the bundled 2.51, python backend) started here on free loopback
ports: HTTP + gRPC parity with PyTorch, dynamic batching under load, bad requests, a server
killed mid-load and restarted, ``stn-deploy serve`` stopped by SIGTERM, no stray processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers_cli import assert_one_line_error, invoke
from helpers_export import kernels_available, perturbed_checkpoint
from stn_deploy.errors import UserError
from stn_deploy.tolerances import compare, tolerance_for

pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc,http] (pip install 'stn-deploy[triton]')")
pytest.importorskip("yaml", reason="needs PyYAML (pip install 'stn-deploy[triton]')")

from stn_deploy.triton import client as tc
from stn_deploy.triton.config import ConfigSpec, TensorSpec, parse_config, render_config
from stn_deploy.triton.kserve import check_inference_service, load_inference_service
from stn_deploy.triton.repository import FLAGS_FILE, RepositoryOptions, write_repository
from stn_deploy.triton.server import (
    ServerOptions,
    TritonServer,
    find_server,
    free_ports,
)

HAS_RTX = importlib.util.find_spec("tensorrt_rtx") is not None
MAX_BATCH = 8  # small, so that a batch beyond it is a small request
SERVED = ("stn-python",)
TOL = tolerance_for("float32")


def _server_missing() -> str | None:
    try:
        install = find_server()
    except UserError as exc:
        return str(exc)
    from stn_deploy.triton.server import python_backend_env

    try:
        if python_backend_env() is None:
            return "no python-backend environment (third_party/triton/python-env; run scripts/setup.sh)"
    except UserError as exc:
        return str(exc)
    if install.backend_dir is None:
        return "tritonserver without a backends folder"
    if install.bundled and not (install.backend_dir / "python" / "triton_python_backend_stub").is_file():
        return "the bundled server has no python-backend stub for this Python (see scripts/setup.sh)"
    return None


needs_server = pytest.mark.skipif(_server_missing() is not None, reason=f"needs Triton: {_server_missing()}")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (a repository path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if text in cmd and state != "Z":
                found.append(cmd)
    return found


def wait_gone(text: str, seconds: float = 10.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while (left := processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A perturbed checkpoint, its standard and plugin exports, and (with RTX) an engine."""
    d = tmp_path_factory.mktemp("triton-models")
    ckpt = perturbed_checkpoint(d / "stn.pt", "st-cnn-affine", seed=3)
    assert invoke("export", ckpt, "-o", d / "stn.onnx").exit_code == 0
    assert invoke("export", ckpt, "-o", d / "plugin.onnx", "--ops", "plugin").exit_code == 0
    out = {"ckpt": Path(ckpt), "onnx": d / "stn.onnx", "plugin": d / "plugin.onnx", "dir": d, "engine": None}
    out["no_engine"] = "needs tensorrt_rtx" if not HAS_RTX else kernels_available()
    if out["no_engine"] is None:
        res = invoke("build", d / "plugin.onnx", "-o", d / "stn.engine", "--trt", "rtx", "--no-doctor",
                     "--shapes", "input:1x1x28x28,4x1x28x28,16x1x28x28")
        assert res.exit_code == 0, res.stderr
        out["engine"] = d / "stn.engine"
    return out


def reference(models, x: np.ndarray) -> np.ndarray:
    from stn_deploy.model_files import load_model

    model, _ = load_model(models["ckpt"])
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def repo(models, tmp_path_factory):
    """The checkpoint as stn-onnx (onnxruntime backend, which the bundled server lacks) and
    stn-python (python backend): the servers below load stn-python alone (``--model``)."""
    out = tmp_path_factory.mktemp("triton-repo") / "repo"
    write_repository(RepositoryOptions(models=(models["ckpt"],), output=out, name="stn", serve_as=("onnx", "python"),
                                       max_batch_size=MAX_BATCH, max_queue_delay_us=2000))
    return out


@pytest.fixture(scope="module")
def server(repo):
    if _server_missing():
        pytest.skip(_server_missing())
    h, g, m = free_ports(3)
    s = TritonServer(ServerOptions(repo, http_port=h, grpc_port=g, metrics_port=m, models=SERVED))
    s.start()
    yield s
    s.stop()
    s.close_log()
    assert wait_gone(str(repo)) == [], "server or stub processes outlived stop()"


# --------------------------------------------------------------------------- repository and schema


def test_every_generated_config_parses_against_the_schema(models, tmp_path):
    if models["engine"] is None:
        pytest.skip(f"no engine entry: {models['no_engine']}")
    out = tmp_path / "repo"
    res = invoke("triton", models["ckpt"], models["engine"], "-o", out, "--kserve", "--storage-uri", "s3://b/stn")
    assert res.exit_code == 0, res.stderr
    configs = sorted(out.glob("*/config.pbtxt"))
    assert [p.parent.name for p in configs] == ["stn", "stn-onnx", "stn-python"]
    parsed = {p.parent.name: parse_config(p.read_text(), p.parent.name) for p in configs}
    plan = parsed["stn"]
    assert plan.platform == "tensorrt_plan" and plan.max_batch_size == 16  # the profile's max
    assert list(plan.input[0].dims) == [1, 28, 28] and list(plan.output[0].dims) == [10]
    assert list(plan.dynamic_batching.preferred_batch_size) == [4, 16]  # profile opt and max
    assert plan.instance_group[0].kind == plan.instance_group[0].KIND_GPU
    assert "TensorRT-RTX" in configs[0].read_text().splitlines()[0]  # the flavour the engine needs
    assert (out / "stn" / "1" / "model.plan").read_bytes() == models["engine"].read_bytes()
    lib = out / "stn" / "plugins" / "libstn_deploy_plugins.so"
    assert lib.is_file()
    flags = (out / FLAGS_FILE).read_text()
    assert f"--backend-config=tensorrt,plugins={lib}" in flags.splitlines()
    assert parsed["stn-onnx"].backend == "onnxruntime" and parsed["stn-python"].backend == "python"
    assert (out / "stn-python" / "1" / "model.py").is_file()
    service = load_inference_service(out / "inferenceservice.yaml")
    model = service["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://b/stn" and model["modelFormat"]["name"] == "triton"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "--backend-config=tensorrt,plugins=/mnt/models/stn/plugins/libstn_deploy_plugins.so" in model["args"]
    assert {"name": "LD_PRELOAD", "value": "/mnt/models/stn/plugins/libstn_deploy_plugins.so"} in model["env"]


@pytest.mark.parametrize("text, words", [
    ('name: "m" backend: "python" max_batch_size: 4 inputs [{ name: "x" }]', "inputs"),  # unknown field
    (('name: "m" backend: "python" max_batch_size: 4 input [{ name: "x" data_type: TYPE_FLOAT32 dims: [1] }] '
      'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]'), "TYPE_FLOAT32"),  # unknown enum value
    (('name: "m" backend: "python" max_batch_size: 4 input [{ name: "x" data_type: TYPE_FP32 dims: [1] }] '
      'output [{ name: "y" data_type: TYPE_FP32 dims: [0] }]'), "dims"),
    (('name: "m" backend: "python" max_batch_size: 4 input [{ name: "x" data_type: TYPE_FP32 dims: [1] }] '
      'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }] dynamic_batching { preferred_batch_size: [8] }'),
     "preferred_batch_size"),
    (('name: "m" platform: "tensorrt_plan" max_batch_size: 4 input [{ name: "x" data_type: TYPE_FP32 dims: [1] }] '
      'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }] instance_group [{ kind: KIND_CPU count: 1 }]'), "KIND_GPU"),
    (('name: "other" backend: "python" max_batch_size: 4 input [{ name: "x" data_type: TYPE_FP32 dims: [1] }] '
      'output [{ name: "y" data_type: TYPE_FP32 dims: [1] }]'), "folder"),
], ids=["unknown-field", "unknown-enum", "zero-dim", "preferred-over-max", "plan-on-cpu", "name-vs-folder"])
def test_the_schema_check_rejects_broken_configs(text, words):
    with pytest.raises(UserError, match=words):
        parse_config(text, "m")


def test_render_config_round_trips():
    spec = ConfigSpec(name="m", platform=None, backend="python", max_batch_size=8,
                      inputs=(TensorSpec("input", "float32", (1, -1, -1)),),
                      outputs=(TensorSpec("output", "float32", (10,)),), preferred_batch_sizes=(4, 8))
    config = parse_config(render_config(spec, ["a comment"]), "m")
    assert list(config.input[0].dims) == [1, -1, -1] and config.dynamic_batching.max_queue_delay_microseconds == 100


def test_kserve_check_names_what_is_missing(models, tmp_path):
    out = tmp_path / "repo"
    assert invoke("triton", models["onnx"], "-o", out, "--kserve", "--serve-as", "python").exit_code == 0
    service = load_inference_service(out / "inferenceservice.yaml")
    assert "nvidia.com/gpu" not in service["spec"]["predictor"]["model"]["resources"]["limits"]
    import copy

    def broken(edit):
        s = copy.deepcopy(service)
        edit(s)
        return s

    cases = [
        (lambda s: s.pop("apiVersion"), "apiVersion"),
        (lambda s: s["metadata"].update(name="Stn_Model"), "metadata.name"),
        (lambda s: s["spec"]["predictor"]["model"].pop("storageUri"), "storageUri"),
        (lambda s: s["spec"]["predictor"]["model"]["modelFormat"].update(name="onnx"), "modelFormat"),
        (lambda s: s["spec"]["predictor"].update(minReplicas=5, maxReplicas=2), "minReplicas"),
    ]
    for edit, words in cases:
        with pytest.raises(UserError, match=words):
            check_inference_service(broken(edit))
    with pytest.raises(UserError, match="nvidia.com/gpu"):
        check_inference_service(service, needs_gpu=True)


def test_bad_input_is_one_line_and_leaves_nothing(models, tmp_path):
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep").write_text("x")
    assert_one_line_error(invoke("triton", models["onnx"], "-o", existing), 2, "exists")
    assert [p.name for p in existing.iterdir()] == ["keep"]
    assert_one_line_error(invoke("triton", models["plugin"], "-o", tmp_path / "a"), 2, "plugin ops", "stn-deploy build")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")
    assert_one_line_error(invoke("triton", junk, "-o", tmp_path / "b"), 2)
    assert_one_line_error(invoke("triton", models["onnx"], models["ckpt"], "-o", tmp_path / "c", "--name", "x"), 2,
                          "--name")
    assert_one_line_error(invoke("triton", models["onnx"], "-o", tmp_path / "d", "--serve-as", "tflite"), 2, "tflite")
    if models["engine"] is not None:
        assert_one_line_error(invoke("triton", models["engine"], "-o", tmp_path / "e", "--max-batch-size", "17"), 2,
                              "17", "max batch 16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists", "junk.bin"]  # no partial repository


# --------------------------------------------------------------------------- a real server


@needs_server
@pytest.mark.slow
def test_http_and_grpc_equal_pytorch(server, models):
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    expected = reference(models, x)
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        out = tc.infer(tc.TritonTarget(url, "stn-python", protocol), {"input": x})["output"]
        stats = compare(out, expected, TOL)
        assert stats.passed, f"{protocol}: {stats.line()}"


@needs_server
@pytest.mark.slow
def test_run_backend_triton(server, models, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "in.npz", input=x)
    res = invoke("run", "stn-python", "--backend", "triton", "--url", f"http://{server.http_url}",
                 "--inputs", tmp_path / "in.npz", "-o", tmp_path / "out.npz")
    assert res.exit_code == 0, res.stderr
    with np.load(tmp_path / "out.npz") as data:
        assert compare(data["output"], reference(models, x), TOL).passed
    assert_one_line_error(invoke("run", "nope", "--backend", "triton", "--url", server.grpc_url,
                                 "-o", tmp_path / "never.npz"), 2, "nope")
    assert not (tmp_path / "never.npz").exists()


@needs_server
@pytest.mark.slow
def test_dynamic_batching_under_concurrency(server):
    target = tc.TritonTarget(server.grpc_url, "stn-python")
    x = np.zeros((1, 1, 28, 28), np.float32)
    result = tc.load_test(tc.LoadOptions(target, {"input": x}, concurrency=16, requests=400, warmup=16))
    assert result.failed == 0 and result.succeeded == 400, result.errors
    # The server's own statistics: executions per batch size during the load.
    assert sum(size * count for size, count in result.batch_sizes.items()) == 400
    assert max(result.batch_sizes) > 1, result.batch_sizes


@needs_server
@pytest.mark.slow
def test_bad_requests_get_clean_errors_and_the_server_keeps_serving(server):
    good = np.zeros((1, 1, 28, 28), np.float32)
    cases = [
        ("missing", {"input": good}, "missing"),
        ("stn-python", {"input": np.zeros((1, 1, 28, 29), np.float32)}, "shape"),
        ("stn-python", {"input": good.astype(np.float64)}, "FP64"),
        ("stn-python", {"input": np.zeros((MAX_BATCH + 1, 1, 28, 28), np.float32)}, "batch"),
        ("stn-python", {"wrong": good}, "wrong"),
    ]
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        for name, feed, words in cases:
            with pytest.raises(tc.TritonRequestError, match=words):
                tc.infer(tc.TritonTarget(url, name, protocol), feed, output_names=["output"])
        assert tc.infer(tc.TritonTarget(url, "stn-python", protocol), {"input": good})["output"].shape == (1, 10)
    assert server.alive()


@needs_server
@pytest.mark.slow
def test_kill_mid_load_then_restart(repo, tmp_path):
    own = tmp_path / "killed-repo"  # its own path, to find its processes
    shutil.copytree(repo, own)
    h, g, m = free_ports(3)
    options = ServerOptions(own, http_port=h, grpc_port=g, metrics_port=m, models=SERVED)
    server = TritonServer(options).start()
    try:
        stubs = [p for p in processes_mentioning(str(own)) if "triton_python_backend_stub" in p]
        assert stubs, "expected a python-backend stub process"
        target = tc.TritonTarget(server.grpc_url, "stn-python", timeout_s=5)
        feed = {"input": np.zeros((1, 1, 28, 28), np.float32)}
        total = 20_000  # more than the server answers before the kill
        results = []
        load = threading.Thread(target=lambda: results.append(tc.load_test(
            tc.LoadOptions(target, feed, concurrency=8, requests=total, warmup=0))))
        load.start()
        time.sleep(1.0)
        server.kill()
        load.join(60)
        assert not load.is_alive()
        (result,) = results
        assert result.succeeded > 0 and result.failed > 0, result
        assert result.succeeded + result.failed == total and result.errors
        server.stop()  # reaps what the crash left (stubs)
        assert wait_gone(str(own)) == []
        server = TritonServer(options).start()  # same ports again
        out = tc.infer(target, feed)["output"]
        assert out.shape == (1, 10) and np.isfinite(out).all()
    finally:
        server.stop()
        server.close_log()
    assert wait_gone(str(own)) == []


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen):
    """The process, killed on the way out if a failed assertion left it running."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _lines_until_ready(proc: subprocess.Popen) -> list[str]:
    """``stn-deploy serve``'s stdout up to its "Ctrl-C stops it." line (the server is ready)."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Ctrl-C"):
            break
    return lines


@needs_server
@pytest.mark.slow
def test_serve_cli_stops_on_sigterm_and_reports_failures(repo, models, tmp_path):
    repo = shutil.copytree(repo, tmp_path / "served")  # its own path, to find its processes
    h, g, m = free_ports(3)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                       os.environ.get("PYTHONPATH")]))}
    argv = [sys.executable, "-m", "stn_deploy.cli", "serve", str(repo), "--http-port", str(h),
            "--grpc-port", str(g), "--metrics-port", str(m), "--model", "stn-python"]
    with _reaped(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)) as proc:
        lines = _lines_until_ready(proc)
        assert any(f"127.0.0.1:{g}" in ln for ln in lines), lines
        assert tc.infer(tc.TritonTarget(f"127.0.0.1:{g}", "stn-python"),
                        {"input": np.zeros((1, 1, 28, 28), np.float32)})["output"].shape == (1, 10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert wait_gone(str(repo)) == []

    # SIGTERM while the server is still starting: it is stopped too, exit 130.
    with _reaped(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)) as proc:
        deadline = time.monotonic() + 30
        while not any("tritonserver" in p for p in processes_mentioning(str(repo))):
            assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "ready" not in out, (out, err)
    assert wait_gone(str(repo)) == []

    # A port in use: one line, before any server starts.
    with __import__("socket").socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(invoke("serve", repo, "--http-port", port, "--grpc-port", g, "--metrics-port", m), 2,
                              f"port {port}", "in use")
    # As the README types it, no --model: the bundled server loads stn-python and names what it
    # skipped (stn-onnx needs the onnxruntime backend, which it lacks).
    plain = [a for a in argv if a not in ("--model", "stn-python")]
    with _reaped(subprocess.Popen(plain, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)) as proc:
        lines = _lines_until_ready(proc)
        assert any(ln.startswith("skipped  stn-onnx: needs the onnxruntime backend") for ln in lines), lines
        assert any("serving stn-python" in ln for ln in lines), lines
        assert tc.infer(tc.TritonTarget(f"127.0.0.1:{g}", "stn-python"),
                        {"input": np.zeros((1, 1, 28, 28), np.float32)})["output"].shape == (1, 10)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert wait_gone(str(repo)) == []
    # Asked for a model the server cannot load: one line before any server starts.
    res = invoke("serve", repo, "--http-port", h, "--grpc-port", g, "--metrics-port", m, "--model", "stn-onnx")
    assert_one_line_error(res, 2, "--model stn-onnx", "onnxruntime backend", "--server")
    # A repository whose model cannot load here: the server's own words in one line.
    broken = tmp_path / "broken"
    shutil.copytree(repo, broken)
    (broken / "stn-python" / "1" / "model.onnx").write_bytes(b"truncated")
    res = invoke("serve", broken, "--http-port", h, "--grpc-port", g, "--metrics-port", m, "--model", "stn-python")
    assert_one_line_error(res, 2, "tritonserver exited", "stn-python")
    assert wait_gone(str(broken)) == []


def _fake_install(tmp_path, backends, bundled=True):
    from stn_deploy.triton.server import ServerInstall

    root = tmp_path / "tritonserver"
    for b in backends:
        (root / "backends" / b).mkdir(parents=True)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    return ServerInstall(root / "bin" / "tritonserver", root / "backends" if backends else None, None, bundled)


@pytest.mark.parametrize("backends,requested,load,skipped,error", [
    (["python"], (), ("stn-python",), {"stn-onnx"}, None),           # the bundled server
    (["python", "onnxruntime"], (), (), set(), None),                # a full Triton: everything, as before
    ([], (), (), set(), None),                                       # backends unknown: load all
    (["python"], ("stn-python",), ("stn-python",), set(), None),
    (["python"], ("stn-onnx",), None, None, "--model stn-onnx needs the onnxruntime backend"),
    (["tensorrt"], (), None, None, "no model of"),
    (["python"], ("nope",), None, None, "has no model nope"),
])
def test_serve_selects_what_the_server_has_backends_for(repo, tmp_path, backends, requested, load, skipped, error):
    from stn_deploy.triton.server import select_models

    install = _fake_install(tmp_path, backends)
    if error:
        with pytest.raises(UserError, match=error):
            select_models(repo, install, requested)
        return
    chosen = select_models(repo, install, requested)
    assert chosen.load == load and set(chosen.skipped) == skipped
    for why in chosen.skipped.values():
        assert "onnxruntime backend" in why and "it has: python" in why


def test_serve_with_nothing_loadable_names_the_flag(models, tmp_path):
    """An onnxruntime-only repository on a python-only server: one line naming what to do."""
    from stn_deploy.triton.server import select_models

    out = tmp_path / "onnx-only"
    write_repository(RepositoryOptions(models=(models["onnx"],), output=out, name="m", serve_as=("onnx",)))
    with pytest.raises(UserError, match=r"--serve-as python\) or give --server"):
        select_models(out, _fake_install(tmp_path, ["python"]))


@needs_server
@pytest.mark.slow
def test_bench_triton_rows_and_in_process_baseline(server, models):
    from stn_deploy.triton.bench import TritonBenchOptions, bench_triton

    result = bench_triton(TritonBenchOptions(server.grpc_url, "stn-python", concurrency=(1, 4), requests=100,
                                             warmup=8, onnx=models["onnx"]))
    assert [r["concurrency"] for r in result.rows] == [1, 4]
    for row in result.rows:
        assert row["failed"] == 0 and row["succeeded"] == 100
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"]
        assert row["latency_over_in_process"] == pytest.approx(row["p50_ms"] / result.baseline["p50_ms"])
        assert sum(int(k) * v for k, v in row["batch_sizes"].items()) == 100
    with pytest.raises(UserError, match="nope"):
        bench_triton(TritonBenchOptions(server.grpc_url, "nope"))


def test_no_dynamic_batching_and_the_numpy2_guard(models, tmp_path):
    out = tmp_path / "repo"
    assert invoke("triton", models["onnx"], "-o", out, "--serve-as", "python", "--no-dynamic-batching",
                  "--max-batch-size", "4", "--instances", "2").exit_code == 0
    config = parse_config((out / "stn-python" / "config.pbtxt").read_text(), "stn-python")
    assert not config.HasField("dynamic_batching") and config.max_batch_size == 4
    assert config.instance_group[0].count == 2
    # The stub corrupts tensors under numpy 2: an environment with it is refused, in one line.
    from stn_deploy.triton.server import python_backend_env

    if int(np.__version__.split(".")[0]) < 2:
        pytest.skip("this interpreter's numpy is < 2")
    with pytest.raises(UserError, match="numpy 2"):
        python_backend_env(Path(sys.prefix))
    h, g, m = free_ports(3)
    res = invoke("serve", out, "--python-env", sys.prefix, "--http-port", h, "--grpc-port", g, "--metrics-port", m)
    assert_one_line_error(res, 2, "numpy")


@needs_server
@pytest.mark.slow
def test_bench_cli_backend_triton_writes_the_serving_section(server, models, tmp_path):
    result = invoke("bench", models["onnx"], "--backends", "triton", "--url", server.grpc_url, "--model-name",
                    "stn-python", "--concurrency", "1,4", "--iters", "50", "--warmup", "5", "--batch", "1",
                    "--no-sampler", "-o", tmp_path, "--name", "b")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "b.json").read_text())
    rows = report["serving"]["rows"]
    assert [r["concurrency"] for r in rows] == [1, 4] and all(r["failed"] == 0 for r in rows)
    assert report["serving"]["baseline"]["p50_ms"] > 0 and report["results"] == []
    assert "served by Triton" in result.stdout
    assert_one_line_error(invoke("bench", models["onnx"], "--backends", "triton", "-o", tmp_path), 2, "--url")
