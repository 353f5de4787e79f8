"""A/B of the plugin library's CPU reference: two builds loaded side by side, timed interleaved.

For work on the shared maths header (``plugins/common/gridSampleMath.h``), which the CPU
reference compiles too: build the baseline library (e.g. from ``git worktree add`` at the old
commit, ``stn-deploy plugins build``), then

    python benchmarks/cpu_reference_ab.py --baseline OLD.so [--candidate NEW.so] [--threads 2]

Both libraries are copied to a temporary folder and loaded with ctypes (the same file name would
load once); each case (the sampler benchmark's CPU shapes and a volume, bilinear, nearest and bicubic, fused
``stn_affine_grid_sample_cpu`` and ``stn_grid_sample_cpu``) runs both builds in interleaved rounds
(``bench.time_interleaved``), so a change of machine load hits them alike; reported: the minimum
and median per build and ``candidate / baseline`` (< 1: the candidate is faster). The outputs of
the two builds must be bit-identical (NaN = NaN): a difference is reported and the exit code is 1.
Writes ``benchmarks/results/cpu-reference-ab.json`` (``-o``). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: (N, C, H, W) -> (Ho, Wo): the sampler benchmark's CPU shapes (benchmarks/sampler.py), smaller N;
#: and one volume, (N, C, D, H, W) -> (Do, Ho, Wo), for the 3-D sampler.
CASES = {
    "mnist": ((256, 1, 28, 28), (28, 28)),
    "imagenet": ((16, 3, 224, 224), (224, 224)),
    "features": ((16, 64, 56, 56), (56, 56)),
    "hd-crop": ((2, 3, 1080, 1920), (512, 512)),
    "volume": ((2, 4, 32, 64, 64), (32, 64, 64)),
}
MODES = {"bilinear": 0, "nearest": 1, "bicubic": 2}  # bilinear is trilinear in 3-D; bicubic is 2-D only


def _inputs(shape: tuple[int, ...], out_size: tuple[int, ...], seed: int = 0):
    """X, a random similarity theta per sample (as benchmarks/sampler.py; in 3-D a rotation about
    z) and a grid over [-1.1, 1.1]."""
    n = shape[0]
    dims = len(out_size)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    angle, scale = rng.uniform(-0.52, 0.52, n), rng.uniform(0.8, 1.25, n)
    theta = np.zeros((n, dims, dims + 1), np.float32)
    theta[:, 0, 0], theta[:, 0, 1] = scale * np.cos(angle), -scale * np.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * np.sin(angle), scale * np.cos(angle)
    if dims == 3:
        theta[:, 2, 2] = scale
    theta[:, :, dims] = rng.uniform(-0.2, 0.2, (n, dims))
    grid = rng.uniform(-1.1, 1.1, (n, *out_size, dims)).astype(np.float32)
    return x, theta, grid


def main(argv: list[str] | None = None) -> int:
    from stn_deploy import kernels
    from stn_deploy.jobs.bench.report import cpu_name
    from stn_deploy.jobs.bench.timing import time_interleaved

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, required=True, help="the library to compare against")
    ap.add_argument("--candidate", type=Path, default=None, help="default: stn_deploy.kernels.library_path()")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--iters", type=int, default=10, help="timed calls per build and case")
    ap.add_argument("-o", "--output", type=Path, default=REPO / "benchmarks" / "results" / "cpu-reference-ab.json")
    args = ap.parse_args(argv)
    candidate = args.candidate or kernels.library_path()
    for path in (args.baseline, candidate):
        if not path.is_file():
            print(f"error: {path}: no such file", file=sys.stderr)
            return 2
    rows, mismatches = [], []
    with tempfile.TemporaryDirectory() as tmp:
        libs = {}
        for name, path in (("baseline", args.baseline), ("candidate", candidate)):
            copy = Path(tmp) / f"{name}-{path.name}"
            shutil.copy(path, copy)
            libs[name] = ctypes.CDLL(str(copy))
        for case, (shape, out_size) in CASES.items():
            x, theta, grid = _inputs(shape, out_size)
            rank = len(shape)
            n, c, *spatial = shape
            in_dhw = spatial if rank == 5 else [1, *spatial]
            out_dhw = list(out_size) if rank == 5 else [1, *out_size]
            for mode_name, mode in MODES.items():
                if rank == 5 and mode_name == "bicubic":
                    continue
                desc = kernels._Desc(rank, mode, 0, 0, 0, -1, 0, 0, n, c, *in_dhw, *out_dhw)
                for op, coords in (("fused", theta), ("grid", grid)):
                    outs = {k: np.empty((n, c, *out_size), np.float32) for k in libs}

                    def call(lib, out, op=op, coords=coords, desc=desc):
                        fn = lib.stn_affine_grid_sample_cpu if op == "fused" else lib.stn_grid_sample_cpu
                        status = fn(ctypes.byref(desc), ctypes.c_void_p(x.ctypes.data), ctypes.c_void_p(coords.ctypes.data),
                                    ctypes.c_void_p(out.ctypes.data), args.threads)
                        if status != 0:
                            raise RuntimeError(f"{op} returned {status}")

                    times = time_interleaved({k: (lambda k=k: call(libs[k], outs[k])) for k in libs}, warmup=1,
                                             iters=args.iters)
                    same = np.array_equal(outs["baseline"], outs["candidate"], equal_nan=True)
                    if not same:
                        mismatches.append(f"{case} {mode_name} {op}")
                    row = {"case": case, "shape": list(shape), "out_size": list(out_size), "mode": mode_name, "op": op,
                           "bit_identical": same}
                    for k, t in times.items():
                        row[f"{k}_min_ms"] = round(min(t), 3)
                        row[f"{k}_median_ms"] = round(statistics.median(t), 3)
                    row["candidate_over_baseline_min"] = round(row["candidate_min_ms"] / row["baseline_min_ms"], 3)
                    rows.append(row)
                    print(f"{case:9s} {mode_name:8s} {op:5s} {row['baseline_min_ms']:9.2f} -> {row['candidate_min_ms']:9.2f} ms "
                          f"(x{row['candidate_over_baseline_min']:.2f}){'' if same else '  OUTPUTS DIFFER'}")
    result = {"what": "CPU reference, two library builds, interleaved; ratio = candidate / baseline (min of runs)",
              "cpu": cpu_name(), "threads": args.threads, "iters": args.iters, "baseline": str(args.baseline),
              "candidate": str(candidate), "rows": rows, "mismatches": mismatches}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.output.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp_out, args.output)
    print(f"wrote {args.output}")
    if mismatches:
        print(f"error: outputs differ between the builds: {', '.join(mismatches)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
