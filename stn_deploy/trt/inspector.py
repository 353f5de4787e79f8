"""What an engine file holds: I/O, profiles, layers (plugin layers named) and its sidecar.

Deserialising an engine needs a GPU (TensorRT-RTX: cudaError 35 without one). Without a
GPU, ``inspect`` reports what the file header and the sidecar written by ``build`` say —
the network as parsed, before TensorRT fused it — and names what it could not read.
"""

from __future__ import annotations

import json
from pathlib import Path

from stn_deploy.io import file_sha256
from stn_deploy.trt.engine_file import check_engine_file, deserialize, read_sidecar
from stn_deploy.trt.flavour import (
    dtype_name,
    engine_version_from_header,
    gpu_available,
)

NEEDS_GPU = ("reading the engine itself (fused layers, tactics, device memory) needs a GPU: TensorRT "
             "deserialises engines only on a CUDA device; shown here is the network as parsed at build "
             "time (from the sidecar), before layer fusion")


def _from_engine(path: Path, flavour, sidecar: dict | None) -> dict:
    """Read I/O, profiles and layers from a deserialised engine (GPU only)."""
    engine, _runtime = deserialize(path, flavour, sidecar)
    trt = flavour.trt
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    io: dict[str, list[dict]] = {"inputs": [], "outputs": []}
    for name in names:
        mode = engine.get_tensor_mode(name)
        entry = {"name": name, "dtype": dtype_name(engine.get_tensor_dtype(name)),
                 "shape": list(engine.get_tensor_shape(name))}
        io["inputs" if mode == trt.TensorIOMode.INPUT else "outputs"].append(entry)
    profiles = []
    for p in range(engine.num_optimization_profiles):
        ranges = []
        for entry in io["inputs"]:
            lo, opt, hi = engine.get_tensor_profile_shape(entry["name"], p)
            ranges.append({"name": entry["name"], "min": list(lo), "opt": list(opt), "max": list(hi)})
        profiles.append(ranges)
    inspector = engine.create_engine_inspector()
    try:
        layers_json = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
        layers = layers_json.get("Layers", [])
    except Exception as exc:  # layer details depend on the profiling verbosity of the build
        layers = [f"unavailable: {exc}"]
    return {**io, "profiles": profiles, "layers": layers, "layers_source": "engine"}


def inspect(path: Path | str, flavour: str = "auto") -> dict:
    """Describe an engine file.

    Args:
        path: the engine.
        flavour: "auto" (from the engine header), "tensorrt" or "rtx".

    Returns:
        A dict with ``engine`` (file, bytes, sha256, flavour), ``inputs``, ``outputs``,
        ``profiles``, ``layers`` (each with ``plugin`` where it is one of ours),
        ``layers_source`` ("engine" or "sidecar: network as parsed"), ``summary``
        (``summarize_layers``: counts by type and output dtype, plugin layers), ``sidecar`` (or
        None) and ``needs_gpu`` (what could not be read here, or None).

    Raises:
        UserError: missing file, not an engine, another TensorRT version.
    """
    path = Path(path)
    kind, be = check_engine_file(path, flavour)
    sidecar = read_sidecar(path)
    digest = file_sha256(path)
    with open(path, "rb") as f:
        built_by = engine_version_from_header(f.read(64))
    report: dict = {
        "engine": {"path": str(path), "bytes": path.stat().st_size, "sha256": digest,
                   "backend": {"name": kind, "version": be.version},
                   "header_version": ".".join(map(str, built_by)) if built_by else None},
        "sidecar": sidecar,
        "sidecar_matches": None if sidecar is None else sidecar.get("engine", {}).get("sha256") == digest,
        "needs_gpu": None,
    }
    report["gpu_targets"] = _gpu_targets(sidecar)
    network = (sidecar or {}).get("network", {})
    if gpu_available():
        report.update(_from_engine(path, be, sidecar))
        # The parsed network names our plugin layers even where the engine fused them.
        report["network_layers"] = network.get("layers", [])
    else:
        report.update({
            "inputs": network.get("inputs", []),
            "outputs": network.get("outputs", []),
            "profiles": (sidecar or {}).get("profiles", []),
            "layers": network.get("layers", []),
            "layers_source": "sidecar: network as parsed" if sidecar else None,
            "needs_gpu": NEEDS_GPU if sidecar else NEEDS_GPU.split(":")[0] + "; and there is no sidecar",
        })
    report["summary"] = summarize_layers(report["layers"] if isinstance(report["layers"], list) else [])
    return report


def _gpu_targets(sidecar: dict | None) -> dict | None:
    """The engine's GPUs (from the sidecar) against the plugin library's code: checked again on
    the library the sidecar names where it is still there (it may have been rebuilt), else as
    recorded at build time. None for engines without a sidecar or built before it was recorded."""
    from stn_deploy.trt import targets

    recorded = (sidecar or {}).get("gpu_targets")
    if not isinstance(recorded, dict) or not recorded.get("engine"):
        return None
    plugin = (sidecar or {}).get("plugin_library") or {}
    checked = None
    if plugin.get("path") and Path(plugin["path"]).is_file():
        fresh = targets.check_library([targets.cc_number(c) for c in recorded["engine"]], recorded.get("source", ""),
                                      plugin["path"])
        checked = fresh.to_dict() if fresh is not None else None
    return {**recorded, "plugin": checked if checked is not None else recorded.get("plugin"),
            "plugin_checked": "now" if checked is not None else "at build time"}


def _layer_fields(layer: dict) -> tuple[str, str, dict | None, list[str]]:
    """(name, type, our plugin or None, output dtypes) of a layer, from the sidecar's parsed network
    (name/type/plugin/outputs) or a deserialised engine's JSON (Name/LayerType/Outputs)."""
    name = str(layer.get("name") or layer.get("Name") or "")
    kind = str(layer.get("type") or layer.get("LayerType") or "?")
    plugin = layer.get("plugin") if isinstance(layer.get("plugin"), dict) and layer["plugin"].get("name") else None
    dtypes = []
    for out in layer.get("outputs") or layer.get("Outputs") or []:
        if isinstance(out, str):
            dtypes.append(out)
        elif isinstance(out, dict) and out.get("Format/Datatype"):
            dtypes.append(str(out["Format/Datatype"]))
    return name, kind, plugin, dtypes


def summarize_layers(layers: list) -> dict:
    """Counts of layers by type and of layer outputs by dtype, and the plugin layers (name, plugin,
    version): the part of a many-hundred-layer network worth reading first."""
    by_type: dict[str, int] = {}
    by_dtype: dict[str, int] = {}
    plugins = []
    for layer in layers:
        if not isinstance(layer, dict):
            continue
        name, kind, plugin, dtypes = _layer_fields(layer)
        by_type[kind] = by_type.get(kind, 0) + 1
        for d in dtypes:
            by_dtype[d] = by_dtype.get(d, 0) + 1
        if plugin is not None or kind.upper().startswith("PLUGIN"):
            plugins.append({"name": name, "plugin": (plugin or {}).get("name"), "version": (plugin or {}).get("version")})
    order = sorted(by_type.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"layers": sum(by_type.values()), "by_type": dict(order), "output_dtypes": by_dtype, "plugin_layers": plugins}


def _gpu_target_lines(found: dict | None) -> list[str]:
    if not found:
        return []
    lines = [f"gpus     {', '.join(found['engine'])} ({found.get('source')})"]
    plugin = found.get("plugin")
    if plugin:
        runs = ", ".join(f"{cc}: {how}" for cc, how in plugin["plugin_runs"].items()) or "none of them"
        lines.append(f"kernels  the plugin library runs on {runs} (checked {found.get('plugin_checked')})")
        if plugin["plugin_missing"]:
            lines.append(f"warning  the plugin library has no code for {', '.join(plugin['plugin_missing'])}: the "
                         "engine's plugin layers fail there; rebuild it for them (stn-deploy plugins build)")
    return lines


def format_report(report: dict, layers: bool = False) -> list[str]:
    """Human-readable lines of an ``inspect`` report: a summary (I/O, profiles, plugin layers,
    layer counts by type, precision); every layer too with ``layers``."""
    eng = report["engine"]
    side = report.get("sidecar") or {}
    label = "TensorRT-RTX" if eng["backend"]["name"] == "rtx" else "TensorRT"
    lines = [f"engine   {eng['path']}  ({eng['bytes']} bytes, {label} engine; installed {eng['backend']['version']})"]
    if side:
        lines.append(f"built    {side.get('backend', {}).get('version')} in {side.get('build_seconds')} s, "
                     f"precision {side.get('precision')}, targets {', '.join(side.get('compute_capabilities') or [])}")
        plugin = side.get("plugin_library")
        if plugin:
            ops = ", ".join(plugin.get("ops", []))
            lines.append(f"plugin   {plugin['path']} (sha256 {plugin['sha256'][:12]}…, ops {ops})")
        if report.get("sidecar_matches") is False:
            lines.append("warning  the sidecar describes another engine file (sha256 differs)")
        lines += _gpu_target_lines(report.get("gpu_targets"))
    else:
        built = f"; header says built by {eng['header_version']}" if eng.get("header_version") else ""
        lines.append(f"sidecar  none (built by another tool, e.g. polygraphy convert or trtexec{built})")
    if report.get("layers_source") is None:
        # Nothing but the header is readable: say so instead of an empty I/O list and "0 layers".
        lines.append("io       unknown: without a sidecar only a deserialised engine tells its inputs, "
                     "outputs, profiles and layers, and that needs a GPU")
        if report.get("needs_gpu"):
            lines.append(f"note     {report['needs_gpu']}")
        return lines
    for kind in ("inputs", "outputs"):
        for t in report.get(kind, []):
            lines.append(f"{kind[:-1]:<8} {t['name']}: {t['dtype']} {t['shape']}")
    for i, profile in enumerate(report.get("profiles", [])):
        for r in profile:
            lines.append(f"profile  {i} {r['name']}: min {r['min']} opt {r['opt']} max {r['max']}")
    all_layers = report.get("layers") or []
    summary = report.get("summary") or summarize_layers(all_layers)
    lines.append(f"layers   {len(all_layers)} ({report.get('layers_source')})")
    if summary["by_type"]:
        lines.append("by type  " + ", ".join(f"{k} {v}" for k, v in summary["by_type"].items()))
    dtypes = ", ".join(f"{k} {v}" for k, v in sorted(summary["output_dtypes"].items(), key=lambda kv: -kv[1]))
    lines.append(f"precision {side.get('precision', 'unknown') if side else 'unknown'}"
                 + (f" (layer outputs: {dtypes})" if dtypes else ""))
    plugin_layers = summary["plugin_layers"]
    lines.append(f"plugins  {len(plugin_layers)} layer(s)" + (":" if plugin_layers else ""))
    for p in plugin_layers:
        lines.append(f"  {p['name']}  plugin {p['plugin']} v{p['version']}")
    if layers:
        lines.append("all layers:")
        for layer in all_layers:
            if isinstance(layer, dict):
                name, kind, plugin, _ = _layer_fields(layer)
                extra = f"  plugin {plugin['name']} v{plugin.get('version')}" if plugin else ""
                lines.append(f"  {kind:<18} {name}{extra}")
            else:
                lines.append(f"  {layer}")
    elif all_layers:
        lines.append("         (every layer: --layers; everything: --json)")
    if report.get("needs_gpu"):
        lines.append(f"note     {report['needs_gpu']}")
    return lines
