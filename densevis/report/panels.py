"""The report's figures of the saliency maps themselves, each a plain function returning PNG bytes.

- :func:`set_grid`: per probe set, chosen images (:func:`choose_images`: typical and
  misclassified) by rows, the image then each method's map of the **square logit** (target 1,
  "why square") by columns, each row captioned with its label, prediction and logit margin;
- :func:`pairs_strip`: the eight edits of one ``pairs`` scene side by side, each with its logit
  margin, and their maps on one scale per method;
- :func:`cascading_grid`: Adebayo et al. 2018 (arXiv:1810.03292) fig. 2: one image's maps as the
  model's layers are re-initialized from the top down.

:func:`densevis.report.model_figures.map_figures` explains a run's model and draws all of them.

The logit margin is the square logit minus the no-square logit, as everywhere in the project.
Every map column or row has its colour bar; signed methods are drawn on a diverging scale
symmetric about 0, non-negative ones on a sequential scale (``Method.sign``); a map with nothing
to show says so (:func:`densevis.saliency.tiles.map_note`).
"""

from __future__ import annotations

import numpy as np

from densevis.errors import DensevisError
from densevis.report.html import png_of
from densevis.saliency.figures import CAP_PERCENTILE
from densevis.saliency.methods import METHODS
from densevis.saliency.panel import own_scale_grid
from densevis.saliency.tiles import Tile, color_limit, map_note, map_style, tile_grid

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

    Every map is scaled by its own 99th percentile of |value| (written under it,
    :func:`~densevis.saliency.panel.own_scale_grid`): randomizing
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
    cells = {(method, step): maps_by_step[step][method] for step in steps for method in methods}
    titles = [steps[0]] + [f"{k}. {step}" for k, step in enumerate(steps[1:], start=1)]
    labels = [_method_title(method, layer) for method in methods]
    return png_of(own_scale_grid(image, cells, methods, steps, titles, labels, title),
                  tight=False)
