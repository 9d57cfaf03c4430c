"""The saliency engine: plan of passes, guided ReLU coverage, captured activations, per-image
targets, batching, state restoration, devices and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from densevis.errors import DensevisError
from densevis.saliency import METHODS, SaliencyEngine, switchable_relus, ReLURule
from densevis.saliency.batching import in_chunks
from densevis.saliency.layers import resolve_layers
from densevis.saliency.methods import upsample

SIZE = 32
CHEAP = {"integrated_gradients": {"steps": 4}, "smoothgrad": {"samples": 3},
         "smoothgrad_sq": {"samples": 3}, "occlusion": {"window": 12, "stride": 10},
         "rise": {"masks": 16}}


def small_densenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = torchvision.models.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=4,
                                        bn_size=2, num_classes=3)
    generator = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():  # BatchNorm that is not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean = torch.randn(module.num_features, generator=generator) * 0.3
            module.bias.data = torch.randn(module.num_features, generator=generator) * 0.3
    return model.eval()


def grey_batch(n: int, seed: int = 5) -> torch.Tensor:
    grey = torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    return grey.expand(-1, 3, -1, -1).contiguous()


@pytest.fixture(scope="module")
def model():
    return small_densenet()


@pytest.fixture(scope="module")
def images():
    return grey_batch(3)


def assert_maps_close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = max(float(b[key].abs().max()), 1e-12)
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=rtol * scale, msg=str(key))


# -- plan of passes --------------------------------------------------------------------------

def test_panel_runs_one_forward_and_two_backwards(model, images):
    counts = {"forward": 0, "classifier backward": 0, "conv0 backward": 0}

    def count(name):
        def hook(*args):
            counts[name] += 1
        return hook

    # "all" is traced once, when the engine is made at a known size: not a pass of a batch
    engine = SaliencyEngine(model, "panel", "all", image_size=SIZE)
    handles = [model.register_forward_pre_hook(count("forward")),
               model.classifier.register_full_backward_pre_hook(count("classifier backward")),
               model.features.conv0.register_full_backward_hook(count("conv0 backward"))]
    try:
        result = engine.attribute(images, [0, 1, 2])
    finally:
        for handle in handles:
            handle.remove()
    assert counts == {"forward": 1, "classifier backward": 2, "conv0 backward": 2}
    assert len(result.maps) == 2 + 2 * len(model.features)  # Grad-CAM x all 8 children, twice


def test_layer_methods_only_need_one_backward(model, images):
    passes = {"backward": 0}
    handle = model.classifier.register_full_backward_pre_hook(
        lambda *args: passes.__setitem__("backward", passes["backward"] + 1))
    try:
        SaliencyEngine(model, "gradcam,gradcam_pp,xgradcam,hirescam,layercam,vanilla").attribute(
            images)
    finally:
        handle.remove()
    assert passes["backward"] == 1


# -- guided ReLU -----------------------------------------------------------------------------

class EveryReLU(nn.Module):
    """Six convolutions, each followed by one of the ways a model can call ReLU."""

    def __init__(self, functional: bool):
        super().__init__()
        self.functional = functional
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 4, 4, 3, padding=1)
                                   for i in range(6))
        self.relus = nn.ModuleList(nn.ReLU() for _ in range(6))
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        from torch.nn.functional import relu as aliased_relu

        forms = [lambda t: F.relu(t, inplace=True), torch.relu, torch.relu_,
                 lambda t: t.relu(), lambda t: t.relu_(), aliased_relu]
        for conv, form, module in zip(self.convs, forms, self.relus):
            x = conv(x)
            x = form(x) if self.functional else module(x)
        return self.head(x.mean(dim=(2, 3)))


def test_guided_covers_every_functional_and_inplace_relu(images):
    captum_attr = pytest.importorskip("captum.attr")
    torch.manual_seed(1)
    functional, modules = EveryReLU(True).eval(), EveryReLU(False).eval()
    modules.load_state_dict(functional.state_dict())
    ours = SaliencyEngine(functional, "guided").attribute(images, [0, 1, 0]).maps["guided", None]
    reference = captum_attr.GuidedBackprop(modules).attribute(
        images.clone(), target=torch.tensor([0, 1, 0])).detach().sum(1)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-6 * float(reference.abs().max()))
    plain = SaliencyEngine(functional, "vanilla").attribute(images, [0, 1, 0]).maps
    assert not torch.allclose(plain["vanilla", None], ours)


def test_relu_mode_reroutes_every_form_only_inside_the_block():
    x = torch.randn(2, 3, 4, 4)
    with switchable_relus(ReLURule()) as mode:
        EveryReLU(True)(x)
        torch.nn.ReLU()(x)
    assert mode.calls == 7
    y = torch.relu(torch.randn(3, requires_grad=True))
    assert type(y.grad_fn).__name__ == "ReluBackward0"  # the mode is gone


# -- captured activations --------------------------------------------------------------------

def test_gradcam_at_norm0_uses_the_pre_relu_activation(model, images):
    targets = torch.tensor([0, 1, 2])
    features = model.features
    # by hand: norm0's own output, and the gradient w.r.t. it, with an out-of-place relu0
    with torch.enable_grad():
        activation = features.norm0(features.conv0(images)).detach().requires_grad_(True)
        out = features.pool0(torch.relu(activation))
        for name in ("denseblock1", "transition1", "denseblock2", "norm5"):
            out = getattr(features, name)(out)
        logits = model.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(out), 1), 1))
        (gradient,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), activation)
    assert (activation < 0).any(), "relu0 would change nothing: the test would prove nothing"
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    expected = upsample(F.relu((weights * activation.detach()).sum(1)), (SIZE, SIZE))
    maps = SaliencyEngine(model, "gradcam", "norm0,relu0").attribute(images, targets).maps
    torch.testing.assert_close(maps["gradcam", "norm0"], expected, rtol=0, atol=1e-6)
    assert not torch.allclose(maps["gradcam", "norm0"], maps["gradcam", "relu0"])
    assert features.relu0.inplace  # the model still runs its in-place ReLU


# -- targets and batches ---------------------------------------------------------------------

def test_each_image_is_explained_for_its_own_target(model, images):
    engine = SaliencyEngine(model, "vanilla,gradcam", "denseblock2")
    together = engine.attribute(images, targets=[2, 0, 1])
    assert together.targets.tolist() == [2, 0, 1]
    for i, target in enumerate([2, 0, 1]):
        alone = engine.attribute(images, targets=target)
        for key, maps in together.maps.items():
            torch.testing.assert_close(maps[i], alone.maps[key][i])
    others = engine.attribute(images, targets=[0, 1, 2]).maps["vanilla", None]
    assert not torch.allclose(others[0], together.maps["vanilla", None][0])


def test_works_when_the_caller_turned_gradients_off(model, images):
    engine = SaliencyEngine(model, "vanilla,gradcam", "norm5")
    expected = engine.attribute(images, [0, 1, 2]).maps
    with torch.no_grad():
        assert_maps_close(engine.attribute(images, [0, 1, 2]).maps, expected)
    with torch.inference_mode():
        frozen = images.clone()
        assert_maps_close(engine.attribute(frozen, [0, 1, 2]).maps, expected)


def test_default_targets_are_the_labels_else_the_prediction(model, images):
    engine = SaliencyEngine(model, "vanilla")
    assert engine.attribute(images, labels=[1, 1, 0]).targets.tolist() == [1, 1, 0]
    predicted = engine.attribute(images)
    assert predicted.targets.tolist() == predicted.logits.argmax(1).tolist()


def test_batch_results_equal_per_image_results(model, images):
    engine = SaliencyEngine(model, "all", "conv0,denseblock1,norm5", CHEAP, chunk_size=5)
    together = engine.attribute(images, [0, 2, 1])
    for i, target in enumerate([0, 2, 1]):
        alone = engine.attribute(images[i:i + 1], [target])
        assert_maps_close({k: v[i:i + 1] for k, v in together.maps.items()}, alone.maps)


def test_small_batches_equal_one_batch(model):
    images = grey_batch(5, seed=9)
    whole = SaliencyEngine(model, "panel,rise", "all", {"rise": {"masks": 8}})
    parts = SaliencyEngine(model, "panel,rise", "all", {"rise": {"masks": 8}}, batch_size=2)
    assert_maps_close(parts.attribute(images).maps, whole.attribute(images).maps)


def test_out_of_memory_halves_the_batch(model, monkeypatch):
    engine = SaliencyEngine(model, "vanilla", batch_size=8)
    real = engine._attribute_batch
    sizes = []

    def small_memory(inputs, targets):
        sizes.append(len(inputs))
        if len(inputs) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(inputs, targets)

    monkeypatch.setattr(engine, "_attribute_batch", small_memory)
    images = grey_batch(5)
    result = engine.attribute(images, [0, 1, 2, 0, 1])
    assert sizes[:3] == [5, 2, 2] and engine.batch_size == 2
    assert result.maps["vanilla", None].shape == (5, SIZE, SIZE)
    assert result.targets.tolist() == [0, 1, 2, 0, 1]


def test_in_chunks_gives_up_at_one():
    def never_fits(start, stop):
        raise torch.cuda.OutOfMemoryError("simulated")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        in_chunks(3, 4, never_fits)


# -- the perturbation methods ----------------------------------------------------------------

def test_random_methods_follow_their_seed(model, images):
    def maps(seed):
        params = {"rise": {"masks": 16, "seed": seed}, "smoothgrad": {"samples": 3, "seed": seed}}
        return SaliencyEngine(model, "rise,smoothgrad", params=params).attribute(images).maps
    first, again, other = maps(0), maps(0), maps(1)
    for key in first:
        assert torch.equal(first[key], again[key])
        assert not torch.allclose(first[key], other[key])


def test_smoothgrad_without_noise_is_vanilla_and_squared_is_nonnegative(model, images):
    params = {"smoothgrad": {"samples": 2, "sigma": 0.0}, "smoothgrad_sq": {"samples": 3}}
    maps = SaliencyEngine(model, "vanilla,smoothgrad,smoothgrad_sq", params=params) \
        .attribute(images).maps
    torch.testing.assert_close(maps["smoothgrad", None], maps["vanilla", None])
    assert (maps["smoothgrad_sq", None] >= 0).all() and maps["smoothgrad_sq", None].max() > 0


# -- model state -----------------------------------------------------------------------------

def snapshot(model):
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [p.grad for p in model.parameters()])


def assert_untouched(model, before):
    assert snapshot(model)[0] == before[0] and snapshot(model)[1] == before[1]
    assert all(a is b for a, b in zip(snapshot(model)[2], before[2]))
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    out = model.features.relu0(torch.randn(2, requires_grad=True) * 1)
    assert type(out.grad_fn).__name__ != "SwitchableReLUBackward"


def test_state_and_hooks_restored_after_a_call_and_after_an_error(images):
    model = small_densenet(seed=4).train()
    model.classifier.eval()
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    model.features.conv0.weight.requires_grad_(False)
    before = snapshot(model)
    engine = SaliencyEngine(model, "panel,scorecam", "norm0,denseblock1")
    engine.attribute(images, [0, 1, 2])
    assert_untouched(model, before)
    with pytest.raises(DensevisError, match="target 7 of image 1 is out of range"):
        engine.attribute(images, [0, 7, 1])  # raises after the forward, hooks installed
    assert_untouched(model, before)

    def explode(module, args, output):
        raise RuntimeError("boom")
    handle = model.features.transition1.register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        engine.attribute(images, [0, 1, 2])  # raises mid-forward
    handle.remove()
    assert_untouched(model, before)


def test_the_trace_of_layers_all_restores_state_even_when_the_model_fails():
    model = small_densenet(seed=4).train()
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    model.features.conv0.weight.requires_grad_(False)
    before = snapshot(model)
    assert list(resolve_layers(model, "all", image_size=SIZE))[-1] == "norm5"
    assert_untouched(model, before)
    assert all(not m._forward_pre_hooks for m in model.modules())
    with pytest.raises(DensevisError, match="image_size 4x4 is not a size DenseNet runs at"):
        resolve_layers(model, "all", image_size=4)  # its pooling fails on a 1x1 map
    assert_untouched(model, before)
    assert all(not m._forward_pre_hooks for m in model.modules())


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    (dict(methods="vanilla,sharpcam"), "unknown saliency method 'sharpcam'; valid: vanilla, "),
    (dict(methods="gradcam", layers="denseblock9"), "unknown layer 'denseblock9'; valid: all, "
                                                    "conv0, norm0"),
    (dict(methods="rise", params={"rise": {"cells": "many"}}), "rise.cells='many' is not a int"),
    (dict(methods="rise", params={"rise": {"mask": 3}}), "no parameter 'mask'; valid: masks"),
    (dict(methods="vanilla", params={"rise": {"masks": 3}}), "not among the selected methods"),
])
def test_bad_engine_arguments_say_what_is_valid(model, kwargs, message):
    with pytest.raises(DensevisError, match=message.replace("(", r"\(")):
        SaliencyEngine(model, **kwargs)


@pytest.mark.parametrize("bad,targets,message", [
    (torch.rand(2, SIZE, SIZE), None, r"float tensor \(N, C, H, W\), got \(2, 32, 32\)"),
    (torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), None, "float tensor"),
    (torch.rand(2, 1, SIZE, SIZE), None, "1 channels but the model's first convolution takes 3"),
    (grey_batch(2), [0, 1, 2], "targets must be one int or 2 ints"),
    (grey_batch(2), [0, 3], "target 3 of image 1 is out of range: the model has 3 classes"),
    (grey_batch(2), -1, "target -1 of image 0 is out of range"),
])
def test_bad_inputs_and_targets_are_clear_errors(model, bad, targets, message):
    with pytest.raises(DensevisError, match=message):
        SaliencyEngine(model, "vanilla").attribute(bad, targets)


def test_layers_that_cannot_be_explained_are_clear_errors(model, images):
    with pytest.raises(DensevisError, match=r"outputs shape \(3, 3\); layer methods need"):
        SaliencyEngine(model, "gradcam", "classifier").attribute(images)
    shared = nn.Sequential(nn.Conv2d(3, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 30 * 30, 2))
    shared.forward = lambda x: shared[3](shared[2](shared[1](shared[1](shared[0](x)))))
    # a reused module: the capture counts its calls and never uses one of them ...
    with pytest.raises(DensevisError, match="layer 1 is called 2 times per forward"):
        SaliencyEngine(shared, "gradcam", "1").attribute(images)
    # ... and at a known size the trace finds it before any work; "all" leaves it out
    with pytest.raises(DensevisError, match="layer 1 is called 2 times.*name a module that "
                                            "runs once"):
        SaliencyEngine(shared, "gradcam", "1", image_size=SIZE)
    assert list(SaliencyEngine(shared, "gradcam", "all", image_size=SIZE).layers) == ["0"]
    with pytest.raises(DensevisError, match="occlusion window 64 is larger than the 32x32"):
        SaliencyEngine(model, "occlusion", params={"occlusion": {"window": 64}}).attribute(images)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2))
    assert "found no module of Sequential that runs once and outputs a spatial map" in \
        _error(lambda: SaliencyEngine(flat, "gradcam", "all").attribute(images))
    assert "image_size 16x16 is not a size Sequential runs at" in \
        _error(lambda: SaliencyEngine(shared, "gradcam", "all", image_size=SIZE // 2))


def _error(call) -> str:
    with pytest.raises(DensevisError) as info:
        call()
    return str(info.value)


def test_every_registered_method_runs_and_returns_input_sized_float_maps(model, images):
    result = SaliencyEngine(model, "all", "pool0,norm5", CHEAP).attribute(images)
    assert {m for m, _ in result.maps} == set(METHODS)
    for key, maps in result.maps.items():
        assert maps.shape == (3, SIZE, SIZE) and maps.dtype == torch.float32, key
        assert torch.isfinite(maps).all(), key


# -- devices ---------------------------------------------------------------------------------

def test_bf16_autocast_is_close_to_float32(model, images):
    fp32 = SaliencyEngine(model, "vanilla,gradcam", "denseblock2").attribute(images, [0, 1, 2])
    bf16 = SaliencyEngine(model, "vanilla,gradcam", "denseblock2", autocast=True) \
        .attribute(images, [0, 1, 2])
    for key, maps in fp32.maps.items():
        assert bf16.maps[key].dtype == torch.float32
        correlation = torch.corrcoef(torch.stack([maps.flatten(), bf16.maps[key].flatten()]))[0, 1]
        assert correlation > 0.9, key


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; the GPU path "
                    "(same code, model and inputs on cuda) is checked when one is present")
def test_gpu_equals_cpu_within_tolerance(model, images):
    # documented tolerance: relative L2 error <= 1e-3 per map, with TF32 convolutions off
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        engine_args = ("all", "conv0,denseblock1,norm5", CHEAP)
        cpu = SaliencyEngine(model, *engine_args).attribute(images, [0, 1, 2])
        gpu_model = small_densenet().cuda()
        gpu = SaliencyEngine(gpu_model, *engine_args).attribute(images.cuda(), [0, 1, 2])
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous
    for key, maps in cpu.maps.items():
        error = (gpu.maps[key] - maps).norm() / maps.norm().clamp_min(1e-12)
        assert error <= 1e-3, (key, float(error))
