"""What each drawn scene of a probe file holds, measured from its masks and objects table: how
much of the square shows, whether it touches a circle, whether circles merge.

Training weighs its loss by these facts and evaluation breaks its accuracy down by them, so they
live here, below both. Not imported by ``import probes`` (scipy's import would slow every
command line's start): ``from probes.measure import scene_geometry``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage

from .reader import ProbeSet

#: 8-neighbourhood (over one image of a batch): a circle next to the square merges with it.
TOUCHING = np.ones((1, 3, 3), bool)


def scene_geometry(probe: ProbeSet, batch_size: int = 512,
                   merges: bool = True) -> pd.DataFrame:
    """Per image: ``square_px``, ``visible_px`` (square pixels no circle covers),
    ``touches_circle``, ``invisible`` (no square pixel visible), ``square_side`` (px, NaN
    without a square) and ``circles_merge`` (some circles touch or overlap one another).

    Read from the masks in batches (the union of a kind's pixels) and the objects table; a square
    *touches* a circle when a circle pixel lies in or next to (8-neighbourhood) the square;
    circles *merge* when their mask has fewer 8-connected blobs than the image has circles
    (``merges=False`` skips that column, the slowest). A file without the square's or the
    circles' mask and objects (a user's own images) has no square: 0 px, NaN side, nothing
    touches or merges.
    """
    touches, visible, square_px, blobs = [], [], [], []
    # a file without a kind's mask (a user's own images) has none of it: nothing touches
    kinds = tuple(f"masks/{kind}" for kind in ("square", "circle") if kind in probe.regions)
    for batch in probe.batches(batch_size, fields=kinds):
        empty = np.zeros((len(batch["index"]), probe.size, probe.size), bool)
        square, circle = batch.get("masks/square", empty), batch.get("masks/circle", empty)
        near = ndimage.binary_dilation(square, structure=TOUCHING)
        touches.append((near & circle).any(axis=(1, 2)))
        square_px.append(square.sum(axis=(1, 2)))
        visible.append((square & ~circle).sum(axis=(1, 2)))
        if merges:
            blobs.append([ndimage.label(mask, structure=TOUCHING[0])[1] for mask in circle])
    objects = probe.objects()
    sides = objects[objects["kind"] == "square"].groupby("image")["size"].max()
    circles = objects[objects["kind"] == "circle"].groupby("image").size()
    square_px, visible = np.concatenate(square_px), np.concatenate(visible)
    frame = pd.DataFrame({"image": np.arange(len(probe)), "square_px": square_px.astype(np.int64),
                          "visible_px": visible.astype(np.int64),
                          "touches_circle": np.concatenate(touches),
                          "invisible": (square_px > 0) & (visible == 0)})
    frame["square_side"] = frame["image"].map(sides).astype(float)
    if merges:
        frame["circles_merge"] = (np.concatenate(blobs)
                                  < frame["image"].map(circles).fillna(0).to_numpy())
    return frame
