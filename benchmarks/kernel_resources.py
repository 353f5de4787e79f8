"""Static resource report of the plugin's CUDA kernels, and an analytic roofline (no GPU needed).

From the built library's SASS (``cuobjdump`` / ``nvdisasm``, PyPI ``nvidia-cuda-cuobjdump`` and
``nvidia-cuda-nvdisasm``), per kernel and architecture: registers, local (spill) bytes, stack,
shared memory, spill instructions (STL/LDL), and the theoretical occupancy at the launch block
size (256 threads); on one architecture (``--sass-arch``, default sm_90) the channel loops of
each kernel: their SASS instruction count per output element (static: every path of the loop
body counted once) and loads per output, which name the mode (1 nearest, 4 bilinear, 8
trilinear, 16 bicubic).

Roofline (a static estimate, not a measurement): for the four GPU cases of the GPU issue on an
H200 (132 SMs x 4 schedulers at ~1.98 GHz, copy ~4.3 TB/s counting read + write),
    time = max(compulsory bytes / copy bandwidth, warp instructions / issue rate)
with compulsory bytes = output + input actually read (4 taps per output pixel, capped at the
input) + grid (grid op) and warp instructions = threads / 32 x (channel-loop instructions per
channel iteration x C + set-up), one thread per P positions (P = 1 fp32, 2 fp16/bf16). The
channel loop is counted statically (every instruction of its body once, a branchy body is
over-counted); the set-up is the shortest path through the SASS from the kernel's entry to that
loop and from the loop to EXIT (the branches a real position takes only add to it).
``*_channel_loop_only`` leaves the set-up out (a lower bound on the time). Not modelled: latency
(too few warps to hide it: see occupancy), the tail of a partly filled last wave, caches.
``predicted_fraction_of_copy`` = memory time / predicted time.

Writes ``benchmarks/results/kernel-resources.json`` (``-o``): ``kernels`` (per kernel x arch),
``channel_loops``, ``roofline`` (list of {case, op, dtype, mode, kernel, predicted_us,
predicted_fraction_of_copy, ...}) and prints tables. Not collected by pytest.

Usage:
    python benchmarks/kernel_resources.py [--library PATH] [--sass-arch 90]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

THREADS_PER_BLOCK = 256  # plugins/common/kernelCommon.cuh kTHREADS

# Per-SM limits (CUDA C Programming Guide, compute capabilities table): max resident threads,
# max resident blocks, 32-bit registers, max shared memory per SM (KiB).
SM_LIMITS = {
    75: (1024, 16, 65536, 64),
    80: (2048, 32, 65536, 164),
    86: (1536, 16, 65536, 100),
    89: (1536, 24, 65536, 100),
    90: (2048, 32, 65536, 228),
    100: (2048, 32, 65536, 228),
    103: (2048, 32, 65536, 228),
    110: (1536, 24, 65536, 228),
    120: (1536, 32, 65536, 100),
}

H200 = {"sms": 132, "schedulers_per_sm": 4, "clock_ghz": 1.98, "copy_tb_s": 4.3,
        "source": "issue 13 / DESIGN.md figures; copy bandwidth counts read + write (measure on a GPU)"}

#: The GPU issue's cases: input (N, C, H, W) -> output (Ho, Wo).
CASES = {
    "64x3x224x224->224x224": ((64, 3, 224, 224), (224, 224)),
    "32x64x56x56->56x56": ((32, 64, 56, 56), (56, 56)),
    "256x1x28x28->28x28": ((256, 1, 28, 28), (28, 28)),
    "8x3x1080x1920->512x512": ((8, 3, 1080, 1920), (512, 512)),
}


def _tool(name: str) -> str:
    """``cuobjdump`` / ``nvdisasm``: PATH, the CUDA toolkit, or the PyPI wheel's ``nvidia/cu*/bin``."""
    found = shutil.which(name)
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root and (Path(root) / "bin" / name).exists():
            return str(Path(root) / "bin" / name)
    try:
        import nvidia  # namespace package of the PyPI CUDA wheels

        for base in nvidia.__path__:
            for cand in sorted(Path(base).glob(f"*/bin/{name}")):
                return str(cand)
    except ImportError:
        pass
    sys.exit(f"error: {name} not found: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")


def _demangle(names: list[str]) -> dict[str, str]:
    if not names or shutil.which("c++filt") is None:
        return {n: n for n in names}
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out))


def short_name(demangled: str) -> str:
    """``gridSampleKernel<__half, 4, 2>`` from the full demangled signature."""
    m = re.search(r"(\w+Kernel)<", demangled)
    if not m:
        return demangled.split("(")[0]
    depth, i = 0, m.end() - 1  # the template arguments, nested ones included: balance the brackets
    for i in range(m.end() - 1, len(demangled)):
        depth += {"<": 1, ">": -1}.get(demangled[i], 0)
        if depth == 0:
            break
    return re.sub(r">\s+>", ">>", demangled[m.start():i + 1])  # c++filt writes '> >'


def resource_usage(cuobjdump: str, library: Path) -> list[dict]:
    text = subprocess.run([cuobjdump, "-res-usage", str(library)], capture_output=True, text=True, check=True).stdout
    rows, arch, in_elf = [], None, False
    lines = text.splitlines()
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("Fatbin elf code"):
            in_elf = True
        elif s.startswith("Fatbin ptx code"):
            in_elf = False
        elif s.startswith("arch = sm_") and in_elf:
            arch = int(s.split("sm_")[1])
        elif s.startswith("Function ") and in_elf and i + 1 < len(lines):
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", lines[i + 1]))
            rows.append({"mangled": s[len("Function "):].rstrip(":"), "arch": arch,
                         "registers": int(fields.get("REG", 0)), "stack_bytes": int(fields.get("STACK", 0)),
                         "shared_bytes": int(fields.get("SHARED", 0)), "local_bytes": int(fields.get("LOCAL", 0))})
    names = _demangle(sorted({r["mangled"] for r in rows}))
    for r in rows:
        r["kernel"] = short_name(names[r["mangled"]])
    return rows


def occupancy(arch: int, registers: int, shared: int, threads: int = THREADS_PER_BLOCK) -> dict:
    max_threads, max_blocks, regs, smem_kib = SM_LIMITS.get(arch, SM_LIMITS[90])
    warps = math.ceil(threads / 32)
    regs_per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256  # allocated per warp, 256 at a time
    by_regs = regs // (regs_per_warp * warps)
    by_threads = max_threads // threads
    by_smem = (smem_kib * 1024) // shared if shared else max_blocks
    blocks = max(0, min(by_regs, by_threads, max_blocks, by_smem))
    return {"blocks_per_sm": blocks, "occupancy": round(blocks * warps / (max_threads // 32), 3),
            "limited_by": min((by_regs, "registers"), (by_threads, "threads"), (max_blocks, "blocks"),
                              (by_smem, "shared memory"))[1]}


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?);")


def sass_functions(cuobjdump: str, library: Path, arch: int) -> dict[str, list[tuple[int, str]]]:
    text = subprocess.run([cuobjdump, "-sass", "-arch", f"sm_{arch}", str(library)], capture_output=True, text=True,
                          check=True).stdout
    funcs: dict[str, list[tuple[int, str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"\s*Function : (\S+)", line)
        if m:
            current = m.group(1)
            funcs[current] = []
            continue
        m = _INSTR.search(line)
        if m and current:
            funcs[current].append((int(m.group(1), 16), m.group(2).strip()))
    return funcs


def _opcode(text: str) -> str:
    body = re.sub(r"^@!?U?P\w+\s+", "", text)
    return body.split()[0] if body else ""


def channel_loops(instrs: list[tuple[int, str]], elem_bits: int) -> list[dict]:
    """Innermost loops that load and store: the channel loops of a sampler kernel."""
    loops = []
    for addr, text in instrs:
        m = re.search(r"\bBRA\s+(?:`?\(?\S*?\)?\s*)?(?:P\d+,\s*)?0x([0-9a-f]+)", text)
        if not m or _opcode(text) != "BRA":
            continue
        target = int(m.group(1), 16)
        if target >= addr:
            continue
        body = [t for a, t in instrs if target <= a <= addr]
        ops = [_opcode(t) for t in body]
        loads = [o for o in ops if o.startswith("LDG")]
        stores = [o for o in ops if o.startswith("STG")]
        if not loads or not stores:
            continue
        outputs = 0
        for o in stores:
            width = 128 if ".128" in o else 64 if ".64" in o else 16 if ".U16" in o or ".16" in o else 32
            outputs += max(1, width // elem_bits)
        loops.append({"range": (target, addr), "instructions": len(body), "loads": len(loads), "stores": len(stores),
                      "outputs": outputs})
    # Keep the innermost: drop a loop that contains another one of the list.
    inner = [lp for lp in loops if not any(o is not lp and lp["range"][0] <= o["range"][0] and o["range"][1]
                                           <= lp["range"][1] for o in loops)]
    for lp in inner:
        lp["instructions_per_output"] = round(lp["instructions"] / lp["outputs"], 1)
        lp["loads_per_output"] = round(lp["loads"] / lp["outputs"], 2)
        ratio = lp["loads_per_output"]
        lp["mode"] = ("nearest" if ratio <= 1.5 else "bilinear" if ratio <= 5 else "trilinear" if ratio <= 10
                      else "bicubic")
        lp["range"] = [hex(lp["range"][0]), hex(lp["range"][1])]
    return inner


def _successors(instrs: list[tuple[int, str]]) -> list[list[int]]:
    """Instruction-level control flow: fall-through, branch targets; EXIT / RET end a path; an
    indirect BRX may go to any instruction that nothing else reaches (its table's entries)."""
    index = {a: i for i, (a, _) in enumerate(instrs)}
    succ: list[list[int]] = []
    for i, (_, text) in enumerate(instrs):
        op = _opcode(text)
        predicated = text.startswith("@")
        nxt = [i + 1] if i + 1 < len(instrs) else []
        if op.startswith("BRA"):
            m = re.search(r"0x([0-9a-f]+)\s*$", text)
            target = [index[int(m.group(1), 16)]] if m and int(m.group(1), 16) in index else []
            succ.append(target + (nxt if predicated else []))
        elif op == "EXIT" or op.startswith("RET"):
            succ.append(nxt if predicated else [])
        elif op.startswith("BRX"):
            succ.append(None)  # an indirect jump (a switch's table): resolved below
        else:
            succ.append(nxt)
    # The targets of a jump table are the instructions nothing else reaches: no fall-through into
    # them and no branch to them.
    has_pred = {j for row in succ if row for j in row}
    orphans = [i for i in range(1, len(instrs)) if i not in has_pred]
    return [row if row is not None else orphans for row in succ]


def _shortest(succ: list[list[int]], start: int, goals: set[int]) -> int | None:
    """Fewest instructions executed from ``start`` to reach one of ``goals`` (breadth first)."""
    from collections import deque

    seen = {start}
    queue = deque([(start, 0)])
    while queue:
        i, d = queue.popleft()
        if i in goals:
            return d
        for j in succ[i]:
            if j not in seen:
                seen.add(j)
                queue.append((j, d + 1))
    return None


def setup_instructions(instrs: list[tuple[int, str]], loop: dict) -> int | None:
    """Instructions a thread executes outside one channel loop, on the shortest path: from the
    kernel's entry to the loop's head, and from the loop's exit to EXIT (one trip of the
    grid-stride loop, as every launch here has one position group per thread). A lower bound:
    the branches a real position takes (padding, validity) only add to it."""
    index = {a: i for i, (a, _) in enumerate(instrs)}
    head, back = index[int(loop["range"][0], 16)], index[int(loop["range"][1], 16)]
    succ = _successors(instrs)
    exits = {i for i, (_, t) in enumerate(instrs) if _opcode(t) == "EXIT"}
    before = _shortest(succ, 0, {head})
    after = _shortest(succ, back + 1, exits) if back + 1 < len(instrs) else None
    return None if before is None or after is None else before + after + 1


def compulsory_bytes(case: str, op: str, elem: int) -> int:
    (n, c, h, w), (ho, wo) = CASES[case]
    out = n * c * ho * wo * elem
    read = n * c * min(h * w, 4 * ho * wo) * elem
    params = n * ho * wo * 2 * 4 if op == "grid" else n * 6 * 4  # fp32 coordinates
    return out + read + params


def roofline(loops_by_kernel: dict[str, dict]) -> list[dict]:
    issue_rate = H200["sms"] * H200["schedulers_per_sm"] * H200["clock_ghz"] * 1e9  # warp instructions / s
    rows = []
    for case, ((n, c, _, _), (ho, wo)) in CASES.items():
        for op, kname in (("fused", "affineGridSampleKernel"), ("grid", "gridSampleKernel")):
            for dtype, targ, elem, p in (("fp32", "float, 4, 1", 4, 1), ("fp16", "__half, 4, 2", 2, 2),
                                         ("bf16", "__nv_bfloat16, 4, 2", 2, 2)):
                # The kernel the launcher picks for bilinear + zeros padding: its compile-time
                # specialisation on 32-bit indices where one is built, else (older libraries) the
                # specialisation on 64-bit indices or the generic kernel.
                fixed = "stn_deploy::math::FixedOptions<stn_deploy::math::Bilinear, stn_deploy::math::Zeros>"
                candidates = [f"{kname}<{targ}, {fixed}, int>", f"{kname}<{targ}, {fixed}>",
                              f"{kname}<{targ}, stn_deploy::math::SampleOptions>", f"{kname}<{targ}>"]
                kernel = next((k for k in candidates if k in loops_by_kernel), candidates[-1])
                info = loops_by_kernel.get(kernel)
                if info is None:
                    continue
                bil = [lp for lp in info["loops"] if lp["mode"] == "bilinear" and lp.get("setup") is not None]
                if not bil:
                    continue
                # The vector-store loop (fewest stores per output): what an even, aligned plane runs.
                loop = min(bil, key=lambda lp: (lp["stores"] / lp["outputs"], lp["instructions"] / lp["outputs"]))
                per_channel = loop["instructions"] * p / loop["outputs"]  # per thread and channel
                setup = loop["setup"]
                warps = n * ho * wo / (32 * p)
                warp_instr = warps * (per_channel * c + setup)
                t_issue = warp_instr / issue_rate
                bytes_ = compulsory_bytes(case, op, elem)
                t_mem = bytes_ / (H200["copy_tb_s"] * 1e12)
                t = max(t_issue, t_mem)
                t_loop_only = max(warps * per_channel * c / issue_rate, t_mem)  # no set-up: a lower bound
                rows.append({"case": case, "op": op, "dtype": dtype, "mode": "bilinear", "kernel": kernel,
                             "compulsory_bytes": bytes_, "memory_us": round(t_mem * 1e6, 2),
                             "issue_us": round(t_issue * 1e6, 2), "predicted_us": round(t * 1e6, 2),
                             "predicted_fraction_of_copy": round(t_mem / t, 3),
                             "predicted_us_channel_loop_only": round(t_loop_only * 1e6, 2),
                             "predicted_fraction_of_copy_channel_loop_only": round(t_mem / t_loop_only, 3),
                             "bound": "memory" if t_mem >= t_issue else "instruction issue",
                             "channel_loop_instructions_per_thread_iteration": round(per_channel, 1),
                             "setup_instructions_per_thread": setup})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--library", type=Path, default=None, help="default: stn_deploy.kernels.library_path()")
    ap.add_argument("--sass-arch", type=int, default=90, help="architecture whose SASS is analysed")
    ap.add_argument("-o", "--output", type=Path, default=REPO / "benchmarks" / "results" / "kernel-resources.json")
    args = ap.parse_args()
    if args.library is None:
        from stn_deploy import kernels

        args.library = kernels.library_path()
    if not args.library.exists():
        sys.exit(f"error: {args.library} not found; run `stn-deploy plugins build`")
    cuobjdump = _tool("cuobjdump")
    _tool("nvdisasm")  # cuobjdump -sass runs it

    usage = resource_usage(cuobjdump, args.library)
    funcs = sass_functions(cuobjdump, args.library, args.sass_arch)
    spills = {m: sum(1 for _, t in ins if _opcode(t).startswith(("STL", "LDL"))) for m, ins in funcs.items()}
    for r in usage:
        r.update(occupancy(r["arch"], r["registers"], r["shared_bytes"]))
        if r["arch"] == args.sass_arch:
            r["spill_instructions"] = spills.get(r["mangled"])

    loops_by_kernel: dict[str, dict] = {}
    names = _demangle(list(funcs))
    for mangled, ins in funcs.items():
        kernel = short_name(names[mangled])
        elem_bits = 32 if "<float" in kernel else 16
        loops = channel_loops(ins, elem_bits)
        for lp in loops:
            lp["setup"] = setup_instructions(ins, lp)
        loops_by_kernel[kernel] = {"arch": args.sass_arch, "total_instructions": len(ins), "loops": loops}

    from stn_deploy import kernels as _k  # noqa: F401  (versions only)

    result = {
        "what": "static estimate from SASS (cuobjdump), not a measurement",
        "library": str(args.library),
        "tools": {"cuobjdump": subprocess.run([cuobjdump, "--version"], capture_output=True, text=True).stdout
                  .strip().splitlines()[-1]},
        "threads_per_block": THREADS_PER_BLOCK,
        "kernels": [{k: v for k, v in r.items() if k != "mangled"} | {"symbol": r["mangled"]} for r in usage],
        "channel_loops": loops_by_kernel,
        "machine": H200,
        "roofline": roofline(loops_by_kernel),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.output)

    print(f"{'kernel':40s} {'arch':>5s} {'regs':>5s} {'local':>6s} {'stack':>6s} {'smem':>5s} {'blk/SM':>6s} {'occ':>5s}")
    for r in sorted(usage, key=lambda r: (r["kernel"], r["arch"])):
        print(f"{r['kernel']:40s} {r['arch']:5d} {r['registers']:5d} {r['local_bytes']:6d} {r['stack_bytes']:6d} "
              f"{r['shared_bytes']:5d} {r['blocks_per_sm']:6d} {r['occupancy']:5.2f}")
    print(f"\nchannel loops (sm_{args.sass_arch}; static instructions per output element, all paths)")
    for k, info in sorted(loops_by_kernel.items()):
        desc = ", ".join(f"{lp['mode']} {lp['instructions_per_output']}" for lp in info["loops"])
        print(f"  {k:40s} {desc}")
    print("\nroofline, H200 (static estimate)")
    for r in result["roofline"]:
        print(f"  {r['case']:24s} {r['op']:5s} {r['dtype']:4s} {r['predicted_us']:9.1f} us "
              f"{100 * r['predicted_fraction_of_copy']:5.1f} % of copy ({r['bound']}); channel loop only "
              f"{100 * r['predicted_fraction_of_copy_channel_loop_only']:5.1f} %")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
