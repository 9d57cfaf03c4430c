"""Sanity checks of saliency methods (Adebayo et al. 2018, arXiv:1810.03292).

Model randomization: re-initialize the model's layer groups and see whether the maps change.

- ``cascading``: from the top (classifier) down to the first convolution, cumulatively: step
  ``k`` has the top ``k`` groups re-initialized; the last step is a fully random network;
- ``independent``: one group at a time, the rest trained.

Data randomization: the same architecture trained on shuffled labels (the caller trains it) vs
the model trained on the true labels.

For each method (and layer), step and image, the similarity of the maps to the original's:
``spearman_abs`` and ``spearman_signed`` (rank correlation of |map| and of the map),
``ssim`` (``skimage.metrics.structural_similarity`` of |map| scaled to [0, 1] by its maximum)
and ``hog`` (Pearson correlation of ``skimage.feature.hog`` descriptors of the same scaled
|map|). A map that is constant has no correlation: NaN.

The checks do not depend on the saliency engine: they take an ``explain`` callable
``explain(model, images uint8 (N, H, W), targets int (N,)) -> {key: maps (N, H, W)}`` (keys
``(method, layer or None)`` or a method name); :func:`engine_explain` builds one from
:class:`densevis.saliency.SaliencyEngine`. Verdicts:
:func:`densevis.analysis.hypotheses.passes_randomization`.

Examples
--------
>>> from densevis.model import build_model
>>> [name for name, _ in layer_groups(build_model("original"))][:3]
['classifier', 'denseblock4', 'transition3']
"""

from __future__ import annotations

import copy
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch
from scipy import stats
from skimage.feature import hog
from skimage.metrics import structural_similarity
from torch import nn

from densevis.model import preprocess
from densevis.saliency.engine import SaliencyEngine
from densevis.saliency.layers import block_units, layer_name

SIMILARITIES = ("spearman_abs", "spearman_signed", "ssim", "hog")
EVERY_STEP = ("spearman_abs", "spearman_signed")  # the measures of the intermediate steps
MODES = ("cascading", "independent")
Explain = Callable[[nn.Module, np.ndarray, np.ndarray], dict]
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
#: The format of the similarity table (a run's cache keys include it, so that a table of an
#: older format, whose steps were named by module path, is computed again).
TABLE_FORMAT = "densevis-sanity/2"


def layer_groups(model: nn.Module, image_size=None) -> list[tuple[str, list[str]]]:
    """Groups of modules re-initialized together, from the output down to the input.

    The units are the model's block-level modules that hold parameters, in the order of their
    first call in one traced forward (:func:`~densevis.saliency.layers.block_units` at
    ``image_size``: the units of layers ``"all"``, with the classifier and a module called
    twice too); a normalization layer joins the layer before it (a convolution and its
    BatchNorm are one step). Each group is ``(name, module paths)``: the name of its first
    module as maps files and tables name layers
    (:func:`~densevis.saliency.layers.layer_name`: ``denseblock4``, ``classifier``), the paths
    of the modules it re-initializes (``features.denseblock4``, ``features.norm5``).
    """
    groups: list[tuple[str, list[str]]] = []
    for unit in block_units(model, image_size):
        if next(unit.module.parameters(), None) is None:
            continue
        if groups and isinstance(unit.module, _NORMS):
            groups[-1][1].append(unit.path)
        else:
            groups.append((layer_name(model, unit.path), [unit.path]))
    return groups[::-1]


def reinitialize(model: nn.Module, paths: list[str], seed: int) -> None:
    """Re-initialize (in place, seeded) every module under ``paths`` with its default init.

    BatchNorm layers get weight 1, bias 0 and fresh running statistics.
    """
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for path in paths:
            for module in model.get_submodule(path).modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()


def randomized_models(model: nn.Module, mode: str = "cascading", seed: int = 0,
                      image_size=None) -> Iterator[tuple[int, str, nn.Module]]:
    """``(step, group name, randomized copy)`` for each step of ``mode`` (the groups of
    :func:`layer_groups`, traced at ``image_size``); the model is untouched."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
    running = copy.deepcopy(model)
    for step, (name, paths) in enumerate(layer_groups(model, image_size), start=1):
        current = running if mode == "cascading" else copy.deepcopy(model)
        reinitialize(current, paths, seed * 1_000_003 + step)
        yield step, name, current.eval()


def _key(key) -> tuple[str, str]:
    """``(method, layer)`` with ``""`` for pixel methods, from a tuple or a method name."""
    if isinstance(key, tuple):
        return key[0], key[1] or ""
    return str(key), ""


def run_explain(explain: Explain, model: nn.Module, images: np.ndarray, targets: np.ndarray,
                batch_size: int = 64) -> dict[tuple[str, str], np.ndarray]:
    """``explain`` over ``images`` in batches; maps as float32 numpy arrays per (method, layer)."""
    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        result = explain(model, images[start:stop], targets[start:stop])
        for key, maps in result.items():
            maps = maps.detach().cpu().numpy() if torch.is_tensor(maps) else np.asarray(maps)
            parts.setdefault(_key(key), []).append(maps.astype(np.float32))
    return {key: np.concatenate(value) for key, value in parts.items()}


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    scale = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(scale > 0, (a * b).sum(axis=1) / scale, np.nan)


def _scaled(maps: np.ndarray) -> np.ndarray:
    """|maps| / max |map| per image (a zero map stays zero)."""
    magnitude = np.abs(maps.astype(np.float64))
    peak = magnitude.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(magnitude, peak, out=np.zeros_like(magnitude), where=peak > 0)


def map_similarity(original: np.ndarray, other: np.ndarray, measures=SIMILARITIES,
                   cache: dict | None = None) -> dict[str, np.ndarray]:
    """Per-image ``measures`` (of :data:`SIMILARITIES`) of two stacks of maps (N, H, W).

    A constant original has no ordering to keep: NaN. A structured original whose randomized
    map became constant (a CAM after its ReLU, say) kept none of its ordering: Spearman 0.
    ``cache`` (a dict kept by the caller for one ``original``) holds its ranks between calls:
    every randomization step compares with the same original.
    """
    n, size = len(original), original.shape[-1]
    flat_a, flat_b = original.reshape(n, -1), other.reshape(n, -1)
    flattened = (np.ptp(flat_b, axis=1) == 0) & (np.ptp(flat_a, axis=1) > 0)
    rank = lambda x: stats.rankdata(x, axis=1)  # noqa: E731 - average ranks, ties shared
    cache = {} if cache is None else cache
    out = {}
    for name, transform in (("spearman_abs", np.abs), ("spearman_signed", lambda x: x)):
        if name in measures:
            if name not in cache:
                cache[name] = rank(transform(flat_a))
            values = _pearson_rows(cache[name], rank(transform(flat_b)))
            out[name] = np.where(flattened & ~(np.ptp(transform(flat_a), axis=1) == 0), 0.0,
                                 values)
    if {"ssim", "hog"} & set(measures):
        a, b = _scaled(original), _scaled(other)
        cell = max(4, size // 8)
        ssim, hogs = np.full(n, np.nan), np.full(n, np.nan)
        for i in range(n):  # skimage works per image
            if a[i].max() > 0 and b[i].max() > 0:
                ssim[i] = structural_similarity(a[i], b[i], data_range=1.0)
                pair = [hog(m, pixels_per_cell=(cell, cell), cells_per_block=(2, 2))
                        for m in (a[i], b[i])]
                hogs[i] = _pearson_rows(pair[0][None], pair[1][None])[0]
        out.update({name: values for name, values in (("ssim", ssim), ("hog", hogs))
                    if name in measures})
    return out


def _similarity_rows(test: str, step: int, name: str, original: dict, maps: dict,
                     measures=SIMILARITIES, cache: dict | None = None) -> list:
    frames = []
    cache = {} if cache is None else cache
    for key, reference in original.items():
        if key not in maps:
            continue
        for metric, values in map_similarity(reference, maps[key], measures,
                                             cache.setdefault(key, {})).items():
            frames.append(pd.DataFrame({
                "test": test, "step": name, "step_index": step, "method": key[0],
                "layer": key[1], "image": np.arange(len(values)), "metric": metric,
                "value": values}))
    return frames


def randomization_test(model: nn.Module, explain: Explain, images: np.ndarray, targets,
                       mode: str = "cascading", seed: int = 0, batch_size: int = 64,
                       every_step: bool = True, original: dict | None = None) -> pd.DataFrame:
    """Similarity of each method's maps to the original's at every randomization step.

    Returns a tidy table ``test, step, step_index, method, layer, image, metric, value``
    (``image`` is the position in ``images``; ``step_index`` 1 is the first group re-initialized).
    The Spearman measures are computed at every step, SSIM and HOG (per image in skimage, most
    of the cost) at the last step only: the fully randomized network, which the verdict reads.
    ``every_step=False`` explains the last step alone (the same randomized weights) and records
    the Spearman measures: what the verdicts read, without the curve. ``original``: the trained
    model's maps of ``images`` (:func:`run_explain`) when the caller has them already.
    """
    images, targets = np.asarray(images), np.asarray(targets)
    if original is None:
        original = run_explain(explain, model, images, targets, batch_size)
    frames, ranks = [], {}
    size = tuple(images.shape[-2:])
    steps = len(layer_groups(model, size))
    for step, name, randomized in randomized_models(model, mode, seed, size):
        if not every_step and step != steps:
            continue  # the cascade still re-initializes this group, with its own seed
        maps = run_explain(explain, randomized, images, targets, batch_size)
        measures = SIMILARITIES if step == steps and every_step else EVERY_STEP
        frames.extend(_similarity_rows(mode, step, name, original, maps, measures, ranks))
    return pd.concat(frames, ignore_index=True)


def data_randomization_test(model: nn.Module, shuffled_model: nn.Module, explain: Explain,
                            images: np.ndarray, targets, batch_size: int = 64,
                            measures=SIMILARITIES, original: dict | None = None) -> pd.DataFrame:
    """Similarity of the maps of a model trained on shuffled labels to the trained model's
    (``original``: the trained model's maps, when the caller has them already)."""
    images, targets = np.asarray(images), np.asarray(targets)
    if original is None:
        original = run_explain(explain, model, images, targets, batch_size)
    maps = run_explain(explain, shuffled_model, images, targets, batch_size)
    return pd.concat(_similarity_rows("data", 1, "shuffled_labels", original, maps, measures),
                     ignore_index=True)


def engine_explain(methods="panel", layers="all", params: dict | None = None,
                   method_layers: dict | None = None) -> Explain:
    """An ``explain`` callable backed by :class:`densevis.saliency.SaliencyEngine`."""
    def explain(model, images, targets):
        engine = SaliencyEngine(model, methods, layers, params, method_layers=method_layers,
                                image_size=tuple(np.shape(images)[-2:]))
        return engine.attribute(preprocess(images), targets=np.asarray(targets)).maps
    return explain
