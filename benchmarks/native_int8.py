"""The alternatives side by side, in one run: TensorRT's own GridSample layer (the native
flavour) against our plugin, and INT8 with the sampler kept in float against float32.

1. Trains ``cnn`` and ``st-cnn-affine`` on RTS under the Table-1 budget (``benchmarks/table1.py``:
   5 epochs, batch 32, lr 3e-3, one thread, seed 0), exports each (standard ops) and
   quantises it (``stn_deploy.quantize``, 512 RTS training images), then reports the RTS
   test error of float and INT8 in ONNX Runtime (all 2156 test images) and the drop.
2. ONNX Runtime CPU latency, float vs INT8, at batch 1 and 64 (medians, same run, same
   thread count, alternating blocks of 10 calls); the float/INT8 ratio is the result.
3. ``quantize.warp_shift``: how far the sampling grid moves (input pixels) when theta is
   quantised too, against the default (localisation FC/regression kept float).
4. ``bench.ops.compare_ops``: plugin vs native engines of the same models, built with
   TensorRT-RTX in one child process: build seconds and engine bytes on the CPU (medians of
   ``--build-repeats``), latency on a GPU. Also the native INT8 engine's build and size.

Writes ``benchmarks/results/native_int8.json`` and ``native_int8.png``. Not collected by pytest.

    nice -n 19 python benchmarks/native_int8.py          # about 3-6 minutes on a shared 2-core machine
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stn_deploy.errors import UserError  # noqa: E402
from stn_deploy.io import save_figure, write_json  # noqa: E402

ACCURACY_MODELS = ("cnn", "st-cnn-affine")
FLAVOUR_MODELS = ("st-cnn-affine", "st-cnn-projective", "st-cnn-tps", "st-cnn-multi")
DATASET = "RTS"


def _paired_latency(float_path: Path, int8_path: Path, batch: int, threads: int, iters: int,
                    block: int = 10) -> tuple[float, float]:
    """Median ms of one ``run`` of each model in ONNX Runtime (CPU, ``threads`` intra-op
    threads), timed in alternating blocks of ``block`` calls so that both see the same load
    on a shared machine."""
    import numpy as np
    import onnxruntime as ort

    def session(path: Path):
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    sessions = [session(float_path), session(int8_path)]
    inp = sessions[0].get_inputs()[0]
    shape = [batch, *[d if isinstance(d, int) else 1 for d in inp.shape[1:]]]
    feed = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for sess in sessions:
        for _ in range(5):
            sess.run(None, feed)
    times: list[list[float]] = [[], []]
    while len(times[1]) < iters:
        for i, sess in enumerate(sessions):
            for _ in range(block):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times[i].append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times[0])), float(statistics.median(times[1]))


def accuracy_and_speed(work: Path, epochs: int, threads: int, iters: int) -> tuple[list[dict], dict]:
    import onnx
    import torch

    from stn_deploy.jobs.export import ExportOptions, export
    from stn_deploy.jobs.train import TrainOptions, train
    from stn_deploy.quantize import QuantizeOptions, calibration_images, quantize, task_error, warp_shift

    rows, shift = [], {}
    for name in ACCURACY_MODELS:
        torch.set_num_threads(1)  # the Table-1 budget is defined on one thread
        t0 = time.perf_counter()
        metrics = train(TrainOptions(name, DATASET, output_dir=work / name, epochs=epochs, seed=0, progress=False))
        train_s = time.perf_counter() - t0
        f32 = work / name / "model.onnx"
        i8 = work / name / "model.int8.onnx"
        export(ExportOptions(work / name / "model.pt", f32, ops="standard"))
        rep = quantize(QuantizeOptions(f32, i8, calibration=DATASET, samples=512))
        err_f, err_q = task_error(onnx.load(str(f32)), DATASET), task_error(onnx.load(str(i8)), DATASET)
        speed = {}
        for b in (1, 64):
            ms_f, ms_q = _paired_latency(f32, i8, b, threads, iters)
            speed[str(b)] = {"float_ms": round(ms_f, 4), "int8_ms": round(ms_q, 4), "int8_speedup": round(ms_f / ms_q, 3)}
        rows.append({
            "model": name, "train_seconds": round(train_s, 1), "torch_test_error": round(metrics["test_error"], 3),
            "float_error": round(err_f, 3), "int8_error": round(err_q, 3), "drop_points": round(err_q - err_f, 3),
            "target_drop_points": 0.5, "meets_target": err_q - err_f <= 0.5,
            "quantized_nodes": len(rep.quantized), "kept_float": len(rep.kept_float), "ort_cpu": speed,
        })
        print(f"{name}: error float {err_f:.2f}% int8 {err_q:.2f}% (drop {err_q - err_f:+.2f}); "
              f"ORT ms b1 {speed['1']['float_ms']:.3f}/{speed['1']['int8_ms']:.3f}, "
              f"b64 {speed['64']['float_ms']:.3f}/{speed['64']['int8_ms']:.3f}", flush=True)
        if name == "st-cnn-affine":
            cal = calibration_images(DATASET, [None, 1, 42, 42], 512)[0]
            test = calibration_images(DATASET, [None, 1, 42, 42], 256, seed=7)[0]
            shift = warp_shift(onnx.load(str(f32)), test, cal)
            print(f"warp shift (px): theta float {shift['theta_float']}, theta int8 {shift['theta_int8']}", flush=True)
    return rows, shift


def flavours(work: Path, trained: Path | None, repeats: int) -> list[dict]:
    from stn_deploy import trt
    from stn_deploy.jobs.bench.ops import compare_ops
    from stn_deploy.jobs.train import save_checkpoint
    from stn_deploy.models import ModelConfig, build_model

    rows = []
    for name in FLAVOUR_MODELS:
        if name == "st-cnn-affine" and trained is not None:
            ckpt = trained
        else:
            config = ModelConfig(name, in_size=(42, 42))
            ckpt = save_checkpoint(work / f"{name}.pt", build_model(config), config, {"note": "untrained, for builds"})
        runs = [compare_ops(ckpt, work / f"{name}-flavours-{i}", flavour="rtx") for i in range(repeats)]
        row = {"model": name, "flavour": f"{runs[0].flavour} {runs[0].flavour_version}", "gpu": runs[0].gpu}
        for flavour in ("plugin", "native"):
            row[flavour] = {
                "build_seconds_median": round(statistics.median(getattr(r, flavour)["build_seconds"] for r in runs), 4),
                "build_seconds": [round(getattr(r, flavour)["build_seconds"], 4) for r in runs],
                "engine_bytes": getattr(runs[0], flavour)["engine_bytes"],
                "layers": len(getattr(runs[0], flavour)["layers"]),
                **({"latency_ms": getattr(runs[0], flavour)["latency_ms"]} if runs[0].gpu else {}),
            }
        row["native_over_plugin_bytes"] = round(row["native"]["engine_bytes"] / row["plugin"]["engine_bytes"], 3)
        rows.append(row)
        print(f"{name}: plugin {row['plugin']['engine_bytes']} B / {row['plugin']['build_seconds_median']:.3f} s, "
              f"native {row['native']['engine_bytes']} B / {row['native']['build_seconds_median']:.3f} s", flush=True)
    if trained is not None:  # the INT8 flavour of the trained model, as a native engine
        from stn_deploy.jobs.export import ExportOptions, export
        from stn_deploy.quantize import QuantizeOptions, quantize

        f32 = work / "st-cnn-affine.native.onnx"
        export(ExportOptions(trained, f32, ops="native"))
        quantize(QuantizeOptions(f32, work / "st-cnn-affine.native.int8.onnx", calibration=DATASET))
        (f_out, q_out) = trt.build_many([
            trt.BuildOptions(f32, work / "f32.engine", flavour="rtx"),
            trt.BuildOptions(work / "st-cnn-affine.native.int8.onnx", work / "int8.engine", flavour="rtx")])
        for label, out in (("native-float", f_out), ("native-int8", q_out)):
            if out.error:
                raise UserError(f"{label} build failed: {out.error}")
        types = {layer["type"] for layer in q_out.result.sidecar["network"]["layers"]}
        rows.append({"model": "st-cnn-affine (trained)", "flavour": "rtx", "int8_engine": {
            "float_bytes": f_out.result.sidecar["engine"]["bytes"], "int8_bytes": q_out.result.sidecar["engine"]["bytes"],
            "float_build_seconds": round(f_out.result.seconds, 4), "int8_build_seconds": round(q_out.result.seconds, 4),
            "qdq_layers_parsed": sorted(types & {"QUANTIZE", "DEQUANTIZE"})}})
    return rows


def plot(report: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    acc = report["accuracy"]
    labels = [f"{r['model']}\nb{bt}" for r in acc for bt in ("1", "64")]
    ratios = [r["ort_cpu"][bt]["int8_speedup"] for r in acc for bt in ("1", "64")]
    a.bar(range(len(labels)), ratios, color="tab:green")
    a.axhline(1.0, color="k", lw=0.8)
    a.set_xticks(range(len(labels)))
    a.set_xticklabels(labels, fontsize=8)
    a.set_ylabel("ONNX Runtime CPU: float ms / INT8 ms")
    a.set_title(" ; ".join(f"{r['model']} RTS error {r['float_error']:.2f}% -> {r['int8_error']:.2f}%" for r in acc),
                fontsize=7)
    fl = [r for r in report["flavours"] if "plugin" in r]
    x = range(len(fl))
    b.bar([i - 0.2 for i in x], [r["plugin"]["engine_bytes"] / 1e6 for r in fl], 0.4, label="plugin")
    b.bar([i + 0.2 for i in x], [r["native"]["engine_bytes"] / 1e6 for r in fl], 0.4, label="native GridSample")
    b.set_xticks(list(x))
    b.set_xticklabels([r["model"] for r in fl], fontsize=8, rotation=10)
    b.set_ylabel("TensorRT-RTX engine MB (CPU build)")
    b.set_title("engine size; build s (median): " + ", ".join(
        f"{r['plugin']['build_seconds_median']:.2f}/{r['native']['build_seconds_median']:.2f}" for r in fl), fontsize=7)
    b.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="training epochs (Table-1 budget: 5)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads for the latency")
    parser.add_argument("--iters", type=int, default=200, help="timed runs per latency")
    parser.add_argument("--build-repeats", type=int, default=3)
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    import os

    import onnxruntime
    import torch

    started, load_before = time.perf_counter(), os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="stn-native-int8-") as tmp:
            work = Path(tmp)
            acc, shift = accuracy_and_speed(work, args.epochs, args.threads, args.iters)
            fl = flavours(work, work / "st-cnn-affine" / "model.pt", args.build_repeats)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from stn_deploy.trt import get_flavour

    report = {
        "what": "native GridSample vs plugin engines; INT8 (sampler in float) vs float",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                    "tensorrt_rtx": get_flavour("rtx").version, "ort_threads": args.threads,
                    # 1-minute load before and after: CPU times on a shared machine vary with it.
                    "load_average_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
        "budget": {"dataset": DATASET, "epochs": args.epochs, "batch_size": 32, "lr": 3e-3, "train_threads": 1,
                   "seed": 0, "calibration": "512 RTS training images (seed 1), min/max, symmetric, per-channel"},
        "accuracy": acc, "warp_shift_px": shift, "flavours": fl,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = args.output_dir
    write_json(out / "native_int8.json", report)
    plot(report, out / "native_int8.png")
    print(f"wrote {out / 'native_int8.json'} and .png in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
