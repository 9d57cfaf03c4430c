"""The report's page from a run's tables: the answers first, then the sections in reading order.

:func:`report_page` is what ``densevis run`` and ``densevis report`` render. Its order: the answers
block (:mod:`densevis.report.answers`), a table of contents, then *Hypotheses* (verdicts with their
key effect, a forest plot per hypothesis, every statistic), *Behaviour per probe set*,
*Localization of the square*, *Sanity checks*, *Saliency maps* and *Provenance*. Detail tables
start collapsed; layers are in network order and methods in the spec's order everywhere.
"""

from __future__ import annotations

import html
import json
from functools import partial
from typing import Any, Callable, Hashable

import pandas as pd

from densevis.analysis.hypotheses import HYPOTHESES
from densevis.analysis.hypothesis_registry import MODEL, HypothesisSpec, resolve
from densevis.analysis.stats import VERDICT_RULE
from densevis.errors import DensevisError
from densevis.report import plots
from densevis.report.answers import (answers, answers_markdown, facts, models_of,
                                     verdict_rows)
from densevis.report.figure_style import blank, in_order, method_order
from densevis.report.html import Figure, Section, Table, answers_html, render_page
from probes.pool import call_in_processes, default_workers


def run_order(tables: dict[str, pd.DataFrame], record: dict | None) -> dict:
    """What the page orders by: ``hypotheses`` (names, the spec's order), ``questions`` (name ->
    question, custom ones included), ``methods`` (the saliency registry's order, as every
    figure orders them: :func:`~densevis.report.figure_style.method_order`) and ``layers``
    (network order), from the provenance record where there is one, else from the tables'
    order of appearance."""
    spec = (record or {}).get("spec") or {}
    table = tables["hypotheses"]
    names = [h["name"] for h in spec.get("hypotheses", [])] or \
        list(dict.fromkeys(table["hypothesis"]))
    questions = {}
    for entry in spec.get("hypotheses", []):
        try:
            questions[entry["name"]] = resolve(HypothesisSpec(**entry)).question
        except (TypeError, DensevisError):  # a record of another version: the registry's question
            questions[entry["name"]] = getattr(HYPOTHESES.get(entry["name"]), "question", "")
    methods = method_order(list(spec.get("saliency", {}).get("methods", []))
                           + [m for m in table["method"] if blank(m) not in ("", MODEL)])
    layers = list((record or {}).get("layers", []))
    seen = table["layer"].dropna().astype(str)
    layers += [layer for layer in dict.fromkeys(seen) if layer and layer not in layers]
    return {"hypotheses": names, "questions": questions, "methods": methods, "layers": layers}


def sort_rows(frame: pd.DataFrame, order: dict) -> pd.DataFrame:
    """``frame`` sorted (stably) by hypothesis, method and layer in ``order``'s orders
    (:func:`~densevis.report.figure_style.in_order`: pixel maps, no layer, first; values the
    order lacks after, by first appearance); behaviour rows (method ``model``) first."""
    keys = {"hypothesis": order["hypotheses"], "method": ["model"] + order["methods"],
            "layer": order["layers"]}
    present = [column for column in keys if column in frame.columns]
    if frame.empty or not present:
        return frame

    def rank(column: pd.Series) -> pd.Series:
        position = {value: k for k, value in enumerate(in_order(column, keys[column.name]))}
        return column.map(blank).map(position)
    return frame.sort_values(present, key=rank, kind="stable")


def verdict_table(rows: pd.DataFrame, order: dict) -> pd.DataFrame:
    """Per hypothesis, method and layer: its overall verdict beside the effect and bounds of its
    first primary statistic (the key statistic), and how many models agreed."""
    overall = rows[rows["statistic_key"] == "overall"]
    primary = rows[(rows["role"] == "primary")].drop_duplicates(["hypothesis", "method", "layer"])
    key = primary.set_index(["hypothesis", "method", "layer"])
    records = []
    for row in overall.itertuples():
        index = (row.hypothesis, row.method, row.layer)
        first = key.loc[index] if index in key.index else None
        records.append({
            "hypothesis": row.hypothesis, "method": row.method, "layer": row.layer,
            "verdict": row.verdict, "key statistic": None if first is None else first["statistic"],
            "effect": None if first is None else first["effect"],
            "ci_low": None if first is None else first["ci_low"],
            "ci_high": None if first is None else first["ci_high"],
            **{c: getattr(row, c) for c in ("models_supported", "models_rejected", "models")
               if c in overall.columns},
            "note": getattr(row, "note", "")})
    return sort_rows(pd.DataFrame(records), order) if records else pd.DataFrame()


DETAIL_COLUMNS = ["hypothesis", "method", "layer", "statistic", "statistic_key", "role", "unit",
                  "effect", "ci_low", "ci_high", "ci_level", "effect_margin", "p_value", "p_adjusted",
                  "verdict",
                  "n", "models_supported", "models_rejected", "models", "model_effects",
                  "mean_effect", "mean_ci_low", "mean_ci_high", "mean_verdict", "sets", "note"]


def _first_model(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the table's first model (all rows when it has no ``model`` column)."""
    if "model" not in table.columns or table.empty:
        return table
    return table[table["model"] == table["model"].iloc[0]]


def _basis(hypotheses: pd.DataFrame) -> str:
    models = models_of(hypotheses)
    if not models:
        return ""
    text = (f"These verdicts rest on {len(models)} trained model{'s' if len(models) != 1 else ''}"
            f" ({', '.join(models)}). ")
    if len(verdict_rows(hypotheses)) != len(hypotheses):
        text += ("Shown: the replicated verdicts, supported iff every model's own verdict is "
                 "supported and rejected iff every model's is rejected (models_supported and "
                 "models_rejected of models say how many agreed); each model's rows are in "
                 "hypotheses.csv. ")
    return text


def sections(tables: dict[str, pd.DataFrame], record: dict | None = None,
             maps: dict[str, list[Figure]] | Callable[[], dict] | None = None,
             order: dict | None = None) -> list[Section]:
    """The report's sections from whichever run tables are given (``hypotheses`` required).

    ``maps``: figures of the saliency maps by section (keys ``sanity``, ``sets``, ``pairs``,
    ``panels``), drawn from the model and maps files by the caller, or what draws them (called
    beside the other figures). Verdicts are the replicated ones where the table has them;
    localization and sanity figures show the first model, the behaviour every model.
    ``order``: :func:`run_order` of the same tables and record, when the caller has it.

    The figures are drawn at once, a process per core (:func:`drawn`)."""
    order = order or run_order(tables, record)
    hypotheses = tables["hypotheses"]
    rows = sort_rows(verdict_rows(hypotheses), order)
    detail = rows[rows["statistic_key"] != "overall"]
    summary = _first_model(tables.get("summary", pd.DataFrame()))
    metrics = _first_model(tables.get("metrics", pd.DataFrame()))
    similarity = _first_model(tables.get("sanity", pd.DataFrame()))
    measure, threshold = _threshold(record)
    # the measure the verdict reads, and the signed one (a sign flip keeps the absolute rank
    # correlation high); SSIM and HOG are in sanity.csv
    sanity_metrics = list(dict.fromkeys((measure, "spearman_abs", "spearman_signed")))
    localization_metrics = ("mass_minus_area", "density_ratio", "pointing_game")
    png = drawn({
        **{("forest", name): partial(plots.hypothesis_forest, detail, name, order["layers"])
           for name in order["hypotheses"]},
        **({"behaviour": partial(plots.behaviour_bars, tables["behaviour"])}
           if "behaviour" in tables else {}),
        **{("localization", metric): partial(plots.localization_by_layer, metrics, metric,
                                             order["layers"], seed=_analysis_seed(record))
           for metric in localization_metrics if not metrics.empty},
        **{("sanity", metric): partial(plots.sanity_figure, similarity, metric,
                                       threshold if metric == measure else None,
                                       order["layers"])
           for metric in sanity_metrics if "sanity" in tables},
        **({"maps": maps} if callable(maps) else {})})
    maps = png["maps"] if callable(maps) else maps or {}
    forests = [Figure(png[("forest", name)], f"{name}: effect and family-adjusted bounds of "
                                             f"every statistic")
               for name in order["hypotheses"] if png[("forest", name)]]
    out = [Section(
        "Hypotheses",
        f"{_basis(hypotheses)}Each hypothesis is tested per method and layer on per-image "
        f"statistics. {VERDICT_RULE} Families: each declared family, split into the model's "
        f"behaviour and its maps. The overall verdict of a hypothesis is supported only if all "
        f"its primary statistics are (none missing), and rejected if any is; the table shows it "
        f"beside its first primary statistic. A map-based overall verdict is supported only for "
        f"a method and layer that pass passes_randomization; otherwise it is at most "
        f"inconclusive and its note says why. Method 'model' rows are the model's behaviour "
        f"(logits), not a saliency map. Each row's rule with its numbers is in hypotheses.csv.",
        tables=[Table(verdict_table(rows, order), "Verdicts per hypothesis, method and layer"),
                Table(detail[[c for c in DETAIL_COLUMNS if c in detail.columns]],
                      "Every statistic")],
        figures=forests)]
    if "behaviour" in tables:
        behaviour = tables["behaviour"]
        out.append(Section(
            "Behaviour per probe set",
            "What the model says on each set: how often it calls an image a square (positive "
            "rate, Wilson 95% CI), the mean logit margin (square logit minus no-square logit, "
            "t 95% CI) and accuracy against the ground truth; on 'pairs', one row per edit of "
            "the same scenes. The evaluation table breaks the held-out accuracy down by label, "
            "square size and contact with circles.",
            tables=[Table(behaviour, "Behaviour per probe set and model", open=True)]
            + [Table(tables["evaluation"], "Evaluation breakdowns") for _ in [0]
               if "evaluation" in tables],
            figures=[Figure(png["behaviour"], "called a square and logit margin per set")]
            if png["behaviour"] else []))
    if "summary" in tables or "metrics" in tables:
        figures = [Figure(png[("localization", metric)],
                          f"{metric} by method and layer (first model), median and bootstrap "
                          f"95% CI, against the null baselines")
                   for metric in localization_metrics if png.get(("localization", metric))]
        shown = summary[(summary["set"] == "base") & summary["metric"].isin(
            ["mass_minus_area", "density_ratio", "pointing_game", "edge_interior_ratio"])] \
            if not summary.empty else summary
        out.append(Section(
            "Localization of the square",
            "Per method and layer on the base set's images with a square: how much of the map's "
            "mass lies on the square beyond its area share (mass_minus_area, 0 for a uniform "
            "map), the density on the square relative to the image (density_ratio, 1 for a "
            "uniform map) and whether the map's maximum falls on it (pointing_game); the bands "
            "are the null baselines (random, Sobel edge map, centred Gaussian) through the same "
            "metrics.",
            tables=[Table(sort_rows(shown, order), "Localization summary (first model)")]
            if not shown.empty else [], figures=figures))
    if "sanity" in tables:
        figures = [Figure(png[("sanity", metric)], f"randomization checks, {metric} (first "
                                                   f"model)")
                   for metric in sanity_metrics if png[("sanity", metric)]]
        out.append(Section(
            "Sanity checks (Adebayo et al. 2018)",
            "Similarity of each method's maps to the trained model's maps as layers are "
            "re-initialized from the top down (cascading), one at a time (independent), and for "
            "a model trained on shuffled labels. A method whose maps stay similar does not "
            f"explain the model: it passes when the median similarity once every layer is "
            f"re-initialized is certainly below the threshold ({measure} {threshold:g}).",
            figures=maps.get("sanity", []) + figures))
    map_figures = maps.get("sets", []) + maps.get("pairs", []) + maps.get("panels", [])
    if map_figures:
        out.append(Section(
            "Saliency maps",
            "Per probe set, typical and misclassified images with each method's map of the "
            "square logit ('why square?'), the prediction and the logit margin; the eight edits "
            "of one 'pairs' scene side by side; the original study's panels.",
            figures=map_figures))
    if record:
        out.append(Section("Provenance", "Spec, seeds, versions, file hashes and stage timings.",
                           preformatted=json.dumps(record, indent=2, default=str)))
    return out


def drawn(calls: dict[Hashable, Callable[[], Any]]) -> dict:
    """Each call's result (a figure's PNG bytes, or None) by its key, the calls made at once,
    a forked process per core (matplotlib draws on one core; the report's figures are
    independent). A call that uses torch must run it with one thread
    (:func:`densevis.model.torch_threads`): OpenMP cannot start threads in a forked process."""
    keys = list(calls)
    return dict(zip(keys, call_in_processes([calls[key] for key in keys], default_workers())))


def _threshold(record: dict | None) -> tuple[str, float]:
    """The similarity measure passes_randomization reads and its pass threshold (the spec's,
    else the registry's defaults)."""
    options = HYPOTHESES["passes_randomization"].options
    measure, threshold = options["similarity"], float(options["threshold"])
    for entry in ((record or {}).get("spec") or {}).get("hypotheses", []):
        if entry.get("name") == "passes_randomization":
            measure = entry.get("similarity") or measure
            threshold = threshold if entry.get("threshold") is None else float(entry["threshold"])
    return measure, threshold


def _analysis_seed(record: dict | None) -> int:
    return int((((record or {}).get("spec") or {}).get("analysis") or {}).get("seed", 0))


def report_page(title: str, tables: dict[str, pd.DataFrame], record: dict | None = None,
                maps: dict[str, list[Figure]] | Callable[[], dict] | None = None
                ) -> tuple[str, list[Section], str]:
    """The whole page (answers block, contents, sections), its sections (for the figures) and
    the answers as Markdown."""
    order = run_order(tables, record)
    parts = sections(tables, record, maps, order)
    found = answers(tables, order["hypotheses"], order["questions"])
    lines = facts(tables, record)
    question = ((record or {}).get("spec") or {}).get("description", "")
    lead = answers_html(found, lines)
    if question:
        lead = f"<p class='question'>{html.escape(' '.join(question.split()))}</p>" + lead
    return render_page(title, parts, lead), parts, answers_markdown(title, found, lines, question)
