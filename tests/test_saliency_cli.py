"""``densevis explain`` (maps file per the contract, figures, bad input) and
``densevis bench saliency``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from densevis.cli import main
from densevis.maps import MapsFile
from densevis.model import build_model, load_checkpoint, preprocess, save_checkpoint
from densevis.saliency import SaliencyEngine
from probes import ProbeSet, file_sha256, write_probe_set


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return save_checkpoint(path, build_model("original"), "original", image_size=64)


@pytest.fixture(scope="module")
def explained(checkpoint, base_file, tmp_path_factory):
    folder = tmp_path_factory.mktemp("explain")
    out, figures = folder / "maps.h5", folder / "figures"
    status = main(["explain", "--checkpoint", str(checkpoint), "--data", str(base_file),
                   "--methods", "vanilla,guided_gradcam,rise", "--layers", "norm0,denseblock4",
                   "--param", "rise.masks=8", "--batch-size", "24", "--out", str(out),
                   "--figures", str(figures), "--limit", "2"])
    assert status == 0
    return out, figures


def test_explain_writes_the_maps_file_of_the_contract(explained, checkpoint, base_file):
    out, _ = explained
    probe = ProbeSet(base_file)
    with MapsFile(out) as maps:
        assert maps.keys == [("guided_gradcam", "denseblock4"), ("guided_gradcam", "norm0"),
                             ("rise", None), ("vanilla", None)]
        assert maps.read("vanilla").shape == (len(probe), 64, 64)
        assert maps.read("vanilla").dtype == np.float32
        np.testing.assert_array_equal(maps.targets, probe.labels[:])  # default: the label
        np.testing.assert_array_equal(maps.index, np.arange(len(probe)))
        assert maps.logits.shape == (len(probe), 2)
        attrs = maps.attrs
        assert attrs["checkpoint_sha256"] == file_sha256(checkpoint)
        assert attrs["probe_sha256"] == file_sha256(base_file)
        assert attrs["methods"] == ["vanilla", "guided_gradcam", "rise"]
        assert attrs["layers"] == ["norm0", "denseblock4"]
        assert attrs["method_params"]["rise"]["masks"] == 8
        assert attrs["method_signs"] == {"vanilla": "signed", "guided_gradcam": "signed",
                                         "rise": "non_negative"}
        assert {"densevis", "torch", "torchvision"} <= set(attrs["versions"])
        # the file holds what the Python API gives for the same images (second batch here)
        model, _ = load_checkpoint(checkpoint)
        rows = slice(24, 30)
        direct = SaliencyEngine(model, "vanilla,guided_gradcam", "norm0,denseblock4").attribute(
            preprocess(probe.images[rows]), labels=probe.labels[rows].astype(np.int64))
        for (method, layer), values in direct.maps.items():
            np.testing.assert_allclose(maps.read(method, layer, rows), values.numpy(),
                                       rtol=0, atol=1e-5 * float(values.abs().max()))


def test_explain_draws_the_figures(explained):
    _, figures = explained
    names = sorted(path.name for path in figures.iterdir())
    assert names == ["img00000_guided_gradcam_layers.png", "img00000_rise.png",
                     "img00000_vanilla.png", "img00001_guided_gradcam_layers.png",
                     "img00001_rise.png", "img00001_vanilla.png"]
    assert all((figures / name).read_bytes()[:4] == b"\x89PNG" for name in names)


def test_figures_from_an_existing_maps_file(explained, base_file, tmp_path):
    out, _ = explained
    assert main(["explain", "--maps", str(out), "--data", str(base_file),
                 "--figures", str(tmp_path / "again"), "--limit", "1"]) == 0
    assert len(list((tmp_path / "again").glob("img00000_*.png"))) == 3


@pytest.fixture(scope="module")
def other_size_probe(tmp_path_factory):
    path = tmp_path_factory.mktemp("probe32") / "small.h5"
    return write_probe_set(path, "base", n=4, seed=1, size=32, workers=1)


@pytest.mark.parametrize("extra,message", [
    (["--methods", "vanilla,fancycam"], "unknown saliency method 'fancycam'; valid: vanilla"),
    (["--methods", "gradcam", "--layers", "block9"], "unknown layer 'block9'; valid: all, conv0"),
    (["--target", "5"], "--target 5 is out of range: the model has 2 classes (0..1)"),
    (["--target", "best"], "--target 'best': use label, predicted or a class number"),
    (["--param", "rise.masks"], "is not METHOD.KEY=VALUE"),
    (["--methods", "rise", "--param", "rise.masks=lots"], "rise.masks='lots' is not a int"),
    (["--device", "tpu"], "--device 'tpu'"),
    (["--batch-size", "0"], "must be positive"),
])
def test_explain_bad_input_exits_2_without_a_file(extra, message, checkpoint, base_file,
                                                  tmp_path, capsys):
    out = tmp_path / "maps.h5"
    status = main(["explain", "--checkpoint", str(checkpoint), "--data", str(base_file),
                   "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind


def test_explain_refuses_data_of_another_size(checkpoint, other_size_probe, tmp_path, capsys):
    status = main(["explain", "--checkpoint", str(checkpoint), "--data", str(other_size_probe),
                   "--out", str(tmp_path / "maps.h5")])
    assert status == 2
    assert "trained on 64px images but" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_explain_keeps_an_existing_file_without_force(checkpoint, base_file, tmp_path, capsys):
    out = tmp_path / "maps.h5"
    out.write_text("keep me")
    status = main(["explain", "--checkpoint", str(checkpoint), "--data", str(base_file),
                   "--out", str(out)])
    assert status == 2 and "--force" in capsys.readouterr().err
    assert out.read_text() == "keep me"


def test_figures_refuse_maps_of_another_probe_file(explained, other_size_probe, tmp_path,
                                                   capsys):
    out, _ = explained
    status = main(["explain", "--maps", str(out), "--data", str(other_size_probe),
                   "--figures", str(tmp_path / "figs")])
    assert status == 2
    assert "was computed from another probe file" in capsys.readouterr().err
    assert not (tmp_path / "figs").exists()


def test_bench_saliency_reports_the_figures_as_json(capsys):
    status = main(["bench", "saliency", "--n", "1", "--size", "32", "--repeats", "1",
                   "--references", "captum", "--json"])
    assert status == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("floor_s", "densevis_s", "ratio_to_floor", "captum_s", "speedup_vs_captum"):
        assert key in figures
    assert figures["floor_s"] > 0 and figures["ratio_to_floor"] > 0
    assert figures["captum_s"] > 0 and figures["speedup_vs_captum"] > 0


def test_explain_help_lists_the_registry_with_its_defaults(capsys):
    from densevis.saliency import GROUPS, METHODS

    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "{methods}" not in text and all(name in text for name in GROUPS)
    for method in METHODS.values():
        assert method.name in text
        for key, value in method.defaults.items():
            assert f"{key}={value}" in text, (method.name, key)
