"""The ``stn-deploy`` command line. Each command maps its options onto one library function.

One module per command family; importing them registers their commands on ``main``
(``group.py``: the error boundary and the shared options). Heavy modules (torch, onnx,
tensorrt) are imported inside the commands, so ``stn-deploy --help`` works anywhere.
"""

from __future__ import annotations

from stn_deploy.cli import checks, engines, graphs, serving, training  # noqa: F401  (they register the commands)
from stn_deploy.cli.group import main

__all__ = ["main"]
