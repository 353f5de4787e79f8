"""Write a Triton model repository from checkpoints, standard ONNX models and engines.

Per model file (``<n>`` = ``--name`` or the file's stem):

- an engine (``.engine``/``.plan`` with the sidecar ``stn-deploy build`` wrote):
  ``<n>`` with ``platform: "tensorrt_plan"``, ``max_batch_size`` within the engine profile,
  preferred batch sizes from the profile, GPU instances, and our plugin library copied into
  ``<n>/plugins/`` with the server flags that load it in ``tritonserver-flags.txt``;
- a standard ONNX: ``<n>-onnx`` (``backend: "onnxruntime"``) and ``<n>-python`` (the python
  backend running the same ONNX in ONNX Runtime: the variant for a server that has only the
  python backend, such as the one ``stn-deploy serve`` bundles);
- a checkpoint: its standard export, as for a standard ONNX.

Everything goes into a temporary folder beside the target that is renamed onto it at the end:
an interrupted or failed write leaves nothing at the target.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from stn_deploy.errors import UserError
from stn_deploy.io import ensure_writable_dir, file_sha256, temporary_folder
from stn_deploy.triton.config import (
    BACKEND_ONNXRUNTIME,
    BACKEND_PYTHON,
    PLATFORM_TENSORRT,
    ConfigSpec,
    TensorSpec,
    render_config,
)
from stn_deploy.triton.entry import RepositoryModel

SERVE_TENSORRT, SERVE_ONNX, SERVE_PYTHON = "tensorrt", "onnx", "python"
SERVE_AS = (SERVE_TENSORRT, SERVE_ONNX, SERVE_PYTHON)
DEFAULT_MAX_BATCH = 64
MANIFEST = "stn-deploy-repository.json"
FLAGS_FILE = "tritonserver-flags.txt"
#: Triton model names: what its repository accepts and a URL path keeps readable.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RepositoryOptions:
    """Options of ``write_repository``.

    Attributes:
        models: checkpoints, standard ONNX models and/or engines.
        output: the repository folder to create; it must not exist.
        name: model name (one model file only); default each file's stem.
        max_batch_size: largest batch per execution; default the engine profile's max batch
            for an engine, 64 otherwise. Larger than an engine's profile is an error.
        instances: model instances per model; default 1.
        max_queue_delay_us: how long the dynamic batcher may wait to fill a batch, µs; default 100.
        dynamic_batching: add ``dynamic_batching`` to every config; default True.
        intra_op_threads: ONNX Runtime threads per python-backend instance; 0 = ORT's default.
        serve_as: which Triton backends to write an entry for where they apply: ``tensorrt``, ``onnx``
            (onnxruntime), ``python``.
        plugin_library: plugin library to copy for engines; default the one the engine's
            sidecar names, else ``stn-deploy plugins path``.
        kserve: also write ``inferenceservice.yaml`` (see ``stn_deploy.triton.kserve``).
        storage_uri: where the repository will be uploaded, for the KServe manifest.
    """

    models: tuple[Path, ...]
    output: Path
    name: str | None = None
    max_batch_size: int | None = None
    instances: int = 1
    max_queue_delay_us: int = 100
    dynamic_batching: bool = True
    intra_op_threads: int = 1
    serve_as: tuple[str, ...] = SERVE_AS
    plugin_library: Path | None = None
    kserve: bool = False
    storage_uri: str = "pvc://stn-models/triton"


@dataclass
class RepositoryResult:
    """What ``write_repository`` wrote."""

    path: Path
    models: list[RepositoryModel]
    server_flags: list[str]
    kserve: Path | None = None

    def to_dict(self) -> dict:
        return {"path": str(self.path), "models": [asdict(m) for m in self.models],
                "server_flags": self.server_flags, "kserve": str(self.kserve) if self.kserve else None}


# --------------------------------------------------------------------------- model I/O


def _onnx_io(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs/outputs of an ONNX model without the batch axis; the batch must be dynamic."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def specs(values) -> list[TensorSpec]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
            if not dims or dims[0] != -1:
                raise UserError(f"{path.name}: {v.name!r} has a fixed batch dimension {dims[:1]}; "
                                "export with a dynamic batch (stn-deploy export --dynamic-batch)")
            dtype = str(helper.tensor_dtype_to_np_dtype(t.elem_type))
            out.append(TensorSpec(v.name, dtype, tuple(dims[1:])))
        return out

    return specs(model.graph.input), specs(model.graph.output)


def _read_sidecar(engine: Path) -> dict:
    from stn_deploy.trt import sidecar_path

    side = sidecar_path(engine)
    if not side.is_file():
        raise UserError(f"{engine.name}: no sidecar {side.name} beside it; Triton's config needs the engine's "
                        "I/O and profile, which stn-deploy build records there (rebuild with stn-deploy build)")
    try:
        info = json.loads(side.read_text())
        profile = info["profiles"][0]
        network = info["network"]
        recorded = info["engine"]["sha256"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise UserError(f"{side}: not a sidecar written by stn-deploy build") from None
    if recorded != file_sha256(engine):
        raise UserError(f"{side.name} describes another engine than {engine.name} (sha256 differs); rebuild it")
    info["_profile"] = profile
    info["_network"] = network
    return info


# --------------------------------------------------------------------------- entries


def _preferred(sizes, max_batch: int) -> list[int]:
    return sorted({int(s) for s in sizes if 1 <= int(s) <= max_batch} | {max_batch})


def _engine_entry(engine: Path, name: str, options: RepositoryOptions, tmp: Path,
                  final: Path) -> tuple[RepositoryModel, list[str]]:
    info = _read_sidecar(engine)
    profile, network = info["_profile"], info["_network"]
    batched = all(int(t["shape"][0]) == -1 for t in network["inputs"])
    if batched:
        profile_max = min(int(r["max"][0]) for r in profile)
        opt = [int(r["opt"][0]) for r in profile]
        max_batch = options.max_batch_size or profile_max
        if max_batch > profile_max:
            raise UserError(f"--max-batch-size {max_batch} is larger than {engine.name}'s profile allows "
                            f"(max batch {profile_max}); rebuild with a larger --shapes range or lower it")
        skip = 1  # Triton's dims leave out the batch axis
    else:  # a fixed batch: Triton sends whole tensors and cannot batch requests
        if options.max_batch_size:
            raise UserError(f"{engine.name} has a fixed batch dimension; it cannot take --max-batch-size "
                            "(build with a dynamic batch, e.g. --shapes input:1x...,8x...,64x...)")
        max_batch, opt, skip = 0, [], 0
    inputs = [TensorSpec(t["name"], t["dtype"], tuple(int(d) for d in t["shape"][skip:])) for t in network["inputs"]]
    outputs = [TensorSpec(t["name"], t["dtype"], tuple(int(d) for d in t["shape"][skip:]))
               for t in network["outputs"]]
    backend = info.get("backend", {})
    flavour = "TensorRT-RTX" if backend.get("name") == "rtx" else "TensorRT"
    needs = f"{flavour} {backend.get('version', '?')}"
    notes = [f"engine built with {needs}; a server must run that same TensorRT version"]
    if backend.get("name") == "rtx":
        notes.append("TensorRT-RTX engines need the TensorRT-RTX runtime: Triton's tensorrt backend links full "
                     "TensorRT; build with full TensorRT for a stock Triton container")
    preferred = _preferred(opt, max_batch) if batched else []
    spec = ConfigSpec(
        name=name, platform=PLATFORM_TENSORRT, backend=None, max_batch_size=max_batch,
        inputs=tuple(inputs), outputs=tuple(outputs), dynamic_batching=options.dynamic_batching and batched,
        preferred_batch_sizes=tuple(preferred), max_queue_delay_us=options.max_queue_delay_us,
        instances=options.instances, instance_kind="KIND_GPU", default_model_filename="model.plan",
    )
    model_dir = tmp / name
    (model_dir / "1").mkdir(parents=True)
    shutil.copyfile(engine, model_dir / "1" / "model.plan")
    flags: list[str] = []
    plugin = options.plugin_library or _sidecar_plugin(info)
    if plugin is not None:
        if not plugin.is_file():
            raise UserError(f"plugin library {plugin} not found (stn-deploy plugins build, or --plugin-library)")
        (model_dir / "plugins").mkdir()
        shutil.copyfile(plugin, model_dir / "plugins" / plugin.name)
        # Paths as they will be once the temporary folder is renamed onto the target.
        flags.append(f"--backend-config=tensorrt,plugins={final / name / 'plugins' / plugin.name}")
        notes.append(f"plugin library {plugin.name} copied into {name}/plugins/")
    header = [f"stn-deploy: {engine.name}, needs {needs}" + (f" and plugins/{plugin.name}" if plugin else "")]
    (model_dir / "config.pbtxt").write_text(render_config(spec, header))
    entry = _entry(spec, SERVE_TENSORRT, engine, notes)
    entry.plugin_library = plugin.name if plugin is not None else None
    return entry, flags


def _sidecar_plugin(info: dict) -> Path | None:
    lib = info.get("plugin_library")
    if not lib:
        return None
    path = Path(lib["path"])
    if path.is_file():
        return path
    from stn_deploy import kernels

    return kernels.library_path()  # the sidecar's library moved: the one built here


def _onnx_entries(onnx_path: Path, name: str, source: Path, options: RepositoryOptions,
                  tmp: Path) -> list[RepositoryModel]:
    inputs, outputs = _onnx_io(onnx_path)
    max_batch = options.max_batch_size or DEFAULT_MAX_BATCH
    preferred = _preferred([s for s in (4, 8, 16, 32) if s < max_batch], max_batch)
    entries = []
    base = ConfigSpec(name=name, platform=None, backend=None, max_batch_size=max_batch, inputs=tuple(inputs),
                      outputs=tuple(outputs), dynamic_batching=options.dynamic_batching,
                      preferred_batch_sizes=tuple(preferred), max_queue_delay_us=options.max_queue_delay_us,
                      instances=options.instances, instance_kind="KIND_CPU")
    header = [f"stn-deploy: {source.name} (standard ONNX ops, opset 20: AffineGrid + GridSample)"]
    if SERVE_ONNX in options.serve_as:
        spec = replace(base, name=f"{name}-onnx", backend=BACKEND_ONNXRUNTIME, default_model_filename="model.onnx")
        d = tmp / spec.name
        (d / "1").mkdir(parents=True)
        shutil.copyfile(onnx_path, d / "1" / "model.onnx")
        (d / "config.pbtxt").write_text(render_config(spec, header))
        entries.append(_entry(spec, SERVE_ONNX, source, ["needs Triton's onnxruntime backend (opset 20)"]))
    if SERVE_PYTHON in options.serve_as:
        spec = replace(base, name=f"{name}-python", backend=BACKEND_PYTHON,
                       parameters=(("onnx_file", "model.onnx"), ("intra_op_threads", str(options.intra_op_threads))))
        d = tmp / spec.name
        (d / "1").mkdir(parents=True)
        shutil.copyfile(onnx_path, d / "1" / "model.onnx")
        shutil.copyfile(Path(__file__).with_name("python_model.py"), d / "1" / "model.py")
        (d / "config.pbtxt").write_text(render_config(spec, header))
        entries.append(_entry(spec, SERVE_PYTHON, source,
                              ["python backend: its python3 needs numpy<2 and onnxruntime (stn-deploy serve sets it)"]))
    return entries


def _entry(spec: ConfigSpec, serve_as: str, source: Path, notes: list[str]) -> RepositoryModel:
    return RepositoryModel(
        name=spec.name, serve_as=serve_as, source=str(source), max_batch_size=spec.max_batch_size,
        preferred_batch_sizes=list(spec.preferred_batch_sizes),
        inputs=[{"name": t.name, "dtype": t.dtype, "dims": list(t.dims)} for t in spec.inputs],
        outputs=[{"name": t.name, "dtype": t.dtype, "dims": list(t.dims)} for t in spec.outputs], notes=notes)


# --------------------------------------------------------------------------- the repository


def _check_options(options: RepositoryOptions) -> None:
    if not options.models:
        raise UserError("give at least one model (checkpoint, standard ONNX or engine)")
    if options.name is not None and len(options.models) > 1:
        raise UserError("--name names one model; give one MODEL or drop --name")
    if options.name is not None and not _NAME_RE.match(options.name):
        raise UserError(f"--name {options.name!r}: use letters, digits, '_', '-', '.'")
    if options.max_batch_size is not None and options.max_batch_size < 1:
        raise UserError("--max-batch-size must be at least 1")
    if options.instances < 1:
        raise UserError("--instances must be at least 1")
    if options.max_queue_delay_us < 0:
        raise UserError("--max-queue-delay-us must be >= 0")
    unknown = [f for f in options.serve_as if f not in SERVE_AS]
    if unknown or not options.serve_as:
        raise UserError(f"unknown --serve-as {', '.join(unknown) or '(none)'}; choose from {', '.join(SERVE_AS)}")
    out = Path(options.output)
    if out.exists():
        raise UserError(f"{out} exists; the repository is written to a new folder (remove it or pick another)")


def write_repository(options: RepositoryOptions) -> RepositoryResult:
    """Write a Triton model repository for ``options.models`` (see the module docstring).

    Every ``config.pbtxt`` is parsed with Triton's model-config schema before it is written.

    Raises:
        UserError: an existing output folder, an unknown model kind (a plugin ONNX, a foreign
            file), a batch larger than an engine's profile, a missing sidecar or plugin library.
    """
    from stn_deploy.model_files import ModelKind, detect_kind

    _check_options(options)
    final = Path(options.output).absolute()
    kinds = [(Path(m), detect_kind(m)) for m in options.models]  # bad files fail before anything is written
    for path, kind in kinds:
        if kind == ModelKind.ONNX_PLUGIN:
            raise UserError(f"{path.name} holds our plugin ops, which only TensorRT runs: build an engine from it "
                            "(stn-deploy build) or give the standard export (stn-deploy export --ops standard)")
    names = [options.name or path.stem for path, _ in kinds]
    for n in names:
        if not _NAME_RE.match(n):
            raise UserError(f"model name {n!r} (from the file name): use --name with letters, digits, '_', '-', '.'")
    ensure_writable_dir(final.parent)
    # Renamed onto ``final`` when complete; removed on any failure or stop signal.
    with temporary_folder(f".{final.name}.", final.parent, suffix=".tmp") as tmp:
        models: list[RepositoryModel] = []
        flags: list[str] = []
        for (path, kind), name in zip(kinds, names):
            if kind == ModelKind.ENGINE:
                if SERVE_TENSORRT not in options.serve_as:
                    raise UserError(f"{path.name} is an engine; add tensorrt to --serve-as")
                entry, more = _engine_entry(path, name, options, tmp, final)
                models.append(entry)
                flags += [f for f in more if f not in flags]
            elif kind == ModelKind.CHECKPOINT:
                models += _checkpoint_entries(path, name, options, tmp)
            else:
                models += _onnx_entries(path, name, path, options, tmp)
        seen: set[str] = set()
        for m in models:
            if m.name in seen:
                raise UserError(f"two models would be named {m.name!r}; give the files different names")
            seen.add(m.name)
        if not models:
            raise UserError(f"no model written: --serve-as {', '.join(options.serve_as)} do not apply to the inputs")
        _write_flags(tmp, final, flags, models)
        kserve_path = None
        if options.kserve:
            from stn_deploy.triton.kserve import KServeOptions, write_inference_service

            kserve_path = write_inference_service(KServeOptions(
                name=names[0], storage_uri=options.storage_uri, models=tuple(models)), tmp / "inferenceservice.yaml")
        result = RepositoryResult(final, models, flags, final / "inferenceservice.yaml" if kserve_path else None)
        (tmp / MANIFEST).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, final)
        except OSError as exc:
            raise UserError(f"cannot create {final}: {exc.strerror}") from None
        return result


def _checkpoint_entries(path: Path, name: str, options: RepositoryOptions, tmp: Path) -> list[RepositoryModel]:
    from stn_deploy.jobs.export import ExportOptions, export

    if not ({SERVE_ONNX, SERVE_PYTHON} & set(options.serve_as)):
        return []
    with temporary_folder("stn-triton-export-") as work:
        onnx_path = work / f"{name}.onnx"
        export(ExportOptions(path, onnx_path, ops="standard"))
        return _onnx_entries(onnx_path, name, path, options, tmp)


def _write_flags(tmp: Path, final: Path, flags: list[str], models: list[RepositoryModel]) -> None:
    lines = ["# Flags for tritonserver to serve this repository (one per line).",
             f"--model-repository={final}"]
    if flags:
        preload = flags[0].split("plugins=", 1)[1]
        lines += ["# Our TensorRT plugin, loaded by the tensorrt backend through getCreators:", *flags,
                  "# Or preload it: the library then loads the server's TensorRT (libnvinfer.so.10 /",
                  "# .so.11 on the loader's path) and registers its creators there at load time:",
                  f"# LD_PRELOAD={preload} tritonserver ..."]
    if any(m.serve_as == SERVE_PYTHON for m in models):
        lines += ["# python-backend models: the first python3 on the server's PATH needs numpy<2 and",
                  "# onnxruntime, and the stub needs that interpreter's libpython (LD_LIBRARY_PATH);",
                  "# stn-deploy serve sets both."]
    (tmp / FLAGS_FILE).write_text("\n".join(lines) + "\n")


def read_manifest(repository: Path) -> dict | None:
    """The manifest ``write_repository`` left in ``repository``, or None for another repository."""
    path = Path(repository) / MANIFEST
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
