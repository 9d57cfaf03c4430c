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
from .contract import DTYPES, FORMAT, OBJECT_DTYPE, REQUIRED
from .errors import ProbeError, first_line
from .scene import KINDS, Shape, footprint


class ProbeSet:
    """Lazy reader of a probe-set file; a map-style torch ``Dataset`` and a batch iterator.

    Opening checks the probe-file contract (types, shapes, labels, indices, the objects table);
    the pixels are read only when asked for, and a damaged chunk is then a one-line
    :class:`ProbeError`. The HDF5 handle is opened on first use in each process, so a
    ``ProbeSet`` can be handed to ``torch.utils.data.DataLoader`` workers.

    Parameters
    ----------
    path : path
        A file written by :func:`write_probe_set`.

    Attributes
    ----------
    name : str
        The set (``base``, ``pairs``, ...), from the file's ``set`` attribute.
    seed, size : int
    params : dict
    variants : tuple of str
        Names of the paired edits (``pairs`` only, else empty).

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
                                     f"create it with 'densevis generate SET --out {path}'")
        try:
            with h5py.File(self.path, "r") as h5:
                self._validate(h5)
                attrs = dict(h5.attrs)
                self._length, self.size = h5["images"].shape[0], h5["images"].shape[1]
                self.has_variants = "variant" in h5
        except OSError as exc:
            raise ProbeError(f"{self.path} is not a readable HDF5 file ({first_line(exc)}); "
                             f"regenerate it with 'densevis generate'") from None
        self.name = str(attrs["set"])
        self.seed = int(attrs["seed"])
        self.params = json.loads(attrs["params"])
        self.variants = tuple(json.loads(attrs["variants"])) if "variants" in attrs else ()
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def _validate(self, h5: h5py.File) -> None:
        """The probe-file contract, checked whole: what the file holds, of which types, shapes
        and value ranges. Everything but the pixels is read (labels, indices, objects: small)."""
        found = h5.attrs.get("format")
        if found != FORMAT:
            raise ProbeError(f"{self.path} is not a densevis probe file (format {found!r}, "
                             f"expected {FORMAT!r}); create one with 'densevis generate'")
        missing = [name for name in REQUIRED if name not in h5]
        missing += [f"attribute {name}" for name in ("set", "seed", "params")
                    if name not in h5.attrs]
        if missing:
            raise ProbeError(f"{self.path} lacks {', '.join(missing)}; regenerate it with "
                             f"'densevis generate'")
        bad = f"{self.path}: {{}}; the file breaks the probe-file contract: regenerate it with " \
              f"'densevis generate'"
        try:
            json.loads(h5.attrs["params"])
            int(h5.attrs["seed"])
        except (TypeError, ValueError):
            raise ProbeError(bad.format("attributes seed and params are not an integer and "
                                        "JSON")) from None
        images = h5["images"].shape
        if len(images) != 3 or images[1] != images[2]:
            raise ProbeError(f"{self.path}: images have shape {images}, expected (N, H, H)")
        for name in REQUIRED[1:] + (("variant",) if "variant" in h5 else ()):
            if name == "objects":
                continue
            shape = h5[name].shape
            expected = images if name.startswith("masks/") else images[:1]
            if shape != expected:
                raise ProbeError(f"{self.path}: {name} has shape {shape}, expected {expected}; "
                                 f"the file is inconsistent, regenerate it")
        for name, (kinds, size, expected) in DTYPES.items():
            dtype = h5[name].dtype if name in h5 else None
            if dtype is not None and (dtype.kind not in kinds
                                      or size is not None and dtype.itemsize != size):
                raise ProbeError(bad.format(f"{name} are {dtype}, expected {expected}"))
        count = images[0]
        labels = h5["labels"][:]
        odd = np.flatnonzero((labels != 0) & (labels != 1))
        if len(odd):
            raise ProbeError(bad.format(f"image {odd[0]} has label {labels[odd[0]]}; labels "
                                        f"are 0 (no square) or 1"))
        base = h5["base_index"][:]
        odd = np.flatnonzero((base < -1) | (base >= count))
        if len(odd):
            raise ProbeError(bad.format(f"base_index of image {odd[0]} is {base[odd[0]]}, "
                                        f"not -1 or an image of the file"))
        self._validate_objects(h5["objects"], count, bad)

    @staticmethod
    def _validate_objects(table: h5py.Dataset, count: int, bad: str) -> None:
        fields = table.dtype.fields or {}
        wrong = [name for name in OBJECT_DTYPE.names if name not in fields
                 or fields[name][0].kind not in ("S" if name == "kind" else "uifb")]
        if wrong or table.ndim != 1:
            found = ", ".join(f"{name} {fields[name][0]}" if name in fields else f"no {name}"
                              for name in wrong) or f"{table.ndim} dimensions"
            raise ProbeError(bad.format(f"the objects table has {found}; expected fields "
                                        f"{', '.join(OBJECT_DTYPE.names)} with kind as text"))
        rows = table[:]
        images = rows["image"]
        odd = np.flatnonzero((images < 0) | (images >= count))
        if len(odd):
            raise ProbeError(bad.format(f"object {odd[0]} belongs to image {images[odd[0]]}, "
                                        f"not an image of the file"))
        kinds = set(np.unique(rows["kind"]).tolist()) - {k.encode() for k in KINDS}
        if kinds:
            raise ProbeError(bad.format(f"the objects table names kind "
                                        f"{sorted(kinds)[0].decode(errors='replace')!r}; "
                                        f"valid: {', '.join(KINDS)}"))

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

    def dataset(self, name: str) -> "CheckedDataset":
        """Dataset ``name`` of the file (``images``, ``masks/square``...), read lazily; a read
        that fails (a damaged chunk) is a one-line :class:`ProbeError`."""
        return CheckedDataset(self.h5[name], self.path)

    @property
    def images(self) -> "CheckedDataset":
        return self.dataset("images")

    @property
    def labels(self) -> "CheckedDataset":
        return self.dataset("labels")

    @property
    def base_index(self) -> "CheckedDataset":
        return self.dataset("base_index")

    def masks(self, kind: str) -> "CheckedDataset":
        if kind not in KINDS:
            raise ProbeError(f"unknown mask kind {kind!r}; valid: {', '.join(KINDS)}")
        return self.dataset(f"masks/{kind}")

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

        ``fields`` may name ``images``, ``labels``, ``base_index``, ``variant`` and ``masks/KIND``.
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
        """The objects table (optionally of some images only) with ``kind`` as text."""
        table = self.dataset("objects")
        if images is None:
            rows = table[:]
        else:
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
