"""Hypothesis tests on per-image statistics: tests, bootstrap CIs, effect sizes, corrections and
verdicts.

One call, :func:`test_hypothesis`, tests a directional hypothesis about per-image values:

- one sample (``values_b=None``): are the values above (below) ``null``?
- paired (``values_b`` given, ``paired=True``: the same images or scenes): is ``a - b`` above
  (below) ``null``? Wilcoxon signed-rank test, or a seeded sign-flip permutation of its statistic;
- two independent samples (``paired=False``): Mann-Whitney U, or a seeded label permutation.

The effect is the median difference (``median(a - b)``, or ``median(a) - median(b)`` unpaired)
minus ``null``, so 0 means "no effect"; its 95% CI is a seeded percentile bootstrap. The
rank-biserial correlation is the standardized effect (-1..1). p-values are one-sided in the
hypothesized direction; :func:`adjust` corrects them across a declared family (Holm by default,
Benjamini-Hochberg for exploratory tables) and sets the verdict by :data:`VERDICT_RULE`.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> result = test_hypothesis(rng.normal(1.0, 1.0, 40), direction="greater", margin=0.2)
>>> result["verdict"], result["p_value"] < 0.001, result["ci_low"] > 0
('supported', True, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from densevis.errors import DensevisError

DIRECTIONS = ("greater", "less")
TESTS = ("wilcoxon", "permutation")
CORRECTIONS = ("holm", "bh")
VERDICTS = ("supported", "rejected", "inconclusive")

#: The verdict rule, stated in every hypotheses table (``rule`` column gives it with numbers).
VERDICT_RULE = (
    "supported: corrected one-sided p < alpha, the 95% bootstrap CI of the effect excludes 0 in "
    "the hypothesized direction and the effect is at least `margin` (significant and "
    "meaningful); rejected: the CI excludes every effect of at least `margin` in the "
    "hypothesized direction (no meaningful effect, or one in the opposite direction); "
    "inconclusive: otherwise (also when too few values)")


def verdict(p_adjusted: float, effect: float, ci_low: float, ci_high: float, direction: str,
            margin: float, alpha: float) -> str:
    """Verdict of one test by :data:`VERDICT_RULE` (``rejected`` is checked first)."""
    if direction not in DIRECTIONS:
        raise DensevisError(f"direction must be one of {DIRECTIONS} (got {direction!r})")
    if any(np.isnan(v) for v in (p_adjusted, effect, ci_low, ci_high)):
        return "inconclusive"
    sign = 1.0 if direction == "greater" else -1.0
    low, high = sorted((sign * ci_low, sign * ci_high))
    if high < margin:
        return "rejected"
    if p_adjusted < alpha and low > 0 and sign * effect >= margin:
        return "supported"
    return "inconclusive"


def rule_text(direction: str, margin: float, alpha: float) -> str:
    """The verdict rule of one row with its numbers, e.g. for the ``rule`` column."""
    if direction == "greater":
        return (f"supported if p_adjusted < {alpha:g}, ci_low > 0 and effect >= {margin:g}; "
                f"rejected if ci_high < {margin:g}; else inconclusive")
    return (f"supported if p_adjusted < {alpha:g}, ci_high < 0 and effect <= {-margin:g}; "
            f"rejected if ci_low > {-margin:g}; else inconclusive")


def _median_ci(samples: list[np.ndarray], combine, n_boot: int, level: float,
               rng: np.random.Generator) -> tuple[float, float]:
    """Percentile bootstrap CI of ``combine(medians of resampled samples)``, in memory chunks."""
    draws = []
    chunk = max(1, 4_000_000 // max(len(s) for s in samples))
    for start in range(0, n_boot, chunk):
        count = min(chunk, n_boot - start)
        medians = [np.median(s[rng.integers(0, len(s), (count, len(s)))], axis=1) for s in samples]
        draws.append(combine(*medians))
    draws = np.concatenate(draws)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail], method="inverted_cdf")
    return float(low), float(high)


def _signed_rank(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks of ``|d|`` and signs of the non-zero differences."""
    d = d[d != 0]
    return stats.rankdata(np.abs(d)), np.sign(d)


def _one_sample(d, direction, test, n_perm, rng) -> tuple[float, float]:
    """(one-sided p, rank-biserial) for differences ``d``."""
    ranks, signs = _signed_rank(d)
    if len(ranks) == 0:
        return 1.0, 0.0
    t_plus, total = ranks[signs > 0].sum(), ranks.sum()
    biserial = float((2 * t_plus - total) / total)
    if test == "wilcoxon":
        p = stats.wilcoxon(d, alternative=direction, zero_method="wilcox").pvalue
    else:
        flips = rng.integers(0, 2, (n_perm, len(ranks)), dtype=np.int8).astype(bool)
        null = np.where(flips, ranks, 0.0).sum(axis=1)
        extreme = null >= t_plus if direction == "greater" else null <= t_plus
        p = (1 + extreme.sum()) / (n_perm + 1)
    return float(p), biserial


def _two_sample(a, b, null, direction, test, n_perm, rng) -> tuple[float, float]:
    """(one-sided p, rank-biserial) for independent samples (``a - null`` vs ``b``)."""
    shifted = a - null
    rank_sum = stats.mannwhitneyu(shifted, b, alternative=direction)
    biserial = float(2 * rank_sum.statistic / (len(a) * len(b)) - 1)
    if test == "wilcoxon":
        return float(rank_sum.pvalue), biserial
    ranks = stats.rankdata(np.concatenate([shifted, b]))
    observed = ranks[:len(a)].sum()
    labels = np.argsort(rng.random((n_perm, len(ranks))), axis=1)[:, :len(a)]
    null_sums = ranks[labels].sum(axis=1)
    extreme = null_sums >= observed if direction == "greater" else null_sums <= observed
    return float((1 + extreme.sum()) / (n_perm + 1)), biserial


def test_hypothesis(values_a, values_b=None, *, paired: bool = True, null: float = 0.0,
                    direction: str = "greater", margin: float = 0.0, alpha: float = 0.05,
                    test: str = "wilcoxon", n_boot: int = 2000, n_perm: int = 10000,
                    level: float = 0.95, seed: int = 0, min_n: int = 5) -> dict:
    """Test that ``values_a`` (minus ``values_b``) lie above or below ``null``.

    Parameters
    ----------
    values_a, values_b : array-like
        Per-image values; NaN entries (and, paired, their partners) are dropped.
    paired : bool
        ``values_b`` pairs element-wise with ``values_a`` (same images or scenes).
    null : float
        Effect under the null hypothesis (e.g. 1 for a ratio).
    direction : {"greater", "less"}
        The hypothesized side.
    margin : float
        Smallest meaningful effect (>= 0): effects certainly below it reject the hypothesis.
    alpha : float
        Level of the verdict (on the corrected p-value after :func:`adjust`).
    test : {"wilcoxon", "permutation"}
        Rank test (signed-rank / Mann-Whitney) or its seeded permutation version.
    n_boot, n_perm, level, seed : bootstrap and permutation settings.
    min_n : int
        Fewer values give NaN statistics and an inconclusive verdict.

    Returns
    -------
    dict with ``n, effect, ci_low, ci_high, p_value, p_adjusted, rank_biserial, verdict, test,
    direction, null, margin, alpha, paired, rule, note``.
    """
    if direction not in DIRECTIONS:
        raise DensevisError(f"direction must be one of {DIRECTIONS} (got {direction!r})")
    if test not in TESTS:
        raise DensevisError(f"test must be one of {TESTS} (got {test!r})")
    if margin < 0:
        raise DensevisError(f"margin must be >= 0 (got {margin})")
    rng = np.random.default_rng(seed)
    a = np.asarray(values_a, dtype=np.float64).ravel()
    two_sample = values_b is not None and not paired
    if values_b is not None and paired:
        b = np.asarray(values_b, dtype=np.float64).ravel()
        if len(b) != len(a):
            raise DensevisError(f"paired test needs equal lengths (got {len(a)} and {len(b)})")
        keep = ~np.isnan(a) & ~np.isnan(b)
        a = a[keep] - b[keep]
    else:
        a = a[~np.isnan(a)]
    b = None
    if two_sample:
        b = np.asarray(values_b, dtype=np.float64).ravel()
        b = b[~np.isnan(b)]
    n = len(a) if b is None else min(len(a), len(b))
    result = dict(n=int(len(a) if b is None else len(a) + len(b)), effect=np.nan, ci_low=np.nan,
                  ci_high=np.nan, p_value=np.nan, rank_biserial=np.nan,
                  test=("signed-rank " if b is None else "rank-sum ") + test,
                  direction=direction, null=float(null), margin=float(margin), alpha=float(alpha),
                  paired=bool(values_b is not None and paired), note="")
    if n < min_n:
        result["note"] = f"too few values (n < {min_n})"
    elif b is None:
        d = a - null
        result["effect"] = float(np.median(d))
        result["ci_low"], result["ci_high"] = _median_ci([d], lambda m: m, n_boot, level, rng)
        result["p_value"], result["rank_biserial"] = _one_sample(d, direction, test, n_perm, rng)
    else:
        result["effect"] = float(np.median(a) - np.median(b) - null)
        result["ci_low"], result["ci_high"] = _median_ci(
            [a, b], lambda ma, mb: ma - mb - null, n_boot, level, rng)
        result["p_value"], result["rank_biserial"] = _two_sample(a, b, null, direction, test,
                                                                 n_perm, rng)
    result["p_adjusted"] = result["p_value"]
    result["verdict"] = verdict(result["p_value"], result["effect"], result["ci_low"],
                                result["ci_high"], direction, margin, alpha)
    result["rule"] = rule_text(direction, margin, alpha)
    return result


test_hypothesis.__test__ = False  # a library function, not a pytest test


def holm(p_values) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries stay NaN and do not count).

    >>> holm([0.01, 0.04, 0.03]).round(2).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


def benjamini_hochberg(p_values) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    finite = ~np.isnan(p)
    if finite.any():
        out[finite] = stats.false_discovery_control(p[finite], method="bh")
    return out


def adjust(table: pd.DataFrame, family: str | list[str] = "family",
           method: str = "holm") -> pd.DataFrame:
    """Correct ``p_value`` within each family and recompute ``verdict`` and ``rule``.

    ``table`` has the columns :func:`test_hypothesis` returns; ``family`` names the column(s)
    whose values declare the families (each group is corrected on its own). ``method`` is
    ``holm`` (declared families) or ``bh`` (exploratory tables).
    """
    if method not in CORRECTIONS:
        raise DensevisError(f"correction must be one of {CORRECTIONS} (got {method!r})")
    table = table.copy()
    if table.empty:
        return table.assign(p_adjusted=[], correction=[])
    correct = holm if method == "holm" else benjamini_hochberg
    table["p_adjusted"] = table.groupby(family, dropna=False)["p_value"].transform(
        lambda p: correct(p.to_numpy()))
    table["correction"] = method
    table["verdict"] = [verdict(r.p_adjusted, r.effect, r.ci_low, r.ci_high, r.direction,
                                r.margin, r.alpha) for r in table.itertuples()]
    table["rule"] = [rule_text(r.direction, r.margin, r.alpha) for r in table.itertuples()]
    return table


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
