"""Reductions: the named rule that turns a method's map into the map every metric scores.

Maps are stored as their method defines them (signed for gradients, non-negative for CAMs). Before
scoring, each map is reduced by a rule recorded in the tables' ``reduction`` column:

- ``abs``: magnitude, the default for signed methods (gradients, guided backprop, IG, occlusion);
- ``as_is``: unchanged, the default for methods that are non-negative by construction (the CAM
  family after its ReLU, Score-CAM, RISE, SmoothGrad-squared, and the null baselines);
- ``positive``: only the positive part (evidence *for* the target);
- ``signed``: unchanged, chosen to study a signed map as signed.

``abs`` of a non-negative map is the map itself, so a method that does not declare its sign gets
``abs`` and still scores exactly as ``as_is`` would; the default only matters for signed maps.

Examples
--------
>>> import torch
>>> default_reduction("vanilla"), default_reduction("gradcam", "denseblock4")
('abs', 'as_is')
>>> reduce_maps(torch.tensor([[-2.0, 1.0]]), "positive").tolist()
[[0.0, 1.0]]
"""

from __future__ import annotations

import torch

from densevis.analysis.baselines import BASELINES
from densevis.errors import DensevisError
from densevis.saliency.methods import METHODS

REDUCTIONS = {
    "abs": torch.abs,
    "as_is": lambda maps: maps,
    "positive": lambda maps: maps.clamp(min=0),
    "signed": lambda maps: maps,
}

def default_reduction(method: str, layer: str | None = None) -> str:
    """The reduction a method's maps get unless the user overrides it: ``as_is`` for the null
    baselines and the methods that declare themselves non-negative (``Method.sign``), else
    ``abs``."""
    declared = METHODS.get(method)
    non_negative = method in BASELINES or (declared is not None
                                           and declared.sign == "non_negative")
    return "as_is" if non_negative else "abs"


def check_reduction(rule: str) -> str:
    if rule not in REDUCTIONS:
        raise DensevisError(f"unknown reduction {rule!r}; valid: {', '.join(REDUCTIONS)}")
    return rule


def reduction_for(method: str, layer: str | None, overrides: dict[str, str] | None) -> str:
    """``overrides[method]`` (or ``overrides["method/layer"]``) if given, else the default."""
    overrides = overrides or {}
    key = method if layer is None else f"{method}/{layer}"
    rule = overrides.get(key, overrides.get(method, default_reduction(method, layer)))
    return check_reduction(rule)


def reduce_maps(maps: torch.Tensor, rule: str) -> torch.Tensor:
    """Apply reduction ``rule`` to maps of any shape."""
    return REDUCTIONS[check_reduction(rule)](maps)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["vanilla=positive", "gradcam/denseblock4=signed"]`` -> dict; bad items are user errors."""
    overrides = {}
    for item in items:
        key, sep, rule = item.partition("=")
        if not sep or not key.strip():
            raise DensevisError(f"--reduction {item!r} is not METHOD=RULE (e.g. --reduction "
                                f"vanilla=positive); rules: {', '.join(REDUCTIONS)}")
        overrides[key.strip()] = check_reduction(rule.strip())
    return overrides
