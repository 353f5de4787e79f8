"""The warp picture: what a trained spatial transformer does to its inputs.

For each spatial transformer of the model, one row of test inputs with the sampling grid
drawn over them (where each output pixel is read from) and one row of the transformed
outputs beside them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stn_deploy import io
from stn_deploy.errors import UserError

_FORMATS = ("png", "pdf", "svg", "jpg")
_GRID_LINES = 7  # grid lines drawn per direction; enough to see the warp, few enough to see the digit


@dataclass(frozen=True)
class VisualizeOptions:
    """What to draw.

    Attributes:
        checkpoint: a checkpoint written by ``stn-deploy train``.
        output: image file to write (.png, .pdf, .svg or .jpg).
        dataset: test set to draw from; default ``None`` = the training dataset.
        count: number of examples; default 8.
        seed: test-set seed; default 0.
    """

    checkpoint: Path
    output: Path
    dataset: str | None = None
    count: int = 8
    seed: int = 0


def to_pixels(grid, size: tuple[int, int], align_corners: bool):
    """Normalised grid coordinates [..., 2] -> pixel coordinates (x, y) of an input of size (H, W).

    Pixel centres are at integers, as ``imshow`` draws them.
    """
    h, w = size
    x, y = grid[..., 0], grid[..., 1]
    if align_corners:
        return (x + 1) / 2 * (w - 1), (y + 1) / 2 * (h - 1)
    return ((x + 1) * w - 1) / 2, ((y + 1) * h - 1) / 2


def visualize(options: VisualizeOptions) -> Path:
    """Draw inputs with their sampling grids beside the transformers' outputs.

    Returns:
        The written path.

    Raises:
        UserError: bad checkpoint, a model without spatial transformer, an unknown or
            unsuitable dataset, an unsupported file type or an unwritable output.
    """
    import torch

    from stn_deploy.data import make_dataset
    from stn_deploy.io import check_outputs_distinct
    from stn_deploy.jobs.train import load_checkpoint, resolve_dataset
    from stn_deploy.models import spatial_transformers

    check_outputs_distinct([options.output], [options.checkpoint])

    fmt = options.output.suffix.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise UserError(f"cannot write {options.output}: use one of .{', .'.join(_FORMATS)}")
    if options.count < 1:
        raise UserError("count must be at least 1")
    model, config = load_checkpoint(options.checkpoint)
    transformers = spatial_transformers(model)
    if not transformers:
        raise UserError(f"model {config.name!r} has no spatial transformer to draw")
    dataset = resolve_dataset(options.checkpoint, config, options.dataset)
    test = make_dataset(dataset, "test", options.seed)
    x = test.images[: options.count]
    with torch.no_grad():
        predictions = model(x).argmax(1).tolist()
        # Every zoo transformer reads the model input directly, so it can be called on x.
        results = [tuple(t.numpy() for t in st.transform(x)) for st in transformers]
    images, labels = x.numpy(), test.labels[: options.count].tolist()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    rows = 2 * len(results)
    fig, axes = plt.subplots(rows, n, figsize=(1.4 * n, 1.5 * rows), squeeze=False)
    for t, (out, grid) in enumerate(results):
        st = transformers[t]
        gx, gy = to_pixels(grid, config.in_size, st.settings.align_corners)
        # Evenly spaced grid lines, the output's border rows and columns included.
        line_rows = sorted({round(k * (grid.shape[1] - 1) / (_GRID_LINES - 1)) for k in range(_GRID_LINES)})
        line_cols = sorted({round(k * (grid.shape[2] - 1) / (_GRID_LINES - 1)) for k in range(_GRID_LINES)})
        for i in range(n):
            ax_in, ax_out = axes[2 * t, i], axes[2 * t + 1, i]
            ax_in.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
            for r in line_rows:
                ax_in.plot(gx[i, r], gy[i, r], color="tab:orange", lw=0.6)
            for c in line_cols:
                ax_in.plot(gx[i, :, c], gy[i, :, c], color="tab:orange", lw=0.6)
            ax_in.set_xlim(-0.5, config.in_size[1] - 0.5)
            ax_in.set_ylim(config.in_size[0] - 0.5, -0.5)
            ax_out.imshow(out[i, 0], cmap="gray", vmin=0, vmax=1)
            ax_in.set_title(f"label {labels[i]}", fontsize=7)
            color = "black" if predictions[i] == labels[i] else "red"
            ax_out.set_title(f"pred {predictions[i]}", fontsize=7, color=color)
            for ax in (ax_in, ax_out):
                ax.set_xticks([])
                ax.set_yticks([])
        axes[2 * t, 0].set_ylabel(f"input + grid ({st.generator.kind})", fontsize=7)
        axes[2 * t + 1, 0].set_ylabel("transformed", fontsize=7)
    fig.suptitle(f"{config.name} on {dataset} ({config.sampler.mode}, {config.sampler.padding_mode})", fontsize=9)
    fig.tight_layout()
    io.save_figure(fig, options.output, fmt=fmt, dpi=120)
    return options.output
