"""pytest plugin of the GPU check (``-p benchmarks.pytest_progress``): every test's start and
outcome as one JSON line, appended and flushed as it happens, so that a pytest killed by a
watchdog, by a step's limit or by the GPU machine's runner leaves every result it had.

Environment (set by ``benchmarks/gpu_check.py``):
    STN_GPU_CHECK_PROGRESS   the JSON-lines file to append to (the plugin does nothing without it)
    STN_GPU_CHECK_SKIP       a file of node ids, one a line, to deselect: the tests an earlier
                             process already ran, or hung or crashed in

Lines: ``{"event": "collected", "tests": [...]}``, ``{"event": "collect_error", "module", "message"}``,
``{"event": "start", "test": id}``,
``{"event": "outcome", "test": id, "outcome": passed|failed|error|skipped, "message", "seconds"}``
and, when a failing test leaves CUDA unusable in this process (a sticky error such as an
illegal address), ``{"event": "context_lost", "test": id, "error"}``; pytest then stops, and the
check runs the rest in a fresh process. A probe that gets no answer in 10 s (a kernel still
running) ends pytest at once (exit 3): its teardown would wait on that kernel too.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

_state: dict[str, Any] = {"session": None}
#: Seconds the probe of CUDA after a failure may take: longer, and a kernel is still running (hung).
PROBE_LIMIT_S = 10.0
#: The exit code of a pytest whose CUDA did not answer the probe (it cannot go on, nor end cleanly).
EXIT_CUDA_HUNG = 3


def _path() -> Path | None:
    value = os.environ.get("STN_GPU_CHECK_PROGRESS")
    return Path(value) if value else None


def _write(record: dict[str, Any]) -> None:
    path = _path()
    if path is None:
        return
    record["t"] = round(time.time(), 3)
    with path.open("a") as sink:  # opened per line: what is written survives any kill of this process
        sink.write(json.dumps(record) + "\n")


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][:300] if lines else ""


def cuda_context_error() -> str | None:
    """Why CUDA is unusable in this process (a sticky error poisons the context), or None.

    Only judged when torch has already initialised CUDA: a test that never touched the GPU cannot
    have broken it.
    """
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    try:
        torch.cuda.synchronize()
        if float(torch.ones(1, device="cuda").add_(1).item()) != 2.0:
            return "a trivial kernel gave a wrong result after the failure"
    except Exception as exc:  # the error itself is the answer
        return f"{type(exc).__name__}: {_first_line(str(exc))}"
    return None


def _probe_with_limit() -> tuple[str | None, bool]:
    """``cuda_context_error()`` in a thread, and whether it answered: a probe stuck behind a hung
    kernel must not hang pytest."""
    answer: list[str | None] = []
    thread = threading.Thread(target=lambda: answer.append(cuda_context_error()), daemon=True)
    thread.start()
    thread.join(PROBE_LIMIT_S)
    if not answer:
        return f"CUDA did not answer within {PROBE_LIMIT_S:g} s of the failure (a kernel still running)", False
    return answer[0], True


def pytest_sessionstart(session: pytest.Session) -> None:
    _state["session"] = session


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_file = os.environ.get("STN_GPU_CHECK_SKIP")
    if skip_file and Path(skip_file).is_file():
        done = set(Path(skip_file).read_text().split())
        kept = [item for item in items if item.nodeid not in done]
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in done])
        items[:] = kept


def pytest_collection_finish(session: pytest.Session) -> None:
    _write({"event": "collected", "tests": [item.nodeid for item in session.items]})


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:  # a module that does not import: its tests are never collected, so say so
        crash = getattr(report.longrepr, "reprcrash", None)
        _write({"event": "collect_error", "module": report.nodeid,
                "message": _first_line(crash.message if crash is not None else str(report.longrepr))})


def pytest_runtest_logstart(nodeid: str, location: tuple) -> None:
    _write({"event": "start", "test": nodeid})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # One outcome per test: a failed or skipped setup, the call, or a failed teardown (after a call's outcome).
    if report.when == "call" or (report.when == "setup" and not report.passed) or (report.when == "teardown" and report.failed):
        if report.skipped:
            outcome = "skipped"
            message = str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        else:
            outcome = "passed" if report.passed else "failed" if report.when == "call" else "error"
            crash = getattr(report.longrepr, "reprcrash", None)
            message = "" if report.passed else _first_line(crash.message if crash is not None else str(report.longrepr))
        _write({"event": "outcome", "test": report.nodeid, "outcome": outcome, "when": report.when,
                "message": message[:300], "seconds": round(report.duration, 3)})
        if report.failed:
            error, answered = _probe_with_limit()
            if error is not None:
                _write({"event": "context_lost", "test": report.nodeid, "error": error})
                if not answered:
                    os._exit(EXIT_CUDA_HUNG)  # teardown would wait on the hung kernel too; the check goes on afresh
                session = _state["session"]
                if session is not None:
                    session.shouldstop = f"CUDA context lost after {report.nodeid}: {error}"
