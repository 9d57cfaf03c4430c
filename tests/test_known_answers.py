"""Known-answer validation: models whose true cue is planted get the right verdicts.

Each model is trained on the ``mixed`` set (circles of every size, a square and lines, each cue
independent) under one label rule (``densevis.labels``): a genuine square detector, a line/edge
detector (positive iff any straight segment), a small-object detector (positive iff any object
is below the smallest base square, whatever its shape), and a model trained on shuffled labels
(no cue at all). Then the whole experiment runs on the counterfactual sets and the verdicts on
the model's behaviour are checked against the planted truth. At this scale (64 px, tiny models)
the test shows the decision rules, not the full-scale figures (see the README).
"""

from __future__ import annotations

import pandas as pd
import pytest

from densevis.experiment import parse_spec, run_experiment

PLANTED = """
name = "planted-{rule}"
[data]
size = 64
train_set = "mixed"
train = 2400
val = 400
images_per_set = 128
pair_scenes = 24
[model]
labels = "{rule}"
epochs = 6
[probes]
sets = ["base", "lines_only", "small_circles", "circles_only", "pairs"]
[saliency]
methods = ["vanilla", "gradcam"]
layers = ["denseblock3"]
[analysis]
baselines = ["sobel"]
[analysis.sanity]
images = 12
independent = false
data_randomization = false
[[hypotheses]]
name = "edge_detector"
family = "cues"
[[hypotheses]]
name = "small_object_detector"
family = "cues"
[[hypotheses]]
name = "passes_randomization"
family = "sanity"
[outputs]
figures = false
html = false
"""


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """The hypotheses table of each planted rule's run."""
    out = tmp_path_factory.mktemp("planted")
    found = {}
    for rule in ("square", "edge", "small", "shuffled"):
        spec = parse_spec(PLANTED.format(rule=rule), f"planted-{rule}.toml")
        run_dir = run_experiment(spec, out, progress=False, echo=lambda _: None)
        found[rule] = pd.read_csv(run_dir / "hypotheses.csv", keep_default_na=False,
                                  na_values=[""])
    return found


@pytest.mark.parametrize("rule, hypothesis, expected", [
    ("edge", "edge_detector", "supported"),
    ("edge", "small_object_detector", "rejected"),
    ("small", "small_object_detector", "supported"),
    ("small", "edge_detector", "rejected"),
    ("square", "edge_detector", "rejected"),
    ("square", "small_object_detector", "rejected"),
    # no cue: every behaviour hypothesis is rejected, none supported
    ("shuffled", "edge_detector", "rejected"),
    ("shuffled", "small_object_detector", "rejected"),
])
def test_planted_cue_gets_exactly_the_right_verdict(tables, rule, hypothesis, expected):
    table = tables[rule]
    row = table[(table["method"] == "model") & (table["statistic"] == "overall")
                & (table["hypothesis"] == hypothesis)]
    assert row["verdict"].tolist() == [expected], table[table["method"] == "model"][
        ["hypothesis", "statistic", "effect", "ci_low", "ci_high", "verdict"]].to_string()


@pytest.mark.parametrize("rule", ["square", "edge", "small", "shuffled"])
def test_no_map_verdict_is_supported_without_a_passing_randomization_check(tables, rule):
    table = tables[rule]
    overall = table[table["statistic"] == "overall"]
    passed = {(r.method, r.layer) for r in overall.itertuples()
              if r.hypothesis == "passes_randomization" and r.verdict == "supported"}
    maps = overall[(overall["method"] != "model")
                   & (overall["hypothesis"] != "passes_randomization")]
    assert len(maps), "the run has no map verdicts to check"
    for row in maps.itertuples():
        if (row.method, row.layer) not in passed:
            assert row.verdict != "supported", row
