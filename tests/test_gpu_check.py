"""The GPU check (scripts/gpu-check.sh -> benchmarks/gpu_check.py) rehearsed without a GPU: its
dry run must produce every result file, so that the one real run on a lent GPU machine does not
die of a typo; and its parsers must read what pytest and Nsight Compute write."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stn_deploy.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_script_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _script("gpu_check")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run through the shell entry point, as the device machine would start it."""
    out = tmp_path_factory.mktemp("gpu-check")
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu-check.sh"), "--dry-run", "--out", str(out),
                           "--budget-s", "150"], capture_output=True, text=True, env=env, timeout=300)
    return proc, out


def test_dry_run_writes_every_result_file_within_the_tools_limits(dry_run, gpu_check):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(["gpu-check-dry-run.json", "gpu-check-dry-run.log", "sampler-dry-run.json",
                            "sampler-dry-run.png"])
    assert len(files) <= gpu_check.MAX_FILES
    assert all((out / f).stat().st_size < gpu_check.MAX_FILE_BYTES for f in files)
    assert (out / "sampler-dry-run.png").read_bytes()[:8] == PNG_MAGIC
    assert "DRY RUN" in proc.stdout and "target" in proc.stdout


def test_dry_run_summary_schema(dry_run, gpu_check):
    _, out = dry_run
    summary = json.loads((out / "gpu-check-dry-run.json").read_text())
    assert summary["format"] == "stn-deploy-gpu-check" and summary["dry_run"] is True and "synthetic" in summary["note"]
    assert [s["name"] for s in summary["steps"]] == list(gpu_check.STEPS)
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert status["environment"] == "ok" and status["sampler"] == "ok"
    assert status["build"] == status["parity"] == status["profile"] == "planned"
    # Optional: a collection error in some other test module fails it without failing the run.
    assert status["gpu-tests"] in ("planned", "failed")
    assert status["wheels"] in ("ok", "skipped")  # skipped on a clean clone: .whl/ is made by scripts/gpu-wheels.sh
    assert summary["complete"] is True and summary["stopped"] is None and summary["exit_code"] == 0
    assert all(s["limit_s"] <= gpu_check.STEP_LIMITS_S[s["name"]] for s in summary["steps"])
    build = next(s for s in summary["steps"] if s["name"] == "build")
    assert "-DSTN_CUDA_ARCHITECTURES=90-real" in build["commands"][0] and summary["library"]["archs"] == "sm_90"
    assert build["commands"][-1].endswith(f"-j {os.cpu_count()}")
    parity = next(s for s in summary["steps"] if s["name"] == "parity")
    assert " -m gpu " in parity["commands"][0] and "-p benchmarks.pytest_progress" in parity["commands"][0]
    assert parity["commands"][0].endswith(" ".join(gpu_check.PARITY_TESTS))  # the kernels' parity, nothing else
    gpu_tests = next(s for s in summary["steps"] if s["name"] == "gpu-tests")
    assert all(f"--ignore={t}" in gpu_tests["commands"][0] for t in gpu_check.PARITY_TESTS)
    profile = next(s for s in summary["steps"] if s["name"] == "profile")
    assert profile["commands"][0].startswith("ncu --clock-control none") and "--profile-launches" in profile["commands"][0]
    for key in ("device", "versions", "wheels", "library", "sampler", "targets", "files", "seconds"):
        assert key in summary
    assert summary["versions"]["torch"] and summary["versions"]["python"]
    assert summary["wheels"]["wanted"] == gpu_check.read_wheel_list(gpu_check.WHEEL_LIST)
    assert all(t["met"] is None or isinstance(t["met"], bool) for t in summary["targets"])
    assert len(summary["targets"]) == len(gpu_check.TARGETS) + 1


def test_dry_run_sampler_plan_is_the_issues_matrix(dry_run):
    _, out = dry_run
    report = json.loads((out / "sampler-dry-run.json").read_text())
    assert report["dry_run"] is True and report["settings"]["timer"] == "synthetic" and report["complete"] is True
    got = [(c["key"], c["dtype"], c["mode"]) for c in report["cases"]]
    shapes = ["64x3x224x224->224x224", "32x64x56x56->56x56", "256x1x28x28->28x28", "8x3x1080x1920->512x512"]
    dtypes = ["fp32", "fp16", "bf16"]
    expected = [(s, d, "bilinear") for s in shapes for d in dtypes]
    expected += [(shapes[0], d, m) for m in ("nearest", "bicubic") for d in dtypes]
    assert got == expected
    for case in report["cases"]:
        results = case["results"]
        assert all(r["synthetic"] for r in results.values())
        assert results["copy"]["status"] == "ok" and results["copy"]["bytes"] == case["bytes"]["total"]
        fused = results["plugin-fused"]
        assert case["ratios"]["plugin_fraction_of_copy"] == pytest.approx(results["copy"]["median_ms"] / fused["median_ms"])
        assert case["ratios"]["plugin_speedup_vs_torch_eager"] == pytest.approx(
            results["torch-eager"]["median_ms"] / fused["median_ms"])
        assert fused["speedup_vs_eager"] == case["ratios"]["plugin_speedup_vs_torch_eager"]
        assert fused["fraction_of_copy"] == pytest.approx(case["ratios"]["plugin_fraction_of_copy"])
        if results["torch-compile"].get("status") == "ok":
            assert fused["speedup_vs_compile"] == case["ratios"]["plugin_speedup_vs_torch_compile"]
        else:
            assert "speedup_vs_compile" not in fused
        assert "status" in case["prediction"]
    # The compile budget (100 s at 8 made-up seconds a compile) stops compiling after 13 cases.
    compiled = [c["results"]["torch-compile"].get("status") == "ok" for c in report["cases"]]
    assert compiled == [True] * 13 + [False] * 5
    assert "compile budget" in report["cases"][-1]["results"]["torch-compile"]["reason"]


def test_sampler_prediction_beside_the_measurement(tmp_path):
    sampler = _script("sampler")
    resources = tmp_path / "kernel-resources.json"
    resources.write_text(json.dumps({"roofline": [
        {"case": "64x3x224x224->224x224", "op": "fused", "dtype": "float16", "mode": "bilinear",
         "kernel": "affineGridSampleKernel", "predicted_us": 10.0, "predicted_fraction_of_copy": 0.9}]}))
    assert sampler.main(["--synthetic", "--cases", "imagenet", "--dtypes", "fp16,fp32", "--modes", "bilinear",
                         "--no-compile", "--iters", "5", "--resources", str(resources), "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "sampler-cuda.json").read_text())
    fp16, fp32 = report["cases"]
    assert fp16["dtype"] == "fp16" and fp16["prediction"]["fused"]["predicted_us"] == 10.0
    measured = fp16["results"]["plugin-fused"]["median_ms"] * 1e3
    assert fp16["prediction"]["fused"]["measured_over_predicted"] == pytest.approx(measured / 10.0)
    assert fp16["prediction"]["grid"]["status"].startswith("no row")
    assert fp32["prediction"]["fused"]["status"].startswith("no row")
    assert sampler.main(["--synthetic", "--cases", "mnist", "--dtypes", "fp32", "--modes", "bilinear", "--iters", "3",
                         "--resources", str(tmp_path / "absent.json"), "-o", str(tmp_path), "--stem", "x"]) == 0
    report = json.loads((tmp_path / "x.json").read_text())
    assert report["cases"][0]["prediction"]["status"].startswith("absent")


def test_sampler_time_budget_lists_the_cases_it_skipped(tmp_path):
    sampler = _script("sampler")
    assert sampler.main(["--synthetic", "--iters", "3", "--time-budget-s", "1e-9", "-o", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "sampler-cuda.json").read_text())
    assert report["complete"] is False and report["cases"] == [] and len(report["skipped_cases"]) == 18
    assert "time budget" in report["skipped_cases"][0]["reason"]
    # A run stopped from outside has no PNG yet: --plot-only draws one from its JSON.
    (tmp_path / "sampler-cuda.png").unlink()
    assert sampler.main(["--plot-only", str(tmp_path / "sampler-cuda.json")]) == 0
    assert (tmp_path / "sampler-cuda.png").read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(("argv", "message"), [
    (["--dry-run", "--only", "nosuch"], "unknown step 'nosuch'"),
    (["--dry-run", "--budget-s", "0"], "--budget-s"),
    (["--dry-run", "--budget-s", "900"], "--budget-s"),
])
def test_bad_arguments_give_one_error_line(gpu_check, tmp_path, capsys, argv, message):
    assert gpu_check.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_real_run_refuses_a_folder_that_holds_files(gpu_check, tmp_path, capsys):
    (tmp_path / "old.json").write_text("{}")
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_read_test_progress_counts_and_names_what_did_not_pass(gpu_check, tmp_path):
    path = tmp_path / "p.jsonl"
    lines = [
        {"event": "collected", "tests": ["a::ok", "a::bad", "b::err", "b::skip", "b::hang", "b::never"]},
        {"event": "start", "test": "a::ok", "t": 1}, {"event": "outcome", "test": "a::ok", "outcome": "passed"},
        {"event": "start", "test": "a::bad", "t": 2},
        {"event": "outcome", "test": "a::bad", "outcome": "failed", "message": "AssertionError: max abs 0.5"},
        {"event": "start", "test": "b::err", "t": 3}, {"event": "outcome", "test": "b::err", "outcome": "passed"},
        {"event": "outcome", "test": "b::err", "outcome": "error", "message": "teardown failed"},
        {"event": "start", "test": "b::skip", "t": 4},
        {"event": "outcome", "test": "b::skip", "outcome": "skipped", "message": "needs tensorrt_rtx"},
        {"event": "start", "test": "b::hang", "t": time.time() - 10},
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "outcome", "te')  # cut short by a kill
    state = gpu_check.read_test_progress(path)
    assert {k: state[k] for k in ("passed", "failed", "errors", "skipped", "hung", "total", "not_run")} == {
        "passed": 1, "failed": 1, "errors": 1, "skipped": 1, "hung": 0, "total": 6, "not_run": 2}
    assert state["in_flight"] == "b::hang" and state["in_flight_since"] == lines[-1]["t"]
    assert state["not_passed"] == [
        {"test": "a::bad", "kind": "failed", "message": "AssertionError: max abs 0.5"},
        {"test": "b::err", "kind": "error", "message": "teardown failed"},
    ]
    assert state["skip_reasons"] == {"needs tensorrt_rtx": 1}
    assert gpu_check._hung_test(path, 60.0) is None and "b::hang" in gpu_check._hung_test(path, 5.0)


def test_parse_ncu_csv_reads_the_named_metrics(gpu_check):
    text = "\n".join([
        "==PROF== Connected to process 123",
        '"ID","Kernel Name","gpu__time_duration.sum","dram__throughput.avg.pct_of_peak_sustained_elapsed",'
        '"launch__registers_per_thread","sm__warps_active.avg.pct_of_peak_sustained_active"',
        '"","","usecond","%","register/thread","%"',
        '"0","void affineGridSampleKernel<__half, 4, 2>(...)","12.35","87.1","57","1,234.5"',
    ])
    parsed = gpu_check.parse_ncu_csv(text)
    assert parsed["kernel"].startswith("void affineGridSampleKernel")
    m = parsed["metrics"]
    assert m["duration"] == {"metric": "gpu__time_duration.sum", "value": 12.35, "unit": "usecond"}
    assert m["dram_throughput_pct_of_peak"]["value"] == 87.1 and m["registers_per_thread"]["value"] == 57.0
    assert m["achieved_occupancy_pct"]["value"] == 1234.5  # thousands separators dropped
    assert "issue_slots_busy_pct" not in m  # not collected: left out, not invented
    assert gpu_check.parse_ncu_csv("==PROF== nothing profiled") == {"metrics": {}}


def test_parse_res_usage_names_registers_and_spills(gpu_check):
    text = "\n".join([
        "Resource usage:", " Common:", "  GLOBAL:0",
        " Function _ZN10stn_deploy52_GLOBAL__N__8dbfbb2f_19_gridSampleKernel_cu_d38a401e16gridSampleKernelI13__nv_"
        "bfloat16Li4ELi2EEEvPKT_NS_4cuda11CoordReaderEPS3_13StnSampleDescNS_4math13SampleOptionsEbb:",
        "  REG:150 STACK:8 SHARED:0 LOCAL:4 CONSTANT[2]:12 CONSTANT[0]:674 TEXTURE:0 SURFACE:0 SAMPLER:0",
    ])
    (row,) = gpu_check.parse_res_usage(text)
    assert row["short"] == "gridSampleKernel<13__nv_bfloat16Li4ELi2E>"
    assert (row["reg"], row["stack"], row["shared"], row["local"]) == (150, 8, 0, 4)
    assert gpu_check.parse_res_usage("cuobjdump info    : File does not contain device code") == []


def test_targets_against_the_main_case(gpu_check):
    def row(dtype, **ratios):
        return {"case": "imagenet", "dtype": dtype, "mode": "bilinear", "ratios": ratios}

    sampler = {"cases": [row("fp16", plugin_fraction_of_copy=0.9, plugin_speedup_vs_torch_eager=2.5,
                             plugin_speedup_vs_torch_compile=1.0),
                         row("fp32", plugin_fraction_of_copy=0.7, plugin_speedup_vs_torch_eager=2.0)]}
    parity = {"passed": 10, "failed": 1, "errors": 0, "skipped": 2, "total": 13}
    met = {t["target"]: t["met"] for t in gpu_check.evaluate_targets(sampler, parity)}
    assert met == {
        "fused affine bilinear fp16 >= 85 % of the copy's GB/s": True,
        ">= 2x torch eager in fp32": True,
        ">= 3x torch eager in fp16": False,
        "faster than torch.compile in fp32": None,  # not measured
        "faster than torch.compile in fp16": False,  # level is not faster
        "CUDA parity: every kernel parity test passes": False,
    }
    parity.update(failed=0, not_run=3)  # stopped before every test ran: not known yet
    assert gpu_check.evaluate_targets(sampler, parity)[-1]["met"] is None
    parity.update(not_run=0, hung=1)  # a hung kernel is a miss
    assert gpu_check.evaluate_targets(sampler, parity)[-1]["met"] is False
    assert gpu_check._needs_tensorrt("stn_deploy.errors.UserError: no TensorRT found: install tensorrt")
    assert not gpu_check._needs_tensorrt("AssertionError: max abs 0.5")


def test_wheel_list_and_gpu_names(gpu_check, tmp_path):
    specs = gpu_check.read_wheel_list(gpu_check.WHEEL_LIST)
    assert {s.split("==")[0] for s in specs} >= {"polygraphy", "onnx-graphsurgeon"}
    assert gpu_check._wheel_matches("onnx_graphsurgeon-0.6.1-py2.py3-none-any.whl", "onnx-graphsurgeon==0.6.1")
    assert not gpu_check._wheel_matches("onnx_graphsurgeon-0.6.10-py2.py3-none-any.whl", "onnx-graphsurgeon==0.6.1")
    bad = tmp_path / "w.txt"
    bad.write_text("polygraphy>=0.5\n")
    with pytest.raises(UserError, match="NAME==VERSION"):
        gpu_check.read_wheel_list(bad)
    assert gpu_check.gpu_slug("NVIDIA H200") == "h200"
    assert gpu_check.gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"


def test_step_limits_keep_the_whole_check_inside_its_wall_budget(gpu_check, tmp_path):
    budget = gpu_check.DEFAULT_BUDGET_S
    check = gpu_check.Check(tmp_path, True, budget, tmp_path / "whl", tmp_path / "site", tmp_path / "build", 2, sys.executable)
    try:
        assert check.limit("environment") == 30 and check.limit("build") == 150
        # Every step running to its limit, one after the other, still ends inside the budget, and
        # every step before the last (optional) one gets at least its floor.
        spent = 0.0
        for name in gpu_check.STEPS:
            if check.remaining() < gpu_check.MIN_STEP_S:  # run_check skips it
                assert name == gpu_check.STEPS[-1]
                continue
            limit = check.limit(name)
            assert limit >= max(gpu_check.MIN_STEP_S, gpu_check.STEP_FLOORS_S[name]) - 0.5
            check.started -= limit  # the clock moves on by the whole limit
            spent += limit
        assert spent <= budget - gpu_check.RESERVE_S
        # A slow start leaves the later steps their floors: the sampler is cut before the profile.
        check.started = gpu_check.time.monotonic() - (budget - 40)
        assert check.limit("sampler") == gpu_check.MIN_STEP_S
        assert check.limit("profile") == pytest.approx(40 - gpu_check.RESERVE_S, abs=0.5)
        # Within a step, its own limit counts from the step's start.
        check.started = gpu_check.time.monotonic()
        check.step_started = gpu_check.time.monotonic() - 100
        assert check.limit("build") == pytest.approx(50, abs=0.5)
    finally:
        check.log_file.close()
        gpu_check.shutil.rmtree(check.work, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Simulated failures of the real run (no GPU here): each ends with the earlier results intact
# and the right exit code. The parity tests are stand-ins (a pass, a hang, a failure, a crash);
# the sampler runs on made-up timings with a fault injected (STN_SAMPLER_FAULT), raising the
# error text PyTorch raises for a CUDA fault; ncu is a stand-in printing Nsight Compute's
# documented permission error.

FAKE_PARITY = """
import os, time
import pytest

@pytest.mark.gpu
def test_first():
    pass

@pytest.mark.gpu
def test_hangs():
    time.sleep(600)

@pytest.mark.gpu
def test_fails():
    assert 1 == 2

@pytest.mark.gpu
def test_crashes():
    os.abort()

@pytest.mark.gpu
def test_last():
    pass
"""


def _check_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STN_GPU_CHECK_", "STN_SAMPLER_")) and k != "OUT"}
    tests = tmp_path / "fake_tests" / "test_fake_parity.py"
    tests.parent.mkdir(exist_ok=True)
    tests.write_text(FAKE_PARITY)
    env.update({"STN_GPU_CHECK_SYNTHETIC_SAMPLER": "1", "STN_GPU_CHECK_PARITY_TESTS": str(tests), **extra})
    return env


def _start_check(out: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(out), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _summary(out: Path) -> dict:
    (path,) = out.glob("gpu-check-*.json")
    return json.loads(path.read_text())


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.mark.slow
def test_sampler_fault_in_case_2_keeps_case_1_and_the_rest_runs_in_a_fresh_process(tmp_path):
    out = tmp_path / "out"
    env = _check_env(tmp_path, STN_SAMPLER_FAULT="plugin-fused@2")
    proc = _start_check(out, env, "--only", "sampler", "--budget-s", "120")
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]  # the main sampler cases have rows: nothing to rerun
    summary = _summary(out)
    sampler = summary["sampler"]
    assert sampler["measured"] is True and len(sampler["restarts"]) == 1
    assert sampler["restarts"][0]["exit"] == 3 and "CUDA context lost" in sampler["restarts"][0]["stopped"]
    report = json.loads((out / "sampler-gpu.json").read_text())
    assert report["processes"] == 2 and report["complete"] is True and len(report["cases"]) == 18
    first, faulted = report["cases"][:2]
    assert first["results"]["plugin-fused"]["status"] == "ok" and "fault" not in first  # case 1, intact
    assert (faulted["name"], faulted["dtype"]) == ("imagenet", "fp16")
    fault = faulted["fault"]
    assert fault["impl"] == "plugin-fused" and fault["phase"] == "first call"
    assert fault["cuda_error"] == "an illegal memory access was encountered" and fault["context"].startswith("lost")
    # Measured again in the fresh process, without the implementation that faulted.
    assert faulted["results"]["plugin-fused"]["status"] == "failed"
    assert all(faulted["results"][i]["status"] == "ok" for i in ("copy", "plugin-grid", "torch-eager"))
    assert all("fault" not in c for c in report["cases"][2:])
    assert "FAULT in plugin-fused" in text


def test_sampler_alone_stops_with_exit_3_and_a_valid_report_after_a_sticky_fault(tmp_path):
    env = _check_env(tmp_path, STN_SAMPLER_FAULT="plugin-grid@3")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "sampler.py"), "--synthetic", "--iters", "3",
                           "-o", str(tmp_path), "--stem", "s"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["complete"] is False and "CUDA context lost in imagenet bf16 bilinear by plugin-grid" in report["stopped"]
    assert [c.get("status") for c in report["cases"]] == [None, None, "faulted"]
    assert report["cases"][2]["results"]["torch-eager"]["status"] == "not measured"


def test_hung_and_crashing_parity_tests_are_recorded_and_the_rest_still_run(tmp_path):
    out = tmp_path / "out"
    proc = _start_check(out, _check_env(tmp_path, STN_GPU_CHECK_TEST_LIMIT_S="2"), "--only", "parity", "--budget-s", "120")
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]  # every parity test has an outcome: measured
    parity = _summary(out)["parity"]
    assert {k: parity[k] for k in ("passed", "failed", "hung", "crashed", "not_run", "total")} == {
        "passed": 2, "failed": 1, "hung": 1, "crashed": 1, "not_run": 0, "total": 5}
    kinds = {f["test"].split("::")[-1]: f["kind"] for f in parity["not_passed"]}
    assert kinds == {"test_hangs": "hung", "test_fails": "failed", "test_crashes": "crashed"}
    assert len(parity["rounds"]) == 3  # a fresh pytest after the hang, another after the crash
    lines = [json.loads(ln) for ln in (out / "parity-gpu.jsonl").read_text().splitlines()]
    assert [ln["test"].split("::")[-1] for ln in lines if ln["event"] == "outcome"] == [
        "test_first", "test_hangs", "test_fails", "test_crashes", "test_last"]
    target = _summary(out)["targets"][-1]
    assert target["met"] is False and "1 hung" in target["value"]


def test_sigterm_at_the_outer_limit_leaves_the_summary_with_what_was_measured(tmp_path):
    out = tmp_path / "out"
    proc = _start_check(out, _check_env(tmp_path), "--only", "parity,sampler", "--budget-s", "120")
    progress = out / "parity-gpu.jsonl"
    _wait_for(lambda: progress.is_file() and "test_hangs" in progress.read_text())
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, text[-3000:]  # the main results are not all measured: a rerun helps
    summary = _summary(out)
    assert summary["complete"] is False and summary["stopped"] == "SIGTERM received during parity"
    status = {s["name"]: s["status"] for s in summary["steps"]}
    assert status["parity"] == "interrupted" and status["sampler"] == "skipped"
    assert summary["parity"]["passed"] == 1 and summary["parity"]["in_flight"].endswith("test_hangs")
    assert summary["main_results"] == {"parity": False, "sampler": False} and summary["exit_code"] == 1
    assert "SIGTERM" in (out / "gpu-check-gpu.log").read_text() or "test_hangs" in (out / "gpu-check-gpu.log").read_text()


def test_sigterm_to_the_sampler_keeps_the_cases_it_finished(tmp_path):
    progress = tmp_path / "progress.jsonl"
    env = _check_env(tmp_path, STN_SAMPLER_FAULT="torch-eager@3:hang")
    proc = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "sampler.py"), "--synthetic", "--iters", "3",
                             "-o", str(tmp_path), "--stem", "s", "--progress", str(progress)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(lambda: progress.is_file() and '"position": 3' in progress.read_text() and "torch-eager" in
              progress.read_text().split('"position": 3')[-1])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["complete"] is False and report["stopped"] == "SIGTERM received during imagenet bf16 bilinear"
    assert [(c["dtype"], c["results"]["plugin-fused"]["status"]) for c in report["cases"]] == [("fp32", "ok"), ("fp16", "ok")]


@pytest.mark.slow
def test_a_hung_sampler_case_is_killed_recorded_and_skipped(tmp_path):
    out = tmp_path / "out"
    env = _check_env(tmp_path, STN_SAMPLER_FAULT="plugin-grid@4:hang", STN_GPU_CHECK_STALL_S="2")
    proc = _start_check(out, env, "--only", "sampler", "--budget-s", "120")
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]
    report = json.loads((out / "sampler-gpu.json").read_text())
    assert report["skipped_cases"] == [] and len(report["cases"]) == 18 and report["processes"] == 2
    hung = report["cases"][3]
    assert (hung["name"], hung["dtype"], hung["fault"]["impl"]) == ("features", "fp32", "plugin-grid")
    assert hung["fault"]["reason"].startswith("hung in plugin-grid (first call): hung: no progress for")
    # Measured again in the fresh process, without the implementation that hung.
    assert hung["results"]["plugin-grid"]["status"] == "failed" and hung["results"]["plugin-fused"]["status"] == "ok"
    (restart,) = _summary(out)["sampler"]["restarts"]
    assert restart["case"]["then"] == "retried without plugin-grid"


def test_a_case_lost_twice_is_given_up_and_the_rest_measured(gpu_check, tmp_path):
    report = tmp_path / "s.json"
    report.write_text(json.dumps({"format": "stn-deploy-sampler-bench", "cases": [], "skipped_cases": []}))
    lost = {"case": "mnist", "key": "k", "dtype": "fp16", "mode": "bilinear", "impl": "plugin-fused", "phase": "first call"}
    assert gpu_check._record_lost_case(report, lost, "crashed") == "retried without plugin-fused"
    assert gpu_check._record_lost_case(report, lost, "crashed again") == "given up"
    timing = {**lost, "impl": "copy,plugin-fused", "phase": "timing"}  # in no one implementation's call
    assert gpu_check._record_lost_case(report, {**timing, "dtype": "fp32"}, "hung") == "given up"
    data = json.loads(report.read_text())
    assert data["cases"] == [] and [(s["dtype"], s["final"]) for s in data["skipped_cases"]] == [("fp16", True), ("fp32", True)]


@pytest.mark.slow
def test_ncu_without_counter_permission_is_unavailable_and_the_run_still_exits_0(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ncu = bin_dir / "ncu"
    # Nsight Compute's message when the driver restricts the counters to admin users.
    ncu.write_text("#!/bin/sh\n"
                   "echo '==PROF== Connected to process 1'\n"
                   "echo '==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU "
                   "Performance Counters on the target device 0.'\n"
                   "exit 1\n")
    ncu.chmod(0o755)
    env = _check_env(tmp_path, STN_GPU_CHECK_PARITY_TESTS=str(tmp_path / "fake_tests" / "test_fake_parity.py") +
                     "::test_first")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    out = tmp_path / "out"
    proc = _start_check(out, env, "--only", "parity,sampler,profile", "--budget-s", "150")
    text, _ = proc.communicate(timeout=150)
    assert proc.returncode == 0, text[-3000:]
    summary = _summary(out)
    profile = next(s for s in summary["steps"] if s["name"] == "profile")
    assert profile["status"] == "unavailable" and "ERR_NVGPUCTRPERM" in profile["reason"]
    assert summary["optional_not_ok"] == [{"step": "profile", "status": "unavailable", "reason": profile["reason"]}]
    assert summary["main_results"] == {"parity": True, "sampler": True} and summary["complete"] is True


def test_a_test_that_leaves_cuda_unusable_stops_pytest_and_the_rest_runs_fresh(tmp_path):
    tests = tmp_path / "poison" / "test_poison.py"
    tests.parent.mkdir()
    # After an illegal address, torch.cuda.synchronize() raises the same error: the plugin's probe
    # of the context (cuda_context_error) is made to answer so, as it would on a GPU.
    tests.write_text(
        "import pytest\n"
        "import benchmarks.pytest_progress as progress\n"
        "ERROR = 'CUDA error: an illegal memory access was encountered'\n\n"
        "@pytest.mark.gpu\n"
        "def test_poisons():\n"
        "    progress.cuda_context_error = lambda: 'RuntimeError: ' + ERROR\n"
        "    raise RuntimeError(ERROR)\n\n"
        "@pytest.mark.gpu\n"
        "def test_after():\n"
        "    assert progress.cuda_context_error() is None  # a fresh process: CUDA usable again\n")
    out = tmp_path / "out"
    proc = _start_check(out, _check_env(tmp_path, STN_GPU_CHECK_PARITY_TESTS=str(tests)), "--only", "parity",
                        "--budget-s", "120")
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, text[-3000:]
    parity = _summary(out)["parity"]
    assert parity["context_lost"] == [{"test": parity["not_passed"][0]["test"],
                                       "error": "RuntimeError: CUDA error: an illegal memory access was encountered"}]
    assert (parity["passed"], parity["failed"], parity["not_run"], len(parity["rounds"])) == (1, 1, 0, 2)


def test_compile_time_is_left_out_of_the_next_cases_estimate():
    sampler = _script("sampler")
    decide = functools.partial(sampler.compile_decision, True, failed_on="", spent_s=40.0, compile_budget_s=100.0,
                               time_budget_s=110.0, longest_case_s=2.0)
    # Only the cold compile (40 s) seen: it says nothing of the next, warm one; the case compiles.
    assert decide(elapsed_s=100.0, compile_times=[40.0]) is True
    # A warm compile took 5 s: 104 + 2 + 5 > 110, so this case runs without it (its other timings still run).
    assert "too little time" in decide(elapsed_s=104.0, compile_times=[40.0, 5.0])
    assert decide(elapsed_s=100.0, compile_times=[40.0, 5.0]) is True
    assert "budget of 100 s spent" in decide(elapsed_s=0.0, compile_times=[40.0, 5.0], spent_s=100.0)
    assert sampler.compile_decision(False, failed_on="", spent_s=0.0, compile_budget_s=None, time_budget_s=None,
                                    elapsed_s=0.0, longest_case_s=0.0, compile_times=[]) is False
