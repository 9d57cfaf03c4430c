"""densevis saliency against reference implementations on small models: Captum and
pytorch-grad-cam, compared like with like.

Where densevis differs by definition the test says so:
- maps are per grey pixel: Captum's per-channel gradients are summed over the 3 channels;
- pytorch-grad-cam min-max normalizes its CAMs (twice: per layer and after aggregating); its own
  ``scale_cam_image`` is applied to the densevis maps before comparing. Its layers are kept at
  input resolution so that its cv2 resize is the identity (the bilinear upsampling is checked
  against Captum's ``LayerAttribution.interpolate``);
- Captum's GuidedBackprop only patches ``nn.ReLU`` modules, so it misses torchvision DenseNet's
  functional ``F.relu`` (see the guided tests).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from densevis.saliency import SaliencyEngine

captum_attr = pytest.importorskip("captum.attr")

SIZE = 32
TARGETS = torch.tensor([0, 1, 2, 1])


def randomize_batchnorm(model: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that norm layers are not the identity."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            k = module.num_features
            module.weight.data = torch.rand(k, generator=generator) + 0.5
            module.bias.data = torch.randn(k, generator=generator) * 0.3
            module.running_mean = torch.randn(k, generator=generator) * 0.2
            module.running_var = torch.rand(k, generator=generator) + 0.5
    return model


DENSENET = dict(growth_rate=4, block_config=(2, 2), num_init_features=4, bn_size=2,
                num_classes=3)


class ModuleReLUDenseNet(torchvision.models.DenseNet):
    """torchvision's DenseNet whose final ReLU is an ``nn.ReLU`` module instead of ``F.relu``."""

    def __init__(self, **config):
        super().__init__(**config)
        self.final_relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.final_relu(self.features(x))
        out = torch.flatten(F.adaptive_avg_pool2d(out, (1, 1)), 1)
        return self.classifier(out)


class FullResolutionNet(nn.Module):
    """A small CNN whose feature maps stay at input resolution (for pytorch-grad-cam)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                                      nn.Conv2d(6, 8, 3, padding=1), nn.ReLU())
        self.classifier = nn.Linear(8, 3)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def densenet():
    torch.manual_seed(0)
    return randomize_batchnorm(torchvision.models.DenseNet(**DENSENET)).eval()


@pytest.fixture(scope="module")
def module_relu_densenet(densenet):
    model = ModuleReLUDenseNet(**DENSENET).eval()
    model.load_state_dict(densenet.state_dict())
    return model


@pytest.fixture(scope="module")
def images():
    grey = torch.rand(4, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    return grey.expand(-1, 3, -1, -1).contiguous()


@pytest.fixture(scope="module")
def panel(densenet, images):
    engine = SaliencyEngine(densenet, "vanilla,guided,input_x_gradient,gradcam,guided_gradcam",
                            "all")
    return engine.attribute(images, TARGETS).maps


def close(actual, expected, rtol=1e-5):
    """Equal up to float rounding, relative to the map's scale."""
    scale = float(expected.abs().max())
    assert scale > 0, "the reference map is all zeros: the comparison would prove nothing"
    torch.testing.assert_close(actual, expected, rtol=0, atol=rtol * scale)


def captum(name, model, images, *args, targets=TARGETS, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(captum_attr, name)(model, *args).attribute(images, target=targets,
                                                                    **kwargs).detach()


def test_vanilla_is_captum_saliency_summed_over_channels(densenet, images, panel):
    close(panel["vanilla", None], captum("Saliency", densenet, images, abs=False).sum(1))


def test_input_x_gradient_is_captum_summed_over_channels(densenet, images, panel):
    close(panel["input_x_gradient", None], captum("InputXGradient", densenet, images).sum(1))


def test_guided_matches_captum_when_every_relu_is_a_module(module_relu_densenet, images):
    ours = SaliencyEngine(module_relu_densenet, "guided").attribute(images, TARGETS)
    close(ours.maps["guided", None],
          captum("GuidedBackprop", module_relu_densenet, images).sum(1))


def test_guided_differs_from_captum_on_torchvision_densenet_by_the_functional_relu(
        densenet, module_relu_densenet, images, panel):
    ours = panel["guided", None]
    missed = captum("GuidedBackprop", densenet, images).sum(1)
    # Captum misses the F.relu of DenseNet.forward: a visibly different map
    assert (ours - missed).abs().max() > 0.05 * ours.abs().max()
    # the same weights with that one ReLU as a module: Captum agrees with densevis ...
    close(ours, captum("GuidedBackprop", module_relu_densenet, images).sum(1))
    # ... and densevis gives the same map on both models: it covered the functional ReLU
    both = SaliencyEngine(module_relu_densenet, "guided").attribute(images, TARGETS)
    close(both.maps["guided", None], ours)


def test_gradcam_is_captum_layer_gradcam_upsampled_bilinearly(densenet, images, panel):
    for name, layer in densenet.features.named_children():
        cam = captum("LayerGradCam", densenet, images, layer, relu_attributions=True)
        cam = captum_attr.LayerAttribution.interpolate(cam, (SIZE, SIZE), "bilinear")[:, 0]
        close(panel["gradcam", name], cam)


def test_guided_gradcam_is_captum_guided_gradcam(module_relu_densenet, images, panel):
    # Captum's guided part needs module ReLUs (same weights); its default interpolation is
    # nearest, the maps contract's is bilinear. Four layers: one per resolution.
    for name in ("norm0", "pool0", "transition1", "norm5"):
        layer = getattr(module_relu_densenet.features, name)
        expected = captum("GuidedGradCam", module_relu_densenet, images, layer,
                          interpolate_mode="bilinear").sum(1)
        close(panel["guided_gradcam", name], expected)


@pytest.mark.parametrize("rule,baseline", [("gausslegendre", 0.0), ("riemann_middle", 0.2),
                                           ("riemann_left", 0.0), ("riemann_right", 0.1)])
def test_integrated_gradients_match_captum(densenet, images, rule, baseline):
    params = {"integrated_gradients": {"steps": 12, "rule": rule, "baseline": baseline}}
    ours = SaliencyEngine(densenet, "integrated_gradients", params=params, chunk_size=7)
    expected = captum("IntegratedGradients", densenet, images, n_steps=12, method=rule,
                      baselines=baseline).sum(1)
    close(ours.attribute(images, TARGETS).maps["integrated_gradients", None], expected)


def test_integrated_gradients_trapezoid_is_complete(densenet, images):
    # Captum's riemann_trapezoid weights sum to (n-1)/n; ours to 1, so the attributions sum to
    # f(x) - f(baseline) (completeness, Sundararajan et al.)
    params = {"integrated_gradients": {"steps": 200, "rule": "riemann_trapezoid"}}
    maps = SaliencyEngine(densenet, "integrated_gradients", params=params, chunk_size=200) \
        .attribute(images, TARGETS).maps["integrated_gradients", None]
    with torch.no_grad():
        gap = (densenet(images) - densenet(torch.zeros_like(images))).gather(1, TARGETS[:, None])
    torch.testing.assert_close(maps.sum(dim=(1, 2)), gap[:, 0], rtol=0, atol=2e-3)


def test_occlusion_matches_captum(densenet, images):
    # window 8, stride 5 on 32 px: the last window is cut by the border, as Captum's
    params = {"occlusion": {"window": 8, "stride": 5}}
    ours = SaliencyEngine(densenet, "occlusion", params=params, chunk_size=10)
    expected = captum("Occlusion", densenet, images, sliding_window_shapes=(3, 8, 8),
                      strides=(3, 5, 5))
    # Captum attributes the same value to each channel of an occluded grey pixel
    assert torch.equal(expected[:, 0], expected[:, 2])
    close(ours.attribute(images, TARGETS).maps["occlusion", None], expected[:, 0])


@pytest.mark.parametrize("method,reference", [
    ("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus"), ("xgradcam", "XGradCAM"),
    ("hirescam", "HiResCAM"), ("layercam", "LayerCAM"), ("scorecam", "ScoreCAM")])
def test_cams_match_pytorch_grad_cam(method, reference, images):
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(3)
    model = randomize_batchnorm(FullResolutionNet()).eval()
    layers = ["0", "1", "3", "4"]
    ours = SaliencyEngine(model, method, layers).attribute(images, TARGETS).maps
    for name in layers:
        with warnings.catch_warnings(), \
                getattr(grad_cam, reference)(model, [model.features[int(name)]]) as cam:
            warnings.simplefilter("ignore")
            cam.batch_size = 3  # Score-CAM's chunk size: any works
            expected = cam(images, [ClassifierOutputTarget(int(t)) for t in TARGETS])
        # pytorch-grad-cam: ReLU, min-max per layer, then again after aggregating the layers
        normalized = scale_cam_image(scale_cam_image(ours[method, name].numpy(), (SIZE, SIZE)))
        assert expected.max() > 0
        torch.testing.assert_close(torch.from_numpy(normalized), torch.from_numpy(expected),
                                   rtol=0, atol=1e-5)
