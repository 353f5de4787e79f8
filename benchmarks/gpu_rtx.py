"""OPTIONAL GPU step, apart from the GPU check: does TensorRT-RTX run on this GPU (sm_90, which
RTX 1.7 lists no target for)? Started by ``scripts/gpu-rtx.sh`` after the two part-carrying
device calls of ``scripts/gpu-rtx-parts.sh``.

Each case runs in its own child process (an RTX abort kills only it), and records exactly what
RTX said when it fails:

    probe            import tensorrt_rtx, its version, a Builder, the device's compute capability
    native-current   an opset-20 GridSample engine built here for the current GPU, run, vs PyTorch
    plugin-current   an STNAffineGridSample (our plugin) engine, likewise
    native-default   GridSample built for RTX's default targets (no sm_90 among them), run here
    plugin-default   our plugin op, likewise

Writes ``rtx-<gpu>.json`` (and prints a table) into ``--out`` or ``$OUT``, rewritten after every
case (``complete: false`` until the last; SIGTERM / SIGINT leave it with the reason), each case
limited to 40 s and no case started that the 180 s total could not finish.

Usage:
    python3 benchmarks/gpu_rtx.py --out DIR [--cases probe,native-current]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

CASES = ("probe", "native-current", "plugin-current", "native-default", "plugin-default")
CASE_LIMIT_S = 40.0
#: All cases together: inside the device call's timeout (scripts/gpu-rtx-parts.sh) with room to write.
TOTAL_LIMIT_S = 180.0
X_SHAPE = (2, 3, 16, 16)
OUT_HW = (12, 12)


def _graph(path: Path, plugin: bool) -> Path:
    """x [2,3,16,16] and grid [2,12,12,2] (GridSample) or theta [2,2,3] (our fused op) -> y [2,3,12,12]."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from stn_deploy import schema

    n, c = X_SHAPE[:2]
    y = h.make_tensor_value_info("y", T.FLOAT, [n, c, *OUT_HW])
    if plugin:
        fields = {schema.FIELD_INTERPOLATION_MODE: 0, schema.FIELD_PADDING_MODE: 0, schema.FIELD_ALIGN_CORNERS: 0,
                  schema.FIELD_TRANSFORM: 0, schema.FIELD_OUT_D: 0, schema.FIELD_OUT_H: OUT_HW[0],
                  schema.FIELD_OUT_W: OUT_HW[1]}
        node = h.make_node(schema.AFFINE_GRID_SAMPLE_OP, ["x", "theta"], ["y"], name="stn", domain=schema.PLUGIN_DOMAIN,
                           plugin_version=schema.PLUGIN_VERSION, **fields)
        second = h.make_tensor_value_info("theta", T.FLOAT, [n, 2, 3])
        opsets = [h.make_opsetid("", 17), h.make_opsetid(schema.PLUGIN_DOMAIN, 1)]
    else:
        node = h.make_node("GridSample", ["x", "grid"], ["y"], name="sampler", mode="linear", padding_mode="zeros",
                           align_corners=0)
        second = h.make_tensor_value_info("grid", T.FLOAT, [n, *OUT_HW, 2])
        opsets = [h.make_opsetid("", 20)]
    graph = h.make_graph([node], "rtx-check", [h.make_tensor_value_info("x", T.FLOAT, list(X_SHAPE)), second], [y])
    model = h.make_model(graph, opset_imports=opsets)
    onnx.save(model, str(path))
    return path


def _case(name: str, work: Path) -> dict[str, Any]:
    """One case, in this (child) process."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    if name == "probe":
        import tensorrt_rtx as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        info: dict[str, Any] = {"tensorrt_rtx": trt.__version__, "builder": builder is not None}
        if hasattr(trt, "ComputeCapability"):
            info["compute_capabilities"] = [k for k in dir(trt.ComputeCapability) if not k.startswith("_")]
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            info["gpu"], info["compute_capability"] = p.name, f"{p.major}.{p.minor}"
        return info

    from stn_deploy import trt as stn_trt
    from stn_deploy.trt import EngineRunner

    plugin = name.startswith("plugin")
    onnx_path = _graph(work / f"{name}.onnx", plugin)
    engine = work / f"{name}.engine"
    capabilities = ("current",) if name.endswith("current") else ()
    t0 = time.perf_counter()
    result = stn_trt.build(stn_trt.BuildOptions(onnx_path, engine, flavour="rtx", compute_capabilities=capabilities,
                                                doctor=False))
    info = {"build_s": round(time.perf_counter() - t0, 2), "engine_bytes": engine.stat().st_size,
            "compute_capabilities": result.sidecar.get("compute_capabilities")}
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(X_SHAPE, generator=gen)
    theta = torch.eye(2, 3).repeat(X_SHAPE[0], 1, 1) + 0.2 * torch.randn((X_SHAPE[0], 2, 3), generator=gen)
    grid = F.affine_grid(theta, (*X_SHAPE[:2], *OUT_HW), align_corners=False)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).numpy()
    feed = {"x": x.numpy(), "theta" if plugin else "grid": (theta if plugin else grid).numpy()}
    with EngineRunner(engine) as runner:
        y = runner.infer(feed)["y"]
    info["max_abs_err_vs_torch"] = float(np.abs(y - expected).max())
    info["ran"] = True
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="result folder (default: $OUT, else runs/gpu-rtx)")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated from {', '.join(CASES)}")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)  # the child process's one case
    parser.add_argument("--work", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        info = _case(args.case, Path(args.work))
        print(json.dumps(info, default=str))
        return 0
    names = [c for c in args.cases.split(",") if c]
    bad = [c for c in names if c not in CASES]
    if bad:
        print(f"error: unknown case {bad[0]!r}; choose from {', '.join(CASES)}", file=sys.stderr)
        return 2
    out = Path(args.out or os.environ.get("OUT") or REPO / "runs" / "gpu-rtx")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, POLYGRAPHY_USE_TENSORRT_RTX="1", PYTHONUNBUFFERED="1")
    from stn_deploy.io import write_json

    report: dict[str, Any] = {"format": "stn-deploy-gpu-rtx", "version": 2,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "complete": False,
                              "stopped": None, "cases": []}
    target = out / "rtx-gpu.json"  # renamed to the GPU's name once the probe knows it

    def stop(signum: int, frame: Any) -> None:
        report["stopped"] = f"{signal.Signals(signum).name} received"
        write_json(target, report)
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stn-gpu-rtx-") as work:
        for name in names:
            left = TOTAL_LIMIT_S - (time.monotonic() - started)
            if left < CASE_LIMIT_S:
                report["cases"].append({"case": name, "status": "skipped", "messages": [f"{left:.0f} s left of {TOTAL_LIMIT_S:g}"]})
                continue
            t0 = time.monotonic()
            try:
                proc = subprocess.run([sys.executable, __file__, "--case", name, "--work", work], capture_output=True,
                                      text=True, env=env, timeout=CASE_LIMIT_S)
                code, text = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as exc:
                code = None
                text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            row: dict[str, Any] = {"case": name, "seconds": round(time.monotonic() - t0, 1)}
            result = next((json.loads(ln) for ln in reversed(text.splitlines()) if ln.startswith("{")), None)
            if code == 0 and result is not None:
                row.update(status="ok", **result)
                if result.get("gpu"):
                    slug = result["gpu"].lower().replace("nvidia", "").strip().replace(" ", "-") or "gpu"
                    named = out / f"rtx-{slug}.json"
                    if target.is_file():
                        os.replace(target, named)
                    target = named
            else:
                row["status"] = "timeout" if code is None else f"failed (exit {code})"
            # What RTX said, verbatim: its own lines and the last lines of any traceback.
            lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("{")]
            row["messages"] = [ln for ln in lines if "[TRT]" in ln or "TensorRT" in ln or "Error" in ln][:20] or lines[-8:]
            report["cases"].append(row)
            write_json(target, report)  # a kill from outside keeps the cases before
            print(f"{name:<15} {row['status']:<16} {row.get('max_abs_err_vs_torch', '')} "
                  f"{(row['messages'] or [''])[-1][:150] if row['status'] != 'ok' else ''}", flush=True)
    report["complete"] = all(r["status"] != "skipped" for r in report["cases"])
    write_json(target, report)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
