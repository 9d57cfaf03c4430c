"""The hypothesis registry and :func:`evaluate`: planted answers, the randomization gate with
no holes, missing primaries, resolution-matched baselines, and one registered definition per
new hypothesis."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from densevis.analysis.hypotheses import (HYPOTHESES, RANDOMIZATION, Context, HypothesisSpec,
                                          Statistic, evaluate, hypothesis)
from densevis.errors import DensevisError

SPECS = {name: HypothesisSpec(name) for name in HYPOTHESES}


def _metrics(rows):
    columns = ["set", "image", "method", "layer", "metric", "value"]
    return pd.DataFrame(rows, columns=columns).assign(reduction="abs", note="")


def _similarity(values: dict, n: int = 20, rng=None) -> pd.DataFrame:
    """A sanity table: per (method, layer) the similarity at the last cascading step."""
    rng = rng or np.random.default_rng(0)
    return pd.concat(pd.DataFrame({
        "test": "cascading", "step": "all", "step_index": 1, "method": method, "layer": layer,
        "image": range(n), "metric": "spearman_abs", "value": rng.normal(centre, 0.02, n)})
        for (method, layer), centre in values.items())


def _by(table, *keys):
    return table.set_index(list(keys))["verdict"]


def test_planted_answers_of_every_builtin():
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
    table = evaluate(_metrics(rows), _similarity({("good", ""): 0.05, ("flat", ""): 0.05}))
    verdicts = _by(table, "hypothesis", "method", "statistic_key")
    assert verdicts[("localizes_square", "good", "mass_minus_area")] == "supported"
    assert verdicts[("localizes_square", "good", "mass_vs_baseline.sobel")] == "supported"
    assert verdicts[("localizes_square", "flat", "mass_minus_area")] == "rejected"
    assert verdicts[("localizes_square", "flat", "mass_vs_baseline.sobel")] == "rejected"
    assert verdicts[("localizes_square", "good", "overall")] == "supported"
    assert verdicts[("edge_detector", "good", "edge_interior_ratio")] == "rejected"
    assert verdicts[("edge_detector", "good", "line_vs_circle_mass")] == "rejected"
    assert verdicts[("edge_detector", "model", "sides_vs_removed")] == "rejected"
    assert verdicts[("edge_detector", "model", "outline_vs_removed")] == "supported"
    assert verdicts[("edge_detector", "model", "lines_vs_control")] == "rejected"
    assert verdicts[("small_object_detector", "good", "smallest_vs_square_mass")] == "rejected"
    assert verdicts[("small_object_detector", "good",
                     "large_squares_circle_vs_square_mass")] == "supported"
    assert verdicts[("small_object_detector", "model", "double_delta")] == "rejected"
    assert verdicts[("small_object_detector", "good", "overall")] == "rejected"
    lines = table[table["statistic_key"] == "lines_vs_control"]
    assert lines["sets"].iloc[0] == "lines_only, base (label 0)"
    assert lines["estimand"].iloc[0] == "Hodges-Lehmann shift"
    assert table["rule"].notna().all() and set(table["verdict"]) <= {
        "supported", "rejected", "inconclusive"}
    assert table["statistic"].iloc[0] == "overall"  # overall rows first
    assert set(table.loc[table["method"] == "model", "family"]) <= {
        "edge_detector/behaviour", "small_object_detector/behaviour"}


def test_square_set_falls_back_when_base_is_not_scored():
    values = np.random.default_rng(2).normal(0.2, 0.05, 20)
    metrics = _metrics([("squares_only", i, "vanilla", "", "mass_minus_area", v)
                        for i, v in enumerate(values)])
    rows = evaluate(metrics, hypotheses=[SPECS["localizes_square"]])
    statistic = rows[rows["statistic_key"] == "mass_minus_area"]
    assert statistic["sets"].tolist() == ["squares_only"]
    assert statistic["verdict"].tolist() == ["supported"]


def test_passes_randomization_at_the_stated_threshold():
    """Passing means the median similarity is certainly below the threshold itself (0.5), not
    below threshold - margin: 0.45 passes, 0.97 fails, and only the last cascading step
    counts."""
    rng = np.random.default_rng(0)
    frames = []
    for step, method in itertools.product((1, 2), ("gradient", "edges")):
        similar = rng.normal(0.45, 0.02, 20) if method == "gradient" and step == 2 else \
            rng.normal(0.97, 0.01, 20)
        frames.append(pd.DataFrame({"test": "cascading", "step": f"s{step}", "step_index": step,
                                    "method": method, "layer": "", "image": range(20),
                                    "metric": "spearman_abs", "value": similar}))
    table = evaluate(pd.DataFrame(), pd.concat(frames), [SPECS[RANDOMIZATION]])
    verdicts = _by(table, "method", "statistic_key")
    assert verdicts[("gradient", "overall")] == "supported"
    assert verdicts[("edges", "overall")] == "rejected"
    assert table["statistic"].iloc[-1] == "cascading, all layers: median spearman_abs < 0.5"
    stricter = evaluate(pd.DataFrame(), pd.concat(frames),
                        [HypothesisSpec(RANDOMIZATION, threshold=0.4)])
    assert _by(stricter, "method", "statistic_key")[("gradient", "overall")] == "rejected"


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
    table = evaluate(_metrics(rows), _similarity({("edgy", ""): 0.05, ("cue", ""): 0.05}),
                     [SPECS["edge_detector"], SPECS[RANDOMIZATION]])
    verdicts = _by(table[table["hypothesis"] == "edge_detector"], "method", "statistic_key")
    assert verdicts[("edgy", "line_vs_circle_mass")] == "supported"
    assert verdicts[("edgy", "line_vs_circle_mass_vs_baseline.sobel")] == "rejected"
    assert verdicts[("edgy", "overall")] == "rejected"
    assert verdicts[("cue", "line_vs_circle_mass_vs_baseline.sobel")] == "supported"
    assert verdicts[("cue", "overall")] == "supported"


def test_the_gate_has_no_holes():
    """A map verdict is supported only where the randomization check ran and passed for that
    method and layer: failing, inconclusive and unchecked maps are inconclusive, with a note
    that says which."""
    rng = np.random.default_rng(4)
    methods = ("faithful", "image_only", "unsure", "unchecked")
    metrics = _metrics([("base", i, method, "", "mass_minus_area", rng.normal(0.3, 0.05))
                        for i in range(30) for method in methods])
    similarity = pd.concat([_similarity({("faithful", ""): 0.05, ("image_only", ""): 0.95}),
                            _similarity({("unsure", ""): 0.5}, n=20, rng=rng)
                            .assign(value=lambda f: np.linspace(0.2, 0.8, len(f)))])
    spec = HypothesisSpec("localizes_square", statistics=["mass_minus_area"])
    table = evaluate(metrics, similarity, [spec, SPECS[RANDOMIZATION]])
    rows = table[table["statistic"] == "overall"].set_index(["hypothesis", "method"])
    assert rows.loc[("localizes_square", "faithful"), "verdict"] == "supported"
    expected_notes = {"image_only": "fails passes_randomization",
                      "unsure": "inconclusive randomization check",
                      "unchecked": "has no randomization check in this table"}
    for method, note in expected_notes.items():
        assert rows.loc[("localizes_square", method), "verdict"] == "inconclusive"
        assert note in rows.loc[("localizes_square", method), "note"]
    statistic = table[(table["method"] == "image_only")
                      & (table["statistic_key"] == "mass_minus_area")]
    assert statistic["verdict"].tolist() == ["supported"]  # the statistic itself is reported
    without_sanity = evaluate(metrics, None, [spec])
    assert "supported" not in set(without_sanity.query("statistic == 'overall'")["verdict"])


def test_a_missing_primary_leaves_the_overall_inconclusive():
    """density_ratio is a primary of localizes_square: without it nothing is supported."""
    rng = np.random.default_rng(6)
    metrics = _metrics([("base", i, "vanilla", "", "mass_minus_area", rng.normal(0.3, 0.05))
                        for i in range(30)])
    table = evaluate(metrics, _similarity({("vanilla", ""): 0.05}),
                     [SPECS["localizes_square"], SPECS[RANDOMIZATION]])
    row = table[(table["hypothesis"] == "localizes_square")
                & (table["statistic"] == "overall")].iloc[0]
    assert row["verdict"] == "inconclusive"
    assert "primary statistics not tested: density_ratio" in row["note"]


def test_layer_maps_are_compared_with_baselines_at_their_resolution():
    """A Grad-CAM at a coarse layer is compared with the Sobel map pooled to that layer's grid
    (layer rows of the baseline), a pixel method with the full-resolution one."""
    rng = np.random.default_rng(9)
    rows = []
    for i in range(30):
        rows += [("base", i, "sobel", "", "mass_minus_area", rng.normal(0.4, 0.02)),
                 ("base", i, "sobel", "denseblock4", "mass_minus_area", rng.normal(0.1, 0.02)),
                 ("base", i, "gradcam", "denseblock4", "mass_minus_area", rng.normal(0.3, 0.02)),
                 ("base", i, "vanilla", "", "mass_minus_area", rng.normal(0.3, 0.02))]
    table = evaluate(_metrics(rows), hypotheses=[HypothesisSpec(
        "localizes_square", statistics=["mass_vs_baseline"])])
    verdicts = _by(table, "method", "statistic_key")
    assert verdicts[("gradcam", "mass_vs_baseline.sobel")] == "supported"
    assert verdicts[("vanilla", "mass_vs_baseline.sobel")] == "rejected"


def test_adding_a_hypothesis_is_one_registered_definition():
    @hypothesis("square_is_pointed_at", "Does the map's maximum fall on the square?",
                [Statistic("pointing", "pointing_game > 0.5", "ratio", sets=(("base",),))])
    def square_is_pointed_at(context: Context) -> None:
        for method, layer in context.explained("base", "pointing_game"):
            context.test("pointing", method, layer, "base",
                         context.series("base", "pointing_game", method, layer), null=0.5)
    try:
        metrics = _metrics([("base", i, "vanilla", "", "pointing_game", 1.0) for i in range(40)])
        table = evaluate(metrics, _similarity({("vanilla", ""): 0.05}),
                         [HypothesisSpec("square_is_pointed_at", margins={"pointing": 0.3}),
                          SPECS[RANDOMIZATION]])
        verdicts = _by(table, "hypothesis", "statistic_key")
        assert verdicts[("square_is_pointed_at", "overall")] == "supported"
        assert table.loc[table["statistic_key"] == "pointing", "effect_margin"].tolist() == [0.3]
        from densevis.experiment import parse_spec
        spec = parse_spec('[probes]\nsets = ["lines_only"]\n[[hypotheses]]\n'
                          'name = "square_is_pointed_at"\n', "new.toml")
        assert False, f"a spec without the base set was accepted: {spec}"
    except DensevisError as exc:
        assert "new.toml line 4: key 'hypotheses[0].name' square_is_pointed_at needs probe " \
               "set base" in str(exc)
    finally:
        del HYPOTHESES["square_is_pointed_at"]


def test_evaluate_refuses_unknown_and_repeated_hypotheses():
    with pytest.raises(DensevisError, match="not registered.*needs set and metric"):
        evaluate(_metrics([]), hypotheses=[HypothesisSpec("edge_detecter")])
    with pytest.raises(DensevisError, match="listed twice: edge_detector"):
        evaluate(_metrics([]), hypotheses=[SPECS["edge_detector"]] * 2)


def test_a_spec_imports_the_module_that_registers_its_hypothesis(tmp_path):
    from densevis.experiment import load_spec

    (tmp_path / "my_hypotheses.py").write_text(
        "from densevis.analysis import Statistic, hypothesis\n\n"
        "@hypothesis('lines_are_seen', 'Do the maps see the lines?',\n"
        "            [Statistic('line_mass', 'line_mass > 1', 'ratio', sets=(('lines_only',),))])\n"
        "def lines_are_seen(context):\n"
        "    for method, layer in context.explained('lines_only', 'line_mass'):\n"
        "        context.test('line_mass', method, layer, 'lines_only',\n"
        "                     context.series('lines_only', 'line_mass', method, layer), null=1)\n")
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text('imports = ["my_hypotheses"]\n[[hypotheses]]\nname = "lines_are_seen"\n')
    try:
        spec = load_spec(spec_file)
        assert spec.hypotheses[0].name == "lines_are_seen" and "lines_are_seen" in HYPOTHESES
    finally:
        HYPOTHESES.pop("lines_are_seen", None)
    spec_file.write_text('imports = ["no_such_module"]\n')
    with pytest.raises(DensevisError, match="spec.toml line 1: key 'imports' is not usable: "
                                            "module 'no_such_module' failed to import"):
        load_spec(spec_file)
