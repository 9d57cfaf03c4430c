"""Scene model: shapes drawn with ``skimage.draw`` into a grey image and per-kind masks.

A scene is a list of :class:`Shape` records drawn in order (later shapes on top). Every field that
rendering needs is in the record, so the ``objects`` table of a probe file re-renders each object
exactly (:func:`footprint`), which is how the analysis layer gets per-object masks.

Coordinates are pixel indices: pixel ``(row, col)`` has its centre at ``(y, x) = (row, col)``.
A shape of size ``s`` whose pixels start at column ``x0`` has its centre at ``x0 + (s - 1) / 2``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from skimage import draw

KINDS = ("circle", "square", "line")


@dataclass(frozen=True)
class Shape:
    """One drawn object.

    Parameters
    ----------
    kind : {"circle", "square", "line"}
    cx, cy : float
        Centre in pixel coordinates (column, row).
    size : float
        Diameter (circle), side (square) or length (line), in pixels.
    filled : bool
        False draws only a band of ``thickness`` pixels inside the shape's border.
    thickness : float
        Width of a line, or of an outline's band; 0 for filled circles and squares.
    angle : float
        Degrees counter-clockwise from the x axis (lines only; squares are axis-aligned).
    intensity : int
        Grey value 1-255 written into the image.
    """

    kind: str
    cx: float
    cy: float
    size: float
    filled: bool = True
    thickness: float = 0.0
    angle: float = 0.0
    intensity: int = 255


def square_at(x0: int, y0: int, side: int, **fields) -> Shape:
    """The axis-aligned square whose top-left pixel is ``(x0, y0)``."""
    return Shape("square", x0 + (side - 1) / 2, y0 + (side - 1) / 2, side, **fields)


def circle_at(x0: int, y0: int, diameter: int, **fields) -> Shape:
    """The disk whose bounding box starts at pixel ``(x0, y0)`` and spans ``diameter`` pixels."""
    return Shape("circle", x0 + (diameter - 1) / 2, y0 + (diameter - 1) / 2, diameter, **fields)


@functools.lru_cache(maxsize=8192)
def _local_disk(radius: float, frac_y: float, frac_x: float) -> tuple[np.ndarray, np.ndarray]:
    """Disk offsets relative to ``floor(centre)``; the pattern depends only on these three numbers."""
    pad = math.ceil(radius) + 1
    rr, cc = draw.disk((pad + frac_y, pad + frac_x), radius)
    rr, cc = rr - pad, cc - pad
    rr.flags.writeable = cc.flags.writeable = False
    return rr, cc


def _disk(cy: float, cx: float, radius: float) -> tuple[np.ndarray, np.ndarray]:
    fy, fx = math.floor(cy), math.floor(cx)
    rr, cc = _local_disk(radius, cy - fy, cx - fx)
    return rr + fy, cc + fx


def _box(cy: float, cx: float, height: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned block of ``height`` x ``width`` pixels centred on ``(cy, cx)``."""
    start = (round(cy - (height - 1) / 2), round(cx - (width - 1) / 2))
    rr, cc = draw.rectangle(start, extent=(round(height), round(width)))
    return rr.ravel(), cc.ravel()


def _bar(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """A straight segment of ``size`` x ``thickness`` pixels at ``angle``."""
    angle = shape.angle % 180.0
    if angle == 0.0:
        return _box(shape.cy, shape.cx, shape.thickness, shape.size)
    if angle == 90.0:
        return _box(shape.cy, shape.cx, shape.size, shape.thickness)
    ux, uy = math.cos(math.radians(angle)), -math.sin(math.radians(angle))  # rows grow downwards
    if shape.thickness <= 1:
        half = (shape.size - 1) / 2
        return draw.line(round(shape.cy - half * uy), round(shape.cx - half * ux),
                         round(shape.cy + half * uy), round(shape.cx + half * ux))
    half_len, half_wid = shape.size / 2, shape.thickness / 2
    corners = [(sl * half_len * ux + sw * half_wid * -uy, sl * half_len * uy + sw * half_wid * ux)
               for sl, sw in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    return draw.polygon([shape.cy + dy for _, dy in corners], [shape.cx + dx for dx, _ in corners])


def _solid(shape: Shape, size: float) -> tuple[np.ndarray, np.ndarray]:
    if shape.kind == "circle":
        return _disk(shape.cy, shape.cx, size / 2)
    return _box(shape.cy, shape.cx, size, size)


def footprint(shape: Shape, image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels ``shape`` covers, clipped to ``image_shape``.

    Examples
    --------
    >>> rr, cc = footprint(square_at(2, 3, 4), (16, 16))
    >>> len(rr), int(rr.min()), int(cc.min())
    (16, 3, 2)
    """
    if shape.kind not in KINDS:
        raise ValueError(f"unknown shape kind {shape.kind!r}; expected one of {KINDS}")
    if shape.kind == "line":
        rr, cc = _bar(shape)
    elif shape.filled:
        rr, cc = _solid(shape, shape.size)
    else:
        outer = np.zeros(image_shape, bool)
        rr, cc = _solid(shape, shape.size)
        keep = (rr >= 0) & (rr < image_shape[0]) & (cc >= 0) & (cc < image_shape[1])
        outer[rr[keep], cc[keep]] = True
        inner_size = shape.size - 2 * shape.thickness
        if inner_size > 0:
            ri, ci = _solid(shape, inner_size)
            keep = (ri >= 0) & (ri < image_shape[0]) & (ci >= 0) & (ci < image_shape[1])
            outer[ri[keep], ci[keep]] = False
        return np.nonzero(outer)
    keep = (rr >= 0) & (rr < image_shape[0]) & (cc >= 0) & (cc < image_shape[1])
    return rr[keep], cc[keep]


def draw_into(shapes: list[Shape], image: np.ndarray, masks: dict[str, np.ndarray]) -> list[int]:
    """Draw ``shapes`` in order into ``image`` and the per-kind ``masks``; return their areas.

    The masks hold the union of each kind's footprints, whether or not a later shape covers them;
    an area is the pixel count of the shape's own footprint.
    """
    areas = []
    for shape in shapes:
        rr, cc = footprint(shape, image.shape)
        image[rr, cc] = shape.intensity
        masks[shape.kind][rr, cc] = True
        areas.append(int(rr.size))
    return areas


def render(shapes: list[Shape], size: int) -> tuple[np.ndarray, dict[str, np.ndarray], list[int]]:
    """Draw ``shapes`` in order on a black ``size`` x ``size`` image.

    Returns
    -------
    image : uint8 (size, size)
    masks : dict kind -> bool (size, size)
    areas : list of int
        See :func:`draw_into`.

    Examples
    --------
    >>> image, masks, areas = render([circle_at(1, 1, 6), square_at(4, 4, 3)], 10)
    >>> int(image.max()), bool(masks["square"][5, 5]), areas[1]
    (255, True, 9)
    """
    image = np.zeros((size, size), np.uint8)
    masks = {kind: np.zeros((size, size), bool) for kind in KINDS}
    return image, masks, draw_into(shapes, image, masks)
