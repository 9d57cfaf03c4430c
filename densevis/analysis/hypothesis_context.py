"""What a hypothesis' function works with: :class:`Context`, the tables it reads (indexed once
per table) and the rows it adds, each tested by :func:`densevis.analysis.stats.test_hypothesis`.
"""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd

from densevis.analysis.baselines import BASELINES
from densevis.analysis.hypothesis_registry import (COLUMNS, CONTROL_SETS, HYPOTHESES, MODEL,
                                                   SQUARE_SETS, Hypothesis, HypothesisSpec)
from densevis.analysis.stats import test_hypothesis
from densevis.saliency.methods import METHODS

_SERIES_KEYS = ["set", "metric", "method", "layer"]
_LAST_INDEX: list = [lambda: None, {}, ()]  # (a metrics table, its row index, arrays)


def _rows_by_key(metrics: pd.DataFrame) -> dict:
    """Row positions of ``metrics`` per (set, metric, method, layer), built once per table:
    hundreds of statistics each select one series, and a boolean mask per selection over a
    million-row table costs seconds. Tables are read, never changed, while tested."""
    if _LAST_INDEX[0]() is not metrics:
        _LAST_INDEX[:] = [weakref.ref(metrics),
                          metrics.groupby(_SERIES_KEYS, sort=False, dropna=False).indices,
                          (np.asarray(metrics["image"], dtype=np.int64),
                           np.asarray(metrics["value"], dtype=float))]
    return _LAST_INDEX[1]


def _image_values(metrics: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``metrics``' image and value columns as numpy arrays, converted once per table."""
    _rows_by_key(metrics)
    return _LAST_INDEX[2]


def _first_per_image(images: np.ndarray, values: np.ndarray) -> pd.Series:
    """Per image (sorted) its first non-NaN value, NaN where it has none: what
    ``groupby("image")["value"].first()`` gives, without a groupby per series."""
    order = np.argsort(images, kind="stable")
    images, values = images[order], values[order].astype(float)
    every = np.unique(images)
    finite = ~np.isnan(values)
    found, first = np.unique(images[finite], return_index=True)
    series = pd.Series(values[finite][first], index=pd.Index(found, name="image"), name="value")
    return series if len(found) == len(every) else \
        series.reindex(pd.Index(every, name="image"))


def at_layer_resolution(method: str) -> bool:
    """Whether ``method``'s maps are at its layer's grid (declared on the method)."""
    declared = METHODS.get(method)
    return declared is not None and declared.resolution == "layer"


class Context:
    """What a hypothesis' function reads (tables, options) and the rows it adds."""

    def __init__(self, definition: Hypothesis, spec: HypothesisSpec, metrics: pd.DataFrame,
                 similarity: pd.DataFrame | None, baselines: list[str]):
        self.definition, self.spec = definition, spec
        self.metrics, self.similarity, self.baselines = metrics, similarity, baselines
        self.options = {name: (default if getattr(spec, name, None) in (None, "")
                               else getattr(spec, name))
                        for name, default in definition.options.items()}
        self.rows: list[dict] = []
        self._series: dict[tuple, pd.Series] = {}

    # -- reading --------------------------------------------------------------------------------
    def series(self, set_name: str, metric: str, method: str = MODEL,
               layer: str = "") -> pd.Series:
        """Per-image values of one metric of one map (or of the model) on one set."""
        key = (set_name, metric, method, layer)
        if key not in self._series:  # baselines are read once per method and layer compared
            rows = _rows_by_key(self.metrics).get(key, np.empty(0, np.int64))
            images, values = _image_values(self.metrics)
            self._series[key] = _first_per_image(images[rows], values[rows])
        return self._series[key]

    def explained(self, set_name: str, metric: str) -> list[tuple[str, str]]:
        """(method, layer) of the saliency maps scored on ``metric`` in ``set_name``."""
        skip = (MODEL,) + BASELINES
        return sorted({(method, layer) for (name, scored, method, layer)
                       in _rows_by_key(self.metrics)
                       if name == set_name and scored == metric and method not in skip})

    def baseline(self, set_name: str, metric: str, baseline: str, method: str,
                 layer: str) -> pd.Series:
        """``baseline``'s values as ``method`` at ``layer`` is compared with them: pooled to the
        layer's grid for layer-resolution maps (when the table has them), else at full
        resolution."""
        if layer and at_layer_resolution(method):
            matched = self.series(set_name, metric, baseline, layer)
            if len(matched):
                return matched
        return self.series(set_name, metric, baseline)

    def square_set(self, metric: str) -> str:
        """The first of :data:`SQUARE_SETS` scored on ``metric``."""
        scored = set(self.metrics.loc[self.metrics["metric"] == metric, "set"])
        return next((name for name in SQUARE_SETS if name in scored), SQUARE_SETS[0])

    def by_label(self, set_name: str, label: int) -> pd.Series:
        """Logit margins of the images of ``set_name`` whose label is ``label``."""
        margins, labels = (self.series(set_name, m) for m in ("logit_margin", "label"))
        return margins[labels.reindex(margins.index) == label]

    def control(self) -> tuple[pd.Series, str]:
        """Margins of a square-free control (see :data:`CONTROL_SETS`) and its name."""
        margins = self.series(CONTROL_SETS[0], "logit_margin")
        if len(margins):
            return margins, CONTROL_SETS[0]
        return self.by_label(CONTROL_SETS[1], 0), f"{CONTROL_SETS[1]} (label 0)"

    # -- testing --------------------------------------------------------------------------------
    def test(self, key: str, method: str, layer: str, sets: str, a: pd.Series,
             b: pd.Series | None = None, paired: bool = True, null: float = 0.0,
             baseline: str | None = None, note: str = "") -> None:
        """Add the row of statistic ``key`` (one sample, paired on the index, or unpaired)."""
        statistic = self.definition.statistic(key)
        if self.spec.statistics and key not in self.spec.statistics:
            return
        if b is not None and paired:
            a, b = a.align(b, join="inner")
        if not len(a) or (b is not None and not len(b)):
            return
        margin = float(self.spec.margins.get(key, statistic.margin)
                       if self.spec.name in HYPOTHESES else self.spec.margin or 0.0)
        result = test_hypothesis(a.to_numpy(), None if b is None else b.to_numpy(),
                                 paired=paired, null=null, direction=statistic.direction,
                                 margin=margin, alpha=self.spec.alpha)
        self.rows.append({
            "hypothesis": self.definition.name, "method": method, "layer": layer,
            "statistic": statistic.text.format(baseline=baseline, **self.options),
            "statistic_key": key if baseline is None else f"{key}.{baseline}",
            "role": statistic.role, "unit": statistic.unit, "sets": sets,
            **result, "note": "; ".join(filter(None, (result["note"], note)))})

    def pairs_delta(self, key: str, variant: str, other: str) -> None:
        """``logit_delta_<variant> > logit_delta_<other>`` on the pairs' scenes."""
        self.test(key, MODEL, "", "pairs", self.series("pairs", f"logit_delta_{variant}"),
                  self.series("pairs", f"logit_delta_{other}"))

    def mass_contrast(self, key: str, set_name: str, more: str, less: str) -> None:
        """``more > less`` per image (``key``), and that contrast above each null baseline's on
        the same images (``key_vs_baseline``). Area-corrected mass favours thin and small shapes
        for any map that follows edges (the Sobel map itself puts more on lines than on
        circles, and on the smallest object than on the square), so only a contrast beyond the
        baselines' says something about the model."""
        for method, layer in self.explained(set_name, more):
            contrast = (self.series(set_name, more, method, layer)
                        - self.series(set_name, less, method, layer)).dropna()
            self.test(key, method, layer, set_name, contrast)
            for baseline in self.baselines:
                reference = (self.baseline(set_name, more, baseline, method, layer)
                             - self.baseline(set_name, less, baseline, method, layer)).dropna()
                self.test(f"{key}_vs_baseline", method, layer, set_name, contrast, reference,
                          baseline=baseline)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=[c for c in COLUMNS if c not in (
            "ci_low", "ci_high", "ci_level", "p_adjusted", "verdict", "family", "family_size",
            "correction", "rule")] + ["evidence"])
