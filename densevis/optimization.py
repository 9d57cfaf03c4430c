"""One optimization step after another: what :mod:`densevis.train` repeats each epoch.

:class:`TrainingSteps` holds the optimization of one run (model, averaged model, optimizer, loss
weights, batch stream) and takes one step per batch; :func:`deterministic_training` sets the
kernels and threads that make two runs with one seed give identical weights. The parts of the
recipe that act on a single step:

- all eight symmetries of the square (flips and quarter turns) as augmentation;
- a short linear warm-up, then a cosine decay of the learning rate to 0 at the last step
  (:func:`lr_at`);
- loss weight 3 on positives whose square touches a circle (they merge into one white blob:
  most of the errors are these; weighting the negatives whose circles merge as well, with
  classes rebalanced, lost more on the squares than it won on the circles), and no loss on
  positives that show at most 10% of their square (white on white: to any model the label is
  noise): :func:`loss_weights`;
- channels-last memory, a first convolution over the grey channel alone and the first
  BatchNorm in NCHW (same model, same gradients, less work: :func:`fast_stem`);
- no NaN-filling of fresh tensors, which deterministic mode does by default to expose kernels
  that read uninitialized memory (none here does: a test trains with and without it and gets
  the same weights): :data:`FILL_UNINITIALIZED_MEMORY`.

What each of these buys in time is measured by ``densevis bench train`` (README, Benchmarks).

Examples
--------
>>> with deterministic_training(threads=1):                                # doctest: +SKIP
...     steps = TrainingSteps(ProbeSet("train.h5"), TrainConfig(), torch.device("cpu"))
...     for images, labels, index in steps.stream.epoch(0):
...         loss, right = steps.train_batch(images, labels, index, grey=False)
"""

from __future__ import annotations

import contextlib
import math
import os
import time

import numpy as np
import torch
import torch.utils.deterministic as deterministic
import torchvision
from torch import nn

from densevis.batches import BatchStream, augment
from densevis.errors import DensevisError
from densevis.labels import training_labels
from densevis.model import (build_model, check_model_fits, load_weights, preprocess,
                            resolve_model, torch_threads)
from densevis.recipe import TrainConfig
from probes import ProbeSet
from probes.measure import scene_geometry

__all__ = ["DIVERGED_LOSS", "FILL_UNINITIALIZED_MEMORY", "TrainingSteps",
           "deterministic_training", "diverged", "fast_stem", "loss_weights", "lr_at"]

#: Whether deterministic mode NaN-fills every fresh tensor during training (torch's default; a
#: debugging aid that costs time on every step). Tests switch it on to show nothing reads
#: uninitialized memory: the weights come out the same.
FILL_UNINITIALIZED_MEMORY = False

#: A validation loss above this (100 times that of guessing one of two classes) means the
#: weights have left any useful region: the training diverged.
DIVERGED_LOSS = 100 * math.log(2)


@contextlib.contextmanager
def deterministic_training(threads: int | None):
    """Deterministic kernels, :data:`FILL_UNINITIALIZED_MEMORY` and ``threads`` torch CPU
    threads (None: torch's setting) for the block; the previous settings return after it."""
    previous = (torch.are_deterministic_algorithms_enabled(),
                deterministic.fill_uninitialized_memory)
    torch.use_deterministic_algorithms(True, warn_only=False)
    deterministic.fill_uninitialized_memory = FILL_UNINITIALIZED_MEMORY
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    try:
        with torch_threads(threads):
            yield
    finally:
        torch.use_deterministic_algorithms(previous[0])
        deterministic.fill_uninitialized_memory = previous[1]


@contextlib.contextmanager
def fast_stem(model: nn.Module):
    """Run the stem of a torchvision DenseNet faster on CPU while the block runs; same model.

    - Its first convolution takes a grey (N, 1, H, W) input as well as the usual 3-channel one.
      The model's input repeats the grey image over 3 channels, so the convolution equals one
      over the grey channel with the weights summed over their input channels; autograd gives
      every channel's weights the same gradient as before. A third of the first layer's work.
    - On CPU its first BatchNorm runs in NCHW memory, its output returns to the input's
      layout: channels-last BatchNorm over 2 channels is much slower there than NCHW.

    Yields whether it applies (to other models it does nothing).

    Examples
    --------
    >>> model = build_model("original")
    >>> with fast_stem(model) as applies:
    ...     model(torch.zeros(2, 1, 32, 32)).shape
    torch.Size([2, 2])
    """
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


def loss_weights(train_set: ProbeSet, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """``(class weights (2,), per-image weights (N,))`` of the training loss.

    Classes are weighted by inverse frequency (``class_weighted``, as the original study did).
    Per image, from the masks: ``touching_weight`` for a positive whose square touches a circle
    (they merge into one blob: the hard cases), and 0 for a positive that shows at most
    ``ignore_hidden`` of its square (circles cover the rest: white on white, so its label is
    noise to any model). Under another label rule than ``square``, and on a file without
    objects (a user's own images: no drawn squares and circles to measure), those weights do
    not apply: every image weighs 1.
    """
    labels = training_labels(train_set, config)
    counts = np.bincount(labels, minlength=2)
    classes = len(labels) / (2.0 * counts) if config.class_weighted else np.ones(2)
    per_image = np.ones(len(labels))
    if config.labels == "square" and train_set.has_objects and (
            config.ignore_hidden is not None or config.touching_weight != 1):
        geometry = scene_geometry(train_set, merges=False)
        per_image[(labels == 1) & geometry["touches_circle"].to_numpy()] = config.touching_weight
        if config.ignore_hidden is not None:
            shown = geometry["visible_px"] / geometry["square_px"].clip(lower=1)
            hidden = (geometry["square_px"] > 0) & (shown <= config.ignore_hidden)
            per_image[hidden.to_numpy()] = 0.0
    return (torch.tensor(classes, dtype=torch.float32),
            torch.tensor(per_image, dtype=torch.float32))


def diverged(config: TrainConfig, what: str) -> DensevisError:
    """The error of a training that diverged (``what``: the evidence): its learning rate."""
    return DensevisError(f"is too high: the training diverged ({what}); lower it (now "
                         f"{config.lr:g}); no checkpoint was written", parameter="lr")


class TrainingSteps:
    """The optimization of one run: model, averaged model, optimizer, loss weights, batches.

    Built seeded by ``config.seed`` (two instances of one config start from the same weights
    and draw the same batches and augmentations); run it inside :func:`deterministic_training`
    for identical weights run after run.

    Parameters
    ----------
    train_set : ProbeSet
        The training images (their labels under ``config.labels``).
    config : TrainConfig
    device : torch.device
    folder : path, optional
        Where a factory model's module is looked up first (a spec's folder).

    Attributes
    ----------
    choice : ModelChoice
        The model's name resolved (what builds it, with which arguments).
    model : nn.Module
        The model being optimized (in ``config``'s memory format).
    stream : BatchStream
        The batches, one epoch at a time (``stream.epoch(k)``).
    step : int
        Optimization steps taken so far.
    """

    def __init__(self, train_set: ProbeSet, config: TrainConfig, device: torch.device,
                 folder=None):
        self.config, self.device = config, device
        self.memory = torch.channels_last if config.channels_last else torch.contiguous_format
        self.choice = resolve_model(config.arch, config.model_args, folder)
        torch.manual_seed(config.seed)
        model = self.choice.build()
        if config.weights is not None:
            load_weights(model, config.weights, self.choice.name)
        model = model.to(device)
        check_model_fits(model, self.choice.name, train_set.size, device)
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
        """The learning rate of the next step."""
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
