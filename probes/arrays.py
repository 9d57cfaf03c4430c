"""A user's own images as a probe file: :func:`write_arrays`, the counterpart of
:func:`probes.write_probe_set` for arrays, and the conversion of any image to grey levels
(:func:`to_grey`) that ``densevis import`` applies to image files.

What the file holds and what each analysis needs of it: :mod:`probes.contract`. An imported
file's seed is :data:`~probes.contract.NO_SEED` (-1: its images were given, not drawn), its
``source`` attribute says where they came from.

Examples
--------
>>> import tempfile, pathlib
>>> import numpy as np
>>> from probes import ProbeSet
>>> images = np.zeros((4, 32, 32), np.uint8)
>>> images[2:, 8:24, 8:24] = 255                      # a white square in images 2 and 3
>>> path = write_arrays(pathlib.Path(tempfile.mkdtemp()) / "own.h5", images, [0, 0, 1, 1],
...                     masks={"object": images > 0}, name="own")
>>> probe = ProbeSet(path)
>>> probe.name, probe.regions, probe.target, probe.seed, int(probe.masks("object")[3].sum())
('own', ('object',), 'object', -1, 256)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_output, check_h5, check_output_path, writing_h5
from .contract import (DERIVED_REGIONS, FORMAT, NO_SEED, OBJECT_DTYPE, REGION_NAME,
                       default_target, objects_problem)
from .errors import ProbeError
from .sets import SETS
from .version import __version__
from .writer import GZIP_LEVEL, chunk_rows

#: Luma weights of red, green and blue (ITU-R BT.709, as ``skimage.color.rgb2gray``).
LUMA = (0.2125, 0.7154, 0.0721)


def grey_levels(values: np.ndarray, what: str = "images") -> np.ndarray:
    """``values`` as uint8 grey levels 0-255, any shape: uint8 as it is, booleans as 0/255,
    uint16 divided by 257 (65535 -> 255), floats in 0-1 times 255, rounded to the nearest level.

    >>> grey_levels(np.array([0.0, 0.5, 1.0])).tolist(), grey_levels(np.array([True])).tolist()
    ([0, 128, 255], [255])
    >>> grey_levels(np.array([0, 257, 65535], np.uint16)).tolist()
    [0, 1, 255]
    """
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * np.uint8(255)
    if values.dtype == np.uint16:
        return np.round(values / 257.0).astype(np.uint8)
    if values.dtype.kind == "f":
        low, high = (float(np.min(values)), float(np.max(values))) if values.size else (0, 0)
        if not (np.isfinite([low, high]).all() and 0.0 <= low and high <= 1.0):
            raise ProbeError(f"{what} are floats from {low:g} to {high:g}; grey levels from "
                             f"floats need values in 0-1: scale them to 0-1 (or to uint8 0-255) "
                             f"first")
        return np.round(values * 255.0).astype(np.uint8)
    raise ProbeError(f"{what} are {values.dtype}; give uint8 grey levels 0-255 (uint16, "
                     f"booleans and floats in 0-1 convert with probes.to_grey)")


def to_grey(image: np.ndarray, what: str = "image") -> np.ndarray:
    """One image (H, W) or (H, W, C) with C = 2 (grey, alpha), 3 (RGB) or 4 (RGBA) as uint8
    grey levels (H, W): :func:`grey_levels` of each channel, then for colour the BT.709 luma
    ``0.2125 R + 0.7154 G + 0.0721 B`` (:data:`LUMA`) rounded to the nearest level; alpha is
    dropped (the colour under a transparent pixel is kept as it is).

    >>> rgb = np.zeros((1, 2, 3), np.uint8); rgb[0, 0] = (255, 0, 0); rgb[0, 1] = 255
    >>> to_grey(rgb).tolist()
    [[54, 255]]
    """
    image = grey_levels(image, what)
    if image.ndim == 2:
        return image
    if image.ndim != 3 or image.shape[-1] not in (2, 3, 4):
        raise ProbeError(f"{what} has shape {image.shape}; expected (H, W) grey or (H, W, C) "
                         f"with C = 2 (grey, alpha), 3 (RGB) or 4 (RGBA)")
    if image.shape[-1] == 2:
        return image[..., 0]
    luma = image[..., :3].astype(np.float64) @ np.array(LUMA)
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)


def write_arrays(out: str | os.PathLike, images, labels, masks: dict | None = None,
                 objects=None, *, name: str, target: str | None = None, base_index=None,
                 variants=None, names=None, params: dict | None = None,
                 source: str = "arrays given to probes.write_arrays",
                 force: bool = False) -> Path:
    """Write a user's images, labels and region masks as a probe file at ``out``.

    The file keeps the probe-file contract (:mod:`probes.contract`), so every densevis command
    reads it; it appears only when complete. The same inputs give the same bytes.

    Parameters
    ----------
    out : path
        Destination ``.h5`` file; its folder must exist.
    images : array (N, H, H) uint8
        Grey images, 0 = background. Colour, other depths: :func:`to_grey` per image.
    labels : array (N,)
        0 (negative) or 1 (positive: the class the model is trained to find).
    masks : dict, optional
        Region name (letters, digits, ``_``; e.g. ``"lesion"``) -> bool (N, H, H): where the
        region is in each image (empty where absent). Localization is scored on ``target``,
        the area-corrected mass (``<region>_mass``) on every region.
    objects : structured array or DataFrame, optional
        The objects table (the fields of :data:`probes.contract.OBJECT_DTYPE`: drawn squares,
        circles and lines, as the generated sets have); absent: an empty table (the edge and
        small-object analyses, the label rules ``edge``/``small`` and the training's hard-case
        weights then do not apply).
    name : str
        The set's name in every table (letters, digits, ``_ . -``; not a generated set's).
    target : str, optional
        The region localization is scored on; default: ``square`` when the masks have it (as
        the generated sets), else the only region when there is one
        (:func:`probes.contract.default_target`).
    base_index, variants : array (N,), optional
        Paired edits: each image's base image (-1: none) and its edit's name.
    names : sequence of str, optional
        Each image's source (a file name), kept as the dataset ``names``.
    params : dict, optional
        JSON-able notes on how the images were made (the ``params`` attribute).
    source : str
        Where the images came from (the ``source`` attribute).
    force : bool
        Overwrite an existing ``out``.

    Returns
    -------
    Path of the written file.

    Raises
    ------
    ProbeError
        Bad input, with the parameter it is about and how to fix it.
    """
    check_name(name)
    images = _images(images)
    count, size = images.shape[0], images.shape[1]
    labels = _labels(labels, count)
    if masks is not None and not isinstance(masks, dict):
        raise ProbeError(f"must be a dict of region name -> bool (N, H, H) mask (got "
                         f"{type(masks).__name__}), e.g. masks={{'lesion': lesion_masks}}",
                         parameter="masks")
    masks = {region: _mask(region, mask, images.shape) for region, mask in (masks or {}).items()}
    target = _target(target, masks)
    objects = _objects(objects, count)
    base_index, variants = _pairs(base_index, variants, count)
    names = None if names is None else _texts(names, count, "names")
    try:
        params_json = json.dumps(params or {}, sort_keys=True)
    except TypeError as exc:
        raise ProbeError(f"must be JSON-able ({exc})", parameter="params") from None
    path = check_output_path(out, force)
    rows = min(chunk_rows(size, 1), count)
    common = dict(compression="gzip", compression_opts=GZIP_LEVEL, track_times=False)
    plane = dict(chunks=(rows, size, size), **common)
    with atomic_output(path, force) as tmp:
        with writing_h5(tmp) as h5:
            attrs = {"format": FORMAT, "set": name, "source": source, "seed": NO_SEED,
                     "size": size, "units": count, "params": params_json,
                     "version": __version__}
            if target is not None:
                attrs["target"] = target
            if variants is not None:
                attrs["variants"] = json.dumps(list(dict.fromkeys(variants.astype(str))))
            h5.attrs.update(attrs)
            h5.create_dataset("images", data=images, **plane)
            for region, mask in masks.items():
                h5.create_dataset(f"masks/{region}", data=mask, fillvalue=False, **plane)
            vector = dict(chunks=(min(count, 1 << 16),), **common)
            h5.create_dataset("labels", data=labels, **vector)
            h5.create_dataset("base_index", data=base_index, **vector)
            if variants is not None:
                h5.create_dataset("variant", data=variants, **vector)
            if names is not None:
                h5.create_dataset("names", data=names, **vector)
            h5.create_dataset("objects", data=objects, maxshape=(None,), chunks=(4096,),
                              **common)
            check_h5(h5)
    return path


def check_name(name) -> str:
    """A set name for a user's file: a word (it names the file's rows in every table and a
    run's copy ``data/<name>.h5``), not the name of a generated set (whose hypotheses would
    read it as theirs)."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_.-" for c in name):
        raise ProbeError(f"must be a word of letters, digits, '_', '.' or '-' (got {name!r})",
                         parameter="name")
    if name in SETS:
        raise ProbeError(f"{name!r} is the name of a generated set, whose hypotheses would read "
                         f"these images as theirs; choose another", parameter="name")
    return name


def _images(images) -> np.ndarray:
    images = np.asarray(images)
    fix = None
    if images.dtype != np.uint8:
        fix = (f"are {images.dtype}; probe files hold uint8 grey levels 0-255: convert with "
               f"probes.grey_levels(images) (floats in 0-1, uint16, booleans)")
    elif images.ndim == 4 and images.shape[-1] in (2, 3, 4):
        fix = (f"have shape {images.shape}, colour channels last; probe files hold grey images "
               f"(N, H, H): convert with np.stack([probes.to_grey(image) for image in images])")
    elif images.ndim == 2:
        fix = f"have shape {images.shape}, one image; give a stack (N, H, H): images[None]"
    elif images.ndim != 3 or 0 in images.shape:
        fix = f"have shape {images.shape}; expected a stack of grey images (N, H, H)"
    elif images.shape[1] != images.shape[2]:
        fix = (f"are {images.shape[1]}x{images.shape[2]} px, not square; densevis models take "
               f"square images: crop or pad them to H x H")
    if fix:
        raise ProbeError(fix, parameter="images")
    return np.ascontiguousarray(images)


def _labels(labels, count: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise ProbeError(f"have shape {labels.shape}; expected one per image, ({count},)",
                         parameter="labels")
    if labels.dtype.kind not in "uib":
        raise ProbeError(f"are {labels.dtype}; give integers 0 or 1 "
                         f"(e.g. labels.astype(np.uint8))", parameter="labels")
    odd = np.flatnonzero((labels != 0) & (labels != 1))
    if len(odd):
        raise ProbeError(f"of image {odd[0]} is {labels[odd[0]]}; labels are 0 (negative) or 1 "
                         f"(positive)", parameter="labels")
    return labels.astype(np.uint8)


def _mask(region, mask, shape: tuple) -> np.ndarray:
    if not isinstance(region, str) or not REGION_NAME.fullmatch(region):
        raise ProbeError(f"region name {region!r} is not a word of letters, digits and '_' "
                         f"starting with a letter (it names the metric <region>_mass)",
                         parameter="masks")
    if region in DERIVED_REGIONS:
        raise ProbeError(f"region name {region!r} is taken: the analysis draws that region from "
                         f"the objects table; call it something else", parameter="masks")
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ProbeError(f"{region!r} has shape {mask.shape}; expected the images' {shape}",
                         parameter="masks")
    if mask.dtype != bool:
        raise ProbeError(f"{region!r} is {mask.dtype}; give booleans (e.g. mask != 0)",
                         parameter="masks")
    return np.ascontiguousarray(mask)


def _target(target, masks: dict) -> str | None:
    if target is None:
        target = default_target(masks)
        if target is None and masks:
            raise ProbeError(f"is needed: the masks hold {len(masks)} regions "
                             f"({', '.join(masks)}); name the one localization is scored on",
                             parameter="target")
        return target
    if target not in masks:
        raise ProbeError(f"{target!r} is not a region of the masks (regions: "
                         f"{', '.join(masks) or 'none'})", parameter="target")
    return target


def _objects(objects, count: int) -> np.ndarray:
    if objects is None:
        return np.zeros(0, OBJECT_DTYPE)
    if isinstance(objects, pd.DataFrame):
        missing = [field for field in OBJECT_DTYPE.names if field not in objects.columns]
        if missing:
            raise ProbeError(f"lack the columns {', '.join(missing)} (expected "
                             f"{', '.join(OBJECT_DTYPE.names)})", parameter="objects")
        columns = [np.array([str(k).encode("ascii") for k in objects["kind"]], dtype=bytes)
                   if field == "kind" else objects[field].to_numpy()
                   for field in OBJECT_DTYPE.names]
        objects = np.rec.fromarrays(columns, names=list(OBJECT_DTYPE.names))
    rows = np.asarray(objects)
    problem = objects_problem(rows, count)
    if problem:
        raise ProbeError(problem, parameter="objects")
    return rows[list(OBJECT_DTYPE.names)].astype(OBJECT_DTYPE)


def _pairs(base_index, variants, count: int) -> tuple[np.ndarray, np.ndarray | None]:
    if base_index is None:
        if variants is not None:
            raise ProbeError("need base_index: each edit's base image", parameter="variants")
        return np.full(count, -1, np.int64), None
    base_index = np.asarray(base_index)
    if base_index.shape != (count,) or base_index.dtype.kind not in "ui":
        raise ProbeError(f"must be {count} integers, one per image (got {base_index.dtype} "
                         f"{base_index.shape})", parameter="base_index")
    odd = np.flatnonzero((base_index < -1) | (base_index >= count))
    if len(odd):
        raise ProbeError(f"of image {odd[0]} is {base_index[odd[0]]}, not -1 or an image",
                         parameter="base_index")
    return base_index.astype(np.int64), (None if variants is None
                                         else _texts(variants, count, "variants"))


def _texts(values, count: int, parameter: str) -> np.ndarray:
    """``count`` strings as fixed-length UTF-8 bytes (reproducible, unlike variable-length)."""
    values = [str(v) for v in np.asarray(values, dtype=object).ravel()]
    if len(values) != count:
        raise ProbeError(f"must name each of the {count} images (got {len(values)})",
                         parameter=parameter)
    encoded = [v.encode("utf-8") for v in values]
    return np.array(encoded, dtype=f"S{max(1, max(map(len, encoded)))}")
