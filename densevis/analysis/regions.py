"""Ground-truth regions of probe images: per-kind masks, filled squares and the smallest object.

The probe file stores the union mask of each kind (``masks/square`` ...) and one ``objects`` row
per drawn object; per-object regions are re-rendered from those rows with
:func:`probes.footprint` (a loop over objects, never over pixels).

Examples
--------
>>> import tempfile, pathlib
>>> from probes import ProbeSet, write_probe_set
>>> probe = ProbeSet(write_probe_set(pathlib.Path(tempfile.mkdtemp()) / "b.h5", "base", n=4,
...                                  size=64, seed=1, workers=1))
>>> regions = RegionReader(probe)
>>> batch = regions.read([0, 1, 2, 3], ("square", "square_filled", "smallest_object"))
>>> sorted(batch), batch["square"].shape
(['smallest_object', 'square', 'square_filled'], (4, 64, 64))
"""

from __future__ import annotations

import dataclasses

import numpy as np

from probes import KINDS, ProbeSet, footprint, shape_of

#: Region names :meth:`RegionReader.read` knows besides the kinds.
DERIVED = ("square_filled", "smallest_object")


def read_rows(dataset, index: np.ndarray) -> np.ndarray:
    """Rows ``index`` (any order, repeats allowed) of an HDF5 dataset, read in one sorted pass."""
    index = np.asarray(index, dtype=np.int64)
    if len(index) and np.all(np.diff(index) == 1):
        return dataset[int(index[0]):int(index[-1]) + 1]
    unique, inverse = np.unique(index, return_inverse=True)
    return dataset[unique][inverse]


class RegionReader:
    """Reads a probe file's regions for batches of images.

    Attributes
    ----------
    kinds : tuple of str
        The object kinds that occur anywhere in the file.
    """

    def __init__(self, probe: ProbeSet):
        self.probe = probe
        objects = probe.objects()
        self.kinds = tuple(kind for kind in KINDS if (objects["kind"] == kind).any())
        self._objects = {int(image): rows for image, rows in objects.groupby("image")}

    def read(self, index, names) -> dict[str, np.ndarray]:
        """Bool (n, H, W) masks of regions ``names`` for images ``index``.

        Names: a kind (``square``, ``circle``, ``line``: the file's union masks), ``square_filled``
        (the squares' solid footprints: an outline square counts with its inside) and
        ``smallest_object`` (the smallest object by area that is not a square).
        """
        index = np.asarray(index, dtype=np.int64)
        size = self.probe.size
        out = {}
        for name in names:
            if name in KINDS:
                out[name] = read_rows(self.probe.masks(name), index)
            elif name in DERIVED:
                out[name] = np.zeros((len(index), size, size), bool)
            else:
                raise ValueError(f"unknown region {name!r}; valid: {KINDS + DERIVED}")
        for row, image in enumerate(index):
            objects = self._objects.get(int(image))
            if objects is None:
                continue
            if "square_filled" in out:
                for item in objects[objects["kind"] == "square"].itertuples(index=False):
                    shape = dataclasses.replace(shape_of(item), filled=True, thickness=0.0)
                    rr, cc = footprint(shape, (size, size))
                    out["square_filled"][row, rr, cc] = True
            others = objects[objects["kind"] != "square"]
            if "smallest_object" in out and len(others):
                smallest = others.iloc[int(np.argmin(others["area"].to_numpy()))]
                rr, cc = footprint(shape_of(smallest.to_dict()), (size, size))
                out["smallest_object"][row, rr, cc] = True
        return out
