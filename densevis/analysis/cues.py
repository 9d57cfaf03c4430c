"""Cue metrics (edges, object size) and behaviour from logits, vectorized over a batch.

``edge_interior_ratio``
    Mean map value in the square's boundary ring (``w`` px on both sides of its edge) over the
    mean in its interior (the square minus the ring): > 1 means the map sits on the edges. ``w``
    is 3 px at 224 px, scaled (at least 1). A square with side ``<= 2w`` has no interior: NaN,
    with a note.
``<region>_mass`` (``square_mass``, ``circle_mass``, ``line_mass``, ``smallest_object_mass``)
    Area-corrected mass: the region's share of the map's mass over its share of the image's
    area, i.e. its mean map value relative to the image's mean. 1 = no preference, so regions of
    different sizes compare directly (a line vs circles, the smallest object vs the square).
``logit_margin``, ``predicted_positive``
    Target-class logit minus the best other logit (class 1 = "square": with two classes, the
    square logit minus the no-square logit, whatever the label; the logit margin of every
    table), and whether the model predicts class 1.
``logit_delta_<variant>`` (``pairs``)
    A variant's logit margin minus its scene's original's; the row's ``image`` is the scene's
    original image, so the variants of one scene line up.

Examples
--------
>>> import torch
>>> maps = torch.ones(1, 16, 16)
>>> square = torch.zeros(1, 16, 16, dtype=torch.bool); square[0, 4:12, 4:12] = True
>>> edge_scores(maps, square, width=1).values["edge_interior_ratio"].tolist()
[1.0]
>>> mass_scores(maps, {"square": square}).values["square_mass"].tolist()
[1.0]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from densevis.analysis.localization import METRIC_REFERENCE_SIZE
from densevis.analysis.scores import (NONFINITE_MAP, Scores, finite_rows,
                                      masked_row_sums)

EDGE_WIDTH_AT_REFERENCE = 3


def edge_width(size: int) -> int:
    """Ring half-width ``w`` of ``edge_interior_ratio``: 3 px at 224 px, scaled, at least 1."""
    return max(1, round(EDGE_WIDTH_AT_REFERENCE * size / METRIC_REFERENCE_SIZE))


def ring_and_interior(squares: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boundary ring (``width`` px both sides of the edge) and interior of bool regions (N, H, W).

    Chebyshev (square) structuring elements fit axis-aligned squares exactly; outside the image
    counts as background, so a square cut by the border has an edge there too.
    """
    solid = squares[:, None].to(torch.float32)
    kernel = 2 * width + 1
    grown = F.max_pool2d(solid, kernel, stride=1, padding=width) > 0.5
    holes = F.pad(1.0 - solid, (width,) * 4, value=1.0)
    interior = F.max_pool2d(holes, kernel, stride=1) < 0.5
    return (grown & ~interior)[:, 0], interior[:, 0]


def _mean_in(maps: torch.Tensor, region: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    count = region.flatten(1).sum(1).to(torch.float64)
    return masked_row_sums(maps, region) / count, count


def edge_scores(maps: torch.Tensor, squares: torch.Tensor, width: int) -> Scores:
    """``edge_interior_ratio`` of maps (N, H, W) for solid square regions (N, H, W)."""
    maps, bad = finite_rows(maps.to(torch.float32))
    ring, interior = ring_and_interior(squares.to(maps.device), width)
    ring_mean, _ = _mean_in(maps, ring)
    inner_mean, inner_count = _mean_in(maps, interior)
    no_square = ~squares.flatten(1).any(1).to(maps.device)
    scores = Scores()
    scores.add("edge_interior_ratio", ring_mean / inner_mean, [
        (bad, NONFINITE_MAP), (no_square & ~bad, "no square in this image"),
        ((inner_count == 0) & ~no_square & ~bad,
         f"square too small for an interior (side <= 2w = {2 * width} px)"),
        ((ring_mean == 0) & (inner_mean == 0) & ~bad, "map is zero on the square")])
    scores.annotate("edge_interior_ratio", (inner_mean == 0) & (ring_mean != 0) & ~bad,
                    "zero interior: ratio infinite")
    return scores


def mass_scores(maps: torch.Tensor, regions: dict[str, torch.Tensor]) -> Scores:
    """``<name>_mass`` (area-corrected mass) of maps (N, H, W) for each named bool region."""
    maps, bad = finite_rows(maps.to(torch.float32))
    n, area = maps.shape[0], maps.shape[1] * maps.shape[2]
    total = masked_row_sums(maps)
    scores = Scores()
    for name, region in regions.items():
        region = region.to(maps.device)
        inside, count = _mean_in(maps, region)
        value = (inside * count / total) / (count / area)
        label = name.replace("_", " ")
        scores.add(f"{name}_mass", value, [
            (bad, NONFINITE_MAP), ((count == 0) & ~bad, f"no {label} in this image"),
            ((total == 0) & ~bad, "map sums to zero")])
    return scores


def behaviour_scores(logits: torch.Tensor, target: int = 1) -> Scores:
    """``logit_margin`` (target logit minus the best other) and ``predicted_positive``."""
    logits = torch.as_tensor(logits, dtype=torch.float64)
    others = torch.cat([logits[:, :target], logits[:, target + 1:]], dim=1)
    scores = Scores()
    scores.add("logit_margin", logits[:, target] - others.amax(dim=1))
    scores.add("predicted_positive", (logits.argmax(dim=1) == target).to(torch.float64))
    return scores


def pair_deltas(margins: np.ndarray, index: np.ndarray, base_index: np.ndarray,
                variants: np.ndarray) -> pd.DataFrame:
    """``logit_delta_<variant>`` per scene: a variant's margin minus its original's.

    Parameters
    ----------
    margins, index : arrays (n,)
        Logit margins of the maps file's rows and their image indices in the probe file.
    base_index, variants : arrays (n,)
        Each row's scene (index of its original) and edit name.

    Returns
    -------
    DataFrame with columns ``image`` (the scene's original), ``metric``, ``value``, ``note``.
    """
    frame = pd.DataFrame({"scene": base_index, "variant": variants, "margin": margins,
                          "index": index})
    original = frame[frame["variant"] == "original"].drop_duplicates("scene")
    originals = original.set_index("scene")["margin"]
    edits = frame[frame["variant"] != "original"]
    reference = edits["scene"].map(originals)
    return pd.DataFrame({
        "image": edits["scene"].to_numpy(),
        "metric": "logit_delta_" + edits["variant"].to_numpy().astype(object),
        "value": (edits["margin"] - reference).to_numpy(),
        "note": np.where(reference.isna(), "the scene's original image is not in the maps file",
                         ""),
    })
