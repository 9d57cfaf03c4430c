"""Train a classifier on a probe set: seeded, deterministic, best-by-validation checkpoint.

The recipe of the original study (Adam, class-weighted cross-entropy, flips), plus what takes
the 58k-parameter DenseNet past 98% on held-out base images at 128 px in a few CPU minutes:

- all eight symmetries of the square (flips and quarter turns) as augmentation;
- a short linear warm-up, then a cosine decay of the learning rate to 0 at the last step;
- loss weight 3 on positives whose square touches a circle (they merge into one white blob:
  most of the errors are these; weighting the negatives whose circles merge as well, with
  classes rebalanced, lost more on the squares than it won on the circles);
- no loss on positives that show at most 10% of their square (white on white: to any model the
  label is noise);
- BatchNorm statistics re-estimated on 1,024 training images before each validation, so that
  eval-mode BatchNorm matches the current weights (running averages lag behind them);
- channels-last memory, a first convolution over the grey channel alone and the first
  BatchNorm in NCHW (same model, same gradients, less work: :func:`fast_stem`);
- no NaN-filling of fresh tensors, which deterministic mode does by default to expose kernels
  that read uninitialized memory (none here does: a test trains with and without it and gets
  the same weights) at ~4% of a step.

Batches stream from the HDF5 file (:class:`densevis.batches.BatchStream`).

Two runs with one seed, one device and one thread count give identical weights.

Examples
--------
>>> result = train("train.h5", "val.h5", "model.pt", TrainConfig(epochs=2))  # doctest: +SKIP
>>> result.best["val_accuracy"]                                            # doctest: +SKIP
0.97
"""

from __future__ import annotations

import contextlib
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

from densevis.batches import BatchStream, augment
from densevis.errors import DensevisError
from densevis.evaluation import predict, scene_geometry
from densevis.model import build_model, preprocess, resolve_device, save_checkpoint
from densevis.recipe import TrainConfig
from probes import ProbeSet, file_sha256
from probes.atomic import check_output_path
from probes.errors import first_line

__all__ = ["TrainConfig", "TrainResult", "fast_stem", "train", "train_model"]


@dataclass
class TrainResult:
    """What :func:`train_model` / :func:`train` return."""

    model: nn.Module  # the best model (by validation), eval mode, on the training device
    history: list[dict]  # one dict per epoch: epoch, step, lr, train_loss, train_accuracy, val_*
    best: dict  # the history entry of the kept model
    stopped: str  # "completed", "early stopping" or "time budget"
    seconds: float
    path: Path | None = None


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


def training_labels(probe: ProbeSet, config: TrainConfig) -> np.ndarray:
    """The labels the model learns (and is validated on) under ``config.labels``: the file's
    ground truth, a planted cue, or a seeded permutation (the data-randomization check: no
    image keeps a reason for its label). See :mod:`densevis.labels`."""
    from densevis.labels import rule_labels

    return rule_labels(probe, config.labels, config.seed).astype(np.int64)


def loss_weights(train_set: ProbeSet, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(class weights (2,), per-image weights (N,))`` of the training loss.

    Classes are weighted by inverse frequency (``class_weighted``, as the original study did).
    Per image, from the masks: ``touching_weight`` for a positive whose square touches a circle
    (they merge into one blob: the hard cases), and 0 for a positive that shows at most
    ``ignore_hidden`` of its square (circles cover the rest: white on white, so its label is
    noise to any model). Under another label rule than ``square`` those weights do not apply:
    every image weighs 1.
    """
    labels = training_labels(train_set, config)
    counts = np.bincount(labels, minlength=2)
    classes = len(labels) / (2.0 * counts) if config.class_weighted else np.ones(2)
    per_image = np.ones(len(labels))
    if config.labels == "square" and (config.ignore_hidden is not None
                                      or config.touching_weight != 1):
        geometry = scene_geometry(train_set, merges=False)
        per_image[(labels == 1) & geometry["touches_circle"].to_numpy()] = config.touching_weight
        if config.ignore_hidden is not None:
            shown = geometry["visible_px"] / geometry["square_px"].clip(lower=1)
            hidden = (geometry["square_px"] > 0) & (shown <= config.ignore_hidden)
            per_image[hidden.to_numpy()] = 0.0
    return (torch.tensor(classes, dtype=torch.float32),
            torch.tensor(per_image, dtype=torch.float32))


def lr_at(step: int, total: int, warmup: int, peak: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to 0 at ``total``.

    Examples
    --------
    >>> lr_at(0, 100, 10, 1.0), lr_at(10, 100, 10, 1.0), lr_at(100, 100, 10, 1.0)
    (0.1, 1.0, 0.0)
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


#: Whether deterministic mode NaN-fills every fresh tensor during training (torch's default; a
#: debugging aid that costs ~4% of a step here). Tests switch it on to show nothing reads
#: uninitialized memory: the weights come out the same.
FILL_UNINITIALIZED_MEMORY = False


@contextlib.contextmanager
def _deterministic(threads: int | None):
    """Deterministic kernels and a thread count for the block; the previous settings return."""
    import torch.utils.deterministic as deterministic

    previous = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(),
                deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=False)
    deterministic.fill_uninitialized_memory = FILL_UNINITIALIZED_MEMORY
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        torch.set_num_threads(previous[1])
        deterministic.fill_uninitialized_memory = previous[2]


@contextlib.contextmanager
def fast_stem(model: nn.Module):
    """Run the stem of a torchvision DenseNet faster on CPU while the block runs; same model.

    - Its first convolution takes a grey (N, 1, H, W) input as well as the usual 3-channel one.
      The model's input repeats the grey image over 3 channels, so the convolution equals one
      over the grey channel with the weights summed over their input channels; autograd gives
      every channel's weights the same gradient as before. A third of the first layer's work.
    - On CPU its first BatchNorm runs in NCHW memory, its output returns to the input's
      layout: channels-last BatchNorm over 2 channels is ~10x slower there than NCHW (torch
      2.14; it took ~8% of a training step of ``original`` at 128 px).

    Yields whether it applies (to other models it does nothing).

    Examples
    --------
    >>> model = build_model("original")
    >>> with fast_stem(model) as applies:
    ...     model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 2])
    """
    import torchvision

    features = getattr(model, "features", None)
    conv, norm = getattr(features, "conv0", None), getattr(features, "norm0", None)
    applies = (isinstance(model, torchvision.models.DenseNet) and conv.in_channels == 3
               and isinstance(norm, nn.BatchNorm2d))
    if applies:
        def conv_forward(x):
            weight = conv.weight.sum(1, keepdim=True) if x.shape[1] == 1 else conv.weight
            return conv._conv_forward(x, weight, conv.bias)

        def norm_forward(x):
            if x.device.type != "cpu":
                return nn.BatchNorm2d.forward(norm, x)
            layout = (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
                      and not x.is_contiguous() else torch.contiguous_format)
            return nn.BatchNorm2d.forward(norm, x.contiguous()).contiguous(memory_format=layout)

        conv.forward, norm.forward = conv_forward, norm_forward
    try:
        yield applies
    finally:
        if applies:
            del conv.forward, norm.forward  # the class's forward again


def check_model_fits(model: nn.Module, arch: str, size: int, device: torch.device) -> None:
    """Raise :class:`DensevisError` (parameter ``arch``) if ``model`` cannot classify
    ``size``-px images (a forward pass of two blank images)."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, size, size, device=device))
    except RuntimeError as exc:
        raise DensevisError(f"{arch} cannot classify {size}-px images ({first_line(exc, 80)}); "
                            f"use larger images or another arch", parameter="arch") from None


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


#: A validation loss above this (100 times that of guessing one of two classes) means the
#: weights have left any useful region: the training diverged.
DIVERGED_LOSS = 100 * math.log(2)


def diverged(config: TrainConfig, what: str) -> DensevisError:
    """The error of a training that diverged (``what``: the evidence): its learning rate."""
    return DensevisError(f"is too high: the training diverged ({what}); lower it (now "
                         f"{config.lr:g}); no checkpoint was written", parameter="lr")


class _Steps:
    """The optimization of one run: model, averaged model, optimizer, loss weights, batches."""

    def __init__(self, train_set: ProbeSet, config: TrainConfig, device: torch.device):
        self.config, self.device = config, device
        self.memory = torch.channels_last if config.channels_last else torch.contiguous_format
        torch.manual_seed(config.seed)
        model = build_model(config.arch).to(device)
        check_model_fits(model, config.arch, train_set.size, device)
        self.model = model.to(memory_format=self.memory)
        self.average = (torch.optim.swa_utils.AveragedModel(
            self.model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema),
            use_buffers=True) if config.ema else None)
        self.class_weights, self.image_weights = (
            w.to(device) for w in loss_weights(train_set, config))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr,
                                          weight_decay=config.weight_decay)
        self.stream = BatchStream(train_set, config.batch_size, config.seed,
                                  labels=training_labels(train_set, config))
        self.generator = torch.Generator().manual_seed(config.seed + 1)  # augmentation draws
        self.total = config.epochs * len(self.stream)
        self.warmup = round(config.warmup_epochs * len(self.stream))
        self.step = 0

    @property
    def kept(self) -> nn.Module:
        """The model that is validated and saved: the averaged one when there is one."""
        return self.average.module if self.average is not None else self.model

    def lr(self) -> float:
        return lr_at(self.step, self.total, self.warmup, self.config.lr)

    def train_batch(self, images: np.ndarray, labels: np.ndarray, index: np.ndarray,
                    grey: bool) -> tuple[float, float]:
        """One optimization step on a batch of the stream; ``(its loss, how many it got
        right)``. ``grey``: the model takes the grey channel alone (see :func:`fast_stem`)."""
        config, device = self.config, self.device
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr()
        images = augment(torch.from_numpy(images), self.generator, config.augment, config.shift)
        inputs = images.unsqueeze(1).float() / 255.0 if grey else preprocess(images)
        inputs = inputs.to(device, memory_format=self.memory)
        labels = torch.from_numpy(labels).to(device)
        logits = self.model(inputs)
        losses = nn.functional.cross_entropy(logits, labels, reduction="none")
        weights = (self.class_weights[labels]
                   * self.image_weights[torch.from_numpy(index).to(device)])
        loss = (losses * weights).sum() / weights.sum().clamp_min(1e-12)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.model)
        self.step += 1
        value = float(loss.detach())
        if not math.isfinite(value):  # every later step would be NaN too: stop now
            raise diverged(config, f"loss {value} at step {self.step}")
        return value, float((logits.argmax(1) == labels).sum())

    def epoch(self, epoch: int, bar, deadline: float) -> tuple[float, float, bool]:
        """Train one epoch; ``(mean loss, accuracy, whether the deadline cut it short)``."""
        seen = correct = loss_sum = 0.0
        self.model.train()
        with fast_stem(self.model) as grey:
            for images, labels, index in self.stream.epoch(epoch):
                loss, right = self.train_batch(images, labels, index, grey)
                seen += len(labels)
                loss_sum += loss * len(labels)
                correct += right
                bar.update()
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}")
                if time.perf_counter() > deadline:
                    return loss_sum / seen, correct / seen, True
        return loss_sum / seen, correct / seen, False


def _scored(config: TrainConfig, epoch: int, cut: bool) -> bool:
    """Whether epoch ``epoch`` (0-based) is validated: always, except the epochs before the last
    of a run that keeps its last epoch and cannot stop early."""
    return (config.keep != "last" or config.patience < config.epochs or cut
            or epoch + 1 == config.epochs)


def train_model(train_set: ProbeSet, val_set: ProbeSet, config: TrainConfig = TrainConfig(),
                progress: bool = True) -> TrainResult:
    """Train ``config.arch`` on ``train_set``; keep the epoch that scores best on ``val_set``
    (or, with ``config.keep == "last"``, the final one).

    The score is validation loss (cross-entropy, unweighted): a proper score, and smoother
    than accuracy, whose 0.1% steps on 1,000 images are mostly noise. Training stops after
    ``config.epochs``, after ``config.patience`` epochs without a better score, or when
    ``config.max_minutes`` have passed (mid-epoch; that partial epoch is validated too).

    Examples
    --------
    >>> result = train_model(ProbeSet("train.h5"), ProbeSet("val.h5"))   # doctest: +SKIP
    >>> result.best["val_accuracy"], result.stopped                      # doctest: +SKIP
    (0.99, 'completed')
    """
    from tqdm.auto import tqdm

    config.validate()
    device = resolve_device(config.device)
    with _deterministic(config.threads):
        start = time.perf_counter()
        deadline = start + 60 * config.max_minutes if config.max_minutes else math.inf
        steps = _Steps(train_set, config, device)
        calibration = train_set.images[:config.recalibrate]  # fixed images: deterministic
        history, best, best_state, stale, stopped = [], None, None, 0, "completed"
        for epoch in range(config.epochs):
            with tqdm(total=len(steps.stream), desc=f"epoch {epoch + 1}/{config.epochs}",
                      unit="batch", leave=False, disable=None if progress else True) as bar:
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
                tqdm.write(f"epoch {epoch + 1}: loss {loss:.4f}, accuracy {accuracy:.4f}"
                           + scored)
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
        model = build_model(config.arch)
        model.load_state_dict(best_state)
    return TrainResult(model.to(device).eval(), history, best, stopped,
                       time.perf_counter() - start)


def train(data: str | os.PathLike, val: str | os.PathLike, out: str | os.PathLike,
          config: TrainConfig = TrainConfig(), force: bool = False,
          progress: bool = True) -> TrainResult:
    """Train on probe file ``data``, validate on ``val``, write the best model to ``out``.

    The checkpoint (format of ``shared/DESIGN.md``) appears only when training finished; its
    ``metrics`` hold the history, the best epoch and why training stopped, and ``train_config``
    the config. ``out`` is checked before training starts: an existing file needs ``force``.

    Examples
    --------
    >>> result = train("train.h5", "val.h5", "model.pt", TrainConfig(seed=1))  # doctest: +SKIP
    >>> result.path, result.best["epoch"]                                   # doctest: +SKIP
    (PosixPath('model.pt'), 9)
    """
    config.validate()
    out = check_output_path(out, force, inputs=(data, val))
    train_set, val_set = open_probe_sets(data, val)
    with train_set, val_set:
        result = train_model(train_set, val_set, config, progress)
        metrics = {"history": result.history, "best": result.best,
                   "best_epoch": result.best["epoch"], "stopped": result.stopped,
                   "seconds": result.seconds}
        sources = {role: {"path": str(probe.path), "sha256": file_sha256(probe.path),
                          "set": probe.name, "seed": probe.seed, "n": len(probe)}
                   for role, probe in (("train", train_set), ("val", val_set))}
        save_checkpoint(out, copy.deepcopy(result.model).cpu(), config.arch, train_set.size,
                        metrics, force=force, train_config=dataclasses.asdict(config),
                        data=sources)
    result.path = Path(out)
    return result
