"""Evaluation: numbers against hand computations, square geometry against re-rendered objects,
the command line and its bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from densevis.cli import main
from densevis.errors import DensevisError
from densevis.evaluation import accuracy_breakdown, evaluate_checkpoint
from densevis.model import build_model, predict, save_checkpoint
from probes import ProbeSet, write_probe_set
from probes.measure import scene_geometry


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_model("original"), "original", 64)
    return path


def _value(table, breakdown, group, metric, set_name=None):
    rows = table[(table["breakdown"] == breakdown) & (table["group"] == group)
                 & (table["metric"] == metric)]
    if set_name is not None:
        rows = rows[rows["set"] == set_name]
    assert len(rows) == 1, (breakdown, group, metric)
    return float(rows["value"].iloc[0])


def test_summary_matches_a_hand_computation():
    # six images at 128 px; squares of 6, 12 and 30 px (bins <10, 10-14, >=25 ... at 128 px)
    rows = pd.DataFrame({
        "set": "s",
        "label":        [0, 0, 0, 1, 1, 1],
        "prediction":   [0, 1, 0, 1, 0, 1],
        # the square logit minus the no-square logit, whatever the label
        "logit_margin": [-1.0, 2.0, -3.0, 0.5, -1.0, 4.5],
        "square_side":  [np.nan, np.nan, np.nan, 6, 12, 30],
        "touches_circle": [False, False, False, False, True, True],
        "invisible":    [False, False, False, False, True, False],
        "circles_merge": [False, True, True, False, True, False],
    })
    rows["correct"] = rows["label"] == rows["prediction"]
    table = accuracy_breakdown(rows, image_size=128)
    assert _value(table, "all", "all", "n") == 6
    assert _value(table, "all", "all", "accuracy") == pytest.approx(4 / 6)
    assert [_value(table, "all", "all", m) for m in ("tn", "fp", "fn", "tp")] == [2, 1, 1, 2]
    assert _value(table, "all", "all", "positive_rate") == pytest.approx(3 / 6)
    assert _value(table, "all", "all", "mean_logit_margin") == pytest.approx(
        (-1 + 2 - 3 + 0.5 - 1 + 4.5) / 6)
    assert _value(table, "label", "0", "mean_logit_margin") == pytest.approx((-1 + 2 - 3) / 3)
    # counts are ints in the table, so the CSV writes them without ".0"; rates stay exact floats
    counts = table[table["metric"].isin(["n", "tn", "fp", "fn", "tp", "invisible_squares"])]
    assert {type(v) for v in counts["value"]} == {int}
    text = table.to_csv(index=False)
    assert "s,all,all,n,6\n" in text and "s,all,all,accuracy,0.6666666666666666\n" in text
    assert _value(table, "all", "all", "ceiling") == pytest.approx(5 / 6)
    assert _value(table, "all", "all", "invisible_squares") == 1
    # clean: the three negatives and the positive whose square touches nothing
    assert _value(table, "clean", "clean", "n") == 4
    assert _value(table, "clean", "clean", "accuracy") == pytest.approx(3 / 4)
    assert _value(table, "touches_circle", "yes", "accuracy") == pytest.approx(1 / 2)
    assert _value(table, "touches_circle", "no", "accuracy") == 1.0
    assert _value(table, "label", "0", "positive_rate") == pytest.approx(1 / 3)
    # negatives whose circles merge: one of two wrong; the one whose circles do not: right
    assert _value(table, "circles_merge", "yes", "accuracy") == pytest.approx(1 / 2)
    assert _value(table, "circles_merge", "no", "n") == 1
    # size bins at 128 px: edges 0, 10, 15, 20, 25, 37.5 px
    assert _value(table, "square_size", "<10px", "accuracy") == 1.0
    assert _value(table, "square_size", "10-14px", "accuracy") == 0.0
    assert _value(table, "square_size", "25-37px", "accuracy") == 1.0
    assert set(table.columns) == {"set", "breakdown", "group", "metric", "value"}


def _check_geometry_by_brute_force(probe: ProbeSet) -> pd.DataFrame:
    """scene_geometry against each image's objects re-rendered one by one."""
    geometry = scene_geometry(probe, batch_size=7)
    for image in range(len(probe)):
        table, footprints = probe.object_masks(image)
        squares = footprints[(table["kind"] == "square").to_numpy()]
        circles = footprints[(table["kind"] == "circle").to_numpy()]
        row = geometry.iloc[image]
        # circles merge: two circles' pixels at Chebyshev distance <= 1 (touching or overlapping)
        pixels = [np.argwhere(c) for c in circles]
        merge = any(np.abs(a[:, None] - b[None]).max(-1).min() <= 1
                    for k, a in enumerate(pixels) for b in pixels[k + 1:])
        assert row["circles_merge"] == merge, image
        if len(squares) == 0:
            assert np.isnan(row["square_side"]) and not row["touches_circle"]
            continue
        assert row["square_side"] == table.loc[table["kind"] == "square", "size"].max()
        square_pixels = np.argwhere(squares.any(0))
        circle_pixels = np.argwhere(circles.any(0)) if len(circles) else np.zeros((0, 2))
        # touching: some circle pixel at Chebyshev distance <= 1 from some square pixel
        distance = (np.abs(square_pixels[:, None] - circle_pixels[None]).max(-1).min()
                    if len(circle_pixels) else np.inf)
        assert row["touches_circle"] == (distance <= 1), image
        covered = circles.any(0)[tuple(square_pixels.T)].all() if len(circles) else False
        assert row["invisible"] == covered, image
    return geometry


def test_scene_geometry_matches_the_objects_rerendered_one_by_one(base_file):
    geometry = _check_geometry_by_brute_force(ProbeSet(base_file))
    for column in ("touches_circle", "circles_merge"):
        assert geometry[column].any() and not geometry[column].all(), column


def test_invisible_squares_are_found_and_set_the_ceiling(tmp_path, checkpoint):
    # crowded scenes: nine large circles and a small square in every image
    crowded = write_probe_set(tmp_path / "crowded.h5", "base", n=24, seed=0, size=64, workers=1,
                              params={"min_circles": 9, "min_diameter": 40,
                                      "max_side": 20, "positive_rate": 1.0})
    geometry = _check_geometry_by_brute_force(ProbeSet(crowded))
    invisible = int(geometry["invisible"].sum())
    assert 0 < invisible < len(geometry)
    table, _ = evaluate_checkpoint(checkpoint, [crowded], device="cpu")
    assert _value(table, "all", "all", "ceiling") == pytest.approx(1 - invisible / 24)


def test_cli_table_matches_a_hand_computation(checkpoint, base_file, probe_dir, tmp_path,
                                              capsys):
    out = tmp_path / "eval.csv"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(base_file),
                 "--data", str(probe_dir / "pairs.h5"), "--out", str(out),
                 "--per-image", str(tmp_path / "rows.csv"), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "== base:" in printed and "== pairs:" in printed
    table = pd.read_csv(out, dtype={"group": str})
    from densevis.model import load_checkpoint
    model, _ = load_checkpoint(checkpoint)
    for name, path in (("base", base_file), ("pairs", probe_dir / "pairs.h5")):
        probe = ProbeSet(path)
        logits = predict(model, probe, batch_size=5)
        labels = probe.labels[:].astype(int)
        prediction = logits.argmax(1)
        margin = logits[:, 1] - logits[:, 0]  # positive minus negative, whatever the label
        assert _value(table, "all", "all", "accuracy", name) == pytest.approx(
            (prediction == labels).mean())
        assert _value(table, "all", "all", "positive_rate", name) == pytest.approx(
            prediction.mean())
        assert _value(table, "all", "all", "mean_logit_margin", name) == pytest.approx(
            margin.mean(), rel=1e-4)
        negatives = labels == 0
        assert _value(table, "label", "0", "mean_logit_margin", name) == pytest.approx(
            margin[negatives].mean(), rel=1e-4)
        assert _value(table, "all", "all", "fn", name) == ((labels == 1) & (prediction == 0)).sum()
    pairs = ProbeSet(probe_dir / "pairs.h5")
    variants = table[(table["set"] == "pairs") & (table["breakdown"] == "variant")]
    assert set(variants["group"]) == set(pairs.variants[:8])
    removed = variants[(variants["group"] == "removed") & (variants["metric"] == "n")]
    assert float(removed["value"].iloc[0]) == len(pairs) / 8
    per_image = pd.read_csv(tmp_path / "rows.csv")
    assert len(per_image) == len(ProbeSet(base_file)) + len(pairs)
    assert "mean logit margin (square minus no-square)" in printed
    with open(out) as text:  # counts as integers in the CSV text
        assert all(not line.rsplit(",", 1)[1].strip().endswith(".0")
                   for line in text if line.split(",")[3] in ("n", "tp", "fp", "tn", "fn"))


def test_two_files_of_one_set_are_told_apart(checkpoint, base_file, tmp_path, capsys):
    other = write_probe_set(tmp_path / "other.h5", "base", n=8, seed=9, size=64, workers=1)
    out = tmp_path / "eval.csv"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(base_file),
                 "--data", str(other), "--out", str(out)]) == 0
    assert set(pd.read_csv(out)["set"]) == {"base[base.h5]", "base[other.h5]"}
    table, _ = evaluate_checkpoint(checkpoint, [base_file, other], device="cpu",
                                   names=["base", "base (val)"])
    assert set(table["set"]) == {"base", "base (val)"}
    with pytest.raises(DensevisError, match="1 names for 2 probe files"):
        evaluate_checkpoint(checkpoint, [base_file, other], device="cpu", names=["base"])


def test_checkpoint_of_another_format(base_file, tmp_path, one_line_error):
    torch.save({"format": "keras/2", "weights": []}, tmp_path / "other.pt")
    code = main(["evaluate", "--checkpoint", str(tmp_path / "other.pt"), "--data", str(base_file),
                 "--out", str(tmp_path / "eval.csv")])
    assert code == 2
    one_line_error("evaluate", "not a densevis checkpoint")
    assert not (tmp_path / "eval.csv").exists()


def test_image_size_of_data_and_checkpoint_must_match(checkpoint, tmp_path, one_line_error):
    other = write_probe_set(tmp_path / "big.h5", "base", n=4, seed=1, size=80, workers=1)
    code = main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(other),
                 "--out", str(tmp_path / "eval.csv")])
    assert code == 2
    one_line_error("evaluate", "80px", "64px", "--size 64")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.h5"]


def test_missing_data_and_existing_output(checkpoint, base_file, tmp_path, one_line_error):
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data",
                 str(tmp_path / "nope.h5")]) == 2
    one_line_error("evaluate", "nope.h5", "not found")
    out = tmp_path / "eval.csv"
    out.write_text("keep me")
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(base_file),
                 "--out", str(out)]) == 2
    one_line_error("evaluate", "exists", "--force")
    assert out.read_text() == "keep me"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--data", str(base_file),
                 "--out", str(out), "--force"]) == 0
    assert out.read_text().startswith("set,breakdown,group,metric,value")
