"""Running the CLI in-process and checking its one-line errors."""

from __future__ import annotations

from click.testing import CliRunner, Result

from stn_deploy.cli import main


def invoke(*args) -> Result:
    """``stn-deploy ARGS`` in this process; an exception the CLI does not handle propagates."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result: Result, code: int, *words: str) -> None:
    """Exit ``code`` with exactly one stderr line, ``error:`` (2) or ``failed:`` (1), holding ``words``."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:" if code == 2 else "failed:"), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
