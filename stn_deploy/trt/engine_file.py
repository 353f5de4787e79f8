"""Engine files: the sidecar ``build`` writes beside each one, the checks before loading,
and deserialisation (GPU only). ``inspector`` and ``runner`` both open engines through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from stn_deploy.errors import UserError
from stn_deploy.trt.flavour import (
    Flavour,
    default_plugin_library,
    engine_flavour_from_header,
    engine_version_from_header,
    get_flavour,
    load_plugin_library,
    make_logger,
)
from stn_deploy.trt.options import sidecar_path


def read_sidecar(engine: Path) -> dict | None:
    """The sidecar dict of ``engine``, or None when there is none.

    Raises:
        UserError: the sidecar exists but is not valid JSON.
    """
    path = sidecar_path(engine)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable engine sidecar {path}: {exc}") from None


def check_engine_file(path: Path, flavour_choice: str = "auto") -> tuple[str, Flavour]:
    """Check that ``path`` is an engine this installation can load; return (kind, flavour).

    Raises:
        UserError: missing file, not an engine, or built by another TensorRT (version).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"engine not found: {path}")
    with open(path, "rb") as f:
        head = f.read(64)
    kind = engine_flavour_from_header(head)
    if kind is None:
        raise UserError(f"not a TensorRT engine: {path} (no TensorRT/TensorRT-RTX header)")
    if flavour_choice not in ("auto", kind):
        raise UserError(f"{path.name} is a {'TensorRT-RTX' if kind == 'rtx' else 'TensorRT'} engine; "
                        f"it cannot run with --trt {flavour_choice}")
    flavour = get_flavour(kind)
    built = engine_version_from_header(head)
    if built is not None and built[:2] != flavour.version_tuple()[:2]:
        raise UserError(f"{path.name} was built by TensorRT-RTX {'.'.join(map(str, built))}; this is "
                        f"{flavour.label}: rebuild it with stn-deploy build")
    sidecar = read_sidecar(path)
    if sidecar is not None:
        made = sidecar.get("backend", {})
        if made.get("name") == flavour.name and made.get("version") and \
                tuple(made["version"].split(".")[:2]) != tuple(flavour.version.split(".")[:2]):
            raise UserError(f"{path.name} was built by {made['version']} (sidecar); this is "
                            f"{flavour.label}: rebuild it with stn-deploy build")
    return kind, flavour


def _plugin_for(engine_path: Path, sidecar: dict | None, plugin_library: Path | None) -> Path | None:
    """The plugin library to load before deserialising: explicit, sidecar's, or default."""
    if plugin_library is not None:
        if not Path(plugin_library).is_file():
            raise UserError(f"plugin library not found: {plugin_library}")
        return Path(plugin_library)
    recorded = (sidecar or {}).get("plugin_library")
    if recorded:
        if Path(recorded["path"]).is_file():
            return Path(recorded["path"])
        found = default_plugin_library()
        if found is None:
            raise UserError(f"{engine_path.name} uses plugin ops ({', '.join(recorded.get('ops', []))}) but the "
                            f"plugin library is missing ({recorded['path']}); build it with: stn-deploy plugins build")
        return found
    return default_plugin_library()


def deserialize(path: Path, flavour: Flavour, sidecar: dict | None = None,
                plugin_library: Path | None = None):
    """Deserialise an engine on the GPU; returns (engine, runtime) — keep the runtime alive.

    Raises:
        UserError: a missing plugin library, or an engine TensorRT cannot load (another
            version, a plugin it cannot find).
    """
    trt = flavour.trt
    logger = make_logger(flavour)
    runtime = trt.Runtime(logger)
    plugin = _plugin_for(Path(path), sidecar, plugin_library)
    if plugin is not None:
        load_plugin_library(flavour, runtime.get_plugin_registry(), plugin)
    engine = runtime.deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        said = "; ".join(m for sev, m in logger.messages if sev in ("ERROR", "INTERNAL_ERROR"))
        raise UserError(f"{flavour.label} cannot load engine {Path(path).name}: "
                        f"{said or 'no reason given'} (built by another version? rebuild with stn-deploy build)")
    return engine, runtime
