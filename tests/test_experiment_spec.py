"""Experiment specs: the default loads, quick overrides apply, bad specs name key, file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from densevis.cli import main
from densevis.errors import DensevisError
from densevis.experiment.spec import DEFAULT_SPEC, load_spec, parse_spec

REPO = Path(__file__).resolve().parents[1]


def test_default_spec_is_the_experiments_file_and_asks_the_original_questions():
    assert (REPO / "experiments" / "default.toml").read_text() == DEFAULT_SPEC.read_text()
    spec = load_spec()
    assert spec.model.arch == "original"
    assert set(spec.probes.sets) >= {"base", "lines_only", "large_squares", "small_circles",
                                     "pairs"}
    assert {"vanilla", "guided", "gradcam", "guided_gradcam", "integrated_gradients",
            "smoothgrad"} <= set(spec.saliency.methods)
    assert spec.saliency.layers == ["all"]
    assert [h.name for h in spec.hypotheses] == ["localizes_square", "edge_detector",
                                                  "small_object_detector",
                                                  "passes_randomization"]


def test_quick_overrides_only_what_it_names():
    full, quick = load_spec(), load_spec(quick=True)
    assert quick.data.size < full.data.size and quick.data.train < full.data.train
    assert quick.saliency.methods == full.saliency.methods
    assert quick.hypotheses == full.hypotheses


@pytest.mark.parametrize("text, message", [
    ("[data]\nsize = 64\nsise = 3\n", "<t> line 3: key 'data.sise' is unknown; valid: "),
    ("[data]\n\nsize = 'big'\n", "<t> line 3: key 'data.size' must be an integer, got 'big'"),
    ("colour = 1\n", "<t> line 1: key 'colour' is unknown"),
    ("[probes]\nsets = ['base', 'triangles']\n", "line 2: key 'probes.sets' names unknown probe "
                                                 "set 'triangles'"),
    ("[[hypotheses]]\nname = 'edge_detector'\n[[hypotheses]]\nname = 'small_object_detector'"
     "\nalpha = 2\n", "line 5: key 'hypotheses[1].alpha' must be between 0 and 1"),
    # checked against the hypothesis registry when the spec loads
    ("[[hypotheses]]\nname = 'edge_detecter'\n", "line 2: key 'hypotheses[0].name' names no "
     "registered hypothesis (localizes_square, edge_detector, small_object_detector, "
     "passes_randomization); a custom hypothesis needs set and metric"),
    ("[[hypotheses]]\nname = 'edge_detector'\n[[hypotheses]]\nname = 'edge_detector'\n",
     "line 4: key 'hypotheses[1].name' lists 'edge_detector' a second time"),
    ("[[hypotheses]]\nname = 'edge_detector'\nstatistics = ['sides']\n",
     "line 3: key 'hypotheses[0].statistics' names unknown statistic 'sides' of edge_detector; "
     "valid: lines_vs_control, sides_vs_removed"),
    ("[[hypotheses]]\nname = 'edge_detector'\nmargins = {lines_vs_control = -1}\n",
     "line 3: key 'hypotheses[0].margins' lines_vs_control must be a number >= 0"),
    ("[[hypotheses]]\nname = 'edge_detector'\nmargin = 2.0\n",
     "line 3: key 'hypotheses[0].margin' is for custom hypotheses; 'edge_detector' is "
     "registered (set margins = {statistic = value})"),
    ("[[hypotheses]]\nname = 'localizes_square'\nthreshold = 0.3\n",
     "line 3: key 'hypotheses[0].threshold' is not an option of localizes_square"),
    ("[[hypotheses]]\nname = 'passes_randomization'\nsimilarity = 'pearson'\n",
     "line 3: key 'hypotheses[0].similarity' must be one of spearman_abs"),
    ("[probes]\nsets = ['base']\n[[hypotheses]]\nname = 'edge_detector'\n",
     "line 4: key 'hypotheses[0].name' edge_detector needs probe set lines_only; add it"),
    ("[analysis.sanity]\nmethods = []\n[[hypotheses]]\nname = 'passes_randomization'\n",
     "line 4: key 'hypotheses[0].name' passes_randomization needs the cascading randomization "
     "check"),
    ("[[hypotheses]]\nname = 'mine'\nset = 'base'\n", "line 2: key 'hypotheses[0].name' names "
     "no registered hypothesis"),
    ("[[hypotheses]]\nname = 'mine'\nset = 'pairs'\nmetric = 'auroc'\n[probes]\n"
     "sets = ['base']\n", "line 3: key 'hypotheses[0].set' names probe set 'pairs', which the "
     "run does not make"),
    ("[[hypotheses]]\nname = 'mine'\nset = 'base'\nmetric = 'auroc'\nmethods = ['gradkam']\n",
     "line 5: key 'hypotheses[0].methods' names unknown method 'gradkam'"),
    ("[analysis]\nbootstrap = 100\n", "line 2: key 'analysis.bootstrap' is unknown"),
    ("[[hypotheses]]\nmetric = 'x'\n", "line 1: key 'hypotheses[0].name' is missing"),
    ("[model]\ncheckpoint = 'nowhere.pt'\n", "line 2: key 'model.checkpoint' names a missing "
                                             "file"),
    ("[model]\ncheckpoint = '.'\n", "line 2: key 'model.checkpoint' names a folder"),
    ("[quick.data]\nsizes = 2\n", "line 2: key 'quick.data.sizes' is unknown"),
    ("[model]\nreplicates = 0\n", "line 2: key 'model.replicates' must be at least 1"),
    ("[model]\nseeds = [1, 1]\n", "line 2: key 'model.seeds' lists a seed twice"),
    ("[model]\nseeds = [1, 2]\nreplicates = 3\n", "line 3: key 'model.replicates' is 3 but "
                                                   "model.seeds lists 2 seeds"),
    ("[model]\nseeds = 'auto'\n", "line 2: key 'model.seeds' must be a list of an integer"),
    ("[data\n", "<t>: not valid TOML"),
])
def test_bad_specs_name_the_key_and_line(text, message):
    with pytest.raises(DensevisError) as error:
        parse_spec(text, "<t>", quick=True)
    assert message in str(error.value)


def test_bad_spec_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text("[saliency]\nbatch_size = 'large'\n")
    assert main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{spec} line 2: key 'saliency.batch_size' must be an integer" in err
    assert not (tmp_path / "out").exists()
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((REPO / "experiments").rglob("*.toml")),
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_shipped_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.name and spec.hypotheses


def test_replicates_are_planned_from_the_spec(tmp_path):
    """Unset: three models on CPU; a count from the first seed; explicit seeds; checkpoints
    named by their files, one replicate each; data per model only with resample."""
    from densevis.experiment.plan import data_plan, data_seed, replicate_plan

    assert [r.label for r in replicate_plan(parse_spec("[saliency]\ndevice = 'cpu'\n"))] == \
        ["seed0", "seed1", "seed2"]
    spec = parse_spec("[model]\nseed = 4\nreplicates = 2\n")
    assert [(r.label, r.seed) for r in replicate_plan(spec)] == [("seed4", 4), ("seed5", 5)]
    plan = replicate_plan(parse_spec("[model]\nseeds = [7, 3]\n"))
    assert [(r.label, r.seed) for r in plan] == [("seed7", 7), ("seed3", 3)]
    roles = [role for role, *_ in data_plan(parse_spec("[model]\nseeds = [7, 3]\n"), plan)]
    assert roles.count("train") == 1 and "train/seed3" not in roles  # shared training data
    resampled = parse_spec("[data]\nresample = true\n[model]\nseeds = [7, 3]\n")
    files = {role: seed for role, _, _, seed, _ in data_plan(resampled,
                                                              replicate_plan(resampled))}
    assert {"train/seed7", "train/seed3", "val/seed7", "val/seed3"} <= set(files)
    assert files["train/seed7"] != files["train/seed3"]
    # a probe set's images do not depend on which other sets the run makes
    one = {role: seed for role, _, _, seed, _ in data_plan(
        parse_spec("[probes]\nsets = ['lines_only']\n"), plan)}
    two = {role: seed for role, _, _, seed, _ in data_plan(
        parse_spec("[probes]\nsets = ['base', 'pairs', 'lines_only']\n"), plan)}
    assert one["lines_only"] == two["lines_only"] == data_seed(0, "lines_only")
    first = tmp_path / "a" / "model.pt"
    second = tmp_path / "b" / "model.pt"
    for path in (first, second):
        path.parent.mkdir()
        path.write_bytes(b"")
    from densevis.experiment.spec import ExperimentSpec, ModelSpec
    given = ExperimentSpec(model=ModelSpec(checkpoint=[str(first), str(second)]))
    assert [(r.label, r.given) for r in replicate_plan(given)] == [("model", first),
                                                                    ("model-2", second)]
