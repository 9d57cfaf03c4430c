"""The report's map figures: the choice of images, the square logit explained, colour scales by
the methods' declared signs, notes on maps with nothing to draw, the pairs strip, the cascading
randomization grid and the driver's valid PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from densevis.analysis.sanity import randomized_models
from densevis.errors import DensevisError
from densevis.model import build_model, load_checkpoint, predict, preprocess, save_checkpoint
from densevis.report import model_figures, panels
from densevis.saliency import SaliencyEngine
from densevis.saliency.tiles import Tile, color_limit, map_note, map_style, tile_grid
from probes import ProbeSet

METHODS = ["vanilla", "guided", "gradcam", "guided_gradcam"]
LAYER = "denseblock3"


def _png(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(io.BytesIO(data))
    assert pixels.ndim == 3 and min(pixels.shape[:2]) > 50
    return pixels


def _texts(fig) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


# ------------------------------------------------------------------------------ choose_images
def test_choose_images_takes_typical_then_misclassified_cases():
    labels = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    margin = np.array([4.0, 2.0, 6.0, -1.0, -3.0, -5.0, -2.0, 0.5, -4.0])
    chosen = panels.choose_images(labels, margin > 0, margin, count=4)
    # typical square image: margins sorted -3, -1, 2, 4, 6 -> median 2 (image 1); typical
    # negative: -5, -4, -2, 0.5 -> lower median -4 (image 8); worst mistake: image 4 (-3 on
    # a square), then image 3 (-1) before image 7 (+0.5 on a negative)
    assert chosen == [1, 8, 4, 3]
    assert any((margin[i] > 0) != (labels[i] == 1) for i in chosen)
    assert panels.choose_images(labels, margin > 0, margin, count=4) == chosen  # deterministic
    assert panels.choose_images(labels, margin > 0, margin, count=6) == [1, 8, 4, 3, 7, 0]


def test_choose_images_shows_a_correct_case_where_most_are_wrong():
    # a lines_only-like set: no squares, the model calls most of them squares
    labels = np.zeros(7, int)
    margin = np.array([3.0, 5.0, -2.0, 4.0, 1.0, 6.0, 2.0])
    chosen = panels.choose_images(labels, margin > 0, margin, count=3)
    assert chosen[0] == 0  # the typical image (median margin 3): a mistake, as most are
    assert chosen[1] == 5  # the most confident mistake
    assert chosen[2] == 2  # the only image it gets right


def test_choose_images_without_mistakes_and_bad_input():
    labels = np.array([0, 0, 0, 0, 0])
    margin = np.array([-1.0, -3.0, -2.0, -5.0, -4.0])
    # median -3 (image 1), then the nearest in rank: -2 and -4 (images 2 and 4, by index)
    assert panels.choose_images(labels, margin > 0, margin, count=3) == [1, 2, 4]
    assert panels.choose_images(labels, margin > 0, margin, count=10) == [1, 2, 4, 0, 3]
    with pytest.raises(DensevisError, match="differ in length"):
        panels.choose_images(labels, margin[:3] > 0, margin)
    with pytest.raises(DensevisError, match="not finite"):
        panels.choose_images(labels, margin > 0, np.array([np.nan, 1, 2, 3, 4]))
    with pytest.raises(DensevisError, match="labels must be"):
        panels.choose_images(labels + 2, margin > 0, margin)
    with pytest.raises(DensevisError, match="count"):
        panels.choose_images(labels, margin > 0, margin, count=0)


# ---------------------------------------------------------------------------------- tiles
def test_map_notes_styles_and_limits():
    assert map_note(np.zeros((4, 4))) == "all zero"
    assert map_note(np.full((4, 4), 2.0)) == "constant 2"
    assert map_note(np.full((4, 4), np.nan)) == "not finite"
    assert map_note(np.eye(4)) is None
    # the registry's declared signs; an unregistered name by its values
    assert (map_style("vanilla"), map_style("gradcam"), map_style("guided_gradcam")) == \
        ("signed", "non_negative", "signed")
    assert map_style("sobel", np.eye(3)) == "non_negative"
    assert map_style("random", -np.eye(3)) == "signed"
    values = np.concatenate([np.zeros(100), np.arange(1, 101)])  # zeros do not count
    assert color_limit([values]) == pytest.approx(np.percentile(np.arange(1, 101), 99))


def test_an_all_zero_map_gets_a_note_not_a_blank_tile(monkeypatch):
    figures = []
    monkeypatch.setattr(panels, "png_of", lambda fig, tight=True: figures.append(fig) or b"")
    images = np.zeros((2, 16, 16), np.uint8)
    images[:, 4:9, 4:9] = 255
    signal = np.random.default_rng(0).normal(size=(2, 16, 16))
    panels.set_grid(images, {"vanilla": signal, "gradcam": np.zeros((2, 16, 16))},
                    ["a", "b"], layer=LAYER)
    texts = _texts(figures[-1])
    assert texts.count("all zero") == 2  # both gradcam tiles, neither vanilla tile
    assert "gradcam\n@ denseblock3" in texts and "vanilla" in texts
    panels.set_grid(images, {"vanilla": signal}, ["a", "b"])
    assert "all zero" not in _texts(figures[-1])


def test_tile_grid_checks_its_shape():
    image = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="rows of"):
        tile_grid([[Tile(image)]], ["a", "b"], ["r"])
    with pytest.raises(ValueError, match="one shape"):
        tile_grid([[Tile(image), Tile(np.zeros((4, 4)), "signed", 1.0)]], ["a", "b"], ["r"])


# ---------------------------------------------------------------------------------- driver
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    path = tmp_path_factory.mktemp("panels") / "model.pt"
    return save_checkpoint(path, build_model("original"), "original", 64)


@pytest.fixture(scope="module")
def driven(checkpoint, probe_dir):
    """``map_figures`` on a random model and the tiny probe files, with every figure's inputs
    recorded."""
    calls: dict[str, list] = {"set_grid": [], "pairs_strip": [], "cascading_grid": [],
                              "tile_grid": []}

    def spy(name, original):
        def record(*args, **kwargs):
            calls[name].append((args, kwargs))
            return original(*args, **kwargs)
        return record

    data = {name: probe_dir / f"{name}.h5" for name in ("base", "lines_only", "pairs")}
    with pytest.MonkeyPatch.context() as patch:
        for name in calls:  # each where the driver (or, for tile_grid, the drawing) looks it up
            module = panels if name == "tile_grid" else model_figures
            patch.setattr(module, name, spy(name, getattr(module, name)))
        figures = model_figures.map_figures(checkpoint, data, ["base", "lines_only", "pairs"],
                                            METHODS, LAYER, "cpu", seed=7, count=3,
                                            sanity_set="base")
    return figures, calls, data


def test_the_driver_returns_valid_pngs_under_three_keys(driven):
    figures, calls, _ = driven
    assert set(figures) == {"sets", "pairs", "sanity"}
    assert [len(figures[key]) for key in ("sets", "pairs", "sanity")] == [3, 1, 1]
    for key, pairs in figures.items():
        for png, caption in pairs:
            _png(png)
            assert isinstance(caption, str) and len(caption) > 40, key
    assert "square logit" in figures["sets"][0][1]


def test_the_set_grids_explain_the_square_logit(driven, checkpoint):
    _, calls, data = driven
    model, _ = load_checkpoint(checkpoint)
    (images, maps, captions, title, layer), _ = calls["set_grid"][0]
    with ProbeSet(data["base"]) as probe:
        logits = predict(model, probe)
        labels = probe.labels[:]
        everything = probe.images[:]
    margin = logits[:, 1] - logits[:, 0]
    chosen = panels.choose_images(labels, margin > 0, margin, count=3)
    assert np.array_equal(images, everything[chosen])
    expected = SaliencyEngine(model, METHODS, LAYER).attribute(preprocess(images), targets=1)
    other = SaliencyEngine(model, METHODS, LAYER).attribute(preprocess(images), targets=0)
    for method in METHODS:
        key = (method, LAYER if method in ("gradcam", "guided_gradcam") else None)
        np.testing.assert_allclose(maps[method], expected.maps[key].numpy(), rtol=1e-4,
                                   atol=1e-6 * float(expected.maps[key].abs().max()))
    # the positive logit, not the other one: the vanilla gradients differ in sign or size
    assert not np.allclose(maps["vanilla"], other.maps["vanilla", None].numpy())
    for caption, index in zip(captions, chosen):
        assert f"logit margin {margin[index]:+.2f}" in caption
        assert ("label: square" in caption) == (labels[index] == 1)


def test_each_map_column_has_one_scale_by_the_declared_sign(driven):
    _, calls, _ = driven
    (tiles, titles, rows, bars, bar_labels, _), _ = calls["tile_grid"][0]
    assert bars == "columns" and titles[0] == "image"
    for column, method in enumerate(METHODS, start=1):
        styles = {tiles[r][column].style for r in range(len(rows))}
        limits = {tiles[r][column].limit for r in range(len(rows))}
        assert styles == {"non_negative" if method == "gradcam" else "signed"}, method
        assert len(limits) == 1, method
        assert bar_labels[column]  # the colour bar says what its scale is


def test_the_pairs_strip_shows_one_scene_with_its_margins(driven, checkpoint):
    _, calls, data = driven
    (images, maps, variants, margins, _, _), _ = calls["pairs_strip"][0]
    model, _ = load_checkpoint(checkpoint)
    with ProbeSet(data["pairs"]) as probe:
        logits = predict(model, probe)
        base = probe.base_index[:]
        assert tuple(variants) == probe.variants[:8]
        scene = np.flatnonzero(np.all(probe.images[:] == images[0], axis=(1, 2)))[0]
    members = np.flatnonzero(base == base[scene])
    assert len(images) == len(members) == 8 and scene == members[0]
    np.testing.assert_allclose(margins, logits[members, 1] - logits[members, 0], rtol=1e-5)
    assert list(maps) == list(model_figures.STRIP_METHODS)
    originals = np.flatnonzero(base == np.arange(len(base)))
    original_margins = logits[originals, 1] - logits[originals, 0]
    assert margins[0] == pytest.approx(sorted(original_margins)[(len(originals) - 1) // 2],
                                       rel=1e-5)


def test_the_cascading_grid_follows_the_sanity_randomization(driven, checkpoint):
    _, calls, data = driven
    (maps_by_step, image, _, _), _ = calls["cascading_grid"][0]
    steps = list(maps_by_step)
    assert steps[:3] == ["trained", "classifier", "denseblock4"] and steps[-1] == "conv0"
    assert not any(step.startswith("features.") for step in steps)  # the table's layer names
    model, _ = load_checkpoint(checkpoint)
    with ProbeSet(data["base"]) as probe:
        first = int(np.flatnonzero(probe.labels[:] == 1)[0])
        assert np.array_equal(image, probe.images[first])
    # step 2 is the model with classifier and denseblock4 re-initialized with the run's seed
    for _, group, randomized in randomized_models(model, "cascading", seed=7):
        if group == "denseblock4":
            break
    engine = SaliencyEngine(randomized, METHODS, LAYER)
    expected = engine.attribute(preprocess(image[None]), targets=1).maps["vanilla", None][0]
    np.testing.assert_allclose(maps_by_step["denseblock4"]["vanilla"], expected.numpy(),
                               rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert not np.allclose(maps_by_step["trained"]["vanilla"], expected.numpy())


def test_the_driver_refuses_a_missing_probe_set(checkpoint, probe_dir):
    with pytest.raises(DensevisError, match="no probe file for 'pairs'"):
        model_figures.map_figures(checkpoint, {"base": probe_dir / "base.h5"}, ["base", "pairs"])
