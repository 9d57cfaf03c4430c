"""Saliency maps for CNN classifiers from one shared plan of passes.

>>> from densevis.saliency import SaliencyEngine, METHODS
>>> "guided_gradcam" in METHODS
True

See :class:`SaliencyEngine` (the Python API), :mod:`densevis.saliency.methods` (the registry)
and ``densevis explain`` (the command line).
"""

from densevis.saliency.capture import Capture, Explanation
from densevis.saliency.engine import SaliencyEngine, frozen_eval
from densevis.saliency.guided import ReLURule, SwitchableReLU, switchable_relus
from densevis.saliency.layers import resolve_layers
from densevis.saliency.methods import GROUPS, METHODS, Method, register, resolve_methods

__all__ = ["Capture", "Explanation", "SaliencyEngine", "frozen_eval", "ReLURule",
           "SwitchableReLU", "switchable_relus", "resolve_layers", "GROUPS", "METHODS", "Method",
           "register", "resolve_methods"]
