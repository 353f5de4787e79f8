"""Mutation check of the CUDA host emulation: known CUDA-path bugs, each injected into the real
sources, must make ``stn_emulation_test`` fail (a mismatch, an unwritten output, or an ASan /
UBSan report). A mutant that passes means the emulation tests miss that kind of bug.

    python plugins/emulation/mutations.py [--json OUT.json] [--build-dir DIR]

Each mutation is an exact text replacement that must occur exactly once in its file, so the
list breaks loudly (rather than silently testing nothing) when the kernels are rewritten.
Run by tests/test_cuda_emulation.py (every mutant) and writable as a JSON record.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def _load_build():
    """plugins/emulation/build.py under a unique name (this folder is not a package, and a bare
    ``import build`` could find PyPA's ``build``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("stn_emulation_build", Path(__file__).resolve().parent / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


emulation_build = _load_build()

PLUGINS = emulation_build.PLUGINS

#: Every suite of the driver, quickest first.
FAST_FIRST = ("units", "errors", "shim", "wide", "matrix", "stride", "planes")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to plugins/
    old: str
    new: str
    why: str


MUTATIONS = (
    Mutation("specialisation-wrong-padding", "common/kernelCommon.cuh",
             "return launch(math::FixedOptions<math::Bilinear, math::Border>{o.alignCorners}, int32_t{});",
             "return launch(math::FixedOptions<math::Bilinear, math::Zeros>{o.alignCorners}, int32_t{});",
             "the compile-time specialisation of border padding launched with zeros padding"),
    Mutation("specialisation-for-cpu-semantics", "common/kernelCommon.cuh",
             "            && o.semantics == math::Semantics::kATEN_CUDA;", "            && true;",
             "the specialisations (CUDA semantics built in) launched when a CPU semantics is asked for"),
    Mutation("swapped-vector-halves", "common/kernelCommon.cuh",
             "__floats2half2_rn(a, b)", "__floats2half2_rn(b, a)",
             "the two fp16 positions of a thread stored in each other's place"),
    Mutation("tail-off-by-one", "gridSamplePlugin/gridSampleKernel.cu",
             "bool const second = P == 2 && pos + 1 < geo.outPlane;",
             "bool const second = P == 2 && pos + 1 <= geo.outPlane;",
             "the second position of an odd plane's last thread written past the plane"),
    Mutation("no-alignment-check", "common/kernelCommon.cuh",
             "return P == 2 && evenPlane<P>() && aligned(out, P * sizeof(T));",
             "return P == 2 && evenPlane<P>();",
             "vector stores through a misaligned output pointer"),
    Mutation("wrong-remainder", "common/kernelCommon.cuh",
             "r = static_cast<I>(x - qu * divisor);", "r = static_cast<I>(x - qu * (divisor - 1));",
             "the position split gives a wrong in-plane index"),
    Mutation("chunk-output-offset", "common/kernelCommon.cuh",
             "out = y + static_cast<int64_t>(plane) * g.outPlane;",
             "out = y + static_cast<int64_t>(n) * g.c * g.outPlane;",
             "every channel chunk of the split writes the first chunk's output channels"),
    Mutation("plane-offset-in-32-bits", "common/kernelCommon.cuh",
             "in = x + static_cast<int64_t>(plane) * g.inPlane;", "in = x + plane * g.inPlane;",
             "a channel plane's first element in the index type: past 2^31 elements the 32-bit path wraps"),
    Mutation("theta-offsets-unchecked", "common/kernelCommon.cuh",
             "&& d.n * coordsPerItem(d, fused) < limit", "&& d.n * coordsPerItem(d, false) < limit",
             "the fused op's 32-bit path chosen by the grid's size: theta offsets past 2^31 wrap"),
    Mutation("64-bit-bicubic-rows-not-stepped", "common/gridSampleMath.h",
             "row[p][r] += plane;", "row[p][r] += 0;",
             "the 64-bit bicubic tap rows not stepped per channel: every channel reads the first"),
    Mutation("last-chunk-overrun", "common/kernelCommon.cuh",
             "channels = g.c - first < g.chunk ? g.c - first : g.chunk;", "channels = g.chunk;",
             "the last channel chunk samples a full chunk past the last channel"),
    Mutation("32-bit-path-overflow", "common/kernelCommon.cuh",
             "int64_t const limit = int64_t{1} << 31;", "int64_t const limit = int64_t{1} << 33;",
             "the 32-bit (specialised) kernels chosen for tensors whose offsets pass 2^31"),
    Mutation("paired-taps-on-one-wide-input", "common/kernelCommon.cuh",
             "pairable(desc.in_w >= 2 && desc.in_h >= 2)", "pairable(desc.in_h >= 2)",
             "the paired-tap specialisation (two columns from one address) run on a one-pixel-wide input"),
    Mutation("paired-taps-on-one-high-input", "common/kernelCommon.cuh",
             "pairable(desc.in_w >= 2 && desc.in_h >= 2)", "pairable(desc.in_w >= 2)",
             "the paired-tap specialisation (the second row one row further) run on a one-pixel-high input"),
    Mutation("paired-taps-edge-slot", "common/gridSampleMath.h",
             "s.w1 = d == 0 ? w1 : w0;", "s.w1 = w1;",
             "at the far edge, the last index's tap read with the weight of the tap outside the axis"),
    Mutation("zeros-clamp-at-last-index", "common/gridSampleMath.h",
             "return fMin(fMax(u, -2.0f), static_cast<float>(size));",
             "return fMin(fMax(u, -2.0f), static_cast<float>(size - 1));",
             "zeros padding's clamp at the last index instead of one past it: coordinates in (size - 1, size) lose their fraction"),
    Mutation("64-bit-multiply-high-wrong-word", "common/kernelCommon.cuh",
             "(static_cast<unsigned __int128>(a) * b) >> 64", "(static_cast<unsigned __int128>(a) * b) >> 63",
             "the 64-bit divisor's multiply-high takes the wrong bits of the product"),
    Mutation("h-w-mixed-up", "common/kernelCommon.cuh",
             "outW(static_cast<U>(q), zh, w);", "outH(static_cast<U>(q), zh, w);",
             "positions split into rows by the output height instead of the width"),
    Mutation("fast-division-rounds-down", "common/kernelCommon.cuh",
             "/ d + 1;", "/ d;",
             "the multiply-high divisor's multiplier rounded down: some quotients one too small"),
    Mutation("base-grid-uncorrected", "common/gridSampleMath.h",
             "v = fFma(fFma(-q, size, a), reciprocal, q);", "v = q;",
             "the base grid's (v * (n - 1)) / n taken as the product by 1 / n, without the correction"),
    Mutation("wrong-vector-index", "gridSamplePlugin/gridSampleKernel.cu",
             "gy[1] = g.w;", "gy[1] = g.y;",
             "the second position of a float4 grid load takes the first one's y"),
    Mutation("theta-stride", "affineGridSamplePlugin/affineGridSampleKernel.cu",
             "theta.row(n * count, count, t);", "theta.row(n * 6, count, t);",
             "theta of item n read at the 2-D affine stride for projective and 3-D transforms"),
    Mutation("grid-read-past-plane", "gridSamplePlugin/gridSampleKernel.cu",
             "I const q = (p == 0 || second) ? i + p : i;", "I const q = i + p;",
             "the missing second position of an odd plane reads the next item's (or no) grid"),
)


def mutant_text(m: Mutation) -> str:
    text = (PLUGINS / m.path).read_text()
    count = text.count(m.old)
    if count != 1:
        raise RuntimeError(f"mutation {m.name}: {m.old!r} occurs {count} times in {m.path} (expected once); "
                           "update plugins/emulation/mutations.py to the rewritten kernel")
    return text.replace(m.old, m.new)


def run_mutant(m: Mutation, build_dir: Path) -> dict:
    """Build and run one mutant; ``caught`` is true when the test driver fails."""
    start = time.perf_counter()
    try:
        exe = emulation_build.build(build_dir, replacements={m.path: mutant_text(m)})
    except emulation_build.BuildError as exc:
        return {"name": m.name, "caught": False, "how": f"mutant does not compile: {exc}"[:300], "seconds": 0.0}
    # The quick suites first: a mutant the units or wide suite catches need not wait for the matrix.
    proc = subprocess.run([str(exe), "--first-failure", *FAST_FIRST], capture_output=True, text=True, env=emulation_build.sanitizer_env(),
                          timeout=600)
    out = proc.stdout + proc.stderr
    lines = [ln for ln in out.splitlines() if ln.startswith("FAIL") or "ERROR: AddressSanitizer" in ln
             or "runtime error:" in ln]
    how = lines[0][:300] if lines else out.strip().splitlines()[-1][:300] if out.strip() else ""
    return {"name": m.name, "file": m.path, "bug": m.why, "caught": proc.returncode != 0, "exit_code": proc.returncode,
            "how": how, "seconds": round(time.perf_counter() - start, 2)}


def run_all(build_dir: Path, jobs: int = 2) -> list[dict]:
    """Every mutant, ``jobs`` at a time (each builds one mutated file and runs the driver)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(lambda m: run_mutant(m, build_dir), MUTATIONS))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--build-dir", type=Path, help="object cache (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = run_all(args.build_dir or Path(tmp))
    for r in results:
        print(f"{'caught' if r['caught'] else 'MISSED':7s} {r['name']:24s} {r['how']}")
    if args.json:
        args.json.write_text(json.dumps({"mutations": results}, indent=2) + "\n")
    return 0 if all(r["caught"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
