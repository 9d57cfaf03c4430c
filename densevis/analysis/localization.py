"""Localization metrics of (reduced) maps against a ground-truth mask, vectorized over a batch.

All metrics are computed for a whole batch at once in torch (CPU or GPU); nothing loops over
pixels or images. Names (canonical, used in every table):

``pointing_game``
    The map's maximum lies in the mask (Zhang et al. 2018).
``pointing_game_tol``
    The maximum lies within ``tolerance`` px of the mask: 15 px at 224 px, scaled to the image.
``relevance_mass``
    Map mass inside the mask over the total mass (Arras et al. 2022; the energy pointing game).
``relevance_rank``
    Share of the ``K = |mask|`` highest pixels that lie in the mask (Arras et al. 2022).
``auroc``, ``average_precision``
    The map as a pixel classifier of the mask: ROC AUC (Mann-Whitney, ties count 1/2, as
    ``sklearn.metrics.roc_auc_score``) and average precision (as
    ``sklearn.metrics.average_precision_score``).
``topk_iou``
    Intersection over union of the ``k`` highest pixels and the mask; ``k`` is 1000 px at 224 px
    (Quantus' TopKIntersection default), scaled by image area.
``density_ratio``
    Mean map value inside the mask over the mean outside (1 = no preference).
``mass_minus_area``
    ``relevance_mass`` minus the mask's area fraction: 0 for a uniform map, > 0 when the mask
    holds more than its share.

Ties: when pixels tie (a constant or zero-floored map), the order-based metrics take their
expected value over a random order of the tied pixels: a constant map gets the chance level
(its pointing game is the mask's area fraction, its AUROC 1/2), never a lucky 1. Without ties
every value equals Quantus 0.6 (``abs=False, normalise=False``); ``tests/test_analysis_metrics.py``
checks it.

How: each row's in-mask values are sorted (few), the whole row is sorted once, and every
order-based metric follows from, per in-mask pixel, the number of pixels above and equal to it.

Examples
--------
>>> import torch
>>> maps = torch.zeros(1, 8, 8); maps[0, 2, 3] = 1.0
>>> masks = torch.zeros(1, 8, 8, dtype=torch.bool); masks[0, 1:4, 1:4] = True
>>> s = localization_scores(maps, masks)
>>> [round(s.values[m].item(), 3) for m in ("pointing_game", "relevance_mass", "auroc")]
[1.0, 1.0, 0.556]
"""

from __future__ import annotations

import concurrent.futures
import math

import numpy as np
import torch
import torch.nn.functional as F

from densevis.analysis.scores import NONFINITE_MAP, Scores, masked_row_sums

#: The image side (ImageNet crops) at which the literature states the metrics' pixel defaults
#: (tolerance, top-k, edge width); scaled to the image here. Not the probe sets' geometry
#: reference (``probes.sets.REFERENCE_SIZE``, the original study's 256 px).
METRIC_REFERENCE_SIZE = 224
TOLERANCE_AT_REFERENCE = 15.0
TOPK_AT_REFERENCE = 1000

METRICS = ("pointing_game", "pointing_game_tol", "relevance_mass", "relevance_rank", "auroc",
           "average_precision", "topk_iou", "density_ratio", "mass_minus_area")


def tolerance_radius(size: int) -> float:
    """Pointing-game tolerance in px: 15 px at 224 px, proportional to the image side."""
    return TOLERANCE_AT_REFERENCE * size / METRIC_REFERENCE_SIZE


def topk_pixels(height: int, width: int) -> int:
    """``k`` of ``topk_iou``: 1000 px at 224 x 224, proportional to the image area."""
    return max(1, round(TOPK_AT_REFERENCE * height * width / METRIC_REFERENCE_SIZE ** 2))


def sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row sorted ascending.

    On the CPU numpy's sort does it (about 3x faster than ``torch.sort`` there, and
    bit-identical: sorting is exact), in place on a copy, its rows split over torch's CPU threads
    (numpy releases the GIL while sorting); elsewhere ``torch.sort``.
    """
    if x.device.type != "cpu":
        return torch.sort(x, dim=1).values
    rows = x.numpy().copy()
    threads = min(torch.get_num_threads(), len(rows))
    if threads > 1 and rows.size >= 1 << 20:
        bounds = np.linspace(0, len(rows), threads + 1).astype(int)
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda i: rows[bounds[i]:bounds[i + 1]].sort(axis=1), range(threads)))
    else:
        rows.sort(axis=1)
    return torch.from_numpy(rows)


def _in_mask_values(x: torch.Tensor, m: torch.Tensor, counts: torch.Tensor):
    """Each row's in-mask values in a padded matrix (pads ``+inf``), its validity mask and the
    ``(rows, columns)`` of the in-mask pixels."""
    n, device = x.shape[0], x.device
    width = max(1, int(counts.max())) if n else 1
    rows, cols = m.nonzero(as_tuple=True)
    offsets = torch.cumsum(counts, 0) - counts
    slots = torch.arange(rows.numel(), device=device) - offsets[rows]
    values = torch.full((n, width), math.inf, dtype=x.dtype, device=device)
    values[rows, slots] = x[rows, cols]
    valid = torch.arange(width, device=device) < counts[:, None]
    return values, valid, (rows, cols)


def _upto(ordered: torch.Tensor, values: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
    """Pixels ``<=`` each value, given the count ``below`` of pixels ``<`` it.

    Each value occurs in its row, so the count is ``below + 1`` plus the length of its run of
    ties. Short runs (the usual case) are walked with a few gathers; long ones (a zero-floored
    map) get a second binary search.
    """
    p = ordered.shape[1]
    upto = below + 1
    for _ in range(4):
        following = ordered.gather(1, upto.clamp(max=p - 1))
        tied = (following == values) & (upto < p)
        if not tied.any():
            return upto
        upto = upto + tied
    return torch.searchsorted(ordered, values, right=True)


def _disk(radius: float, device) -> torch.Tensor:
    reach = int(math.floor(radius))
    offsets = torch.arange(-reach, reach + 1, device=device, dtype=torch.float32)
    return (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius ** 2).to(torch.float32)


def _pointing_with_tolerance(x: torch.Tensor, masks: torch.Tensor, ordered: torch.Tensor,
                            where_in: tuple, radius: float) -> torch.Tensor:
    """Share of the map's maximal pixels within ``radius`` px (Euclidean) of the mask.

    ``x`` (N, P) and ``masks`` (N, H, W); ``ordered`` is ``x`` sorted per row and ``where_in``
    the ``(rows, columns)`` of the mask's pixels. A unique maximum
    (the usual case) needs only its distances to the mask's pixels; rows with tied maxima dilate
    their mask with a disk instead.
    """
    n, h, w = masks.shape
    ties = x.shape[1] - torch.searchsorted(ordered, ordered[:, -1:].contiguous()).view(-1)
    where = x.argmax(dim=1)
    rows, pixels = where_in
    dr = torch.div(pixels, w, rounding_mode="floor") - \
        torch.div(where, w, rounding_mode="floor")[rows]
    dc = pixels % w - (where % w)[rows]
    distance2 = (dr * dr + dc * dc).to(torch.float64)
    nearest = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
    nearest = nearest.scatter_reduce(0, rows, distance2, "amin")
    share = (nearest <= radius ** 2).to(torch.float64)
    tied = (ties > 1).nonzero(as_tuple=True)[0]
    if tied.numel():
        disk = _disk(radius, x.device)
        reach = disk.shape[0] // 2
        grown = F.conv2d(masks[tied, None].to(torch.float32), disk[None, None], padding=reach)
        near = grown[:, 0].flatten(1) > 0.5
        at_max = x[tied] == ordered[tied, -1:]
        share[tied] = (near & at_max).sum(1).to(torch.float64) / ties[tied].to(torch.float64)
    return share


def localization_scores(maps: torch.Tensor, masks: torch.Tensor, tolerance: float | None = None,
                        k: int | None = None, region: str = "mask") -> Scores:
    """All :data:`METRICS` of ``maps`` (N, H, W, already reduced) against ``masks`` (N, H, W).

    Parameters
    ----------
    maps : Tensor
        Float maps; rows holding NaN or inf get NaN metrics with a note.
    masks : Tensor
        Bool ground truth on the maps' device; an empty mask gives NaN metrics with a note.
    tolerance : float, optional
        Radius of ``pointing_game_tol`` in px (default :func:`tolerance_radius`).
    k : int, optional
        Pixels of ``topk_iou`` (default :func:`topk_pixels`).
    region : str
        What the mask is, for the notes ("square").

    Returns
    -------
    Scores
    """
    n, h, w = maps.shape
    p = h * w
    if n == 0:
        scores = Scores()
        for name in METRICS:
            scores.add(name, torch.zeros(0, dtype=torch.float64))
        return scores
    tolerance = tolerance_radius(max(h, w)) if tolerance is None else float(tolerance)
    k = topk_pixels(h, w) if k is None else int(k)
    x = maps.reshape(n, p).to(torch.float32)
    m = masks.reshape(n, p).to(device=x.device, dtype=torch.bool)
    n1 = m.sum(dim=1)
    values, valid, where = _in_mask_values(x, m, n1)
    inside = torch.where(valid, values, torch.zeros_like(values)).sum(dim=1, dtype=torch.float64)
    outside = masked_row_sums(x, ~m)
    total = inside + outside
    # a float64 sum of float32 values cannot overflow: it is finite iff the row is
    bad = ~torch.isfinite(total)
    if bad.any():
        x = torch.where(bad.view(-1, 1), torch.zeros_like(x), x)
        values = torch.where(bad.view(-1, 1) & valid, torch.zeros_like(values), values)
    n0 = p - n1
    empty, full = n1 == 0, n0 == 0
    n1f, n0f = n1.to(torch.float64), n0.to(torch.float64)
    common = [(bad, NONFINITE_MAP), (empty & ~bad, f"empty mask: no {region} in this image")]
    scores = Scores()

    # -- mass: sums in float64
    zero_total = (total == 0) & ~bad
    mass = inside / total
    scores.add("relevance_mass", mass, common + [(zero_total, "map sums to zero")])
    scores.add("mass_minus_area", mass - n1f / p, common + [(zero_total, "map sums to zero")])
    ratio = (inside / n1f) / (outside / n0f)
    both_zero = (inside == 0) & (outside == 0) & ~bad
    scores.add("density_ratio", ratio, common + [
        (full & ~empty, f"{region} covers the whole image"), (both_zero, "map is zero")])
    scores.annotate("density_ratio", (outside == 0) & (inside != 0) & ~bad & ~full,
                    "no relevance outside the mask: ratio infinite")

    # -- order: per in-mask pixel, how many pixels lie above it and tie with it
    ordered = sort_rows(x).contiguous()
    below_all = torch.searchsorted(ordered, values, right=False)
    upto_all = _upto(ordered, values, below_all).to(torch.float64)
    below_all = below_all.to(torch.float64)
    ordered_in = torch.sort(values, dim=1).values.contiguous()
    below_in = torch.searchsorted(ordered_in, values, right=False).to(torch.float64)
    upto_in = torch.searchsorted(ordered_in, values, right=True).to(torch.float64)
    above = p - upto_all                        # pixels strictly above
    tied = torch.where(valid, upto_all - below_all, torch.ones_like(upto_all))

    def expected_hits(slots: torch.Tensor) -> torch.Tensor:
        """Expected in-mask pixels among the ``slots`` highest, ties in random order."""
        share = ((slots.view(-1, 1) - above) / tied).clamp(0.0, 1.0)
        return torch.where(valid, share, torch.zeros_like(share)).sum(dim=1)

    constant = (ordered[:, 0] == ordered[:, -1]) & ~bad
    scores.add("pointing_game", expected_hits(torch.ones_like(n1f)), common)
    scores.add("relevance_rank", expected_hits(n1f) / n1f, common)
    hits = expected_hits(torch.full_like(n1f, float(k)))
    scores.add("topk_iou", hits / (k + n1f - hits), common)
    below_out = below_all - below_in            # out-of-mask pixels below each in-mask pixel
    tied_out = tied - (upto_in - below_in)
    wins = torch.where(valid, below_out + 0.5 * tied_out, torch.zeros_like(tied)).sum(dim=1)
    scores.add("auroc", wins / (n1f * n0f), common + [
        (full & ~empty, f"{region} covers the whole image")])
    precision = (n1f.view(-1, 1) - below_in) / (p - below_all)
    precision = torch.where(valid, precision, torch.zeros_like(precision))
    scores.add("average_precision", precision.sum(dim=1) / n1f, common)
    near = _pointing_with_tolerance(x, m.view(n, h, w), ordered, where, tolerance)
    scores.add("pointing_game_tol", near, common)
    for name in ("pointing_game", "pointing_game_tol", "relevance_rank", "topk_iou", "auroc",
                 "average_precision"):
        scores.annotate(name, constant & ~empty, "constant map: every pixel tied (chance level)")
    return scores
