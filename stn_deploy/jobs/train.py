"""Training, evaluation and checkpoints.

Checkpoint (``model.pt``)::

    {"format": "stn-deploy-checkpoint", "version": 1, "config": ModelConfig.to_dict(),
     "state_dict": {...}, "train": {"dataset": ..., "seed": ..., "epochs": ..., ...}}

It holds only tensors and plain Python values, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from stn_deploy import io
from stn_deploy.errors import UserError
from stn_deploy.schema import SamplerSettings

CHECKPOINT_FORMAT = "stn-deploy-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "model.pt"
METRICS_NAME = "metrics.json"


@dataclass(frozen=True)
class TrainOptions:
    """What to train and how.

    Attributes:
        model: a name from ``models.MODEL_NAMES``.
        dataset: a name from ``data.DATASETS``; the model's input size follows it.
        output_dir: where ``model.pt`` and ``metrics.json`` go; ``None`` writes nothing.
        epochs: passes over the training split (1258 digits x ``data.TRAIN_REPEATS``), each
            epoch with fresh distortions; default 8.
        seed: seeds initialisation, distortions and shuffling; default 0.
        batch_size: default 32.
        lr: peak Adam learning rate, reached after one epoch of linear warm-up, then
            cosine-annealed to 0; default 3e-3.
        loc_lr_scale: learning-rate factor for the localisation nets; default 1.0 (on RTS,
            0.1 learnt markedly slower in our runs).
        sampler: the transformers' sampler settings.
        test_seed: seed of the fixed test set used for the final test error; default 0.
        progress: draw a progress bar; default True.
    """

    model: str
    dataset: str
    output_dir: Path | None = None
    epochs: int = 8
    seed: int = 0
    batch_size: int = 32
    lr: float = 3e-3
    loc_lr_scale: float = 1.0
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    test_seed: int = 0
    progress: bool = True


def save_checkpoint(path: Path | str, model, config, extra: dict[str, Any] | None = None) -> Path:
    """Atomically write a checkpoint of ``model`` (built from ``config``) to ``path``.

    Args:
        path: target file.
        model: the ``nn.Module``.
        config: its ``models.ModelConfig``.
        extra: plain values stored under "train" (dataset, seed, metrics, ...).
    """
    import torch

    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "train": dict(extra or {}),
    }
    # Serialised in memory, then written by Python: torch.save to a path reports a full disk as
    # a RuntimeError from its zip writer ("unexpected pos"); a plain write raises OSError(ENOSPC),
    # which the CLI turns into one line, and atomic_path keeps the old checkpoint.
    buffer = BytesIO()
    torch.save(payload, buffer)
    with io.atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load and check a checkpoint's dict (see module docstring).

    Raises:
        UserError: the file is missing, unreadable, or not an stn-deploy checkpoint.
    """
    import torch

    path = io.require_file(path, "checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here (pickle, zip, OS errors)
        if isinstance(exc, OSError) and exc.strerror:
            raise UserError(f"cannot read checkpoint {path}: {exc.strerror}") from None
        text = str(exc)
        with open(path, "rb") as f:
            head = f.read(4)
        if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
            detail = "not a file torch.save wrote (no zip or pickle header)"
        elif "Unsupported global" in text:
            # A pickle of arbitrary objects: never an stn-deploy checkpoint, and unsafe to load,
            # so torch's advice to load it unsafely is not passed on.
            detail = "it holds Python objects, which a safe (weights-only) load refuses"
        else:
            detail = f"not a PyTorch checkpoint archive ({type(exc).__name__})"
        raise UserError(f"{path} is not an stn-deploy checkpoint: {detail}") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an stn-deploy checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if obj.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"{path}: unsupported checkpoint version {obj.get('version')!r} (expected {CHECKPOINT_VERSION})")
    if not isinstance(obj.get("state_dict"), dict) or not isinstance(obj.get("config"), dict):
        raise UserError(f"{path}: checkpoint lacks its config or state_dict")
    obj.setdefault("train", {})
    return obj


def load_checkpoint(path: Path | str):
    """Rebuild the model stored at ``path``.

    Returns:
        (model in eval mode on the CPU, its ``models.ModelConfig``).

    Raises:
        UserError: missing, unreadable or foreign file, or weights that do not fit the config.
    """
    from stn_deploy.models import ModelConfig, build_model

    obj = read_checkpoint(path)
    config = ModelConfig.from_dict(obj["config"])
    model = build_model(config)
    mismatch = _state_dict_mismatch(model.state_dict(), obj["state_dict"])
    if mismatch:
        raise UserError(f"{path}: its weights do not match model {config.name!r}: {mismatch}")
    model.load_state_dict(obj["state_dict"])
    return model.eval(), config


def _state_dict_mismatch(expected: dict, given: dict, shown: int = 3) -> str:
    """Which keys of a state dict differ from the model's (missing, unexpected, other shape); "" if none."""

    def some(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:shown]) + (f" (+{len(keys) - shown} more)" if len(keys) > shown else "")

    parts = []
    missing, unexpected = set(expected) - set(given), set(given) - set(expected)
    if missing:
        parts.append(f"missing {some(missing)}")
    if unexpected:
        parts.append(f"unexpected {some(unexpected)}")
    shapes = [f"{k} {list(given[k].shape)} vs {list(expected[k].shape)}" for k in sorted(set(given) & set(expected))
              if hasattr(given[k], "shape") and tuple(given[k].shape) != tuple(expected[k].shape)]
    if shapes:
        parts.append("other shape " + ", ".join(shapes[:shown]) + (f" (+{len(shapes) - shown} more)" if len(shapes) > shown else ""))
    return "; ".join(parts)


def resolve_dataset(checkpoint: Path | str, config, dataset: str | None = None) -> str:
    """The dataset to evaluate or draw a checkpoint on.

    Args:
        checkpoint: the checkpoint file (its "train" record names the training dataset).
        config: the checkpoint's ``models.ModelConfig``.
        dataset: explicit choice; default ``None`` = the dataset the model was trained on.

    Raises:
        UserError: unknown dataset, none recorded, or images of another size than the model's.
    """
    from stn_deploy.data import DATASETS, IMAGE_SIZES

    if dataset is None:
        dataset = read_checkpoint(checkpoint)["train"].get("dataset")
        if dataset is None:
            raise UserError(f"{checkpoint} records no training dataset; pass --dataset")
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if tuple(config.in_size) != IMAGE_SIZES[dataset]:
        h, w = IMAGE_SIZES[dataset]
        raise UserError(
            f"model {config.name!r} takes {config.in_size[0]}x{config.in_size[1]} images but dataset "
            f"{dataset} has {h}x{w}"
        )
    return dataset


def evaluate(model, dataset_name: str, seed: int = 0, batch_size: int = 512) -> float:
    """Test error of ``model`` on the fixed test set of ``dataset_name``.

    Args:
        model: a classifier taking [N, 1, H, W] images of the dataset's size.
        dataset_name: one of ``data.DATASETS``.
        seed: test-set seed; default 0 (the set every reported number uses).
        batch_size: evaluation batch; default 512.

    Returns:
        Error in percent (0-100).
    """
    import torch

    from stn_deploy.data import make_dataset

    test = make_dataset(dataset_name, "test", seed)
    was_training = model.training
    model.eval()
    wrong = 0
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            logits = model(test.images[start : start + batch_size])
            wrong += int((logits.argmax(1) != test.labels[start : start + batch_size]).sum())
    model.train(was_training)
    return 100.0 * wrong / len(test)


def train(options: TrainOptions, on_epoch: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a model on a distorted-digit set; write checkpoint and metrics if asked.

    Args:
        options: model, data, schedule and output folder (``TrainOptions``).
        on_epoch: called with one line per finished epoch (loss, train error); the CLI
            prints it when stdout is not a terminal, so that logs show progress.

    Adam with a cosine learning-rate schedule; each epoch draws fresh distortions of the
    training digits. Writes ``output_dir/model.pt`` and ``output_dir/metrics.json``
    atomically (the output folder is checked before training starts).

    Returns:
        Metrics: test_error (%), train_loss per epoch, train_error (% on the last epoch),
        seconds, parameters, and the options.

    Raises:
        UserError: unknown model or dataset, bad numbers, unwritable output folder.
    """
    from stn_deploy.data import DATASETS, IMAGE_SIZES
    from stn_deploy.models import ModelConfig

    if options.dataset not in DATASETS:
        raise UserError(f"unknown dataset {options.dataset!r}; choose from {', '.join(DATASETS)}")
    if options.epochs < 1 or options.batch_size < 1 or not options.lr > 0:
        raise UserError("epochs and batch size must be at least 1 and the learning rate positive")
    config = ModelConfig(options.model, in_size=IMAGE_SIZES[options.dataset], sampler=options.sampler)
    with contextlib.ExitStack() as stack:
        if options.output_dir is not None:  # made now, so an unwritable folder fails before training
            stack.enter_context(io.output_folder(options.output_dir))
        return _train(options, config, on_epoch)


def _train(options: TrainOptions, config, on_epoch: Callable[[str], None] | None) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from stn_deploy.data import make_dataset
    from stn_deploy.models import build_model, count_parameters, spatial_transformers

    torch.manual_seed(options.seed)
    model = build_model(config)
    loc_params = {id(p) for st in spatial_transformers(model) for p in st.localisation.parameters()}
    groups = [
        {"params": [p for p in model.parameters() if id(p) not in loc_params], "lr": options.lr},
        {"params": [p for p in model.parameters() if id(p) in loc_params], "lr": options.lr * options.loc_lr_scale},
    ]
    optimiser = torch.optim.Adam([g for g in groups if g["params"]])
    n_train = len(make_dataset(options.dataset, "train", 0))
    steps_per_epoch = math.ceil(n_train / options.batch_size)
    total_steps = steps_per_epoch * options.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: _lr_factor(step, steps_per_epoch, total_steps))
    shuffle = torch.Generator().manual_seed(options.seed)

    losses: list[float] = []
    train_error = float("nan")
    start = time.perf_counter()
    with _progress(options.progress) as bar:
        task = bar.add_task(f"{options.model} on {options.dataset}", total=total_steps) if bar else None
        model.train()
        for epoch in range(options.epochs):
            # Fresh distortions every epoch; the seed stream never meets the test set's.
            data = make_dataset(options.dataset, "train", options.seed * 100_003 + epoch + 1)
            order = torch.randperm(len(data), generator=shuffle)
            total_loss, wrong = 0.0, 0
            for i in range(0, len(data), options.batch_size):
                idx = order[i : i + options.batch_size]
                logits = model(data.images[idx])
                loss = F.cross_entropy(logits, data.labels[idx])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                scheduler.step()
                batch_loss = float(loss.detach())
                total_loss += batch_loss * len(idx)
                wrong += int((logits.argmax(1) != data.labels[idx]).sum())
                if bar is not None:
                    label = f"{options.model} on {options.dataset} epoch {epoch + 1}/{options.epochs}"
                    bar.update(task, advance=1, description=f"{label} loss {batch_loss:.3f}")
            losses.append(total_loss / len(data))
            train_error = 100.0 * wrong / len(data)
            if on_epoch is not None:
                on_epoch(f"epoch {epoch + 1}/{options.epochs}: loss {losses[-1]:.4f}, "
                         f"train error {train_error:.1f}%")
            if not math.isfinite(losses[-1]):
                raise UserError(f"training diverged at epoch {epoch + 1} (loss {losses[-1]}); try a lower --lr")
    seconds = time.perf_counter() - start
    test_error = evaluate(model, options.dataset, options.test_seed)

    metrics: dict[str, Any] = {
        "model": options.model,
        "dataset": options.dataset,
        "epochs": options.epochs,
        "seed": options.seed,
        "test_seed": options.test_seed,
        "test_error": test_error,
        "train_error": train_error,
        "train_loss": losses,
        "seconds": round(seconds, 3),
        "parameters": count_parameters(model),
        "batch_size": options.batch_size,
        "lr": options.lr,
        "loc_lr_scale": options.loc_lr_scale,
        "torch": str(torch.__version__),  # TorchVersion would need an unsafe (non-weights-only) load
        "config": config.to_dict(),
    }
    if options.output_dir is not None:
        out = Path(options.output_dir)
        train_info = {k: v for k, v in metrics.items() if k != "config"}
        save_checkpoint(out / CHECKPOINT_NAME, model, config, train_info)
        io.write_json(out / METRICS_NAME, metrics)
    return metrics


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up over the first epoch, then cosine annealing to 0.

    One LambdaLR rather than torch's schedulers: ``SequentialLR(LinearLR, CosineAnnealingLR)``
    starts the cosine after the warm-up (another schedule than the one Table 1 was trained
    with), and ``ChainedScheduler(LinearLR, CosineAnnealingLR)`` gives this product only to
    rounding (1e-15 apart at most steps), which is enough to change a seeded run.

    Without the warm-up, Adam's first full-size steps can throw an affine localisation net to a
    transform that samples only outside the image: the sampler then returns zeros, no gradient
    reaches the localisation net and the run never learns (seen on RTS, 1 seed in 3).
    """
    warmup = min(1.0, (step + 1) / max(warmup_steps, 1))
    return warmup * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _progress(enabled: bool):
    """A rich progress bar (on stderr), or a stand-in yielding ``None`` when disabled."""
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )
