"""The study's hypotheses as tests on the tidy metrics table (and the sanity-check similarities).

Each function returns hypothesis rows (one per statistic, method and layer; uncorrected: ``adjust``
them across the family you declare, see :func:`run_all`). A statistic's ``role`` is primary (a
direct consequence; primaries decide the ``overall`` verdict) or secondary (reported only). A
method and layer that fail ``passes_randomization`` support nothing overall (:func:`overall`).
Margins are the smallest effects that matter (:data:`MARGINS`); the verdict rule is
:data:`densevis.analysis.stats.VERDICT_RULE`.

``localizes_square`` (per method and layer; on the base set's images with a square, or on
    ``squares_only`` / ``large_squares`` when the base set is not scored)
    ``mass_minus_area > 0``, ``density_ratio > 1``, and ``mass_minus_area`` above each null
    baseline's on the same images (paired).
``edge_detector`` (would a line alone do?)
    primary: the model's logit margin is higher on ``lines_only`` than on square-free controls,
    and on ``pairs`` the loose ``sides`` keep more of the square's evidence than removing it;
    maps: ``line_mass > circle_mass`` on ``lines_only`` (per image), and that contrast above
    each null baseline's on the same images (an edge map prefers lines too). Secondary:
    ``edge_interior_ratio > 1`` on the base set, and the ``outline`` keeping more than removing
    (a square detector may answer to an outline too).
``small_object_detector`` (is the square just the smallest thing?)
    primary: small circles raise the margin over square-free controls; maps:
    ``smallest_object_mass > square_mass`` on the base set, and that contrast above each null
    baseline's. Secondary (confounded by the circles
    around the square): large squares lower the margin below base squares, doubling a square
    lowers it, halving keeps more than doubling; ``circle_mass > square_mass`` on
    ``large_squares``.
``passes_randomization`` (per method and layer)
    at full cascading randomization (and for the shuffled-label model) the maps' similarity to
    the original's is below a threshold: a method that fails does not explain the model.

Examples
--------
>>> import pandas as pd, numpy as np
>>> rng = np.random.default_rng(0)
>>> metrics = pd.DataFrame({"set": "base", "image": np.arange(30), "method": "vanilla",
...                         "layer": "", "reduction": "abs", "metric": "mass_minus_area",
...                         "value": rng.normal(0.3, 0.1, 30), "note": ""})
>>> rows = localizes_square(metrics)
>>> rows[["statistic", "verdict"]].values.tolist()
[['mass_minus_area > 0', 'supported']]
"""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd

from densevis.analysis.baselines import BASELINES
from densevis.analysis.stats import adjust, combine_verdicts, test_hypothesis

#: Smallest meaningful effects, in each statistic's units.
MARGINS = {
    "mass_minus_area": 0.05,     # share of the map's mass beyond the area share
    "ratio": 0.25,               # density_ratio, edge_interior_ratio above 1
    "area_mass": 0.25,           # difference of area-corrected masses (1 = image mean)
    "logit": 1.0,                # logit-margin difference
    "similarity": 0.1,           # rank correlation / SSIM / HOG similarity
}
MODEL = "model"  # the method name of behaviour rows (from logits)
RANDOMIZATION = "passes_randomization"
#: How an ``overall`` row decides (its ``rule`` column).
OVERALL_RULE = ("supported iff every primary statistic is (and, for maps, the method and layer "
                "do not fail passes_randomization); rejected iff any primary statistic is")
#: Sets whose squares the map-based statistics use, in order of preference (``square_set=None``).
SQUARE_SETS = ("base", "squares_only", "large_squares")
COLUMNS = ["hypothesis", "method", "layer", "statistic", "effect", "ci_low", "ci_high", "p_value",
           "p_adjusted", "verdict", "n", "rank_biserial", "test", "direction", "null", "margin",
           "alpha", "paired", "family", "role", "sets", "rule", "note"]
#: A ``primary`` statistic is a direct consequence of the hypothesis and decides the ``overall``
#: verdict; a ``secondary`` one is a weaker or confounded consequence, reported beside it (e.g.
#: a square detector may also answer to a square's outline, so ``outline > removed`` cannot
#: tell it from an edge detector).
ROLES = ("primary", "secondary")


_SERIES_KEYS = ["set", "metric", "method", "layer"]
_LAST_INDEX: list = [lambda: None, {}]  # (weak reference to a metrics table, its row index)


def _rows_by_key(metrics: pd.DataFrame) -> dict:
    """Row positions of ``metrics`` per (set, metric, method, layer), built once per table:
    hundreds of statistics each select one series, and a boolean mask per selection over a
    million-row table costs seconds. Tables are read, never changed, while tested."""
    if _LAST_INDEX[0]() is not metrics:
        _LAST_INDEX[:] = [weakref.ref(metrics),
                          metrics.groupby(_SERIES_KEYS, sort=False, dropna=False).indices]
    return _LAST_INDEX[1]


def _series(metrics: pd.DataFrame, set_name: str, metric: str, method: str = MODEL,
            layer: str = "") -> pd.Series:
    rows = _rows_by_key(metrics).get((set_name, metric, method, layer), np.empty(0, np.int64))
    return metrics.iloc[rows].groupby("image")["value"].first()


def _explained(metrics: pd.DataFrame, set_name: str, metric: str) -> list[tuple[str, str]]:
    """(method, layer) of the saliency maps scored on ``metric`` in ``set_name``."""
    rows = metrics[(metrics["set"] == set_name) & (metrics["metric"] == metric)
                   & ~metrics["method"].isin((MODEL,) + BASELINES)]
    return sorted(set(zip(rows["method"], rows["layer"])))


def _row(hypothesis, method, layer, statistic, sets, result, role: str) -> dict:
    return {"hypothesis": hypothesis, "method": method, "layer": layer, "statistic": statistic,
            "family": hypothesis, "role": role, "sets": sets, **result}


class _Tester:
    """Collects rows of one hypothesis with shared test options."""

    def __init__(self, hypothesis: str, alpha: float, test: str, seed: int):
        self.hypothesis, self.rows = hypothesis, []
        self.options = dict(alpha=alpha, test=test, seed=seed)

    def one(self, method, layer, statistic, sets, values, role="primary", **kw) -> None:
        if len(values):
            self.rows.append(_row(self.hypothesis, method, layer, statistic, sets,
                                  test_hypothesis(values.to_numpy(), **kw, **self.options), role))

    def paired(self, method, layer, statistic, sets, a: pd.Series, b: pd.Series,
               role="primary", **kw) -> None:
        a, b = a.align(b, join="inner")
        if len(a):
            self.rows.append(_row(self.hypothesis, method, layer, statistic, sets,
                                  test_hypothesis(a.to_numpy(), b.to_numpy(), paired=True, **kw,
                                                  **self.options), role))

    def unpaired(self, statistic, sets, a: pd.Series, b: pd.Series, role="primary",
                 **kw) -> None:
        if len(a) and len(b):
            self.rows.append(_row(self.hypothesis, MODEL, "", statistic, sets,
                                  test_hypothesis(a.to_numpy(), b.to_numpy(), paired=False, **kw,
                                                  **self.options), role))

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=COLUMNS)


def _by_label(metrics: pd.DataFrame, set_name: str, label: int) -> pd.Series:
    """Logit margins of the images of ``set_name`` whose label is ``label``."""
    margins, labels = (_series(metrics, set_name, m) for m in ("logit_margin", "label"))
    return margins[labels.reindex(margins.index) == label]


def _square_set(metrics: pd.DataFrame, square_set: str | None, metric: str) -> str:
    """``square_set``, or the first of :data:`SQUARE_SETS` scored on ``metric``."""
    if square_set is not None:
        return square_set
    scored = set(metrics.loc[metrics["metric"] == metric, "set"])
    return next((name for name in SQUARE_SETS if name in scored), SQUARE_SETS[0])


def _control(metrics: pd.DataFrame, preferred: str, fallback: str, label: int):
    """Margins of set ``preferred`` if scored, else of ``fallback``'s images labelled ``label``."""
    margins = _series(metrics, preferred, "logit_margin")
    if len(margins):
        return margins, preferred
    return _by_label(metrics, fallback, label), f"{fallback} (label {label})"


def _mass_contrast(tester: _Tester, metrics: pd.DataFrame, set_name: str, more: str, less: str,
                   baselines, margin: float) -> None:
    """Primary map statistics of a cue: ``more > less`` per image, and that contrast above each
    null baseline's on the same images. Area-corrected mass favours thin and small shapes for
    any map that follows edges (they have more edge per pixel): the Sobel map itself puts more
    on lines than on circles, and more on the smallest object than on the square, so only a
    contrast beyond the baselines' says something about the model."""
    for method, layer in _explained(metrics, set_name, more):
        contrast = (_series(metrics, set_name, more, method, layer)
                    - _series(metrics, set_name, less, method, layer)).dropna()
        tester.one(method, layer, f"{more} > {less}", set_name, contrast, margin=margin)
        for baseline in baselines:
            reference = (_series(metrics, set_name, more, baseline)
                         - _series(metrics, set_name, less, baseline)).dropna()
            tester.paired(method, layer, f"{more} - {less} > {baseline}'s", set_name, contrast,
                          reference, margin=margin)


def localizes_square(metrics: pd.DataFrame, square_set: str | None = None, baselines=BASELINES,
                     margins: dict | None = None, alpha: float = 0.05, test: str = "wilcoxon",
                     seed: int = 0) -> pd.DataFrame:
    """Rows of ``localizes_square`` for every explained (method, layer) of ``square_set``
    (default: the first of :data:`SQUARE_SETS` in the table)."""
    margins = {**MARGINS, **(margins or {})}
    set_name = _square_set(metrics, square_set, "mass_minus_area")
    tester = _Tester("localizes_square", alpha, test, seed)
    for method, layer in _explained(metrics, set_name, "mass_minus_area"):
        mass = _series(metrics, set_name, "mass_minus_area", method, layer)
        tester.one(method, layer, "mass_minus_area > 0", set_name, mass,
                   margin=margins["mass_minus_area"])
        ratio = _series(metrics, set_name, "density_ratio", method, layer)
        tester.one(method, layer, "density_ratio > 1", set_name, ratio, null=1.0,
                   margin=margins["ratio"])
        for baseline in baselines:
            reference = _series(metrics, set_name, "mass_minus_area", baseline)
            tester.paired(method, layer, f"mass_minus_area > {baseline}", set_name, mass,
                          reference, margin=margins["mass_minus_area"])
    return tester.frame()


def edge_detector(metrics: pd.DataFrame, square_set: str | None = None, baselines=BASELINES,
                  margins: dict | None = None, alpha: float = 0.05, test: str = "wilcoxon",
                  seed: int = 0) -> pd.DataFrame:
    """Rows of ``edge_detector``: line vs circle mass, edge vs interior, lines in logits."""
    margins = {**MARGINS, **(margins or {})}
    square_set = _square_set(metrics, square_set, "edge_interior_ratio")
    tester = _Tester("edge_detector", alpha, test, seed)
    _mass_contrast(tester, metrics, "lines_only", "line_mass", "circle_mass", baselines,
                   margins["area_mass"])
    for method, layer in _explained(metrics, square_set, "edge_interior_ratio"):
        tester.one(method, layer, "edge_interior_ratio > 1", square_set,
                   _series(metrics, square_set, "edge_interior_ratio", method, layer), null=1.0,
                   margin=margins["ratio"], role="secondary")
    lines = _series(metrics, "lines_only", "logit_margin")
    control, control_set = _control(metrics, "circles_only", "base", 0)
    tester.unpaired("logit_margin: lines_only > square-free control", f"lines_only, {control_set}",
                    lines, control, margin=margins["logit"])
    removed = _series(metrics, "pairs", "logit_delta_removed")
    for variant, role in (("sides", "primary"), ("outline", "secondary")):
        tester.paired(MODEL, "", f"logit_delta_{variant} > logit_delta_removed", "pairs",
                      _series(metrics, "pairs", f"logit_delta_{variant}"), removed,
                      margin=margins["logit"], role=role)
    return tester.frame()


def small_object_detector(metrics: pd.DataFrame, square_set: str | None = None,
                          baselines=BASELINES, margins: dict | None = None, alpha: float = 0.05,
                          test: str = "wilcoxon", seed: int = 0) -> pd.DataFrame:
    """Rows of ``small_object_detector``: smallest object vs square, sizes in logits."""
    margins = {**MARGINS, **(margins or {})}
    square_set = _square_set(metrics, square_set, "smallest_object_mass")
    tester = _Tester("small_object_detector", alpha, test, seed)
    _mass_contrast(tester, metrics, square_set, "smallest_object_mass", "square_mass",
                   baselines, margins["area_mass"])
    for method, layer in _explained(metrics, "large_squares", "circle_mass"):
        tester.paired(method, layer, "circle_mass > square_mass", "large_squares",
                      _series(metrics, "large_squares", "circle_mass", method, layer),
                      _series(metrics, "large_squares", "square_mass", method, layer),
                      margin=margins["area_mass"], role="secondary")
    small = _series(metrics, "small_circles", "logit_margin")
    control, control_set = _control(metrics, "circles_only", "base", 0)
    tester.unpaired("logit_margin: small_circles > square-free control",
                    f"small_circles, {control_set}", small, control, margin=margins["logit"])
    large = _series(metrics, "large_squares", "logit_margin")
    squares, squares_set = _by_label(metrics, "base", 1), "base (label 1)"
    if not len(squares):
        squares, squares_set = _series(metrics, "squares_only", "logit_margin"), "squares_only"
    tester.unpaired("logit_margin: large_squares < base-size squares",
                    f"large_squares, {squares_set}", large, squares, direction="less",
                    margin=margins["logit"], role="secondary")
    double = _series(metrics, "pairs", "logit_delta_double")
    tester.one(MODEL, "", "logit_delta_double < 0", "pairs", double, direction="less",
               margin=margins["logit"], role="secondary")
    tester.paired(MODEL, "", "logit_delta_half > logit_delta_double", "pairs",
                  _series(metrics, "pairs", "logit_delta_half"), double, margin=margins["logit"],
                  role="secondary")
    return tester.frame()


def passes_randomization(similarity: pd.DataFrame, metric: str = "spearman_abs",
                         threshold: float = 0.5, margins: dict | None = None,
                         alpha: float = 0.05, test: str = "wilcoxon",
                         seed: int = 0) -> pd.DataFrame:
    """Rows of ``passes_randomization`` from a :mod:`densevis.analysis.sanity` similarity table.

    Per method and layer: at the last cascading step (every layer group re-initialized) and for
    the shuffled-label model (``test == "data"``), ``metric`` is below ``threshold``. Supported =
    the method passes; rejected = its maps stay similar (it is flagged).
    """
    margins = {**MARGINS, **(margins or {})}
    tester = _Tester(RANDOMIZATION, alpha, test, seed)
    rows = similarity[similarity["metric"] == metric]
    for kind, label in (("cascading", "cascading, all layers"), ("data", "shuffled labels")):
        part = rows[rows["test"] == kind]
        if part.empty:
            continue
        part = part[part["step_index"] == part["step_index"].max()]
        for (method, layer), group in part.groupby(["method", "layer"], sort=True):
            tester.one(method, layer, f"{label}: {metric} < {threshold:g}", kind,
                       group["value"], null=threshold, direction="less",
                       margin=margins["similarity"])
    return tester.frame()


def overall(table: pd.DataFrame) -> pd.DataFrame:
    """One ``overall`` row per (hypothesis, method, layer): the intersection-union verdict of
    its primary statistics, gated by the randomization check.

    Supported iff every primary statistic is supported, rejected iff any is rejected; its
    p-values are the largest of those parts (the intersection-union test's p-value). Secondary
    statistics are reported but do not decide. A map-based ``supported`` becomes
    ``inconclusive`` (with a note) when the same method and layer fail
    ``passes_randomization`` in the table: maps that barely change when the weights are
    randomized show the image, not the model, so what they localize is no evidence about it
    (the known-answer runs show such maps "supporting" cues a model does not have).
    """
    groups = list(table.groupby(["hypothesis", "method", "layer"], sort=False))

    def deciding(group: pd.DataFrame) -> pd.DataFrame:
        primary = group[group["role"] != "secondary"]
        return primary if len(primary) else group

    failing = {(method, layer) for (hypothesis, method, layer), group in groups
               if hypothesis == RANDOMIZATION
               and combine_verdicts(deciding(group)["verdict"]) == "rejected"}
    rows = []
    for (hypothesis, method, layer), group in groups:
        parts = deciding(group)
        verdict, note = combine_verdicts(parts["verdict"]), ""
        if (hypothesis != RANDOMIZATION and method != MODEL and (method, layer) in failing
                and verdict == "supported"):
            verdict = "inconclusive"
            note = (f"{method}{f' at {layer}' if layer else ''} fails passes_randomization: its "
                    f"maps do not show the model, so its statistics (all supported) are no "
                    f"evidence for {hypothesis}")
        rows.append({"hypothesis": hypothesis, "method": method, "layer": layer,
                     "statistic": "overall", "p_value": parts["p_value"].max(),
                     "p_adjusted": parts["p_adjusted"].max(), "verdict": verdict,
                     "family": group["family"].iloc[0], "role": "overall",
                     "test": "intersection-union", "rule": OVERALL_RULE, "note": note,
                     "sets": ", ".join(sorted(set(parts["sets"])))})
    return pd.DataFrame(rows, columns=table.columns)


def run_all(metrics: pd.DataFrame, similarity: pd.DataFrame | None = None,
            correction: str = "holm", alpha: float = 0.05, test: str = "wilcoxon",
            seed: int = 0, margins: dict | None = None) -> pd.DataFrame:
    """Every hypothesis the tables support, corrected per hypothesis (one family each), with an
    ``overall`` row per hypothesis, method and layer."""
    options = dict(alpha=alpha, test=test, seed=seed, margins=margins)
    parts = [localizes_square(metrics, **options), edge_detector(metrics, **options),
             small_object_detector(metrics, **options)]
    if similarity is not None:
        parts.append(passes_randomization(similarity, **options))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=COLUMNS + ["correction"])
    table = adjust(pd.concat(parts, ignore_index=True), family="family", method=correction)
    return pd.concat([table, overall(table)], ignore_index=True)
