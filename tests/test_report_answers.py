"""The report's answers block and page structure, on small hand-made tables."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from densevis.analysis.hypotheses import HYPOTHESES
from densevis.report.answers import answers, answers_markdown, facts
from densevis.report.html import Section, Table, render_page
from densevis.report.sections import run_order, sort_rows, verdict_table

NAN = float("nan")


def _row(model, hypothesis, method, layer, key, verdict, effect=NAN, low=NAN, high=NAN,
         role="primary", statistic=None, supported=None, rejected=None, models=None, sets=""):
    return {"model": model, "hypothesis": hypothesis, "method": method, "layer": layer,
            "statistic": statistic or key, "statistic_key": key, "role": role,
            "effect": effect, "ci_low": low, "ci_high": high, "verdict": verdict,
            "models_supported": supported, "models_rejected": rejected, "models": models,
            "sets": sets, "note": ""}


@pytest.fixture
def tables():
    rows = []
    for model in ("replicated", "seed0", "seed1"):
        replicated = model == "replicated"
        agree = dict(supported=2, rejected=0, models=2) if replicated else {}
        rows += [
            _row(model, "edge_detector", "model", "", "overall",
                 "supported" if replicated else "supported", role="overall", **agree),
            _row(model, "edge_detector", "model", "", "lines_vs_control", "supported", 6.4,
                 3.0, 12.0, statistic="logit_margin: lines_only > square-free control",
                 sets="lines_only, circles_only", **agree),
            _row(model, "edge_detector", "model", "", "outline_vs_removed", "supported", 9.0,
                 4.0, 15.0, role="secondary", sets="pairs", **agree),
            _row(model, "edge_detector", "gradcam", "denseblock4", "overall", "inconclusive",
                 role="overall"),
            _row(model, "localizes_square", "gradcam", "denseblock4", "overall", "rejected",
                 role="overall"),
            _row(model, "localizes_square", "gradcam", "conv0", "overall", "supported",
                 role="overall"),
            _row(model, "localizes_square", "gradcam", "conv0", "mass_minus_area", "supported",
                 0.2, 0.1, 0.3),
            _row(model, "passes_randomization", "vanilla", "", "overall", "rejected",
                 role="overall"),
            _row(model, "passes_randomization", "gradcam", "conv0", "overall", "supported",
                 role="overall"),
            _row(model, "passes_randomization", "gradcam", "denseblock4", "overall",
                 "inconclusive", role="overall")]
    hypotheses = pd.DataFrame(rows)
    behaviour = pd.DataFrame([
        {"model": m, "set": s, "variant": v, "positive_rate": r, "positive_rate_ci_low": 0.0,
         "positive_rate_ci_high": 1.0}
        for m, rates in (("seed0", (0.8, 0.0, 1.0, 0.0)), ("seed1", (0.6, 0.1, 1.0, 0.5)))
        for (s, v), r in zip((("lines_only", ""), ("circles_only", ""), ("pairs", "outline"),
                              ("pairs", "removed")), rates)])
    evaluation = pd.DataFrame([
        {"model": m, "set": "base (val)", "breakdown": b, "group": b, "metric": "accuracy",
         "value": v} for m, b, v in (("seed0", "all", 0.97), ("seed0", "clean", 0.99),
                                     ("seed1", "all", 0.95), ("seed1", "clean", 0.98))])
    return {"hypotheses": hypotheses, "behaviour": behaviour, "evaluation": evaluation}


def test_each_question_gets_the_replicated_verdict_and_its_evidence(tables):
    names = ["edge_detector", "localizes_square", "passes_randomization", "not_run"]
    found = {a.name: a for a in answers(tables, names)}
    edge = found["edge_detector"]
    assert edge.question == HYPOTHESES["edge_detector"].question
    assert edge.verdict == "supported" and "replicated over 2 models" in edge.basis
    text = "\n".join(edge.evidence)
    assert "+6.40 logits [+3.00, +12.00], supported (models: 2 supported, 0 rejected, of 2)" in text
    assert "[secondary]" in text.splitlines()[1]  # primaries first
    # how often each set it reads is called a square: mean and each model; pairs per edit
    assert "lines_only 70% (models: 80%, 60%)" in text
    assert "circles_only 5% (models: 0%, 10%)" in text
    assert "pairs edits (mean over models) outline 100%, removed 25%" in text
    assert "maps, 1 methods/layers: inconclusive at 1" in text
    local = found["localizes_square"]
    assert local.verdict == "mixed" and "supported: gradcam/conv0" in local.evidence
    sanity = found["passes_randomization"]
    assert sanity.evidence[:2] == ["passes: gradcam/conv0", "fails: vanilla"]
    assert found["not_run"].verdict == "not tested"


def test_a_single_models_table_is_read_as_it_is(tables):
    one = {**tables, "hypotheses": tables["hypotheses"].query("model == 'seed0'")
           .drop(columns=["models_supported", "models_rejected", "models"])}
    edge = answers(one, ["edge_detector"])[0]
    assert edge.basis == "behaviour, model seed0"
    assert "models:" not in edge.evidence[0]


def test_facts_give_accuracy_per_model_and_the_device(tables):
    record = {"date": "2026-11-30 09:00:00 UTC", "versions": {"densevis": "0.1.0"},
              "device": {"saliency": "cpu", "train": "cpu", "threads": 2, "processes": 1}}
    lines = facts(tables, record)
    assert lines[0] == "held-out accuracy: 97.0% (seed0), 95.0% (seed1)"
    assert lines[1] == "clean held-out: 99.0% (seed0), 98.0% (seed1)"
    assert "2 trained models: seed0, seed1" in lines
    assert "device cpu (2 threads)" in lines and "run 2026-11-30 09:00:00 UTC" in lines
    markdown = answers_markdown("run", answers(tables, ["edge_detector"]), lines, "Why?")
    assert markdown.startswith("**run**\n\nWhy?\n\n1. **Is the model an edge/line detector")
    assert "*supported*" in markdown and "held-out accuracy: 97.0%" in markdown


def test_rows_follow_the_network_and_the_specs_order(tables):
    record = {"layers": ["conv0", "denseblock1", "denseblock4"],
              "spec": {"hypotheses": [{"name": "passes_randomization"},
                                      {"name": "localizes_square"}],
                       "saliency": {"methods": ["vanilla", "gradcam"]}}}
    order = run_order(tables, record)
    assert order["hypotheses"] == ["passes_randomization", "localizes_square"]
    assert order["layers"][:3] == ["conv0", "denseblock1", "denseblock4"]
    shuffled = tables["hypotheses"].sample(frac=1, random_state=0)
    rows = sort_rows(shuffled[shuffled["model"] == "replicated"], order)
    places = list(dict.fromkeys(zip(rows["hypothesis"], rows["method"], rows["layer"])))
    assert places[:3] == [("passes_randomization", "vanilla", ""),
                          ("passes_randomization", "gradcam", "conv0"),
                          ("passes_randomization", "gradcam", "denseblock4")]
    verdicts = verdict_table(rows, order)
    conv0 = verdicts[(verdicts["hypothesis"] == "localizes_square")
                     & (verdicts["layer"] == "conv0")].iloc[0]
    assert conv0["verdict"] == "supported" and conv0["effect"] == 0.2
    assert (conv0["ci_low"], conv0["ci_high"]) == (0.1, 0.3)


def test_the_page_links_every_section_and_table_and_collapses_details():
    frame = pd.DataFrame({"a": np.arange(3), "verdict": ["supported", "rejected", ""]})
    page = render_page("t", [Section("One & two", "x", tables=[Table(frame, "Detail")]),
                             Section("Three", tables=[frame])], lead="<div id='answers'></div>")
    links = re.findall(r"href='#([^']+)'", page)
    ids = set(re.findall(r"id='([^']+)'", page))
    assert links and set(links) <= ids
    assert page.index("id='answers'") < page.index("id='contents'") < page.index("<section")
    assert "<details id='one-two-detail'><summary>Detail (3 rows)" in page  # collapsed
    assert "<details id='three-1' open>" in page  # an untitled table stays open
    assert "<script>" in page and "src=" not in page


def test_the_readme_findings_are_a_default_runs_answers_block():
    """README, "What the default experiment found", opens with a default run's answers.md as
    written (``answers_markdown``): one numbered answer with a verdict per hypothesis of the
    default spec, then the models' accuracies."""
    from pathlib import Path

    from densevis.experiment import load_spec

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- answers:begin -->\n")[1].split("<!-- answers:end -->")[0]
    spec = load_spec(None)
    assert block.startswith(f"**densevis run: {spec.name}**\n\n{' '.join(spec.description.split())}")
    answered = re.findall(r"^\d+\. \*\*(.+?)\*\* — \*(\w+)\*", block, flags=re.M)
    questions = [HYPOTHESES[h.name].question for h in spec.hypotheses]
    assert [q for q, _ in answered] == questions
    assert all(v in ("supported", "rejected", "inconclusive", "mixed") for _, v in answered)
    assert "held-out accuracy:" in block and "3 trained models" in block
