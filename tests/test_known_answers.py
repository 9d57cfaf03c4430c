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
images_per_set = 48
pair_scenes = 12
[model]
labels = "{rule}"
epochs = 6
[probes]
sets = ["lines_only", "small_circles", "circles_only", "pairs"]
[saliency]
methods = ["vanilla"]
[analysis]
baselines = []
[analysis.sanity]
methods = []
[[hypotheses]]
name = "edge_detector"
family = "cues"
[[hypotheses]]
name = "small_object_detector"
family = "cues"
[outputs]
figures = false
html = false
"""


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory):
    """Overall behaviour verdict per (planted rule, hypothesis)."""
    out = tmp_path_factory.mktemp("planted")
    found = {}
    for rule in ("square", "edge", "small", "shuffled"):
        spec = parse_spec(PLANTED.format(rule=rule), f"planted-{rule}.toml")
        run_dir = run_experiment(spec, out, progress=False, echo=lambda _: None)
        table = pd.read_csv(run_dir / "hypotheses.csv")
        rows = table[(table["method"] == "model") & (table["statistic"] == "overall")]
        found.update({(rule, row.hypothesis): row.verdict for row in rows.itertuples()})
    return found


@pytest.mark.parametrize("rule, hypothesis, expected", [
    ("edge", "edge_detector", {"supported"}),
    ("edge", "small_object_detector", {"rejected", "inconclusive"}),
    ("small", "small_object_detector", {"supported"}),
    ("small", "edge_detector", {"rejected", "inconclusive"}),
    ("square", "edge_detector", {"rejected", "inconclusive"}),
    ("square", "small_object_detector", {"rejected", "inconclusive"}),
    # no cue: no false "supported" at the stated alpha
    ("shuffled", "edge_detector", {"rejected", "inconclusive"}),
    ("shuffled", "small_object_detector", {"rejected", "inconclusive"}),
])
def test_planted_cue_gets_the_right_verdict(verdicts, rule, hypothesis, expected):
    assert verdicts[(rule, hypothesis)] in expected, verdicts
