"""Probe-set parameters and the pixel geometry they give at an image size.

Geometry parameters are stated at the original study's image size, :data:`STUDY_IMAGE_SIZE`
(256 px), and scaled by ``size / 256`` (minimum sizes round up, maximum sizes round down, so a
scaled range never leaves the original one), but square sides, line lengths and circle diameters
never go below 5 px, except the circles of ``small_circles`` and ``mixed``, which go down to 4 px
(a digital disk under 4 px is a filled square): so small circles, smaller than every square, line
and other circle, exist at any size. Images are at least 32 px.

Examples
--------
>>> make_geometry(BaseParams(), size=128).side
(5, 24)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .errors import ProbeError

#: The original study's image side: every geometry parameter is stated at it, and sets are
#: generated at it unless told otherwise. (Not the 224 px at which densevis.analysis states
#: its localization metrics' tolerances: those follow the ImageNet-sized literature.)
STUDY_IMAGE_SIZE = 256
MIN_CIRCLE_PX = 4  # the smallest digital disk that is not a filled square
MIN_SQUARE_PX = 5  # above the smallest circle, so small circles exist at every size
MIN_SIZE = 32  # image side below which the shapes would fill the image


# ---------------------------------------------------------------------------------------- params
@dataclass(frozen=True)
class CircleParams:
    """Filled circles placed as in the original study (256-px units)."""

    # no smaller than the smallest square, as at 256 px (both 10): small circles are their own set
    DIAMETER_FLOOR_PX: ClassVar[int] = MIN_SQUARE_PX
    min_circles: int = 0
    max_circles: int = 9
    min_diameter: int = 10
    max_diameter: int = 49
    corner_low: int = 10  # top-left corners in [corner_low, corner_high)
    corner_high: int = 206
    intensity: int = 255


@dataclass(frozen=True)
class SquareParams:
    min_side: int = 10
    max_side: int = 49


@dataclass(frozen=True)
class LineParams:
    min_lines: int = 1
    max_lines: int = 4
    min_length: int = 10
    max_length: int = 49
    line_width: int = 2
    oblique_rate: float = 0.5


@dataclass(frozen=True)
class BaseParams(CircleParams, SquareParams):
    positive_rate: float = 0.5


@dataclass(frozen=True)
class LinesOnlyParams(CircleParams, LineParams):
    pass


@dataclass(frozen=True)
class LargeSquaresParams(CircleParams, SquareParams):
    min_side: int = 50  # larger than the largest base circle
    max_side: int = 98  # about twice the base maximum


@dataclass(frozen=True)
class SmallCirclesParams(CircleParams):
    DIAMETER_FLOOR_PX: ClassVar[int] = MIN_CIRCLE_PX
    min_circles: int = 1
    min_diameter: int = 4
    max_diameter: int = 9  # below the smallest base square (10)


@dataclass(frozen=True)
class CirclesOnlyParams(CircleParams):
    min_circles: int = 1


@dataclass(frozen=True)
class SquaresOnlyParams(SquareParams):
    corner_low: int = 10
    corner_high: int = 206
    intensity: int = 255


@dataclass(frozen=True)
class MixedParams(CircleParams, SquareParams, LineParams):
    DIAMETER_FLOOR_PX: ClassVar[int] = MIN_CIRCLE_PX
    min_diameter: int = 4  # small circles (below the smallest square) and base-size ones
    max_lines: int = 2
    square_rate: float = 0.5  # each cue independent of the others
    line_rate: float = 0.5


@dataclass(frozen=True)
class PairsParams(CircleParams, SquareParams):
    min_side: int = 28  # so the half-size square and the loose sides stay at least as large as
    #                     the smallest base square (not small objects: size is not confounded)
    line_width: int = 2  # outline band and loose sides
    gap_fraction: float = 0.15  # corner gap of the loose sides, as a fraction of the side


# -------------------------------------------------------------------------------------- geometry
def _scaled_range(name: str, lo: float, hi: float, scale: float, size: int, floor: int = 1):
    lo_px = max(floor, math.ceil(lo * scale - 1e-9))
    hi_px = max(floor, math.floor(hi * scale + 1e-9))
    if lo_px > hi_px:
        raise ProbeError(
            f"size {size} is too small for the geometry: {name} {lo}-{hi} (at {STUDY_IMAGE_SIZE} "
            f"px) scales to an empty range of pixels; use a larger image size or other parameter "
            f"values")
    return lo_px, hi_px


@dataclass(frozen=True)
class Geometry:
    """Pixel ranges of one set at one image size (inclusive ranges unless said)."""

    size: int
    corner: tuple[int, int] = (0, 0)  # [low, high) for top-left corners
    diameter: tuple[int, int] = (0, 0)
    side: tuple[int, int] = (0, 0)
    length: tuple[int, int] = (0, 0)
    line_width: int = 1

    def place(self, rng: np.random.Generator, extent: int) -> tuple[int, int]:
        """Top-left corner (x, y) of an ``extent``-pixel box, inside the corner range and image."""
        lo, hi = self.corner[0], min(self.corner[1], self.size - extent + 1)
        if hi <= lo:
            lo, hi = 0, self.size - extent + 1
        x, y = rng.integers(lo, hi, size=2)
        return int(x), int(y)


def parse_value(raw: str, kind: type):
    """``raw`` (text from a command line or a spec) as a value of ``kind``: booleans are
    1/true/yes and 0/false/no (any case), other kinds their constructor's reading. Raises
    ``ValueError`` for text that is not one of them. The one reading of such text in the
    project: probe-set parameters and saliency-method parameters both use it.

    >>> parse_value("Yes", bool), parse_value("0", bool), parse_value("12", int)
    (True, False, 12)
    """
    if kind is bool:
        if raw.lower() in ("1", "true", "yes"):
            return True
        if raw.lower() in ("0", "false", "no"):
            return False
        raise ValueError(raw)
    return kind(raw)


def make_geometry(params, size: int) -> Geometry:
    """The pixel ranges of ``params`` at ``size``; :class:`ProbeError` when they are empty or
    their largest shape does not fit the image."""
    scale = size / STUDY_IMAGE_SIZE
    values = {"size": size}
    if hasattr(params, "corner_low"):
        values["corner"] = (round(params.corner_low * scale), round(params.corner_high * scale))
        if values["corner"][0] >= values["corner"][1]:
            raise ProbeError(f"parameter corner_low={params.corner_low} must be below "
                             f"corner_high={params.corner_high}")
    if hasattr(params, "min_diameter"):
        values["diameter"] = _scaled_range("diameter", params.min_diameter, params.max_diameter,
                                           scale, size, params.DIAMETER_FLOOR_PX)
    if hasattr(params, "min_side"):
        values["side"] = _scaled_range("side", params.min_side, params.max_side, scale, size,
                                       MIN_SQUARE_PX)
    if hasattr(params, "min_length"):
        values["length"] = _scaled_range("length", params.min_length, params.max_length, scale,
                                         size, MIN_SQUARE_PX)
    if hasattr(params, "line_width"):
        values["line_width"] = max(1, round(params.line_width * scale))
    geometry = Geometry(**values)
    # the largest shape of each kind must fit the image: a line's box at most its length plus
    # its width (at any angle)
    for name, extent in (("diameter", geometry.diameter[1]), ("side", geometry.side[1]),
                         ("length", geometry.length[1] + geometry.line_width * (
                             geometry.length[1] > 0))):
        if extent > size:
            raise ProbeError(f"the largest {name} ({extent} px at size {size}) does not fit the "
                             f"image; lower max_{name} or use a larger image size")
    return geometry
