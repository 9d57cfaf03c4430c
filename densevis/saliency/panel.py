"""The panel of one image: every saliency map of it, from maps in memory.

:func:`saliency_panel` takes a dict ``{(method, layer): map}`` or an engine's
:class:`~densevis.saliency.capture.Explanation` and draws a row per method and a column per layer,
each map on its own scale. It and the report's cascading-randomization grid
(:func:`densevis.report.panels.cascading_grid`) are :func:`own_scale_grid` s, drawn by
:func:`densevis.saliency.tiles.tile_grid`: maps of different layers (or of randomized weights)
differ in magnitude by orders, so one shared scale would show only the largest.

A finished run draws it from its maps files (:meth:`densevis.report.run_folder.Run.plot_saliency`).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from densevis.errors import DensevisError
from densevis.saliency.capture import Explanation
from densevis.saliency.figures import CAP_PERCENTILE
from densevis.saliency.tiles import Tile, color_limit, map_note, map_style, tile_grid


def own_scale_grid(image: np.ndarray, cells: dict, rows: list[str], columns: list[str],
                   column_titles: list[str], row_labels: list[str], title: str = "",
                   outline: bool = True) -> Figure:
    """Maps of one image, a row per method: the image, then the map of each column where the
    row has one (an empty cell where not), every map divided by its own 99th percentile of
    |value| (the divisor written under it) and each row's colour bar that relative scale.

    Parameters
    ----------
    image : (H, W) uint8
    cells : dict
        ``(row, column)`` -> (H, W) map; a row is a method (its registered sign sets the
        style), a column any name (a layer, a randomization step).
    rows, columns : list of str
        The keys of ``cells``, in the order drawn.
    column_titles, row_labels : list of str
        One per column (after the image's) and per row.
    outline : bool
        Outline the image's shapes over every map (the probe sets' objects on black).
    """
    tiles, bars = [], []
    for method in rows:
        present = [np.asarray(cells[method, c], np.float64) for c in columns
                   if (method, c) in cells]
        style = map_style(method, present[0] if present else None)
        row: list[Tile | None] = [Tile(image)]
        for column in columns:
            if (method, column) not in cells:
                row.append(None)
                continue
            values = np.asarray(cells[method, column], dtype=np.float64)
            scale = color_limit([values])
            note = "" if map_note(values) else f"÷ {scale:.2g}"
            row.append(Tile(values / scale, style, 1.0, note,
                            outline=image if outline else None))
        tiles.append(row)
        bars.append(f"map ÷ its p{CAP_PERCENTILE:g} |value| (under it)")
    return tile_grid(tiles, ["image"] + list(column_titles), list(row_labels), "rows", bars,
                     title)


#: The column of :func:`saliency_panel` that holds the pixel methods' maps (they have no layer).
PIXELS = "pixels"


def saliency_panel(image, maps, title: str = "", *, row: int = 0,
                   outline: bool = True) -> Figure:
    """Every saliency map of one image: a row per method, the image then its maps, a column per
    layer (pixel methods' maps in the first column, ``pixels``); each map on its own scale.

    Maps of one method differ in magnitude by orders from layer to layer, so each is divided by
    its own 99th percentile of |value| (written under it); signed methods are drawn on a
    diverging scale about 0, non-negative ones on a sequential one (their registered sign).
    The maps are the unnormalized maps of the engine or a maps file; scaling is for display.

    Parameters
    ----------
    image : (H, W) array
        The grey image, 0-255 (a probe image, uint8).
    maps : dict or Explanation
        ``{(method, layer): (H, W) map}`` (``layer`` None for a pixel method), numpy arrays or
        CPU tensors; or an :class:`~densevis.saliency.capture.Explanation` (the engine's
        result), of which image ``row`` is drawn. Methods and layers are drawn in the order of
        the keys (the engine's and the maps file's: layers in network order).
    title : str
    row : int
        The image of an Explanation (ignored for a dict).
    outline : bool
        Outline the image's shapes over the maps (right for the probe sets: shapes on black;
        turn off for a photograph).

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot: show it in a notebook as the cell's value, or save it with
        ``fig.savefig("panel.png")``.

    Raises
    ------
    DensevisError
        A key that is not ``(method, layer)``, or a map whose shape is not the image's.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((32, 32), np.uint8)
    >>> image[8:16, 8:16] = 255
    >>> maps = {("vanilla", None): np.random.default_rng(0).normal(size=(32, 32)),
    ...         ("gradcam", "conv0"): np.ones((32, 32)), ("gradcam", "denseblock4"): image / 255}
    >>> fig = saliency_panel(image, maps, "one image")
    >>> texts = [text.get_text() for text in fig.axes[0].texts]
    >>> [name in texts for name in ("pixels", "conv0", "denseblock4", "vanilla", "gradcam")]
    [True, True, True, True, True]

    An engine's result works as it is:

    >>> import torch
    >>> from densevis.model import build_model, preprocess
    >>> from densevis.saliency import SaliencyEngine
    >>> _ = torch.manual_seed(0)  # the untrained model's weights
    >>> engine = SaliencyEngine(build_model("original"), "vanilla,gradcam", "conv0,denseblock4")
    >>> fig = saliency_panel(image, engine.attribute(preprocess(image[None]), targets=1))
    """
    if isinstance(maps, Explanation):
        if not 0 <= row < len(maps.targets):
            raise DensevisError(f"is {row}, but the explanation holds {len(maps.targets)} "
                                f"images", parameter="row")
        maps = {key: values[row] for key, values in maps.maps.items()}
    image = np.asarray(image)
    if image.ndim != 2:
        raise DensevisError(f"must be one (H, W) grey image, not shape {image.shape}",
                            parameter="image")
    cells = {}
    for key, values in dict(maps).items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str)):
            raise DensevisError(f"keys must be (method, layer) pairs (layer None for a pixel "
                                f"method), not {key!r}", parameter="maps")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != image.shape:
            raise DensevisError(f"{key} has shape {values.shape}, the image {image.shape}; "
                                f"give maps at the image's resolution", parameter="maps")
        cells[key[0], PIXELS if key[1] is None else key[1]] = values
    if not cells:
        raise DensevisError("holds no map", parameter="maps")
    methods = list(dict.fromkeys(method for method, _ in cells))
    columns = list(dict.fromkeys(column for _, column in cells))
    columns.sort(key=lambda column: column != PIXELS)  # stable: the layers keep their order
    return own_scale_grid(image, cells, methods, columns, columns, methods, title, outline)
