"""The report's plots, each a plain function of tidy tables returning PNG bytes.

Tables follow the contracts: ``hypotheses`` (hypothesis, method, layer, statistic, effect,
ci_low, ci_high, verdict, ...), ``behaviour`` (set, variant, n, positive_rate and logit_margin
with CIs), ``summary`` (set, method, layer, metric, mean, ci_low, ci_high, ...) and the sanity
similarity table (test, step, step_index, method, layer, image, metric, value).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from densevis.report.html import png_of

VERDICT_COLOURS = {"supported": "#2e7d32", "rejected": "#c62828", "inconclusive": "#9e9e9e"}
BASELINES = ("random", "sobel", "center")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def hypotheses_forest(table: pd.DataFrame, max_rows: int = 60) -> bytes | None:
    """Effect and 95% CI of each test (not the ``overall`` rows), coloured by verdict."""
    rows = table[table["statistic"] != "overall"].dropna(subset=["effect"]).head(max_rows)
    if rows.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(rows) + 1.2))
    y = np.arange(len(rows))[::-1]
    for yi, (_, row) in zip(y, rows.iterrows()):
        colour = VERDICT_COLOURS.get(row["verdict"], "black")
        ax.plot([row["ci_low"], row["ci_high"]], [yi, yi], color=colour, lw=2)
        ax.plot(row["effect"], yi, "o", color=colour, ms=4)
    labels = [" / ".join(str(v) for v in (r.hypothesis, r.method, r.layer, r.statistic)
                         if isinstance(v, str) and v) for r in rows.itertuples()]
    ax.set_yticks(y, labels, fontsize=6)
    ax.axvline(0, color="black", lw=0.5)
    ax.set_xlabel("effect (median difference from the null), 95% CI")
    ax.set_title("Hypotheses: green supported, red rejected, grey inconclusive", fontsize=9)
    return png_of(fig)


def behaviour_bars(behaviour: pd.DataFrame) -> bytes | None:
    """Positive rate and mean logit margin per probe set, with 95% CIs."""
    if behaviour.empty:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(behaviour) + 1.5))
    y = np.arange(len(behaviour))[::-1]
    for ax, column, label in ((axes[0], "positive_rate", "positive rate"),
                              (axes[1], "logit_margin",
                               "logit margin (positive - negative)")):
        low, high = behaviour[f"{column}_ci_low"], behaviour[f"{column}_ci_high"]
        errors = np.clip([behaviour[column] - low, high - behaviour[column]], 0, None)  # rounding
        ax.errorbar(behaviour[column], y, xerr=np.nan_to_num(errors), fmt="o", color="#1565c0",
                    capsize=3)
        labels = behaviour["set"].astype(str) + behaviour["variant"].fillna("").astype(str) \
            .map(lambda variant: f"/{variant}" if variant else "")
        if "model" in behaviour.columns:
            labels = labels + " (" + behaviour["model"].astype(str) + ")"
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel(label)
        ax.axvline(0.5 if column == "positive_rate" else 0.0, color="black", lw=0.5)
    return png_of(fig)


def localization_by_layer(summary: pd.DataFrame, metric: str = "mass_minus_area",
                          set_name: str = "base") -> bytes | None:
    """``metric`` per method across layers (pixel methods as one point) against the null
    baselines (horizontal bands: mean and 95% CI)."""
    rows = summary[(summary["set"] == set_name) & (summary["metric"] == metric)]
    if rows.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    layered = rows[(rows["layer"].fillna("") != "") & ~rows["method"].isin(BASELINES)]
    layers = list(dict.fromkeys(layered["layer"]))
    positions = {layer: k for k, layer in enumerate(layers)}
    for method, group in layered.groupby("method", sort=True):
        x = [positions[layer] for layer in group["layer"]]
        ax.errorbar(x, group["mean"], yerr=[group["mean"] - group["ci_low"],
                                            group["ci_high"] - group["mean"]],
                    marker="o", ms=3, capsize=2, label=method)
    pixel = rows[(rows["layer"].fillna("") == "") & ~rows["method"].isin(BASELINES)
                 & (rows["method"] != "model")]
    right = len(layers)
    for k, row in enumerate(pixel.itertuples()):
        ax.errorbar([right + k], [row.mean], yerr=[[row.mean - row.ci_low],
                                                  [row.ci_high - row.mean]],
                    marker="s", capsize=2, label=row.method)
    ticks = layers + list(pixel["method"])
    ax.set_xticks(range(len(ticks)), ticks, rotation=45, ha="right", fontsize=7)
    for (name, row), colour in zip(rows[rows["method"].isin(BASELINES)].set_index("method")
                                   .iterrows(), ("#999999", "#cc8844", "#88aa88")):
        ax.axhspan(row["ci_low"], row["ci_high"], color=colour, alpha=0.25)
        ax.axhline(row["mean"], color=colour, lw=1, ls="--", label=f"baseline: {name}")
    ax.set_ylabel(f"{metric} (mean, 95% CI)")
    ax.set_title(f"Localization of the square on '{set_name}' by method and layer", fontsize=9)
    ax.legend(fontsize=6, ncol=3)
    return png_of(fig)


def sanity_curves(similarity: pd.DataFrame, metric: str = "spearman_abs") -> bytes | None:
    """Median similarity to the original maps against the randomization step, per method."""
    rows = similarity[(similarity["metric"] == metric) & (similarity["test"] == "cascading")]
    if rows.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4))
    steps = rows.groupby("step_index")["step"].first()
    for (method, layer), group in rows.groupby(["method", "layer"], sort=True):
        curve = group.groupby("step_index")["value"].agg(["median", lambda v: v.quantile(0.25),
                                                          lambda v: v.quantile(0.75)])
        curve.columns = ["median", "q1", "q3"]
        label = f"{method}/{layer}" if isinstance(layer, str) and layer else method
        ax.plot(curve.index, curve["median"], marker="o", ms=3, label=label)
        ax.fill_between(curve.index, curve["q1"], curve["q3"], alpha=0.15)
    ax.set_xticks(steps.index, [str(s).replace("features.", "") for s in steps], rotation=45,
                  ha="right", fontsize=7)
    ax.set_ylim(-0.2, 1.05)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("cascading randomization: layers re-initialized, top down (cumulative)")
    ax.set_ylabel(f"{metric} to the original maps (median, IQR)")
    ax.legend(fontsize=6, ncol=2)
    return png_of(fig)
