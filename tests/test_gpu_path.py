"""The engine's GPU path: channels-last layout, asynchronous copies (submit/result), bf16
autocast within its documented tolerance; on CUDA also equality with the CPU, no host
synchronisation inside a batch, and explain_file on the GPU. The layout, the copies and bf16
are checked on the CPU here (the same code); the CUDA-only tests run in the device check
(``python tests/device_check.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densevis.maps import MapsFile
from densevis.model import build_model, preprocess, save_checkpoint
from densevis.saliency import SaliencyEngine
from densevis.saliency.files import explain_file
from probes import ProbeSet, write_probe_set

CUDA = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="no CUDA device here; run the device check on a GPU machine")
LAYERS = "conv0,denseblock1,transition2,denseblock4"
SHARED = "vanilla,guided,input_x_gradient,gradcam,gradcam_pp,hirescam,layercam,guided_gradcam"
#: Documented bf16 tolerance (README, "Scale out and GPU", "One GPU"): per method and layer,
#: the median over images of the relative L2 error against float32, and the Pearson correlation
#: over the batch;
#: for the panel and the gradient/CAM methods but XGrad-CAM (ill-conditioned on signed
#: activations: use float32 for it). A median, because a CAM whose weighted channel sum nearly
#: cancels before its ReLU can differ wholly on one image (seen: relative error 1.6 at
#: transition2 of an untrained model) while the batch agrees.
BF16_MAX_MEDIAN_RELATIVE_L2, BF16_MIN_CORRELATION = 0.25, 0.95


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    write_probe_set(folder / "base.h5", "base", n=8, seed=11, size=64, workers=1)
    torch.manual_seed(0)
    save_checkpoint(folder / "model.pt", build_model("original"), "original", image_size=64)
    return folder


@pytest.fixture(scope="module")
def batch(files):
    probe = ProbeSet(files / "base.h5")
    return preprocess(probe.images[:8]), probe.labels[:8].astype(np.int64)


def model():
    torch.manual_seed(0)
    return build_model("original").eval()


def relative_l2(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm().clamp_min(1e-12))


def test_channels_last_layout_gives_the_same_maps(batch):
    """Against the float64 maps of the same model: the layout changes nothing beyond float32
    rounding. (Not against the float32 NCHW maps: on some CPUs oneDNN's NCHW kernels are less
    accurate, and the input gradients of an untrained model nearly cancel, so NCHW alone was
    seen 2.6e-3 away from float64 where channels-last was 3e-7; on a trained model both are
    within 4e-7.)"""
    images, labels = batch
    exact = SaliencyEngine(model().double(), SHARED, LAYERS, channels_last=False).attribute(
        images.double(), labels)
    net = model()
    last = SaliencyEngine(net, SHARED, LAYERS, channels_last=True).attribute(images, labels)
    assert net.features.conv0.weight.is_contiguous(memory_format=torch.channels_last)
    for key, maps in exact.maps.items():
        assert relative_l2(last.maps[key].double(), maps.double()) < 1e-5, key
        assert last.maps[key].is_contiguous()


def test_submit_then_result_is_attribute(batch):
    images, labels = batch
    engine = SaliencyEngine(model(), "panel", LAYERS)
    pending = [engine.submit(images[:4], labels[:4]), engine.submit(images[4:], labels[4:])]
    whole = engine.attribute(images, labels)
    parts = [p.result() for p in pending]
    for key, maps in whole.maps.items():
        torch.testing.assert_close(torch.cat([p.maps[key] for p in parts]), maps)
    assert all(p.maps[key].device.type == "cpu" for p in parts for key in p.maps)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_bf16_autocast_is_within_the_documented_tolerance(batch, device):
    images, labels = batch
    net = model().to(device)
    fp32 = SaliencyEngine(net, SHARED, LAYERS).attribute(images, labels)
    bf16 = SaliencyEngine(net, SHARED, LAYERS, autocast=True).attribute(images, labels)
    for key, maps in fp32.maps.items():
        assert bf16.maps[key].dtype == torch.float32
        correlation = torch.corrcoef(torch.stack([maps.flatten(), bf16.maps[key].flatten()]))
        errors = [relative_l2(got, want) for got, want in zip(bf16.maps[key], maps)]
        assert float(np.median(errors)) <= BF16_MAX_MEDIAN_RELATIVE_L2, key
        assert correlation[0, 1] >= BF16_MIN_CORRELATION, key


@CUDA
def test_cuda_maps_equal_cpu_maps(batch):
    images, labels = batch
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        cpu = SaliencyEngine(model(), SHARED, LAYERS).attribute(images, labels)
        gpu = SaliencyEngine(model().cuda(), SHARED, LAYERS).attribute(images, labels)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
    for key, maps in cpu.maps.items():
        assert gpu.maps[key].device.type == "cpu"
        assert relative_l2(gpu.maps[key], maps) <= 1e-3, key


@CUDA
def test_a_batch_never_waits_for_the_gpu(batch):
    images, labels = batch
    engine = SaliencyEngine(model().cuda(), SHARED, LAYERS)
    engine.attribute(images, labels)  # warm-up: cuDNN plans, pinned host blocks
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any implicit host synchronisation raises
    try:
        pending = engine.submit(images, labels)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    result = pending.result()  # the one wait of the batch
    assert result.maps["vanilla", None].shape == (8, 64, 64)


@CUDA
def test_explain_file_on_cuda_equals_the_cpu_file(files, tmp_path):
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        paths = {device: explain_file(files / "model.pt", files / "base.h5",
                                      tmp_path / f"{device}.h5", methods=SHARED, layers=LAYERS,
                                      device=device, batch_size=3, progress=False)
                 for device in ("cpu", "cuda")}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
    with MapsFile(paths["cpu"]) as cpu, MapsFile(paths["cuda"]) as gpu:
        assert gpu.attrs["device"].startswith("cuda")
        np.testing.assert_array_equal(gpu.index, cpu.index)
        for key in cpu.keys:
            want = torch.from_numpy(cpu.read(*key))
            assert relative_l2(torch.from_numpy(gpu.read(*key)), want) <= 1e-3, key


@CUDA
def test_a_batch_too_big_for_the_gpu_is_halved_until_it_fits():
    images = torch.rand(32, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    images, labels = images.expand(-1, 3, -1, -1).contiguous(), torch.arange(32) % 2
    engine = SaliencyEngine(model().cuda(), "panel", LAYERS)
    one = engine.attribute(images[:1], labels[:1])  # warm-up, and the cost of one image
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    engine.attribute(images[:2], labels[:2])
    per_image = (torch.cuda.max_memory_allocated() - base) / 2
    total = torch.cuda.get_device_properties(0).total_memory
    # room for about 6 images: a batch of 32 must back off (to 16, 8, then 4)
    torch.cuda.set_per_process_memory_fraction(min(1.0, (base + 6 * per_image) / total))
    try:
        result = engine.attribute(images, labels)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    assert engine.batch_size is not None and engine.batch_size < 32
    for key, maps in one.maps.items():
        assert relative_l2(result.maps[key][:1], maps) <= 1e-3, key
