"""Latency benchmarks of a model across backends, and of its sampler against a memory copy.

``bench(BenchOptions(...))`` times a model on each requested backend and batch size and
writes a JSON report and a PNG plot (p50 latency against batch) atomically.

Backends:
    ``torch``          PyTorch eager (the baseline of every ratio); needs a checkpoint or a ``.pt2``.
    ``torch-compile``  ``torch.compile`` of the same module (one compile per batch size; the
                       compile time is reported, not timed); needs a checkpoint or a ``.pt2``.
    ``ort``            ONNX Runtime on the CPU. A standard ONNX runs on plain ORT; a plugin
                       ONNX runs its plugin ops as Python ops on our CPU reference (about
                       1.7 ms per call): a validation path, not a serving one, and the report
                       says so.
    ``trt``            a TensorRT engine on the GPU; without a GPU the row says
                       "skipped: needs a GPU" and nothing fails.

Timing: CUDA events on a GPU, ``time.perf_counter_ns`` on the CPU; every iteration is timed
on its own and the report gives p50/p90/p99 (linear interpolation), mean and min in ms,
throughput = batch / p50 in samples/s, and ``speedup_vs_torch`` = torch eager p50 / p50
measured in the same run.

Sampler: for a checkpoint with a spatial transformer, the first transformer's sampling step
(grid generator + sampler, parameters fixed) is timed alone and reported as effective GB/s
(bytes of input actually read + parameters + output, see ``sampler_bytes``) against a copy
that moves the same number of bytes on the same device in the same run (device-to-device on
a GPU, a host memcpy on the CPU). The plugin's fused kernel (``kernels.affine_grid_sample``)
is timed beside it when the library is built. The copy and the samplers are timed in
interleaved rounds (``time_interleaved``), so a change of load hits them alike.

Report (``<name>.json``; ``format`` = "stn-deploy-bench", ``version`` = 1):
    ``model``     path, kind (checkpoint | onnx | engine), name, input_shape (per sample),
                  dtype, onnx (what ort ran)
    ``device``    cpu, cpu_threads, cuda; on a GPU also gpu, compute_capability,
                  gpu_memory_gib, cuda_runtime, driver
    ``versions``  python, stn_deploy, torch, onnxruntime, tensorrt, tensorrt_rtx (None = absent)
    ``settings``  backends, batches, warmup, iters, torch_device, cpu_threads, timer
    ``results``   one row per backend and batch: backend, batch, status (ok | skipped |
                  failed), reason, device, input_shape, note, p50_ms, p90_ms, p99_ms,
                  mean_ms, min_ms, iters, throughput_sps, speedup_vs_torch, compile_s,
                  noisy (p90 > 3 x p50: re-measure before quoting)
    ``sampler``   status, transform, out_size, mode, padding_mode, align_corners, copy,
                  results: impl (torch | plugin), batch, bytes {input_read, params, output,
                  total}, p50_ms..., gbps, copy_p50_ms, copy_gbps, fraction_of_copy
    ``outputs``   json, png
"""

from stn_deploy.jobs.bench.core import bench, new_run_dir
from stn_deploy.jobs.bench.options import (
                                      BACKENDS,
                                      DEFAULT_BACKENDS,
                                      DEFAULT_BATCHES,
                                      DEFAULT_ITERS,
                                      DEFAULT_OUTPUT_DIR,
                                      DEFAULT_WARMUP,
                                      NOISY_P90_OVER_P50,
                                      ORT_PLUGIN_NOTE,
                                      REPORT_FORMAT,
                                      REPORT_VERSION,
                                      BenchOptions,
                                      BenchResult,
                                      parse_backends,
                                      parse_batches,
)
from stn_deploy.jobs.bench.report import environment, plot_latency, render_tables
from stn_deploy.jobs.bench.sampler import TAPS, sampler_bytes
from stn_deploy.jobs.bench.timing import (
                                      copy_baseline,
                                      copy_fn,
                                      copy_stats,
                                      latency_stats,
                                      percentile,
                                      time_callable,
                                      time_interleaved,
)

__all__ = [
    "BACKENDS", "DEFAULT_BACKENDS", "DEFAULT_BATCHES", "DEFAULT_ITERS", "DEFAULT_OUTPUT_DIR", "DEFAULT_WARMUP",
    "NOISY_P90_OVER_P50", "ORT_PLUGIN_NOTE", "REPORT_FORMAT", "REPORT_VERSION", "TAPS", "BenchOptions", "BenchResult",
    "bench", "copy_baseline", "copy_fn", "copy_stats", "environment", "latency_stats", "new_run_dir", "parse_backends",
    "parse_batches", "percentile", "plot_latency", "render_tables", "sampler_bytes", "time_callable",
    "time_interleaved",
]
