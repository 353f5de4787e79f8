"""The GPU check (scripts/gpu-check.sh -> benchmarks/gpu_check.py) rehearsed without a GPU: its
dry run must produce every result file, so that the one real run on a lent GPU machine does not
die of a typo; and its parsers must read what pytest and Nsight Compute write."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
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
    assert status["wheels"] in ("ok", "skipped")  # skipped on a clean clone: .whl/ is made by scripts/gpu-wheels.sh
    assert sum(s["limit_s"] for s in summary["steps"]) <= 150 * len(gpu_check.STEPS)
    assert all(s["limit_s"] <= gpu_check.STEP_LIMITS_S[s["name"]] for s in summary["steps"])
    build = next(s for s in summary["steps"] if s["name"] == "build")
    assert "-DSTN_CUDA_ARCHITECTURES=90-real" in build["commands"][0] and summary["library"]["archs"] == "sm_90"
    assert build["commands"][-1].endswith(f"-j {os.cpu_count()}")
    parity = next(s for s in summary["steps"] if s["name"] == "parity")
    assert " -m gpu " in parity["commands"][0] and "--junitxml=" in parity["commands"][0]
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


def test_parse_junit_counts_and_names_what_did_not_pass(gpu_check, tmp_path):
    xml = tmp_path / "r.xml"
    xml.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_bad[fp16]"><failure message="AssertionError: max abs 0.5">'
        "trace</failure></testcase>"
        '<testcase classname="tests.test_b" name="test_err"><error message="fixture failed">x</error></testcase>'
        '<testcase classname="tests.test_b" name="test_skip"><skipped message="needs tensorrt_rtx"/></testcase>'
        "</testsuite></testsuites>")
    summary = gpu_check.parse_junit(xml)
    assert {k: summary[k] for k in ("passed", "failed", "errors", "skipped", "total")} == {
        "passed": 1, "failed": 1, "errors": 1, "skipped": 1, "total": 4}
    assert summary["not_passed"] == [
        {"test": "tests.test_a::test_bad[fp16]", "kind": "failure", "message": "AssertionError: max abs 0.5"},
        {"test": "tests.test_b::test_err", "kind": "error", "message": "fixture failed"},
    ]
    assert summary["skip_reasons"] == {"needs tensorrt_rtx": 1}


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
        "CUDA parity: every gpu test passes": False,
    }
    # A failure only for want of TensorRT (absent on the GPU machine) does not count against the kernels.
    parity["need_tensorrt"] = ["tests.test_validate::test_validate_plugin_engine_on_gpu"]
    targets = gpu_check.evaluate_targets(sampler, parity)
    assert targets[-1]["met"] is True and "want of TensorRT" in targets[-1]["value"]
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
    check = gpu_check.Check(tmp_path, True, 360.0, tmp_path / "whl", tmp_path / "site", tmp_path / "build", 2, sys.executable)
    try:
        assert check.limit("environment") == 30 and check.limit("build") == 150
        # Every step running to its limit, one after the other, still ends inside the budget.
        spent = 0.0
        for name in gpu_check.STEPS:
            limit = check.limit(name)
            assert limit >= gpu_check.MIN_STEP_S
            check.started -= limit  # the clock moves on by the whole limit
            spent += limit
        assert spent <= 360.0 - gpu_check.RESERVE_S
        # A slow start leaves the later steps their floors: the sampler is cut before the profile.
        check.started = gpu_check.time.monotonic() - 300
        assert check.limit("sampler") == gpu_check.MIN_STEP_S
        assert check.limit("profile") == pytest.approx(360 - 300 - gpu_check.RESERVE_S, abs=0.5)
        # Within a step, its own limit counts from the step's start.
        check.started = gpu_check.time.monotonic()
        check.step_started = gpu_check.time.monotonic() - 100
        assert check.limit("build") == pytest.approx(50, abs=0.5)
    finally:
        gpu_check.shutil.rmtree(check.work, ignore_errors=True)
