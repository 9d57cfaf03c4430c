"""Claims about the worked example's model (README, "Use your own model"), as tests over a run
of ``own_model.toml``:

    densevis run experiments/own_model/own_model.toml --out reports/own
    pytest experiments/own_model --densevis-run reports/own

Each claim is a **replicated** verdict (``model == "replicated"``: every one of the run's three
trained models agrees, by the rules of densevis.analysis.replicates). They are what the run of
2026-11-30 found (three models at 64 px, 3 min 7 s on 2 CPU cores: held-out accuracy 97.2%,
97.5%, 99.0%). The ``--quick`` form of the spec trains one tiny model for the test suite and is
not what these claims are about.
"""

from __future__ import annotations

from densevis.testing import assert_hypothesis

FACTORY = "small_resnet:small_resnet"


def test_the_run_is_of_the_factory_model_and_every_model_learned_the_task(densevis_run):
    names = {model["name"] for model in densevis_run.provenance["models"]}
    assert names == {FACTORY}, names
    table = densevis_run.evaluation
    held_out = table[(table["set"] == "base (val)") & (table["breakdown"] == "all")
                     & (table["metric"] == "accuracy")]
    assert held_out["model"].nunique() >= 3, "fewer than three models: no replication"
    assert (held_out["value"] >= 0.95).all(), held_out[["model", "value"]].to_string()


def test_layers_all_are_the_blocks_in_forward_order(densevis_run):
    """The model declares ``head`` first and reuses one ReLU per block: "all" is still the
    blocks that run once, in the order the forward runs them."""
    assert densevis_run.layers == ["stem", "stem_norm", "block1", "down", "block2"]


def test_a_line_alone_is_enough(densevis_run):
    """Like the original DenseNet, this model calls square-free images with a line a square,
    and a square's loose sides or outline keep the margin when the square is removed."""
    for statistic in ("lines_vs_control", "sides_vs_removed", "outline_vs_removed"):
        assert_hypothesis(densevis_run, "edge_detector", "supported", method="model",
                          statistic=statistic)


def test_it_is_not_a_small_object_detector(densevis_run):
    """Small circles lower the margin, and larger squares raise it: rejected in every model."""
    assert_hypothesis(densevis_run, "small_object_detector", "rejected", method="model")


def test_vanilla_gradients_pass_the_randomization_check_and_integrated_gradients_fail(
        densevis_run):
    """Unlike on the original DenseNet (where vanilla fails), the plain gradient of this model
    changes when its weights and labels are randomized, in every model; integrated gradients
    stay similar to the trained model's maps, so no verdict about them is supported."""
    assert_hypothesis(densevis_run, "passes_randomization", "supported", method="vanilla")
    assert_hypothesis(densevis_run, "passes_randomization", "rejected",
                      method="integrated_gradients")
