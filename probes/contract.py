"""The probe-file contract (``docs/DESIGN.md``): what a probe-set HDF5 file holds, read by
:mod:`probes.reader` and written by :mod:`probes.writer` (generated sets) and
:mod:`probes.arrays` (a user's own images).

Required: ``images`` uint8 (N,H,H) grey, ``labels`` (N,) 0/1, and the attributes ``format``
(:data:`FORMAT`), ``set``, ``seed`` (-1: imported data, drawn from no seed) and ``params`` (JSON).
Optional:

``masks/<region>``
    bool (N,H,H), any region name (:data:`REGION_NAME`) but :data:`DERIVED_REGIONS`; the
    generated sets hold one per kind of :data:`probes.KINDS` (``square``, ``circle``, ``line``).
``objects``
    One row per drawn object (:data:`OBJECT_DTYPE`); absent = an empty table.
``base_index``
    int (N,): the base scene of each image of a paired set; absent = -1 (no pair).
``variant``
    (N,) text naming each edit of a paired set (needs ``base_index``).
``names``
    (N,) UTF-8 text: each image's source (the file an imported image was read from).
attribute ``target``
    The region localization is scored on; absent: ``square`` where the file has that mask (the
    generated sets), else the only region of a file with one (:func:`default_target`).

What each analysis needs (:data:`NEEDS`; a consumer that lacks its part says which and how to
get it, rather than failing on a missing dataset).

Examples
--------
>>> default_target(["circle", "line", "square"]), default_target(["lesion"]), default_target([])
('square', 'lesion', None)
"""

from __future__ import annotations

import re

import numpy as np

from .scene import KINDS

FORMAT = "densevis-probes/1"
OBJECT_DTYPE = np.dtype([
    ("image", "<i8"), ("kind", "S6"), ("cx", "<f8"), ("cy", "<f8"), ("size", "<f8"),
    ("area", "<i8"), ("filled", "?"), ("thickness", "<f8"), ("angle", "<f8"),
    ("intensity", "u1")])
#: Dataset -> (numpy dtype kinds allowed, item size or None, what that means): a file of
#: another tool with float images in 0-1, say, would be read as nearly black uint8. Masks
#: (``masks/<region>``) are booleans: :data:`MASK_DTYPE`.
DTYPES = {"images": ("u", 1, "uint8 grey levels 0-255"), "labels": ("uib", None, "integers"),
          "base_index": ("i", None, "signed integers"), "variant": ("S", None, "text"),
          "names": ("S", None, "text (UTF-8)")}
MASK_DTYPE = ("b", None, "booleans")
#: Datasets every probe file holds; the rest is optional (module docstring).
REQUIRED = ("images", "labels")
#: Attributes every probe file holds.
REQUIRED_ATTRS = ("set", "seed", "params")
#: The seed attribute of a file not drawn from a seed (imported data).
NO_SEED = -1
#: A region name: it names a dataset (``masks/<name>``) and the metric ``<name>_mass``.
REGION_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
#: Regions the analysis draws from the objects table (``densevis.analysis.regions``): no mask
#: of a file may take these names.
DERIVED_REGIONS = ("square_filled", "smallest_object")
#: The target region of the generated sets (their files record no ``target``).
GENERATED_TARGET = "square"

#: What each analysis reads from a probe file besides the images: key -> (the analysis, the
#: parts it needs). A consumer whose file lacks them says so (``ProbeSet.missing``).
NEEDS = {
    "behaviour": ("the behaviour rows (logit_margin, predicted_positive)", "labels"),
    "evaluation": ("the evaluation (its square breakdowns also read masks/square, masks/circle "
                   "and objects)", "labels"),
    "localization": ("localization (pointing_game, auroc, ...)",
                     "a target region's mask (masks/<target>, attribute target)"),
    "edge": ("the edge hypothesis (edge_interior_ratio)",
             "objects rows of kind square (the generated sets have them)"),
    "small_object": ("the small-object hypothesis (smallest_object_mass)",
                     "objects rows of other kinds than square (the generated sets have them)"),
    "label_rules": ("the label rules edge and small",
                    "objects (the generated sets have them)"),
    "hard_cases": ("the training's hard-case weights (without them it weighs classes only)",
                   "objects and masks/square, masks/circle (the generated sets)"),
    "pairs": ("the pair deltas (logit_delta_<variant>)", "base_index and variant"),
}


def default_target(regions) -> str | None:
    """The target region of a file that records none: ``square`` where the file has that mask
    (the generated sets), else its only region, else None (no localization)."""
    regions = list(regions)
    if GENERATED_TARGET in regions:
        return GENERATED_TARGET
    return regions[0] if len(regions) == 1 else None


def ordered_regions(names) -> tuple[str, ...]:
    """Region names in the order tables list them: the kinds in :data:`probes.KINDS` order,
    then the others alphabetically.

    >>> ordered_regions(["tumour", "square", "circle", "lesion"])
    ('circle', 'square', 'lesion', 'tumour')
    """
    names = set(names)
    return tuple(k for k in KINDS if k in names) + tuple(sorted(names - set(KINDS)))


def objects_problem(rows: np.ndarray, count: int) -> str | None:
    """What is wrong with an objects table ``rows`` (structured, :data:`OBJECT_DTYPE`'s fields)
    of a file of ``count`` images, or None.

    >>> rows = np.zeros(1, OBJECT_DTYPE); rows["kind"] = b"square"; rows["image"] = 3
    >>> objects_problem(rows, 4) is None, objects_problem(rows, 2)
    (True, 'object 0 belongs to image 3, not an image of the file')
    """
    fields = rows.dtype.fields or {}
    wrong = [name for name in OBJECT_DTYPE.names if name not in fields
             or fields[name][0].kind not in ("S" if name == "kind" else "uifb")]
    if wrong or rows.ndim != 1:
        found = ", ".join(f"{name} {fields[name][0]}" if name in fields else f"no {name}"
                          for name in wrong) or f"{rows.ndim} dimensions"
        return (f"the objects table has {found}; expected fields "
                f"{', '.join(OBJECT_DTYPE.names)} with kind as text")
    images = rows["image"]
    odd = np.flatnonzero((images < 0) | (images >= count))
    if len(odd):
        return f"object {odd[0]} belongs to image {images[odd[0]]}, not an image of the file"
    kinds = set(np.unique(rows["kind"]).tolist()) - {k.encode() for k in KINDS}
    if kinds:
        return (f"the objects table names kind {sorted(kinds)[0].decode(errors='replace')!r}; "
                f"valid: {', '.join(KINDS)}")
    return None
