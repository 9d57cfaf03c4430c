"""The study's hypotheses as tests on the tidy metrics table (and the sanity-check
similarities), and the one :func:`evaluate` that every driver calls.

A hypothesis is one registered definition (:func:`hypothesis`, declared in
:mod:`densevis.analysis.hypothesis_registry`): its name, its question, its statistics and one
function that adds its rows to a :class:`~densevis.analysis.hypothesis_context.Context`. This
module registers the built-ins below, so :data:`HYPOTHESES` imported from here holds them.
Everything else (spec validation, ``densevis analyze``, ``densevis run``, the pytest plugin, the
report) reads those declarations from :data:`HYPOTHESES`. A spec's ``[[hypotheses]]`` entry is a
:class:`HypothesisSpec`: it selects a registered hypothesis (or states a custom one) and may
keep some statistics, methods and layers, set margins per statistic and declare the family.

Verdicts (:mod:`densevis.analysis.stats`): per row the median (sign test) or Hodges-Lehmann
shift (Mann-Whitney), bounds that invert the same test, Bonferroni within each family (the
declared family, split into the model's ``behaviour`` and its ``maps``). Per hypothesis,
method and layer an ``overall`` row: supported iff every primary statistic is (none may be
missing), rejected iff any is. A map-based ``supported`` also needs the method and layer to
pass ``passes_randomization`` **in the same table**: unchecked, inconclusive or failing gives
``inconclusive`` with a note saying which.

Replicate models (a ``model`` column): :func:`evaluate_replicated` (module
:mod:`densevis.analysis.replicates`) runs :func:`evaluate` per model and adds the rows across
them (replication: supported iff every model's own verdict is; a t test over the models beside
it).

Built-ins
---------
``localizes_square`` (per method and layer; base set's images with a square, or
    ``squares_only`` / ``large_squares`` when the base set is not scored): ``mass_minus_area > 0``,
    ``density_ratio > 1``, and ``mass_minus_area`` above each null baseline's on the same images
    (paired; for layer-resolution maps the baseline pooled to the layer's grid).
``edge_detector`` (would a line alone do?)
    primary: the logit margin is higher on ``lines_only`` than on square-free controls, and on
    ``pairs`` the loose ``sides`` keep more of the square's evidence than removing it; maps:
    ``line_mass > circle_mass`` on ``lines_only`` and that contrast above each null baseline's.
    Secondary: ``edge_interior_ratio > 1``, the ``outline`` keeping more than removing.
``small_object_detector`` (is the square just the smallest thing?)
    primary: small circles raise the margin over square-free controls; maps:
    ``smallest_object_mass > square_mass`` and that contrast above each null baseline's.
    Secondary: large squares, doubling and halving in logits; ``circle_mass > square_mass`` on
    ``large_squares``.
``passes_randomization`` (per method and layer)
    the median similarity (``spearman_abs`` by default) of the maps to the trained model's is
    below ``threshold`` (0.5) once every layer is re-initialized (cascading, last step) and,
    where it ran, for the shuffled-label model. Supported = passes; rejected = its maps stay
    similar (it is flagged).

Examples
--------
>>> import pandas as pd, numpy as np
>>> rng = np.random.default_rng(0)
>>> metrics = pd.DataFrame({"set": "base", "image": np.arange(30), "method": "model",
...                         "layer": "", "reduction": "", "metric": "logit_margin",
...                         "value": rng.normal(3, 1, 30), "note": ""})
>>> spec = HypothesisSpec("margin_positive", set="base", metric="logit_margin", margin=1.0)
>>> table = evaluate(metrics, hypotheses=[spec])
>>> table[["statistic", "verdict"]].values.tolist()
[['overall', 'supported'], ['logit_margin > 0', 'supported']]
"""

from __future__ import annotations

import pandas as pd

from densevis.analysis.baselines import BASELINES
from densevis.analysis.hypothesis_context import Context
from densevis.analysis.hypothesis_registry import (COLUMNS, CONTROL_SETS, HYPOTHESES, MODEL,
                                                   OVERALL_RULE, RANDOMIZATION,
                                                   ANY_SQUARE_SET, Hypothesis, HypothesisSpec,
                                                   Statistic, default_specs, hypothesis, resolve)
from densevis.analysis.stats import adjust, combine_verdicts
from densevis.errors import DensevisError


# ------------------------------------------------------------------------------------ built-ins
@hypothesis("localizes_square",
            "Do the maps put relevance on the square beyond its area and beyond null maps?", [
                Statistic("mass_minus_area", "mass_minus_area > 0", "mass share",
                          sets=ANY_SQUARE_SET),
                Statistic("density_ratio", "density_ratio > 1", "ratio", sets=ANY_SQUARE_SET),
                Statistic("mass_vs_baseline", "mass_minus_area > {baseline}'s", "mass share",
                          per_baseline=True, sets=ANY_SQUARE_SET)])
def localizes_square(context: Context) -> None:
    set_name = context.square_set("mass_minus_area")
    for method, layer in context.explained(set_name, "mass_minus_area"):
        mass = context.series(set_name, "mass_minus_area", method, layer)
        context.test("mass_minus_area", method, layer, set_name, mass)
        context.test("density_ratio", method, layer, set_name,
                     context.series(set_name, "density_ratio", method, layer), null=1.0)
        for baseline in context.baselines:
            context.test("mass_vs_baseline", method, layer, set_name, mass,
                         context.baseline(set_name, "mass_minus_area", baseline, method, layer),
                         baseline=baseline)


@hypothesis("edge_detector", "Is the model an edge/line detector: would a line alone do?", [
    Statistic("lines_vs_control", "logit_margin: lines_only > square-free control", "logit",
              kind="behaviour", sets=(("lines_only",), CONTROL_SETS)),
    Statistic("sides_vs_removed", "logit_delta_sides > logit_delta_removed", "logit",
              kind="behaviour", sets=(("pairs",),)),
    Statistic("outline_vs_removed", "logit_delta_outline > logit_delta_removed", "logit",
              kind="behaviour", role="secondary", sets=(("pairs",),)),
    Statistic("line_vs_circle_mass", "line_mass > circle_mass", "area-corrected mass",
              sets=(("lines_only",),)),
    Statistic("line_vs_circle_mass_vs_baseline", "line_mass - circle_mass > {baseline}'s",
              "area-corrected mass", per_baseline=True, sets=(("lines_only",),)),
    Statistic("edge_interior_ratio", "edge_interior_ratio > 1", "ratio", role="secondary",
              sets=ANY_SQUARE_SET)])
def edge_detector(context: Context) -> None:
    context.mass_contrast("line_vs_circle_mass", "lines_only", "line_mass", "circle_mass")
    square_set = context.square_set("edge_interior_ratio")
    for method, layer in context.explained(square_set, "edge_interior_ratio"):
        context.test("edge_interior_ratio", method, layer, square_set,
                     context.series(square_set, "edge_interior_ratio", method, layer), null=1.0)
    control, control_set = context.control()
    context.test("lines_vs_control", MODEL, "", f"lines_only, {control_set}",
                 context.series("lines_only", "logit_margin"), control, paired=False)
    context.pairs_delta("sides_vs_removed", "sides", "removed")
    context.pairs_delta("outline_vs_removed", "outline", "removed")


@hypothesis("small_object_detector", "Is the model a small-object detector: is the square just "
            "the smallest thing?", [
                Statistic("small_circles_vs_control",
                          "logit_margin: small_circles > square-free control", "logit",
                          kind="behaviour", sets=(("small_circles",), CONTROL_SETS)),
                Statistic("large_vs_base_squares",
                          "logit_margin: large_squares < base-size squares", "logit",
                          kind="behaviour", role="secondary", direction="less",
                          sets=(("large_squares",), ("base", "squares_only"))),
                Statistic("double_delta", "logit_delta_double < 0", "logit", kind="behaviour",
                          role="secondary", direction="less", sets=(("pairs",),)),
                Statistic("half_vs_double", "logit_delta_half > logit_delta_double", "logit",
                          kind="behaviour", role="secondary", sets=(("pairs",),)),
                Statistic("smallest_vs_square_mass", "smallest_object_mass > square_mass",
                          "area-corrected mass", sets=ANY_SQUARE_SET),
                Statistic("smallest_vs_square_mass_vs_baseline",
                          "smallest_object_mass - square_mass > {baseline}'s",
                          "area-corrected mass", per_baseline=True, sets=ANY_SQUARE_SET),
                Statistic("large_squares_circle_vs_square_mass",
                          "circle_mass > square_mass on large_squares", "area-corrected mass",
                          role="secondary", sets=(("large_squares",),))])
def small_object_detector(context: Context) -> None:
    square_set = context.square_set("smallest_object_mass")
    context.mass_contrast("smallest_vs_square_mass", square_set, "smallest_object_mass",
                          "square_mass")
    for method, layer in context.explained("large_squares", "circle_mass"):
        context.test("large_squares_circle_vs_square_mass", method, layer, "large_squares",
                     context.series("large_squares", "circle_mass", method, layer),
                     context.series("large_squares", "square_mass", method, layer))
    control, control_set = context.control()
    context.test("small_circles_vs_control", MODEL, "", f"small_circles, {control_set}",
                 context.series("small_circles", "logit_margin"), control, paired=False)
    squares, squares_set = context.by_label("base", 1), "base (label 1)"
    if not len(squares):
        squares, squares_set = context.series("squares_only", "logit_margin"), "squares_only"
    context.test("large_vs_base_squares", MODEL, "", f"large_squares, {squares_set}",
                 context.series("large_squares", "logit_margin"), squares, paired=False)
    context.test("double_delta", MODEL, "", "pairs", context.series("pairs", "logit_delta_double"))
    context.pairs_delta("half_vs_double", "half", "double")


@hypothesis(RANDOMIZATION, "Do the maps change when the model's weights (or labels) are "
            "randomized, as maps that explain the model must?", [
                Statistic("cascading", "cascading, all layers: median {similarity} < "
                          "{threshold:g}", "similarity", direction="less"),
                Statistic("shuffled_labels", "shuffled labels: median {similarity} < "
                          "{threshold:g}", "similarity", direction="less", required=False)],
            source="similarity", threshold=0.5, similarity="spearman_abs")
def passes_randomization(context: Context) -> None:
    """At the last cascading step (every layer group re-initialized) and for the shuffled-label
    model (``test == "data"``), per method and layer."""
    similarity, threshold = context.similarity, context.options["threshold"]
    rows = similarity[similarity["metric"] == context.options["similarity"]]
    fit = similarity.loc[similarity["metric"] == "label_fit", "value"]
    fitted = (f"the shuffled-label model reproduces {fit.mean():.0%} of its {len(fit)} "
              f"shuffled training labels" if len(fit) else "")
    for test, key in (("cascading", "cascading"), ("data", "shuffled_labels")):
        part = rows[rows["test"] == test]
        if part.empty:
            continue
        part = part[part["step_index"] == part["step_index"].max()]
        for (method, layer), group in part.groupby(["method", "layer"], sort=True):
            context.test(key, method, layer, test, group.set_index("image")["value"],
                         null=threshold, note=fitted if test == "data" else "")


# ------------------------------------------------------------------------------------ evaluate
def missing_primaries(definition: Hypothesis, spec: HypothesisSpec, method: str,
                       group: pd.DataFrame, baselines: list[str]) -> list[str]:
    """Keys of the required primary statistics a (method, layer) group lacks (a custom
    hypothesis has one statistic: its group cannot lack it)."""
    if definition.name not in HYPOTHESES:
        return []
    kind = "behaviour" if method == MODEL else "maps"
    expected = []
    for s in definition.statistics:
        if s.role == "primary" and s.required and s.kind == kind and \
                (not spec.statistics or s.key in spec.statistics):
            expected += [f"{s.key}.{b}" for b in baselines] if s.per_baseline else [s.key]
    found = set(group["statistic_key"])
    return [key for key in expected if key not in found]


def randomization_gate(table: pd.DataFrame) -> dict:
    """``(method, layer) -> verdict`` of ``passes_randomization``'s overall in ``table``."""
    checks = {}
    rows = table[table["hypothesis"] == RANDOMIZATION]
    for (method, layer), group in rows.groupby(["method", "layer"], sort=False):
        primary = group[group["role"] == "primary"]
        checks[(method, layer)] = combine_verdicts(primary["verdict"]) if len(primary) \
            else "inconclusive"
    return checks


def _gate_note(method: str, layer: str, check: str | None, hypothesis_name: str) -> str:
    where = f"{method}{f' at {layer}' if layer else ''}"
    reason = {None: "has no randomization check in this table",
              "inconclusive": "has an inconclusive randomization check",
              "rejected": "fails passes_randomization: its maps do not show the model"}[check]
    return (f"{where} {reason}, so its statistics (all supported) are no evidence for "
            f"{hypothesis_name}")


def overall(table: pd.DataFrame, definitions: dict, specs: dict,
            baselines: list[str]) -> pd.DataFrame:
    """One ``overall`` row per (hypothesis, method, layer) of a finished table (see the module
    docstring): the intersection-union verdict of its primary statistics, inconclusive when one
    is missing (``baselines``: those the per-baseline statistics should cover), and, for maps,
    gated by ``passes_randomization`` in the same table."""
    checks = randomization_gate(table)
    rows = []
    for (name, method, layer), group in table.groupby(["hypothesis", "method", "layer"],
                                                      sort=False):
        definition, spec = definitions[name], specs[name]
        parts = group[group["role"] == "primary"]
        verdict, notes = combine_verdicts(parts["verdict"]), []
        missing = missing_primaries(definition, spec, method, group, baselines)
        if missing or parts.empty:
            verdict = "inconclusive" if verdict == "supported" else verdict
            notes.append(f"primary statistics not tested: {', '.join(missing) or 'all'}")
        if name != RANDOMIZATION and method != MODEL and verdict == "supported" \
                and checks.get((method, layer)) != "supported":
            verdict = "inconclusive"
            notes.append(_gate_note(method, layer, checks.get((method, layer)), name))
        rows.append({"hypothesis": name, "method": method, "layer": layer,
                     "statistic": "overall", "statistic_key": "overall", "role": "overall",
                     "p_value": parts["p_value"].max(), "p_adjusted": parts["p_adjusted"].max(),
                     "verdict": verdict, "family": group["family"].iloc[0],
                     "alpha": group["alpha"].iloc[0], "test": "intersection-union",
                     "rule": OVERALL_RULE, "note": "; ".join(notes),
                     "sets": ", ".join(sorted(set(parts["sets"])))})
    return pd.DataFrame(rows, columns=table.columns)


def evaluate(metrics: pd.DataFrame | None, similarity: pd.DataFrame | None = None,
             hypotheses: list[HypothesisSpec] | None = None) -> pd.DataFrame:
    """The hypotheses table: every row of ``hypotheses`` (default: :func:`default_specs`) on
    ``metrics`` and the sanity ``similarity`` table, finished within its family, with the
    ``overall`` rows first. ``densevis analyze``, ``densevis run`` and the pytest plugin all
    get their table from here.

    Families: the spec's ``family`` (default: the hypothesis' name) + ``/behaviour`` for the
    model's rows or ``/maps`` for the maps' rows: what the model does and what its maps show are
    separate questions.
    """
    if metrics is None or metrics.empty:  # e.g. only the randomization checks
        metrics = pd.DataFrame(columns=["set", "image", "method", "layer", "metric", "value"])
    specs = list(default_specs() if hypotheses is None else hypotheses)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise DensevisError(f"hypotheses listed twice: "
                            f"{', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    definitions = {spec.name: resolve(spec) for spec in specs}
    present = set(metrics["method"])
    baselines = [b for b in BASELINES if b in present]  # the null maps scored with the maps
    parts = []
    for spec in specs:
        definition = definitions[spec.name]
        source = similarity if definition.source == "similarity" else metrics
        if source is None or source.empty:
            continue
        context = Context(definition, spec, metrics, similarity, baselines)
        definition.compute(context)
        rows = context.frame()
        if spec.methods:
            rows = rows[rows["method"].isin(spec.methods) | (rows["method"] == MODEL)]
        if spec.layers:
            rows = rows[rows["layer"].isin(spec.layers) | (rows["layer"] == "")]
        family = spec.family or spec.name
        parts.append(rows.assign(family=[f"{family}/{'behaviour' if m == MODEL else 'maps'}"
                                         for m in rows["method"]]))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    table = adjust(pd.concat(parts, ignore_index=True), family="family")[COLUMNS]
    by_name = {spec.name: spec for spec in specs}
    table = pd.concat([overall(table, definitions, by_name, baselines), table],
                      ignore_index=True)
    for column in ("n", "family_size"):  # counts, empty on the overall rows
        table[column] = table[column].astype("Int64")
    table["paired"] = table["paired"].astype("boolean")  # a flag, not a number
    return table
