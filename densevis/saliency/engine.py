"""The saliency engine: one shared capture (one forward, a plain and a guided backward) from which
every selected method is derived.

Plan of passes for a batch:

1. ONE forward, with every selected layer's output captured by a forward hook (and, when a guided
   method is selected, every ReLU recorded as a :class:`~densevis.saliency.guided.SwitchableReLU`);
2. a plain backward of the per-image target logits through the retained graph, to the input and
   to every captured layer output at once (``torch.autograd.grad`` with many inputs);
3. a guided backward through the same graph with the ReLU rule switched to guided.

Vanilla gradients, input x gradient, Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM and LayerCAM on
every layer, guided backprop and guided Grad-CAM are derivations of those three passes. Only
path and perturbation methods (integrated gradients, SmoothGrad, occlusion, Score-CAM, RISE)
add passes, batched in memory-bounded chunks.

The hook of a captured layer hands the rest of the network a *copy* of the layer's output, so an
in-place op downstream (DenseNet's ``relu0`` after ``norm0``) changes the copy, never the
captured activation, and the gradient taken w.r.t. the captured tensor is the gradient w.r.t. the
layer's own (pre-ReLU) output. A captured layer that the forward calls more than once (a reused
``nn.ReLU``) is an error naming its number of calls, never one of its calls silently. Layers
``"all"`` are found once per engine, by one traced forward of a blank image
(:mod:`densevis.saliency.trace`), outside the plan of passes. Hooks, the ReLU mode, eval mode
and frozen parameters last for the call only: the model's modes, ``requires_grad`` flags and
``.grad`` are restored even when the call raises.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

from densevis.errors import DensevisError
from densevis.saliency import perturbation  # noqa: F401 - registers the perturbation methods
from densevis.saliency.batching import in_chunks
from densevis.saliency.capture import Capture, Explanation
from densevis.saliency.guided import ReLURule, switchable_relus
from densevis.saliency.layers import resolve_layers, reused_layer, selects_all
from densevis.saliency.methods import METHODS, resolve_methods, resolve_params
from densevis.saliency.trace import frozen_eval
from densevis.saliency.transfer import PendingExplanation, pinned, to_device, to_host


class SaliencyEngine:
    """Saliency maps of many methods and layers from one shared plan of passes.

    Parameters
    ----------
    model : nn.Module
        A classifier taking (N, C, H, W) float input. It stays on its device; inputs are moved
        there.
    methods : str or list of str
        ``"panel"`` (the original study's four methods; the groups are
        :data:`~densevis.saliency.methods.GROUPS`),
        ``"all"``, ``"a,b"`` or a list of names from :data:`METHODS`.
    layers : str or list of str
        For layer methods: ``"all"`` (the model's block-level modules that run once and output
        a spatial map, in forward order: :func:`~densevis.saliency.layers.resolve_layers`),
        names of children of ``model.features`` (``"denseblock4"``) or module paths
        (``"features.denseblock1.denselayer2"``, ``"layer1.0"``).
    params : dict, optional
        Per-method parameters, e.g. ``{"integrated_gradients": {"steps": 32}}``.
    method_layers : dict, optional
        Layers of particular layer methods instead of ``layers``, e.g.
        ``{"gradcam_pp": "denseblock4"}``; the union of all layers is captured in one pass.
    batch_size : int, optional
        Images per shared capture (default: the whole call); halved on CUDA out-of-memory.
    chunk_size : int
        Model inputs per extra pass of the path and perturbation methods; halved on CUDA OOM.
    autocast : bool
        Run forward passes under bfloat16 autocast (maps are returned in float32).
    channels_last : bool, optional
        Put the model and inputs in channels-last layout (faster convolutions on GPUs; the
        values are the same up to float rounding). Default: on CUDA only. The model's
        parameters stay in that layout after the call.
    image_size : int or (int, int), optional
        The size of the images to explain. ``"all"`` is found by tracing one forward at it;
        without it, at the size of the first images attributed (or of :meth:`layer_grids`), or
        at :data:`~densevis.saliency.trace.DEFAULT_IMAGE_SIZE` when :attr:`layers` or
        :attr:`keys` are read first. The selection then stays fixed for the engine's life.
        Named layers are checked to run once when it is given (else at the capture).

    Examples
    --------
    >>> from densevis.model import build_model, preprocess
    >>> import numpy as np
    >>> model = build_model("original")
    >>> engine = SaliencyEngine(model, "vanilla,gradcam", layers="denseblock4,transition3")
    >>> images = preprocess(np.zeros((2, 32, 32), np.uint8))
    >>> result = engine.attribute(images, targets=[0, 1])
    >>> sorted(result.maps), result.maps["vanilla", None].shape, result.targets.tolist()
    ([('gradcam', 'denseblock4'), ('gradcam', 'transition3'), ('vanilla', None)], torch.Size([2, 32, 32]), [0, 1])
    """

    def __init__(self, model: nn.Module, methods="panel", layers="all", params: dict | None = None,
                 *, method_layers: dict | None = None, batch_size: int | None = None,
                 chunk_size: int = 64, autocast: bool = False,
                 channels_last: bool | None = None, image_size=None):
        self.model = model
        self.methods = resolve_methods(methods)
        self.params = resolve_params(self.methods, params)
        self._layer_methods = [m for m in self.methods if METHODS[m].kind == "layer"]
        self._requested = (layers, dict(method_layers or {}))
        self._selection: tuple[dict, list] | None = None
        self.image_size = image_size
        self.needs = frozenset().union(*(METHODS[m].needs for m in self.methods))
        if batch_size is not None and batch_size < 1:
            raise DensevisError(f"batch size must be positive (got {batch_size})")
        if chunk_size < 1:
            raise DensevisError(f"chunk size must be positive (got {chunk_size})")
        self.batch_size, self.chunk_size, self.autocast = batch_size, chunk_size, autocast
        self.channels_last = channels_last
        own = self._requested[1]
        _check_method_layers(self._layer_methods, own)
        wanted = list(own.values()) + ([layers] if set(self._layer_methods) - set(own) else [])
        if image_size is not None or not any(selects_all(spec) for spec in wanted):
            self._select(image_size)  # bad names fail here; only "all" waits for a size

    @property
    def layers(self) -> dict[str, nn.Module]:
        """``{key: module}`` of every captured layer, in network order for ``"all"``."""
        return self._select()[0]

    @property
    def keys(self) -> list[tuple[str, str | None]]:
        """``(method, layer or None)`` of every map the engine gives."""
        return self._select()[1]

    def _select(self, image_size=None) -> tuple[dict, list]:
        """Resolve the layers once: at ``image_size`` (the engine's, else the given one, else
        the trace's default) when a selection is ``"all"``; fixed for the engine's life, so
        every batch has the same keys."""
        if self._selection is None:
            size = self.image_size if self.image_size is not None else image_size
            layers, method_layers = self._requested
            own = self.own_layers(self.model, self._layer_methods, method_layers, size)
            shared = (resolve_layers(self.model, layers, image_size=size)
                      if set(self._layer_methods) - set(own) else {})
            # every layer some method needs is captured once, in the model's order
            wanted = set(shared).union(*own.values())
            selected = {key: module for key, module in {**shared, **{
                k: m for d in own.values() for k, m in d.items()}}.items() if key in wanted}
            keys = [(m, None) for m in self.methods if METHODS[m].kind == "pixel"] + \
                   [(m, layer) for m in self._layer_methods for layer in own.get(m, shared)]
            self._selection = (selected, keys)
        return self._selection

    @staticmethod
    def own_layers(model: nn.Module, layer_methods: list[str], method_layers: dict,
                   image_size=None) -> dict:
        """Layers of the methods that do not use the shared selection (``method_layers``),
        resolved on ``model`` (traced at ``image_size``, see
        :func:`~densevis.saliency.layers.resolve_layers`); a spec check calls it to find a bad
        entry before any work."""
        _check_method_layers(layer_methods, method_layers)
        return {m: resolve_layers(model, spec, image_size=image_size)
                for m, spec in method_layers.items()}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def layer_grids(self, size: int, channels: int = 3) -> dict[str, list[int]]:
        """``[h, w]`` of each selected layer's output for ``size``-px inputs (one forward of a
        blank image): the grid a layer-resolution map is upsampled from."""
        self._select(size)
        grids: dict[str, list[int]] = {}
        handles = [module.register_forward_hook(
            lambda _module, _args, output, key=key: grids.__setitem__(
                key, [int(v) for v in output.shape[-2:]])) for key, module in self.layers.items()]
        try:
            with torch.no_grad(), frozen_eval(self.model):
                self.model(torch.zeros(1, channels, size, size, device=self.device))
        finally:
            for handle in handles:
                handle.remove()
        return grids

    def attribute(self, inputs: torch.Tensor, targets=None, labels=None) -> Explanation:
        """Maps of every selected method (and layer) for a batch of images.

        Parameters
        ----------
        inputs : Tensor
            float (N, C, H, W) model input, e.g. ``densevis.model.preprocess(images)``.
        targets : int, sequence or Tensor of int, optional
            Class explained for each image (one int: the same for all).
        labels : sequence or Tensor of int, optional
            Used as the targets when ``targets`` is not given; without either, each image's
            predicted class is explained.

        Returns
        -------
        Explanation
            Maps keyed ``(method, layer or None)``, float32 (N, H, W) on the CPU, unnormalized.

        Raises
        ------
        DensevisError
            Wrong input shape, a target out of range, or parameters unusable at this size.
        """
        return self.submit(inputs, targets, labels).result()

    __call__ = attribute

    def submit(self, inputs: torch.Tensor, targets=None, labels=None) -> PendingExplanation:
        """:meth:`attribute` without waiting for the GPU: ``submit(...).result()`` is the
        :class:`Explanation`. On CUDA the work is queued and the maps are copied back
        asynchronously (no host synchronisation inside the batch), so the caller can read the
        next batch or write the previous one meanwhile; on the CPU it is computed at once."""
        with torch.inference_mode(False):  # gradients are needed even if the caller disabled them
            return self._attribute(self._check_inputs(inputs),
                                   targets if targets is not None else labels)

    def _attribute(self, inputs: torch.Tensor, wanted) -> PendingExplanation:
        wanted = None if wanted is None else self._check_targets(wanted, len(inputs))
        self._select(tuple(inputs.shape[-2:]))
        for name in self.methods:
            if METHODS[name].check is not None:
                METHODS[name].check(self.params[name], tuple(inputs.shape[-2:]))
        parts: list[PendingExplanation] = []

        def step(start: int, stop: int) -> None:
            part = self._attribute_batch(inputs[start:stop],
                                         None if wanted is None else wanted[start:stop])
            parts.append(to_host(part))  # its maps leave the GPU while the next part runs

        size = self.batch_size or len(inputs)
        fitted = in_chunks(len(inputs), size, step)
        if fitted < size:  # out of memory: later calls start from the size that fitted
            self.batch_size = fitted
        return PendingExplanation.join(parts)

    # -- one batch -------------------------------------------------------------------------------
    def _attribute_batch(self, inputs: torch.Tensor, targets: torch.Tensor | None) -> Explanation:
        """Maps of one batch, left on the model's device (copied back once, by the caller)."""
        device = self.device
        layout = self.channels_last if self.channels_last is not None else device.type == "cuda"
        if layout:  # weights in the inputs' layout (a no-op once they are)
            self.model.to(memory_format=torch.channels_last)
        with frozen_eval(self.model):
            capture = self._capture(to_device(inputs, device, layout), targets)
            maps = {key: capture.method(*key).detach().float() for key in self.keys}
            self.chunk_size = capture.chunk_size
        return Explanation(maps, capture.logits, capture.targets)

    def _capture(self, inputs: torch.Tensor, targets: torch.Tensor | None) -> Capture:
        graph = bool(self.needs & {"input_grad", "guided_grad", "layer_grads"})
        guided = "guided_grad" in self.needs
        hooked = self.layers if self.needs & {"layer_grads", "layer_acts"} else {}
        # a leaf that requires grad cannot be changed in place, so only a no-grad forward needs a
        # private copy to keep the caller's tensor (and the perturbation methods' input) intact;
        # an inference-mode tensor is always copied into a normal one
        if graph and not inputs.is_inference():
            x = inputs.detach().requires_grad_(True)
        else:
            x = inputs.clone().requires_grad_(graph)
        rule = ReLURule()
        outputs: dict[str, tuple[torch.Tensor, int]] = {}  # key -> (output, its version)
        calls: dict[str, int] = {}
        handles = [module.register_forward_hook(_keep_output(key, outputs, calls))
                   for key, module in hooked.items()]
        capture = Capture(model=self.model, inputs=x.detach(), logits=None, targets=None,
                          params=self.params, autocast=self.autocast, chunk_size=self.chunk_size)
        try:
            with torch.set_grad_enabled(graph), capture.autocast_context(), \
                    (switchable_relus(rule) if guided else contextlib.nullcontext()):
                logits = self.model(x)
        finally:
            for handle in handles:
                handle.remove()
        _check_outputs(outputs, calls, hooked, logits)
        capture.logits = logits.detach().float()
        capture.targets = _resolve_targets(targets, capture.logits)
        capture.activations = {key: out.detach() for key, (out, _) in outputs.items()}
        if graph:
            score = logits.float().gather(1, capture.targets[:, None]).sum()
            self._backward(score, x, outputs, rule, capture)
        return capture

    def _backward(self, score, x, outputs, rule: ReLURule, capture: Capture) -> None:
        """The plain backward (input and layer gradients at once), then the guided one."""
        plain = ([x] if "input_grad" in self.needs else []) + \
                ([out for out, _ in outputs.values()] if "layer_grads" in self.needs else [])
        guided = "guided_grad" in self.needs
        if plain:
            grads = torch.autograd.grad(score, plain, retain_graph=guided, allow_unused=True)
            grads = [torch.zeros_like(t) if g is None else g for t, g in zip(plain, grads)]
            if "input_grad" in self.needs:
                capture.input_grad = grads.pop(0)
            capture.gradients = dict(zip(outputs, grads))
        if guided:
            rule.guided = True
            (capture.guided_grad,) = torch.autograd.grad(score, x)

    # -- validation ----------------------------------------------------------------------------
    def _check_inputs(self, inputs) -> torch.Tensor:
        if not torch.is_tensor(inputs) or inputs.ndim != 4 or not inputs.is_floating_point():
            shape = tuple(inputs.shape) if hasattr(inputs, "shape") else type(inputs).__name__
            raise DensevisError(f"inputs must be a float tensor (N, C, H, W), got {shape}; "
                                f"convert grey uint8 images with densevis.model.preprocess")
        first = next((m for m in self.model.modules() if isinstance(m, nn.Conv2d)), None)
        if first is not None and inputs.shape[1] != first.in_channels:
            raise DensevisError(f"inputs have {inputs.shape[1]} channels but the model's first "
                                f"convolution takes {first.in_channels}; use "
                                f"densevis.model.preprocess")
        if len(inputs) == 0:
            raise DensevisError("inputs hold no images")
        return inputs

    @staticmethod
    def _check_targets(targets, n: int) -> torch.Tensor:
        targets = torch.as_tensor(targets)
        if targets.ndim == 0:
            targets = targets.expand(n)
        if targets.shape != (n,) or targets.is_floating_point():
            raise DensevisError(f"targets must be one int or {n} ints (one per image), got "
                                f"shape {tuple(targets.shape)} of {targets.dtype}")
        return targets.to(torch.long, copy=True)  # also a normal tensor if made in inference mode


def _check_method_layers(layer_methods: list[str], method_layers: dict) -> None:
    stray = sorted(set(method_layers) - set(layer_methods))
    if stray:
        raise DensevisError(f"method_layers names {', '.join(stray)}, which "
                            f"{'is' if len(stray) == 1 else 'are'} not a selected layer "
                            f"method; selected: {', '.join(layer_methods) or 'none'}")


def _keep_output(key: str, outputs: dict, calls: dict) -> Callable:
    """Forward hook: keep the layer's output, hand the rest of the network a copy of it; count
    the calls (a layer that runs twice is an error after the forward, never one of its calls)."""
    def hook(module, args, output):
        calls[key] = calls.get(key, 0) + 1
        if key in outputs:
            return None
        if not torch.is_tensor(output):
            raise DensevisError(f"layer {key} returns a {type(output).__name__}, not a tensor; "
                                f"choose a module whose output is one tensor")
        outputs[key] = (output, output._version)
        return output.clone()
    return hook


def _check_outputs(outputs: dict, calls: dict, hooked: dict, logits) -> None:
    missing = [key for key in hooked if key not in outputs]
    if missing:
        raise DensevisError(f"layer {missing[0]} did not run in the model's forward; choose "
                            f"another layer")
    for key, count in calls.items():
        if count > 1:
            raise reused_layer(key, count)
    for key, (out, version) in outputs.items():
        if out._version != version:
            raise RuntimeError(f"the output of layer {key} was modified in place after it was "
                               f"captured; capture a later layer")
        if out.ndim != 4:
            raise DensevisError(f"layer {key} outputs shape {tuple(out.shape)}; layer methods "
                                f"need a convolutional (N, K, h, w) output")
    if not torch.is_tensor(logits) or logits.ndim != 2:
        raise DensevisError("the model must return (N, classes) logits")


def _resolve_targets(targets: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    classes = logits.shape[1]
    if targets is None:
        return logits.argmax(1)
    # checked before the copy to the device: a check there would wait for the GPU
    bad = ((targets < 0) | (targets >= classes)).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise DensevisError(f"target {int(targets[i])} of image {i} is out of range: the model "
                            f"has {classes} classes (0..{classes - 1})")
    return to_device(pinned(targets), logits.device)
