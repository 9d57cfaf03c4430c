"""What one batch's shared passes captured (:class:`Capture`, read by every method) and the maps
they give (:class:`Explanation`, the engine's result).

Both are plain data: the engine (:mod:`densevis.saliency.engine`) fills a :class:`Capture` and
turns it into an :class:`Explanation`; :mod:`densevis.saliency.transfer` copies explanations to
the host. Neither module is imported here, so the arrows point one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from densevis.saliency.methods import METHODS


@dataclass
class Explanation:
    """Maps of a batch: ``maps[(method, layer or None)]`` float32 (N, H, W) on the CPU.

    Attributes
    ----------
    maps : dict
    logits : Tensor
        float32 (N, C) of the shared forward.
    targets : Tensor
        int64 (N,): the class each image's maps explain.
    """

    maps: dict
    logits: torch.Tensor
    targets: torch.Tensor

    def numpy(self) -> dict:
        """The maps as numpy arrays (the form :class:`densevis.maps.MapsWriter` writes)."""
        return {key: value.numpy() for key, value in self.maps.items()}


@dataclass
class Capture:
    """What the shared passes captured for a batch; methods read it.

    Attributes
    ----------
    inputs : Tensor
        (N, C, H, W) model input.
    logits : Tensor
        float32 (N, C).
    targets : Tensor
        int64 (N,).
    input_grad, guided_grad : Tensor or None
        (N, C, H, W) plain and guided gradients of the target logits w.r.t. the input.
    activations, gradients : dict
        Per layer key: (N, K, h, w) output of the layer and gradient w.r.t. it.
    """

    model: nn.Module
    inputs: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    params: dict
    autocast: bool = False
    chunk_size: int = 64
    input_grad: torch.Tensor | None = None
    guided_grad: torch.Tensor | None = None
    activations: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)
    _memo: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.inputs.shape[-2:])

    def layer(self, key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(activations, gradients)`` of layer ``key`` in float32 (N, K, h, w)."""
        return self.activations[key].float(), self.gradients[key].float()

    def method(self, name: str, layer: str | None = None) -> torch.Tensor:
        """The maps of method ``name`` (at ``layer``), computed once per capture."""
        key = (name, layer)
        if key not in self._memo:
            params = self.params.get(name, METHODS[name].defaults)
            self._memo[key] = METHODS[name].compute(self, layer, **params)
        return self._memo[key]

    def autocast_context(self):
        return torch.autocast(self.inputs.device.type, dtype=torch.bfloat16,
                              enabled=self.autocast)

    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor | None = None):
        """One extra pass: logits float32 (n, C) of ``inputs``; with ``targets`` also the input
        gradients (n, C, H, W) of the target logits, as ``(logits, gradients)``."""
        if targets is None:
            with torch.no_grad(), self.autocast_context():
                return self.model(inputs).float()
        x = inputs.detach().requires_grad_(True)
        with torch.enable_grad(), self.autocast_context():
            logits = self.model(x).float()
        score = logits.gather(1, targets[:, None]).sum()
        (grad,) = torch.autograd.grad(score, x)
        return logits.detach(), grad
