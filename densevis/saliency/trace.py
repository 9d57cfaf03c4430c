"""One traced forward: which modules of a model run, in which order, how often, and what shape
each one's first output has; and the model state a pass runs in (:func:`frozen_eval`).

Layer selection (:mod:`densevis.saliency.layers`) reads the trace: the order of first calls is
the network order, whatever order the modules were declared in, and a module called twice (a
reused ``nn.ReLU``) cannot be one layer of a CAM.
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass, field

import torch
from torch import nn

from densevis.errors import DensevisError
from probes.errors import first_line

#: The image side a model is traced at when the caller does not know the size of its images:
#: the size torchvision's classifiers are built for (every DenseNet, ResNet and VGG stage is a
#: spatial map there).
DEFAULT_IMAGE_SIZE = 224


@contextlib.contextmanager
def frozen_eval(model: nn.Module):
    """Eval mode and frozen parameters for the block; modes, flags and ``.grad`` restored after."""
    modes = [(module, module.training) for module in model.modules()]
    params = [(p, p.requires_grad, p.grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _, _ in params:
            p.requires_grad_(False)
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for p, flag, grad in params:
            p.requires_grad_(flag)
            p.grad = grad


@dataclass
class Trace:
    """What one forward of a blank image did, per module (keyed by ``id(module)``, so a module
    registered under two paths is one entry).

    Attributes
    ----------
    size : (int, int)
        The image's height and width.
    first : dict
        Position of the module's first call among all first calls (network order).
    calls : dict
        How many times the module ran.
    shapes : dict
        Shape of its first output, ``None`` when that was not a tensor.
    """

    size: tuple[int, int]
    first: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    shapes: dict = field(default_factory=dict)

    def count(self, module: nn.Module) -> int:
        return self.calls.get(id(module), 0)


def image_hw(image_size=None) -> tuple[int, int]:
    """``(height, width)`` from a side, a ``(h, w)`` pair or ``None`` (the default side).

    >>> image_hw(), image_hw(64), image_hw((32, 48))
    ((224, 224), (64, 64), (32, 48))
    """
    size = DEFAULT_IMAGE_SIZE if image_size is None else image_size
    try:
        hw = (operator.index(size),) * 2 if not hasattr(size, "__len__") else \
            tuple(operator.index(v) for v in size)
    except TypeError:
        hw = ()
    if len(hw) != 2 or min(hw) < 1:
        raise DensevisError(f"must be a positive int or (height, width), got {image_size!r}",
                            parameter="image_size")
    return hw


def trace(model: nn.Module, image_size=None) -> Trace:
    """Run ``model`` once on a blank image and record every module's calls.

    The forward runs without gradients in eval mode (:func:`frozen_eval`); its hooks are removed
    and the model's modes and flags restored afterwards, also when the forward raises.

    Parameters
    ----------
    image_size : int or (int, int), optional
        The image side (or height and width) the model takes; default
        :data:`DEFAULT_IMAGE_SIZE`. The channels are those of the first convolution (else 3).

    Raises
    ------
    DensevisError
        The model cannot run on an image of that size.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    >>> record = trace(net, 16)
    >>> record.count(net[1]), record.shapes[id(net[0])], record.shapes[id(net[2])]
    (1, (1, 4, 14, 14), (1, 4, 1, 1))
    """
    height, width = image_hw(image_size)
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    channels = first_conv.in_channels if first_conv is not None else 3
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    blank = torch.zeros(1, channels, height, width,
                        device=weight.device if weight is not None else None,
                        dtype=weight.dtype if weight is not None else None)
    record = Trace((height, width))

    def called(module, _args):
        key = id(module)
        record.first.setdefault(key, len(record.first))
        record.calls[key] = record.calls.get(key, 0) + 1

    def returned(module, _args, output):
        record.shapes.setdefault(id(module),
                                 tuple(output.shape) if torch.is_tensor(output) else None)

    handles = []
    try:
        for module in model.modules():
            handles.append(module.register_forward_pre_hook(called))
            handles.append(module.register_forward_hook(returned))
        with torch.no_grad(), frozen_eval(model):
            model(blank)
    except Exception as error:
        raise DensevisError(f"{height}x{width} is not a size {type(model).__name__} runs at: "
                            f"one forward of a blank {channels}x{height}x{width} image, traced "
                            f"to find its layers, raised {type(error).__name__}: "
                            f"{first_line(error)}; give the size of the model's images",
                            parameter="image_size") from error
    finally:
        for handle in handles:
            handle.remove()
    return record
