"""The ``stn-deploy`` command line. Each command maps its options onto one library function.

Exit codes: 0 ok, 1 a check failed (validate, doctor), 2 bad input.
Heavy modules (torch, onnx, tensorrt) are imported inside the commands so that
``stn-deploy --help`` works anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from stn_deploy import __version__
from stn_deploy.errors import UserError, ValidationFailed

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Group(click.Group):
    """Turns our errors into one line and an exit code instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_BAD_INPUT)
        except ValidationFailed as exc:
            click.echo(f"failed: {exc}", err=True)
            sys.exit(EXIT_FAILED)
        except KeyboardInterrupt:
            click.echo("error: interrupted; no partial output was left", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stn-deploy")
def main() -> None:
    """Spatial Transformer Networks from PyTorch training to TensorRT engines."""


# Each section below belongs to one module; add commands inside its section only.

# === section: models, train, evaluate, visualize (stn_deploy/models, train.py, viz.py) ===

# === section: export, rewrite, doctor, run (export.py, graph.py, run.py) ===

# === section: plugins (kernels.py) ===

# === section: build, inspect, validate (trt/, validate.py) ===

# === section: bench, demo (bench.py, demo.py) ===


if __name__ == "__main__":
    main()
