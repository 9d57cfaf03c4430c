"""The report's figures of the saliency maps themselves, each a plain function returning PNG bytes.

- :func:`set_grid`: per probe set, chosen images (:func:`choose_images`: typical and
  misclassified) by rows, the image then each method's map of the **square logit** (target 1,
  "why square") by columns, each row captioned with its label, prediction and logit margin;
- :func:`pairs_strip`: the eight edits of one ``pairs`` scene side by side, each with its logit
  margin, and their maps on one scale per method;
- :func:`cascading_grid`: Adebayo et al. 2018 (arXiv:1810.03292) fig. 2: one image's maps as the
  model's layers are re-initialized from the top down;
- :func:`map_figures`: all of them for a run's model, as ``(png, caption)`` pairs.

The logit margin is the square logit minus the no-square logit, as everywhere in the project.
Every map column or row has its colour bar; signed methods are drawn on a diverging scale
symmetric about 0, non-negative ones on a sequential scale (``Method.sign``); a map with nothing
to show says so (:func:`densevis.saliency.tiles.map_note`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from densevis.analysis.sanity import engine_explain, randomized_models, run_explain
from densevis.errors import DensevisError
from densevis.model import load_checkpoint, predict, resolve_device
from densevis.report.html import png_of
from densevis.saliency import GROUPS, METHODS, resolve_layers
from densevis.saliency.figures import CAP_PERCENTILE
from densevis.saliency.tiles import Tile, color_limit, map_note, map_style, tile_grid
from probes import ProbeSet

STRIP_METHODS = ("vanilla", "gradcam")  # one pixel and one CAM method, where both are explained
TARGET = 1  # every figure explains the square (positive) logit
CLASS_NAMES = {0: "no square", 1: "square"}


# -------------------------------------------------------------------------- choosing images
def choose_images(labels, predicted_positive, logit_margin, count: int = 4) -> list[int]:
    """Indices of ``count`` images that show typical and misclassified cases, deterministically.

    Candidates are taken in this order, skipping repeats, until ``count`` are chosen:

    1. per class present (square first): its *typical* image, the one with the median logit
       margin of the class (the lower median; ties by index), whatever the model predicts: on a
       set it mostly gets wrong (``lines_only``) the typical image is a mistake;
    2. the most confident mistake: the misclassified image with the largest margin on the wrong
       side;
    3. per class with a correctly classified image but none chosen yet: the correctly
       classified one with the median margin (so a set the model mostly gets wrong still shows
       one it gets right);
    4. the other mistakes, most confident first;
    5. the rest, closest to their class's median margin first (in rank, ties by index).

    Parameters
    ----------
    labels : (N,) array of 0/1
        Ground truth (1: the image has a square).
    predicted_positive : (N,) array of bool
        The model's prediction (square or not).
    logit_margin : (N,) float array
        Square logit minus no-square logit.
    count : int
        How many to choose (fewer when there are fewer images).

    Examples
    --------
    >>> choose_images([1, 1, 1, 0, 0], [True, True, False, False, False],
    ...               [3.0, 5.0, -2.0, -4.0, -1.0], count=3)
    [0, 3, 2]
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    positive = np.asarray(predicted_positive).astype(bool).ravel()
    margin = np.asarray(logit_margin, dtype=np.float64).ravel()
    if not len(labels) == len(positive) == len(margin):
        raise DensevisError(f"labels, predictions and margins differ in length ({len(labels)}, "
                            f"{len(positive)}, {len(margin)})")
    if not np.isfinite(margin).all():
        raise DensevisError("a logit margin is not finite; the model's outputs are broken")
    if count < 1:
        raise DensevisError(f"count must be positive (got {count})")
    if not np.isin(labels, (0, 1)).all():
        raise DensevisError("labels must be 0 (no square) or 1 (square)")
    wrong = positive != (labels == 1)
    classes = [c for c in (1, 0) if (labels == c).any()]

    def by_margin(members: np.ndarray) -> np.ndarray:
        return members[np.lexsort((members, margin[members]))]  # ties by index

    def median(members: np.ndarray) -> int | None:
        ordered = by_margin(members)
        return int(ordered[(len(ordered) - 1) // 2]) if len(ordered) else None

    # the wrong side of 0 is +margin for a negative image and -margin for a positive one
    mistakes = np.flatnonzero(wrong)
    wrong_side = np.where(labels[mistakes] == 1, -1, 1) * margin[mistakes]
    mistakes = mistakes[np.lexsort((mistakes, -wrong_side))].tolist()
    typical = [median(np.flatnonzero(labels == c)) for c in classes]
    candidates = typical + mistakes[:1]
    for c in classes:
        if not any(labels[i] == c and not wrong[i] for i in candidates):
            candidates.append(median(np.flatnonzero((labels == c) & ~wrong)))
    candidates += mistakes[1:]
    distance = np.zeros(len(margin))  # in rank, from the class's typical image
    for c, centre in zip(classes, typical):
        ordered = by_margin(np.flatnonzero(labels == c))
        distance[ordered] = np.abs(np.arange(len(ordered)) - ordered.tolist().index(centre))
    candidates += np.lexsort((np.arange(len(margin)), distance)).tolist()
    chosen = list(dict.fromkeys(int(i) for i in candidates if i is not None))
    return chosen[:count]


def describe(label: int, logit_margin: float) -> str:
    """A row caption: label, prediction and logit margin."""
    predicted = int(logit_margin > 0)
    verdict = "" if predicted == label else " (wrong)"
    return (f"label: {CLASS_NAMES[int(label)]}\npredicted: {CLASS_NAMES[predicted]}{verdict}\n"
            f"logit margin {logit_margin:+.2f}")


# -------------------------------------------------------------------------------- figures
def _method_title(method: str, layer: str | None) -> str:
    declared = METHODS.get(method)
    return f"{method}\n@ {layer}" if layer and declared and declared.kind == "layer" \
        else method


def _scale_note(style: str) -> str:
    return f"{'signed' if style == 'signed' else '≥ 0'}, cap p{CAP_PERCENTILE:g} |value|"


def _peak(values: np.ndarray) -> str:
    """A map's largest magnitude, written under it (a faint map on its column's scale is weak,
    not zero); empty for a map with nothing to draw."""
    finite = np.abs(values[np.isfinite(values)])
    return f"max |value| {finite.max():.2g}" if finite.size and map_note(values) is None else ""


def _on_one_scale(method: str, maps, images: np.ndarray, peaks: bool = False) -> list[Tile]:
    """Tiles of a method's maps of ``images`` on one colour scale (``peaks``: each map's
    largest magnitude under it)."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape != images.shape:
        raise DensevisError(f"maps of {method} have shape {maps.shape}, the images "
                            f"{images.shape}")
    style, limit = map_style(method, maps), color_limit(list(maps))
    return [Tile(values, style, limit, _peak(values) if peaks else "", outline=image)
            for values, image in zip(maps, images)]


def set_grid(images: np.ndarray, maps_by_method: dict[str, np.ndarray], captions: list[str],
             title: str = "", layer: str | None = None) -> bytes:
    """Rows = images, columns = the image then each method's map (of the square logit).

    ``images`` (N, H, W) uint8; ``maps_by_method``: method -> (N, H, W) maps of them,
    unnormalized, each column drawn on one colour scale (its bar) capped at the 99th percentile
    of its magnitudes; ``captions``: one per image (:func:`describe`); ``layer``: the layer
    methods' layer, for their titles.
    """
    images = np.asarray(images)
    if images.ndim != 3 or len(captions) != len(images):
        raise DensevisError(f"set_grid needs (N, H, W) images and one caption per image (got "
                            f"{images.shape} and {len(captions)} captions)")
    columns = [[Tile(image) for image in images]]
    columns += [_on_one_scale(method, maps, images, peaks=True)
                for method, maps in maps_by_method.items()]
    tiles = [list(row) for row in zip(*columns)]
    titles = ["image"] + [_method_title(m, layer) for m in maps_by_method]
    labels = [""] + [_scale_note(column[0].style) for column in columns[1:]]
    return png_of(tile_grid(tiles, titles, list(captions), "columns", labels, title), tight=False)


def pairs_strip(images: np.ndarray, maps: dict[str, np.ndarray], variants: list[str],
                margins, title: str = "", layer: str | None = None) -> bytes:
    """The edits of one ``pairs`` scene side by side: the images, then one row per method.

    Each column is titled with its edit (``variants``) and logit margin (``margins``); each
    method's row is drawn on one colour scale, so the maps of the edits compare directly.
    """
    images, margins = np.asarray(images), np.asarray(margins, dtype=np.float64)
    if images.ndim != 3 or not len(images) == len(variants) == len(margins):
        raise DensevisError(f"pairs_strip needs (N, H, W) images with one variant and margin "
                            f"each (got {images.shape}, {len(variants)}, {len(margins)})")
    tiles = [[Tile(image) for image in images]]
    tiles += [_on_one_scale(method, values, images) for method, values in maps.items()]
    labels = ["image"] + [_method_title(method, layer) for method in maps]
    bars = [""] + [_scale_note(row[0].style) for row in tiles[1:]]
    titles = [f"{v}\nmargin {m:+.2f}" for v, m in zip(variants, margins)]
    return png_of(tile_grid(tiles, titles, labels, "rows", bars, title), tight=False)


def cascading_grid(maps_by_step: dict[str, dict[str, np.ndarray]], image: np.ndarray,
                   title: str = "", layer: str | None = None) -> bytes:
    """Adebayo et al. 2018, fig. 2: rows = methods, columns = the trained model's maps then each
    cascading randomization step (top layers first), of one image.

    Every map is scaled by its own 99th percentile of |value| (written under it): randomizing
    weights changes the maps' magnitude by orders, and the question is whether their structure
    survives (as the Spearman similarities of the sanity table ask). A row's colour bar is that
    relative scale.

    ``maps_by_step``: step -> method -> (H, W) map, the trained model's first, then each
    cascading step's (named by the layer group re-initialized last); ``image``: (H, W) uint8.
    """
    if not maps_by_step:
        raise DensevisError("cascading_grid needs the maps of at least one step")
    steps = list(maps_by_step)
    methods = list(maps_by_step[steps[0]])
    lacking = [step for step in steps if set(maps_by_step[step]) != set(methods)]
    if lacking:
        raise DensevisError(f"step {lacking[0]!r} has maps of {sorted(maps_by_step[lacking[0]])}, "
                            f"the first step of {sorted(methods)}; every step needs the same")
    tiles, bars = [], []
    for method in methods:
        style = map_style(method, np.asarray(maps_by_step[steps[0]][method]))
        row = [Tile(image)]
        for step in steps:
            values = np.asarray(maps_by_step[step][method], dtype=np.float64)
            scale = color_limit([values])
            note = "" if map_note(values) else f"÷ {scale:.2g}"
            row.append(Tile(values / scale, style, 1.0, note, outline=image))
        tiles.append(row)
        bars.append(f"map ÷ its p{CAP_PERCENTILE:g} |value| (under it)")
    titles = ["image", steps[0]] + [f"{k}. {step}" for k, step in enumerate(steps[1:], start=1)]
    labels = [_method_title(method, layer) for method in methods]
    return png_of(tile_grid(tiles, titles, labels, "rows", bars, title), tight=False)


# --------------------------------------------------------------------------------- driver
Figures = dict[str, list[tuple[bytes, str]]]


def map_figures(checkpoint: str | os.PathLike, data: dict[str, Path], sets: list[str],
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
    checkpoint : path
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
    with _one_cpu_thread(device):
        model, _ = load_checkpoint(checkpoint, device)
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


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device):
    """One torch thread on the CPU for the block: the figures explain a handful of images in
    small batches, where a second thread only waits for work (on 2 busy cores the driver took
    3 to 5 times as long with 2 threads as with 1)."""
    previous = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    for _, group, randomized in randomized_models(model, "cascading", seed):
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
