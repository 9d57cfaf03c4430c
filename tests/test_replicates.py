"""Replicates: replication (supported iff every model's own row is) is calibrated when model
effects vary around no effect, has power for a consistent effect of any size and rarely rejects
at the margin; the t test over models beside it is calibrated for any spread; the stated limit;
hand-computed replicated rows, the per-replicate randomization gate, row order; and the pytest
plugin's ``model`` filter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from densevis.analysis.hypotheses import evaluate
from densevis.analysis.hypothesis_registry import COLUMNS, RANDOMIZATION, HypothesisSpec
from densevis.analysis.replicates import (EXTRA_COLUMNS, REPLICATED, REPLICATED_OVERALL_RULE,
                                          evaluate_replicated, replicated_rows)
from densevis.analysis.replication import replicate
from densevis.analysis.stats import adjust, test_hypothesis
from densevis.errors import DensevisError

ALPHA = 0.05
REPS = 2000
# one-sided binomial bound: a true rate of alpha exceeds it with probability ~0.001
RATE_BOUND = ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / REPS)


def _tables(rng, models: int, reps: int, centre: float, tau: float, margin: float = 0.0,
            family_size: int = 1, n: int = 40) -> dict:
    """Per-model hypotheses tables of ``reps`` simulated experiments: in each, model k's true
    effect is ``centre + tau z_k`` and its row the sign test of ``n`` per-image values around
    it (sd 1); one family per experiment of ``family_size`` copies of that row."""
    rows = {f"seed{k}": [] for k in range(models)}
    for rep in range(reps):
        for label in rows:
            result = test_hypothesis(rng.normal(centre + tau * rng.standard_normal(), 1.0, n),
                                     margin=margin)
            rows[label] += [dict(result, hypothesis="sim", method=f"e{rep}", layer="",
                                 statistic="x > 0", statistic_key=f"s{j}", role="primary",
                                 unit="metric", sets="base", family=f"e{rep}")
                            for j in range(family_size)]
    return {label: adjust(pd.DataFrame(part)) for label, part in rows.items()}


def _direct_tables(rng, models: int, reps: int, centre: float, tau: float, margin: float = 0.0,
                   family_size: int = 1, n: int = 40) -> dict:
    """As :func:`_tables`, the per-model effect computed directly (the median of the ``n``
    values, as the sign test's row states it), for the statistics across models that read only
    the effects: thousands of experiments in a fraction of the time."""
    truth = centre + tau * rng.standard_normal((reps, models, 1))
    effects = np.median(rng.normal(truth, 1.0, (reps, models, n)), axis=2)
    base = dict(hypothesis="sim", layer="", statistic="x > 0", role="primary", unit="metric",
                sets="base", estimand="median", direction="greater", null=0.0,
                effect_margin=margin,
                alpha=ALPHA, verdict="inconclusive")
    return {f"seed{k}": pd.DataFrame([dict(base, method=f"e{rep}", family=f"e{rep}",
                                           statistic_key=f"s{j}", effect=effects[rep, k])
                                      for rep in range(reps) for j in range(family_size)])
            for k in range(models)}


def _first_statistic(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["statistic_key"] == "s0"]


@pytest.mark.parametrize("models, tau", [(3, 0.125), (3, 0.25), (5, 0.25)])
def test_replication_is_rarely_supported_when_models_vary_around_no_effect(models, tau):
    """Model effects drawn around 0 (sd ``tau``, up to the margin 0.25), each model tested on 40
    images of sd 1: "supported in every model" at most alpha of the time."""
    rng = np.random.default_rng(10 + models)
    found = replicated_rows(_tables(rng, models, REPS, centre=0.0, tau=tau, margin=0.25))
    assert len(found) == REPS and (found["models"] == models).all()
    assert (found["verdict"] == "supported").mean() <= RATE_BOUND


@pytest.mark.parametrize("models", [3, 5])
def test_the_t_test_over_models_is_calibrated_for_any_spread(models):
    """The mean_* columns: model effects N(0, 1) around a zero mean, large against each model's
    own noise: mean_verdict supported at most alpha of the time."""
    rng = np.random.default_rng(30 + models)
    found = _first_statistic(replicated_rows(_direct_tables(rng, models, REPS, 0.0, 1.0)))
    assert (found["mean_verdict"] == "supported").mean() <= RATE_BOUND


def test_the_stated_limit_of_replication():
    """If a recipe made models with large effects of random sign, three models would agree on
    the hypothesized side 1/8 of the time: replication is a claim about these models (the
    t test over models, in mean_verdict, stays within alpha)."""
    rng = np.random.default_rng(3)
    found = replicated_rows(_tables(rng, 3, REPS, centre=0.0, tau=3.0))
    rate = (found["verdict"] == "supported").mean()
    assert RATE_BOUND < rate <= 0.125 + 3 * np.sqrt(0.125 * 0.875 / REPS)
    assert (found["mean_verdict"] == "supported").mean() <= RATE_BOUND


def test_power_for_a_consistent_effect_of_any_size():
    """Every model's true effect 1.0 (tau 0.1), margin 0.25: supported at least 90% of the time
    for K = 3, 80% for K = 5 in a family of ten (measured 0.89: each model pays the family's
    Bonferroni factor); and when the models agree in sign but not in size
    (true effects 1, 2 and 4 logits' worth), replication still has the power the t test over
    three models lacks."""
    rng = np.random.default_rng(4)
    three = _first_statistic(replicated_rows(_tables(rng, 3, 500, 1.0, 0.1, margin=0.25)))
    assert (three["verdict"] == "supported").mean() >= 0.9
    five = replicated_rows(_tables(rng, 5, 300, 1.0, 0.1, margin=0.25, family_size=10))
    assert (five["family_size"] == 10).all()
    assert (_first_statistic(five)["verdict"] == "supported").mean() >= 0.8
    tables = {}
    for label, centre in (("seed0", 1.0), ("seed1", 2.0), ("seed2", 4.0)):
        rows = [dict(test_hypothesis(rng.normal(centre, 1.0, 40), margin=0.25), hypothesis="sim",
                     method=f"e{rep}", layer="", statistic="x > 0", statistic_key=f"s{j}",
                     role="primary", unit="metric", sets="base", family=f"e{rep}")
                for rep in range(300) for j in range(5)]
        tables[label] = adjust(pd.DataFrame(rows))
    uneven = replicated_rows(tables)
    assert (uneven["verdict"] == "supported").mean() >= 0.9
    assert (uneven["mean_verdict"] == "supported").mean() <= 0.5


@pytest.mark.parametrize("models", [3, 5])
def test_rejected_is_rare_when_the_effect_is_the_margin(models):
    """True effects at the margin (the hardest case of "at least the margin"), spread around
    it: replication rejected, and the t test rejected, at most alpha of the time."""
    rng = np.random.default_rng(20 + models)
    found = replicated_rows(_tables(rng, models, 1000, centre=0.5, tau=0.1, margin=0.5))
    assert (found["verdict"] == "rejected").mean() <= ALPHA + 3 * np.sqrt(ALPHA * 0.95 / 1000)
    direct = replicated_rows(_direct_tables(rng, models, REPS, centre=0.5, tau=0.5, margin=0.5))
    assert (direct["mean_verdict"] == "rejected").mean() <= RATE_BOUND


# ---------------------------------------------------------------------------------- hand-made
def _row(label_effects: dict, key="s", family="f", verdict="supported", **extra):
    """One statistic's rows per model (label -> effect)."""
    return {label: dict(hypothesis="h", method="model", layer="", statistic=f"{key} > 0",
                        statistic_key=key, role="primary", effect=effect, verdict=verdict,
                        estimand="median", unit="logit", direction="greater", null=0.0,
                        effect_margin=0.1, alpha=ALPHA, family=family, sets="base", **extra)
            for label, effect in label_effects.items()}


def _stack(*statistics) -> dict:
    tables = {}
    for statistic in statistics:
        for label, row in statistic.items():
            tables.setdefault(label, []).append(row)
    return {label: pd.DataFrame(rows) for label, rows in tables.items()}


def test_replicated_row_is_replication_with_the_t_test_beside_it():
    effects = [0.3, 0.4, 0.35]
    tables = _stack(_row(dict(zip(("a", "b", "c"), effects)), verdict="supported",
                         ci_low=0.1, ci_high=0.6, p_value=0.001, p_adjusted=0.002,
                         ci_level=0.95, family_size=2),
                    _row({"a": 0.1, "b": -0.3, "c": 0.4}, key="t", verdict="inconclusive",
                         ci_low=-0.5, ci_high=0.6, p_value=0.3, p_adjusted=0.6,
                         ci_level=0.95, family_size=2),
                    _row({"a": 1.0, "b": np.nan, "c": np.nan}, key="u", ci_low=0.5,
                         ci_high=1.2, p_value=0.01, p_adjusted=0.02, ci_level=0.95,
                         family_size=2))
    tables["b"].loc[0, "ci_low"] = 0.05  # the weakest bound comes from another model
    rows = replicated_rows(tables).set_index("statistic_key")
    row = rows.loc["s"]
    assert row["verdict"] == "supported" and row["models_supported"] == 3
    assert row["effect"] == 0.3 and row["ci_low"] == 0.05 and row["ci_high"] == 0.6
    assert row["p_adjusted"] == 0.002 and row["family_size"] == 2 and row["n"] == 3
    assert row["test"] == "intersection-union over 3 models"
    assert row["estimand"] == "the weakest model's: median"
    assert row["rule"].startswith("replication across 3 trained models: supported iff every")
    assert row["model_effects"] == "0.3; 0.4; 0.35"
    # beside it, the t test over models, family-adjusted over the testable rows (s and t)
    m, se = 2, np.std(effects, ddof=1) / np.sqrt(3)
    q = stats.t.ppf(1 - ALPHA / m, 2)
    assert row["mean_effect"] == pytest.approx(np.mean(effects))
    assert row["mean_ci_low"] == pytest.approx(np.mean(effects) - q * se)
    assert row["mean_ci_high"] == pytest.approx(np.mean(effects) + q * se)
    p_value = stats.ttest_1samp(effects, 0, alternative="greater").pvalue
    assert row["mean_p_adjusted"] == pytest.approx(m * p_value)
    assert row["mean_verdict"] == "supported"
    assert row["between_model_sd"] == pytest.approx(np.std(effects, ddof=1))
    assert row["model_median"] == pytest.approx(0.35)
    assert rows.loc["t", "verdict"] == "inconclusive" and rows.loc["t", "models_supported"] == 0
    lonely = rows.loc["u"]
    assert lonely["verdict"] == "inconclusive" and np.isnan(lonely["ci_low"])
    assert "no finite effect in b, c" in lonely["note"] and lonely["models"] == 1
    assert lonely["model_effects"] == "1; nan; nan"
    single = replicated_rows({"a": tables["a"]}).set_index("statistic_key").loc["s"]
    assert single["verdict"] == "inconclusive"
    assert "replication needs at least 2 models (K = 1)" in single["note"]
    rejected = replicated_rows(_stack(_row({"a": 0.0, "b": 0.01}, verdict="rejected",
                                           ci_low=-0.1, ci_high=0.05, p_value=0.5,
                                           p_adjusted=0.5, ci_level=0.9, family_size=1)))
    assert rejected["verdict"].tolist() == ["rejected"]
    mixed = replicated_rows(_stack(_row({"a": 0.0, "b": 0.4}, verdict="rejected",
                                        ci_low=-0.1, ci_high=0.05, p_value=0.5,
                                        p_adjusted=0.5, ci_level=0.9, family_size=1)))
    mixed_tables = _stack(_row({"a": 0.0}, verdict="rejected", ci_low=-0.1, ci_high=0.05,
                               p_value=0.5, p_adjusted=0.5, ci_level=0.9, family_size=1),)
    mixed_tables["b"] = _stack(_row({"b": 0.4}, verdict="supported", ci_low=0.2, ci_high=0.6,
                                    p_value=0.01, p_adjusted=0.01, ci_level=0.9,
                                    family_size=1))["b"]
    assert replicated_rows(mixed_tables)["verdict"].tolist() == ["inconclusive"]
    assert len(mixed) == 1


def test_identical_effects_and_the_less_direction():
    same = replicate([0.3, 0.3, 0.3], margin=0.1)
    assert same["verdict"] == "supported" and same["p_value"] == 0 and same["ci_low"] == 0.3
    assert replicate([0.0, 0.0], margin=0.0)["p_value"] == 1.0
    less = replicate([-0.5, -0.7, -0.6], direction="less", margin=0.2)
    assert less["verdict"] == "supported" and less["ci_high"] < 0
    assert replicate([0.5, 0.7, 0.6], direction="less", margin=0.2)["verdict"] == "rejected"
    with pytest.raises(DensevisError, match="direction"):
        replicate([1.0, 2.0], direction="up")


# --------------------------------------------------------------------------- evaluate_replicated
def _metrics(models: dict, n: int = 30, seed: int = 0) -> pd.DataFrame:
    """Per model (label -> (centre of mass_minus_area, centre of density_ratio)) a base set of
    ``n`` images for the map ``vanilla``."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, (mass, ratio) in models.items():
        for i in range(n):
            rows += [(label, "base", i, "vanilla", "", "mass_minus_area", rng.normal(mass, 0.05)),
                     (label, "base", i, "vanilla", "", "density_ratio", rng.normal(ratio, 0.3))]
    return pd.DataFrame(rows, columns=["model", "set", "image", "method", "layer", "metric",
                                       "value"]).assign(reduction="abs", note="")


def _similarity(models: dict, n: int = 20) -> pd.DataFrame:
    """Per model (label -> median similarity) the last cascading step of ``vanilla``."""
    rng = np.random.default_rng(1)
    return pd.concat(pd.DataFrame({
        "model": label, "test": "cascading", "step": "all", "step_index": 1,
        "method": "vanilla", "layer": "", "image": range(n), "metric": "spearman_abs",
        "value": rng.normal(centre, 0.02, n)}) for label, centre in models.items())


SPECS = [HypothesisSpec("localizes_square"), HypothesisSpec(RANDOMIZATION)]


def test_replicates_are_evaluated_as_alone_and_listed_after_the_replicated_rows():
    models = {"seed1": (0.3, 3.0), "seed0": (0.25, 2.5), "seed2": (0.35, 3.5)}
    metrics = _metrics(models)
    similarity = _similarity({label: 0.1 for label in models})
    table = evaluate_replicated(metrics, similarity, SPECS)
    assert list(table.columns) == ["model"] + COLUMNS + EXTRA_COLUMNS
    assert list(dict.fromkeys(table["model"])) == [REPLICATED, "seed1", "seed0", "seed2"]
    replicated = table[table["model"] == REPLICATED]
    assert replicated["statistic"].iloc[0] == "overall"
    assert (replicated["role"] == "overall").sum() == 2  # then the statistics
    assert (replicated["role"].iloc[:2] == "overall").all()
    for label in models:
        alone = evaluate(metrics[metrics["model"] == label].drop(columns="model"),
                         similarity[similarity["model"] == label].drop(columns="model"), SPECS)
        own = table[table["model"] == label].drop(columns=["model"] + EXTRA_COLUMNS)
        pd.testing.assert_frame_equal(own.reset_index(drop=True), alone, check_dtype=False)
        assert table.loc[table["model"] == label, "models"].isna().all()
        assert (table.loc[table["model"] == label, "model_effects"] == "").all()
    overall = replicated.set_index(["hypothesis", "statistic_key"])
    assert overall.loc[("localizes_square", "overall"), "verdict"] == "supported"
    assert overall.loc[("localizes_square", "overall"), "rule"] == REPLICATED_OVERALL_RULE
    assert overall.loc[("localizes_square", "overall"), "models_supported"] == 3
    assert overall.loc[(RANDOMIZATION, "overall"), "verdict"] == "supported"
    mass = overall.loc[("localizes_square", "mass_minus_area")]
    effects = [float(table[(table["model"] == label)
                           & (table["statistic_key"] == "mass_minus_area")]["effect"].iloc[0])
               for label in models]
    assert mass["effect"] == pytest.approx(min(effects)) and mass["models"] == 3
    assert mass["mean_effect"] == pytest.approx(np.mean(effects))
    assert mass["family"] == "localizes_square/maps" and mass["family_size"] == 2


def test_the_randomization_gate_applies_per_replicate():
    """Maps supported in every replicate, but one replicate's maps stay similar to its
    randomized model (and one replicate has no check): the replicated overall is
    inconclusive, and its note names the replicates."""
    models = {"seed0": (0.3, 3.0), "seed1": (0.3, 3.0), "seed2": (0.3, 3.0)}
    table = evaluate_replicated(_metrics(models), _similarity({"seed0": 0.1, "seed1": 0.9}),
                                SPECS)
    rows = table[table["model"] == REPLICATED].set_index(["hypothesis", "statistic_key"])
    primaries = rows.loc["localizes_square"].drop(index="overall")
    assert (primaries["verdict"] == "supported").all()
    overall = rows.loc[("localizes_square", "overall")]
    assert overall["verdict"] == "inconclusive"
    assert "seed1 fails passes_randomization" in overall["note"]
    assert "seed2 has no randomization check" in overall["note"]
    assert overall["models_supported"] == 1  # only seed0's own overall passes its gate
    check = rows.loc[(RANDOMIZATION, "overall")]
    assert check["verdict"] == "inconclusive" and "in seed2" in check["note"]
    only_two = evaluate_replicated(_metrics({"seed0": (0.3, 3.0), "seed1": (0.3, 3.0)}),
                                   _similarity({"seed0": 0.1, "seed1": 0.1}), SPECS)
    assert only_two.set_index(["model", "hypothesis", "statistic_key"]).loc[
        (REPLICATED, "localizes_square", "overall"), "verdict"] == "supported"


def test_a_primary_missing_in_one_replicate_leaves_the_overall_inconclusive():
    metrics = _metrics({"seed0": (0.3, 3.0), "seed1": (0.3, 3.0), "seed2": (0.3, 3.0)})
    metrics = metrics[~((metrics["model"] == "seed2") & (metrics["metric"] == "density_ratio"))]
    table = evaluate_replicated(metrics, _similarity({f"seed{k}": 0.1 for k in range(3)}),
                                SPECS)
    row = table[(table["model"] == REPLICATED) & (table["hypothesis"] == "localizes_square")
                & (table["statistic"] == "overall")].iloc[0]
    assert row["verdict"] == "inconclusive" and "in seed2" in row["note"]


def test_tables_without_a_model_column():
    metrics = _metrics({"seed0": (0.3, 3.0)}).drop(columns="model")
    table = evaluate_replicated(metrics, None, SPECS[:1], default_model="only")
    assert list(dict.fromkeys(table["model"])) == [REPLICATED, "only"]
    statistics = table[(table["model"] == REPLICATED) & (table["role"] == "primary")]
    assert (statistics["verdict"] == "inconclusive").all()
    assert statistics["note"].str.contains(r"at least 2 models \(K = 1\)").all()
    with pytest.raises(DensevisError, match="metrics has no model column"):
        evaluate_replicated(metrics, _similarity({"seed0": 0.1, "seed1": 0.1}), SPECS)
    with pytest.raises(DensevisError, match="without a model label"):
        evaluate_replicated(_metrics({"seed0": (0.3, 3.0)}).assign(model=""), None, SPECS)
    with pytest.raises(DensevisError, match="reserved"):
        evaluate_replicated(_metrics({REPLICATED: (0.3, 3.0)}), None, SPECS)


# ------------------------------------------------------------------------------- pytest plugin
def _run(tmp_path, table: pd.DataFrame):
    from densevis.testing import Run

    table.to_csv(tmp_path / "hypotheses.csv", index=False)
    return Run(tmp_path)


def test_plugin_checks_the_replicated_rows_by_default(tmp_path):
    from densevis.testing import assert_hypothesis, assert_localizes

    models = {"seed0": (0.3, 3.0), "seed1": (0.3, 3.0), "seed2": (0.3, 3.0)}
    table = evaluate_replicated(_metrics(models), _similarity({"seed0": 0.1, "seed1": 0.9,
                                                               "seed2": 0.1}), SPECS)
    run = _run(tmp_path, table)
    assert set(run.hypothesis_rows("localizes_square")["model"]) == {REPLICATED}
    assert len(run.hypothesis_rows("localizes_square", model=None)) == len(
        table[table["hypothesis"] == "localizes_square"])
    assert_hypothesis(run, "localizes_square", "inconclusive", method="vanilla")
    assert_hypothesis(run, "localizes_square", "supported", method="vanilla", model="seed0")
    with pytest.raises(AssertionError) as failure:
        assert_hypothesis(run, "localizes_square", "supported", method="vanilla")
    text = str(failure.value)
    assert "[replicated; vanilla]" in text and "seed1 fails passes_randomization" in text
    assert "supported in 3 of 3 models" in text and "model effects" in text
    assert_localizes(run, method="vanilla")
    assert_localizes(run, method="vanilla", model="seed2")
    with pytest.raises(AssertionError, match="no model 'seed7'.*seed0, seed1, seed2"):
        assert_hypothesis(run, "localizes_square", "supported", model="seed7")


def test_plugin_reads_tables_without_a_model_column(tmp_path):
    from densevis.testing import assert_hypothesis

    metrics = _metrics({"seed0": (0.3, 3.0)}).drop(columns="model")
    table = evaluate(metrics, _similarity({"seed0": 0.1}).drop(columns="model"), SPECS)
    run = _run(tmp_path, table)
    assert_hypothesis(run, "localizes_square", "supported", method="vanilla")
    assert_hypothesis(run, "localizes_square", "supported", model="seed3")  # nothing to filter
    (tmp_path / "metrics.csv").write_text(metrics.to_csv(index=False))
    again = run.evaluate(HypothesisSpec("localizes_square"))
    assert list(dict.fromkeys(again["model"])) == [REPLICATED, "model"]
