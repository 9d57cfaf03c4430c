"""Inference across replicates: K independently trained models of one recipe (``model`` labels
such as ``seed0``, ``seed1``, ``seed2``), each evaluated by :func:`~densevis.analysis.hypotheses.
evaluate` as if it were the only one, and one ``replicated`` row per statistic across them.

The replication verdict (:data:`~densevis.analysis.replication.REPLICATION_RULE`, in every replicated row's ``rule``)
--------------------------------------------------------------------------------------
Each replicate's row is a finished test of its own (its family-adjusted bounds, p and verdict).
Across the K replicates:

- **supported** iff every model's own row is supported; **rejected** iff every model's own row
  is rejected; otherwise (they disagree, or one lacks the row) **inconclusive**;
- ``effect`` is the weakest model's effect (in the hypothesized direction), ``ci_low`` /
  ``ci_high`` the hull of the models' bounds, ``p_value`` / ``p_adjusted`` the largest: they agree
  with the verdict as a single model's row does (the hull excludes 0 exactly when every model's
  bound does);
- fewer than 2 models: inconclusive ("replication needs at least 2 models").

It is an intersection-union test over the models: the claim "all K models show it" is false
only if some model's own *supported* verdict is false, which happens at most alpha of the time,
whatever the models' spread. What it claims: the effect holds in each of these K independently
trained models (replication), not that the mean over all trainings of the recipe lies beyond the
margin.

The t test over models (``mean_*`` columns)
-------------------------------------------
The recipe-level question is answered beside it, with the model as the unit (the
summary-statistics, or random-effects, approach; :func:`~densevis.analysis.replication.replicate`): ``mean_effect`` = mean of
the per-model effects, standard error sd/sqrt(K), one-sided Student t with K - 1 df, Bonferroni
within the family (``mean_ci_low`` / ``mean_ci_high`` one-sided at 1 - alpha/m,
``mean_p_adjusted``), ``mean_verdict`` by the same rule and margin. It assumes the per-model
effects scatter normally around the recipe's mean.

Why replication decides, and the t test is reported
----------------------------------------------------
- The t test over K = 3 models has 2 degrees of freedom: with a family correction it calls an
  effect only when the models agree closely in size. On the default run, lines alone raised the
  three models' logit margins by 6.4, 11.5 and 5.9 (each model's own test: supported): the t
  test is inconclusive. Three models that each clearly show an effect are a replication; the
  t test answers a different question (the recipe's mean), for which three models are few.
- "All K of K" is calibrated when the models vary at random around no effect (within the
  margin: each model is then supported rarely, all K of them more rarely still) and has the power
  of the weakest model's test for a consistent effect (``tests/test_replicates.py`` measures
  both). Its limit, stated: if a recipe made models with large effects of random sign, K models
  would agree by chance with probability 0.5^(K-1) (1/4 for K = 3, either sign; 1/8 on the
  hypothesized side): a replication of these models, not of the recipe; ``mean_verdict`` and
  ``between_model_sd`` show that case, and ``models_supported`` of ``models`` says how many
  models showed it.
- A sign test over the models is exact without normality, but its smallest p is 0.5^K: it
  cannot reach p < 0.05 before K = 5.

Overall rows (:data:`REPLICATED_OVERALL_RULE`)
---------------------------------------------
Per hypothesis, method and layer: the intersection-union of the replicated primary rows, as for
one model; ``supported`` also needs every replicate to have been evaluated with every required
primary (else inconclusive) and, for maps, **every** replicate's ``passes_randomization``
overall for that method and layer to be supported (the gate applies per replicate: a map that
does not show one of the models is no evidence for what the models do).

Columns
-------
``model`` first (a replicate's label, or :data:`REPLICATED`), the hypotheses table's
:data:`~densevis.analysis.hypotheses.COLUMNS`, then :data:`EXTRA_COLUMNS` (empty on the
replicates' own rows): ``models`` (K; on an ``overall`` row, the replicates evaluated for it),
``models_supported`` and ``models_rejected`` (how many replicates' rows have that verdict),
``model_effects`` (each replicate's effect in model order, ``nan`` where it has none),
``between_model_sd``, ``model_median`` and the t test over models: ``mean_effect``,
``mean_ci_low``, ``mean_ci_high``, ``mean_p_adjusted``, ``mean_verdict``.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from densevis.analysis.baselines import BASELINES
from densevis.analysis.hypotheses import evaluate, missing_primaries, randomization_gate
from densevis.analysis.hypothesis_registry import (COLUMNS, MODEL, RANDOMIZATION, HypothesisSpec,
                                                   default_specs, resolve)
from densevis.analysis.replication import REPLICATION_RULE, replicate, replication
from densevis.analysis.stats import combine_verdicts
from densevis.errors import DensevisError
from probes.pool import call_in_processes, default_workers

#: The ``model`` value of the rows across replicates.
REPLICATED = "replicated"
#: Columns after :data:`~densevis.analysis.hypotheses.COLUMNS` (empty on a replicate's rows).
EXTRA_COLUMNS = ["models", "models_supported", "models_rejected", "model_effects",
                 "between_model_sd", "model_median", "mean_effect", "mean_ci_low",
                 "mean_ci_high", "mean_p_adjusted", "mean_verdict"]
#: How a replicated ``overall`` row decides (its ``rule`` column).
REPLICATED_OVERALL_RULE = (
    "replicated across trained models: supported iff every replicated primary statistic is, "
    "every replicate was evaluated with every required primary and, for maps, every "
    "replicate's passes_randomization for the method and layer is supported; rejected iff any "
    "replicated primary statistic is; else inconclusive")
_KEYS = ["hypothesis", "method", "layer", "statistic_key"]


def _fmt(value: float) -> str:
    return "nan" if not np.isfinite(value) else f"{value:.4g}"


def replicated_rows(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One replicated row per (hypothesis, method, layer, statistic_key) of the non-overall rows
    of the replicates' hypotheses ``tables`` (label -> table of :func:`evaluate`, in model
    order): the replication verdict (:data:`~densevis.analysis.replication.REPLICATION_RULE`) in the contract columns and the
    t test over models (:func:`~densevis.analysis.replication.replicate`, within each family) in the ``mean_*`` columns
    (columns ``COLUMNS + EXTRA_COLUMNS``)."""
    labels = list(tables)
    parts = [t[t["statistic_key"] != "overall"].assign(model=label)
             for label, t in tables.items() if len(t)]
    stacked = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if stacked.empty:
        return pd.DataFrame(columns=COLUMNS + EXTRA_COLUMNS)
    grouped = stacked.groupby(_KEYS, sort=False, dropna=False)
    shared = ["direction", "effect_margin", "alpha", "null", "family"]  # from the same spec
    spread = grouped[shared].nunique(dropna=False)
    if spread.gt(1).any(axis=None):
        key = spread.index[spread.gt(1).any(axis=1)][0]
        columns = ", ".join(spread.columns[spread.loc[key].gt(1)])
        raise DensevisError(f"replicates disagree on {columns} of "
                            f"{'/'.join(str(v) for v in key if v)}; evaluate them with the "
                            f"same specs")
    first = stacked.drop_duplicates(_KEYS).set_index(_KEYS)
    finished = ["effect", "ci_low", "ci_high", "p_value", "p_adjusted", "verdict", "ci_level",
                "family_size"]
    stacked = stacked.reindex(columns=list(stacked.columns) + [
        c for c in finished if c not in stacked.columns])
    by_model = {column: stacked.set_index(_KEYS + ["model"])[column].unstack("model")
                .reindex(index=first.index, columns=labels) for column in finished}
    effects = by_model["effect"].to_numpy(dtype=np.float64)
    values = {column: table.to_numpy(dtype=object) for column, table in by_model.items()}
    sets = grouped["sets"].agg(lambda s: "; ".join(dict.fromkeys(map(str, s)))) \
        .reindex(first.index).to_numpy()
    finite = np.isfinite(effects)
    testable = first["family"][finite.sum(axis=1) >= 2].value_counts()
    rows = []
    for number, (key, row) in enumerate(zip(first.index, first.to_dict("records"))):
        mean = replicate(effects[number], direction=row["direction"],
                         margin=float(row["effect_margin"]), alpha=float(row["alpha"]),
                         family_size=int(testable.get(row["family"], 1)),
                         null=float(row["null"]))
        own = {column: list(table[number]) for column, table in values.items()}
        result = replication(own, row["direction"], len(labels))
        lacking = [label for label, present in zip(labels, finite[number]) if not present]
        rows.append({
            **{c: row[c] for c in ("statistic", "role", "unit", "direction", "null",
                                   "effect_margin", "alpha", "family")},
            **result, **dict(zip(_KEYS, key)), "correction": "bonferroni",
            "rank_biserial": np.nan, "paired": False,
            "estimand": f"the weakest model's: {row['estimand']}", "sets": sets[number],
            "rule": REPLICATION_RULE.format(models=len(labels)) + " Each model's rule: "
            + str(row.get("rule", "")),
            "models": int(finite[number].sum()),
            "models_supported": own["verdict"].count("supported"),
            "models_rejected": own["verdict"].count("rejected"),
            "model_effects": "; ".join(_fmt(e) for e in effects[number]),
            "between_model_sd": mean["between_model_sd"], "model_median": mean["model_median"],
            "mean_effect": mean["effect"], "mean_ci_low": mean["ci_low"],
            "mean_ci_high": mean["ci_high"], "mean_p_adjusted": mean["p_adjusted"],
            "mean_verdict": mean["verdict"],
            "note": "; ".join(filter(None, (
                result["note"], f"no finite effect in {', '.join(lacking)}" if lacking
                else "")))})
    return pd.DataFrame(rows, columns=COLUMNS + EXTRA_COLUMNS)


def _gate_reasons(gates: dict, method: str, layer: str) -> list[str]:
    reasons = {None: "has no randomization check", "inconclusive": "has an inconclusive "
               "randomization check", "rejected": "fails passes_randomization"}
    return [f"{label} {reasons[gate.get((method, layer))]}" for label, gate in gates.items()
            if gate.get((method, layer)) != "supported"]


def replicated_overall(rows: pd.DataFrame, tables: dict[str, pd.DataFrame],
                       specs: dict[str, HypothesisSpec],
                       baselines: dict[str, list[str]]) -> pd.DataFrame:
    """One replicated ``overall`` row per (hypothesis, method, layer) (see the module
    docstring): ``rows`` are :func:`replicated_rows` of ``tables`` (label -> a replicate's
    table), ``specs`` the specs by name, ``baselines`` the null baselines each replicate's
    metrics hold (its per-baseline primaries must cover them)."""
    definitions = {name: resolve(spec) for name, spec in specs.items()}
    gates = {label: randomization_gate(table) for label, table in tables.items()}
    overalls = {label: table[table["statistic_key"] == "overall"].set_index(
        ["hypothesis", "method", "layer"])["verdict"] for label, table in tables.items()}
    places = [(h, m, l) for table in tables.values() for h, m, l in zip(
        table["hypothesis"], table["method"], table["layer"])]
    place = ["hypothesis", "method", "layer"]
    groups = dict(list(rows.groupby(place, sort=False))) if len(rows) else {}
    statistics = {label: dict(list(table[table["statistic"] != "overall"].groupby(
        place, sort=False))) for label, table in tables.items()}
    empty = rows.iloc[:0]
    out = []
    for name, method, layer in dict.fromkeys(places):
        group = groups.get((name, method, layer), empty)
        parts = group[group["role"] == "primary"]
        result, notes = combine_verdicts(parts["verdict"]), []
        found = {label: overall[(name, method, layer)] for label, overall in overalls.items()
                 if (name, method, layer) in overall.index}
        incomplete = [label for label in tables if label not in found]
        for label in found:
            own = statistics[label].get((name, method, layer), tables[label].iloc[:0])
            if missing_primaries(definitions[name], specs[name], method, own,
                                  baselines.get(label, [])) or own["role"].ne("primary").all():
                incomplete.append(label)
        short = parts[parts["models"] < len(tables)]["statistic_key"].tolist()
        if incomplete or short or parts.empty:
            result = "inconclusive" if result == "supported" else result
            lacking = [f"in {', '.join(incomplete)}"] if incomplete else []
            lacking += [f"{key} not in every model" for key in short]
            notes.append(f"primary statistics missing: {'; '.join(lacking) or 'all'}")
        if name != RANDOMIZATION and method != MODEL and result == "supported":
            failing = _gate_reasons(gates, method, layer)
            if failing:
                result = "inconclusive"
                where = f"{method}{f' at {layer}' if layer else ''}"
                notes.append(f"the randomization check applies per replicate: {where} "
                             f"{'; '.join(failing)}, so its replicated statistics (all "
                             f"supported) are no evidence for {name}")
        verdicts = list(found.values())
        out.append({"hypothesis": name, "method": method, "layer": layer,
                    "statistic": "overall", "statistic_key": "overall", "role": "overall",
                    "p_value": parts["p_value"].max(), "p_adjusted": parts["p_adjusted"].max(),
                    "verdict": result, "family": group["family"].iloc[0] if len(group) else "",
                    "alpha": group["alpha"].iloc[0] if len(group) else np.nan,
                    "test": "intersection-union", "rule": REPLICATED_OVERALL_RULE,
                    "note": "; ".join(notes), "sets": ", ".join(sorted(set(parts["sets"]))),
                    "models": len(found), "models_supported": verdicts.count("supported"),
                    "models_rejected": verdicts.count("rejected"), "model_effects": ""})
    return pd.DataFrame(out, columns=COLUMNS + EXTRA_COLUMNS)


def split_models(table: pd.DataFrame | None, name: str,
                 default_model: str = "model") -> dict[str, pd.DataFrame]:
    """``table``'s rows per ``model`` label (in order of first appearance; the column dropped).
    A table without the column is one replicate, ``default_model``; an empty one is none."""
    if table is None or table.empty:
        return {}
    if "model" not in table.columns:
        return {default_model: table}
    labels = table["model"]
    if labels.isna().any() or (labels.astype(str) == "").any():
        raise DensevisError(f"{name} has rows without a model label; every row of a "
                            f"replicated run names its model")
    labels = labels.astype(str)
    if (labels == REPLICATED).any():
        raise DensevisError(f"{name}: {REPLICATED!r} is reserved for the rows across models; "
                            f"label the replicates otherwise")
    return {label: part.drop(columns="model")
            for label, part in table.groupby(labels, sort=False)}


def evaluate_replicated(metrics: pd.DataFrame | None, similarity: pd.DataFrame | None = None,
                        hypotheses: list[HypothesisSpec] | None = None, *,
                        default_model: str = "model") -> pd.DataFrame:
    """The hypotheses table of a run with replicate models: :func:`evaluate` per replicate (the
    same ``hypotheses``, default all registered) and the rows across them.

    Parameters
    ----------
    metrics, similarity : DataFrame or None
        The metrics and sanity similarity tables with a ``model`` column (a replicate's label on
        every row). A table without one is a single replicate labelled ``default_model``. A
        replicate in one table only is evaluated without the other for it.
    hypotheses : list of HypothesisSpec, optional
        As for :func:`evaluate`.
    default_model : str
        The label of a table without a ``model`` column.

    Returns
    -------
    DataFrame
        ``model`` (``"replicated"`` or a replicate's label), the hypotheses table's columns and
        :data:`EXTRA_COLUMNS`. The replicated rows come first (their ``overall`` rows first),
        then each replicate's table in the order the models first appear.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> metrics = pd.concat([pd.DataFrame({
    ...     "model": f"seed{k}", "set": "base", "image": np.arange(30), "method": "model",
    ...     "layer": "", "metric": "logit_margin", "value": rng.normal(3 + 0.3 * k, 1, 30)})
    ...     for k in range(3)])
    >>> spec = HypothesisSpec("margin_positive", set="base", metric="logit_margin", margin=1.0)
    >>> table = evaluate_replicated(metrics, hypotheses=[spec])
    >>> print(table[["model", "statistic", "verdict", "models"]].head(3).to_string(index=False))
         model        statistic   verdict  models
    replicated          overall supported       3
    replicated logit_margin > 0 supported       3
         seed0          overall supported    <NA>
    """
    by_metrics = split_models(metrics, "metrics", default_model)
    by_similarity = split_models(similarity, "similarity", default_model)
    for name, one, other in (("metrics", metrics, by_similarity),
                             ("similarity", similarity, by_metrics)):
        if one is not None and not one.empty and "model" not in one.columns and \
                set(other) - {default_model}:
            raise DensevisError(f"{name} has no model column but the other table names models "
                                f"{', '.join(other)}: give every row of both its model")
    labels = list(dict.fromkeys([*by_metrics, *by_similarity]))
    specs = list(default_specs() if hypotheses is None else hypotheses)
    # each model's table on a core of its own (pandas runs on one)
    tables = dict(zip(labels, call_in_processes(
        [partial(evaluate, by_metrics.get(label), by_similarity.get(label), specs)
         for label in labels], default_workers())))
    baselines = {label: [b for b in BASELINES if b in present]
                 for label, table in by_metrics.items()
                 for present in [set(table["method"].unique())]}
    rows = replicated_rows(tables)
    overall_rows = replicated_overall(rows, tables, {s.name: s for s in specs}, baselines)
    parts = [frame.assign(model=REPLICATED) for frame in (overall_rows, rows) if len(frame)]
    parts += [table.assign(model=label) for label, table in tables.items() if len(table)]
    columns = ["model"] + COLUMNS + EXTRA_COLUMNS
    if not parts:
        return pd.DataFrame(columns=columns)
    table = pd.concat([part.reindex(columns=columns) for part in parts], ignore_index=True)
    for column in ("n", "family_size", "models", "models_supported", "models_rejected"):
        table[column] = pd.to_numeric(table[column]).astype("Int64")
    table["paired"] = table["paired"].astype("boolean")
    for column in ("between_model_sd", "model_median"):
        table[column] = table[column].astype(float)
    table["model_effects"] = table["model_effects"].fillna("").astype(str)
    return table
