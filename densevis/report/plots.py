"""The report's figures of the tidy tables, each a plain function returning PNG bytes (or None
when the table has nothing to show); ``build_*`` returns the matplotlib figure itself.

- :func:`hypothesis_forest`: every statistic of one hypothesis, a panel per unit (and
  :func:`build_hypothesis_forests`: several hypotheses' in one figure);
- :func:`behaviour_bars`: what the model says on each probe set and edit;
- :func:`localization_by_layer` (:mod:`densevis.report.localization_plot`): a localization
  metric per method and layer in network order against the null baselines;
- :func:`sanity_figure` (:mod:`densevis.report.sanity_plot`): the randomization checks.

Tables follow the contracts of docs/DESIGN.md (``hypotheses``, ``behaviour``, ``metrics``,
``sanity``). Layers are ordered as the network computes them (``layer_order``: the maps file's
``layers`` attribute), never alphabetically.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from densevis.analysis.hypotheses import HYPOTHESES
from densevis.analysis.hypothesis_registry import MODEL
from densevis.report.figure_style import (MIN_FONT_PT, RATIO_UNITS, VERDICT_COLOURS, blank,
                                          in_order, method_order, new_figure, one_model)
from densevis.report.html import png_of
from densevis.report.localization_plot import build_localization_by_layer, localization_by_layer
from densevis.report.sanity_plot import build_sanity_figure, sanity_figure

__all__ = ["behaviour_bars", "build_behaviour_bars", "build_hypothesis_forest",
           "build_hypothesis_forests", "build_localization_by_layer", "build_sanity_figure",
           "hypothesis_forest", "localization_by_layer", "sanity_figure"]

ROW_IN = 0.24     # height of one statistic (or probe-set row), inches
PANEL_IN = 1.25   # a panel's title, x axis and label, inches
BEHAVIOUR_COLUMNS = ("set", "variant", "label_rate", "positive_rate", "positive_rate_ci_low",
                     "positive_rate_ci_high", "logit_margin", "logit_margin_ci_low",
                     "logit_margin_ci_high", "accuracy", "accuracy_ci_low", "accuracy_ci_high")


# ------------------------------------------------------------------------------------ forest
def forest_order(rows: pd.DataFrame, layer_order=()) -> pd.DataFrame:
    """The statistics (not ``overall``) in the forest's order: the model's behaviour first,
    then the maps by method (saliency registry order) and layer (``layer_order``), each
    (method, layer)'s statistics in table order."""
    rows = rows[rows["statistic"] != "overall"]
    methods = {m: k for k, m in enumerate(method_order(rows["method"]))}
    layers = {l: k for k, l in enumerate(in_order(rows["layer"], layer_order))}
    key = pd.DataFrame({
        "maps": (rows["method"] != MODEL).to_numpy(),
        "method": [methods[blank(m)] for m in rows["method"]],
        "layer": [layers[blank(l)] for l in rows["layer"]],
        "position": np.arange(len(rows))})
    # by position: a table's index labels need not be unique (concatenated tables)
    return rows.iloc[key.sort_values(["maps", "method", "layer", "position"]).index]


def _forest_plan(rows: pd.DataFrame, hypothesis: str, layer_order=()):
    """``(table, units, panels, heights)`` of the forest of ``hypothesis``: its statistics in
    order, each one's unit, the panels' units and heights (inches); None without statistics."""
    table = one_model(rows[rows["hypothesis"] == hypothesis], f"forest of {hypothesis!r}")
    table = forest_order(table, layer_order)
    if table.empty:
        return None
    units = (table["unit"].map(blank) if "unit" in table.columns
             else pd.Series("", index=table.index))
    panels = _panel_order(units, table["method"] == MODEL, hypothesis)
    heights = [ROW_IN * _forest_height(table[units == unit]) + PANEL_IN for unit in panels]
    return table, units, panels, heights


def build_hypothesis_forest(rows: pd.DataFrame, hypothesis: str, layer_order=(), figure=None):
    """The forest of ``hypothesis`` (see :func:`hypothesis_forest`) as a matplotlib figure,
    or None when the table has no statistic of it. ``figure``: a (sub)figure to draw into
    instead of a new one (:func:`build_hypothesis_forests`)."""
    plan = _forest_plan(rows, hypothesis, layer_order)
    if plan is None:
        return None
    table, units, panels, heights = plan
    fig = new_figure(sum(heights) + 0.6) if figure is None else figure
    axes = fig.subplots(len(panels), 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, unit in zip(axes, panels):
        _forest_panel(ax, table[units == unit], unit)
    handles = [Line2D([], [], color=c, marker="o", lw=2, label=v)
               for v, c in VERDICT_COLOURS.items()]
    handles += [Line2D([], [], color="black", lw=1, label="null (no effect)"),
                Line2D([], [], color="black", lw=1, ls="--",
                       label="margin: smallest effect that matters")]
    fig.suptitle(f"{hypothesis}: each statistic's effect and family-wise confidence interval",
                 fontsize=11)
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    return fig


def build_hypothesis_forests(rows: pd.DataFrame, hypotheses, layer_order=()):
    """The forests of several hypotheses (:func:`hypothesis_forest`, in the order given) one
    under the other in one matplotlib figure, or None when the table has no statistic of any.

    Examples
    --------
    >>> import pandas as pd
    >>> rows = pd.DataFrame({"hypothesis": ["a", "b"], "method": ["vanilla", "model"],
    ...                      "layer": ["", ""], "statistic": ["x > 0", "y > 0"],
    ...                      "verdict": ["supported", "rejected"], "effect": [0.2, -1.0],
    ...                      "ci_low": [0.1, -2.0], "ci_high": [0.3, 0.5],
    ...                      "unit": ["share", "logits"]})
    >>> fig = build_hypothesis_forests(rows, ["a", "b", "not_in_the_table"])
    >>> len(fig.subfigs)  # one per hypothesis with statistics
    2
    """
    plans = {name: plan for name in hypotheses
             for plan in [_forest_plan(rows, name, layer_order)] if plan is not None}
    if not plans:
        return None
    heights = [sum(plan[3]) + 0.6 for plan in plans.values()]
    fig = new_figure(sum(heights))
    for sub, name in zip(np.atleast_1d(fig.subfigures(len(plans), 1, height_ratios=heights)),
                         plans):
        build_hypothesis_forest(rows, name, layer_order, figure=sub)
    return fig


def _panel_order(units: pd.Series, behaviour: pd.Series, hypothesis: str) -> list[str]:
    """The units of the forest's panels: those of the behaviour rows first, then as the
    hypothesis declares its statistics (:data:`HYPOTHESES`), then in table order."""
    definition = HYPOTHESES.get(hypothesis)
    declared = list(dict.fromkeys(s.unit for s in definition.statistics)) if definition else []
    seen = list(dict.fromkeys(units))
    return sorted(seen, key=lambda unit: (not behaviour[units == unit].any(),
                                          declared.index(unit) if unit in declared
                                          else len(declared), seen.index(unit)))


def hypothesis_forest(rows: pd.DataFrame, hypothesis: str, layer_order=()) -> bytes | None:
    """Every statistic of one hypothesis (not its ``overall`` rows) as a forest plot (PNG).

    Parameters
    ----------
    rows : pandas.DataFrame
        Hypotheses-table rows of one model: the replicated rows (``model == "replicated"``)
        where the run has them, else one replicate's.
    hypothesis : str
        The hypothesis to draw.
    layer_order : list of str
        Layers in network order (the maps file's ``layers``); others follow in table order.

    Returns
    -------
    bytes or None
        One panel, with its own x axis, per ``unit`` (logits, mass shares, ratios, ...), the
        behaviour rows (method ``model``) first; one row per statistic, however many (the
        figure grows): the effect and its CI coloured by verdict, the null and the margin on
        the hypothesized side, the verdict and ``models_supported``/``models`` at the right.
        Ratios are drawn as the ratio itself (effect + null) on a log scale. A CI bound that is
        infinite (or, on a log scale, not positive) ends in an arrow at the axis' edge. None
        when the table has no statistic of ``hypothesis``.

    Raises
    ------
    ValueError
        The rows hold several models.
    """
    fig = build_hypothesis_forest(rows, hypothesis, layer_order)
    # its constrained layout holds every label; trimming the margins would draw it twice
    return None if fig is None else png_of(fig, tight=False)


def _group_label(method, layer) -> str:
    """The heading of a (method, layer)'s statistics."""
    method, layer = blank(method), blank(layer)
    return "the model's behaviour (logits)" if method == MODEL else \
        f"{method} / {layer}" if layer else f"{method} (pixels)"


def forest_layout(rows: pd.DataFrame) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The y of each statistic (top down) and ``(y, heading)`` of each (method, layer) group:
    a heading row above its statistics, so a row's label is its statistic alone."""
    groups = [_group_label(m, l) for m, l in zip(rows["method"], rows["layer"])]
    sizes = pd.Series(groups).value_counts()
    positions, headings, previous = [], [], None
    for group in groups:
        if group != previous and sizes[group] > 1:
            headings.append((len(positions) + len(headings), group))
        previous = group
        positions.append(len(positions) + len(headings))
    top = len(positions) + len(headings) - 1
    return top - np.array(positions, dtype=float), [(top - y, h) for y, h in headings]


def _statistic_labels(rows: pd.DataFrame) -> list[str]:
    """Each row's statistic, after its group's name where the group has no heading (a group
    of one statistic)."""
    groups = [_group_label(m, l) for m, l in zip(rows["method"], rows["layer"])]
    sizes = pd.Series(groups).value_counts()
    return [f"{group}: {statistic}" if sizes[group] == 1 else statistic
            for group, statistic in zip(groups, rows["statistic"])]


def _forest_height(rows: pd.DataFrame) -> int:
    """Rows of a forest panel: its statistics and the headings of their groups."""
    y, headings = forest_layout(rows)
    return len(y) + len(headings)


def _verdict_label(row) -> str:
    supported, models = (row.get(c) for c in ("models_supported", "models"))
    if models is None or pd.isna(models) or supported is None or pd.isna(supported):
        return str(row["verdict"])
    return f"{row['verdict']} {int(supported)}/{int(models)}"


def _forest_panel(ax, rows: pd.DataFrame, unit: str) -> None:
    """One unit's statistics: ``effect`` (or, for ratios, the ratio) with its CI per row."""
    ratio = unit in RATIO_UNITS
    null = pd.to_numeric(rows["null"], errors="coerce").fillna(0.0).to_numpy() \
        if "null" in rows.columns else np.zeros(len(rows))
    shift = null if ratio else 0.0  # ratios shown as themselves: 1 = no preference
    effect, low, high = (pd.to_numeric(rows[c], errors="coerce").to_numpy() + shift
                         for c in ("effect", "ci_low", "ci_high"))
    margin = pd.to_numeric(rows.get("margin", pd.Series(0.0, index=rows.index)),
                           errors="coerce").fillna(0.0).to_numpy()
    side = np.where(rows.get("direction", pd.Series("greater", index=rows.index)) == "less",
                    -1.0, 1.0)
    reference = null if ratio else np.zeros(len(rows))
    margins = reference + side * margin
    y, headings = forest_layout(rows)
    finite = np.concatenate([v[np.isfinite(v) & ((v > 0) if ratio else True)]
                             for v in (effect, low, high, reference, margins)])
    left, right = _limits(finite, ratio)
    if ratio:
        ax.set_xscale("log")
    ax.set_xlim(left, right)
    for yi, e, lo, hi, colour in zip(y, effect, low, high,
                                     rows["verdict"].map(VERDICT_COLOURS).fillna("black")):
        if np.isnan(e):
            ax.text(0.01, yi, "no estimate (see the note in hypotheses.csv)", va="center",
                    transform=ax.get_yaxis_transform(), color="#757575", fontsize=MIN_FONT_PT,
                    style="italic")
            continue
        ends = [_on_axis(v, upper, left, right, ratio) for upper, v in enumerate((lo, hi))]
        ax.plot([x for x, _ in ends], [yi, yi], color=colour, lw=2, solid_capstyle="butt")
        for x, beyond in ends:
            if beyond:  # the bound lies off the axis: an arrow at the edge says so
                ax.plot(x, yi, "<" if x == left else ">", color=colour, ms=6, clip_on=False)
        ax.plot(np.clip(e, left, right), yi, "o", color=colour, ms=5)
    nulls = np.unique(reference)
    if len(nulls) == 1:
        ax.axvline(nulls[0], color="black", lw=1)
    else:
        ax.vlines(reference, y - 0.45, y + 0.45, color="black", lw=1)
    shown = margin > 0
    ax.vlines(margins[shown], y[shown] - 0.45, y[shown] + 0.45, color="black", lw=1, ls="--")
    ax.set_yticks(np.concatenate([y, [h for h, _ in headings]]),
                  _statistic_labels(rows) + [text for _, text in headings], fontsize=MIN_FONT_PT)
    for label in ax.get_yticklabels()[len(y):]:
        label.set_fontweight("bold")
    ax.set_ylim(-0.7, len(y) + len(headings) - 0.3)
    at_right = ax.get_yaxis_transform()  # x in axes units, y in rows
    for yi, (_, row) in zip(y, rows.iterrows()):
        ax.text(1.01, yi, _verdict_label(row), transform=at_right, va="center",
                fontsize=MIN_FONT_PT, color=VERDICT_COLOURS.get(row["verdict"], "black"))
    ax.grid(axis="x", color="#dddddd", lw=0.6)
    ax.set_xlabel(f"{unit}: the ratio, log scale (null {', '.join(f'{n:g}' for n in nulls)})"
                  if ratio else f"effect in {unit or 'the unit of the statistic'}: estimate "
                  f"minus the null")
    ax.set_title(f"unit: {unit or '(none)'} ({len(rows)} statistics; right: verdict, models "
                 f"supporting / models)", fontsize=10, loc="left", y=1.0, pad=6)


def _on_axis(bound: float, upper: int, left: float, right: float,
             log: bool) -> tuple[float, bool]:
    """Where a CI bound is drawn and whether it lies beyond the axis (infinite, missing, or
    not positive on a log axis)."""
    if np.isnan(bound):
        return (right if upper else left), True
    if bound == -np.inf or (log and bound <= 0) or bound < left:
        return left, True
    if bound > right:
        return right, True
    return float(bound), False


def _limits(values: np.ndarray, log: bool) -> tuple[float, float]:
    """Axis limits holding ``values`` with 5% room (in log space for a log axis)."""
    if log:
        values = np.log10(values) if len(values) else np.array([0.0])
    low, high = (float(values.min()), float(values.max())) if len(values) else (-1.0, 1.0)
    pad = 0.05 * (high - low) or 0.5
    low, high = low - pad, high + pad
    return (10 ** low, 10 ** high) if log else (low, high)


# --------------------------------------------------------------------------------- behaviour
def build_behaviour_bars(behaviour: pd.DataFrame):
    """The behaviour figure (see :func:`behaviour_bars`), or None for an empty table."""
    missing = [c for c in BEHAVIOUR_COLUMNS if c not in behaviour.columns]
    if missing:
        raise ValueError(f"behaviour table lacks columns {', '.join(missing)}; expected the "
                         f"behaviour.csv of a densevis run")
    if behaviour.empty:
        return None
    labels = [f"{s}: {v}" if v else s for s, v in
              zip(behaviour["set"].map(blank), behaviour["variant"].map(blank))]
    rows = list(dict.fromkeys(labels))
    row_of = np.array([rows.index(label) for label in labels])
    models = (behaviour["model"].map(blank) if "model" in behaviour.columns
              else pd.Series("", index=behaviour.index))
    names = list(dict.fromkeys(models))
    step = 0.6 / max(len(names), 1)
    # the first model at the top of its row, as the legend lists them
    offset = np.array([((len(names) - 1) / 2 - names.index(m)) * step for m in models])
    y = len(rows) - 1 - row_of + offset
    fig = new_figure(ROW_IN * 1.3 * len(rows) + PANEL_IN + 0.4)
    axes = fig.subplots(1, 3, sharey=True)
    panels = (("positive_rate", "positive rate (Wilson 95% CI); bar: label rate",
               (-0.02, 1.02)),
              ("logit_margin", "logit margin: square minus no-square logit (95% CI)", None),
              ("accuracy", "accuracy (95% CI)", (-0.02, 1.02)))
    colours = {name: f"C{k % 10}" for k, name in enumerate(names)}
    for ax, (column, title, limits) in zip(axes, panels):
        value = pd.to_numeric(behaviour[column], errors="coerce").to_numpy()
        low, high = (pd.to_numeric(behaviour[f"{column}_ci_{s}"], errors="coerce").to_numpy()
                     for s in ("low", "high"))
        # CI ends a rounding error inside the estimate must not give negative error bars
        errors = np.nan_to_num(np.clip([value - low, high - value], 0, None))
        for name in names:
            mine = (models == name).to_numpy()
            ax.errorbar(value[mine], y[mine], xerr=errors[:, mine], fmt="o", ms=4, capsize=2,
                        color=colours[name], label=name or None)
        if column == "positive_rate":
            label_rate = pd.to_numeric(behaviour["label_rate"], errors="coerce").to_numpy()
            ax.plot(label_rate, y, "|", color="black", ms=12, mew=1.5)
        if column == "logit_margin":
            ax.axvline(0.0, color="black", lw=1)
        if limits:
            ax.set_xlim(*limits)
        ax.set_title(title, fontsize=10, y=1.0, pad=6)
        ax.grid(axis="x", color="#dddddd", lw=0.6)
        for boundary in np.arange(len(rows) - 1) + 0.5:
            ax.axhline(boundary, color="#eeeeee", lw=0.8)
    axes[0].set_yticks(np.arange(len(rows))[::-1], rows, fontsize=MIN_FONT_PT)
    axes[0].set_ylim(-0.6, len(rows) - 0.4)
    if len(names) > 1 or names[0]:
        fig.legend(handles=axes[0].get_legend_handles_labels()[0], title="model",
                   loc="outside right upper")
    return fig


def behaviour_bars(behaviour: pd.DataFrame) -> bytes | None:
    """What the model says on each probe set and edit (PNG), from the behaviour table.

    One row per set (``base``) and per edit of a set with variants (``pairs: sides``), one
    marker per model in it, offset within the row: the models are shown side by side rather
    than pooled, so their agreement is visible and no summary the table lacks is invented.
    Panels: positive rate (the label rate as a bar), logit margin (square minus no-square
    logit; 0 line) and accuracy, each with its 95% CI. None for an empty table.

    Raises
    ------
    ValueError
        A column of the behaviour table's contract is missing.
    """
    fig = build_behaviour_bars(behaviour)
    return None if fig is None else png_of(fig)
