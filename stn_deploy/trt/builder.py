"""Build TensorRT / TensorRT-RTX engines from ONNX, in a child process.

The parser and builder run in ``stn_deploy.trt.build_worker`` so that an abort inside
TensorRT or a plugin cannot take the caller down, and so that Ctrl-C leaves no partial
engine: the engine is written to a temporary file that is renamed only after the build
succeeded (``io.atomic_paths``, together with its sidecar).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from stn_deploy import __version__, interrupts, schema
from stn_deploy.errors import UserError
from stn_deploy.io import atomic_paths, check_outputs_distinct, file_sha256, require_file
from stn_deploy.trt.engine_file import SIDECAR_FORMAT
from stn_deploy.trt.flavour import available_flavours, default_plugin_library, gpu_available
from stn_deploy.trt.options import DEFAULT_BATCH_RANGE, BuildJob, BuildOptions, BuildResult

#: ``progress(event)`` receives the worker's events: dicts with "event" = "progress"
#: (kind start/step/finish, phase, parent, steps/step) or "log" (severity, message).
ProgressCallback = Callable[[dict], None]

PLUGIN_OPS = (schema.GRID_SAMPLE_OP, schema.AFFINE_GRID_SAMPLE_OP)


class BuildError(UserError):
    """The parser or builder rejected the model (one line; the CLI exits 2)."""


@dataclass(frozen=True)
class BuildOutcome:
    """One build of ``build_many``: ``result`` on success, else ``error`` (one line)."""

    options: BuildOptions
    result: BuildResult | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.result is not None


def _load_onnx(path: Path):
    import onnx

    require_file(path, "ONNX model")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception:
        raise UserError(f"not an ONNX model: {path}") from None


def plugin_ops_in(model) -> list[str]:
    """Our plugin op types used by ``model`` (graph and local functions)."""
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return sorted({n.op_type for n in nodes if n.op_type in PLUGIN_OPS})


def _run_doctor(path: Path, flavour: str) -> None:
    """Stop the build on the doctor's errors (``doctor.doctor``, lint of known traps)."""
    from stn_deploy.jobs.doctor import default_target, doctor

    report = doctor(path, target=default_target(flavour))
    errors = [f"{f.node}: {f.message} (fix: {f.hint})" if getattr(f, "hint", "") else f"{f.node}: {f.message}"
              for f in report.errors]
    if errors:
        raise UserError(f"doctor found {len(errors)} error(s) in {path.name}: {errors[0]}"
                        + (f" (and {len(errors) - 1} more; see stn-deploy doctor)" if len(errors) > 1 else "")
                        + "; use --no-doctor to build anyway")


def _prepare(options: BuildOptions) -> BuildJob:
    """Check what can be checked without TensorRT; return the worker's job (less ``out``)."""
    check_outputs_distinct([options.engine, options.sidecar], [options.onnx, options.plugin_library])
    model = _load_onnx(options.onnx)
    if not available_flavours():
        raise UserError("no TensorRT found: install tensorrt, or tensorrt-rtx (pip install 'stn-deploy[rtx]')")
    inputs = {v.name for v in model.graph.input} - {i.name for i in model.graph.initializer}
    unknown = sorted({s.name for s in options.shapes} - inputs)
    if unknown:
        raise UserError(f"--shapes names {', '.join(unknown)}, not an input of {options.onnx.name} "
                        f"(inputs: {', '.join(sorted(inputs))})")
    from stn_deploy.graph import require_valid_plugin_nodes

    require_valid_plugin_nodes(model, options.onnx.name)
    plugin = options.plugin_library
    ops = plugin_ops_in(model)
    if plugin is not None:
        require_file(plugin, "plugin library")
    if plugin is None and ops:
        plugin = default_plugin_library()
        if plugin is None:
            raise UserError(f"{options.onnx.name} uses plugin ops ({', '.join(ops)}) but the plugin "
                            "library is missing; build it with: stn-deploy plugins build")
    if "current" in options.compute_capabilities and not gpu_available():
        raise UserError("--compute-capability current targets this machine's GPU, and it has none; "
                        "name the targets (e.g. sm86) to build ahead of time on the CPU")
    if options.compute_capabilities and options.flavour == "tensorrt":
        raise UserError("--compute-capability is a TensorRT-RTX option; full TensorRT builds for the GPU it runs on")
    if options.doctor:
        _run_doctor(options.onnx, options.flavour)
    return BuildJob(
        onnx=options.onnx.resolve(), flavour=options.flavour, precision=options.precision, shapes=options.shapes,
        default_batch=DEFAULT_BATCH_RANGE, timing_cache=options.timing_cache, opt_level=options.opt_level,
        workspace_mib=options.workspace_mib, compute_capabilities=options.compute_capabilities,
        plugin_library=Path(plugin).resolve() if plugin else None, plugin_ops=tuple(ops),
    )


class _Worker:
    """One ``build_worker`` child; restarted by ``build_many`` after a crash."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stn_deploy.trt.build_worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=env)
        # All three are pipes (subprocess.PIPE), never None.
        assert self.proc.stdin is not None and self.proc.stdout is not None and self.proc.stderr is not None
        self._to_child, self._from_child, self._child_stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
        self.stderr: collections.deque[str] = collections.deque(maxlen=200)
        # Each job's native stderr (TensorRT, plugin messages) goes to this file.
        fd, name = tempfile.mkstemp(prefix="stn-deploy-build-", suffix=".log")
        os.close(fd)
        self.stderr_file = Path(name)
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        for line in self._child_stderr:
            self.stderr.append(line.rstrip())

    def run(self, job: BuildJob, progress: ProgressCallback | None) -> dict:
        """Send one job; return its result event. A dead child raises BuildError."""
        try:
            self._to_child.write(job.to_json() + "\n")
            self._to_child.flush()
        except BrokenPipeError:
            pass
        for line in self._from_child:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("event") == "result":
                return event
            if progress is not None:
                progress(event)
        self.proc.wait()
        self._drain.join(timeout=2)
        raise BuildError(self._crash_message())

    def _crash_message(self) -> str:
        rc = self.proc.returncode
        how = (f"signal {signal.Signals(-rc).name}" if rc is not None and rc < 0
               else f"exit code {rc}")
        try:
            native = self.stderr_file.read_text(errors="replace").splitlines()
        except OSError:
            native = []
        tail = [line for line in [*self.stderr, *native] if line.strip()]
        said = [line for line in tail if "[E]" in line or "[F]" in line or "rror" in line
                or "stn_deploy_plugins" in line] or tail
        reason = " | ".join(said[-3:]) if said else "no message"
        return f"TensorRT stopped the build process ({how}): {reason}"

    def close(self) -> None:
        self._remove_log()
        if self.proc.poll() is None:
            try:
                self._to_child.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._remove_log()

    def _remove_log(self) -> None:
        self.stderr_file.unlink(missing_ok=True)


def _library_version(path: str) -> str | None:
    """``stn_library_version()`` of our plugin library (None for another library)."""
    import ctypes

    from stn_deploy.kernels import no_tensorrt_load

    try:
        with no_tensorrt_load():
            fn = ctypes.CDLL(path).stn_library_version
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    return fn().decode(errors="replace")


def _gpu_targets(job: BuildJob, backend: str) -> tuple[dict, str | None]:
    """(the GPUs the engine runs on and, for a plugin engine, where the plugin's kernels run
    there; a warning when they cannot run on some of them)."""
    from stn_deploy.trt import targets

    ccs, source = targets.engine_targets(backend, job.compute_capabilities)
    checked = targets.check_library(ccs, source, str(job.plugin_library)) if job.plugin_library and ccs else None
    found = {"engine": [targets.cc_name(c) for c in sorted(set(ccs))], "source": source,
             "plugin": checked.to_dict() if checked is not None else None}
    return found, checked.warning() if checked is not None else None


def _sidecar(options: BuildOptions, job: BuildJob, info: dict, engine_tmp: Path) -> dict:
    plugin = str(job.plugin_library) if job.plugin_library else None
    gpu_targets, target_warning = _gpu_targets(job, info["backend"]["name"])
    return {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "stn_deploy": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "engine": {"file": options.engine.name, "bytes": engine_tmp.stat().st_size,
                   "sha256": file_sha256(engine_tmp)},
        "backend": info["backend"],
        "onnx": {"path": str(job.onnx), "sha256": file_sha256(job.onnx)},
        "plugin_library": ({"path": plugin, "sha256": file_sha256(plugin), "version": _library_version(plugin),
                            "ops": list(job.plugin_ops)} if plugin else None),
        "precision": options.precision.value,
        "precision_method": ("graph converted (strongly typed builder)" if info["graph_converted_to"]
                             else "builder flag" if options.precision != "fp32" else "as exported"),
        "profiles": info["profiles"],
        "compute_capabilities": (list(job.compute_capabilities) or
                                 (["default: sm80, sm86, sm89, sm120+ (no sm90)"]
                                  if info["backend"]["name"] == "rtx" else ["the build GPU"])),
        "gpu_targets": gpu_targets,
        "opt_level": options.opt_level,
        "workspace_mib": options.workspace_mib,
        "timing_cache": (None if not options.timing_cache else
                         {"path": str(options.timing_cache),
                          "used": info["backend"]["name"] != "rtx"}),
        "build_seconds": info["build_seconds"],
        "network": info["network"],
        "warnings": ([target_warning] if target_warning else []) + info["warnings"],
    }


def build_many(options_list: Sequence[BuildOptions], progress: ProgressCallback | None = None,
               ) -> list[BuildOutcome]:
    """Build several engines in one child process (restarted after a crash).

    Bad input found before TensorRT runs (a missing file, malformed shapes) and build
    failures are reported per build, not raised; KeyboardInterrupt stops the child, removes
    the partial engine and propagates.
    """
    outcomes: list[BuildOutcome] = []
    worker: _Worker | None = None
    # Stopped by a signal between builds too: no worker process or build log outlives us.
    with interrupts.on_abort(lambda: worker.kill() if worker is not None else None):
        try:
            for options in options_list:
                try:
                    job = _prepare(options)
                except UserError as exc:
                    outcomes.append(BuildOutcome(options, None, str(exc)))
                    continue
                if worker is None or worker.proc.poll() is not None:
                    if worker is not None:  # it crashed on the previous build: start afresh
                        worker.kill()
                    with interrupts.deferred():  # the worker and its log exist only once recorded
                        worker = _Worker()
                try:
                    # The engine and its sidecar are one unit: both renamed, or neither.
                    with atomic_paths(options.engine, options.sidecar) as (tmp, tmp_json):
                        try:
                            # Stopped by a signal: the worker goes first (newest clean-up), then the temps.
                            with interrupts.on_abort(worker.kill):
                                event = worker.run(dataclasses.replace(job, out=tmp, stderr=worker.stderr_file),
                                                   progress)
                        except BaseException:
                            # Stop the worker before atomic_paths deletes the temporary engine, or
                            # a worker still building could write it again.
                            worker.kill()
                            raise
                        if not event["ok"]:
                            raise BuildError(event["error"])
                        sidecar = _sidecar(options, job, event["info"], tmp)
                        tmp_json.write_text(json.dumps(sidecar, indent=2) + "\n")
                except UserError as exc:
                    outcomes.append(BuildOutcome(options, None, str(exc)))
                    continue
                outcomes.append(BuildOutcome(options, BuildResult(
                    options.engine, options.sidecar, sidecar["build_seconds"], sidecar), None))
        except BaseException:
            if worker is not None:
                worker.kill()
            raise
    if worker is not None:
        worker.close()
    return outcomes


def build(options: BuildOptions, progress: ProgressCallback | None = None) -> BuildResult:
    """Build one engine and its sidecar JSON (``<engine>.json``), both written atomically.

    Runs ``doctor.doctor`` first unless ``options.doctor`` is False. The build runs in a child
    process: a TensorRT abort or Ctrl-C leaves no partial engine.

    Args:
        options: the ONNX, the engine path and the build settings (``BuildOptions``).
        progress: called with each build event (phases, TensorRT log lines); default none.

    Returns:
        The ``BuildResult``: engine path, sidecar path and dict, build seconds.

    Raises:
        UserError: bad input (not ONNX, missing plugin library, unknown ``--shapes`` name)
            or a build that TensorRT rejected (``BuildError``, one line naming the reason).
    """
    (outcome,) = build_many([options], progress)
    if outcome.result is None:
        raise BuildError(outcome.error or "the build failed")
    return outcome.result


def build_all(options_list: Iterable[BuildOptions], progress: ProgressCallback | None = None,
              ) -> list[BuildResult]:
    """``build`` for several engines in one child process; raises on the first failure."""
    results: list[BuildResult] = []
    for outcome in build_many(list(options_list), progress):
        if outcome.result is None:
            raise BuildError(outcome.error or "the build failed")
        results.append(outcome.result)
    return results
