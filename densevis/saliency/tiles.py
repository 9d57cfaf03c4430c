"""Grids of images and saliency maps with colour bars (matplotlib, Agg, no pyplot state).

:func:`tile_grid` draws rows and columns of :class:`Tile` s — grey images and maps — with titled
columns, labelled rows and one colour bar per map column or per map row. Signed maps are drawn
on a diverging colour map symmetric about 0, non-negative maps on a sequential one
(:func:`map_style` reads a method's sign from its registration); a map with nothing to show
(all zero, constant, not finite) is a grey tile saying so, never a blank one (:func:`map_note`).

Like :mod:`densevis.saliency.figures`, this module draws maps for the rooms above (the report's
map figures, :mod:`densevis.report.panels`; :mod:`densevis.saliency.panel`'s panel of one image)
from maps, images and the method registry alone.

The tiles and the colour bars are composed into one image in one axes: an axes per tile (and
per colour bar) costs most of a figure's time in matplotlib, and the report draws several.

Examples
--------
>>> image = np.zeros((8, 8), np.uint8)
>>> fig = tile_grid([[Tile(image), Tile(np.zeros((8, 8)), "signed", 1.0)]],
...                 ["image", "vanilla"], ["row 0"])
>>> "all zero" in [text.get_text() for text in fig.axes[0].texts]
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib import colormaps
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation

from densevis.saliency.figures import CAP_PERCENTILE
from densevis.saliency.methods import METHODS

#: Colour maps of the tile styles: grey images, signed maps on a diverging map centred on 0,
#: non-negative maps on a sequential one.
STYLES = {"image": "gray", "signed": "RdBu_r", "non_negative": "magma"}
_OUTLINE = {"signed": "black", "non_negative": "white"}  # visible on each colour map


@dataclass
class Tile:
    """One cell of :func:`tile_grid`.

    Attributes
    ----------
    values : (H, W) array
        A grey uint8 image (style ``image``) or a map.
    style : str
        ``image`` (grey, 0-255), ``signed`` (diverging, ``[-limit, limit]``) or ``non_negative``
        (sequential, ``[0, limit]``).
    limit : float
        Top of the colour scale; values beyond it are drawn in the end colour.
    footnote : str
        Small text under the tile.
    outline : (H, W) array, optional
        The image whose shapes are outlined over the map (where on the image the map is).
    """

    values: np.ndarray
    style: str = "image"
    limit: float = 255.0
    footnote: str = ""
    outline: np.ndarray | None = None


def map_style(method: str, maps: np.ndarray | None = None) -> str:
    """``signed`` or ``non_negative``: as the method's registration declares (``Method.sign``);
    a name the registry lacks (a null baseline) by its values: signed when any is negative."""
    if method in METHODS:
        return METHODS[method].sign
    return "signed" if maps is not None and np.nanmin(maps) < 0 else "non_negative"


def map_note(values: np.ndarray) -> str | None:
    """Why a map has nothing to draw (``all zero``, ``constant ...``, ``not finite``), else None.

    Examples
    --------
    >>> map_note(np.zeros((2, 2))), map_note(np.eye(2))
    ('all zero', None)
    """
    values = np.asarray(values)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return "not finite"
    if np.ptp(finite) == 0:
        return "all zero" if finite[0] == 0 else f"constant {finite[0]:.3g}"
    return None


def color_limit(maps) -> float:
    """The top of one colour scale for ``maps``: the :data:`CAP_PERCENTILE` th percentile of
    their nonzero finite magnitudes (1 when there are none), so that a few extreme pixels do not
    wash the rest out."""
    values = np.concatenate([np.ravel(m) for m in maps]) if len(maps) else np.zeros(0)
    magnitude = np.abs(values[np.isfinite(values) & (values != 0)])
    return float(np.percentile(magnitude, CAP_PERCENTILE)) if magnitude.size else 1.0


def _low(tile: Tile) -> float:
    return -tile.limit if tile.style == "signed" else 0.0


def _rgba(values, style: str, low: float, high: float) -> np.ndarray:
    """Colours (..., 4) of ``values`` on ``style``'s colour map; non-finite values light grey."""
    colours = colormaps[STYLES[style]].with_extremes(bad="#d0d0d0")
    return colours(Normalize(low, high)(np.ma.masked_invalid(np.asarray(values, np.float64))))


class _Canvas:
    """The mosaic being composed (RGBA, white), its texts and frames, in mosaic pixels."""

    def __init__(self, height: int, width: int):
        self.pixels = np.ones((height, width, 4))
        self.outlines = {style: np.zeros((height, width)) for style in _OUTLINE}
        self.texts: list[tuple] = []
        self.frames: list[tuple[float, float, float, float]] = []

    def text(self, label: str, xy, offset=(0, 0), **style) -> None:
        self.texts.append((label, xy, offset, style))

    def tile(self, tile: Tile, top: int, left: int) -> None:
        h, w = np.shape(tile.values)
        box = (slice(top, top + h), slice(left, left + w))
        note = None if tile.style == "image" else map_note(tile.values)
        if tile.style == "image":
            self.pixels[box] = colormaps["gray"](np.asarray(tile.values) / 255.0)
        elif note:  # a uniform tile would look like a map of nothing: say what it is instead
            self.pixels[box] = (0.9, 0.9, 0.9, 1.0)
            self.text(note, (left + w / 2, top + h / 2), ha="center", va="center", fontsize=8,
                      color="#333333")
        else:
            self.pixels[box] = _rgba(tile.values, tile.style, _low(tile), tile.limit)
            if tile.outline is not None:
                self.outlines[tile.style][box] = np.asarray(tile.outline) > 0
        if tile.footnote:
            self.text(tile.footnote, (left + w / 2, top + h - 0.5), (0, -1), ha="center",
                      va="top", fontsize=6)
        self.frames.append((top, left, h, w))

    def bar(self, tiles: list[Tile], top: int, left: int, h: int, w: int, label: str) -> None:
        """A colour bar of ``tiles`` (one scale) in the box, horizontal when it is wide: its
        ends and middle labelled, ``≥``/``≤`` at an end that values go beyond."""
        style, low, high = tiles[0].style, _low(tiles[0]), tiles[0].limit
        finite = [np.abs(t.values[np.isfinite(t.values)]) for t in tiles]
        beyond = max((float(v.max()) for v in finite if v.size), default=0.0) > high
        wide = w >= h
        ramp = np.linspace(low, high, w if wide else h)
        strip = ramp[None, :].repeat(h, 0) if wide else ramp[::-1, None].repeat(w, 1)
        self.pixels[top:top + h, left:left + w] = _rgba(strip, style, low, high)
        self.frames.append((top, left, h, w))
        for k, value in enumerate(np.linspace(low, high, 3)):
            mark = ("≥" if k == 2 else "≤" if k == 0 and style == "signed" else "") \
                if beyond else ""
            tick = f"{mark}{value:.2g}"
            if wide:
                self.text(tick, (left - 0.5 + k * w / 2, top + h - 0.5), (0, -1), ha="center",
                          va="top", fontsize=6)
            else:
                self.text(tick, (left + w - 0.5, top + h - 0.5 - k * h / 2), (2, 0), ha="left",
                          va="center", fontsize=6)
        if label and wide:
            self.text(label, (left + w / 2, top + h - 0.5), (0, -9), ha="center", va="top",
                      fontsize=6)
        elif label:
            self.text(label, (left + w - 0.5, top + h / 2), (26, 0), ha="left", va="center",
                      fontsize=6, rotation=90)

    def _text_box(self, inches: float, label: str, xy, offset, style) -> tuple:
        """``(left, top, right, bottom)`` in inches from the mosaic's top left that a text
        covers, estimated from its length (a wide glyph is about 0.65 of the font size)."""
        lines = label.split("\n")
        size = style.get("fontsize", 10) / 72
        along, across = max(map(len, lines)) * 0.65 * size, len(lines) * 1.3 * size
        wide, high = (across, along) if style.get("rotation") == 90 else (along, across)
        x = xy[0] * inches + offset[0] / 72
        y = xy[1] * inches - offset[1] / 72  # the mosaic's y runs down, the offsets' up
        left = x - {"left": 0, "center": wide / 2, "right": wide}[style.get("ha", "left")]
        top = y - {"top": 0, "center": high / 2, "bottom": high,
                   "baseline": high}[style.get("va", "baseline")]
        return left, top, left + wide, top + high

    def figure(self, inches: float) -> Figure:
        """The figure: ``inches`` per mosaic pixel, with room for every text around it (an
        estimate, so the figure saves without a tight bounding box, which costs a second
        layout pass)."""
        height, width = self.pixels.shape[:2]
        boxes = [self._text_box(inches, *text) for text in self.texts]
        left, top, right, bottom = (f(values) for f, values in zip(
            (min, min, max, max), zip((0.0, 0.0, width * inches, height * inches), *boxes)))
        pad = 0.05
        size = (right - left + 2 * pad, bottom - top + 2 * pad)
        fig = Figure(figsize=size)
        ax = fig.add_axes([(pad - left) / size[0], (bottom + pad - height * inches) / size[1],
                           width * inches / size[0], height * inches / size[1]])
        ax.set_axis_off()
        ax.imshow(self.pixels, interpolation="nearest")
        for style, mask in self.outlines.items():  # the image's shapes over their maps
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=_OUTLINE[style], linewidths=0.5,
                           alpha=0.6)
        ax.add_collection(LineCollection(
            [[(x - 0.5, y - 0.5), (x + w - 0.5, y - 0.5), (x + w - 0.5, y + h - 0.5),
              (x - 0.5, y + h - 0.5), (x - 0.5, y - 0.5)] for y, x, h, w in self.frames],
            colors="#999999", linewidths=0.4, clip_on=False))
        for label, (x, y), (dx, dy), style in self.texts:  # offsets in points
            shift = ScaledTranslation(dx / 72, dy / 72, fig.dpi_scale_trans)
            ax.text(x, y, label, transform=ax.transData + shift, **style)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_ylim(height - 0.5, -0.5)
        return fig


def tile_grid(tiles: list[list[Tile]], column_titles: list[str], row_labels: list[str],
              bars: str = "columns", bar_labels: list[str] | None = None, title: str = "",
              tile_inches: float = 1.5) -> Figure:
    """A grid of images and maps with a colour bar per map column (``bars="columns"``: under
    it) or per map row (``"rows"``: right of it).

    Every map tile of a column (row) must share one colour scale (style and limit): its colour
    bar is that scale. Columns (rows) of images only get no bar. The figure holds the texts
    around the tiles: save it without a tight bounding box (``png_of(fig, tight=False)``).

    Parameters
    ----------
    tiles : list of rows of :class:`Tile` or None
        All of one shape (H, W); None leaves its cell empty (a method without that layer).
    column_titles, row_labels : list of str
    bars : str
        ``columns`` or ``rows``.
    bar_labels : list of str, optional
        Under (beside) each colour bar, one per column (row).
    title : str
        Above the column titles.
    tile_inches : float
        The side of a tile.
    """
    if bars not in ("columns", "rows"):
        raise ValueError(f"bars must be 'columns' or 'rows' (got {bars!r})")
    rows, columns = len(tiles), len(column_titles)
    if rows == 0 or any(len(row) != columns for row in tiles) or len(row_labels) != rows:
        raise ValueError(f"tiles must be {len(row_labels)} rows of {columns} (one per row "
                         f"label and column title)")
    shapes = {np.shape(tile.values) for row in tiles for tile in row if tile is not None}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise ValueError(f"every tile must be an (H, W) array of one shape (got {shapes})")
    (h, w), by_column = next(iter(shapes)), bars == "columns"
    footnotes = any(tile.footnote for row in tiles for tile in row if tile is not None)
    gap_x, gap_y = max(1, round(0.06 * w)), max(1, round((0.16 if footnotes else 0.06) * h))
    width, height = columns * w + (columns - 1) * gap_x, rows * h + (rows - 1) * gap_y
    zone = round((0.3 * h) if by_column else (0.2 * w))  # the colour bars' strip
    canvas = _Canvas(height + zone * by_column, width + zone * (not by_column))
    for r, c in np.ndindex(rows, columns):
        if tiles[r][c] is not None:
            canvas.tile(tiles[r][c], r * (h + gap_y), c * (w + gap_x))
    labels = list(bar_labels or [""] * (columns if by_column else rows))
    for k in range(columns if by_column else rows):
        line = [tiles[r][k] for r in range(rows)] if by_column else tiles[k]
        maps = [tile for tile in line if tile is not None and tile.style != "image"]
        if maps and by_column:
            canvas.bar(maps, height + gap_y, k * (w + gap_x) + round(0.1 * w),
                       max(1, round(0.07 * h)), round(0.8 * w), labels[k])
        elif maps:
            canvas.bar(maps, k * (h + gap_y) + round(0.05 * h), width + gap_x,
                       round(0.9 * h), max(1, round(0.07 * w)), labels[k])
    for c, name in enumerate(column_titles):
        canvas.text(name, (c * (w + gap_x) + w / 2, -0.5), (0, 2), ha="center", va="bottom",
                    fontsize=8)
    for r, label in enumerate(row_labels):
        canvas.text(label, (-0.5, r * (h + gap_y) + h / 2), (-3, 0), ha="right", va="center",
                    fontsize=7)
    if title:
        lines = max(name.count("\n") + 1 for name in column_titles)
        canvas.text(title, (width / 2, -0.5), (0, 4 + 10 * lines), ha="center", va="bottom",
                    fontsize=9)
    return canvas.figure(tile_inches / max(h, w))

