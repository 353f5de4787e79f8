"""Timing: per-iteration latencies (CUDA events or perf_counter), percentiles, interleaved
rounds, and the memory-copy baseline every bandwidth figure is a fraction of."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted values, linear interpolation (numpy's default)."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_stats(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/min (ms) of per-iteration latencies; p50 <= p90 <= p99 by construction."""
    values = sorted(float(v) for v in samples_ms)
    return {
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "mean_ms": statistics.fmean(values),
        "min_ms": values[0],
        "iters": len(values),
    }


def time_callable(fn: Callable[[], Any], *, warmup: int, iters: int, cuda: bool = False) -> list[float]:
    """Per-iteration latencies of ``fn()`` in ms.

    On CUDA each iteration is bracketed by CUDA events on the current stream (no host sync
    inside the loop); on the CPU by ``time.perf_counter_ns``.
    """
    for _ in range(warmup):
        fn()
    if cuda:
        import torch

        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for start, end in zip(starts, ends):
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return [start.elapsed_time(end) for start, end in zip(starts, ends)]
    samples = []
    for _ in range(iters):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def time_interleaved(
    fns: dict[str, Callable[[], Any]], *, warmup: int, iters: int, cuda: bool = False, rounds: int = 5
) -> dict[str, list[float]]:
    """Per-iteration latencies (ms) of several callables, measured in interleaved rounds.

    Each round times every callable for about ``iters / rounds`` iterations in turn, so a
    change of machine load (a shared CPU, clock boost) hits all of them alike and their
    ratios stay meaningful. Each callable gets ``warmup`` untimed calls first and exactly
    ``iters`` timed ones in total.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    rounds = max(1, min(rounds, iters))
    out: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        # Spread iters over the rounds: the first (iters % rounds) rounds get one more.
        n = iters // rounds + (1 if r < iters % rounds else 0)
        for name, fn in fns.items():
            out[name].extend(time_callable(fn, warmup=0, iters=n, cuda=cuda))
    return out


def copy_fn(nbytes: int, device: str) -> Callable[[], Any]:
    """A callable copying a buffer of ``nbytes`` bytes (at least 1) on ``device``."""
    import torch

    n = max(1, int(nbytes))
    src = torch.empty(n, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def copy_stats(samples_ms: Sequence[float], nbytes: int) -> dict[str, float]:
    """Latency statistics of a copy of ``nbytes`` bytes plus ``gbps`` (read + written / p50)."""
    n = max(1, int(nbytes))
    stats = latency_stats(samples_ms)
    stats["bytes"] = n
    stats["gbps"] = 2 * n / (stats["p50_ms"] * 1e-3) / 1e9
    return stats


def copy_baseline(nbytes: int, device: str, *, warmup: int, iters: int) -> dict[str, float]:
    """Time a copy of ``nbytes`` bytes on ``device`` (a device-to-device copy on CUDA, a host
    memcpy on the CPU) and return its latency statistics plus ``gbps`` (bytes read + written
    per second, 1e9). ``nbytes`` is rounded up to a whole byte and at least 1."""
    samples = time_callable(copy_fn(nbytes, device), warmup=warmup, iters=iters, cuda=device.startswith("cuda"))
    return copy_stats(samples, nbytes)
