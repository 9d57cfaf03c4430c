"""The randomization sanity checks (Adebayo et al. 2018) as one figure of small multiples.

One row per layer method (a line per layer, coloured in network order, with a shared colour
bar) and one row for the pixel methods together (a line per method); one column per test in the
table: cascading (the original maps, then each step re-initializing one more layer group from
the top), independent (one group re-initialized at a time) and shuffled labels (points: the
model trained on permuted labels). Every panel shares the y axis, whose limits come from the
data (a signed correlation of -0.55 stays in view), and shows the pass threshold. A step at
which every similarity of a map is NaN (its maps constant: no rank correlation) is marked
"n/a", not left as a silent gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.lines import Line2D

from densevis.report.figure_style import (MIN_FONT_PT, blank, in_order, layer_colours,
                                          method_order, new_figure, one_model)
from densevis.report.html import png_of

#: The tests of the sanity table (its ``test`` column), in the figure's column order.
TESTS = {
    "cascading": "cascading: layer groups re-initialized from the top, cumulatively",
    "independent": "independent: one layer group re-initialized, the rest trained",
    "data": "shuffled labels: a model trained on permuted labels",
}
WIDTHS = {"cascading": 3.0, "independent": 3.0, "data": 1.4}
ROW_HEIGHT_IN = 2.3
PIXEL_GROUP = "pixel methods"
THRESHOLD_COLOUR = "#c62828"
NA_NOTE = "n/a: every value NaN (maps constant, no rank correlation)"


def summarize_similarity(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method, layer and step: median, quartiles and the counts of values and of non-NaN
    values (the median of a step whose values are all NaN is NaN)."""
    grouped = rows.groupby(["method", "layer", "step_index"], sort=False)["value"]
    return pd.DataFrame({"median": grouped.median(), "q1": grouped.quantile(0.25),
                         "q3": grouped.quantile(0.75), "finite": grouped.count(),
                         "size": grouped.size()}).reset_index()


def build_sanity_figure(similarity: pd.DataFrame, metric: str, threshold: float | None = None,
                        layer_order=()):
    """The figure of :func:`sanity_figure`, or None when ``metric`` has no rows."""
    table = one_model(similarity, f"sanity checks of {metric!r}")
    table = table.assign(layer=table["layer"].map(blank))
    rows = table[table["metric"] == metric]
    tests = [t for t in TESTS if (rows["test"] == t).any()]
    if not tests:
        return None
    summary = {t: summarize_similarity(rows[rows["test"] == t]) for t in tests}
    # the steps of each test from every metric: one recorded at fewer steps still shows them all
    steps = {t: table[table["test"] == t].drop_duplicates("step_index")
             .sort_values("step_index")[["step_index", "step"]] for t in tests}
    layers = [l for l in in_order(rows["layer"], layer_order) if l]
    colours = layer_colours(layers)
    pixel = method_order(rows.loc[rows["layer"] == "", "method"])
    colours.update({m: f"C{k % 10}" for k, m in enumerate(pixel)})
    groups = ([PIXEL_GROUP] if pixel else []) + method_order(
        rows.loc[rows["layer"] != "", "method"])
    low, high = _limits(summary, threshold)
    fig = new_figure(ROW_HEIGHT_IN * len(groups) + 1.6)
    grid = fig.add_gridspec(len(groups), len(tests), width_ratios=[WIDTHS[t] for t in tests])
    first, shared, missing = None, {}, 0
    last_layered = max((r for r, g in enumerate(groups) if g != PIXEL_GROUP), default=-1)
    for r, group in enumerate(groups):
        for c, test in enumerate(tests):
            pixel_row = group == PIXEL_GROUP
            # the layer rows share the x axis of a column (the pixel row's data panel has its
            # own: methods, not layers), labelled on the last row that has it
            key = (test, pixel_row and test == "data")
            ax = fig.add_subplot(grid[r, c], sharey=first, sharex=shared.get(key))
            first, shared[key] = first or ax, shared.get(key) or ax
            series = [(m, "") for m in pixel] if pixel_row else [(group, l) for l in layers]
            if test == "data":
                missing += _points(ax, summary[test], series, colours, pixel_row,
                                   show_x=pixel_row or r == last_layered)
            else:
                missing += _curves(ax, summary[test], series, colours, steps[test],
                                   show_x=r == len(groups) - 1)
            if threshold is not None:
                ax.axhline(threshold, color=THRESHOLD_COLOUR, ls="--", lw=1.2)
            ax.axhline(0.0, color="#9e9e9e", lw=0.6)
            ax.grid(axis="y", color="#eeeeee", lw=0.6)
            if r == 0:
                ax.set_title(TESTS[test], fontsize=10, loc="left", y=1.0, pad=6)
            if c == 0:
                ax.set_ylabel(f"{group}\n{metric}")
            else:
                ax.tick_params(labelleft=False)
    first.set_ylim(low, high)
    if layers:
        cmap = ListedColormap([colours[l] for l in layers])
        bar = fig.colorbar(ScalarMappable(BoundaryNorm(np.arange(len(layers) + 1), cmap.N),
                                          cmap), ax=fig.axes, ticks=np.arange(len(layers)) + 0.5,
                           aspect=40, fraction=0.03)
        bar.ax.set_yticklabels(layers, fontsize=MIN_FONT_PT)
        bar.ax.invert_yaxis()  # shallow at the top, as the network is read
        bar.set_label("layer of the maps (network order)")
    handles = [Line2D([], [], color=colours[m], marker="o", ms=4, label=m) for m in pixel]
    if threshold is not None:
        handles.append(Line2D([], [], color=THRESHOLD_COLOUR, ls="--",
                              label=f"pass threshold {threshold:g}"))
    if missing:
        handles.append(Line2D([], [], color="#616161", marker="x", ls="", label=NA_NOTE))
    fig.suptitle(f"Sanity checks: {metric} of each map to the trained model's (median over "
                 f"images, band and bars: interquartile range)", fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4),
               frameon=False)
    return fig


def sanity_figure(similarity: pd.DataFrame, metric: str, threshold: float | None = None,
                  layer_order=()) -> bytes | None:
    """The randomization checks of one similarity measure (PNG); see the module docstring.

    Parameters
    ----------
    similarity : pandas.DataFrame
        The sanity table of one model (``test, step, step_index, method, layer, image, metric,
        value``).
    metric : str
        Similarity measure (``spearman_abs``, ``spearman_signed``, ``ssim``, ``hog``).
    threshold : float or None
        The pass threshold of ``passes_randomization`` (the spec's ``threshold``), drawn as a
        line; give it for the measure the verdict reads (None: no line).
    layer_order : list of str
        Layers in network order (the maps file's ``layers``).

    Returns
    -------
    bytes or None
        None when ``metric`` has no rows.

    Raises
    ------
    ValueError
        The table holds several models.
    """
    fig = build_sanity_figure(similarity, metric, threshold, layer_order)
    return None if fig is None else png_of(fig)


def _limits(summary: dict, threshold: float | None) -> tuple[float, float]:
    """Limits holding every median and quartile, the original (1), 0 and the threshold."""
    values = [np.array([0.0, 1.0] + ([threshold] if threshold is not None else []))]
    values += [frame[c].to_numpy(dtype=float) for frame in summary.values()
               for c in ("median", "q1", "q3")]
    values = np.concatenate(values)
    values = values[np.isfinite(values)]
    low, high = float(values.min()), float(values.max())
    pad = 0.06 * (high - low)
    return low - pad, high + pad


def _curves(ax, frame: pd.DataFrame, series, colours: dict, steps: pd.DataFrame,
            show_x: bool) -> int:
    """A line per map from the original (1 by definition) through each step; steps the map
    was not measured at stay empty, steps with only NaN values get an "n/a" mark (returns
    how many)."""
    x = np.arange(len(steps) + 1)
    position = {s: k + 1 for k, s in enumerate(steps["step_index"])}
    recorded, missing = set(), 0
    for method, layer in series:
        mine = frame[(frame["method"] == method) & (frame["layer"] == layer)]
        if mine.empty:
            continue
        values = {c: np.full(len(x), np.nan) for c in ("median", "q1", "q3")}
        for c in values:
            values[c][0] = 1.0  # the original maps against themselves
            values[c][[position[s] for s in mine["step_index"]]] = mine[c].to_numpy()
        colour = colours[layer or method]
        ax.plot(x, values["median"], color=colour, marker="o", ms=3, lw=1.4)
        ax.fill_between(x, values["q1"], values["q3"], color=colour, alpha=0.12, lw=0)
        # a point without a measured neighbour has no band to show: bars instead
        known = np.isfinite(np.concatenate([values["median"], [np.nan]]))
        alone = known[:-1] & ~known[np.arange(len(x)) - 1] & ~known[1:]
        ax.errorbar(x[alone], values["median"][alone],
                    yerr=[values["median"][alone] - values["q1"][alone],
                          values["q3"][alone] - values["median"][alone]],
                    fmt="none", ecolor=colour, capsize=2, lw=1)
        missing += _mark_na(ax, [position[s] for s in
                                 mine.loc[mine["finite"] == 0, "step_index"]], colour)
        recorded.update(mine["step_index"])
    if 0 < len(recorded) < len(steps):
        ax.text(0.99, 0.97, f"measured at {len(recorded)} of {len(steps)} steps", ha="right",
                va="top", transform=ax.transAxes, fontsize=MIN_FONT_PT, color="#616161")
    ax.set_xticks(x, ["original"] + list(steps["step"]), rotation=40, ha="right",
                  rotation_mode="anchor", fontsize=MIN_FONT_PT)
    ax.tick_params(labelbottom=show_x)
    ax.set_xlim(-0.4, len(x) - 0.6)
    return missing


def _points(ax, frame: pd.DataFrame, series, colours: dict, pixel: bool, show_x: bool) -> int:
    """The shuffled-label model: a point (median) and bar (quartiles) per map, each map at its
    place among ``series`` (the same x for a layer in every row); returns the "n/a" marks."""
    missing = 0
    for k, (method, layer) in enumerate(series):
        mine = frame[(frame["method"] == method) & (frame["layer"] == layer)]
        if mine.empty:
            continue
        row = mine.iloc[0]
        colour = colours[layer or method]
        ax.errorbar(k, row["median"], yerr=[[row["median"] - row["q1"]],
                                            [row["q3"] - row["median"]]],
                    fmt="o", ms=5, capsize=2, color=colour)
        if row["finite"] == 0:
            missing += _mark_na(ax, [k], colour)
    ax.set_xticks(range(len(series)), [method if pixel else layer for method, layer in series],
                  rotation=45, ha="right", rotation_mode="anchor", fontsize=MIN_FONT_PT)
    ax.tick_params(labelbottom=show_x)
    ax.set_xlim(-0.6, max(len(series), 1) - 0.4)
    return missing


def _mark_na(ax, positions, colour) -> int:
    """An x near the bottom of the panel and the words "n/a" at steps without a value;
    returns how many."""
    for x in positions:
        ax.plot(x, 0.05, "x", color=colour, ms=7, mew=2, transform=ax.get_xaxis_transform(),
                clip_on=False)
        ax.text(x, 0.09, "n/a", ha="center", va="bottom", fontsize=MIN_FONT_PT,
                color="#616161", transform=ax.get_xaxis_transform())
    return len(positions)
