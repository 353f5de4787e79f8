"""The ``stn-deploy`` command group: the one error boundary (exit codes, one-line errors,
stop signals), the global options, and what several command families share.

Exit codes: 0 ok, 1 a check failed (validate, doctor), 2 bad input, 130/143 stopped.
"""

from __future__ import annotations

import sys

import click

# Names and option defaults only: none of these modules imports torch, onnx or TensorRT
# at import time.
from stn_deploy import __version__, interrupts
from stn_deploy.errors import UserError, ValidationFailed
from stn_deploy.jobs import bench as _bench

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


EXIT_INTERRUPTED = 130


#: Exceptions of the libraries we drive that mean "this input is not what it claims to be":
#: (module, class name) anywhere in the exception's MRO. Matched by name so that the CLI
#: imports none of them.
_BAD_INPUT_TYPES = {
    ("onnx.onnx_cpp2py_export.checker", "ValidationError"),
    ("google.protobuf.message", "Error"),
    ("google.protobuf.text_format", "Error"),
    ("google.protobuf.json_format", "Error"),
    ("polygraphy.exception.exception", "PolygraphyException"),
}


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(exc).__name__


def _bad_input_message(exc: BaseException) -> str | None:
    """The one line for an expected failure that is not one of ours, else None (a bug: traceback)."""
    if isinstance(exc, MemoryError):
        return "out of memory: the input or batch is too large for this machine"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or _first_line(exc)}"
    if any((t.__module__, t.__name__) in _BAD_INPUT_TYPES for t in type(exc).__mro__):
        return f"{type(exc).__name__}: {_first_line(exc)}"
    return None


class _Group(click.Group):
    """The one error boundary: our errors and the expected failures of the libraries become
    one line and an exit code; anything else keeps its traceback (that is a bug to find)."""

    def invoke(self, ctx: click.Context):
        try:
            # Ctrl-C and SIGTERM: registered clean-ups, one line, exit 130 / 143 (interrupts).
            with interrupts.handled():
                return super().invoke(ctx)
        except click.UsageError as exc:
            # Click would print a usage screen; one line names the problem instead.
            where = f"{exc.ctx.command_path}: " if exc.ctx is not None else ""
            click.echo(f"error: {where}{exc.format_message()}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except ValidationFailed as exc:
            click.echo(f"failed: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:  # raised by other means than our handler (which exits itself)
            click.echo("error: interrupted; no partial output was left", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            message = _bad_input_message(exc)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            sys.exit(EXIT_BAD_INPUT)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stn-deploy")
@click.option("-v", "--verbose", count=True,
              help="Also show TensorRT's, ONNX Runtime's and Polygraphy's messages (-vv: their verbose ones).")
@click.option("-q", "--quiet", is_flag=True, help="Only results and errors.")
def main(verbose: int, quiet: bool) -> None:
    """Spatial Transformer Networks from PyTorch training to TensorRT engines."""
    from stn_deploy import verbosity

    if verbose and quiet:
        raise UserError("--verbose and --quiet contradict each other; give one")
    verbosity.set_level(verbosity.QUIET if quiet else min(verbose, verbosity.VERY_VERBOSE))
    verbosity.configure_polygraphy()


#: Seeds every library we seed accepts (numpy takes no negative seed, torch none past 2^64).
SEED = click.IntRange(0, 2**32 - 1)


class NameChoice(click.Choice):
    """A case-insensitive choice (``--precision FP16``, ``--dataset rts``) whose bad value is a
    ``UserError`` (one line, exit 2) rather than a usage screen."""

    def __init__(self, choices, case_sensitive: bool = False) -> None:
        super().__init__(choices, case_sensitive=case_sensitive)

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            flag = f" ({param.opts[-1]})" if getattr(param, "opts", None) else ""
            raise UserError(f"unknown {param.name} {value!r}{flag}; choose from {', '.join(self.choices)}") from None


def step_lines(prefix: str, err: bool = False):
    """A progress callback printing ``<prefix>: <step> (<elapsed> s)``, one line per step, so
    that logs show where a long command is and how long it has run; nothing with --quiet."""
    import time

    from stn_deploy import verbosity

    started = time.perf_counter()

    def say(message: str) -> None:
        if verbosity.level() > verbosity.QUIET:
            click.echo(f"{prefix}: {message} ({time.perf_counter() - started:.1f} s)", err=err)

    return say


def timing_options(backends: tuple[str, ...], batches: tuple[int, ...], warmup: int, iters: int):
    """The options that say what ``bench`` times, shared by ``bench`` and ``demo`` (which
    benchmarks too) with each command's own defaults."""
    decorators = [
        click.option("--backend", "--backends", "backends", default=",".join(backends), show_default=True,
                     help=f"Comma-separated backends from: {', '.join(_bench.BACKENDS)} (as run --backend)."),
        click.option("--batch", "batches", default=",".join(map(str, batches)), show_default=True,
                     help="Comma-separated batch sizes."),
        click.option("--warmup", type=click.IntRange(min=0), default=warmup, show_default=True,
                     help="Untimed iterations first."),
        click.option("--iters", type=click.IntRange(min=1), default=iters, show_default=True,
                     help="Timed iterations per backend and batch."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for torch, ONNX Runtime and the plugin alike  [default: each library's own]"),
    ]

    def apply(fn):
        for decorate in reversed(decorators):
            fn = decorate(fn)
        return fn

    return apply
