"""Model names and descriptions (no torch import: the CLI builds its choices from these)."""

from __future__ import annotations

#: Transforms available as single-transformer models (``st-cnn-<t>``, ``st-fcn-<t>``).
TRANSFORMS: tuple[str, ...] = ("affine", "projective", "tps", "attention")

#: The one list of models: name -> one-line description, in listing order.
MODEL_DESCRIPTIONS: dict[str, str] = {
    "cnn": "baseline CNN (2 conv + 2 FC)",
    "fcn": "baseline fully connected net (3 FC)",
    **{f"st-cnn-{t}": f"{t} spatial transformer (conv localisation) + CNN" for t in TRANSFORMS},
    **{f"st-fcn-{t}": f"{t} spatial transformer (FC localisation) + FCN" for t in TRANSFORMS},
    "st-cnn-multi": "two affine transformers in parallel, one CNN branch each",
    "tutorial-stn": "the PyTorch tutorial STN (affine)",
}

#: All model names, in listing order.
MODEL_NAMES: tuple[str, ...] = tuple(MODEL_DESCRIPTIONS)
