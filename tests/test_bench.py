"""Tests of ``stn_deploy.jobs.bench`` and ``stn-deploy bench``: report fields and their consistency,
bad input (one line, exit 2), atomic outputs. No timing is asserted: only relations that hold
whatever the machine (p50 <= p90 <= p99, throughput = batch / p50, ratios against torch)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from stn_deploy.cli import main
from stn_deploy.errors import UserError
from stn_deploy.jobs import bench

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained ST-CNN (identity transformer) at 28x28, saved as a training checkpoint."""
    from stn_deploy.jobs.train import save_checkpoint
    from stn_deploy.models import ModelConfig, build_model

    config = ModelConfig("st-cnn-affine")
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    return save_checkpoint(path, build_model(config), config, {"note": "test"})


@pytest.fixture(scope="module")
def cpu_report(checkpoint, tmp_path_factory) -> bench.BenchResult:
    out = tmp_path_factory.mktemp("bench")
    options = bench.BenchOptions(model=checkpoint, backends=("torch", "ort", "trt"), batches=(1, 4), warmup=1, iters=5,
                                 output_dir=out, name="run", device="cpu")
    return bench.bench(options)


# --------------------------------------------------------------------------- pure helpers


def test_latency_stats_orders_percentiles():
    stats = bench.latency_stats([5.0, 1.0, 3.0, 2.0, 100.0, 4.0])
    assert stats["min_ms"] == 1.0
    assert stats["p50_ms"] == pytest.approx(3.5)
    assert stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= 100.0
    assert stats["iters"] == 6


def test_percentile_matches_numpy():
    import numpy as np

    values = sorted(np.random.default_rng(0).random(37).tolist())
    for q in (0, 10, 50, 90, 99, 100):
        assert bench.percentile(values, q) == pytest.approx(np.percentile(values, q))


@pytest.mark.parametrize("text,expected", [("torch", ("torch",)), ("ort, trt", ("ort", "trt")), ("torch,torch", ("torch",))])
def test_parse_backends(text, expected):
    assert bench.parse_backends(text) == expected


@pytest.mark.parametrize("text", ["", "torch,,ort", "tensorflow", "torch,onnx"])
def test_parse_backends_rejects(text):
    with pytest.raises(UserError):
        bench.parse_backends(text)


@pytest.mark.parametrize("text,expected", [("1", (1,)), ("1,8,64", (1, 8, 64)), ("8,1,8", (8, 1))])
def test_parse_batches(text, expected):
    assert bench.parse_batches(text) == expected


@pytest.mark.parametrize("text", ["", "1,,8", "x", "1.5", "0", "-1", "1;8"])
def test_parse_batches_rejects(text):
    with pytest.raises(UserError):
        bench.parse_batches(text)


@pytest.mark.parametrize("mode,taps", sorted(bench.TAPS.items()))
def test_sampler_bytes_downsampling_reads_taps(mode, taps):
    # 1080x1920 -> 64x64: far fewer taps than input pixels, so the read is taps x output.
    b = bench.sampler_bytes((2, 3, 1080, 1920), (64, 64), param_bytes=2 * 6 * 4, elem_bytes=2, mode=mode)
    assert b["input_read"] == 2 * 3 * taps * 64 * 64 * 2
    assert b["output"] == 2 * 3 * 64 * 64 * 2
    assert b["total"] == b["input_read"] + b["params"] + b["output"]


def test_sampler_bytes_same_size_reads_input_once():
    b = bench.sampler_bytes((4, 1, 28, 28), (28, 28), param_bytes=4 * 28 * 28 * 2 * 4, elem_bytes=4, mode="bicubic")
    assert b["input_read"] == 4 * 28 * 28 * 4
    assert b["params"] == 4 * 28 * 28 * 2 * 4


def test_copy_baseline_reports_bandwidth():
    stats = bench.copy_baseline(1 << 16, "cpu", warmup=1, iters=5)
    assert stats["bytes"] == 1 << 16
    assert stats["gbps"] == pytest.approx(2 * stats["bytes"] / (stats["p50_ms"] * 1e-3) / 1e9)


def test_options_reject_bad_values(tmp_path):
    with pytest.raises(UserError, match="unknown backend"):
        bench.BenchOptions(model=tmp_path / "m.pt", backends=("nope",))
    with pytest.raises(UserError, match="positive"):
        bench.BenchOptions(model=tmp_path / "m.pt", batches=(0,))
    with pytest.raises(UserError, match="iters"):
        bench.BenchOptions(model=tmp_path / "m.pt", iters=0)


# --------------------------------------------------------------------------- the report


def test_report_has_documented_fields(cpu_report):
    report = cpu_report.report
    assert report["format"] == bench.REPORT_FORMAT and report["version"] == bench.REPORT_VERSION
    assert report["model"]["kind"] == "checkpoint" and report["model"]["name"] == "st-cnn-affine"
    assert report["model"]["input_shape"] == [1, 28, 28]
    for key in ("cpu", "cpu_threads", "cuda"):
        assert key in report["device"]
    for key in ("python", "torch", "onnxruntime", "tensorrt", "stn_deploy"):
        assert key in report["versions"]
    assert report["settings"]["batches"] == [1, 4] and report["settings"]["iters"] == 5
    pairs = {(r["backend"], r["batch"]) for r in report["results"]}
    assert pairs == {(b, n) for b in ("torch", "ort", "trt") for n in (1, 4)}


def test_json_on_disk_is_the_report(cpu_report):
    on_disk = json.loads(cpu_report.json_path.read_text())
    assert on_disk == json.loads(json.dumps(cpu_report.report, default=str))
    assert cpu_report.png_path.read_bytes()[:8] == PNG_MAGIC
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in cpu_report.json_path.parent.iterdir()) == ["run.json", "run.png"]


def test_ok_rows_are_consistent(cpu_report):
    rows = [r for r in cpu_report.report["results"] if r["status"] == "ok"]
    assert {r["backend"] for r in rows} >= {"torch", "ort"}
    for r in rows:
        assert r["input_shape"] == [r["batch"], 1, 28, 28]
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert r["iters"] == 5
        assert r["throughput_sps"] == pytest.approx(r["batch"] / (r["p50_ms"] / 1000))


def test_speedup_is_against_torch_of_the_same_batch(cpu_report):
    rows = cpu_report.report["results"]
    torch_p50 = {r["batch"]: r["p50_ms"] for r in rows if r["backend"] == "torch"}
    for r in rows:
        if r["status"] != "ok":
            assert r["speedup_vs_torch"] is None
        elif r["backend"] == "torch":
            assert r["speedup_vs_torch"] == pytest.approx(1.0)
        else:
            assert r["speedup_vs_torch"] == pytest.approx(torch_p50[r["batch"]] / r["p50_ms"])


def test_ort_of_a_checkpoint_runs_an_exported_standard_onnx(cpu_report):
    report = cpu_report.report
    ort_rows = [r for r in report["results"] if r["backend"] == "ort"]
    assert all(r["status"] == "ok" for r in ort_rows)
    assert "standard" in ort_rows[0]["note"]
    assert "temporary" in report["model"]["onnx"]


def test_trt_without_gpu_is_skipped_not_failed(cpu_report):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: trt runs")
    for r in cpu_report.report["results"]:
        if r["backend"] == "trt":
            assert r["status"] == "skipped" and r["reason"] == "needs a GPU"


def test_sampler_section_against_copy(cpu_report):
    sampler = cpu_report.report["sampler"]
    assert sampler["status"] == "ok" and sampler["transform"] == "affine" and sampler["mode"] == "bilinear"
    torch_rows = [r for r in sampler["results"] if r["impl"] == "torch"]
    assert [r["batch"] for r in torch_rows] == [1, 4]
    for r in torch_rows:
        assert r["status"] == "ok"
        assert r["input_shape"] == [r["batch"], 1, 28, 28]
        assert r["bytes"]["total"] == r["bytes"]["input_read"] + r["bytes"]["params"] + r["bytes"]["output"]
        assert r["gbps"] == pytest.approx(r["bytes"]["total"] / (r["p50_ms"] * 1e-3) / 1e9)
        assert r["fraction_of_copy"] == pytest.approx(r["gbps"] / r["copy_gbps"])
    # The plugin row either ran or says why not.
    for r in sampler["results"]:
        assert r["status"] == "ok" or r.get("reason")


def test_tables_render(cpu_report):
    from rich.console import Console

    console = Console(record=True, width=120)
    for item in bench.render_tables(cpu_report.report):
        console.print(item)
    text = console.export_text()
    assert "torch" in text and "ort" in text and "skipped" in text or "trt" in text


def test_onnx_model_runs_ort_and_skips_torch(checkpoint, tmp_path):
    from stn_deploy.jobs import export

    onnx_path = tmp_path / "model.onnx"
    export.export(export.ExportOptions(checkpoint=checkpoint, output=onnx_path, ops="standard"))
    result = bench.bench(bench.BenchOptions(model=onnx_path, backends=("torch", "ort"), batches=(2,), warmup=0,
                                            iters=3, output_dir=tmp_path / "out"))
    rows = {r["backend"]: r for r in result.report["results"]}
    assert rows["torch"]["status"] == "skipped" and "checkpoint" in rows["torch"]["reason"]
    assert rows["ort"]["status"] == "ok" and rows["ort"]["speedup_vs_torch"] is None
    assert result.json_path.name == "bench-model.json"
    assert result.report["model"]["kind"] == "onnx" and result.report["model"]["input_shape"][-2:] == [28, 28]


@pytest.mark.plugin
def test_plugin_onnx_in_ort_is_marked_a_validation_path(checkpoint, tmp_path):
    from stn_deploy import kernels
    from stn_deploy.jobs import export

    try:
        kernels.load_library()
    except UserError as exc:
        pytest.skip(f"needs the plugin library: {exc}")
    onnx_path = tmp_path / "model.plugin.onnx"
    export.export(export.ExportOptions(checkpoint=checkpoint, output=onnx_path, ops="plugin"))
    result = bench.bench(bench.BenchOptions(model=checkpoint, onnx=onnx_path, backends=("torch", "ort"), batches=(2,),
                                            warmup=0, iters=3, output_dir=tmp_path / "out", sampler=False))
    row = next(r for r in result.report["results"] if r["backend"] == "ort")
    assert row["status"] == "ok" and row["note"] == bench.ORT_PLUGIN_NOTE
    assert result.report["model"]["onnx"] == str(onnx_path)


@pytest.mark.slow
def test_torch_compile_reports_compile_time(checkpoint, tmp_path):
    result = bench.bench(bench.BenchOptions(model=checkpoint, backends=("torch", "torch-compile"), batches=(2,),
                                            warmup=1, iters=3, output_dir=tmp_path, sampler=False, device="cpu"))
    row = next(r for r in result.report["results"] if r["backend"] == "torch-compile")
    assert row["status"] in ("ok", "failed")  # no C++ compiler is a failed row, not a crash
    if row["status"] == "ok":
        assert row["compile_s"] > 0 and row["speedup_vs_torch"] > 0
    assert "sampler" not in result.report


# --------------------------------------------------------------------------- the command


def _invoke(*args: str):
    return CliRunner().invoke(main, ["bench", *map(str, args)])


def test_cli_writes_outputs_and_prints_tables(checkpoint, tmp_path):
    res = _invoke(str(checkpoint), "--backends", "torch", "--batch", "2", "--warmup", "0", "--iters", "3",
                  "--no-sampler", "-o", str(tmp_path), "--name", "cli")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "cli.json").is_file() and (tmp_path / "cli.png").is_file()
    assert "p50 ms" in res.stdout and "cli.json" in res.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--backends", "torch,tensorflow"], "unknown backend 'tensorflow'"),
        (["--backends", ""], "malformed --backends"),
        (["--batch", "1,x"], "malformed --batch"),
        (["--batch", "0"], "malformed --batch"),
        (["--batch", "1,,8"], "malformed --batch"),
        (["--iters", "0"], "--iters"),
        (["--warmup", "many"], "--warmup"),
        (["--device", "gpu"], "--device"),
    ],
    ids=["unknown-backend", "empty-backends", "batch-not-int", "batch-zero", "batch-empty-item", "iters-zero",
         "warmup-not-int", "unknown-device"],
)
def test_cli_bad_options_exit_2_with_one_line(checkpoint, tmp_path, args, needle):
    res = _invoke(str(checkpoint), *args, "-o", str(tmp_path))
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0]
    assert not any(tmp_path.iterdir())


def test_cli_without_model_argument_exits_2():
    res = _invoke()
    assert res.exit_code == 2
    [line] = res.stderr.strip().splitlines()
    assert line.startswith("error: ") and line.endswith("bench: Missing argument 'MODEL'.")


def test_cli_missing_model_exits_2(tmp_path):
    res = _invoke(str(tmp_path / "nope.pt"), "-o", str(tmp_path / "out"))
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nope.pt" in lines[0]
    assert not (tmp_path / "out").exists()


def test_cli_foreign_model_file_exits_2(tmp_path):
    junk = tmp_path / "weights.onnx"
    junk.write_bytes(b"not a model")
    res = _invoke(str(junk), "-o", str(tmp_path / "out"))
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("error:")


def test_cli_missing_onnx_option_file_exits_2(checkpoint, tmp_path):
    res = _invoke(str(checkpoint), "--onnx", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "out"))
    assert res.exit_code == 2
    assert "missing.onnx" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_throughput_formula_holds_for_every_batch(cpu_report):
    for r in cpu_report.report["results"]:
        if r["status"] == "ok":
            assert math.isclose(r["throughput_sps"] * r["p50_ms"], 1000 * r["batch"], rel_tol=1e-9)


def test_time_interleaved_gives_every_callable_its_iterations():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    out = bench.time_interleaved({"a": make("a"), "b": make("b")}, warmup=2, iters=7, rounds=3)
    assert {k: len(v) for k, v in out.items()} == {"a": 7, "b": 7}
    assert calls == {"a": 9, "b": 9}
    assert all(t >= 0 for v in out.values() for t in v)


# --------------------------------------------------------------------------- benchmark scripts

REPO = Path(__file__).resolve().parents[1]


def _script(name: str):
    """Import ``benchmarks/<name>.py`` (pytest does not collect it; this keeps it from rotting)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_bench_script_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sampler_script_smoke(tmp_path):
    import torch

    sampler = _script("sampler")
    threads = torch.get_num_threads()
    try:
        assert sampler.main(["--quick", "--device", "cpu", "--modes", "bilinear,nearest", "--iters", "3", "--threads",
                             "1", "-o", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)  # --threads is process-wide; later tests keep theirs
    report = json.loads((tmp_path / "sampler-cpu.json").read_text())
    assert (tmp_path / "sampler-cpu.png").read_bytes()[:8] == PNG_MAGIC
    assert report["settings"]["cpu_threads"] == 1 and "versions" in report and "device" in report
    assert [(c["name"], c["mode"]) for c in report["cases"]] == [("mnist", "bilinear"), ("mnist", "nearest")]
    for case in report["cases"]:
        copy = case["results"]["copy"]
        assert copy["status"] == "ok" and copy["iters"] == 3
        assert case["bytes"]["total"] == case["bytes"]["input_read"] + case["bytes"]["params"] + case["bytes"]["output"]
        eager = case["results"]["torch-eager"]
        assert eager["status"] == "ok" and eager["fraction_of_copy"] == pytest.approx(copy["median_ms"] / eager["median_ms"])
        fused = case["results"]["plugin-fused"]
        if fused["status"] == "ok":
            assert case["ratios"]["plugin_speedup_vs_torch_eager"] == pytest.approx(eager["median_ms"] / fused["median_ms"])
        else:
            assert fused["reason"]


def test_sampler_script_rejects_unknown_case(capsys):
    assert _script("sampler").main(["--cases", "nope", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: unknown case 'nope'")


def test_model_script_smoke(tmp_path):
    model = _script("model")
    assert model.main(["--quick", "--backends", "torch,ort", "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "model-cpu.json").read_text())
    assert report["settings"]["models"] == ["cnn", "st-cnn-affine"]
    assert {(r["model"], r["backend"], r["batch"]) for r in report["summary"]} == {
        (m, b, n) for m in ("cnn", "st-cnn-affine") for b in ("torch", "ort") for n in (1, 8)
    }
    assert set(report["reports"]) == {"cnn", "st-cnn-affine"}
    assert (tmp_path / "model-cpu.png").is_file()


def test_threads_apply_to_the_run_and_are_restored(checkpoint, tmp_path):
    import torch

    before = torch.get_num_threads()
    result = bench.bench(bench.BenchOptions(model=checkpoint, backends=("torch", "ort"), batches=(1,), warmup=0, iters=2,
                                            output_dir=tmp_path, sampler=False, threads=1))
    assert result.report["settings"]["cpu_threads"] == 1
    assert torch.get_num_threads() == before
    with pytest.raises(UserError, match="threads"):
        bench.BenchOptions(model=checkpoint, threads=0)


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="needs tensorrt_rtx to build engines")
def test_compare_ops_reports_both_engines(tmp_path):
    """bench --compare-ops: plugin and native engines of one checkpoint, built side by side."""
    from helpers_export import kernels_available, perturbed_checkpoint

    if kernels_available() is not None:
        pytest.skip(f"needs the plugin library: {kernels_available()}")
    ckpt = perturbed_checkpoint(tmp_path / "m.pt", "st-cnn-affine", seed=0)
    result = _invoke(ckpt, "--backends", "torch", "--batch", "1", "--iters", "2", "--warmup", "0", "--no-sampler",
                     "--compare-ops", "-o", tmp_path / "out", "--name", "b")
    assert result.exit_code == 0, result.output
    ops = json.loads((tmp_path / "out" / "b.json").read_text())["ops"]
    assert ops["status"] == "ok" and ops["flavour"] == "rtx"
    for name in ("plugin", "native"):
        assert ops[name]["engine_bytes"] > 0 and ops[name]["build_seconds"] > 0
    assert "STNAffineGridSample" in str(ops["plugin"]["layers"]) or "PLUGIN" in str(ops["plugin"]["layers"])
    assert len(ops["native"]["layers"]) > len(ops["plugin"]["layers"])  # the base grid is built in the engine
    assert "plugin vs native engines" in result.output
def test_rows_flag_noise_by_their_own_percentiles(cpu_report):
    for row in cpu_report.report["results"]:
        if row["status"] == "ok":
            assert row["noisy"] is (row["p90_ms"] > bench.NOISY_P90_OVER_P50 * row["p50_ms"])
    noisy = {"backend": "ort", "batch": 1, "status": "ok", "p50_ms": 1.0, "p90_ms": 4.0, "p99_ms": 5.0,
             "throughput_sps": 1000.0, "speedup_vs_torch": None, "noisy": True}
    report = {**cpu_report.report, "results": [noisy], "settings": {**cpu_report.report["settings"],
                                                                     "backends": ["ort"]}}
    texts = [t for t in bench.render_tables(report) if isinstance(t, str)]
    assert any("ort batch 1: noisy" in t for t in texts)
    assert "noisy: p90 4.000 ms" in bench.report.row_line(noisy)


def test_default_output_is_a_new_run_folder(checkpoint, tmp_path, monkeypatch):
    import datetime as dt

    monkeypatch.chdir(tmp_path)
    now = dt.datetime(2026, 12, 1, 20, 0, 0, tzinfo=dt.UTC)
    first = bench.new_run_dir(checkpoint, now)
    assert first == Path("runs/bench-model-20261201-200000")
    first.mkdir(parents=True)
    assert bench.new_run_dir(checkpoint, now) == Path("runs/bench-model-20261201-200000-2")
    result = bench.bench(bench.BenchOptions(model=checkpoint, backends=("torch",), batches=(1,), warmup=0, iters=2,
                                            sampler=False, device="cpu"))
    assert result.json_path.parent.parent == Path("runs") and result.json_path.parent.name.startswith("bench-model-")
    assert result.json_path.is_file()


def test_cli_exits_2_when_no_backend_could_run(checkpoint, tmp_path):
    res = _invoke(str(checkpoint), "--backend", "trt", "--batch", "1", "--no-sampler", "-o", str(tmp_path), "--json")
    assert res.exit_code == 2
    assert json.loads(res.stdout)["results"][0]["status"] == "skipped"  # the report is still written and shown
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no backend could run model.pt (trt:")
