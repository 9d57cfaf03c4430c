"""Models and checkpoints: the configs, preprocessing and the checkpoint contract."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from densevis.errors import DensevisError
from densevis.model import (CONFIGS, FORMAT, build_model, load_checkpoint, preprocess,
                            read_checkpoint, resolve_device, save_checkpoint)


def parameters(model):
    return sum(p.numel() for p in model.parameters())


def test_original_has_exactly_58212_parameters():
    assert parameters(build_model("original")) == 58_212


def test_original_large_is_the_444k_model():
    assert 440_000 <= parameters(build_model("original-large")) <= 450_000
    assert CONFIGS["original-large"][1]["block_config"] == (6, 12, 24, 16)


@pytest.mark.parametrize("name", ["original", "resnet18"])
def test_models_have_two_outputs(name):
    with torch.no_grad():
        assert build_model(name).eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2)


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(DensevisError, match="model 'nope' is unknown.*original.*module:callable"):
        build_model("nope")


def test_preprocess_repeats_grey_over_three_channels_scaled_to_one():
    images = np.array([[[0, 255], [51, 102]]], np.uint8)
    x = preprocess(images)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 2, 2)
    assert torch.equal(x[0, 0], x[0, 2])
    assert torch.allclose(x[0, 1], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("original")
    save_checkpoint(tmp_path / "m.pt", model, "original", 64, {"best": {"epoch": 1}})
    loaded, checkpoint = load_checkpoint(tmp_path / "m.pt")
    assert checkpoint["format"] == FORMAT and checkpoint["image_size"] == 64
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])


def test_checkpoint_loads_with_torch_and_torchvision_alone(tmp_path):
    save_checkpoint(tmp_path / "m.pt", build_model("original"), "original", 64)
    code = textwrap.dedent(f"""
        import sys
        sys.modules["densevis"] = sys.modules["probes"] = None  # importing them now fails
        import torch, torchvision
        ckpt = torch.load({str(tmp_path / "m.pt")!r}, weights_only=False)
        model = getattr(torchvision.models, ckpt["arch"])(**ckpt["config"])
        model.load_state_dict(ckpt["state_dict"])
        print(sum(p.numel() for p in model.parameters()))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "58212"


@pytest.mark.parametrize("content, message", [
    (None, "not found"),
    (b"not a torch file", "not a readable torch checkpoint"),
    ({"format": "other/1", "state_dict": {}}, "not a densevis checkpoint"),
    ({"format": FORMAT, "arch": "DenseNet"}, "lacks config, state_dict, image_size"),
    ({"format": FORMAT, "config": {}}, "lacks arch or factory, state_dict, image_size"),
    ({"format": FORMAT, "arch": "DenseNet", "factory": "m:f", "config": {}, "state_dict": {},
      "image_size": 64}, "arch and factory has the wrong type or value"),
])
def test_bad_checkpoints_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        torch.save(content, path)
    with pytest.raises(DensevisError, match=message):
        read_checkpoint(path)


def test_weights_that_do_not_fit_the_arch(tmp_path):
    save_checkpoint(tmp_path / "m.pt", build_model("original"), "original", 64)
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=False)
    checkpoint["config"]["growth_rate"] = 12
    torch.save(checkpoint, tmp_path / "m.pt")
    with pytest.raises(DensevisError, match="weights do not fit"):
        load_checkpoint(tmp_path / "m.pt")


def test_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(DensevisError, match="not a device"):
        resolve_device("toaster")
