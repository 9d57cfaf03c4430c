"""A localization metric per method and layer, against the null baselines, from the per-image
metrics table: medians with seeded percentile-bootstrap CIs.

Medians, not means: the ratios are heavy-tailed (one image with almost no relevance outside the
square gives a ratio in the thousands), so a mean and its t interval say little about the
typical image and can even cross 0 for a ratio that cannot. Layers are categories in network
order with the methods as offset markers, not joined by lines: the layers are different kinds of
module (convolution, normalization, pooling, dense blocks, transitions), and a line between them
would draw a trend through points that are not steps of one quantity.

Examples
--------
>>> import numpy as np
>>> median, low, high = median_ci(np.arange(1.0, 40.0), key=("gradcam", "denseblock4"))
>>> median, low <= median <= high
(20.0, True)
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from densevis.analysis.baselines import BASELINES
from densevis.analysis.hypothesis_registry import MODEL
from densevis.report.figure_style import (MIN_FONT_PT, blank, in_order, is_ratio_metric,
                                          method_order, new_figure, one_model)
from densevis.report.html import png_of

RESAMPLES = 2000
LEVEL = 0.95
#: The behaviour metric holding each image's ground truth (1 = has a square; see
#: :func:`densevis.analysis.tables.score_model`).
LABEL_METRIC = "label"
BASELINE_COLOURS = ("#9e9e9e", "#d08a3c", "#7aa974")
MARKERS = "osD^vP*Xhp<>"


def median_ci(values, key: tuple, seed: int = 0, resamples: int = RESAMPLES,
              level: float = LEVEL) -> tuple[float, float, float]:
    """The median of ``values`` (NaN dropped) and its percentile-bootstrap CI at ``level``.

    The resamples are drawn from ``seed`` and ``key`` (e.g. the method and layer), so one
    group's interval does not depend on which other groups are drawn; all ``resamples``
    medians are computed at once. Returns NaNs for no values.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if not len(values):
        return np.nan, np.nan, np.nan
    salt = zlib.crc32("\0".join(map(str, key)).encode())
    rng = np.random.default_rng(np.random.SeedSequence([seed, salt]))
    medians = np.median(values[rng.integers(0, len(values), (resamples, len(values)))], axis=1)
    # order statistics, not interpolation: an infinite ratio must not turn into NaN
    low, high = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(np.median(values)), float(low), float(high)


def square_rows(metrics: pd.DataFrame, set_name: str, metric: str) -> pd.DataFrame:
    """``metric``'s rows on ``set_name`` for the images with a square (by their label rows;
    every image when the table has none), NaN values dropped."""
    rows = metrics[(metrics["set"] == set_name) & (metrics["metric"] == metric)]
    labels = metrics[(metrics["set"] == set_name) & (metrics["method"] == MODEL)
                     & (metrics["metric"] == LABEL_METRIC)]
    if len(labels):
        rows = rows[rows["image"].isin(labels.loc[labels["value"] == 1, "image"])]
    rows = rows[rows["method"] != MODEL]
    return rows[rows["value"].notna()].assign(layer=rows["layer"].map(blank))


def build_localization_by_layer(metrics: pd.DataFrame, metric: str, layer_order=(),
                                set_name: str = "base", seed: int = 0, log: bool | None = None):
    """The figure of :func:`localization_by_layer`, or None when nothing is scored."""
    rows = square_rows(one_model(metrics, f"localization of {metric!r}"), set_name, metric)
    if rows.empty:
        return None
    log = is_ratio_metric(metric) if log is None else log
    stats = {key: median_ci(group["value"].to_numpy(), key, seed)
             for key, group in rows.groupby(["method", "layer"], sort=False)}
    maps = rows[~rows["method"].isin(BASELINES)]
    layered = method_order(maps.loc[maps["layer"] != "", "method"])
    pixel = method_order(maps.loc[maps["layer"] == "", "method"])
    layers = [l for l in in_order(maps["layer"], layer_order) if l]
    categories = layers + pixel
    if not categories:
        return None
    drawn = [v for key, triple in stats.items() for v in triple]
    low, high = _limits(np.array(drawn), log)
    fig = new_figure(5.6)
    ax = fig.subplots()
    if log:
        ax.set_yscale("log")
        ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylim(low, high)
    baselines = [b for b in BASELINES if any(method == b for method, _ in stats)]
    for k, category in enumerate(categories):
        # each baseline in its own third of the category: bands near one value stay visible
        for j, (name, colour) in enumerate(zip(baselines, BASELINE_COLOURS)):
            triple = stats.get((name, category if k < len(layers) else "")) or \
                stats.get((name, ""))
            if triple:
                left = k - 0.46 + j * 0.92 / len(baselines)
                _band(ax, (left, left + 0.92 / len(baselines)), triple, colour, low, high)
    colours = {m: f"C{j % 10}" for j, m in enumerate(dict.fromkeys(layered + pixel))}
    markers = {m: MARKERS[j % len(MARKERS)] for j, m in enumerate(colours)}
    width = 0.8 / max(len(layered), 1)
    for j, method in enumerate(layered):
        for k, layer in enumerate(layers):
            if (method, layer) in stats:
                _point(ax, k + (j - (len(layered) - 1) / 2) * width, stats[(method, layer)],
                       colours[method], markers[method], low, high)
    for k, method in enumerate(pixel, start=len(layers)):
        _point(ax, k, stats[(method, "")], colours[method], markers[method], low, high)
    for k in range(1, len(categories)):
        ax.axvline(k - 0.5, color="#444444" if k == len(layers) else "#e0e0e0",
                   lw=1.2 if k == len(layers) else 0.6)
    ax.set_xticks(range(len(categories)),
                  layers + [f"{m} (pixels)" for m in pixel], rotation=40, ha="right",
                  rotation_mode="anchor", fontsize=MIN_FONT_PT)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_xlabel("layer, in network order" + (" | pixel methods (no layer)" if pixel else ""))
    ax.set_ylabel(f"{metric}: median, {LEVEL:.0%} bootstrap CI" + (" (log)" if log else ""))
    handles = [Line2D([], [], color=colours[m], marker=markers[m], ls="", label=m)
               for m in colours]
    handles += [Patch(color=c, alpha=0.35, label=f"baseline: {b}")
                for b, c in zip(baselines, BASELINE_COLOURS)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="method")
    images = rows.loc[~rows["method"].isin(BASELINES), "image"].nunique()
    notes = [f"{metric} on the {images} images of '{set_name}' with a square, by method and "
             f"layer; a value off the axis is a triangle at its edge",
             "bands: the null baselines (median and CI; at a layer, pooled to its grid where "
             "the table has them: the null of layer-resolution maps)"]
    if log:
        notes.append(f"log scale: {int((rows['value'] <= 0).sum())} of {len(rows)} values "
                     f"are <= 0")
    ax.set_title("\n".join(notes), fontsize=10, loc="left", y=1.0, pad=6)
    return fig


def localization_by_layer(metrics: pd.DataFrame, metric: str, layer_order=(),
                          set_name: str = "base", seed: int = 0,
                          log: bool | None = None) -> bytes | None:
    """``metric`` per method and layer against the null baselines (PNG).

    Parameters
    ----------
    metrics : pandas.DataFrame
        The per-image metrics table of one model (``set, image, method, layer, metric, value``).
    metric : str
        A localization metric (``mass_minus_area``, ``density_ratio``, ...).
    layer_order : list of str
        Layers in network order (the maps file's ``layers``); others follow.
    set_name : str
        The probe set; only its images with a square count (their ``label`` rows).
    seed : int
        Seed of the bootstrap resamples.
    log : bool or None
        Log scale; None: when a registered hypothesis declares ``metric`` a ratio.

    Returns
    -------
    bytes or None
        Per method the median over images and its seeded 95% percentile-bootstrap CI: layers
        as categories in network order (each method at its own offset), pixel methods as
        categories at the right; the null baselines (:data:`densevis.analysis.baselines.
        BASELINES`) as bands per category. None when the metric has no values there.

    Raises
    ------
    ValueError
        The table holds several models.
    """
    fig = build_localization_by_layer(metrics, metric, layer_order, set_name, seed, log)
    return None if fig is None else png_of(fig)


def _limits(values: np.ndarray, log: bool) -> tuple[float, float]:
    """Limits holding the finite (on a log axis: positive) values, with 5% room."""
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    if not len(values):
        return (0.1, 10.0) if log else (-1.0, 1.0)
    scaled = np.log10(values) if log else values
    low, high = float(scaled.min()), float(scaled.max())
    pad = 0.05 * (high - low) or 0.5
    low, high = low - pad, high + pad
    return (10 ** low, 10 ** high) if log else (low, high)


def _clip(value: float, low: float, high: float) -> tuple[float, str]:
    """Where ``value`` is drawn on an axis from ``low`` to ``high``, and the triangle marking
    a value beyond it ("" inside)."""
    if value < low or (low > 0 and value <= 0):
        return low, "v"
    if value > high:
        return high, "^"
    return value, ""


def _point(ax, x: float, triple, colour, marker: str, low: float, high: float) -> None:
    median, bottom, top = (_clip(v, low, high) for v in triple)
    ax.plot([x, x], [bottom[0], top[0]], color=colour, lw=1.5)
    ax.plot(x, median[0], marker=median[1] or marker, color=colour, ms=6, ls="",
            clip_on=False)
    for value, edge in (bottom, top):
        if edge:  # the bound lies off the axis
            ax.plot(x, value, marker=edge, color=colour, ms=5, clip_on=False)


def _band(ax, span: tuple[float, float], triple, colour, low: float, high: float) -> None:
    median, bottom, top = (_clip(v, low, high)[0] for v in triple)
    ax.fill_between(span, bottom, top, color=colour, alpha=0.3, lw=0)
    ax.plot(span, [median, median], color=colour, lw=2)
