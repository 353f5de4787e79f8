"""Engine files: the sidecar ``build`` writes beside each one, the checks before loading,
and deserialisation (GPU only). ``inspector`` and ``runner`` both open engines through here.
"""

from __future__ import annotations

import json
from pathlib import Path

from stn_deploy.errors import UserError
from stn_deploy.io import require_file
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

#: Engine files are never this small (the smallest RTX engine of one MatMul is tens of KB):
#: a shorter file with an engine's magic bytes is a truncated copy.
MIN_ENGINE_BYTES = 256
SIDECAR_FORMAT = "stn-deploy-engine"
#: key -> the type readers rely on (``None`` allowed where the build may record none).
_SIDECAR_TYPES: dict[str, tuple[type, ...]] = {
    "engine": (dict,), "backend": (dict,), "onnx": (dict,), "plugin_library": (dict, type(None)),
    "precision": (str,), "profiles": (list,), "network": (dict,), "build_seconds": (int, float),
}


def read_sidecar(engine: Path) -> dict | None:
    """The sidecar dict of ``engine``, or None when there is none.

    Raises:
        UserError: the sidecar exists but is not valid JSON, or not a sidecar ``build`` wrote
            (another format, or a key of the wrong type).
    """
    path = sidecar_path(engine)
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"unreadable engine sidecar {path}: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != SIDECAR_FORMAT:
        raise UserError(f"{path} is not an engine sidecar written by stn-deploy build (no format {SIDECAR_FORMAT!r})")
    for key, types in _SIDECAR_TYPES.items():
        if key in obj and not isinstance(obj[key], types):
            raise UserError(f"engine sidecar {path}: {key!r} is a {type(obj[key]).__name__}, "
                            f"expected {' or '.join(t.__name__ for t in types)}")
    profiles = obj.get("profiles", [])
    if not all(isinstance(p, list) and all(isinstance(r, dict) for r in p) for p in profiles):
        raise UserError(f"engine sidecar {path}: 'profiles' must be a list of lists of ranges")
    return obj


def check_engine_header(path: Path) -> tuple[str, bytes]:
    """(flavour name, first 64 bytes) of an engine file.

    Raises:
        UserError: missing, too short to be an engine, or no TensorRT/TensorRT-RTX header.
    """
    path = require_file(path, "engine")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(64)
    kind = engine_flavour_from_header(head)
    if kind is None:
        raise UserError(f"not a TensorRT engine: {path} (no TensorRT/TensorRT-RTX header)")
    if size < MIN_ENGINE_BYTES:
        raise UserError(f"not a TensorRT engine: {path} is {size} bytes, a truncated copy at most")
    return kind, head


def check_engine_file(path: Path, flavour_choice: str = "auto") -> tuple[str, Flavour]:
    """Check that ``path`` is an engine this installation can load; return (kind, flavour).

    Raises:
        UserError: missing file, not an engine, or built by another TensorRT (version).
    """
    path = Path(path)
    kind, head = check_engine_header(path)
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
        return require_file(plugin_library, "plugin library")
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
