"""The probe-file contract (``shared/DESIGN.md``): what a probe-set HDF5 file holds, read by
:mod:`probes.reader` and written by :mod:`probes.writer`.

``images`` uint8 (N,H,W), ``labels`` uint8 (N,), ``masks/{square,circle,line}`` bool (N,H,W),
``objects`` (one row per drawn object, :data:`OBJECT_DTYPE`), ``base_index`` int64 (N,), and for
``pairs`` also ``variant`` (N,) naming each edit; attributes ``format`` (:data:`FORMAT`), ``set``,
``seed``, ``params`` (JSON) and more (see :func:`probes.writer.write_probe_set`).
"""

from __future__ import annotations

import numpy as np

from .scene import KINDS

FORMAT = "densevis-probes/1"
OBJECT_DTYPE = np.dtype([
    ("image", "<i8"), ("kind", "S6"), ("cx", "<f8"), ("cy", "<f8"), ("size", "<f8"),
    ("area", "<i8"), ("filled", "?"), ("thickness", "<f8"), ("angle", "<f8"),
    ("intensity", "u1")])
#: Dataset -> (numpy dtype kinds allowed, item size or None, what that means): a file of
#: another tool with float images in 0-1, say, would be read as nearly black uint8.
DTYPES = {"images": ("u", 1, "uint8 grey levels 0-255"), "labels": ("ui", None, "integers"),
          "base_index": ("i", None, "signed integers"), "variant": ("S", None, "text"),
          **{f"masks/{kind}": ("b", None, "booleans") for kind in KINDS}}
REQUIRED = ("images", "labels", "objects", "base_index") + tuple(f"masks/{k}" for k in KINDS)
