"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run never leaves a partial file at the target path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from stn_deploy.errors import UserError


def ensure_writable_dir(directory: Path) -> None:
    """Create ``directory`` if needed; raise UserError when it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise UserError(f"output folder {directory} is not writable")


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    The temporary file is removed if the body raises (including KeyboardInterrupt).
    """
    target = Path(target)
    ensure_writable_dir(target.parent if str(target.parent) else Path("."))
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600; give the output the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(target: Path | str, data: bytes) -> Path:
    """Atomically write ``data`` to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_json(target: Path | str, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON to ``target``."""
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    return Path(target)


def save_figure(fig, target: Path | str, fmt: str = "png", dpi: int = 100) -> Path:
    """Atomically save a matplotlib figure to ``target`` and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
    finally:
        plt.close(fig)
    return Path(target)


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
