"""Localization and cue metrics: equal to Quantus / scikit-learn where they define them,
hand-worked cases elsewhere, and per-row handling of bad maps and empty masks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from densevis.analysis.baselines import center_maps, random_maps, sobel_maps
from densevis.analysis.cues import (behaviour_scores, edge_scores, edge_width, mass_scores,
                                    pair_deltas, ring_and_interior)
from densevis.analysis.localization import (METRICS, localization_scores, tolerance_radius,
                                            topk_pixels)
from densevis.analysis.reduce import default_reduction, parse_overrides, reduce_maps
from densevis.analysis.regions import RegionReader
from densevis.errors import DensevisError
from probes import ProbeSet

quantus = pytest.importorskip("quantus")


@pytest.fixture(scope="module")
def squares(base_file):
    """Real square masks (the base set's positives) and signed random maps, reduced with abs."""
    probe = ProbeSet(base_file)
    masks = probe.masks("square")[:]
    masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
    signed = np.random.default_rng(0).normal(size=masks.shape).astype(np.float32)
    signed += 3.0 * masks * np.random.default_rng(1).random(masks.shape, dtype=np.float32)
    return masks, reduce_maps(torch.from_numpy(signed), "abs").numpy()


def _quantus(metric, maps, masks):
    x = np.zeros((len(maps), 1) + maps.shape[1:], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(metric(model=None, x_batch=x, y_batch=np.ones(len(maps), int),
                                 a_batch=maps[:, None], s_batch=masks[:, None],
                                 channel_first=True, explain_func=None, explain_func_kwargs=None,
                                 model_predict_kwargs=None, softmax=False), dtype=np.float64)


@pytest.mark.parametrize("name, metric", [
    ("pointing_game", "PointingGame"), ("relevance_mass", "RelevanceMassAccuracy"),
    ("relevance_rank", "RelevanceRankAccuracy"), ("auroc", "AUC")])
def test_equals_quantus(squares, name, metric):
    masks, maps = squares
    plain = getattr(quantus, metric)(abs=False, normalise=False, disable_warnings=True)
    expected = _quantus(plain, maps, masks)
    ours = localization_scores(torch.from_numpy(maps), torch.from_numpy(masks)).values[name]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6, atol=1e-7)


def test_topk_iou_from_quantus_top_k_intersection(squares):
    # Quantus' TopKIntersection is |top-k in mask| / k; densevis reports the IoU of the top k
    # with the mask, |top-k in mask| / (k + |mask| - |top-k in mask|), same k (1000 px at 224,
    # scaled by area: 82 px at 64). Same intersection, other denominator.
    masks, maps = squares
    k = topk_pixels(*maps.shape[1:])
    assert k == 82
    share = _quantus(quantus.TopKIntersection(k=k, abs=False, normalise=False,
                                              disable_warnings=True), maps, masks)
    inside, area = share * k, masks.reshape(len(masks), -1).sum(1)
    ours = localization_scores(torch.from_numpy(maps), torch.from_numpy(masks)).values["topk_iou"]
    np.testing.assert_allclose(ours.numpy(), inside / (k + area - inside), atol=1e-12)


def test_auroc_and_average_precision_equal_sklearn_with_ties(squares):
    masks, maps = squares
    coarse = np.round(maps * 2) / 2  # many ties
    scores = localization_scores(torch.from_numpy(coarse), torch.from_numpy(masks)).values
    auc = [roc_auc_score(m.ravel(), a.ravel()) for m, a in zip(masks, coarse)]
    ap = [average_precision_score(m.ravel(), a.ravel()) for m, a in zip(masks, coarse)]
    np.testing.assert_allclose(scores["auroc"].numpy(), auc, atol=1e-12)
    np.testing.assert_allclose(scores["average_precision"].numpy(), ap, atol=1e-12)


def _box(n=1, size=32, top=8, side=8):
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    masks[:, top:top + side, top:top + side] = True
    return masks


def test_uniform_map_scores_chance():
    masks = _box()
    area = 64 / 1024
    s = localization_scores(torch.full((1, 32, 32), 3.0), masks).values
    assert s["mass_minus_area"].item() == pytest.approx(0.0, abs=1e-12)
    assert s["density_ratio"].item() == pytest.approx(1.0)
    assert s["auroc"].item() == pytest.approx(0.5)
    for name in ("pointing_game", "relevance_rank", "relevance_mass", "average_precision"):
        assert s[name].item() == pytest.approx(area), name  # tied pixels: the expected value


def test_map_equal_to_mask_scores_maximum():
    masks = _box()
    scores = localization_scores(masks.float(), masks, k=100)
    s = scores.values
    for name in ("pointing_game", "pointing_game_tol", "relevance_mass", "relevance_rank",
                 "auroc", "average_precision"):
        assert s[name].item() == 1.0, name
    assert s["mass_minus_area"].item() == pytest.approx(1 - 64 / 1024)
    assert s["density_ratio"].item() == float("inf")
    assert "ratio infinite" in scores.notes["density_ratio"][0]
    assert s["topk_iou"].item() == pytest.approx(64 / 100)  # best possible: min(k,|m|)/max(k,|m|)


def test_pointing_game_tolerance_is_euclidean_and_tie_aware():
    masks = _box(3, size=64, top=20, side=10)       # rows/cols 20..29
    maps = torch.zeros(3, 64, 64)
    maps[0, 24, 29 + 4] = 1.0                       # 4 px right of the mask: within 4.29 px
    maps[1, 29 + 3, 29 + 3] = 1.0                   # diagonal: sqrt(18) = 4.24 px, within
    maps[2, 24, 29 + 5] = 1.0                       # 5 px: outside
    s = localization_scores(maps, masks).values
    assert tolerance_radius(64) == pytest.approx(15 * 64 / 224)
    assert s["pointing_game_tol"].tolist() == [1.0, 1.0, 0.0]
    assert s["pointing_game"].tolist() == [0.0, 0.0, 0.0]
    tied = torch.zeros(1, 64, 64)
    tied[0, 24, 33] = tied[0, 0, 0] = 1.0           # two maxima, one near, one far
    s = localization_scores(tied, masks[:1]).values
    assert s["pointing_game_tol"].item() == 0.5 and s["pointing_game"].item() == 0.0


def test_bad_rows_are_nan_with_a_note_and_do_not_touch_the_others():
    masks = _box(4)
    masks[1] = False                                  # empty mask
    maps = torch.rand(4, 32, 32, generator=torch.Generator().manual_seed(0))
    maps[2, 3, 3] = float("nan")                      # NaN map
    maps[3] = 0.0                                     # zero map
    scores = localization_scores(maps, masks, region="square")
    reference = localization_scores(maps[:1], masks[:1])
    for name in METRICS:
        values, notes = scores.values[name], scores.notes[name]
        assert values[0].item() == pytest.approx(reference.values[name].item()), name
        assert np.isnan(values[1].item()) and "empty mask: no square" in notes[1]
        assert np.isnan(values[2].item()) and "NaN" in notes[2]
    assert np.isnan(scores.values["relevance_mass"][3].item())
    assert "map sums to zero" in scores.notes["relevance_mass"][3]
    assert scores.values["auroc"][3].item() == 0.5    # a zero map is tied: chance level
    assert "constant map" in scores.notes["auroc"][3]


def test_quantus_pointing_game_on_an_empty_mask_differs_on_purpose():
    # Quantus 0.6 writes NaN into a bool array for an empty mask, which reads back as True (a
    # hit); densevis returns NaN with a note.
    maps, masks = np.random.rand(1, 16, 16).astype(np.float32), np.zeros((1, 16, 16), bool)
    masks[0, 0, 0] = True
    both = np.concatenate([masks, np.zeros_like(masks)])
    plain = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)
    quantus_value = _quantus(plain, np.concatenate([maps, maps]), both)[1]
    ours = localization_scores(torch.from_numpy(np.concatenate([maps, maps])),
                               torch.from_numpy(both)).values["pointing_game"][1].item()
    assert quantus_value == 1.0 and np.isnan(ours)


def test_edge_interior_ratio():
    squares = _box(2, size=32, top=8, side=10)
    squares[1] = False
    squares[1, 4:6, 4:6] = True                      # 2-px square: no interior at w = 1
    ring, interior = ring_and_interior(squares, 1)
    assert ring[0].sum() == 12 * 12 - 8 * 8 and interior[0].sum() == 8 * 8
    maps = torch.where(ring, 3.0, 1.0)
    scores = edge_scores(maps, squares, width=1)
    value, notes = scores.values["edge_interior_ratio"], scores.notes["edge_interior_ratio"]
    assert value[0].item() == pytest.approx(3.0)
    assert np.isnan(value[1].item()) and "too small for an interior" in notes[1]
    assert edge_width(224) == 3 and edge_width(64) == 1


def test_area_corrected_mass():
    region = _box(1, size=20, top=0, side=10)        # a quarter of the image
    maps = torch.where(region, 2.0, 0.0)
    s = mass_scores(maps, {"square": region, "circle": torch.zeros_like(region)})
    assert s.values["square_mass"].item() == pytest.approx(4.0)  # all the mass on 1/4 of it
    assert np.isnan(s.values["circle_mass"].item())
    assert s.notes["circle_mass"][0] == "no circle in this image"


def test_regions_match_the_probe_footprints(probe_dir):
    probe = ProbeSet(probe_dir / "pairs.h5")
    reader = RegionReader(probe)
    images = np.arange(len(probe))
    regions = reader.read(images, ("square", "square_filled", "smallest_object"))
    variants = probe.variant(images)
    for i in images[:16]:
        table, stack = probe.object_masks(int(i))
        others = table["kind"] != "square"
        if others.any():
            smallest = np.flatnonzero(others)[np.argmin(table["area"][others])]
            assert np.array_equal(regions["smallest_object"][i], stack[smallest])
        if variants[i] == "outline":                  # the filled footprint contains the band
            assert (regions["square"][i] <= regions["square_filled"][i]).all()
            assert regions["square_filled"][i].sum() > regions["square"][i].sum()
        elif variants[i] == "original":
            assert np.array_equal(regions["square"][i], regions["square_filled"][i])


def test_behaviour_and_pair_deltas():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    s = behaviour_scores(logits)
    assert s.values["logit_margin"].tolist() == [2.0, -2.0]
    assert s.values["predicted_positive"].tolist() == [1.0, 0.0]
    deltas = pair_deltas(np.array([3.0, 1.0, 0.5, 2.0]), np.array([8, 9, 10, 11]),
                         np.array([8, 8, 16, 16]), np.array(["original", "sides", "original",
                                                             "half"]))
    assert deltas["image"].tolist() == [8, 16]
    assert deltas["metric"].tolist() == ["logit_delta_sides", "logit_delta_half"]
    assert deltas["value"].tolist() == [-2.0, 1.5]
    lonely = pair_deltas(np.array([1.0]), np.array([9]), np.array([8]), np.array(["moved"]))
    assert np.isnan(lonely["value"][0]) and "original" in lonely["note"][0]


def test_reductions_and_baselines(base_file):
    assert default_reduction("guided_gradcam", "denseblock4") == "abs"
    assert default_reduction("layercam", "denseblock4") == "as_is"
    assert parse_overrides(["vanilla=positive"]) == {"vanilla": "positive"}
    with pytest.raises(DensevisError, match="METHOD=RULE"):
        parse_overrides(["vanilla"])
    with pytest.raises(DensevisError, match="unknown reduction"):
        parse_overrides(["vanilla=square"])
    skimage_filters = pytest.importorskip("skimage.filters")
    images = ProbeSet(base_file).images[:4]
    expected = np.stack([skimage_filters.sobel(image / 255.0) for image in images])
    np.testing.assert_allclose(sobel_maps(images).numpy(), expected, atol=1e-6)
    whole = random_maps(np.arange(6), 16, "base", seed=3)
    assert torch.equal(whole[4:], random_maps(np.array([4, 5]), 16, "base", seed=3))
    center = center_maps(1, 15)[0]
    assert center.argmax().item() == 7 * 15 + 7


def test_sort_rows_split_over_threads_is_exact():
    from densevis.analysis.localization import sort_rows

    x = torch.from_numpy(np.random.default_rng(0).normal(size=(70, 16000)).astype(np.float32))
    x[3, :100] = x[3, 200]  # ties
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        split = sort_rows(x)  # 1.1M values: split over 2 threads
        torch.set_num_threads(1)
        whole = sort_rows(x)
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(split, torch.sort(x, dim=1).values) and torch.equal(split, whole)
