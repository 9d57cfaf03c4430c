"""The registry of saliency methods and the methods derived from the shared capture.

A method is a small function registered by name with :func:`register`. It declares what it
``needs`` from the shared capture (see :class:`~densevis.saliency.capture.Capture`) and the engine
runs the fewest passes that cover every selected method:

- ``input_grad``: the plain gradient of each image's target logit w.r.t. the input;
- ``guided_grad``: the same with the guided ReLU rule (a second backward, same forward);
- ``layer_grads``: every selected layer's activation and gradient (from those two passes);
- ``layer_acts``: every selected layer's activation (the forward alone).

Methods that perturb the input (:mod:`densevis.saliency.perturbation`) declare nothing and run
their own batched passes through ``capture.evaluate``.

Every method returns float32 (N, H, W) maps at input resolution, unnormalized, as its paper
defines it. Gradients are w.r.t. the grey image: the sum of the input gradient over the channels
(exact when the channels repeat the grey image, as the model input does). The CAM family is
written as tiny functions of ``(activations, gradients)`` at the layer's resolution, upsampled
bilinearly (``align_corners=False``); like pytorch-grad-cam and the Grad-CAM paper, each CAM is
passed through a ReLU.

A method may build on another through ``capture.method(name, layer)``, which computes each map
once per capture. Adding a method::

    @register("gradient_norm", kind="pixel", needs={"input_grad"},
              summary="L2 norm of the input gradient over the channels")
    def gradient_norm(capture, layer):
        return capture.input_grad.norm(dim=1)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from densevis.errors import DensevisError
from probes.params import parse_value

#: Named method groups accepted wherever a method list is; ``panel`` is the original study's.
GROUPS = {"panel": ("vanilla", "guided", "gradcam", "guided_gradcam")}

NEEDS = frozenset({"input_grad", "guided_grad", "layer_grads", "layer_acts"})


@dataclass(frozen=True)
class Method:
    """A registered saliency method.

    Attributes
    ----------
    name : str
    kind : str
        ``"pixel"`` (one map per image) or ``"layer"`` (one map per image and selected layer).
    needs : frozenset of str
        What the method reads from the shared capture (see the module docstring).
    compute : callable
        ``compute(capture, layer, **params) -> Tensor (N, H, W)``; ``layer`` is None for pixel
        methods.
    defaults : dict
        Parameters and their default values (their types are the parameter types).
    summary, reference : str
    check : callable or None
        ``check(params, image_size)`` raises :class:`DensevisError` for unusable parameters.
    sign : str
        ``"signed"`` or ``"non_negative"`` (by construction, e.g. a CAM after its ReLU): decides
        the default reduction before scoring (:mod:`densevis.analysis.reduce`) and the colour
        scale of drawn maps (:func:`densevis.saliency.tiles.map_style`); each maps file records
        it (attribute ``method_signs``).
    resolution : str
        ``"input"`` (detail at the input's pixels) or ``"layer"`` (the layer's grid, upsampled):
        a layer-resolution map is compared with null baselines pooled to the same grid.
    """

    name: str
    kind: str
    needs: frozenset
    compute: Callable
    defaults: dict = field(default_factory=dict)
    summary: str = ""
    reference: str = ""
    check: Callable | None = None
    sign: str = "signed"
    resolution: str = "input"


SIGNS = ("signed", "non_negative")
RESOLUTIONS = ("input", "layer")

#: Every method by name, in registration order (the order of ``methods="all"``).
METHODS: dict[str, Method] = {}


def register(name: str, kind: str, needs=(), summary: str = "", reference: str = "",
             check: Callable | None = None, sign: str = "signed", resolution: str = "input",
             **defaults):
    """Decorator registering ``compute(capture, layer, **params)`` as method ``name``
    (``defaults``: its parameters; the other arguments are :class:`Method`'s attributes)."""
    if kind not in ("pixel", "layer"):
        raise ValueError(f"kind must be 'pixel' or 'layer', got {kind!r}")
    if sign not in SIGNS or resolution not in RESOLUTIONS:
        raise ValueError(f"sign must be one of {SIGNS} and resolution one of {RESOLUTIONS}")
    unknown = set(needs) - NEEDS
    if unknown:
        raise ValueError(f"unknown needs {sorted(unknown)}; valid: {sorted(NEEDS)}")

    def decorate(compute: Callable) -> Callable:
        METHODS[name] = Method(name, kind, frozenset(needs), compute, dict(defaults), summary,
                               reference, check, sign, resolution)
        return compute
    return decorate


def resolve_methods(spec) -> list[str]:
    """Method names from ``"all"``, a group (``"panel"``), ``"a,b"`` or a list, validated.

    Examples
    --------
    >>> resolve_methods("vanilla,gradcam")
    ['vanilla', 'gradcam']
    >>> resolve_methods("panel")
    ['vanilla', 'guided', 'gradcam', 'guided_gradcam']
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    resolved: list[str] = []
    for name in (n.strip() for n in names):
        expanded = list(METHODS) if name == "all" else GROUPS.get(name, (name,))
        for method in expanded:
            if method not in METHODS:
                raise DensevisError(f"unknown saliency method {method!r}; valid: "
                                    f"{', '.join(METHODS)}, or all, {', '.join(GROUPS)}")
            if method not in resolved:
                resolved.append(method)
    if not resolved:
        raise DensevisError("no saliency method given; valid: " + ", ".join(METHODS))
    return resolved


def resolve_params(methods: list[str], params: dict | None) -> dict[str, dict]:
    """Every selected method's parameters: defaults overridden by ``params[method]``, typed."""
    params = params or {}
    stray = [name for name in params if name not in methods]
    if stray:
        raise DensevisError(f"parameters given for {', '.join(stray)}, which is not among the "
                            f"selected methods ({', '.join(methods)})")
    resolved = {}
    for name in methods:
        defaults = METHODS[name].defaults
        given = dict(params.get(name, {}))
        unknown = [key for key in given if key not in defaults]
        if unknown:
            valid = ", ".join(defaults) or "none"
            raise DensevisError(f"method {name} has no parameter {unknown[0]!r}; valid: {valid}")
        resolved[name] = {key: _typed(name, key, given.get(key, default), default)
                          for key, default in defaults.items()}
    return resolved


def _typed(method: str, key: str, value, default):
    kind = type(default)
    try:
        if kind is bool and isinstance(value, str):
            return parse_value(value, bool)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise DensevisError(f"{method}.{key}={value!r} is not a {kind.__name__} "
                            f"(default {default!r})") from None


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W), bilinear with ``align_corners=False`` (identity when h, w = H, W)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


# -- gradient methods ------------------------------------------------------------------------

@register("vanilla", "pixel", {"input_grad"}, "gradient of the target logit (signed)",
          "Simonyan et al. 2014, arXiv:1312.6034")
def vanilla(capture, layer):
    return capture.input_grad.sum(1)


@register("guided", "pixel", {"guided_grad"}, "guided backpropagation (signed)",
          "Springenberg et al. 2015, arXiv:1412.6806")
def guided(capture, layer):
    return capture.guided_grad.sum(1)


@register("input_x_gradient", "pixel", {"input_grad"}, "input times gradient",
          "Shrikumar et al. 2016, arXiv:1605.01713")
def input_x_gradient(capture, layer):
    return (capture.inputs * capture.input_grad).sum(1)


# -- the CAM family: tiny functions of (activations, gradients), (N, K, h, w) -> (N, h, w) -----

def cam_method(name: str, summary: str, reference: str):
    """Register ``cam(activations, gradients) -> (N, h, w)`` as a layer method ``name``.

    The registered method ReLUs the CAM (as the Grad-CAM paper and pytorch-grad-cam do) and
    upsamples it to the input.
    """
    def decorate(cam: Callable) -> Callable:
        def compute(capture, layer):
            return upsample(F.relu(cam(*capture.layer(layer))), capture.size)
        compute.__doc__ = cam.__doc__
        register(name, "layer", {"layer_grads"}, summary, reference, sign="non_negative",
                 resolution="layer")(compute)
        return cam
    return decorate


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(2, 3), keepdim=True)


@cam_method("gradcam", "Grad-CAM: channels weighted by their mean gradient",
            "Selvaraju et al. 2017, arXiv:1610.02391")
def gradcam(activations, gradients):
    """sum_k mean(g_k) A_k."""
    return (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(1)


@cam_method("gradcam_pp", "Grad-CAM++: second-order channel weights",
            "Chattopadhay et al. 2018, arXiv:1710.11063 (eq. 19, as pytorch-grad-cam)")
def gradcam_pp(activations, gradients):
    """sum_k w_k A_k, w_k = sum_ij relu(g) a_ij, a = g^2 / (2 g^2 + sum(A_k) g^3)."""
    g2 = gradients.square()
    alpha = g2 / (2 * g2 + _spatial_sum(activations) * g2 * gradients + 1e-6)
    alpha = torch.where(gradients != 0, alpha, torch.zeros_like(alpha))
    weights = _spatial_sum(F.relu(gradients) * alpha)
    return (weights * activations).sum(1)


@cam_method("xgradcam", "XGrad-CAM: activation-normalized gradient weights",
            "Fu et al. 2020, arXiv:2008.02312")
def xgradcam(activations, gradients):
    """sum_k w_k A_k, w_k = sum_ij g A / (sum_ij A + eps)."""
    weights = _spatial_sum(gradients * activations) / (_spatial_sum(activations) + 1e-7)
    return (weights * activations).sum(1)


@cam_method("hirescam", "HiResCAM: element-wise gradient times activation",
            "Draelos & Carin 2020, arXiv:2011.08891")
def hirescam(activations, gradients):
    """sum_k g_k * A_k (element-wise)."""
    return (gradients * activations).sum(1)


@cam_method("layercam", "LayerCAM: positive gradients times activation",
            "Jiang et al. 2021, IEEE TIP 30:5875")
def layercam(activations, gradients):
    """sum_k relu(g_k) * A_k (element-wise)."""
    return (F.relu(gradients) * activations).sum(1)


@register("guided_gradcam", "layer", {"guided_grad", "layer_grads"},
          "guided backpropagation times the upsampled Grad-CAM",
          "Selvaraju et al. 2017, arXiv:1610.02391")
def guided_gradcam(capture, layer):
    return capture.method("guided") * capture.method("gradcam", layer)
