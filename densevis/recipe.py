"""The training recipe: :class:`TrainConfig` and its defaults (no torch import, so the command
line starts fast).

Examples
--------
>>> TrainConfig(epochs=3).arch
'original'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from densevis.errors import DensevisError

LABEL_RULES = ("square", "edge", "small", "shuffled")  # see densevis.labels
KEEP = ("best", "last")  # which epoch's weights training keeps

#: Augmentations: the symmetries each one draws from (element k of the dihedral group D4 is
#: ``k & 3`` quarter turns after an optional transpose when ``k & 4``). Every one of them maps a
#: square to a square and a circle to a circle, so labels are kept.
AUGMENTATIONS = {"none": (0,), "flips": (0, 2, 5, 7), "dihedral": tuple(range(8))}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (stored in the checkpoint as ``train_config``).

    The defaults are the recipe behind the README's figures (``original`` at 128 px).
    """

    arch: str = "original"  # the model's name: a config, a torchvision classifier or a
    # factory "module:callable" (densevis.model.resolve_model)
    model_args: dict = field(default_factory=dict)  # keyword arguments of its builder
    weights: str | None = None  # initial weights (fine-tuning); None: freshly initialized
    epochs: int = 9
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 0.0
    warmup_epochs: float = 0.5
    augment: str = "dihedral"  # none | flips | dihedral
    shift: int = 0  # random translation (px) on top of the symmetries: the "random crop"
    class_weighted: bool = True  # as the original study: classes weighted by inverse frequency
    ignore_hidden: float | None = 0.1  # no loss on positives showing at most this fraction of
    # their square (0: only squares wholly inside circles; None: keep every image)
    touching_weight: float = 3.0  # loss weight of positives whose square touches a circle
    ema: float = 0.0  # decay of a weight average to validate and save instead; 0: none
    recalibrate: int = 1024  # training images that re-estimate BatchNorm statistics; 0: none
    labels: str = "square"  # the label rule (densevis.labels): square (the file's ground
    # truth), edge or small (planted cues), shuffled (the data-randomization sanity check)
    patience: int = 5  # epochs without a lower validation loss before stopping early
    keep: str = "best"  # best: the epoch of lowest validation loss; last: the final epoch (a
    # model meant to memorize its labels, such as the shuffled-label sanity model)
    seed: int = 0
    max_minutes: float | None = None  # stop cleanly (keeping the best epoch) after this long
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; None leaves torch's setting
    channels_last: bool = True  # faster convolutions on CPU

    def validate(self) -> None:
        """Raise :class:`DensevisError` naming the first field out of its range."""
        checks = [("epochs", self.epochs >= 1, "must be at least 1"),
                  ("batch_size", self.batch_size >= 2, "must be at least 2"),
                  ("lr", self.lr > 0 and math.isfinite(self.lr), "must be positive"),
                  ("weight_decay", self.weight_decay >= 0, "must not be negative"),
                  ("warmup_epochs", self.warmup_epochs >= 0, "must not be negative"),
                  ("ema", 0 <= self.ema < 1, "must be in [0, 1)"),
                  ("ignore_hidden", self.ignore_hidden is None or 0 <= self.ignore_hidden < 1,
                   "must be in [0, 1)"),
                  ("touching_weight", self.touching_weight >= 0, "must not be negative"),
                  ("recalibrate", self.recalibrate >= 0, "must not be negative"),
                  ("augment", self.augment in AUGMENTATIONS,
                   f"must be one of {', '.join(AUGMENTATIONS)}"),
                  ("labels", self.labels in LABEL_RULES, f"must be one of {', '.join(LABEL_RULES)}"),
                  ("shift", self.shift >= 0, "must not be negative"),
                  ("patience", self.patience >= 1, "must be at least 1"),
                  ("keep", self.keep in KEEP, f"must be one of {', '.join(KEEP)}"),
                  ("seed", self.seed >= 0, "must not be negative"),
                  ("max_minutes", self.max_minutes is None or self.max_minutes > 0,
                   "must be positive"),
                  ("threads", self.threads is None or self.threads >= 1, "must be at least 1")]
        for name, ok, rule in checks:
            if not ok:
                raise DensevisError(f"{rule} (got {getattr(self, name)!r})", parameter=name)
