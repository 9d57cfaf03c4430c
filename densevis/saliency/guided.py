"""A ReLU whose backward rule is switched after the forward: plain and guided backprop from ONE
forward pass.

Guided backprop (Springenberg et al. 2015) changes only the backward rule of ReLU: the gradient is
passed where the ReLU's input was positive (the plain rule) *and* the incoming gradient is
positive. Because only the backward differs, one forward can serve both gradients: every ReLU of
the forward is recorded as :class:`SwitchableReLU`, whose backward reads the flag of a shared
:class:`ReLURule`. A backward with ``rule.guided = False`` gives the exact plain gradient (the
same as PyTorch's own ReLU backward); a second backward through the retained graph with
``rule.guided = True`` gives the guided gradient.

:func:`switchable_relus` routes every ReLU called inside it to :class:`SwitchableReLU`:
``torch.nn.functional.relu`` (with ``inplace=True`` too), ``torch.relu``, ``torch.relu_``,
``Tensor.relu``, ``Tensor.relu_`` and ``nn.ReLU`` modules (which call ``F.relu``), also when a
model imported ``relu`` under another name. It is a :class:`torch.overrides.TorchFunctionMode`,
so it is thread-local and nothing outlives the ``with`` block, even when the block raises.
torchvision's DenseNet calls ``F.relu(features, inplace=True)`` in ``forward``: module hooks (what
Captum's ``GuidedBackprop`` uses) miss that ReLU; this does not.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


@dataclass
class ReLURule:
    """The backward rule of the ReLUs recorded under :func:`switchable_relus`.

    Attributes
    ----------
    guided : bool
        False: plain rule (gradient where the input was positive). True: guided rule (also zero
        where the incoming gradient is negative). Read at backward time, so it may change between
        two backward passes through the same graph.
    """

    guided: bool = False


class SwitchableReLU(torch.autograd.Function):
    """ReLU whose backward applies the plain or the guided rule, as ``rule.guided`` says then.

    The forward is an ordinary ReLU (in place when asked: the input is marked dirty, as PyTorch's
    own ``relu_`` does). The plain backward is bit-for-bit PyTorch's: the incoming gradient where
    the output is positive, else 0.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, rule: ReLURule, inplace: bool) -> torch.Tensor:
        # the mode that routes here is off inside its handler: these are PyTorch's own ReLUs
        out = torch.relu_(x) if inplace else torch.relu(x)
        if inplace:
            ctx.mark_dirty(out)
        ctx.save_for_backward(out)
        ctx.rule = rule
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (out,) = ctx.saved_tensors
        # PyTorch's own ReLU backward (one fused kernel); guided: relu(g * mask) = relu(g) * mask
        grad = torch.ops.aten.threshold_backward(grad, out, 0)
        return grad.clamp_min_(0) if ctx.rule.guided else grad, None, None


# The ReLU entry points a model may call, and whether each works in place.
_RELUS = {F.relu: None, torch.relu: False, torch.relu_: True,
          torch.Tensor.relu: False, torch.Tensor.relu_: True}


class _ReLUMode(TorchFunctionMode):
    def __init__(self, rule: ReLURule):
        super().__init__()
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _RELUS:
            inplace = _RELUS[func]
            if inplace is None:  # F.relu(input, inplace=False)
                inplace = bool(args[1] if len(args) > 1 else kwargs.get("inplace", False))
            self.calls += 1
            return SwitchableReLU.apply(args[0], self.rule, inplace)
        return func(*args, **kwargs)


@contextlib.contextmanager
def switchable_relus(rule: ReLURule) -> Iterator[_ReLUMode]:
    """Record every ReLU called inside the block as a :class:`SwitchableReLU` reading ``rule``.

    Yields the mode; its ``calls`` counts the ReLUs it rerouted.

    Examples
    --------
    >>> x = torch.tensor([-1.0, 2.0, 3.0], requires_grad=True)
    >>> rule = ReLURule()
    >>> with switchable_relus(rule):
    ...     y = torch.nn.functional.relu(x * 1, inplace=True)
    >>> score = (y * torch.tensor([5.0, 5.0, -5.0])).sum()
    >>> torch.autograd.grad(score, x, retain_graph=True)[0].tolist()
    [0.0, 5.0, -5.0]
    >>> rule.guided = True
    >>> torch.autograd.grad(score, x)[0].tolist()
    [0.0, 5.0, 0.0]
    """
    with _ReLUMode(rule) as mode:
        yield mode
