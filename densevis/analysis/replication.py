"""The tests across replicate models of one statistic: :func:`replication` (the verdict every
model's own row supports: an intersection-union test, the contract columns of a ``replicated``
row) and :func:`replicate` (a t test over the models' effects: the ``mean_*`` columns).
:mod:`densevis.analysis.replicates` applies them to whole hypotheses tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from densevis.analysis.stats import DIRECTIONS, row_rule, verdict
from densevis.errors import DensevisError

#: The replication rule of a replicated row (``rule`` column, numbers filled in, followed by the
#: verdict rule of :func:`~densevis.analysis.stats.row_rule`).
REPLICATION_RULE = (
    "replication across {models} trained models: supported iff every model's own row is "
    "supported, rejected iff every model's own row is rejected, else inconclusive (an "
    "intersection-union test: a claim about these {models} models, each tested at its family's "
    "level; effect = the weakest model's effect, bounds = the hull of the models' bounds, "
    "p = the largest). Not a claim about the mean over trainings of the recipe: the mean_* "
    "columns hold that, a t test over models.")
#: The t test over models of the ``mean_*`` columns (``rule`` of :func:`replicate`).
MEAN_RULE = (
    "t test over {models} trained models, the model as the unit: effect = mean over "
    "models of each model's effect, an estimate of the mean effect over trainings of this "
    "recipe (assuming per-model effects vary normally around it; not a claim about other "
    "architectures or recipes); one-sided t test over models with {df} df, bounds mean -/+ "
    "t quantile x sd/sqrt({models})")


def replicate(effects, *, direction: str = "greater", margin: float = 0.0,
              alpha: float = 0.05, family_size: int = 1, null: float = 0.0) -> dict:
    """The across-model t test of per-model effects (see the module docstring).

    Parameters
    ----------
    effects : array-like
        Each replicate's ``effect`` (estimate - null); non-finite entries are dropped.
    direction : {"greater", "less"}
        The hypothesized side.
    margin : float
        Smallest meaningful effect (>= 0), in the hypothesized direction.
    alpha : float
        Family-wise level.
    family_size : int
        Testable rows of the family (Bonferroni).
    null : float
        The rows' null value (only stated in the rule: effects are already measured from it).

    Returns
    -------
    dict
        ``effect, ci_low, ci_high, p_value, p_adjusted, verdict, ci_level, family_size, n
        (= K), test, rule, note, models, between_model_sd, model_median``.

    Examples
    --------
    >>> row = replicate([0.8, 1.1, 0.9], margin=0.25)
    >>> row["verdict"], round(row["effect"], 3), row["test"], round(row["p_value"], 4)
    ('supported', 0.933, 't test over models (df 2)', 0.0044)
    >>> replicate([0.8], margin=0.25)["note"]
    'replication needs at least 2 models (K = 1)'
    """
    if direction not in DIRECTIONS:
        raise DensevisError(f"direction must be one of {DIRECTIONS} (got {direction!r})")
    e = np.asarray(effects, dtype=np.float64).ravel()
    e = e[np.isfinite(e)]
    k, m = len(e), max(int(family_size), 1)
    out = dict(effect=float(e.mean()) if k else np.nan, ci_low=np.nan, ci_high=np.nan,
               p_value=np.nan, p_adjusted=np.nan, verdict="inconclusive",
               ci_level=1 - 2 * alpha / m, family_size=m, n=k, models=k,
               test=f"t test over models (df {max(k - 1, 0)})",
               between_model_sd=float(e.std(ddof=1)) if k > 1 else np.nan,
               model_median=float(np.median(e)) if k else np.nan,
               rule=MEAN_RULE.format(models=k, df=max(k - 1, 0)) + "; "
               + row_rule(direction, margin, alpha, m, null), note="")
    if k < 2:
        out["note"] = f"replication needs at least 2 models (K = {k})"
        return out
    mean, se = out["effect"], out["between_model_sd"] / np.sqrt(k)
    sign = 1.0 if direction == "greater" else -1.0
    if se == 0:  # identical effects: no spread to scale by; the sign alone decides
        p, low, high = (0.0 if sign * mean > 0 else 1.0), mean, mean
    else:
        # Student t's upper tail and quantile (scipy.special: the same functions as
        # scipy.stats.t.sf / .ppf, without its per-call overhead over thousands of rows)
        p = float(special.stdtr(k - 1, -sign * mean / se))
        q = float(special.stdtrit(k - 1, 1 - alpha / m))
        low, high = mean - q * se, mean + q * se
    return {**out, "ci_low": low, "ci_high": high, "p_value": p,
            "p_adjusted": min(1.0, m * p), "verdict": verdict(mean, low, high, direction,
                                                              margin)}


def replication(own: dict, direction: str, models: int) -> dict:
    """The replication verdict of one statistic from each model's finished row (``own``:
    column -> the values of the K models, in model order): supported iff every model's row is
    supported, rejected iff every model's is rejected (an intersection-union test over the
    models: the claim "all K show it" is false only if some model's own verdict is, which
    happens at most alpha of the time), else inconclusive. Its effect is the weakest model's
    (in the hypothesized direction), its bounds the hull of the models' bounds and its p the
    largest, so that they agree with the verdict as a single model's row does.

    >>> own = {"effect": [0.4, 0.2, 0.3], "ci_low": [0.1, 0.05, 0.2], "ci_high": [0.7, 0.4, 0.5],
    ...        "p_value": [0.001, 0.01, 0.002], "p_adjusted": [0.002, 0.02, 0.004],
    ...        "verdict": ["supported"] * 3, "ci_level": [0.95] * 3, "family_size": [2] * 3}
    >>> row = replication(own, "greater", 3)
    >>> row["verdict"], row["effect"], row["ci_low"], row["p_adjusted"]
    ('supported', 0.2, 0.05, 0.02)
    """
    effect = np.asarray(own["effect"], dtype=np.float64)
    present = np.isfinite(effect)
    out = {"n": int(present.sum()), "test": f"intersection-union over {models} models",
           "ci_level": np.nan, "family_size": pd.NA, "effect": np.nan, "ci_low": np.nan,
           "ci_high": np.nan, "p_value": np.nan, "p_adjusted": np.nan,
           "verdict": "inconclusive", "note": ""}
    if models < 2:
        out["note"] = f"replication needs at least 2 models (K = {models})"
        return out
    if not present.all():
        return out
    sign = 1.0 if direction == "greater" else -1.0
    low = np.asarray(own["ci_low"], dtype=np.float64)
    high = np.asarray(own["ci_high"], dtype=np.float64)
    verdicts = list(own["verdict"])
    out.update(effect=float(effect[np.argmin(sign * effect)]), ci_low=float(low.min()),
               ci_high=float(high.max()), p_value=float(np.max(own["p_value"])),
               p_adjusted=float(np.max(own["p_adjusted"])),
               ci_level=float(np.min(own["ci_level"])),
               family_size=pd.NA if pd.isna(own["family_size"]).any()
               else int(np.max(own["family_size"])),
               verdict="supported" if all(v == "supported" for v in verdicts) else
               "rejected" if all(v == "rejected" for v in verdicts) else "inconclusive")
    return out
