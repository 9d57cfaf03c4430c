"""The behaviour table of a run: per probe set (and ``pairs`` edit) what the model does.

(The hypotheses of a run are evaluated by :func:`densevis.analysis.hypotheses.evaluate`, as
``densevis analyze`` and the pytest plugin evaluate them.)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from densevis.analysis.hypothesis_registry import MODEL
from probes import ProbeSet


# --------------------------------------------------------------------------------- behaviour
def wilson(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion.

    >>> tuple(round(float(v), 3) for v in wilson(5, 10))
    (0.237, 0.763)
    """
    if n == 0:
        return float("nan"), float("nan")
    z = stats.norm.ppf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


#: The behaviour table's columns (``variant`` is "" on a whole set's row).
BEHAVIOUR_COLUMNS = ["set", "variant", "n", "label_rate", "positive_rate",
                     "positive_rate_ci_low", "positive_rate_ci_high", "logit_margin",
                     "logit_margin_ci_low", "logit_margin_ci_high", "accuracy", "accuracy_ci_low",
                     "accuracy_ci_high"]


def _behaviour_row(name: str, variant: str, part: pd.DataFrame) -> dict:
    n = len(part)
    positive = part["predicted_positive"].to_numpy(dtype=float)
    margin = part["logit_margin"].to_numpy(dtype=float)
    correct = (positive == part["label"].to_numpy(dtype=float)).astype(float)
    half = stats.t.ppf(0.975, max(n - 1, 1)) * margin.std(ddof=1) / np.sqrt(n) if n > 1 \
        else float("nan")
    low, high = wilson(positive.sum(), n)
    acc_low, acc_high = wilson(correct.sum(), n)
    return {"set": name, "variant": variant, "n": n, "label_rate": float(part["label"].mean()),
            "positive_rate": positive.mean(), "positive_rate_ci_low": low,
            "positive_rate_ci_high": high, "logit_margin": margin.mean(),
            "logit_margin_ci_low": margin.mean() - half,
            "logit_margin_ci_high": margin.mean() + half,
            "accuracy": correct.mean(), "accuracy_ci_low": acc_low,
            "accuracy_ci_high": acc_high}


def behaviour_table(metrics: pd.DataFrame, data: dict, sets) -> pd.DataFrame:
    """Per probe set and, on sets with variants (``pairs``), per edit: n, label rate, positive
    rate, logit margin, accuracy and their 95% CIs (columns :data:`BEHAVIOUR_COLUMNS`).

    ``logit_margin`` is the metrics' (positive logit minus negative logit), averaged.
    ``variant`` names the edit, and is "" on the row of the whole set. Positive rates and
    accuracies have Wilson intervals, logit margins t intervals of the mean.
    """
    model = metrics[(metrics["method"] == MODEL) & metrics["metric"].isin(
        ["logit_margin", "predicted_positive", "label"])]
    wide = model.pivot_table(index=["set", "image"], columns="metric", values="value")
    rows = []
    for name in sets:
        if name not in wide.index.get_level_values(0):
            continue
        part = wide.loc[name]
        rows.append(_behaviour_row(name, "", part))
        with ProbeSet(data[name]) as probe:
            if probe.has_variants:
                variants = probe.variant(slice(None))[part.index.to_numpy()]
                for variant in probe.variants:
                    rows.append(_behaviour_row(name, variant, part[variants == variant]))
    table = pd.DataFrame(rows, columns=BEHAVIOUR_COLUMNS)
    table["n"] = table["n"].astype(np.int64)
    return table
