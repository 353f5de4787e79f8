"""Ctrl-C and SIGTERM in the CLI: clean up, say so in one line, exit 130 / 143.

A ``KeyboardInterrupt`` raised at an arbitrary point can land inside a C++ callback of
torch, ONNX or TensorRT's bindings, where pybind11 turns it into ``std::terminate`` (seen:
exit by SIGABRT while torch was importing). So the CLI's handler raises nothing: work in
progress registers what must be undone (``on_abort``: temporary files, child processes,
folders it created), the handler runs those clean-ups and leaves with ``os._exit``.
Sections that must not be cut in half (renaming files that belong together) run inside
``deferred()``; a signal that arrives there is acted on when the section ends.

Library callers that install no handler keep Python's own ``KeyboardInterrupt``, which the
same code also cleans up after (``try``/``except BaseException``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

EXIT_CODES: dict[int, int] = {signal.SIGINT: 130, signal.SIGTERM: 143}
_WORDS: dict[int, str] = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}

_cleanups: dict[int, Callable[[], None]] = {}
_keys = itertools.count()
_depth = 0
_pending: int | None = None
_installed = False


@contextlib.contextmanager
def on_abort(cleanup: Callable[[], None]) -> Iterator[None]:
    """Run ``cleanup`` should the process be stopped by a signal while the body runs."""
    key = next(_keys)
    _cleanups[key] = cleanup
    try:
        yield
    finally:
        _cleanups.pop(key, None)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a stop signal back until the body has finished (it then takes effect)."""
    global _depth
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None:
            _abort(_pending)


def _abort(signum: int) -> None:
    for key in sorted(_cleanups, reverse=True):  # newest first: inner work before outer folders
        cleanup = _cleanups.pop(key, None)
        if cleanup is not None:
            with contextlib.suppress(Exception):  # one failed clean-up must not stop the others
                cleanup()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.write(f"error: {_WORDS.get(signum, 'stopped')}; no partial output was left\n")
        sys.stderr.flush()
    os._exit(EXIT_CODES.get(signum, 128 + signum))


def _handler(signum, frame) -> None:
    global _pending
    if _depth:
        _pending = signum
        return
    _abort(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the clean-up-and-exit handler for SIGINT and SIGTERM for the body (main
    thread only; elsewhere, and when already installed, this does nothing)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in EXIT_CODES}
    _installed = True
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _installed = False
