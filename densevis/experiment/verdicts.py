"""The spec's hypotheses evaluated on a run's tables, and the behaviour table.

Built-in hypotheses come from :mod:`densevis.analysis.hypotheses`; a custom one tests a metric
on a probe set against a threshold, per method and layer. Rows of one declared ``family`` are
Holm-corrected together, the model's behaviour (method ``model``) apart from the maps'
(``<family>/behaviour`` and ``<family>/maps``); each (hypothesis, method, layer) also gets an
``overall`` row (supported iff all its primary statistics are, rejected if any is).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from densevis.analysis import hypotheses as builtin
from densevis.analysis.stats import adjust, test_hypothesis
from densevis.errors import DensevisError

BUILTIN = {"localizes_square": builtin.localizes_square, "edge_detector": builtin.edge_detector,
           "small_object_detector": builtin.small_object_detector}
RANDOMIZATION = builtin.RANDOMIZATION


def _custom(metrics: pd.DataFrame, hypothesis, seed: int) -> pd.DataFrame:
    rows = metrics[(metrics["set"] == hypothesis.set) & (metrics["metric"] == hypothesis.statistic)]
    if rows.empty:
        raise DensevisError(f"hypothesis {hypothesis.name!r}: no values of metric "
                            f"{hypothesis.statistic!r} on set {hypothesis.set!r} in this run")
    null = hypothesis.threshold or 0.0
    sign = ">" if hypothesis.direction == "greater" else "<"
    out = []
    for (method, layer), group in rows.groupby(["method", "layer"], sort=True):
        values = group.groupby("image")["value"].first().to_numpy(dtype=float)
        result = test_hypothesis(values, null=null, direction=hypothesis.direction,
                                 margin=hypothesis.margin or 0.0, alpha=hypothesis.alpha,
                                 seed=seed)
        out.append({"hypothesis": hypothesis.name, "method": method, "layer": layer,
                    "statistic": f"{hypothesis.statistic} {sign} {null:g}",
                    "role": "primary", "sets": hypothesis.set, **result})
    return pd.DataFrame(out, columns=builtin.COLUMNS)


def _rows_of(hypothesis, metrics: pd.DataFrame, similarity: pd.DataFrame,
             seed: int) -> pd.DataFrame:
    if hypothesis.name == RANDOMIZATION:
        if similarity.empty:
            return pd.DataFrame(columns=builtin.COLUMNS)
        threshold = 0.5 if hypothesis.threshold is None else hypothesis.threshold
        return builtin.passes_randomization(similarity, metric=hypothesis.statistic or
                                            "spearman_abs", threshold=threshold,
                                            alpha=hypothesis.alpha, seed=seed)
    if hypothesis.name in BUILTIN:
        rows = BUILTIN[hypothesis.name](metrics, alpha=hypothesis.alpha, seed=seed)
        if hypothesis.statistic:
            rows = rows[rows["statistic"].str.startswith(hypothesis.statistic)]
        return rows
    return _custom(metrics, hypothesis, seed)


def evaluate_hypotheses(spec, metrics: pd.DataFrame, similarity: pd.DataFrame) -> pd.DataFrame:
    """The hypotheses table of a run (tables contract, plus test details and the rule)."""
    parts = []
    for hypothesis in spec.hypotheses:
        rows = _rows_of(hypothesis, metrics, similarity, spec.analysis.seed)
        if hypothesis.methods:
            rows = rows[rows["method"].isin(hypothesis.methods)]
        if hypothesis.layers:
            rows = rows[rows["layer"].isin(hypothesis.layers) | (rows["layer"] == "")]
        if hypothesis.margin is not None:
            rows = rows.assign(margin=hypothesis.margin)
        # what the model does and what its maps show are separate questions: separate families
        family = hypothesis.family or hypothesis.name
        parts.append(rows.assign(family=[f"{family}/{'behaviour' if m == builtin.MODEL else 'maps'}"
                                         for m in rows["method"]]))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=builtin.COLUMNS + ["correction"])
    table = adjust(pd.concat(parts, ignore_index=True), family="family", method="holm")
    return pd.concat([builtin.overall(table), table], ignore_index=True)


# --------------------------------------------------------------------------------- behaviour
def wilson(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    >>> tuple(round(v, 3) for v in wilson(5, 10))
    (0.237, 0.763)
    """
    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _behaviour_row(name: str, part: pd.DataFrame) -> dict:
    n = len(part)
    positive = part["predicted_positive"].to_numpy(dtype=float)
    margin = part["logit_margin"].to_numpy(dtype=float)
    correct = (positive == part["label"].to_numpy(dtype=float)).astype(float)
    half = stats.t.ppf(0.975, max(n - 1, 1)) * margin.std(ddof=1) / np.sqrt(n) if n > 1 \
        else float("nan")
    low, high = wilson(positive.sum(), n)
    acc_low, acc_high = wilson(correct.sum(), n)
    return {"set": name, "n": n, "label_rate": float(part["label"].mean()),
            "positive_rate": positive.mean(), "positive_rate_ci_low": low,
            "positive_rate_ci_high": high, "margin": margin.mean(),
            "margin_ci_low": margin.mean() - half, "margin_ci_high": margin.mean() + half,
            "accuracy": correct.mean(), "accuracy_ci_low": acc_low,
            "accuracy_ci_high": acc_high}


def behaviour_table(metrics: pd.DataFrame, data: dict, sets) -> pd.DataFrame:
    """Per probe set (and per ``pairs`` variant): n, positive rate, logit margin, accuracy, CIs.

    Positive rates and accuracies have Wilson intervals, margins t intervals of the mean.
    """
    from probes import ProbeSet

    model = metrics[(metrics["method"] == builtin.MODEL) & metrics["metric"].isin(
        ["logit_margin", "predicted_positive", "label"])]
    wide = model.pivot_table(index=["set", "image"], columns="metric", values="value")
    rows = []
    for name in sets:
        if name not in wide.index.get_level_values(0):
            continue
        part = wide.loc[name]
        rows.append(_behaviour_row(name, part))
        with ProbeSet(data[name]) as probe:
            if probe.has_variants:
                variants = probe.variant(slice(None))[part.index.to_numpy()]
                for variant in probe.variants:
                    rows.append(_behaviour_row(f"{name}/{variant}", part[variants == variant]))
    return pd.DataFrame(rows)
