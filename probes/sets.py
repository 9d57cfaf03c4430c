"""Probe-set generators: the base set of the original study and its counterfactual sets.

Each set is registered with a one-line description, a parameter dataclass (:mod:`probes.params`,
stated at the study's 256 px and scaled to the image size) and a function that turns one random
generator into one *unit*: a single scene, or for ``pairs`` the eight edits of one scene.

Examples
--------
>>> spec = SETS["base"]
>>> geometry = spec.geometry(size=128)
>>> geometry.diameter, geometry.side
((5, 24), (5, 24))
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np

from .errors import ProbeError
from .params import (MIN_SIZE, STUDY_IMAGE_SIZE, BaseParams, CircleParams, CirclesOnlyParams,
                     Geometry, LargeSquaresParams, LineParams, LinesOnlyParams, MixedParams,
                     PairsParams, SmallCirclesParams, SquaresOnlyParams, make_geometry,
                     parse_value)
from .scene import Shape, circle_at, square_at


# ------------------------------------------------------------------------------------- drawing
def _circles(rng: np.random.Generator, p: CircleParams, g: Geometry) -> list[Shape]:
    count = int(rng.integers(p.min_circles, p.max_circles + 1))
    shapes = []
    for _ in range(count):
        diameter = int(rng.integers(g.diameter[0], g.diameter[1] + 1))
        x, y = g.place(rng, diameter)
        shapes.append(circle_at(x, y, diameter, intensity=p.intensity))
    return shapes


def _square(rng: np.random.Generator, side_range: tuple[int, int], g: Geometry,
            intensity: int) -> Shape:
    side = int(rng.integers(side_range[0], side_range[1] + 1))
    x, y = g.place(rng, side)
    return square_at(x, y, side, intensity=intensity)


def _line(rng: np.random.Generator, p: LineParams, g: Geometry, intensity: int) -> Shape:
    length = int(rng.integers(g.length[0], g.length[1] + 1))
    if rng.random() < p.oblique_rate:
        angle = float(rng.uniform(10.0, 80.0) + 90.0 * rng.integers(0, 2))
    else:
        angle = 90.0 * float(rng.integers(0, 2))
    if angle in (0.0, 90.0):
        width, height = (length, g.line_width) if angle == 0.0 else (g.line_width, length)
    else:
        cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
        width = math.ceil(length * cos + g.line_width * sin)
        height = math.ceil(length * sin + g.line_width * cos)
    x, y = g.place(rng, max(width, height))
    return Shape("line", x + (width - 1) / 2, y + (height - 1) / 2, length, True,
                 g.line_width, angle, intensity)


# ------------------------------------------------------------------------------------ generators
def _base(rng, p: BaseParams, g: Geometry) -> list[list[Shape]]:
    shapes = _circles(rng, p, g)
    if rng.random() < p.positive_rate:
        shapes.append(_square(rng, g.side, g, p.intensity))
    return [shapes]


def _lines_only(rng, p: LinesOnlyParams, g: Geometry) -> list[list[Shape]]:
    shapes = _circles(rng, p, g)
    count = int(rng.integers(p.min_lines, p.max_lines + 1))
    return [shapes + [_line(rng, p, g, p.intensity) for _ in range(count)]]


def _large_squares(rng, p: LargeSquaresParams, g: Geometry) -> list[list[Shape]]:
    shapes = _circles(rng, p, g)
    largest = max((int(s.size) for s in shapes), default=0)
    low = max(g.side[0], largest + 1)
    return [shapes + [_square(rng, (low, g.side[1]), g, p.intensity)]]


def _circles_only(rng, p: CircleParams, g: Geometry) -> list[list[Shape]]:
    return [_circles(rng, p, g)]


def _squares_only(rng, p: SquaresOnlyParams, g: Geometry) -> list[list[Shape]]:
    return [[_square(rng, g.side, g, p.intensity)]]


def _mixed(rng, p: MixedParams, g: Geometry) -> list[list[Shape]]:
    shapes = _circles(rng, p, g)
    if rng.random() < p.line_rate:
        count = int(rng.integers(p.min_lines, p.max_lines + 1))
        shapes.extend(_line(rng, p, g, p.intensity) for _ in range(count))
    if rng.random() < p.square_rate:
        shapes.append(_square(rng, g.side, g, p.intensity))
    return [shapes]


PAIR_VARIANTS = ("original", "removed", "circle", "outline", "sides", "half", "double", "moved")


def _loose_sides(square: Shape, width: int, gap_fraction: float) -> list[Shape]:
    """The square's four sides as separate bars, a gap short of each corner."""
    side = int(square.size)
    gap = max(1, round(gap_fraction * side))
    x0, y0 = square.cx - (side - 1) / 2, square.cy - (side - 1) / 2
    length, near, far = side - 2 * gap, (width - 1) / 2, side - 1 - (width - 1) / 2
    bar = dict(thickness=width, intensity=square.intensity)
    return [Shape("line", square.cx, y0 + near, length, angle=0.0, **bar),
            Shape("line", square.cx, y0 + far, length, angle=0.0, **bar),
            Shape("line", x0 + near, square.cy, length, angle=90.0, **bar),
            Shape("line", x0 + far, square.cy, length, angle=90.0, **bar)]


def _resized(square: Shape, side: int, size: int) -> Shape:
    """Square of ``side`` at (nearly) the same centre, shifted only as far as the image needs."""
    x0 = min(max(round(square.cx - (side - 1) / 2), 0), size - side)
    y0 = min(max(round(square.cy - (side - 1) / 2), 0), size - side)
    return square_at(x0, y0, side, intensity=square.intensity)


def _moved(rng, square: Shape, g: Geometry) -> Shape:
    """The same square at a new place that does not overlap the old one (best of 64 draws)."""
    side = int(square.size)
    best, best_distance = square, -1.0
    for _ in range(64):
        x, y = g.place(rng, side)
        candidate = square_at(x, y, side, intensity=square.intensity)
        distance = max(abs(candidate.cx - square.cx), abs(candidate.cy - square.cy))
        if distance >= side:
            return candidate
        if distance > best_distance:
            best, best_distance = candidate, distance
    return best


def _pairs(rng, p: PairsParams, g: Geometry) -> list[list[Shape]]:
    circles = _circles(rng, p, g)
    square = _square(rng, g.side, g, p.intensity)
    side = int(square.size)
    diameter = round(2 * side / math.sqrt(math.pi))  # equal area
    equal_circle = Shape("circle", square.cx, square.cy, diameter, intensity=p.intensity)
    outline = dataclasses.replace(square, filled=False, thickness=g.line_width)
    half = _resized(square, max(2, round(side / 2)), g.size)
    double = _resized(square, 2 * side, g.size)
    moved = _moved(rng, square, g)
    return [circles + [square], list(circles), circles + [equal_circle], circles + [outline],
            circles + _loose_sides(square, g.line_width, p.gap_fraction), circles + [half],
            circles + [double], circles + [moved]]


# -------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class ProbeSetSpec:
    """A registered probe set: how one unit is drawn and what it tests."""

    name: str
    description: str
    params_type: type
    draw_unit: Callable[[np.random.Generator, object, Geometry], list[list[Shape]]]
    variants: tuple[str, ...] = ()
    check: Callable[[object, Geometry], None] | None = None

    @property
    def images_per_unit(self) -> int:
        return max(1, len(self.variants))

    def parse_params(self, overrides: dict[str, object] | None = None):
        """Defaults updated by ``overrides`` (strings are converted to the field's type)."""
        known = {f.name: f for f in fields(self.params_type)}
        values = {}
        for key, raw in (overrides or {}).items():
            if key not in known:
                raise ProbeError(f"unknown parameter {key!r} for set {self.name!r}; "
                                 f"valid: {', '.join(sorted(known))}")
            kind = type(known[key].default)
            try:
                values[key] = parse_value(str(raw), kind)
            except ValueError:
                raise ProbeError(f"parameter {key}={raw!r} is not a valid "
                                 f"{kind.__name__}") from None
        params = self.params_type(**values)
        for f in fields(params):
            value = getattr(params, f.name)
            if f.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ProbeError(f"parameter {f.name}={value} must be between 0 and 1")
            if isinstance(value, int) and value < 0:
                raise ProbeError(f"parameter {f.name}={value} must not be negative")
        for low, high in (("min_circles", "max_circles"), ("min_lines", "max_lines"),
                          ("min_diameter", "max_diameter"), ("min_side", "max_side"),
                          ("min_length", "max_length")):
            # checked at the study's size: scaled down, both ends may round to one pixel value
            if hasattr(params, low) and getattr(params, low) > getattr(params, high):
                raise ProbeError(f"parameter {low}={getattr(params, low)} must not exceed "
                                 f"{high}={getattr(params, high)}")
        if hasattr(params, "intensity") and not 1 <= params.intensity <= 255:
            raise ProbeError(f"parameter intensity={params.intensity} must be in 1-255")
        return params

    def geometry(self, size: int, params=None) -> Geometry:
        """Pixel ranges at ``size``; raises :class:`ProbeError` when they cannot be drawn."""
        if size < MIN_SIZE:
            raise ProbeError(f"{size} is too small for the geometry; use {MIN_SIZE} or more "
                             f"({STUDY_IMAGE_SIZE} is the original)", parameter="size")
        params = params if params is not None else self.params_type()
        geometry = make_geometry(params, size)
        if self.check is not None:
            self.check(params, geometry)
        return geometry


def _check_large_squares(p: LargeSquaresParams, g: Geometry) -> None:
    if g.side[0] <= g.diameter[1]:
        raise ProbeError(f"large_squares needs min_side > max_diameter so the square is larger "
                         f"than every circle (got {g.side[0]} px <= {g.diameter[1]} px)")
    if g.side[1] > g.size:
        raise ProbeError(f"max_side {g.side[1]} px does not fit a {g.size}-px image")


def _check_small_circles(p: SmallCirclesParams, g: Geometry) -> None:
    smallest_square = SETS["base"].geometry(g.size).side[0]
    if g.diameter[1] >= smallest_square:
        raise ProbeError(f"small_circles needs circles smaller than the smallest base square "
                         f"({smallest_square} px at size {g.size}); lower max_diameter")


def _check_pairs(p: PairsParams, g: Geometry) -> None:
    if not 0.0 < p.gap_fraction <= 0.25:
        raise ProbeError(f"pairs: gap_fraction={p.gap_fraction} must be in (0, 0.25] so the loose "
                         f"sides keep a length")
    if 2 * g.side[1] > g.size:
        raise ProbeError(f"pairs: the doubled square ({2 * g.side[1]} px) does not fit a "
                         f"{g.size}-px image; lower max_side or use a larger image size")


SETS: dict[str, ProbeSetSpec] = {spec.name: spec for spec in (
    ProbeSetSpec("base", "the original study's set: 0-9 filled circles, a filled square in half "
                 "the images (label 1)", BaseParams, _base),
    ProbeSetSpec("lines_only", "base-like circles plus 1-4 straight segments, never a square "
                 "(label 0): is a line alone enough?", LinesOnlyParams, _lines_only),
    ProbeSetSpec("large_squares", "a square larger than every circle, up to 2x the base maximum "
                 "(label 1): do only small squares count?", LargeSquaresParams, _large_squares,
                 check=_check_large_squares),
    ProbeSetSpec("small_circles", "only circles smaller than the smallest base square (label 0): "
                 "do small things count as squares?", SmallCirclesParams, _circles_only,
                 check=_check_small_circles),
    ProbeSetSpec("circles_only", "control: 1-9 base circles, no square (label 0)",
                 CirclesOnlyParams, _circles_only),
    ProbeSetSpec("squares_only", "control: one base square, no circles (label 1)",
                 SquaresOnlyParams, _squares_only),
    ProbeSetSpec("mixed", "circles of diameter 4-49, a base square and 1-2 lines, each cue "
                 "independent: training data for planted-cue models (relabel by rule)",
                 MixedParams, _mixed),
    ProbeSetSpec("pairs", "8 edits of one base positive scene, linked by base_index: original, "
                 "removed, equal-area circle, outline, loose sides, x0.5, x2, moved",
                 PairsParams, _pairs, variants=PAIR_VARIANTS, check=_check_pairs),
)}


def get_set(name: str) -> ProbeSetSpec:
    """The registered set ``name``; :class:`ProbeError` listing the valid names otherwise."""
    try:
        return SETS[name]
    except KeyError:
        raise ProbeError(f"unknown probe set {name!r}; valid: {', '.join(SETS)} "
                         f"(see densevis generate --list)") from None
