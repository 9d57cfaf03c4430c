"""Statistics: the estimand, its test and its bounds agree; family-wise error control of both
verdicts (calibrated by simulation on symmetric and skewed nulls, at the statistic and the
overall level); power; and the verdict rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from densevis.analysis.hypotheses import (HYPOTHESES, RANDOMIZATION, HypothesisSpec,
                                          Statistic, hypothesis, overall)
from densevis.analysis.stats import (Evidence, adjust, adjust_one, combine_verdicts,
                                     rank_sum_cdf, test_hypothesis as hypothesis_test, verdict)
from densevis.errors import DensevisError

ALPHA = 0.05
REPS = 600
# one-sided binomial bound: a true rate of 0.05 exceeds it with probability < 0.001
RATE_BOUND = ALPHA + 3.1 * np.sqrt(ALPHA * (1 - ALPHA) / REPS)
MARGIN = 0.5


def _skewed(rng, n, median=0.0):
    """Log-normal values shifted to the given median: a long right tail (mean > median), the
    case where a signed-rank test of "median 0" rejects far too often."""
    return rng.lognormal(0.0, 1.0, n) - 1.0 + median


NULLS = {  # (values_a, values_b, paired) with a true effect of exactly 0
    "symmetric one-sample": lambda rng: (rng.standard_t(3, 30), None, True),
    "skewed one-sample n=30": lambda rng: (_skewed(rng, 30), None, True),
    "skewed one-sample n=64": lambda rng: (_skewed(rng, 64), None, True),
    "skewed paired": lambda rng: (_skewed(rng, 40) + 5.0, np.full(40, 5.0), True),
    "two-sample": lambda rng: (rng.exponential(1, 25), rng.exponential(1, 35), False),
}


def _verdicts(draw, family_size=1, **options):
    """Verdicts of ``REPS`` draws, each finished in a family of ``family_size`` rows."""
    rng = np.random.default_rng(123)
    rows = []
    for rep in range(REPS):
        a, b, paired = draw(rng)
        rows += [dict(hypothesis_test(a, b, paired=paired, **options), family=rep)] * family_size
    return adjust(pd.DataFrame(rows))["verdict"].to_numpy()[::family_size]


@pytest.mark.parametrize("null", list(NULLS))
def test_supported_is_rare_when_there_is_no_effect(null):
    found = _verdicts(NULLS[null], margin=0.0)
    assert (found == "supported").mean() <= RATE_BOUND


@pytest.mark.parametrize("null", list(NULLS))
def test_rejected_is_rare_when_the_effect_is_exactly_the_margin(null):
    def at_margin(rng):
        a, b, paired = NULLS[null](rng)
        return a + MARGIN, b, paired
    found = _verdicts(at_margin, margin=MARGIN)
    assert (found == "rejected").mean() <= RATE_BOUND


@pytest.fixture(scope="module")
def five_primaries():
    """A registered hypothesis with five primary map statistics (its rows are made here)."""
    hypothesis("five_primaries", "Five consequences at once?",
               [Statistic(f"s{k}", f"s{k} > 0", "mass share") for k in range(5)])(print)
    yield HYPOTHESES["five_primaries"]
    del HYPOTHESES["five_primaries"]


def _overall_of(definition, draws: list[list[np.ndarray]]) -> np.ndarray:
    """The overall verdict of each draw's primaries (one family and one method per draw, every
    method passing the randomization gate)."""
    rows, gate = [], []
    for rep, primaries in enumerate(draws):
        rows += [dict(hypothesis_test(values, margin=MARGIN), hypothesis=definition.name,
                      method=f"m{rep}", layer="", statistic=f"s{k} > 0", statistic_key=f"s{k}",
                      role="primary", sets="base", unit="mass share", family=f"h{rep}/maps")
                 for k, values in enumerate(primaries)]
        gate.append(dict(hypothesis=RANDOMIZATION, method=f"m{rep}", layer="",
                         statistic_key="cascading", role="primary", verdict="supported",
                         family="sanity/maps", alpha=ALPHA, sets="val"))
    table = pd.concat([adjust(pd.DataFrame(rows)), pd.DataFrame(gate)], ignore_index=True)
    names = (definition.name, RANDOMIZATION)
    found = overall(table, {name: HYPOTHESES[name] for name in names},
                    {name: HypothesisSpec(name) for name in names}, [])
    return found[found["hypothesis"] == definition.name]["verdict"].to_numpy()


def test_overall_false_rejection_is_bounded_with_five_primaries_at_the_margin(five_primaries):
    """Each at its margin: the old any-primary rule on unadjusted CIs rejected ~14%."""
    rng = np.random.default_rng(7)
    found = _overall_of(five_primaries, [[_skewed(rng, 40, MARGIN) for _ in range(5)]
                                         for _ in range(REPS)])
    assert len(found) == REPS and (found == "rejected").mean() <= RATE_BOUND


def test_overall_false_support_is_bounded_when_one_primary_is_null(five_primaries):
    rng = np.random.default_rng(8)
    found = _overall_of(five_primaries, [[rng.normal(3.0, 1.0, 40) for _ in range(4)]
                                         + [_skewed(rng, 40)] for _ in range(REPS)])
    assert len(found) == REPS and (found == "supported").mean() <= RATE_BOUND


@pytest.mark.parametrize("design", ["one-sample", "paired", "two-sample"])
@pytest.mark.parametrize("family_size", [1, 10])
def test_power_at_twice_the_margin(design, family_size):
    """An effect of twice the margin, per-image spread equal to the effect (d = 1), 32 images
    (per group): supported at least 80% of the time, even corrected over a family of ten."""
    effect, spread = 2 * MARGIN, 2 * MARGIN

    def draw(rng):
        if design == "one-sample":
            return rng.normal(effect, spread, 32), None, True
        if design == "paired":
            base = rng.normal(0, 3, 32)
            return base + rng.normal(effect, spread, 32), base, True
        return rng.normal(effect, spread, 32), rng.normal(0, spread, 32), False
    found = _verdicts(draw, family_size=family_size, margin=MARGIN)
    assert (found == "supported").mean() >= 0.8


def test_bounds_invert_the_test():
    """Each bound is the edge of the set of nulls the test does not reject: shifting the data
    just past it flips the test at that level; and p <= q exactly when the bound excludes 0."""
    rng = np.random.default_rng(1)
    for paired in (True, False):
        for _ in range(30):
            a = rng.normal(rng.normal(0, 1), 1, rng.integers(6, 40))
            b = None if paired else rng.normal(0, 1, rng.integers(6, 40))
            q = rng.choice([0.05, 0.01, 0.002])
            row = hypothesis_test(a, b, paired=paired)
            low, high = row["evidence"].bounds(1 - q)
            assert (row["p_value"] <= q) == (low > 0)
            assert (row["evidence"].p_value("less") <= q) == (high < 0)
            if np.isfinite(low):
                eps = 1e-9
                below = hypothesis_test(a - (low - eps), b, paired=paired)["p_value"]
                above = hypothesis_test(a - (low + eps), b, paired=paired)["p_value"]
                assert below <= q < above


def test_estimands_are_the_median_and_the_hodges_lehmann_shift():
    values = np.array([0.1, 0.2, 0.3, 5.0, 9.0])
    assert hypothesis_test(values, min_n=3)["effect"] == 0.3  # the median, not the mean
    assert hypothesis_test(values, min_n=3)["estimand"] == "median"
    a, b = np.array([3.0, 4, 5, 6, 7]), np.array([0.0, 1, 2, 3, 4])
    two = hypothesis_test(a, b, paired=False, min_n=3)
    assert two["effect"] == np.median(np.subtract.outer(a, b))
    assert two["estimand"] == "Hodges-Lehmann shift" and two["test"] == "Mann-Whitney"
    assert two["rank_biserial"] == pytest.approx(2 * 23 / 25 - 1)  # U = 23: 21 wins, 2 ties


def test_sign_test_and_rank_sum_null_distributions_are_exact():
    rng = np.random.default_rng(0)
    for n1, n2 in [(4, 6), (7, 7), (12, 5), (20, 30)]:
        x, y = rng.normal(size=n1), rng.normal(size=n2)
        row = hypothesis_test(x, y, paired=False, min_n=3)
        expected = stats.mannwhitneyu(x, y, alternative="greater", method="exact").pvalue
        assert row["p_value"] == pytest.approx(expected, rel=1e-9)
    x = rng.normal(0.3, 1, 25)
    expected = stats.binomtest(int((x > 0).sum()), 25, 0.5, alternative="greater").pvalue
    assert hypothesis_test(x)["p_value"] == pytest.approx(expected)
    large = rank_sum_cdf(600, 600)  # normal approximation beyond the exact range
    assert large[len(large) // 2] == pytest.approx(0.5, abs=1e-3)


def test_family_adjustment_is_bonferroni_and_bounds_widen():
    rng = np.random.default_rng(2)
    rows = [hypothesis_test(rng.normal(0.8, 1, 30)) for _ in range(4)]
    table = pd.DataFrame(rows).assign(family=["a", "a", "a", "b"])
    done = adjust(table)
    assert done["family_size"].tolist() == [3, 3, 3, 1]
    np.testing.assert_allclose(done["p_adjusted"],
                               np.minimum(1, done["p_value"] * done["family_size"]))
    alone = adjust_one(rows[0])
    assert done["ci_low"].iloc[0] <= alone["ci_low"] and done["ci_high"].iloc[0] >= \
        alone["ci_high"]
    assert alone["ci_level"] == pytest.approx(0.9) and done["ci_level"].iloc[0] == \
        pytest.approx(1 - 2 * 0.05 / 3)
    assert "evidence" not in done.columns and set(done["correction"]) == {"bonferroni"}
    untestable = adjust(pd.DataFrame([hypothesis_test([1.0, 2.0]), rows[0]]).assign(family="a"))
    assert untestable["family_size"].tolist() == [1, 1]  # too few values do not count
    assert untestable["verdict"].iloc[0] == "inconclusive"


def test_verdict_rule():
    assert verdict(0.5, 0.1, 0.9, "greater", 0.2) == "supported"
    assert verdict(0.05, 0.01, 0.1, "greater", 0.2) == "rejected"  # certainly small
    assert verdict(-0.5, -0.9, -0.1, "greater", 0.0) == "rejected"  # other direction
    assert verdict(0.2, -0.1, 0.5, "greater", 0.2) == "inconclusive"  # bound includes 0
    assert verdict(0.1, 0.05, 0.5, "greater", 0.2) == "inconclusive"  # estimate too small
    assert verdict(np.nan, 0.1, 0.9, "greater", 0.2) == "inconclusive"
    assert verdict(-0.5, -0.9, -0.1, "less", 0.05) == "supported"
    assert combine_verdicts(["supported", "inconclusive"]) == "inconclusive"
    assert combine_verdicts([]) == "inconclusive"
    with pytest.raises(DensevisError, match="direction"):
        verdict(0.5, 0.1, 0.9, "up", 0.2)


def test_less_direction_and_null_value():
    rng = np.random.default_rng(0)
    result = adjust_one(hypothesis_test(rng.normal(0.2, 0.05, 30), null=0.5, direction="less",
                                        margin=0.1))
    assert result["verdict"] == "supported" and result["effect"] < 0
    assert result["rule"].startswith("effect = estimate - 0.5; supported if p_adjusted <= 0.05 "
                                     "(ci_high < 0) and effect "
                                     "<= -0.1; rejected if ci_low > -0.1")
    similar = adjust_one(hypothesis_test(rng.normal(0.95, 0.02, 30), null=0.5,
                                         direction="less", margin=0.1))
    assert similar["verdict"] == "rejected"


def test_few_values_and_bad_input():
    few = adjust_one(hypothesis_test([1.0, np.nan, 2.0]))
    assert few["verdict"] == "inconclusive" and "too few" in few["note"] and few["n"] == 2
    with pytest.raises(DensevisError, match="direction"):
        hypothesis_test([1.0] * 10, direction="up")
    with pytest.raises(DensevisError, match="equal lengths"):
        hypothesis_test([1.0] * 10, [1.0] * 9)
    with pytest.raises(DensevisError, match="margin"):
        hypothesis_test([1.0] * 10, margin=-1)
    with pytest.raises(DensevisError, match="evidence"):
        adjust(pd.DataFrame({"p_value": [0.1], "family": ["a"]}))
    assert isinstance(hypothesis_test(np.arange(10.0))["evidence"], Evidence)


def test_statistic_declares_its_margin_by_unit():
    assert Statistic("x", "x > 0", "logit").margin == 1.0
    assert Statistic("x", "x > 0", "similarity").margin == 0.0
