"""The map figures of one run's model: choose the images, explain the square logit by the
sanity check's explain path, and draw them with :mod:`densevis.report.panels`.

:func:`map_figures` returns ``(png, caption)`` pairs: a grid per probe set, the ``pairs`` strip
and the cascading-randomization grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from densevis.analysis.sanity import engine_explain, randomized_models, run_explain
from densevis.errors import DensevisError
from densevis.model import ModelSource, load_model, predict, resolve_device, torch_threads
from densevis.report.panels import (cascading_grid, choose_images, describe, pairs_strip,
                                    set_grid)
from densevis.saliency.figures import CAP_PERCENTILE
from densevis.saliency.layers import resolve_layers
from densevis.saliency.methods import GROUPS
from probes import ProbeSet

STRIP_METHODS = ("vanilla", "gradcam")  # one pixel and one CAM method, where both are explained
TARGET = 1  # every figure explains the square (positive) logit

Figures = dict[str, list[tuple[bytes, str]]]


def map_figures(checkpoint: str | os.PathLike | ModelSource, data: dict[str, Path], sets: list[str],
                methods=GROUPS["panel"], layer: str = "denseblock3", device="cpu", seed: int = 0,
                *, count: int = 4, sanity_set: str | None = None,
                strip_methods=STRIP_METHODS) -> Figures:
    """The map figures of one model, as ``(png, caption)`` pairs under three keys.

    - ``"sets"``: a :func:`set_grid` per set of ``sets`` (``count`` images: :func:`choose_images`);
    - ``"pairs"``: the :func:`pairs_strip` of the first set with edits (``pairs``), of the scene
      whose original has the median logit margin (lower median; ties by index); else empty;
    - ``"sanity"``: the :func:`cascading_grid` of the first image with a square of
      ``sanity_set`` under :func:`densevis.analysis.sanity.randomized_models` with ``seed``:
      with the run's ``[analysis] seed`` and sanity set (its validation set, whose first images
      with a square the run's sanity check explains) it shows the weights that check scored.

    Every map explains the square logit (target 1), by the sanity check's explain path
    (:func:`densevis.analysis.sanity.engine_explain`) on just the images shown.

    Parameters
    ----------
    checkpoint : path or ModelSource
        The model (see :func:`densevis.model.load_model`).
    data : dict
        Probe-set name -> probe file, for every name of ``sets`` and ``sanity_set``.
    sets : list of str
        The probe sets shown, in order.
    methods : sequence of str
        Default: the ``panel`` group, the original study's four.
    layer : str
        The layer methods' layer (a child of ``model.features``).
    device : str or torch.device
    seed : int
        Seed of the randomized weights.
    count : int
        Images per set grid.
    sanity_set : str, optional
        Default: ``"val"`` when ``data`` has it, else the first of ``sets``.
    strip_methods : sequence of str
        The pairs strip's methods, those of them in ``methods`` (else its first two).
    """
    methods = list(methods)
    if sanity_set is None and "val" not in data and not sets:
        raise DensevisError("map_figures: no probe set given; name sets or a sanity_set")
    sanity_set = sanity_set or ("val" if "val" in data else sets[0])
    missing = [name for name in list(sets) + [sanity_set] if name not in data]
    if missing:
        raise DensevisError(f"map_figures: no probe file for {missing[0]!r}; data holds "
                            f"{', '.join(data) or 'none'}")
    device = resolve_device(device) if isinstance(device, str) else device
    # one thread on the CPU: a handful of images in small batches, where a second thread only
    # waits for work (on 2 busy cores the driver took 3 to 5 times as long with 2 threads)
    with torch_threads(1 if torch.device(device).type == "cpu" else None):
        model, _ = load_model(checkpoint, device)
        explain = engine_explain(methods, layer)
        # every set's chosen images (and the strip's scene) explained in one call
        views, strip = [], None
        for name in sets:
            view = _SetView(name, data[name], model, device)
            view.chosen = choose_images(view.labels, view.margin > 0, view.margin, count)
            views.append(view)
            if strip is None and view.variants is not None:
                strip = (view, _median_scene(view))
        batches = [v.images[v.chosen] for v in views] + \
            ([strip[0].images[strip[1]]] if strip else [])
        stacked = np.concatenate(batches) if batches else np.zeros((0, 1, 1), np.uint8)
        maps = _by_method(run_explain(explain, model, stacked, np.full(len(stacked), TARGET)))
        offsets = np.cumsum([0] + [len(b) for b in batches])
        figures: Figures = {"sets": [], "pairs": [], "sanity": []}
        for view, start in zip(views, offsets):
            stop = start + len(view.chosen)
            figures["sets"].append(_set_figure(view, {m: maps[m][start:stop] for m in methods},
                                               layer))
        if strip:
            shown = [m for m in strip_methods if m in methods] or methods[:2]
            figures["pairs"].append(_pairs_figure(
                *strip, {m: maps[m][offsets[-2]:] for m in shown}, layer))
        figures["sanity"].append(_sanity_figure(model, explain, data[sanity_set], sanity_set,
                                                methods, layer, seed))
    return figures


def _by_method(maps: dict) -> dict[str, np.ndarray]:
    """:func:`run_explain`'s maps keyed by method alone (each method has one layer here)."""
    return {method: values for (method, _), values in maps.items()}


class _SetView:
    """A probe set's images, labels, edits and the model's logit margins, read whole (the
    report's probe sets are small)."""

    def __init__(self, name: str, path: Path, model, device):
        with ProbeSet(path) as probe:
            self.name, self.images = name, probe.images[:]
            self.labels = probe.labels[:].astype(np.int64)
            self.base = probe.base_index[:]
            self.variants = probe.variant(slice(None)) if probe.has_variants else None
            logits = predict(model, probe, device=device)
        self.margin = (logits[:, 1] - logits[:, 0]).astype(np.float64)
        self.chosen: list[int] = []


def _set_figure(view: _SetView, by_method: dict, layer: str) -> tuple[bytes, str]:
    names = [f"image {i}" + (f" ({view.variants[i]})" if view.variants is not None else "")
             for i in view.chosen]
    png = set_grid(view.images[view.chosen], by_method,
                   [f"{name}\n" + describe(view.labels[i], view.margin[i])
                    for name, i in zip(names, view.chosen)],
                   f"{view.name}: maps of the square logit", layer)
    return png, (
        f"{view.name}: {len(view.chosen)} of its {len(view.labels)} images, chosen to show the "
        f"typical image of each class (median logit margin) and the misclassified ones (most "
        f"confident first), with each method's map of the square logit (target 1: why square, "
        f"also on images without one); layer methods at {layer}. Logit margin = square logit "
        f"minus no-square logit. Each column has one colour scale (its bar), capped at the "
        f"{CAP_PERCENTILE:g}th percentile of |value|; under each map its largest |value| (a "
        f"faint map is weak, not zero); outlines: the image's shapes.")


def _pairs_figure(view: _SetView, scene: np.ndarray, by_method: dict,
                  layer: str) -> tuple[bytes, str]:
    png = pairs_strip(view.images[scene], by_method, list(view.variants[scene]),
                      view.margin[scene], f"{view.name}: the edits of scene {scene[0]}", layer)
    return png, (
        f"{view.name}: the {len(scene)} edits of one scene (images {scene[0]}-{scene[-1]}; the "
        f"scene whose original has the median logit margin) with the model's logit margin "
        f"(square minus no-square logit) and the maps of the square logit; each method's row "
        f"on one colour scale, so the edits compare directly.")


def _median_scene(view: _SetView) -> np.ndarray:
    """The images of the scene whose original edit has the median logit margin."""
    originals = np.flatnonzero(view.base == np.arange(len(view.base)))
    ordered = originals[np.lexsort((originals, view.margin[originals]))]
    return np.flatnonzero(view.base == ordered[(len(ordered) - 1) // 2])


def _sanity_figure(model, explain, path: Path, name: str, methods: list[str], layer: str,
                   seed: int) -> tuple[bytes, str]:
    with ProbeSet(path) as probe:
        squares = np.flatnonzero(probe.labels[:] == 1)
        if not len(squares):
            raise DensevisError(f"map_figures: {name} has no image with a square to show under "
                                f"the cascading randomization")
        index = int(squares[0])
        image = probe.images[index]
    def explained(weights) -> dict[str, np.ndarray]:
        found = _by_method(run_explain(explain, weights, image[None], np.array([TARGET])))
        return {method: found[method][0] for method in methods}

    maps = {"trained": explained(model)}
    for _, group, randomized in randomized_models(model, "cascading", seed, image.shape):
        # the table's layer name of the group (classifier, denseblock4, ..., conv0)
        maps[next(iter(resolve_layers(model, group)))] = explained(randomized)
    png = cascading_grid(maps, image, f"cascading randomization, {name} image {index}", layer)
    return png, (f"Cascading randomization (Adebayo et al. 2018, fig. 2): the maps of the square "
                 f"logit of {name} image {index} (the first with a square) for the trained model, "
                 f"then with the layers re-initialized cumulatively from the top (classifier) "
                 f"down to the first convolution (seed {seed}, the weights of the sanity "
                 f"check); layer methods at {layer}. Each map is scaled by its own "
                 f"{CAP_PERCENTILE:g}th percentile of |value| (under it): the question is "
                 f"whether its structure survives, not its scale.")
