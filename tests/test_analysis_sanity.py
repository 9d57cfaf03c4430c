"""Sanity checks (Adebayo et al. 2018): layer groups, seeded re-initialization, and a check that
passes a model-dependent method and fails one that ignores the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densevis.analysis.baselines import sobel_maps
from densevis.analysis.hypotheses import RANDOMIZATION, HypothesisSpec, evaluate
from densevis.analysis.sanity import (SIMILARITIES, data_randomization_test, layer_groups,
                                      map_similarity, randomization_test, randomized_models,
                                      reinitialize)
from densevis.model import build_model, preprocess
from densevis.saliency.layers import resolve_layers
from probes import ProbeSet

# named as the maps and every table name layers (children of model.features by their name)
DENSENET_STEPS = ["classifier", "denseblock4", "transition3", "denseblock3", "transition2",
                  "denseblock2", "transition1", "denseblock1", "conv0"]


def passes_randomization(similarity, similarity_measure: str):
    """The statistic rows of passes_randomization on ``similarity`` (one per method)."""
    table = evaluate(None, similarity, [HypothesisSpec(RANDOMIZATION,
                                                       similarity=similarity_measure)])
    return table[table["statistic"] != "overall"]


def gradient_and_sobel(model, images, targets):
    """A tiny explain: the signed input gradient (depends on the model) and Sobel (does not)."""
    inputs = preprocess(images).requires_grad_(True)
    score = model(inputs).gather(1, torch.as_tensor(targets).view(-1, 1)).sum()
    (gradient,) = torch.autograd.grad(score, inputs)
    return {("gradient", None): gradient.sum(1), "sobel": sobel_maps(images)}


@pytest.fixture(scope="module")
def setup(base_file):
    probe = ProbeSet(base_file)
    torch.manual_seed(0)
    model = build_model("original").eval().requires_grad_(False)
    return model, probe.images[:8], probe.labels[:8].astype(np.int64)


@pytest.fixture(scope="module")
def cascading(setup):
    model, images, targets = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = randomization_test(model, gradient_and_sobel, images, targets, "cascading", seed=1)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model was modified"
    return table


def test_layer_groups_top_down():
    model = build_model("original")
    groups = layer_groups(model)
    assert [name for name, _ in groups] == DENSENET_STEPS
    # the step names are the engine's layer names; the module paths re-initialized stay paths
    assert set(DENSENET_STEPS) - {"classifier"} <= set(resolve_layers(model, "all"))
    assert dict(groups)["conv0"] == ["features.conv0", "features.norm0"]
    assert dict(groups)["denseblock4"] == ["features.denseblock4", "features.norm5"]
    # traced: the same at any size, also where the deepest blocks are 1x1 (not layers "all")
    assert layer_groups(model, 32) == layer_groups(model, 64) == groups
    resnet = dict(layer_groups(build_model("resnet18")))
    assert resnet["conv1"] == ["conv1", "bn1"] and list(resnet)[0] == "fc"


def test_reinitialize_is_seeded_and_local():
    model = build_model("original")
    a, b = build_model("original"), build_model("original")
    a.load_state_dict(model.state_dict())
    b.load_state_dict(model.state_dict())
    reinitialize(a, ["classifier"], seed=3)
    reinitialize(b, ["classifier"], seed=3)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, model.classifier.weight)
    assert torch.equal(a.features.conv0.weight, model.features.conv0.weight)
    steps = [(step, name) for step, name, _ in randomized_models(model, "independent")]
    assert [name for _, name in steps] == DENSENET_STEPS and steps[0][0] == 1


def test_similarity_of_identical_and_of_unrelated_maps():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 32, 32)).astype(np.float32)
    same = map_similarity(maps, maps)
    for metric in SIMILARITIES:
        np.testing.assert_allclose(same[metric], 1.0, atol=1e-9, err_msg=metric)
    other = map_similarity(maps, rng.normal(size=(3, 32, 32)).astype(np.float32))
    assert np.all(np.abs(other["spearman_signed"]) < 0.1)
    flipped = map_similarity(maps, -maps)
    np.testing.assert_allclose(flipped["spearman_signed"], -1.0, atol=1e-9)
    np.testing.assert_allclose(flipped["spearman_abs"], 1.0, atol=1e-9)
    flattened = map_similarity(maps, np.zeros_like(maps))  # randomization left nothing
    assert (flattened["spearman_abs"] == 0).all() and (flattened["spearman_signed"] == 0).all()
    assert np.isnan(flattened["ssim"]).all()
    blank = map_similarity(np.zeros_like(maps), maps)  # nothing to keep in the first place
    assert np.isnan(blank["spearman_abs"]).all()
    assert set(map_similarity(maps, maps, ("spearman_abs",))) == {"spearman_abs"}


def test_cascading_randomization_changes_gradients_not_sobel(cascading):
    assert set(cascading["step"]) == set(DENSENET_STEPS)
    final = cascading[cascading["step_index"] == len(DENSENET_STEPS)]
    median = final.groupby(["method", "metric"])["value"].median()
    assert abs(median["gradient", "spearman_signed"]) < 0.3
    for metric in SIMILARITIES:
        assert median["sobel", metric] == pytest.approx(1.0), metric


def test_passes_randomization_can_fail_a_method(cascading):
    signed = passes_randomization(cascading, "spearman_signed").set_index("method")
    assert signed.loc["gradient", "verdict"] == "supported"
    assert signed.loc["sobel", "verdict"] == "rejected"
    for metric in SIMILARITIES:  # whatever the similarity, the model-blind method is flagged
        assert passes_randomization(cascading, metric).set_index("method").loc[
            "sobel", "verdict"] == "rejected", metric


def test_independent_and_data_randomization(setup):
    model, images, targets = setup
    independent = randomization_test(model, gradient_and_sobel, images[:4], targets[:4],
                                     "independent", seed=2)
    assert independent["step_index"].max() == len(DENSENET_STEPS)
    assert (independent.query("method == 'sobel'")["value"] > 0.999).all()
    torch.manual_seed(7)  # stands in for a model trained on shuffled labels
    other = build_model("original").eval().requires_grad_(False)
    data = data_randomization_test(model, other, gradient_and_sobel, images, targets)
    rows = passes_randomization(data, "spearman_signed").set_index("method")
    assert rows.loc["sobel", "verdict"] == "rejected"
    assert rows.loc["gradient", "statistic"].startswith("shuffled labels")


def test_engine_explain_wiring(setup):
    saliency = pytest.importorskip("densevis.saliency")
    from densevis.analysis.sanity import engine_explain

    model, images, targets = setup
    table = randomization_test(model, engine_explain("vanilla,gradcam", "denseblock4"),
                               images[:2], targets[:2], "independent")
    assert {("vanilla", ""), ("gradcam", "denseblock4")} <= set(zip(table.method, table.layer))
    assert saliency is not None
