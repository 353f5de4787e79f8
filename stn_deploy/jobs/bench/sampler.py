"""The sampler alone: its effective bytes, timed against a copy of the same bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from stn_deploy.errors import UserError
from stn_deploy.jobs.bench.backends import Skip, short_reason
from stn_deploy.jobs.bench.timing import copy_fn, copy_stats, latency_stats, time_interleaved

if TYPE_CHECKING:
    from stn_deploy.jobs.bench.backends import Sources
    from stn_deploy.jobs.bench.options import BenchOptions

#: Input pixels one output pixel reads, per interpolation mode (for ``sampler_bytes``).
TAPS = {"nearest": 1, "bilinear": 4, "bicubic": 16}


def sampler_bytes(
    input_shape: Sequence[int],
    out_size: Sequence[int],
    *,
    param_bytes: int,
    elem_bytes: int,
    mode: str = "bilinear",
) -> dict[str, int]:
    """Effective bytes one sampler call moves: input actually read + grid/theta + output.

    Each output pixel of each channel reads ``TAPS[mode]`` input pixels; the input read is
    that count capped at the whole input (a pixel shared by neighbouring taps is read once,
    through the cache). ``param_bytes`` is the size of the grid or theta tensor.
    """
    n, c = int(input_shape[0]), int(input_shape[1])
    in_pixels = 1
    for d in input_shape[2:]:
        in_pixels *= int(d)
    out_pixels = 1
    for d in out_size:
        out_pixels *= int(d)
    taps = TAPS.get(mode, 4)
    read = n * c * min(in_pixels, taps * out_pixels) * elem_bytes
    written = n * c * out_pixels * elem_bytes
    return {"input_read": read, "params": int(param_bytes), "output": written, "total": read + int(param_bytes) + written}




def sampler_section(sources: Sources, options: BenchOptions, device: str) -> dict[str, Any]:
    """Time the first spatial transformer's sampling step alone against a copy of its bytes."""
    import torch

    try:
        module = sources.module
    except Skip as exc:
        return {"status": "skipped", "reason": str(exc), "results": []}
    from stn_deploy.models import spatial_transformers

    transformers = spatial_transformers(module)
    if not transformers:
        return {"status": "skipped", "reason": "the model has no spatial transformer", "results": []}
    st = transformers[0].to(device)
    settings = st.settings
    section: dict[str, Any] = {
        "status": "ok",
        "transform": getattr(st.generator, "kind", type(st.generator).__name__),
        "out_size": list(st.out_size),
        "mode": settings.mode,
        "padding_mode": settings.padding_mode,
        "align_corners": settings.align_corners,
        "bytes_formula": "input actually read (taps x output pixels, capped at the input) + params + output",
        "copy": "device-to-device copy" if device == "cuda" else "host memcpy",
        "results": [],
    }
    cuda = device == "cuda"
    gen = torch.Generator().manual_seed(options.seed)
    for batch in options.batches:
        x = torch.rand(batch, *sources.config.input_shape, generator=gen).to(device)
        with torch.inference_mode():
            params = st.localisation(x)
        nbytes = sampler_bytes(x.shape, st.out_size, param_bytes=params.numel() * params.element_size(),
                               elem_bytes=x.element_size(), mode=settings.mode)
        half = nbytes["total"] // 2  # the copy reads and writes half each: the same bytes moved

        def torch_warp(x=x, params=params):
            with torch.inference_mode():
                return st.warp(x, params)

        impls: list[tuple[str, Callable[[], Any] | None, str | None]] = [("torch", torch_warp, None)]
        impls.append(plugin_warp(st, x, params, options.threads))
        rows = {}
        runnable: dict[str, Callable[[], Any]] = {"copy": copy_fn(half, device)}
        for impl, fn, reason in impls:
            rows[impl] = {"impl": impl, "batch": batch, "device": device, "input_shape": list(x.shape), "bytes": nbytes}
            if fn is None:
                rows[impl].update(status="skipped", reason=reason)
                continue
            try:
                fn()  # fail here, alone, rather than inside the interleaved timing
            except Exception as exc:  # a kernel failure is a row, not a crash
                rows[impl].update(status="failed", reason=short_reason(exc))
            else:
                runnable[impl] = fn
        samples = time_interleaved(runnable, warmup=options.warmup, iters=options.iters, cuda=cuda)
        copy = copy_stats(samples.pop("copy"), half)
        for impl, times in samples.items():
            stats = latency_stats(times)
            gbps = nbytes["total"] / (stats["p50_ms"] * 1e-3) / 1e9
            rows[impl].update(status="ok", **stats, gbps=gbps, copy_p50_ms=copy["p50_ms"], copy_gbps=copy["gbps"],
                              fraction_of_copy=gbps / copy["gbps"])
        section["results"].extend(rows.values())
    return section


def plugin_warp(st, x, params, threads: int | None = None) -> tuple[str, Callable[[], Any] | None, str | None]:
    """The plugin's fused theta -> sample kernel for this transformer, or why it cannot run."""
    theta = st.generator.theta(params) if hasattr(st.generator, "theta") else None
    if theta is None:
        return ("plugin", None, "the transform has no matrix (TPS): no fused kernel")
    if theta.shape[-2:] not in ((2, 3), (3, 3)):
        return ("plugin", None, f"theta of shape {list(theta.shape)} has no fused 2-D kernel")
    try:
        from stn_deploy import kernels

        kernels.load_library()
    except (ImportError, UserError) as exc:
        return ("plugin", None, f"plugin library unavailable: {exc}")
    s = st.settings
    theta = theta.contiguous()
    size = st.out_size
    return ("plugin", lambda: kernels.affine_grid_sample(x, theta, size, s.mode, s.padding_mode, s.align_corners,
                                                         num_threads=threads), None)
