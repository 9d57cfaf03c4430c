"""``densevis import``: a folder of PNGs and mask images becomes a probe file that train,
explain and analyze read; its bad input is one line, exit status 2, nothing written."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest
import skimage.io
import torch

from densevis.analysis.localization import METRICS
from densevis.cli import main
from densevis.maps import MapsWriter
from densevis.optimization import loss_weights
from densevis.recipe import TrainConfig
from probes import ProbeSet, file_sha256, write_arrays

SIZE = 32


def _save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    skimage.io.imsave(path, pixels, check_contrast=False)


def _square_folder(root, count=12, size=SIZE):
    """``count`` images ``im<k>.png``: odd k in class folder 1 with a white square on black (its
    mask, region ``object``, in ``masks/object``), even k black in class folder 0."""
    rng = np.random.default_rng(0)
    for k in range(count):
        image = np.zeros((size, size), np.uint8)
        if k % 2:
            x, y = rng.integers(1, size - 11, 2)
            image[y:y + 10, x:x + 10] = 255
            _save(root / "masks" / "object" / f"im{k:02d}.png", image)
        _save(root / "images" / str(k % 2) / f"im{k:02d}.png", image)
    return root / "images", root / "masks"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _square_folder(tmp_path_factory.mktemp("own"))


@pytest.fixture(scope="module")
def imported(folder, tmp_path_factory):
    images, masks = folder
    out = tmp_path_factory.mktemp("imported") / "own.h5"
    assert main(["import", str(images), "--masks", str(masks), "--name", "squares",
                 "--out", str(out)]) == 0
    return out


def test_import_reads_class_folders_in_sorted_order_with_masks(folder, imported, tmp_path,
                                                               capsys):
    probe = ProbeSet(imported)
    assert (probe.name, len(probe), probe.size, probe.seed) == ("squares", 12, SIZE, -1)
    names = probe.image_names().tolist()
    assert names == [f"0/im{k:02d}.png" for k in range(0, 12, 2)] + \
        [f"1/im{k:02d}.png" for k in range(1, 12, 2)]
    assert probe.labels[:].tolist() == [0] * 6 + [1] * 6
    assert probe.regions == ("object",) and probe.target == "object"
    images = probe.images[:]
    assert (probe.masks("object")[:] == (images > 0)).all() and images[6:].any()
    again = tmp_path / "again.h5"
    assert main(["import", str(folder[0]), "--masks", str(folder[1]), "--name", "squares",
                 "--out", str(again)]) == 0
    assert "12 images of 32x32, 6 positive; regions: object" in capsys.readouterr().out
    assert file_sha256(again) == file_sha256(imported)


def test_labels_table_colour_and_resize(tmp_path):
    rgb = np.zeros((48, 48, 3), np.uint8)
    rgb[8:40, 8:40] = (200, 100, 0)
    _save(tmp_path / "flat" / "b.png", rgb)
    _save(tmp_path / "flat" / "a.png", np.full((48, 48), 7, np.uint8))
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    mask = np.zeros((48, 48, 4), np.uint8)  # RGBA: alpha alone is not inside
    mask[..., 3] = 255
    mask[8:40, 8:40, 0] = 1
    _save(tmp_path / "masks" / "patch" / "b.png", mask)
    with open(tmp_path / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["name", "label"], ["b.png", 1], ["a.png", 0]])
    out = tmp_path / "flat.h5"
    assert main(["import", str(tmp_path / "flat"), "--labels", str(tmp_path / "labels.csv"),
                 "--masks", str(tmp_path / "masks"), "--size", "24", "--out", str(out)]) == 0
    probe = ProbeSet(out)
    assert probe.name == "flat" and probe.labels[:].tolist() == [0, 1] and probe.size == 24
    assert probe.image_names().tolist() == ["a.png", "b.png"]
    luma = round(0.2125 * 200 + 0.7154 * 100)
    assert probe.images[1][12, 12] == luma and (probe.images[0] == 7).all()
    patch = probe.masks("patch")[:]
    assert not patch[0].any() and patch[1].sum() == 16 * 16 and patch[1][4:20, 4:20].all()


def _odd_size(root):
    _save(root / "images" / "1" / "im99.png", np.zeros((40, 40), np.uint8))
    return [], "image", "im99.png is 40x40 px but", "im00.png is 32x32; all images must share"


def _not_square(root):
    _save(root / "images" / "1" / "im99.png", np.zeros((32, 30), np.uint8))
    return [], "im99.png is 30x32 px, not square"


def _no_class_folders(root):
    for path in (root / "images" / "0").iterdir():
        path.rename(root / "images" / path.name)
    for path in (root / "images" / "1").iterdir():
        path.rename(root / "images" / path.name)
    (root / "images" / "0").rmdir()
    (root / "images" / "1").rmdir()
    return [], "has no class folders; put the images in", "(--labels)"


def _other_class_folder(root):
    (root / "images" / "1").rename(root / "images" / "cats")
    return [], "has folders cats"


def _unlisted(root):
    _no_class_folders(root)
    (root / "labels.csv").write_text("name,label\nim00.png,0\n")
    return ["--labels", str(root / "labels.csv")], "--labels", "has no row"


def _orphan_mask(root):
    _save(root / "masks" / "object" / "nosuch.png", np.zeros((32, 32), np.uint8))
    return [], "--masks mask", "nosuch.png belongs to no image"


def _mask_size(root):
    _save(root / "masks" / "object" / "im01.png", np.zeros((16, 16), np.uint8))
    return [], "--masks mask", "im01.png is 16x16 px but its image"


def _unreadable(root):
    (root / "images" / "0" / "im98.png").write_text("not a png")
    return [], "cannot read image", "im98.png"


@pytest.mark.parametrize("make", [_odd_size, _not_square, _no_class_folders,
                                  _other_class_folder, _unlisted, _orphan_mask, _mask_size,
                                  _unreadable])
def test_bad_folders_are_one_line_exit_2_and_write_nothing(tmp_path, one_line_error, make):
    images, masks = _square_folder(tmp_path, count=4)
    extra, *fragments = make(tmp_path)
    out = tmp_path / "out.h5"
    assert main(["import", str(images), "--masks", str(masks), "--out", str(out), *extra]) == 2
    one_line_error("import", *fragments)
    assert not out.exists() and not list(tmp_path.glob(".out.h5*"))


@pytest.mark.parametrize("args, fragments", [
    (["--target", "tumour"], ["--target 'tumour' is not a region of the masks (regions: object)"]),
    (["--name", "base"], ["--name 'base' is the name of a generated set"]),
    (["--size", "4"], ["--size must be a side of at least 8 px"]),
])
def test_bad_options_are_one_line_exit_2(folder, tmp_path, one_line_error, args, fragments):
    out = tmp_path / "out.h5"
    assert main(["import", str(folder[0]), "--masks", str(folder[1]), "--out", str(out),
                 *args]) == 2
    one_line_error("import", *fragments)
    assert not out.exists()


def test_existing_output_needs_force(folder, tmp_path, one_line_error):
    out = tmp_path / "out.h5"
    out.write_text("keep me")
    assert main(["import", str(folder[0]), "--out", str(out)]) == 2
    one_line_error("import", "exists; pass --force")
    assert out.read_text() == "keep me"


def test_an_imported_file_trains_explains_and_is_scored_on_its_region(imported, tmp_path,
                                                                      capsys):
    probe = ProbeSet(imported)
    classes, per_image = loss_weights(probe, TrainConfig())
    assert per_image.tolist() == [1.0] * 12  # no objects: no hard-case weights
    model, maps, out = tmp_path / "model.pt", tmp_path / "maps.h5", tmp_path / "analysis"
    assert main(["train", "--data", str(imported), "--val", str(imported), "--out", str(model),
                 "--epochs", "1", "--batch-size", "4"]) == 0
    assert main(["evaluate", "--checkpoint", str(model), "--data", str(imported), "--out",
                 str(tmp_path / "evaluation.csv")]) == 0
    # no drawn scenes: no square breakdowns, which would describe squares it does not have
    evaluation = pd.read_csv(tmp_path / "evaluation.csv")
    assert set(evaluation["breakdown"]) == {"all", "label"}, set(evaluation["breakdown"])
    assert not evaluation["metric"].isin(["ceiling", "invisible_squares"]).any()
    assert main(["explain", "--checkpoint", str(model), "--data", str(imported), "--out",
                 str(maps), "--methods", "vanilla,gradcam", "--layers", "denseblock4"]) == 0
    assert main(["analyze", "--maps", str(maps), "--data", str(imported), "--out",
                 str(out)]) == 0
    metrics = pd.read_csv(out / "metrics.csv", keep_default_na=False, na_values=["", "nan"])
    assert set(metrics["set"]) == {"squares"}
    vanilla = metrics[(metrics["method"] == "vanilla")]
    for metric in METRICS + ("object_mass",):
        rows = vanilla[vanilla["metric"] == metric].set_index("image")
        assert sorted(rows.index) == list(range(12)), metric
        assert np.isfinite(rows.loc[6:, "value"]).all(), metric  # the positives
    negatives = vanilla[(vanilla["metric"] == "auroc") & (vanilla["image"] < 6)]
    assert negatives["value"].isna().all()
    assert (negatives["note"] == "empty mask: no object in this image").all()
    assert not metrics["note"].str.contains("square").any()
    assert not metrics["metric"].isin(["edge_interior_ratio", "smallest_object_mass"]).any()

    # the same images without masks: scored for behaviour, and the analysis says why it has no
    # localization rather than leaving them out silently
    unmasked = tmp_path / "unmasked.h5"
    with ProbeSet(imported) as probe:
        write_arrays(unmasked, probe.images[:], probe.labels[:], name="unmasked")
    capsys.readouterr()
    assert main(["explain", "--checkpoint", str(model), "--data", str(unmasked), "--out",
                 str(tmp_path / "unmasked-maps.h5"), "--methods", "vanilla"]) == 0
    assert main(["analyze", "--maps", str(tmp_path / "unmasked-maps.h5"), "--data",
                 str(unmasked), "--out", str(tmp_path / "unmasked-analysis")]) == 0
    assert f"note: {unmasked} has no target region" in capsys.readouterr().out
    scored = pd.read_csv(tmp_path / "unmasked-analysis" / "metrics.csv")
    assert not scored["metric"].isin(METRICS).any()
    assert "logit_margin" in set(scored["metric"])


def test_a_map_of_the_region_gets_the_top_localization_score(imported, tmp_path):
    probe = ProbeSet(imported)
    region = probe.masks("object")[:].astype(np.float32)
    keys = [("vanilla", None), ("gradcam", "denseblock4")]
    attrs = {"probe_sha256": file_sha256(imported), "probe_set": probe.name,
             "probe": str(imported)}
    labels = probe.labels[:].astype(np.int64)
    maps = tmp_path / "maps.h5"
    with MapsWriter(maps, len(probe), SIZE, 2, keys, attrs) as writer:
        writer.write(0, {keys[0]: region, keys[1]: 1.0 - region},
                     np.stack([np.zeros(12), labels * 2.0 - 1], 1), labels, np.arange(12))
    out = tmp_path / "analysis"
    assert main(["analyze", "--maps", str(maps), "--data", str(imported), "--out", str(out),
                 "--no-baselines"]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    positives = metrics[metrics["image"] >= 6].pivot_table(
        index="method", columns="metric", values="value", aggfunc="min")
    top = ["pointing_game", "pointing_game_tol", "relevance_mass", "relevance_rank", "auroc",
           "average_precision"]
    assert (positives.loc["vanilla", top] == 1.0).all()
    worst = metrics[(metrics["image"] >= 6) & (metrics["method"] == "gradcam")]
    assert (worst.set_index("metric").loc[["pointing_game", "relevance_mass", "auroc"],
                                          "value"] == 0.0).all()
    assert torch.isinf(torch.tensor(positives.loc["vanilla", "density_ratio"]))
