"""Train a classifier on a probe set: seeded, deterministic, best-by-validation checkpoint.

The recipe of the original study (Adam, class-weighted cross-entropy, flips), plus what takes
the 58k-parameter DenseNet to the accuracy and time targets of ``densevis bench train`` (README,
Benchmarks). Each step (augmentation, learning-rate schedule, loss weights, the CPU-fast stem) is
:class:`densevis.optimization.TrainingSteps`; this module runs the epochs:

- BatchNorm statistics re-estimated on 1,024 training images before each validation, so that
  eval-mode BatchNorm matches the current weights (running averages lag behind them);
- the epoch of lowest validation loss kept (or the last one), early stopping, a time budget;
- the checkpoint written with its history, config and the hashes of its data.

Batches stream from the HDF5 file (:class:`densevis.batches.BatchStream`).

Two runs with one seed, one device and one thread count give identical weights.

Examples
--------
One epoch on 32 tiny images (a real run trains on thousands, for many epochs):

>>> import tempfile
>>> from pathlib import Path
>>> from probes import write_probe_set
>>> folder = Path(tempfile.mkdtemp())
>>> for name, n in (("train", 32), ("val", 16)):
...     _ = write_probe_set(folder / f"{name}.h5", "base", n=n, seed=n, size=32, workers=1)
>>> result = train(folder / "train.h5", folder / "val.h5", folder / "model.pt",
...                TrainConfig(epochs=1, batch_size=16), progress=False)
>>> result.path.name, result.best["epoch"], result.stopped
('model.pt', 1, 'completed')
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from densevis.errors import DensevisError
from densevis.labels import training_labels
from densevis.model import ModelChoice, predict, preprocess, resolve_device, save_checkpoint
from densevis.optimization import (DIVERGED_LOSS, TrainingSteps, deterministic_training,
                                   diverged, fast_stem)
from densevis.recipe import TrainConfig
from probes import ProbeSet, file_sha256
from probes.atomic import check_output_path

__all__ = ["TrainResult", "train", "train_model"]


@dataclass
class TrainResult:
    """What :func:`train_model` / :func:`train` return."""

    model: nn.Module  # the best model (by validation), eval mode, on the training device
    history: list[dict]  # one dict per epoch: epoch, step, lr, train_loss, train_accuracy, val_*
    best: dict  # the history entry of the kept model
    stopped: str  # "completed", "early stopping" or "time budget"
    seconds: float
    path: Path | None = None
    choice: ModelChoice | None = None  # the model's name resolved


def open_probe_sets(data, val) -> tuple[ProbeSet, ProbeSet]:
    """Open and cross-check the training and validation files (bad input -> one-line error)."""
    train_set, val_set = ProbeSet(data), ProbeSet(val)
    if train_set.size != val_set.size:
        raise DensevisError(f"training set {train_set.path} has {train_set.size}-px images but "
                            f"validation set {val_set.path} has {val_set.size}-px ones; generate "
                            f"both at one size")
    counts = np.bincount(train_set.labels[:], minlength=2)
    if (counts == 0).any():
        raise DensevisError(f"training set {train_set.path} has only label "
                            f"{int(np.argmax(counts))} images; train on a set with both labels "
                            f"(e.g. base)")
    return train_set, val_set


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, images: np.ndarray, device,
                          channels_last: bool, batch_size: int = 128) -> None:
    """Set BatchNorm running statistics to their exact averages over ``images`` for the current
    weights (as SWA does): the running averages kept during training mix in statistics of
    earlier weights, and an averaged (EMA) model never had statistics of its own."""
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        return
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average over the batches below
    memory = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    for first in range(0, len(images), batch_size):
        model(preprocess(images[first:first + batch_size]).to(device, memory_format=memory))
    for layer, momentum in zip(layers, saved):
        layer.momentum = momentum
    model.eval()


def _validate(model: nn.Module, val_set: ProbeSet, config: TrainConfig, device) -> dict:
    logits = torch.from_numpy(predict(model, val_set, 256, device,
                                      channels_last=config.channels_last))
    labels = torch.from_numpy(training_labels(val_set, config))
    return {"val_loss": float(nn.functional.cross_entropy(logits, labels)),
            "val_accuracy": float((logits.argmax(1) == labels).float().mean())}


def _scored(config: TrainConfig, epoch: int, cut: bool) -> bool:
    """Whether epoch ``epoch`` (0-based) is validated: always, except the epochs before the last
    of a run that keeps its last epoch and cannot stop early."""
    return (config.keep != "last" or config.patience < config.epochs or cut
            or epoch + 1 == config.epochs)


def train_model(train_set: ProbeSet, val_set: ProbeSet, config: TrainConfig = TrainConfig(),
                progress: bool = True, folder=None, label: str = "") -> TrainResult:
    """Train ``config.arch`` on ``train_set``; keep the epoch that scores best on ``val_set``
    (or, with ``config.keep == "last"``, the final one). A factory model's module is looked
    up in ``folder`` first (a spec's folder).

    The score is validation loss (cross-entropy, unweighted): a proper score, and smoother
    than accuracy, whose 0.1% steps on 1,000 images are mostly noise. Training stops after
    ``config.epochs``, after ``config.patience`` epochs without a better score, or when
    ``config.max_minutes`` have passed (mid-epoch; that partial epoch is validated too).

    ``progress`` shows a bar per epoch and a line after it; with a ``label`` (models trained
    side by side write to one terminal) only the lines, each starting with the label.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from probes import write_probe_set
    >>> path = write_probe_set(Path(tempfile.mkdtemp()) / "base.h5", "base", n=16, size=32,
    ...                        workers=1)
    >>> with ProbeSet(path) as probes:  # one set for both here; keep them apart in earnest
    ...     result = train_model(probes, probes, TrainConfig(epochs=1), progress=False)
    >>> len(result.history), result.stopped
    (1, 'completed')
    """
    config.validate()
    device = resolve_device(config.device)
    with deterministic_training(config.threads):
        start = time.perf_counter()
        deadline = start + 60 * config.max_minutes if config.max_minutes else math.inf
        steps = TrainingSteps(train_set, config, device, folder)
        calibration = train_set.images[:config.recalibrate]  # fixed images: deterministic
        history, best, best_state, stale, stopped = [], None, None, 0, "completed"
        for epoch in range(config.epochs):
            with tqdm(total=len(steps.stream), desc=f"epoch {epoch + 1}/{config.epochs}",
                      unit="batch", leave=False,
                      disable=None if progress and not label else True) as bar:
                loss, accuracy, cut = steps.epoch(epoch, bar, deadline)
            kept = steps.kept
            entry = {"epoch": epoch + 1, "step": steps.step, "lr": steps.lr(),
                     "train_loss": loss, "train_accuracy": accuracy}
            # keeping the last epoch without early stopping, only the last one is validated:
            # nothing else reads the score (the weights are the same either way)
            if _scored(config, epoch, cut):
                if config.recalibrate:
                    with fast_stem(kept):
                        recalibrate_batchnorm(kept, calibration, device, config.channels_last)
                entry.update(_validate(kept, val_set, config, device))
                if not entry["val_loss"] <= DIVERGED_LOSS:  # NaN included
                    raise diverged(config, f"validation loss {entry['val_loss']:.3g} at epoch "
                                           f"{epoch + 1}; guessing gives {math.log(2):.2f}")
            entry["seconds"] = time.perf_counter() - start
            history.append(entry)
            if progress:
                scored = (f", val loss {entry['val_loss']:.4f}, val accuracy "
                          f"{entry['val_accuracy']:.4f}" if "val_loss" in entry else "")
                tqdm.write(f"{label + ' ' if label else ''}epoch {epoch + 1}: loss {loss:.4f}, "
                           f"accuracy {accuracy:.4f}" + scored)
            if "val_loss" not in entry:
                continue
            if best is None or entry["val_loss"] < best["val_loss"] or config.keep == "last":
                best, stale = entry, 0
                best_state = {k: v.detach().clone(memory_format=torch.contiguous_format)
                              for k, v in kept.state_dict().items()}
            else:
                stale += 1
            if cut:
                stopped = "time budget"
                break
            if stale >= config.patience and epoch + 1 < config.epochs:
                stopped = "early stopping"
                break
        model = steps.choice.build()
        model.load_state_dict(best_state)
    return TrainResult(model.to(device).eval(), history, best, stopped,
                       time.perf_counter() - start, choice=steps.choice)


def train(data: str | os.PathLike, val: str | os.PathLike, out: str | os.PathLike,
          config: TrainConfig = TrainConfig(), force: bool = False,
          progress: bool = True, folder=None, label: str = "") -> TrainResult:
    """Train on probe file ``data``, validate on ``val``, write the best model to ``out``.

    The checkpoint (format of ``shared/DESIGN.md``) appears only when training finished; its
    ``metrics`` hold the history, the best epoch and why training stopped, ``train_config``
    the config and ``initial_weights`` (path, sha256) the weights it started from, if any.
    ``out`` is checked before training starts: an existing file needs ``force``. A factory
    model's module is looked up in ``folder`` first. ``progress`` and ``label``: as
    :func:`train_model`'s.

    Examples
    --------
    See the module's: ``train(data, val, out, TrainConfig(seed=1))``.
    """
    config.validate()
    out = check_output_path(out, force, inputs=(data, val) + ((config.weights,)
                                                              if config.weights else ()))
    train_set, val_set = open_probe_sets(data, val)
    with train_set, val_set:
        result = train_model(train_set, val_set, config, progress, folder, label)
        metrics = {"history": result.history, "best": result.best,
                   "best_epoch": result.best["epoch"], "stopped": result.stopped,
                   "seconds": result.seconds}
        sources = {role: {"path": str(probe.path), "sha256": file_sha256(probe.path),
                          "set": probe.name, "seed": probe.seed, "n": len(probe)}
                   for role, probe in (("train", train_set), ("val", val_set))}
        initial = ({"initial_weights": {"path": str(config.weights),
                                        "sha256": file_sha256(config.weights)}}
                   if config.weights else {})
        save_checkpoint(out, copy.deepcopy(result.model).cpu(), result.choice, train_set.size,
                        metrics, force=force, train_config=dataclasses.asdict(config),
                        data=sources, **initial)
    result.path = Path(out)
    return result
