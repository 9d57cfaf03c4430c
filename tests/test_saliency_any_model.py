"""densevis on models that are not the study's DenseNet: the small residual CNN of
``experiments/own_model`` (functional and in-place ReLUs, one ``nn.ReLU`` called twice, children
declared out of forward order), torchvision ``resnet18`` and ``vgg11_bn``. Layers ``"all"`` and
the sanity checks' groups as documented, and the maps against Captum and pytorch-grad-cam
(the helpers of ``test_saliency_reference``) where those are right.

The models are seeded and in eval mode with fixed, non-trivial BatchNorm statistics; their
``Linear`` layers are re-drawn at unit gain (torchvision's VGG draws them with std 0.01, which
leaves its logits and gradients around 1e-2 and 1e-5), and the images are smooth blobs, not
pixel noise that a global average pools away. Maps are compared with a tolerance relative to the
reference map's largest value (``close``): their scale differs by orders of magnitude between
layers and models, and implementations sum in different orders.

Where a reference is wrong the test says so and asserts the documented difference:
- Captum's ``GuidedBackprop`` replaces ``nn.ReLU`` modules only: on the small CNN (``F.relu``
  in place, ``torch.relu``) it differs from densevis, which covers every ReLU; densevis equals
  a reference with every ReLU replaced by the guided autograd function written here;
- pytorch-grad-cam keeps the activation of its target layer by reference, so where an in-place
  ReLU follows the layer (a BatchNorm before ``ReLU(inplace=True)``) it reads the activation
  after the ReLU, with the gradient before it (a tensor hook registered before an in-place op).
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from densevis.analysis.sanity import layer_groups
from densevis.errors import DensevisError
from densevis.saliency import SaliencyEngine
from densevis.saliency.layers import resolve_layers
from test_saliency_reference import captum, captum_attr, close, randomize_batchnorm

#: every image explained for both classes: a Grad-CAM of an early layer of an untrained net can
#: be all negative (all 0 after its ReLU) for one class, which would make a comparison vacuous
TARGETS = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
#: CAMs of early layers here are small differences of large terms (the weighted sum of the
#: channels cancels up to ~200-fold), so float32 rounding, summed in another order by each
#: implementation, reaches 1e-5 of the map's peak
CAM_RTOL = 1e-4
OWN_MODEL = Path(__file__).parents[1] / "experiments" / "own_model" / "small_resnet.py"
VGG_CONVS = [0, 4, 8, 11, 15, 18, 22, 25]  # the 8 convolutions of vgg11_bn.features

#: layers "all" of each model at its test size, as resolve_layers documents them
ALL_LAYERS = {
    "small_resnet": ["stem", "stem_norm", "block1", "down", "block2"],
    "resnet18": ["conv1", "bn1", "relu", "maxpool"] + [f"layer{i}.{j}" for i in range(1, 5)
                                                       for j in range(2)],
    # features.<i> keyed by <i> (children of model.features); the 7x7 adaptive pool too
    "vgg11_bn": [str(i) for i in range(29)] + ["avgpool"],
}
#: the sanity checks' groups, from the output down (a BatchNorm joins the layer before it)
GROUPS = {
    "small_resnet": [("head", ["head"]), ("block2", ["block2"]), ("down", ["down"]),
                     ("block1", ["block1"]), ("stem", ["stem", "stem_norm"])],
    "resnet18": [("fc", ["fc"])] + [(f"layer{i}.{j}", [f"layer{i}.{j}"]) for i in (4, 3, 2, 1)
                                    for j in (1, 0)] + [("conv1", ["conv1", "bn1"])],
    "vgg11_bn": [(f"classifier.{i}", [f"classifier.{i}"]) for i in (6, 3, 0)]
                + [(str(i), [f"features.{i}", f"features.{i + 1}"]) for i in VGG_CONVS[::-1]],
}
#: layers an in-place ReLU follows: pytorch-grad-cam reads them after the ReLU (see above)
OVERWRITTEN = {"small_resnet": {"stem_norm"}, "resnet18": {"bn1"},
               "vgg11_bn": {str(i + 1) for i in VGG_CONVS}}
SIZES = {"small_resnet": 32, "resnet18": 64, "vgg11_bn": 64}
#: the layers compared with the references (a pass of each per layer): all but VGG's, where
#: each kind of layer at the first, a middle and the last resolution, and the 7x7 pool
COMPARED = {"vgg11_bn": ["0", "1", "2", "3", "13", "14", "26", "27", "28", "avgpool"]}


def compared(name: str, model: nn.Module) -> dict[str, nn.Module]:
    layers = resolve_layers(model, "all", image_size=SIZES[name])
    return {key: layers[key] for key in COMPARED.get(name, layers)}


def small_resnet(**kwargs) -> nn.Module:
    """The factory of experiments/own_model, imported by path as a spec would name it."""
    spec = importlib.util.spec_from_file_location("small_resnet", OWN_MODEL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.small_resnet(**kwargs)


BUILDERS = {"small_resnet": small_resnet,
            "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=2),
            "vgg11_bn": lambda: torchvision.models.vgg11_bn(weights=None, num_classes=2)}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = randomize_batchnorm(BUILDERS[name]())
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.weight.data = torch.randn(module.weight.shape, generator=generator) \
                / module.in_features ** 0.5
    return model.eval().requires_grad_(False)  # gradients w.r.t. inputs and layers only


def blobs(size: int) -> torch.Tensor:
    """Four smooth grey images (bilinear 4x4 noise), each twice (one per target), 3 channels."""
    coarse = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(2)).repeat(2, 1, 1, 1)
    grey = F.interpolate(coarse, (size, size), mode="bilinear", align_corners=False)
    return grey.expand(-1, 3, -1, -1).contiguous()


@pytest.fixture(scope="module", params=list(BUILDERS))
def case(request):
    """``(name, model, images, densevis maps of vanilla, guided and Grad-CAM on "all")``."""
    name = request.param
    model, images = build(name), blobs(SIZES[name])
    engine = SaliencyEngine(model, "vanilla,guided,gradcam", "all", image_size=SIZES[name])
    return name, model, images, engine.attribute(images, TARGETS).maps


def test_all_is_every_block_that_runs_once_in_forward_order(case):
    name, model, images, maps = case
    assert list(resolve_layers(model, "all", image_size=SIZES[name])) == ALL_LAYERS[name]
    assert [layer for method, layer in maps if method == "gradcam"] == ALL_LAYERS[name]


def test_sanity_groups_run_from_the_output_to_the_input(case):
    name, model, _, _ = case
    assert layer_groups(model, SIZES[name]) == GROUPS[name]


def test_a_reused_relu_is_not_a_layer_and_naming_it_is_a_clear_error():
    model = build("small_resnet")
    # the block's one nn.ReLU runs twice per forward: "all" keeps the block, never the ReLU
    with pytest.raises(DensevisError, match="layer block1.relu is called 2 times per forward"):
        resolve_layers(model, "block1.relu", image_size=32)
    engine = SaliencyEngine(model, "gradcam", "block1.relu")  # no size: found at the capture
    with pytest.raises(DensevisError, match="layer block1.relu is called 2 times per forward"):
        engine.attribute(blobs(32), TARGETS)


def test_vanilla_is_captum_saliency(case):
    _, model, images, maps = case
    close(maps["vanilla", None], captum("Saliency", model, images, targets=TARGETS,
                                        abs=False).sum(1))


def test_gradcam_is_captum_layer_gradcam_on_every_layer(case):
    name, model, images, maps = case
    for key, layer in compared(name, model).items():
        cam = captum("LayerGradCam", model, images, layer, targets=TARGETS,
                     relu_attributions=True)
        cam = captum_attr.LayerAttribution.interpolate(cam, images.shape[-2:], "bilinear")
        close(maps["gradcam", key], cam[:, 0], CAM_RTOL)


def test_gradcam_is_pytorch_grad_cam_where_no_inplace_op_overwrites_the_layer(case):
    name, model, images, maps = case
    for key, layer in compared(name, model).items():
        expected = pytorch_grad_cam(model, layer, images)
        if key in OVERWRITTEN[name]:
            # its activation after the in-place ReLU, its gradient before it
            output, gradient = output_and_gradient(model, layer, images)
            weights = gradient.mean(dim=(2, 3), keepdim=True)
            read = upsampled((weights * output.relu()).sum(1, keepdim=True).relu(), images)
            close(torch.from_numpy(expected), normalized(read), CAM_RTOL)
            assert (normalized(maps["gradcam", key]) - torch.from_numpy(expected)).abs().max() \
                > 1e-2, key
        else:
            close(torch.from_numpy(expected), normalized(maps["gradcam", key]), CAM_RTOL)


def test_guided_covers_every_relu(case, monkeypatch):
    name, model, images, maps = case
    ours = maps["guided", None]
    with monkeypatch.context() as patch:  # every ReLU form the three models call
        patch.setattr(F, "relu", lambda x, inplace=False: GuidedReLU.apply(x))
        patch.setattr(torch, "relu", GuidedReLU.apply)
        x = images.clone().requires_grad_(True)
        total = model(x).gather(1, TARGETS[:, None]).sum()
        close(ours, torch.autograd.grad(total, x)[0].sum(1))
    reference = captum("GuidedBackprop", model, images, targets=TARGETS).sum(1)
    if name == "small_resnet":
        # Captum replaces nn.ReLU modules only: the F.relu and torch.relu of the forward keep
        # their plain rule in its map
        assert (ours - reference).abs().max() > 0.05 * ours.abs().max()
    else:  # every ReLU is a module (resnet18 calls each block's ReLU twice: Captum copes)
        close(ours, reference)


class GuidedReLU(torch.autograd.Function):
    """ReLU with the guided backward rule: the gradient where the input and it are positive."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp_min(0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad.clamp_min(0) * (out > 0)


def output_and_gradient(model, layer, images):
    """The layer's own output (before any in-place op after it) and the gradient w.r.t. it."""
    kept = []

    def keep(module, args, output):
        kept.append(output)
        return output.clone()  # in-place ops after the layer change the copy

    handle = layer.register_forward_hook(keep)
    try:
        total = model(images.clone().requires_grad_(True)).gather(1, TARGETS[:, None]).sum()
    finally:
        handle.remove()
    return kept[0].detach(), torch.autograd.grad(total, kept[0])[0]


def upsampled(cam: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return F.interpolate(cam, images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]


def normalized(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scaled to [0, 1] per image, as pytorch-grad-cam's output (it scales before and
    after its upsampling; both are affine per image, so the result is the upsampled map scaled
    once; its 1e-7 guard is left out: on raw maps of size 1e-4 it would be a 1e-3 error)."""
    low = maps.amin(dim=(1, 2), keepdim=True)
    span = (maps - low).amax(dim=(1, 2), keepdim=True)
    return (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny)


def pytorch_grad_cam(model, layer, images) -> np.ndarray:
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with warnings.catch_warnings(), grad_cam.GradCAM(model, [layer]) as cam:
        warnings.simplefilter("ignore")
        # an input that requires grad: the layer's output needs one to be hooked (the model's
        # parameters are frozen)
        return cam(images.clone().requires_grad_(True),
                   [ClassifierOutputTarget(int(t)) for t in TARGETS])
