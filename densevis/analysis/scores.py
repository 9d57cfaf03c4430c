"""Per-image scores that carry the reason for every missing value.

Every metric function of :mod:`densevis.analysis` returns a :class:`Scores`: one float64 tensor of
values per metric (NaN where the metric is undefined for that image) and, per metric, one note per
image saying why ("empty mask", "map sums to zero", ...). Tables keep the note beside the value, so
a NaN is never silent.

Examples
--------
>>> import torch
>>> scores = Scores()
>>> values = torch.tensor([0.5, 0.25], dtype=torch.float64)
>>> scores.add("relevance_mass", values, [(torch.tensor([False, True]), "empty mask")])
>>> scores.values["relevance_mass"].tolist(), scores.notes["relevance_mass"].tolist()
([0.5, nan], ['', 'empty mask'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

#: Note of an image whose map holds NaN or infinite values: every metric of that map is NaN.
NONFINITE_MAP = "map has NaN or infinite values"


@dataclass
class Scores:
    """Metric values (float64 tensors (N,)) and one note per value ('' when the value is fine)."""

    values: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, name: str, values: torch.Tensor, reasons=(), invalidate: bool = True) -> None:
        """Store ``values`` as metric ``name``.

        ``reasons`` is a sequence of ``(bool tensor (N,), text)``: rows where a condition holds get
        the text as their note and, when ``invalidate``, the value NaN. With ``invalidate=False``
        the note only explains a value that is kept (an infinite ratio, say).
        """
        values = values.to(torch.float64).clone()
        notes = np.full(values.shape[0], "", dtype=object)
        for condition, text in reasons:
            rows = condition.detach().to("cpu", torch.bool).numpy()
            if not rows.any():
                continue
            if invalidate:
                values[condition.to(values.device)] = float("nan")
            notes[rows] = np.where(notes[rows] == "", text, notes[rows] + "; " + text)
        self.values[name] = values
        self.notes[name] = notes

    def annotate(self, name: str, condition: torch.Tensor, text: str) -> None:
        """Add a note to metric ``name`` where ``condition`` holds, keeping its values."""
        rows = condition.detach().to("cpu", torch.bool).numpy()
        notes = self.notes[name]
        notes[rows] = np.where(notes[rows] == "", text, notes[rows] + "; " + text)

    def update(self, other: "Scores") -> "Scores":
        self.values.update(other.values)
        self.notes.update(other.notes)
        return self

    def __len__(self) -> int:
        return next(iter(self.values.values())).shape[0] if self.values else 0


def masked_row_sums(values: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Float64 sums of each row of ``values`` (N, ...) over the entries where ``keep`` is true.

    On the CPU numpy does it: its float32 -> float64 reduction is several times faster than
    torch's there; elsewhere torch.
    """
    flat = values.reshape(values.shape[0], -1)
    keep = None if keep is None else keep.reshape(flat.shape)
    if flat.device.type == "cpu":
        array = flat.numpy()
        if keep is not None:
            array = np.where(keep.numpy(), array, np.zeros((), array.dtype))
        return torch.from_numpy(array.sum(axis=1, dtype=np.float64))
    if keep is not None:
        flat = torch.where(keep, flat, torch.zeros_like(flat))
    return flat.sum(dim=1, dtype=torch.float64)


def finite_rows(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps with non-finite rows zeroed, bool (N,) marking those rows)``.

    A map with any NaN or infinite value has no defined metric; zeroing it keeps the vectorized
    arithmetic of the other rows clean, and callers mark its metrics NaN with :data:`NONFINITE_MAP`.
    """
    flat = maps.reshape(maps.shape[0], -1)
    bad = ~torch.isfinite(flat).all(dim=1)
    if bad.any():
        maps = torch.where(bad.view(-1, *([1] * (maps.ndim - 1))), torch.zeros_like(maps), maps)
    return maps, bad
