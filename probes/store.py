"""Probe-set files: streaming, reproducible HDF5 writer and a lazy reader.

The file layout is the probe-set contract of ``shared/DESIGN.md``: ``images`` uint8 (N,H,W),
``labels`` uint8 (N,), ``masks/{square,circle,line}`` bool (N,H,W), ``objects`` (one row per drawn
object), ``base_index`` int64 (N,), and for ``pairs`` also ``variant`` (N,) naming each edit.

Determinism: unit ``u`` of a set is drawn from its own generator seeded by ``(seed, set, u)``, so
the bytes do not depend on how many worker processes render, and chunks are compressed with a
fixed zlib level and written whole (``write_direct_chunk``) in index order.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import zlib
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pandas as pd

from . import __version__
from .atomic import atomic_output, check_output_path
from .errors import ProbeError
from .scene import KINDS, Shape, draw_into, footprint
from .sets import get_set

FORMAT = "densevis-probes/1"
GZIP_LEVEL = 1
OBJECT_DTYPE = np.dtype([
    ("image", "<i8"), ("kind", "S6"), ("cx", "<f8"), ("cy", "<f8"), ("size", "<f8"),
    ("area", "<i8"), ("filled", "?"), ("thickness", "<f8"), ("angle", "<f8"),
    ("intensity", "u1")])
REQUIRED = ("images", "labels", "objects", "base_index") + tuple(f"masks/{k}" for k in KINDS)


def unit_rng(seed: int, set_name: str, unit: int) -> np.random.Generator:
    """The random generator of one unit: independent of every other unit, set and seed."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(set_name.encode()), unit]))


def chunk_rows(size: int, images_per_unit: int) -> int:
    """Images per HDF5 chunk: about 1 MiB of pixels, whole units only."""
    rows = int(np.clip((1 << 20) // (size * size), 1, 64))
    return max(images_per_unit, rows - rows % images_per_unit)


def _render_chunk(job: tuple) -> dict:
    """Render units ``[start, stop)`` into one chunk and compress it (runs in worker processes)."""
    set_name, params, size, seed, start, stop, rows = job
    spec = get_set(set_name)
    geometry = spec.geometry(size, params)
    per_unit = spec.images_per_unit
    images = np.zeros((rows, size, size), np.uint8)
    masks = {kind: np.zeros((rows, size, size), bool) for kind in KINDS}
    count = (stop - start) * per_unit
    labels = np.zeros(count, np.uint8)
    base_index = np.full(count, -1, np.int64)
    objects = []
    for unit in range(start, stop):
        scenes = spec.draw_unit(unit_rng(seed, set_name, unit), params, geometry)
        for variant, shapes in enumerate(scenes):
            local = (unit - start) * per_unit + variant
            index = unit * per_unit + variant
            areas = draw_into(shapes, images[local], {k: m[local] for k, m in masks.items()})
            labels[local] = any(shape.kind == "square" for shape in shapes)
            if spec.variants:
                base_index[local] = unit * per_unit
            objects.extend((index, s.kind, s.cx, s.cy, s.size, area, s.filled, s.thickness,
                            s.angle, s.intensity) for s, area in zip(shapes, areas))
    return {
        "images": zlib.compress(images.data, GZIP_LEVEL),
        # an all-false chunk is left unallocated: HDF5 reads its fill value, False
        "masks": {k: zlib.compress(m.data, GZIP_LEVEL) if m.any() else None
                  for k, m in masks.items()},
        "labels": labels, "base_index": base_index,
        "objects": np.array(objects, dtype=OBJECT_DTYPE),
    }


def _ordered_results(jobs: list[tuple], workers: int) -> Iterator[dict]:
    """Results of ``_render_chunk`` in job order, at most ``2 * workers`` chunks in memory."""
    if workers <= 1 or len(jobs) < 4:
        yield from map(_render_chunk, jobs)
        return
    # fork: workers only draw with numpy/skimage, and it works from scripts without a main guard
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.submit(_render_chunk, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_probe_set(out: str | os.PathLike, set_name: str, n: int, seed: int = 0,
                    size: int = 256, params: dict | None = None, force: bool = False,
                    workers: int | None = None, progress: bool = False) -> Path:
    """Generate ``n`` units of probe set ``set_name`` and write them to ``out``.

    A unit is one image, or for ``pairs`` the eight edits of one scene. The file appears only when
    complete; on any failure nothing is left at ``out``.

    Parameters
    ----------
    out : path
        Destination ``.h5`` file; its folder must exist.
    set_name : str
        A name from :data:`probes.SETS`.
    n : int
        Number of units (>= 1).
    seed : int
        Non-negative seed; same set, params, size and seed give identical datasets.
    size : int
        Image side in pixels; geometry scales by ``size / 256``.
    params : dict, optional
        Parameter overrides (``name -> value``; strings are parsed).
    force : bool
        Overwrite an existing ``out``.
    workers : int, optional
        Rendering processes (default: the CPUs available); the bytes do not depend on it.
    progress : bool
        Show a progress bar.

    Returns
    -------
    Path of the written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = write_probe_set(pathlib.Path(tempfile.mkdtemp()) / "b.h5", "base", n=4, size=64)
    >>> with ProbeSet(path) as probe:
    ...     len(probe), probe.images.shape
    (4, (4, 64, 64))
    """
    spec = get_set(set_name)
    parsed = spec.parse_params(params)
    spec.geometry(size, parsed)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ProbeError(f"--n must be a positive number of {'scenes' if spec.variants else 'images'}"
                         f" (got {n})")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ProbeError(f"--seed must be a non-negative integer (got {seed})")
    path = check_output_path(out, force)
    per_unit = spec.images_per_unit
    rows = min(chunk_rows(size, per_unit), n * per_unit)
    units_per_chunk = rows // per_unit
    jobs = [(set_name, parsed, size, seed, start, min(start + units_per_chunk, n), rows)
            for start in range(0, n, units_per_chunk)]
    total = n * per_unit
    with atomic_output(path, force) as tmp:
        with h5py.File(tmp, "w") as h5:
            _write_attrs(h5, spec, parsed, seed, size, n)
            datasets = _create_datasets(h5, spec, total, size, rows)
            bar = _progress(total, f"generate {set_name}", progress)
            for k, result in enumerate(_ordered_results(jobs, workers or default_workers())):
                _write_chunk(datasets, k * rows, result)
                bar.update(len(result["labels"]))
            bar.close()
    return path


def _progress(total: int, description: str, enabled: bool):
    from tqdm.auto import tqdm

    # None: shown on terminals only, so logs and tests stay clean
    return tqdm(total=total, desc=description, unit="img", disable=None if enabled else True,
                leave=False)


def _write_attrs(h5: h5py.File, spec, params, seed: int, size: int, n: int) -> None:
    h5.attrs["format"] = FORMAT
    h5.attrs["set"] = spec.name
    h5.attrs["description"] = spec.description
    h5.attrs["seed"] = int(seed)
    h5.attrs["size"] = int(size)
    h5.attrs["units"] = int(n)
    h5.attrs["params"] = json.dumps({f: getattr(params, f) for f in params.__dataclass_fields__},
                                    sort_keys=True)
    h5.attrs["version"] = __version__
    if spec.variants:
        h5.attrs["variants"] = json.dumps(list(spec.variants))


def _create_datasets(h5: h5py.File, spec, total: int, size: int, rows: int) -> dict:
    common = dict(compression="gzip", compression_opts=GZIP_LEVEL, track_times=False)
    plane = dict(shape=(total, size, size), chunks=(rows, size, size), **common)
    vector = dict(shape=(total,), chunks=(min(total, 1 << 16),), **common)
    datasets = {
        "images": h5.create_dataset("images", dtype="u1", **plane),
        "masks": {k: h5.create_dataset(f"masks/{k}", dtype=bool, fillvalue=False, **plane)
                  for k in KINDS},
        "labels": h5.create_dataset("labels", dtype="u1", **vector),
        "base_index": h5.create_dataset("base_index", dtype="<i8", **vector),
        "objects": h5.create_dataset("objects", shape=(0,), maxshape=(None,), chunks=(4096,),
                                     dtype=OBJECT_DTYPE, **common),
    }
    if spec.variants:
        variant = np.array(spec.variants, dtype="S8")[np.arange(total) % len(spec.variants)]
        h5.create_dataset("variant", data=variant, **vector)
    return datasets


def _write_chunk(datasets: dict, first: int, result: dict) -> None:
    datasets["images"].id.write_direct_chunk((first, 0, 0), result["images"])
    for kind, payload in result["masks"].items():
        if payload is not None:
            datasets["masks"][kind].id.write_direct_chunk((first, 0, 0), payload)
    stop = first + len(result["labels"])
    datasets["labels"][first:stop] = result["labels"]
    datasets["base_index"][first:stop] = result["base_index"]
    objects, table = result["objects"], datasets["objects"]
    if len(objects):
        table.resize((table.shape[0] + len(objects),))
        table[-len(objects):] = objects


# ----------------------------------------------------------------------------------------- reader
class ProbeSet:
    """Lazy reader of a probe-set file; a map-style torch ``Dataset`` and a batch iterator.

    Nothing is read until asked for; the HDF5 handle is opened on first use in each process, so a
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
    >>> path = write_probe_set(pathlib.Path(tempfile.mkdtemp()) / "p.h5", "pairs", n=2, size=64)
    >>> probe = ProbeSet(path)
    >>> item = probe[3]
    >>> item["image"].shape, int(item["label"]), probe.variants[3]
    ((64, 64), 1, 'outline')
    >>> [batch["images"].shape for batch in probe.batches(10)]
    [(10, 64, 64), (6, 64, 64)]
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise ProbeError(f"probe file {self.path} not found; create it with "
                             f"'densevis generate SET --out {self.path}'")
        try:
            with h5py.File(self.path, "r") as h5:
                self._validate(h5)
                attrs = dict(h5.attrs)
                self._length, self.size = h5["images"].shape[0], h5["images"].shape[1]
                self.has_variants = "variant" in h5
        except OSError as exc:
            raise ProbeError(f"{self.path} is not a readable HDF5 file ({exc}); regenerate it "
                             f"with 'densevis generate'") from None
        self.name = str(attrs["set"])
        self.seed = int(attrs["seed"])
        self.params = json.loads(attrs["params"])
        self.variants = tuple(json.loads(attrs["variants"])) if "variants" in attrs else ()
        self._h5: h5py.File | None = None
        self._pid: int | None = None

    def _validate(self, h5: h5py.File) -> None:
        found = h5.attrs.get("format")
        if found != FORMAT:
            raise ProbeError(f"{self.path} is not a densevis probe file (format {found!r}, "
                             f"expected {FORMAT!r}); create one with 'densevis generate'")
        missing = [name for name in REQUIRED if name not in h5]
        if missing:
            raise ProbeError(f"{self.path} lacks {', '.join(missing)}; regenerate it with "
                             f"'densevis generate'")
        images = h5["images"].shape
        if len(images) != 3 or images[1] != images[2]:
            raise ProbeError(f"{self.path}: images have shape {images}, expected (N, H, H)")
        for name in REQUIRED[1:]:
            if name == "objects":
                continue
            shape = h5[name].shape
            expected = images if name.startswith("masks/") else images[:1]
            if shape != expected:
                raise ProbeError(f"{self.path}: {name} has shape {shape}, expected {expected}; "
                                 f"the file is inconsistent, regenerate it")

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

    @property
    def images(self) -> h5py.Dataset:
        return self.h5["images"]

    @property
    def labels(self) -> h5py.Dataset:
        return self.h5["labels"]

    @property
    def base_index(self) -> h5py.Dataset:
        return self.h5["base_index"]

    def masks(self, kind: str) -> h5py.Dataset:
        if kind not in KINDS:
            raise ProbeError(f"unknown mask kind {kind!r}; valid: {', '.join(KINDS)}")
        return self.h5[f"masks/{kind}"]

    def variant(self, index) -> np.ndarray:
        """Edit names of images ``index`` (``pairs`` only)."""
        if not self.has_variants:
            raise ProbeError(f"set {self.name!r} has no paired variants; only 'pairs' does")
        return self.h5["variant"][index].astype(str)

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
                batch[field] = self.h5[field][first:last]
            yield batch

    def objects(self, images=None) -> pd.DataFrame:
        """The objects table (optionally of some images only) with ``kind`` as text."""
        table = self.h5["objects"]
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
