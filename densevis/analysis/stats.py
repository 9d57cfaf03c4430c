"""Hypothesis tests on per-image statistics: one estimand per row, its test and the confidence
bounds that invert that same test, family-wise error control in both directions, verdicts.

One call, :func:`test_hypothesis`, tests a directional hypothesis about per-image values:

- one sample (``values_b=None``): is the **median** of the values above (below) ``null``?
  Sign test; the confidence bounds are order statistics of the values (the bounds that invert
  the sign test, distribution-free: valid for skewed values too);
- paired (``values_b`` given, ``paired=True``: the same images or scenes): the same for the
  **median of the differences** ``a - b``;
- two independent samples (``paired=False``): is the **Hodges-Lehmann shift** (the median of
  all pairwise differences ``a_i - b_j``) above (below) ``null``? Mann-Whitney test; the bounds
  are order statistics of the pairwise differences (the bounds that invert that test).

So a row's ``effect``, ``ci_low``/``ci_high`` and ``p_value`` all refer to one estimand, and
they agree by construction: the family-adjusted bound excludes the null exactly when
``p_adjusted <= alpha``.

Error control (:func:`adjust`, within each declared family of ``m`` tested rows, Bonferroni):

- ``p_adjusted = min(1, m * p_value)``;
- ``ci_low``/``ci_high`` are simultaneous bounds: each one-sided at confidence ``1 - alpha/m``
  (``ci_level`` = ``1 - 2 alpha/m`` two-sided);
- **supported**: the bound on the hypothesized side excludes 0 (equivalently
  ``p_adjusted <= alpha``) and the estimate is at least the row's ``effect_margin`` (the
  ``margin`` argument; significant and meaningful);
- **rejected**: the bound on the other side excludes every effect of at least it: a
  non-superiority test at ``alpha/m``, so within a family the chance that any row is falsely
  rejected is at most ``alpha`` too (an ``overall`` verdict, whose primaries share a family,
  is falsely rejected with probability at most ``alpha``);
- **inconclusive** otherwise (also with fewer than ``min_n`` values).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> row = adjust_one(test_hypothesis(rng.normal(1.0, 1.0, 40), margin=0.2))
>>> row["verdict"], row["p_adjusted"] < 0.001, row["ci_low"] > 0
('supported', True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

from densevis.errors import DensevisError

DIRECTIONS = ("greater", "less")
#: Exact Mann-Whitney null distribution up to this many pairs; a normal approximation (with
#: continuity correction) beyond, where it is accurate to far below any alpha used here.
EXACT_PAIRS = 250_000

#: The verdict rule, stated in every hypotheses table (``rule`` column gives it with numbers).
VERDICT_RULE = (
    "Within each family of m tested rows: supported when the one-sided (1 - alpha/m) "
    "confidence bound of the effect excludes 0 in the hypothesized direction (equivalently "
    "p_adjusted = min(1, m p) <= alpha) and the estimate is at least `effect_margin` (the "
    "smallest effect that matters); rejected when the bound on the other side excludes every "
    "effect of at least `effect_margin`; inconclusive otherwise "
    "(also when too few values). The effect, its bounds and p refer to one estimand: the "
    "median (sign test) for one sample or paired values, the Hodges-Lehmann shift "
    "(Mann-Whitney test) for two independent samples.")

ESTIMANDS = {"one-sample": "median", "paired": "median of differences",
             "two-sample": "Hodges-Lehmann shift"}
TEST_NAMES = {"one-sample": "sign test", "paired": "sign test", "two-sample": "Mann-Whitney"}


@dataclass(frozen=True)
class Evidence:
    """What a row's bounds and p-value are computed from: the sorted differences from the null
    (``values - null``, or every pairwise ``(a_i - null) - b_j``) and the null distribution of
    the number of positive differences (``cdf[k] = P(S <= k)``, symmetric about ``len/2``)."""

    differences: np.ndarray
    cdf: np.ndarray

    def p_value(self, direction: str) -> float:
        """One-sided p of "the estimand lies on ``direction`` of 0" (zeros count against it)."""
        d, total = self.differences, len(self.differences)
        hits = int((d > 0).sum() if direction == "greater" else (d < 0).sum())
        return 1.0 if hits == 0 else float(self.cdf[total - hits])  # P(S >= hits), symmetric

    def bounds(self, confidence: float) -> tuple[float, float]:
        """One-sided lower and upper bounds, each at ``confidence`` (order statistics)."""
        d = self.differences
        k = int(np.searchsorted(self.cdf, 1.0 - confidence, side="right"))  # cdf[k-1] <= q
        if k == 0:
            return -np.inf, np.inf
        return float(d[k - 1]), float(d[len(d) - k])


@lru_cache(maxsize=256)
def _sign_cdf(n: int) -> np.ndarray:
    return stats.binom.cdf(np.arange(n + 1), n, 0.5)


@lru_cache(maxsize=256)
def rank_sum_cdf(n1: int, n2: int) -> np.ndarray:
    """``P(U <= k)``, k = 0..n1*n2, of the Mann-Whitney count U under the null (no ties).

    Exact up to :data:`EXACT_PAIRS` pairs: the coefficients of the Gaussian binomial
    ``prod_i (1 - q^(n2+i)) / (1 - q^i)``, rescaled each step to stay in range.

    >>> rank_sum_cdf(2, 2).round(4).tolist()   # U = 0, 1, 2, 2, 3, 4 over the 6 orders
    [0.1667, 0.3333, 0.6667, 0.8333, 1.0]
    """
    n1, n2 = min(n1, n2), max(n1, n2)
    total = n1 * n2
    if total > EXACT_PAIRS:
        sd = np.sqrt(total * (n1 + n2 + 1) / 12.0)
        return stats.norm.cdf((np.arange(total + 1) + 0.5 - total / 2.0) / sd)
    counts = np.zeros(total + 1)
    counts[0] = 1.0
    for i in range(1, n1 + 1):
        shift = n2 + i
        counts[shift:] = counts[shift:] - counts[:total + 1 - shift]
        width = -(-(total + 1) // i) * i  # divide by (1 - q^i): a cumulative sum with stride i
        padded = np.zeros(width)
        padded[:total + 1] = counts
        counts = padded.reshape(-1, i).cumsum(axis=0).ravel()[:total + 1]
        counts /= counts.max()
    cdf = np.maximum.accumulate(np.clip(np.cumsum(counts) / counts.sum(), 0.0, 1.0))
    cdf[-1] = 1.0
    return cdf


def row_rule(direction: str, margin: float, alpha: float, family_size: int, null: float) -> str:
    level = 1 - alpha / family_size
    scale = f"effect = estimate - {null:g}; " if null else ""
    if direction == "greater":
        return (f"{scale}supported if p_adjusted <= {alpha:g} (ci_low > 0) and effect >= "
                f"{margin:g}; rejected if ci_high < {margin:g}; else inconclusive (one-sided "
                f"bounds at {level:.4g}, Bonferroni over a family of {family_size})")
    below = -margin if margin else 0.0  # not "-0"
    return (f"{scale}supported if p_adjusted <= {alpha:g} (ci_high < 0) and effect <= "
            f"{below:g}; rejected if ci_low > {below:g}; else inconclusive (one-sided "
            f"bounds at {level:.4g}, Bonferroni over a family of {family_size})")


def verdict(effect: float, ci_low: float, ci_high: float, direction: str,
            margin: float) -> str:
    """Verdict of one row from its estimate and its family-adjusted bounds (see the module
    docstring; ``rejected`` is checked first)."""
    if direction not in DIRECTIONS:
        raise DensevisError(f"direction must be one of {DIRECTIONS} (got {direction!r})")
    if any(np.isnan(v) for v in (effect, ci_low, ci_high)):
        return "inconclusive"
    sign = 1.0 if direction == "greater" else -1.0
    low, high = sorted((sign * ci_low, sign * ci_high))
    if high < margin:
        return "rejected"
    if low > 0 and sign * effect >= margin:
        return "supported"
    return "inconclusive"


def test_hypothesis(values_a, values_b=None, *, paired: bool = True, null: float = 0.0,
                    direction: str = "greater", margin: float = 0.0, alpha: float = 0.05,
                    min_n: int = 5) -> dict:
    """Test that ``values_a`` (minus ``values_b``) lie above or below ``null``.

    Parameters
    ----------
    values_a, values_b : array-like
        Per-image values; NaN entries (and, paired, their partners) are dropped.
    paired : bool
        ``values_b`` pairs element-wise with ``values_a`` (same images or scenes).
    null : float
        Value of the estimand under the null hypothesis (e.g. 1 for a ratio); ``effect`` is
        measured from it.
    direction : {"greater", "less"}
        The hypothesized side.
    margin : float
        Smallest meaningful effect (>= 0): effects certainly below it reject the hypothesis.
    alpha : float
        Family-wise level of the verdicts.
    min_n : int
        Fewer values (per sample) give NaN statistics and an inconclusive verdict.

    Returns
    -------
    dict
        ``n, effect, estimand, test, p_value, rank_biserial, direction, null, effect_margin``
        (= ``margin``: the hypotheses table's name, apart from the logit margin),
        ``alpha, paired, note`` and ``evidence`` (an :class:`Evidence`, or None when
        untestable). Bounds, ``p_adjusted`` and the verdict come from :func:`adjust` (a family)
        or :func:`adjust_one` (a row alone).
    """
    if direction not in DIRECTIONS:
        raise DensevisError(f"direction must be one of {DIRECTIONS} (got {direction!r})")
    if not margin >= 0:
        raise DensevisError(f"margin must be >= 0 (got {margin})")
    if not 0 < alpha < 1:
        raise DensevisError(f"alpha must be between 0 and 1 (got {alpha})")
    a = np.asarray(values_a, dtype=np.float64).ravel()
    design = "one-sample" if values_b is None else "paired" if paired else "two-sample"
    if design == "paired":
        b = np.asarray(values_b, dtype=np.float64).ravel()
        if len(b) != len(a):
            raise DensevisError(f"paired test needs equal lengths (got {len(a)} and {len(b)})")
        keep = ~np.isnan(a) & ~np.isnan(b)
        a = a[keep] - b[keep]
    else:
        a = a[~np.isnan(a)]
    b = None
    if design == "two-sample":
        b = np.asarray(values_b, dtype=np.float64).ravel()
        b = b[~np.isnan(b)]
    result = dict(n=int(len(a) if b is None else len(a) + len(b)), effect=np.nan,
                  estimand=ESTIMANDS[design], test=TEST_NAMES[design], p_value=np.nan,
                  rank_biserial=np.nan, direction=direction, null=float(null),
                  effect_margin=float(margin), alpha=float(alpha), paired=design == "paired",
                  note="", evidence=None)
    if min(len(a), len(b) if b is not None else len(a)) < min_n:
        result["note"] = f"too few values (n < {min_n})"
        return result
    if b is None:
        d = np.sort(a - null)
        cdf = _sign_cdf(len(d))
        ranks, signs = stats.rankdata(np.abs(d[d != 0])), np.sign(d[d != 0])
        result["rank_biserial"] = float((ranks * signs).sum() / ranks.sum()) if len(ranks) \
            else 0.0
    else:
        d = np.sort(((a - null)[:, None] - b[None, :]).ravel())
        cdf = rank_sum_cdf(len(a), len(b))
        wins = (d > 0).sum() + 0.5 * (d == 0).sum()
        result["rank_biserial"] = float(2 * wins / len(d) - 1)
    evidence = Evidence(d, cdf)
    result.update(effect=float(np.median(d)), evidence=evidence,
                  p_value=evidence.p_value(direction))
    return result


test_hypothesis.__test__ = False  # a library function, not a pytest test


def _finish(row, family_size: int) -> dict:
    """Bounds, adjusted p, verdict and rule of one row in a family of ``family_size``."""
    evidence, alpha = row["evidence"], row["alpha"]
    out = {"family_size": family_size, "ci_level": 1 - 2 * alpha / family_size,
           "rule": row_rule(row["direction"], row["effect_margin"], alpha, family_size,
                         row["null"])}
    if evidence is None:
        return {**out, "ci_low": np.nan, "ci_high": np.nan, "p_adjusted": np.nan,
                "verdict": "inconclusive"}
    low, high = evidence.bounds(1 - alpha / family_size)
    return {**out, "ci_low": low, "ci_high": high,
            "p_adjusted": min(1.0, family_size * row["p_value"]),
            "verdict": verdict(row["effect"], low, high, row["direction"],
                               row["effect_margin"])}


def adjust_one(row: dict) -> dict:
    """A row of :func:`test_hypothesis` finished on its own (a family of one), without its
    ``evidence``."""
    finished = {**row, **_finish(row, 1)}
    finished.pop("evidence")
    return finished


def adjust(table: pd.DataFrame, family: str | list[str] = "family") -> pd.DataFrame:
    """Finish every row of ``table`` (rows of :func:`test_hypothesis` with their ``evidence``)
    within its family: ``family_size`` (testable rows of the family), simultaneous bounds
    ``ci_low``/``ci_high`` at ``ci_level``, ``p_adjusted`` (Bonferroni), ``verdict`` and
    ``rule``. The ``evidence`` column is dropped."""
    if "evidence" not in table.columns:
        raise DensevisError("adjust needs rows of test_hypothesis with their evidence")
    table = table.copy()
    if table.empty:
        return table.drop(columns="evidence").assign(
            family_size=[], ci_level=[], ci_low=[], ci_high=[], p_adjusted=[], verdict=[],
            rule=[], correction=[])
    testable = table["evidence"].map(lambda e: e is not None)
    sizes = testable.groupby([table[c] for c in np.atleast_1d(family)], dropna=False) \
        .transform("sum").clip(lower=1).astype(int)
    finished = pd.DataFrame([_finish(row, int(size)) for row, size in
                             zip(table.to_dict("records"), sizes)], index=table.index)
    for column in finished.columns:
        table[column] = finished[column]
    table["correction"] = "bonferroni"
    return table.drop(columns="evidence")


def combine_verdicts(verdicts) -> str:
    """Intersection-union verdict of a hypothesis tested by several statistics.

    Supported when every part is supported, rejected when any part is rejected, else
    inconclusive (an empty list is inconclusive).

    >>> combine_verdicts(["supported", "supported"]), combine_verdicts(["supported", "rejected"])
    ('supported', 'rejected')
    """
    verdicts = list(verdicts)
    if not verdicts:
        return "inconclusive"
    if "rejected" in verdicts:
        return "rejected"
    return "supported" if all(v == "supported" for v in verdicts) else "inconclusive"
