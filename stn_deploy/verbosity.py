"""One verbosity level for everything stn-deploy drives: TensorRT, ONNX Runtime, Polygraphy.

``stn-deploy --quiet`` / (default) / ``--verbose`` / ``-vv`` set the level once; each library
gets its own severity from it. The level lives in an environment variable so that the build
worker (a child process) follows it too. Standard library only: the CLI imports this before
any heavy module.

| level | ours | TensorRT logger | ONNX Runtime | Polygraphy |
|---|---|---|---|---|
| -1 quiet | results only | ERROR | ERROR | CRITICAL |
| 0 default | progress and results | WARNING (kept for error messages, not printed) | ERROR | ERROR |
| 1 verbose | + library messages | INFO (printed) | INFO | INFO |
| 2 very verbose | | VERBOSE | VERBOSE | VERBOSE |

Polygraphy's ``[I]``/``[W]`` lines (loading, "colored is not installed", comparator chatter)
are not stn-deploy's output, hence ERROR at the default level.
"""

from __future__ import annotations

import os

QUIET, DEFAULT, VERBOSE, VERY_VERBOSE = -1, 0, 1, 2
ENV_VAR = "STN_DEPLOY_VERBOSITY"

_TENSORRT = {QUIET: "ERROR", DEFAULT: "WARNING", VERBOSE: "INFO", VERY_VERBOSE: "VERBOSE"}
#: onnxruntime severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_ORT = {QUIET: 3, DEFAULT: 3, VERBOSE: 1, VERY_VERBOSE: 0}
#: Polygraphy's G_LOGGER severities (VERBOSE 10, INFO 20, WARNING 30, ERROR 40, CRITICAL 50).
_POLYGRAPHY = {QUIET: 50, DEFAULT: 40, VERBOSE: 20, VERY_VERBOSE: 10}


def level() -> int:
    """The current level (``DEFAULT`` when unset or malformed), clamped to QUIET..VERY_VERBOSE."""
    try:
        value = int(os.environ.get(ENV_VAR, DEFAULT))
    except ValueError:
        return DEFAULT
    return max(QUIET, min(VERY_VERBOSE, value))


def set_level(value: int) -> None:
    """Set the level for this process and its children; applies it to Polygraphy now if loaded
    (and to ONNX Runtime's default logger if it is imported)."""
    os.environ[ENV_VAR] = str(max(QUIET, min(VERY_VERBOSE, int(value))))
    import sys

    if "polygraphy" in sys.modules:
        configure_polygraphy()
    if "onnxruntime" in sys.modules:
        sys.modules["onnxruntime"].set_default_logger_severity(ort_severity())


def tensorrt_severity() -> str:
    """Name of the worst-first TensorRT ``ILogger.Severity`` threshold for our loggers."""
    return _TENSORRT[level()]


def ort_severity() -> int:
    """``SessionOptions.log_severity_level`` for ONNX Runtime sessions."""
    return _ORT[level()]


def polygraphy_severity() -> int:
    """Polygraphy ``G_LOGGER`` severity for the current level."""
    return _POLYGRAPHY[level()]


def configure_polygraphy() -> None:
    """Set Polygraphy's global logger to the current level (imports only its logger)."""
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = polygraphy_severity()
