"""Ground-truth regions of probe images: the file's region masks, filled squares and the
smallest object.

The probe file stores one mask per region (``masks/square`` ... in the generated sets, the
union of that kind's pixels; any names in a user's file, ``masks/lesion``) and, in the generated
sets, one ``objects`` row per drawn object; the derived regions are re-rendered from those rows
with :func:`probes.footprint` (a loop over objects, never over pixels), so they need the objects
(``probes.contract.NEEDS``).

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
from probes.contract import DERIVED_REGIONS


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
        The object kinds that occur anywhere in the file's objects table.
    regions : tuple of str
        The masks worth scoring: every region of the file, except a kind's mask where the file
        has objects and none of that kind (its mask is empty throughout).
    target : str or None
        The region localization is scored on (the file's target, where it has that region).
    """

    def __init__(self, probe: ProbeSet):
        self.probe = probe
        objects = probe.objects()
        self.kinds = tuple(kind for kind in KINDS if (objects["kind"] == kind).any())
        self.regions = tuple(region for region in probe.regions if not probe.has_objects
                             or region not in KINDS or region in self.kinds)
        self.target = probe.target if probe.target in self.regions else None
        self._objects = {int(image): rows for image, rows in objects.groupby("image")}

    def read(self, index, names) -> dict[str, np.ndarray]:
        """Bool (n, H, W) masks of regions ``names`` for images ``index``.

        Names: a region of the file (``square``, ``circle``, ``line`` in the generated sets:
        the union masks of each kind), ``square_filled`` (the squares' solid footprints: an
        outline square counts with its inside) and ``smallest_object`` (the smallest object by
        area that is not a square); these two are drawn from the objects table.
        """
        index = np.asarray(index, dtype=np.int64)
        size = self.probe.size
        out = {}
        for name in names:
            if name in DERIVED_REGIONS:
                if not self.probe.has_objects:
                    raise self.probe.missing(
                        "edge" if name == "square_filled" else "small_object",
                        f"region {name!r} is drawn from the objects table; ask for one of the "
                        f"file's regions ({', '.join(self.probe.regions) or 'none'})")
                out[name] = np.zeros((len(index), size, size), bool)
            else:
                out[name] = read_rows(self.probe.masks(name), index)
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
