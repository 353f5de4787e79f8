"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted run never leaves a partial file at the target path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from stn_deploy import interrupts
from stn_deploy.errors import UserError


def require_file(path: Path | str, what: str = "model", hint: str = "") -> Path:
    """``path`` as a ``Path`` if it is a readable file.

    Args:
        path: the path given by the user.
        what: how the message names it ("model", "checkpoint", "--inputs file", ...).
        hint: what to do about it, appended after "; ".

    Raises:
        UserError: ``<what> <path>: no such file`` / ``is a directory`` / ``is not readable``.
    """
    p = Path(path)
    tail = f"; {hint}" if hint else ""
    if not p.exists():
        raise UserError(f"{what} {p}: no such file{tail}")
    if p.is_dir():
        raise UserError(f"{what} {p}: is a directory, not a file")
    if not p.is_file():
        raise UserError(f"{what} {p}: not a regular file")
    if not os.access(p, os.R_OK):
        raise UserError(f"{what} {p}: is not readable")
    return p


def ensure_writable_dir(directory: Path) -> None:
    """Create ``directory`` if needed; raise UserError when it cannot be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {directory}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise UserError(f"output folder {directory} is not writable")


def _temp_beside(target: Path) -> Path:
    """A new empty file in the target's folder with the mode a plain ``open()`` would give."""
    ensure_writable_dir(target.parent if str(target.parent) else Path("."))
    if target.is_dir():
        raise UserError(f"output {target} is a directory; give a file path")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UserError(f"cannot write {target}: {exc.strerror}") from None
    os.close(fd)
    # mkstemp creates 0600; give the output the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    return Path(tmp_name)


@contextlib.contextmanager
def atomic_paths(*targets: Path | str) -> Iterator[tuple[Path, ...]]:
    """Yield one temporary path per target (in its folder); on success rename them all onto
    their targets, as one unit: files that belong together (an engine and its sidecar, a
    report and its plot) are all replaced or none is.

    The temporary files are removed if the body raises (including KeyboardInterrupt) or the
    CLI is stopped by a signal (``interrupts``). Should a rename fail half-way, the targets
    already replaced get their old content back.
    """
    paths = [Path(t) for t in targets]
    temps: list[Path] = []

    def remove_temps() -> None:
        for tmp in temps:
            tmp.unlink(missing_ok=True)

    with interrupts.on_abort(remove_temps):
        try:
            with interrupts.deferred():  # a temp file exists only once it is recorded for clean-up
                for target in paths:
                    temps.append(_temp_beside(target))
            yield tuple(temps)
            with interrupts.deferred():  # all renamed, or (on a failure) none
                _replace_all(temps, paths)
        except BaseException:
            remove_temps()
            raise


def _replace_all(temps: list[Path], targets: list[Path]) -> None:
    """``os.replace`` each temp onto its target; on a failure, restore what was replaced."""
    backups: list[tuple[Path, Path | None]] = []
    try:
        for tmp, target in zip(temps, targets):
            backup = None
            if target.is_file():
                backup = target.with_name(f".{target.name}.{os.getpid()}.bak")
                os.link(target, backup)
            backups.append((target, backup))
            os.replace(tmp, target)
    except OSError as exc:
        for target, backup in backups:
            if backup is not None:
                os.replace(backup, target)
            else:
                target.unlink(missing_ok=True)
        raise UserError(f"cannot write {exc.filename or targets[len(backups) - 1]}: {exc.strerror}") from None
    finally:
        for _, backup in backups:
            if backup is not None:
                backup.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: Path | str) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success
    (``atomic_paths`` for one file)."""
    with atomic_paths(target) as (tmp,):
        yield tmp


def check_outputs_distinct(outputs: Iterable[Path | str | None], inputs: Iterable[Path | str | None]) -> None:
    """Refuse an output that is the same file as one of the command's inputs (or as another
    output): writing it would destroy what the command reads.

    Compares resolved paths, and inodes where both exist (hard links, bind mounts).

    Raises:
        UserError: naming both paths.
    """
    def key(p: Path) -> tuple:
        try:
            st = p.stat()
            return ("inode", st.st_dev, st.st_ino)
        except OSError:
            return ("path", str(p.resolve()))

    seen: dict[tuple, tuple[str, Path]] = {}
    for role, group in (("input", inputs), ("output", outputs)):
        for item in group:
            if item is None:
                continue
            p = Path(item)
            keys = {key(p), ("path", str(p.resolve()))}
            for k in keys:
                if k in seen and (role == "output"):
                    other_role, other = seen[k]
                    raise UserError(f"output {p} is the same file as {other_role} {other}; "
                                    "choose another output path")
            for k in keys:
                seen.setdefault(k, (role, p))


@contextlib.contextmanager
def output_folder(directory: Path | str) -> Iterator[Path]:
    """Create ``directory`` for a job's outputs; if the job fails, remove it again when this
    call created it and nothing (but our temporary files) was left in it."""
    directory = Path(directory)
    created = not directory.exists()
    ensure_writable_dir(directory)

    def remove_if_empty() -> None:
        if created:
            with contextlib.suppress(OSError):
                for leftover in directory.glob(".*.tmp"):
                    leftover.unlink()
                directory.rmdir()  # only succeeds when empty

    with interrupts.on_abort(remove_if_empty):
        try:
            yield directory
        except BaseException:
            remove_if_empty()
            raise


@contextlib.contextmanager
def temporary_folder(prefix: str, directory: Path | str | None = None, suffix: str = "") -> Iterator[Path]:
    """A new folder (in ``directory``, default ``$TMPDIR``) removed with everything in it when the
    body ends, fails, or the CLI is stopped by a signal (which ``tempfile.TemporaryDirectory``
    alone misses: the CLI's signal handler leaves with ``os._exit``). A body that renames the
    folder into place keeps it."""
    import shutil

    path: Path | None = None

    def remove() -> None:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)

    with interrupts.on_abort(remove):
        try:
            with interrupts.deferred():  # the folder exists only once the clean-up can see it
                try:
                    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory))
                except OSError as exc:
                    raise UserError(f"cannot create a temporary folder in {directory or tempfile.gettempdir()}: "
                                    f"{exc.strerror}") from None
            yield path
        finally:
            remove()


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


def check_fits_in_memory(shape: Sequence[int], itemsize: int, what: str) -> None:
    """Refuse, before allocating, an array larger than the memory this machine has free.

    Raises:
        UserError: naming the shape and the bytes it would need.
    """
    nbytes = itemsize
    for d in shape:
        nbytes *= int(d)
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):  # not every platform reports it
        return
    if nbytes > free:
        raise UserError(f"{what} of shape {'x'.join(map(str, shape))} needs {nbytes / 2**30:,.1f} GiB; "
                        f"this machine has {free / 2**30:,.1f} GiB free: use a smaller batch")


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
