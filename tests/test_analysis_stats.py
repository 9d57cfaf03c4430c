"""Statistics: false-positive rate and power on simulated data, corrections, the verdict rule,
and the hypothesis functions on tables with a known answer."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from densevis.analysis.hypotheses import (edge_detector, localizes_square, overall,
                                          passes_randomization, run_all, small_object_detector)
from densevis.analysis.stats import (adjust, benjamini_hochberg, combine_verdicts, holm,
                                     test_hypothesis as hypothesis_test, verdict)
from densevis.errors import DensevisError

ALPHA = 0.05
REPS = 400
# one-sided binomial bound: a true rate of 0.05 exceeds it with probability < 0.001
FPR_BOUND = ALPHA + 3.1 * np.sqrt(ALPHA * (1 - ALPHA) / REPS)


def _simulate(draw, **options):
    rng = np.random.default_rng(123)
    results = [hypothesis_test(*draw(rng), n_boot=300, seed=k, **options) for k in range(REPS)]
    p = np.array([r["p_value"] for r in results])
    supported = np.array([r["verdict"] == "supported" for r in results])
    return p, supported


def _paired_null(rng):
    """Scores of the same images under two conditions that do not differ."""
    base = rng.normal(0, 3, 25)
    return base + rng.normal(0, 1, 25), base + rng.normal(0, 1, 25)


@pytest.mark.parametrize("design", ["one-sample", "paired", "two-sample"])
def test_false_positive_rate_under_the_null(design):
    draws = {"one-sample": lambda rng: (rng.standard_t(3, 25),),
             "paired": lambda rng: _paired_null(rng),
             "two-sample": lambda rng: (rng.exponential(1, 20), rng.exponential(1, 30))}
    p, supported = _simulate(draws[design], paired=design == "paired")
    assert (p < ALPHA).mean() <= FPR_BOUND
    assert supported.mean() <= FPR_BOUND


def test_false_positive_rate_of_the_permutation_test():
    p, supported = _simulate(lambda rng: (rng.normal(0, 1, 20),), test="permutation", n_perm=400)
    assert (p < ALPHA).mean() <= FPR_BOUND and supported.mean() <= FPR_BOUND


@pytest.mark.parametrize("design", ["one-sample", "two-sample"])
def test_power_on_a_simulated_effect(design):
    draws = {"one-sample": lambda rng: (rng.normal(0.8, 1, 25),),
             "two-sample": lambda rng: (rng.normal(1.0, 1, 40), rng.normal(0, 1, 40))}
    p, supported = _simulate(draws[design], paired=False)
    # the verdict also needs the bootstrap CI of the median difference above 0, which costs
    # some power against the rank test alone
    assert (p < ALPHA).mean() >= 0.95
    assert supported.mean() >= 0.85


def test_less_direction_and_null_value():
    rng = np.random.default_rng(0)
    result = hypothesis_test(rng.normal(0.2, 0.05, 30), null=0.5, direction="less", margin=0.1)
    assert result["verdict"] == "supported" and result["effect"] < 0
    assert result["rule"] == ("supported if p_adjusted < 0.05, ci_high < 0 and effect <= -0.1; "
                              "rejected if ci_low > -0.1; else inconclusive")
    similar = hypothesis_test(rng.normal(0.95, 0.02, 30), null=0.5, direction="less", margin=0.1)
    assert similar["verdict"] == "rejected"


def test_verdict_rule():
    assert verdict(0.01, 0.5, 0.1, 0.9, "greater", 0.2, 0.05) == "supported"
    assert verdict(0.01, 0.05, 0.01, 0.1, "greater", 0.2, 0.05) == "rejected"  # certainly small
    assert verdict(0.90, -0.5, -0.9, -0.1, "greater", 0.0, 0.05) == "rejected"  # other direction
    assert verdict(0.20, 0.2, -0.1, 0.5, "greater", 0.2, 0.05) == "inconclusive"
    assert verdict(0.01, 0.2, -0.1, 0.5, "greater", 0.2, 0.05) == "inconclusive"  # CI has 0
    assert verdict(0.01, 0.1, 0.05, 0.5, "greater", 0.2, 0.05) == "inconclusive"  # too small
    assert verdict(np.nan, 0.5, 0.1, 0.9, "greater", 0.2, 0.05) == "inconclusive"
    assert verdict(0.01, -0.5, -0.9, -0.1, "less", 0.05, 0.05) == "supported"
    assert combine_verdicts(["supported", "inconclusive"]) == "inconclusive"
    assert combine_verdicts([]) == "inconclusive"


def test_effect_sizes_and_ci():
    result = hypothesis_test(np.arange(1.0, 11.0), seed=1)
    assert result["effect"] == 5.5 and result["rank_biserial"] == 1.0
    assert result["ci_low"] <= 5.5 <= result["ci_high"]
    assert result == hypothesis_test(np.arange(1.0, 11.0), seed=1)  # seeded
    two = hypothesis_test([3, 4, 5, 6, 7], [0, 1, 2, 3, 4], paired=False, min_n=3)
    assert two["effect"] == 3.0
    assert two["rank_biserial"] == pytest.approx(2 * 23 / 25 - 1)  # U = 23: 21 wins, 2 ties


def test_few_values_and_bad_input():
    few = hypothesis_test([1.0, np.nan, 2.0])
    assert few["verdict"] == "inconclusive" and "too few" in few["note"] and few["n"] == 2
    with pytest.raises(DensevisError, match="direction"):
        hypothesis_test([1.0] * 10, direction="up")
    with pytest.raises(DensevisError, match="equal lengths"):
        hypothesis_test([1.0] * 10, [1.0] * 9)
    with pytest.raises(DensevisError, match="margin"):
        hypothesis_test([1.0] * 10, margin=-1)


def test_holm_matches_its_definition_and_bh():
    rng = np.random.default_rng(0)
    p = np.append(rng.random(7) ** 3, np.nan)
    order = np.argsort(p[:7])
    brute = np.empty(7)
    for rank, i in enumerate(order):
        brute[i] = min(1.0, max((7 - j) * p[order[j]] for j in range(rank + 1)))
    np.testing.assert_allclose(holm(p)[:7], brute)
    assert np.isnan(holm(p)[7])
    bh = benjamini_hochberg(p)
    manual = [min(min(p[order[j]] * 7 / (j + 1) for j in range(r, 7)), 1) for r in range(7)]
    np.testing.assert_allclose(bh[order], manual)


def test_adjust_corrects_within_families():
    rows = [hypothesis_test(np.random.default_rng(k).normal(0.6, 1, 30), seed=k) for k in range(4)]
    table = pd.DataFrame(rows).assign(family=["a", "a", "b", "b"])
    corrected = adjust(table, family="family")
    for family in ("a", "b"):
        part = corrected[corrected.family == family]
        np.testing.assert_allclose(part["p_adjusted"], holm(part["p_value"]))
    assert set(corrected["verdict"]) <= {"supported", "rejected", "inconclusive"}
    with pytest.raises(DensevisError, match="correction"):
        adjust(table, method="bonferroni")


def _metrics(rows):
    columns = ["set", "image", "method", "layer", "metric", "value"]
    return pd.DataFrame(rows, columns=columns).assign(reduction="abs", note="")


def test_hypothesis_functions_find_a_planted_answer():
    rng = np.random.default_rng(5)
    n, rows = 40, []
    for i in range(n):
        rows += [("base", i, "good", "", "mass_minus_area", rng.normal(0.3, 0.05)),
                 ("base", i, "good", "", "density_ratio", rng.normal(4, 0.5)),
                 ("base", i, "flat", "", "mass_minus_area", rng.normal(0.0, 0.01)),
                 ("base", i, "flat", "", "density_ratio", rng.normal(1, 0.02)),
                 ("base", i, "sobel", "", "mass_minus_area", rng.normal(0.1, 0.05)),
                 ("base", i, "good", "", "edge_interior_ratio", rng.normal(1, 0.02)),
                 ("base", i, "good", "", "smallest_object_mass", rng.normal(0.5, 0.1)),
                 ("base", i, "good", "", "square_mass", rng.normal(4, 0.1)),
                 ("base", i, "model", "", "logit_margin", rng.normal(3 if i % 2 else -3, 1)),
                 ("base", i, "model", "", "label", float(i % 2)),
                 ("lines_only", i, "model", "", "logit_margin", rng.normal(-3, 1)),
                 ("large_squares", i, "good", "", "circle_mass", rng.normal(3, 0.2)),
                 ("large_squares", i, "good", "", "square_mass", rng.normal(1, 0.2)),
                 ("lines_only", i, "good", "", "line_mass", rng.normal(1, 0.1)),
                 ("lines_only", i, "good", "", "circle_mass", rng.normal(1, 0.1))]
    for scene in range(0, 8 * 12, 8):
        removed = rng.normal(-6, 1)  # loose sides: as bad as removing the square
        rows += [("pairs", scene, "model", "", "logit_delta_removed", removed),
                 ("pairs", scene, "model", "", "logit_delta_sides", removed + rng.normal(0, 0.2)),
                 ("pairs", scene, "model", "", "logit_delta_outline", rng.normal(0, 1)),
                 ("pairs", scene, "model", "", "logit_delta_double", rng.normal(0, 0.1)),
                 ("pairs", scene, "model", "", "logit_delta_half", rng.normal(0, 0.1))]
    metrics = _metrics(rows)
    square = localizes_square(metrics, baselines=("sobel",)).set_index(["method", "statistic"])
    assert square.loc[("good", "mass_minus_area > 0"), "verdict"] == "supported"
    assert square.loc[("good", "mass_minus_area > sobel"), "verdict"] == "supported"
    assert square.loc[("flat", "mass_minus_area > 0"), "verdict"] == "rejected"
    assert square.loc[("flat", "mass_minus_area > sobel"), "verdict"] == "rejected"
    edge = edge_detector(metrics).set_index("statistic")["verdict"]
    assert edge["edge_interior_ratio > 1"] == "rejected"
    assert edge["line_mass > circle_mass"] == "rejected"
    assert edge["logit_delta_sides > logit_delta_removed"] == "rejected"
    assert edge["logit_delta_outline > logit_delta_removed"] == "supported"
    assert "base (label 0)" in edge_detector(metrics).query("method == 'model'")["sets"].iloc[0]
    small = small_object_detector(metrics).set_index("statistic")["verdict"]
    assert small["smallest_object_mass > square_mass"] == "rejected"
    assert small["circle_mass > square_mass"] == "supported"
    assert small["logit_delta_double < 0"] == "rejected"
    table = run_all(metrics)
    overall_rows = table[table.statistic == "overall"].set_index(["hypothesis", "method"])
    assert overall_rows.loc[("localizes_square", "good"), "verdict"] == "supported"
    assert overall_rows.loc[("small_object_detector", "good"), "verdict"] == "rejected"
    assert set(table["verdict"]) <= {"supported", "rejected", "inconclusive"}
    assert table["rule"].notna().all()


def test_square_set_falls_back_when_base_is_not_scored():
    values = np.random.default_rng(2).normal(0.2, 0.05, 20)
    metrics = _metrics([("squares_only", i, "vanilla", "", "mass_minus_area", v)
                        for i, v in enumerate(values)])
    rows = localizes_square(metrics)
    assert rows["sets"].tolist() == ["squares_only"] and rows["verdict"].tolist() == ["supported"]


def test_passes_randomization_flags_a_method_that_stays_similar():
    rng = np.random.default_rng(0)
    frames = []
    for step, method in itertools.product((1, 2), ("gradient", "edges")):
        similar = rng.normal(0.05, 0.05, 20) if method == "gradient" and step == 2 else \
            rng.normal(0.97, 0.01, 20)
        frames.append(pd.DataFrame({"test": "cascading", "step": f"s{step}", "step_index": step,
                                    "method": method, "layer": "", "image": range(20),
                                    "metric": "spearman_abs", "value": similar}))
    rows = passes_randomization(pd.concat(frames)).set_index("method")
    assert rows.loc["gradient", "verdict"] == "supported"
    assert rows.loc["edges", "verdict"] == "rejected"
    per_method = overall(adjust(rows.reset_index())).set_index("method")["verdict"]
    assert per_method.to_dict() == {"gradient": "supported", "edges": "rejected"}


def test_cue_contrast_must_beat_the_edge_map():
    """Lines are all edge: a map that only follows edges (like Sobel) puts more area-corrected
    mass on them than on circles. Only a contrast beyond the baselines' counts."""
    rng = np.random.default_rng(3)
    rows = []
    for i in range(40):
        sobel_lines, sobel_circles = rng.normal(3, 0.2), rng.normal(1, 0.2)
        rows += [("lines_only", i, "sobel", "", "line_mass", sobel_lines),
                 ("lines_only", i, "sobel", "", "circle_mass", sobel_circles),
                 ("lines_only", i, "edgy", "", "line_mass", sobel_lines + rng.normal(0, 0.05)),
                 ("lines_only", i, "edgy", "", "circle_mass", sobel_circles),
                 ("lines_only", i, "cue", "", "line_mass", rng.normal(6, 0.2)),
                 ("lines_only", i, "cue", "", "circle_mass", rng.normal(1, 0.2))]
    table = run_all(_metrics(rows))
    verdicts = table.set_index(["method", "statistic"])["verdict"]
    assert verdicts[("edgy", "line_mass > circle_mass")] == "supported"
    assert verdicts[("edgy", "line_mass - circle_mass > sobel's")] == "rejected"
    assert verdicts[("edgy", "overall")] == "rejected"
    assert verdicts[("cue", "line_mass - circle_mass > sobel's")] == "supported"
    assert verdicts[("cue", "overall")] == "supported"


def test_a_method_that_fails_randomization_supports_nothing():
    rng = np.random.default_rng(4)
    metrics = _metrics([("base", i, method, "", "mass_minus_area", rng.normal(0.3, 0.05))
                        for i in range(30) for method in ("faithful", "image_only")])
    similarity = pd.concat(pd.DataFrame({
        "test": "cascading", "step": "all", "step_index": 1, "method": method, "layer": "",
        "image": range(20), "metric": "spearman_abs",
        "value": rng.normal(0.05 if method == "faithful" else 0.95, 0.02, 20)})
        for method in ("faithful", "image_only"))
    table = run_all(metrics, similarity)
    rows = table[table["statistic"] == "overall"].set_index(["hypothesis", "method"])
    assert rows.loc[("localizes_square", "faithful"), "verdict"] == "supported"
    assert rows.loc[("passes_randomization", "image_only"), "verdict"] == "rejected"
    gated = rows.loc[("localizes_square", "image_only")]
    assert gated["verdict"] == "inconclusive"
    assert "fails passes_randomization" in gated["note"]
    statistic = table[(table["method"] == "image_only") & (table["statistic"] ==
                                                            "mass_minus_area > 0")]
    assert statistic["verdict"].tolist() == ["supported"]  # the statistic itself is reported
