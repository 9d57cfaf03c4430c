"""Path and perturbation methods: integrated gradients, SmoothGrad, occlusion, Score-CAM, RISE.

Each evaluates the model on many perturbed copies of the batch. The copies are built chunk by
chunk (``capture.chunk_size`` model inputs at a time, halved on CUDA out-of-memory), so memory is
bounded whatever the number of steps, samples, windows or masks. Random choices (SmoothGrad noise,
RISE masks) come from a seeded generator on the CPU and are shared by every image of the call, so
a map does not depend on the batch it was computed in nor on the device.

Perturbations act on pixels: the same change on every channel, so a grey input stays grey. As
for the gradient methods, gradient-based maps are summed over the channels (the gradient w.r.t.
the grey image); occlusion and RISE give each pixel one value.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from densevis.errors import DensevisError
from densevis.saliency.batching import in_chunks
from densevis.saliency.methods import register, upsample


def scan(capture, per_image: int, make: Callable, consume: Callable, grad: bool = False) -> None:
    """Evaluate ``per_image`` perturbed copies of every image, in memory-bounded chunks.

    Items are numbered image-major: item ``i`` is copy ``j = i % per_image`` of image
    ``i // per_image``. ``make(images, j)`` returns the model inputs (n, C, H, W) of a chunk
    and anything its ``consume`` needs (the masks, say); ``consume(images, j, made, scores,
    logits, grads)`` accumulates its results: ``scores`` (n,) are the target logits, ``grads``
    the input gradients of those (None unless ``grad``).
    """
    def step(start: int, stop: int) -> None:
        items = torch.arange(start, stop, device=capture.inputs.device)
        images, j = items // per_image, items % per_image
        inputs, made = make(images, j)
        targets = capture.targets[images]
        if grad:
            logits, grads = capture.evaluate(inputs, targets)
        else:
            logits, grads = capture.evaluate(inputs), None
        consume(images, j, made, logits.gather(1, targets[:, None])[:, 0], logits, grads)

    count = len(capture.inputs) * per_image
    capture.chunk_size = in_chunks(count, capture.chunk_size, step)


def _positive(**values) -> None:
    for name, value in values.items():
        if value <= 0:
            raise DensevisError(f"{name} must be positive (got {value})")


# -- integrated gradients --------------------------------------------------------------------

def path_points(steps: int, rule: str) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of a quadrature rule on [0, 1], under Captum's names.

    ``gausslegendre`` (the default, as Captum's) and ``riemann_left/middle/right`` are exactly
    Captum's. ``riemann_trapezoid`` is the trapezoid rule (weights 1/(n-1), halved at the ends,
    summing to 1); Captum 0.9 weights it with 1/n, summing to (n-1)/n, so its trapezoid
    integrated gradients are (n-1)/n of a proper one's.

    Examples
    --------
    >>> alphas, weights = path_points(3, "riemann_trapezoid")
    >>> alphas.tolist(), weights.tolist()
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.25])
    """
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return 0.5 * (nodes + 1), 0.5 * weights
    if rule == "riemann_trapezoid":
        if steps < 2:
            raise DensevisError("riemann_trapezoid needs at least 2 steps")
        weights = np.full(steps, 1 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0, 1, steps), weights
    offsets = {"riemann_left": 0.0, "riemann_middle": 0.5, "riemann_right": 1.0}
    if rule not in offsets:
        raise DensevisError(f"unknown integration rule {rule!r}; valid: gausslegendre, "
                            f"riemann_trapezoid, {', '.join(offsets)}")
    return (np.arange(steps) + offsets[rule]) / steps, np.full(steps, 1 / steps)


def _check_ig(params, size) -> None:
    _positive(**{"integrated_gradients.steps": params["steps"]})
    path_points(params["steps"], params["rule"])


@register("integrated_gradients", "pixel", (), "integrated gradients from a constant baseline",
          "Sundararajan et al. 2017, arXiv:1703.01365", check=_check_ig,
          steps=50, baseline=0.0, rule="gausslegendre")
def integrated_gradients(capture, layer, steps, baseline, rule):
    """(x - b) * integral over a in [0, 1] of grad f(b + a (x - b)), summed over channels."""
    x = capture.inputs
    alphas, weights = (torch.as_tensor(v, dtype=x.dtype, device=x.device)
                       for v in path_points(steps, rule))
    total = torch.zeros_like(x)

    def make(images, j):
        return baseline + alphas[j].view(-1, 1, 1, 1) * (x[images] - baseline), None

    def consume(images, j, made, scores, logits, grads):
        total.index_add_(0, images, grads * weights[j].view(-1, 1, 1, 1))

    scan(capture, steps, make, consume, grad=True)
    return ((x - baseline) * total).sum(1)


# -- SmoothGrad ------------------------------------------------------------------------------

def _check_smoothgrad(params, size) -> None:
    _positive(samples=params["samples"])
    if params["sigma"] < 0:
        raise DensevisError(f"sigma must be >= 0 (got {params['sigma']})")


def _smoothgrad(capture, samples: int, sigma: float, seed: int, squared: bool) -> torch.Tensor:
    x = capture.inputs
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn((samples, 1) + tuple(x.shape[2:]), generator=generator).to(x)
    spread = sigma * (x.flatten(1).amax(1) - x.flatten(1).amin(1))  # per image, as the paper
    total = torch.zeros((len(x),) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)

    def make(images, j):
        return x[images] + spread[images].view(-1, 1, 1, 1) * noise[j], None

    def consume(images, j, made, scores, logits, grads):
        grey = grads.sum(1)
        total.index_add_(0, images, grey.square() if squared else grey)

    scan(capture, samples, make, consume, grad=True)
    return total / samples


@register("smoothgrad", "pixel", (), "mean gradient over noisy copies",
          "Smilkov et al. 2017, arXiv:1706.03825", check=_check_smoothgrad,
          samples=25, sigma=0.15, seed=0)
def smoothgrad(capture, layer, samples, sigma, seed):
    """Mean of the (grey) gradient at x + N(0, (sigma (max x - min x))^2), noise per pixel."""
    return _smoothgrad(capture, samples, sigma, seed, squared=False)


@register("smoothgrad_sq", "pixel", (), "mean squared gradient over noisy copies",
          "Smilkov et al. 2017; Hooker et al. 2019, arXiv:1806.10758", check=_check_smoothgrad,
          sign="non_negative", samples=25, sigma=0.15, seed=0)
def smoothgrad_sq(capture, layer, samples, sigma, seed):
    """Mean of the squared (grey) gradient over the same noisy copies as ``smoothgrad``."""
    return _smoothgrad(capture, samples, sigma, seed, squared=True)


# -- occlusion -------------------------------------------------------------------------------

def window_starts(size: int, window: int, stride: int) -> torch.Tensor:
    """Window offsets along one side, as Captum's Occlusion: ceil((size - window) / stride) + 1
    windows at multiples of ``stride``, the last one cut by the border."""
    return torch.arange(math.ceil((size - window) / stride) + 1) * stride


def _check_occlusion(params, size) -> None:
    _positive(window=params["window"], stride=params["stride"])
    if params["window"] > min(size):
        raise DensevisError(f"occlusion window {params['window']} is larger than the "
                            f"{size[0]}x{size[1]} images; give a smaller window")


@register("occlusion", "pixel", (), "drop of the target logit when a window is occluded",
          "Zeiler & Fergus 2014, arXiv:1311.2901", check=_check_occlusion,
          window=16, stride=8, baseline=0.0)
def occlusion(capture, layer, window, stride, baseline):
    """Mean over the windows covering a pixel of f(x) - f(x with the window set to baseline)."""
    x, (height, width) = capture.inputs, capture.size
    rows, cols = (window_starts(side, window, stride).to(x.device) for side in (height, width))
    grid_y, grid_x = (torch.arange(side, device=x.device) for side in (height, width))
    total = torch.zeros((len(x), height, width), dtype=x.dtype, device=x.device)
    original = capture.logits.gather(1, capture.targets[:, None])[:, 0]

    def windows(j):
        top, left = rows[j // len(cols)], cols[j % len(cols)]
        inside_y = (grid_y >= top[:, None]) & (grid_y < top[:, None] + window)
        inside_x = (grid_x >= left[:, None]) & (grid_x < left[:, None] + window)
        return (inside_y[:, :, None] & inside_x[:, None, :]).to(x.dtype)

    def make(images, j):
        mask = windows(j)
        return x[images] * (1 - mask[:, None]) + baseline * mask[:, None], mask

    def consume(images, j, mask, scores, logits, grads):
        total.index_add_(0, images, (original[images] - scores).view(-1, 1, 1) * mask)

    scan(capture, len(rows) * len(cols), make, consume)
    counts = windows(torch.arange(len(rows) * len(cols), device=x.device)).sum(0)
    return total / counts


# -- Score-CAM -------------------------------------------------------------------------------

@register("scorecam", "layer", {"layer_acts"}, "channels weighted by the score of the image "
          "masked by them", "Wang et al. 2020, arXiv:1910.01279 (as pytorch-grad-cam)",
          sign="non_negative", resolution="layer")
def scorecam(capture, layer):
    """relu(sum_k w_k A_k), w = softmax over k of the target logit of x * norm(upsample(A_k)).

    As pytorch-grad-cam's ScoreCAM (min-max normalized masks, softmax over the channels'
    target logits), except that the masks are upsampled like every CAM here, bilinearly with
    ``align_corners=False`` (pytorch-grad-cam uses ``align_corners=True``; the two agree on
    layers at input resolution).
    """
    acts = capture.activations[layer].float()
    scores = torch.zeros(acts.shape[:2], dtype=torch.float32, device=acts.device)

    def make(images, j):
        mask = upsample(acts[images, j], capture.size)
        low = mask.flatten(1).amin(1).view(-1, 1, 1)
        high = mask.flatten(1).amax(1).view(-1, 1, 1)
        mask = (mask - low) / (high - low + 1e-8)
        return capture.inputs[images] * mask[:, None].to(capture.inputs.dtype), None

    def consume(images, j, made, target_scores, logits, grads):
        scores[images, j] = target_scores

    scan(capture, acts.shape[1], make, consume)
    weights = scores.softmax(1)[:, :, None, None]
    return upsample(F.relu((weights * acts).sum(1)), capture.size)


# -- RISE ------------------------------------------------------------------------------------

def _check_rise(params, size) -> None:
    _positive(masks=params["masks"], cells=params["cells"])
    if not 0 < params["p"] <= 1:
        raise DensevisError(f"rise.p must be in (0, 1] (got {params['p']})")


def rise_masks(count: int, cells: int, p: float, size: tuple[int, int], seed: int):
    """A function ``j -> (n, H, W)`` masks: RISE's random ``cells`` x ``cells`` binary grids
    (keep probability ``p``), upsampled bilinearly to (cells + 1) * cell size and randomly
    shifted by less than a cell, all drawn from ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    grids = (torch.rand(count, 1, cells, cells, generator=generator) < p).float()
    cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
    shifts = torch.stack([torch.randint(0, c, (count,), generator=generator) for c in cell], 1)
    big = ((cells + 1) * cell[0], (cells + 1) * cell[1])

    def masks(j: torch.Tensor) -> torch.Tensor:
        j = j.cpu()
        up = F.interpolate(grids[j], size=big, mode="bilinear", align_corners=False)[:, 0]
        rows = shifts[j, 0, None] + torch.arange(size[0])
        cols = shifts[j, 1, None] + torch.arange(size[1])
        n = torch.arange(len(j))[:, None, None]
        return up[n, rows[:, :, None], cols[:, None, :]]
    return masks


@register("rise", "pixel", (), "mean of random masks weighted by the target probability",
          "Petsiuk et al. 2018, arXiv:1806.07421", check=_check_rise,
          sign="non_negative", masks=2000, cells=8, p=0.5, seed=0)
def rise(capture, layer, masks, cells, p, seed):
    """sum_i P(target | x * M_i) M_i / (masks * p) over seeded random masks M_i."""
    x = capture.inputs
    make_masks = rise_masks(masks, cells, p, capture.size, seed)
    total = torch.zeros((len(x),) + capture.size, dtype=torch.float32, device=x.device)

    def make(images, j):
        chunk = make_masks(j).to(x.device)
        return x[images] * chunk[:, None].to(x.dtype), chunk

    def consume(images, j, chunk, scores, logits, grads):
        probability = logits.softmax(1).gather(1, capture.targets[images, None])
        total.index_add_(0, images, probability.view(-1, 1, 1) * chunk)

    scan(capture, masks, make, consume)
    return total / (masks * p)
