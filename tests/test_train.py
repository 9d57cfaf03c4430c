"""Training: streamed batches, augmentations, learning, determinism, the checkpoint, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from densevis.batches import BatchStream, augment
from densevis.cli import main
from densevis.errors import DensevisError
import densevis.optimization
from densevis.labels import training_labels
from densevis.model import (build_model, check_model_fits, load_checkpoint, predict, preprocess,
                            read_checkpoint)
from densevis.optimization import fast_stem, loss_weights, lr_at
from densevis.recipe import AUGMENTATIONS, TrainConfig
from densevis.train import recalibrate_batchnorm, train, train_model
from probes import ProbeSet, write_probe_set
from probes.measure import scene_geometry

# A learnable task at 64 px in seconds: squares of 6-12 px among at most two circles.
EASY = {"max_circles": 2, "min_side": 24}
FAST = TrainConfig(epochs=4, lr=1e-2, warmup_epochs=0.2, ema=0.0, threads=1, patience=4)


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("easy")
    write_probe_set(folder / "train.h5", "base", n=768, seed=0, size=64, params=EASY, workers=1)
    write_probe_set(folder / "val.h5", "base", n=128, seed=1, size=64, params=EASY, workers=1)
    return folder


@pytest.fixture(scope="module")
def trained(easy):
    """A checkpoint trained through the command line."""
    out = easy / "model.pt"
    code = main(["train", "--data", str(easy / "train.h5"), "--val", str(easy / "val.h5"),
                 "--out", str(out), "--epochs", str(FAST.epochs), "--lr", str(FAST.lr),
                 "--warmup-epochs", str(FAST.warmup_epochs), "--ema", "0", "--threads", "1",
                 "--quiet"])
    assert code == 0
    return out


# ------------------------------------------------------------------------------------- batches
def test_an_epoch_streams_every_image_once_with_its_own_label(base_file):
    probe = ProbeSet(base_file)
    stream = BatchStream(probe, batch_size=10, seed=3, pool_chunks=1)
    batches = list(stream.epoch(0))
    index = np.concatenate([b[2] for b in batches])
    assert sorted(index.tolist()) == list(range(len(probe)))
    assert index.tolist() != list(range(len(probe))), "the order must be shuffled"
    assert all(len(b[0]) == 10 for b in batches[:-1]) and len(batches) == len(stream)
    for images, labels, rows in batches:
        assert np.array_equal(images, probe.images[np.sort(rows)][np.argsort(np.argsort(rows))])
        assert np.array_equal(labels, probe.labels[:][rows])


def test_epoch_order_is_fixed_by_seed_and_epoch(base_file):
    probe = ProbeSet(base_file)

    def order(seed, epoch):
        return np.concatenate([b[2] for b in BatchStream(probe, 16, seed).epoch(epoch)]).tolist()

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)


def _symmetries(image: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    rotations = [torch.rot90(image, k) for k in range(4)]
    flips = [image, image.flip(0), image.flip(1), image.flip(0).flip(1)]
    return {"none": [image], "flips": flips,
            "dihedral": rotations + [torch.rot90(image.T, k) for k in range(4)]}


@pytest.mark.parametrize("kind", list(AUGMENTATIONS))
def test_augmentations_are_symmetries_of_the_square_and_cover_their_group(kind):
    image = torch.arange(25, dtype=torch.uint8).reshape(5, 5)
    images = image.expand(400, 5, 5).contiguous()
    out = augment(images, torch.Generator().manual_seed(0), kind)
    allowed = _symmetries(image)[kind]
    found = {next(k for k, a in enumerate(allowed) if torch.equal(o, a)) for o in out}
    assert found == set(range(len(allowed)))


def test_shift_translates_with_zero_fill():
    images = torch.full((50, 8, 8), 7, dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0), "none", shift=2)
    assert out.shape == images.shape
    assert set(out.unique().tolist()) == {0, 7}
    assert all(int((o == 7).sum()) >= 36 for o in out)  # at most 2 rows and 2 columns lost


def test_learning_rate_warms_up_then_decays():
    rates = [lr_at(step, 100, 10, 1.0) for step in range(101)]
    assert rates[9] == pytest.approx(1.0) and rates[100] == pytest.approx(0.0)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_loss_weights_follow_classes_touching_and_hidden_squares(tmp_path):
    crowded = write_probe_set(tmp_path / "c.h5", "base", n=48, seed=0, size=64, workers=1,
                              params={"min_circles": 3, "min_diameter": 30, "max_side": 20})
    probe = ProbeSet(crowded)
    config = TrainConfig(touching_weight=3.0, ignore_hidden=0.1)
    classes, per_image = loss_weights(probe, config)
    labels = probe.labels[:]
    assert classes.tolist() == pytest.approx([48 / (2 * (labels == 0).sum()),
                                              48 / (2 * (labels == 1).sum())])
    expected = []
    for row, label in zip(scene_geometry(probe).itertuples(), labels):
        if label == 1 and row.visible_px <= 0.1 * row.square_px:
            expected.append(0.0)
        elif label == 1 and row.touches_circle:
            expected.append(3.0)
        else:
            expected.append(1.0)
    assert per_image.tolist() == expected
    assert {0.0, 1.0, 3.0} <= set(expected), "the case should exercise every weight"
    _, plain = loss_weights(probe, dataclasses.replace(config, ignore_hidden=None,
                                                       touching_weight=1.0))
    assert plain.tolist() == [1.0] * len(probe)


@pytest.mark.parametrize("memory", [torch.contiguous_format, torch.channels_last])
def test_fast_stem_gives_the_same_outputs_and_gradients(memory):
    torch.manual_seed(0)
    model = build_model("original").to(memory_format=memory)
    images = torch.randint(0, 256, (4, 32, 32), dtype=torch.uint8)
    grey = (images.unsqueeze(1).float() / 255).to(memory_format=memory)
    weights = torch.randn(4, 2)  # a loss whose gradient BatchNorm does not cancel

    def close(a, b):  # rounding differs where NCHW and channels-last kernels sum differently
        return float((a - b).norm()) <= 1e-4 * float(b.norm())

    def gradient():  # one vector: a tiny gradient (e.g. the first BatchNorm's) has large
        return torch.cat([p.grad.flatten() for p in model.parameters()])  # relative rounding

    for mode in ("eval", "train"):  # train: BatchNorm on batch statistics, in NCHW memory
        getattr(model, mode)()
        reference = model(preprocess(images).to(memory_format=memory))
        (reference * weights).sum().backward()
        expected = gradient()
        model.zero_grad()
        with fast_stem(model) as applies:
            assert applies
            output = model(grey)
            assert close(model(preprocess(images)).detach(), output.detach()), "3 channels too"
        (output * weights).sum().backward()
        assert close(output.detach(), reference.detach()) and close(gradient(), expected)
        model.zero_grad()
    assert "forward" not in vars(model.features.conv0) and "forward" not in vars(
        model.features.norm0), "the class's forward is back"
    assert model(preprocess(images)).shape == (4, 2)
    with fast_stem(build_model("resnet18")) as applies:
        assert not applies


def test_recalibrated_batchnorm_holds_the_exact_statistics(base_file):
    torch.manual_seed(0)
    model = build_model("original")
    images = ProbeSet(base_file).images[:40]
    recalibrate_batchnorm(model, images, "cpu", channels_last=False, batch_size=20)
    assert not model.training
    with torch.no_grad():
        features = model.features.conv0(preprocess(images))
    norm = model.features.norm0
    # a cumulative average over two batches of 20: batch means and unbiased variances
    batches = (features[:20], features[20:])
    means = torch.stack([b.mean((0, 2, 3)) for b in batches]).mean(0)
    variances = torch.stack([b.var((0, 2, 3)) for b in batches]).mean(0)
    assert torch.allclose(norm.running_mean, means, atol=1e-6)
    assert torch.allclose(norm.running_var, variances, rtol=1e-4)
    assert norm.momentum == 0.1, "the momentum is restored"


# ------------------------------------------------------------------------------------ training
def test_a_tiny_model_learns_far_above_chance(trained):
    checkpoint = read_checkpoint(trained)
    history = checkpoint["metrics"]["history"]
    assert len(history) == FAST.epochs
    # chance is 50% (the labels are balanced); 80% of 128 images by luck has p < 1e-11
    assert checkpoint["metrics"]["best"]["val_accuracy"] >= 0.8
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_the_checkpoint_holds_the_best_epoch_its_history_and_config(trained, easy):
    checkpoint = read_checkpoint(trained)
    metrics = checkpoint["metrics"]
    best = min(metrics["history"], key=lambda h: h["val_loss"])
    assert metrics["best"] == best and metrics["best_epoch"] == best["epoch"]
    assert checkpoint["image_size"] == 64 and checkpoint["train_config"]["epochs"] == FAST.epochs
    assert checkpoint["data"]["train"]["set"] == "base"
    # the saved weights are the best epoch's: their validation accuracy and loss are the recorded
    # ones
    model, _ = load_checkpoint(trained)
    val = ProbeSet(easy / "val.h5")
    with torch.no_grad():
        logits = predict(model, val)
    accuracy = float((logits.argmax(1) == val.labels[:]).mean())
    loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits),
                                                   torch.from_numpy(val.labels[:]).long()))
    assert accuracy == pytest.approx(best["val_accuracy"])
    assert loss == pytest.approx(best["val_loss"], rel=1e-4)


def test_one_seed_gives_identical_weights_and_another_seed_does_not(easy):
    config = dataclasses.replace(FAST, epochs=1, ema=0.99)
    train_set, val_set = ProbeSet(easy / "train.h5"), ProbeSet(easy / "val.h5")
    runs = [train_model(train_set, val_set, dataclasses.replace(config, seed=seed),
                        progress=False).model.state_dict() for seed in (5, 5, 6)]
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_no_kernel_reads_uninitialized_memory(easy, monkeypatch):
    """Training skips deterministic mode's NaN-filling of fresh tensors (for speed); with it the
    weights are the same, so no kernel reads memory it did not write."""
    config = dataclasses.replace(FAST, epochs=1)
    train_set, val_set = ProbeSet(easy / "train.h5"), ProbeSet(easy / "val.h5")
    weights = []
    for fill in (False, True):
        monkeypatch.setattr(densevis.optimization, "FILL_UNINITIALIZED_MEMORY", fill)
        weights.append(train_model(train_set, val_set, config, progress=False).model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_keeping_the_last_epoch_validates_only_the_last_and_changes_no_weight(easy):
    """With keep="last" and no early stopping nothing reads the earlier epochs' scores: they are
    not computed. Validating (and recalibrating BatchNorm) every epoch gives the same weights."""
    train_set, val_set = ProbeSet(easy / "train.h5"), ProbeSet(easy / "val.h5")
    config = dataclasses.replace(FAST, epochs=3, keep="last", patience=10**6)
    last = train_model(train_set, val_set, config, progress=False)
    every = train_model(train_set, val_set, dataclasses.replace(config, patience=1),
                        progress=False)
    assert ["val_loss" in h for h in last.history] == [False, False, True]
    assert all("val_loss" in h for h in every.history) and every.stopped == "completed"
    assert last.best == {**last.history[-1]}
    weights, reference = last.model.state_dict(), every.model.state_dict()
    assert all(torch.equal(weights[k], reference[k]) for k in reference)
    assert last.best["val_loss"] == every.best["val_loss"]


def test_shuffled_labels_are_a_permutation_and_teach_nothing(easy):
    train_set, val_set = ProbeSet(easy / "train.h5"), ProbeSet(easy / "val.h5")
    config = dataclasses.replace(FAST, labels="shuffled", epochs=2)
    labels = train_set.labels[:]
    shuffled = training_labels(train_set, config)
    assert sorted(shuffled) == sorted(labels) and (shuffled != labels).mean() > 0.3
    assert np.array_equal(shuffled, training_labels(train_set, config)), "seeded"
    served = {i: y for b in BatchStream(train_set, 64, 0, labels=shuffled).epoch(0)
              for i, y in zip(b[2], b[1])}
    assert [served[i] for i in range(len(labels))] == shuffled.tolist()
    assert loss_weights(train_set, config)[1].tolist() == [1.0] * len(labels)
    result = train_model(train_set, val_set, config, progress=False)
    # no image explains its label any more: validation stays near chance (50%)
    assert all(h["val_accuracy"] < 0.75 for h in result.history)


def test_a_time_budget_stops_cleanly_and_keeps_a_model(easy, tmp_path):
    config = dataclasses.replace(FAST, epochs=50, max_minutes=1e-6)
    result = train(easy / "train.h5", easy / "val.h5", tmp_path / "m.pt", config, progress=False)
    assert result.stopped == "time budget" and len(result.history) == 1
    assert read_checkpoint(tmp_path / "m.pt")["metrics"]["stopped"] == "time budget"


def test_a_model_too_deep_for_the_image_size_is_a_clear_error():
    from densevis.model import build_model
    with pytest.raises(DensevisError, match="cannot classify 16-px images"):
        check_model_fits(build_model("original"), "original", 16, torch.device("cpu"))


# ---------------------------------------------------------------------------------- bad input
def _train_cli(easy, out, *extra, data=None, val=None):
    return main(["train", "--data", str(data or easy / "train.h5"),
                 "--val", str(val or easy / "val.h5"), "--out", str(out), "--epochs", "1",
                 "--threads", "1", "--quiet", *extra])


def test_missing_training_file(easy, tmp_path, one_line_error):
    assert _train_cli(easy, tmp_path / "m.pt", data=tmp_path / "nope.h5") == 2
    one_line_error("train", "nope.h5", "not found")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_hdf5(easy, tmp_path, one_line_error):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 50)
    assert _train_cli(easy, tmp_path / "m.pt", val=bad) == 2
    one_line_error("train", "bad.h5", "not a readable HDF5 file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.h5"]


def test_image_sizes_of_train_and_val_must_match(easy, tmp_path, one_line_error):
    other = write_probe_set(tmp_path / "v80.h5", "base", n=8, seed=1, size=80, workers=1)
    assert _train_cli(easy, tmp_path / "m.pt", val=other) == 2
    one_line_error("train", "64-px", "80-px", "at one size")
    assert not (tmp_path / "m.pt").exists()


def test_training_data_needs_both_labels(easy, probe_dir, tmp_path, one_line_error):
    assert _train_cli(easy, tmp_path / "m.pt", data=probe_dir / "squares_only.h5") == 2
    one_line_error("train", "only label 1")


def test_unknown_arch(easy, tmp_path, one_line_error):
    assert _train_cli(easy, tmp_path / "m.pt", "--arch", "densenet9000") == 2
    one_line_error("train", "--model 'densenet9000' is unknown")  # --arch: its old name
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, value, message", [
    ("--epochs", "0", "--epochs"), ("--batch-size", "1", "--batch-size"), ("--lr", "-1", "--lr"),
    ("--ema", "1", "--ema"), ("--max-minutes", "0", "--max-minutes")])
def test_bad_settings(easy, tmp_path, one_line_error, flag, value, message):
    assert _train_cli(easy, tmp_path / "m.pt", flag, value) == 2
    one_line_error("train", message)


def test_existing_output_needs_force_and_is_left_untouched(easy, tmp_path, one_line_error):
    out = tmp_path / "m.pt"
    out.write_bytes(b"precious")
    assert _train_cli(easy, out) == 2
    one_line_error("train", "exists", "--force")
    assert out.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


# ------------------------------------------------------------------------------------ benchmark
def test_bench_train_reports_accuracy_seconds_and_the_step_ratio(tmp_path, capsys,
                                                                  one_line_error):
    import json

    args = ["bench", "train", "--n", "128", "--n-test", "64", "--size", "64", "--threads", "1",
            "--workdir", str(tmp_path), "--ratio-steps", "2", "--side-by-side", "2", "--json"]
    assert main(args) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["parameters"] == 58212 and figures["threads"] == 1
    assert figures["steps"] == 2 * figures["epochs"]  # 128 images in batches of 64
    assert 0 <= figures["test_clean_accuracy"] <= 1 and figures["train_seconds"] > 0
    assert figures["step_ms_plain"] > 0 and figures["step_ms_recipe"] > 0
    assert figures["step_ratio"] == pytest.approx(
        figures["step_ms_recipe"] / figures["step_ms_plain"])
    # three replicate models trained stacked (vmap) against one after another
    assert figures["stacked_models"] == 3
    assert figures["stacked_ratio"] == pytest.approx(
        figures["stacked_step_ms"] / figures["sequential_step_ms"])
    # two models trained side by side (a process each) against one after another
    assert figures["side_by_side_models"] == 2
    assert figures["side_by_side_ratio"] == pytest.approx(
        figures["side_by_side_seconds"] / figures["in_turn_seconds"])
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert len(generated) == 3, "training, validation and test sets"
    assert main(args[:-3] + ["--ratio-steps", "-1"]) == 2
    one_line_error("bench", "--ratio-steps")
