"""Probe-set files, read: :class:`ProbeSet`, a lazy reader that checks the contract of
:mod:`probes.contract` on opening, and the helpers readers of probe (and maps) files share.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pandas as pd

from .atomic import check_input_file
from .contract import (DERIVED_REGIONS, DTYPES, FORMAT, MASK_DTYPE, NEEDS, NO_SEED,
                       OBJECT_DTYPE, REQUIRED, REQUIRED_ATTRS, default_target, objects_problem,
                       ordered_regions)
from .errors import ProbeError, first_line
from .scene import Shape, footprint


#: How to get a valid probe file, the end of the reader's errors.
MAKE_ONE = ("regenerate it ('densevis generate') or write it again ('densevis import', "
            "probes.write_arrays)")


class ProbeSet:
    """Lazy reader of a probe-set file; a map-style torch ``Dataset`` and a batch iterator.

    Opening checks the probe-file contract (types, shapes, labels, indices, the objects table);
    the pixels are read only when asked for, and a damaged chunk is then a one-line
    :class:`ProbeError`. The HDF5 handle is opened on first use in each process, so a
    ``ProbeSet`` can be handed to ``torch.utils.data.DataLoader`` workers.

    Parameters
    ----------
    path : path
        A file written by :func:`write_probe_set` or :func:`write_arrays` (or any file that
        keeps the contract of :mod:`probes.contract`).

    Attributes
    ----------
    name : str
        The set (``base``, ``pairs``, ...), from the file's ``set`` attribute.
    seed, size : int
        The seed is -1 for imported images (:attr:`imported`).
    params : dict
    variants : tuple of str
        Names of the paired edits (``pairs`` only, else empty).
    regions : tuple of str
        The regions the file has a mask of (:func:`probes.contract.ordered_regions`).
    target : str or None
        The region localization is scored on (:func:`probes.contract.default_target` where
        the file records none).
    has_objects, has_variants : bool
        Whether the file has objects rows and paired variants.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from probes import write_probe_set
    >>> path = write_probe_set(pathlib.Path(tempfile.mkdtemp()) / "p.h5", "pairs", n=2, size=64)
    >>> probe = ProbeSet(path)
    >>> item = probe[3]
    >>> item["image"].shape, int(item["label"]), probe.variants[3]
    ((64, 64), 1, 'outline')
    >>> [batch["images"].shape for batch in probe.batches(10)]
    [(10, 64, 64), (6, 64, 64)]
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_input_file(path, "probe file",
                                     f"create it with 'densevis generate SET --out {path}' or "
                                     f"'densevis import FOLDER --out {path}'")
        try:
            with h5py.File(self.path, "r") as h5:
                self._validate(h5)
                attrs = dict(h5.attrs)
                self._length, self.size = h5["images"].shape[0], h5["images"].shape[1]
                self.has_variants = "variant" in h5
                self.has_objects = "objects" in h5 and h5["objects"].shape[0] > 0
                self.regions = ordered_regions(h5["masks"].keys() if "masks" in h5 else ())
        except OSError as exc:
            raise ProbeError(f"{self.path} is not a readable HDF5 file ({first_line(exc)}); "
                             f"{MAKE_ONE}") from None
        self.name = str(attrs["set"])
        self.seed = int(attrs["seed"])
        self.params = json.loads(attrs["params"])
        self.variants = tuple(json.loads(attrs["variants"])) if "variants" in attrs else ()
        self.target = str(attrs["target"]) if "target" in attrs else default_target(self.regions)
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    @property
    def imported(self) -> bool:
        """Whether the images were given (:func:`probes.write_arrays`, ``densevis import``),
        not drawn from a seed: the file's seed is :data:`probes.contract.NO_SEED`."""
        return self.seed == NO_SEED

    def missing(self, analysis: str, fix: str) -> ProbeError:
        """The error of an analysis whose parts this file lacks (``analysis``: a key of
        :data:`probes.contract.NEEDS`; ``fix``: what to do instead).

        >>> import tempfile, pathlib, numpy as np
        >>> from probes import write_arrays
        >>> path = write_arrays(pathlib.Path(tempfile.mkdtemp()) / "own.h5",
        ...                     np.zeros((2, 8, 8), np.uint8), [0, 1], name="own")
        >>> error = ProbeSet(path).missing("edge", "test it on the generated sets")
        >>> print(str(error).split(" lacks ")[1])  # doctest: +NORMALIZE_WHITESPACE
        objects rows of kind square (the generated sets have them), needed by the edge
        hypothesis (edge_interior_ratio); test it on the generated sets
        """
        what, parts = NEEDS[analysis]
        return ProbeError(f"{self.path} (set {self.name}) lacks {parts}, needed by {what}; "
                          f"{fix}")

    def _validate(self, h5: h5py.File) -> None:
        """The probe-file contract, checked whole: what the file holds, of which types, shapes
        and value ranges. Everything but the pixels is read (labels, indices, objects: small)."""
        found = h5.attrs.get("format")
        if found != FORMAT:
            raise ProbeError(f"{self.path} is not a densevis probe file (format {found!r}, "
                             f"expected {FORMAT!r}); {MAKE_ONE}")
        missing = [name for name in REQUIRED if name not in h5]
        missing += [f"attribute {name}" for name in REQUIRED_ATTRS if name not in h5.attrs]
        if "variant" in h5 and "base_index" not in h5:
            missing.append("base_index (a file with variant pairs its images by it)")
        if missing:
            raise ProbeError(f"{self.path} lacks {', '.join(missing)}; {MAKE_ONE}")
        bad = f"{self.path}: {{}}; the file breaks the probe-file contract: {MAKE_ONE}"
        try:
            json.loads(h5.attrs["params"])
            int(h5.attrs["seed"])
        except (TypeError, ValueError):
            raise ProbeError(bad.format("attributes seed and params are not an integer and "
                                        "JSON")) from None
        images = h5["images"].shape
        if len(images) != 3 or images[1] != images[2]:
            raise ProbeError(f"{self.path}: images have shape {images}, expected (N, H, H)")
        masks = h5["masks"] if "masks" in h5 else {}
        if masks and not isinstance(masks, h5py.Group):
            raise ProbeError(bad.format("masks is not a group of masks/<region> datasets"))
        taken = [region for region in masks if region in DERIVED_REGIONS]
        if taken:
            raise ProbeError(bad.format(f"it has a mask named {taken[0]!r}, a region the "
                                        f"analysis draws from the objects table"))
        checked = {f"masks/{region}": MASK_DTYPE for region in masks}
        checked.update((name, spec) for name, spec in DTYPES.items() if name in h5)
        for name, (kinds, size, expected) in checked.items():
            shape = h5[name].shape if isinstance(h5[name], h5py.Dataset) else None
            wanted = images if name == "images" or name.startswith("masks/") else images[:1]
            if shape != wanted:
                raise ProbeError(f"{self.path}: {name} has shape {shape}, expected {wanted}; "
                                 f"the file is inconsistent, make it again")
            dtype = h5[name].dtype
            if dtype.kind not in kinds or size is not None and dtype.itemsize != size:
                raise ProbeError(bad.format(f"{name} are {dtype}, expected {expected}"))
        if "target" in h5.attrs and f"masks/{h5.attrs['target']}" not in checked:
            raise ProbeError(bad.format(f"its target region {h5.attrs['target']!r} has no mask"
                                        f" (masks/{h5.attrs['target']})"))
        count = images[0]
        labels = h5["labels"][:]
        odd = np.flatnonzero((labels != 0) & (labels != 1))
        if len(odd):
            raise ProbeError(bad.format(f"image {odd[0]} has label {labels[odd[0]]}; labels "
                                        f"are 0 (no square) or 1"))
        if "base_index" in h5:
            base = h5["base_index"][:]
            odd = np.flatnonzero((base < -1) | (base >= count))
            if len(odd):
                raise ProbeError(bad.format(f"base_index of image {odd[0]} is {base[odd[0]]}, "
                                            f"not -1 or an image of the file"))
        if "objects" in h5:
            problem = objects_problem(h5["objects"][:], count)
            if problem:
                raise ProbeError(bad.format(problem))

    # -- handle management (one handle per process; pickles without it)
    @property
    def h5(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._h5

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5 = None

    def __enter__(self) -> "ProbeSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_h5": None, "_pid": None}

    def __repr__(self) -> str:
        return f"ProbeSet({str(self.path)!r}, set={self.name!r}, n={len(self)}, size={self.size})"

    # -- datasets (h5py datasets: slicing reads only what is asked)
    def __len__(self) -> int:
        return self._length

    def dataset(self, name: str) -> "CheckedDataset | np.ndarray":
        """Dataset ``name`` of the file (``images``, ``masks/square``...), read lazily; a read
        that fails (a damaged chunk) is a one-line :class:`ProbeError`. A file without
        ``base_index`` reads as -1 throughout (no image is paired); another dataset that the
        file lacks is a :class:`ProbeError`."""
        if name not in self.h5:
            if name == "base_index":
                return np.full(len(self), -1, np.int64)
            if name.startswith("masks/"):
                return self.masks(name[len("masks/"):])  # its error lists the regions
            raise ProbeError(f"{self.path} (set {self.name}) has no dataset {name!r} (see the "
                             f"probe-file contract, docs/DESIGN.md)")
        return CheckedDataset(self.h5[name], self.path)

    @property
    def images(self) -> "CheckedDataset":
        return self.dataset("images")

    @property
    def labels(self) -> "CheckedDataset":
        return self.dataset("labels")

    @property
    def base_index(self) -> "CheckedDataset | np.ndarray":
        return self.dataset("base_index")

    def masks(self, region: str) -> "CheckedDataset":
        """The bool (N, H, W) mask of ``region`` (one of :attr:`regions`)."""
        if region not in self.regions:
            raise ProbeError(f"{self.path} (set {self.name}) has no mask of region {region!r}; "
                             f"its regions: {', '.join(self.regions) or 'none'} (add one with "
                             f"'densevis import --masks' or probes.write_arrays(masks=...))")
        return CheckedDataset(self.h5[f"masks/{region}"], self.path)

    def image_names(self, index=slice(None)) -> np.ndarray | None:
        """Source names (file names) of images ``index`` as text, where the file records them
        (imported sets), else None."""
        if "names" not in self.h5:
            return None
        return np.char.decode(self.dataset("names")[index], "utf-8")

    def variant(self, index) -> np.ndarray:
        """Edit names of images ``index`` (``pairs`` only)."""
        if not self.has_variants:
            raise ProbeError(f"set {self.name!r} has no paired variants; only 'pairs' does")
        return self.dataset("variant")[index].astype(str)

    def __getitem__(self, index: int) -> dict:
        if not -len(self) <= index < len(self):
            raise IndexError(f"image {index} out of range for {len(self)} images")
        index = int(index) % len(self)
        return {"image": self.images[index], "label": int(self.labels[index]), "index": index}

    def batches(self, batch_size: int, fields: tuple[str, ...] = ("images", "labels"),
                start: int = 0, stop: int | None = None) -> Iterator[dict]:
        """Consecutive batches of ``fields`` as numpy arrays, plus their ``index``.

        ``fields`` may name ``images``, ``labels``, ``base_index``, ``variant`` and
        ``masks/REGION``.
        Only one batch is in memory at a time.
        """
        if batch_size < 1:
            raise ProbeError(f"batch size must be positive (got {batch_size})")
        stop = len(self) if stop is None else min(stop, len(self))
        for first in range(start, stop, batch_size):
            last = min(first + batch_size, stop)
            batch = {"index": np.arange(first, last)}
            for field in fields:
                batch[field] = self.dataset(field)[first:last]
            yield batch

    def objects(self, images=None) -> pd.DataFrame:
        """The objects table (optionally of some images only) with ``kind`` as text; empty
        (with the table's columns) where the file has none."""
        if "objects" not in self.h5:
            rows = np.zeros(0, OBJECT_DTYPE)
        elif images is None:
            rows = self.dataset("objects")[:]
        else:
            table = self.dataset("objects")
            image_column = table.fields("image")[:]
            wanted = np.isin(image_column, np.atleast_1d(images))
            rows = table[np.flatnonzero(wanted)] if wanted.any() else table[:0]
        frame = pd.DataFrame(rows)
        frame["kind"] = frame["kind"].str.decode("ascii") if len(frame) else frame["kind"]
        return frame

    def object_masks(self, image: int) -> tuple[pd.DataFrame, np.ndarray]:
        """The objects of one image and a bool (K, H, W) stack of their own footprints."""
        table = self.objects(image)
        stack = np.zeros((len(table), self.size, self.size), bool)
        for k, row in enumerate(table.itertuples(index=False)):
            rr, cc = footprint(shape_of(row), (self.size, self.size))
            stack[k, rr, cc] = True
        return table, stack


class CheckedDataset:
    """An h5py dataset of a probe or maps file whose failed reads (a damaged compressed chunk,
    an I/O error) raise one line naming the file, instead of HDF5's traceback; everything else
    (``shape``, ``dtype``, ``chunks``...) is the dataset's own."""

    def __init__(self, dataset: h5py.Dataset, path: Path):
        self._dataset, self._path = dataset, path

    def __getitem__(self, index):
        try:
            return self._dataset[index]
        except OSError as exc:
            raise ProbeError(f"{self._path}: cannot read {self._dataset.name.lstrip('/')} "
                             f"({first_line(exc)}); the file is damaged: make it again") from None

    def __len__(self) -> int:
        return len(self._dataset)

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)


def shape_of(row) -> Shape:
    """The :class:`Shape` of one ``objects`` row (a namedtuple or mapping)."""
    get = row.__getitem__ if isinstance(row, dict) else lambda key: getattr(row, key)
    kind = get("kind")
    return Shape(kind.decode() if isinstance(kind, bytes) else str(kind), float(get("cx")),
                 float(get("cy")), float(get("size")), bool(get("filled")),
                 float(get("thickness")), float(get("angle")), int(get("intensity")))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
