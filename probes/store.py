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
import itertools
import json
import multiprocessing
import os
import shutil
import signal
import zlib
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
import pandas as pd

from . import __version__
from .atomic import (atomic_output, check_h5, check_input_file, check_output_path,
                     writing_h5)
from .errors import ProbeError, first_line
from .scene import KINDS, Shape, draw_into, footprint
from .sets import get_set

FORMAT = "densevis-probes/1"
GZIP_LEVEL = 1
OBJECT_DTYPE = np.dtype([
    ("image", "<i8"), ("kind", "S6"), ("cx", "<f8"), ("cy", "<f8"), ("size", "<f8"),
    ("area", "<i8"), ("filled", "?"), ("thickness", "<f8"), ("angle", "<f8"),
    ("intensity", "u1")])
H5_CHUNK_LIMIT = 2**32  # bytes: HDF5's largest chunk
#: Dataset -> (numpy dtype kinds allowed, item size or None, what that means): a file of
#: another tool with float images in 0-1, say, would be read as nearly black uint8.
DTYPES = {"images": ("u", 1, "uint8 grey levels 0-255"), "labels": ("ui", None, "integers"),
          "base_index": ("i", None, "signed integers"), "variant": ("S", None, "text"),
          **{f"masks/{kind}": ("b", None, "booleans") for kind in KINDS}}
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


def _ordered_results(jobs: Iterator[tuple], count: int, workers: int) -> Iterator[dict]:
    """Results of ``_render_chunk`` for ``count`` jobs in order, at most ``2 * workers`` chunks
    in memory."""
    if workers <= 1 or count < 4:
        yield from map(_render_chunk, jobs)
        return
    # fork: workers only draw with numpy/skimage, and it works from scripts without a main guard
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context,
                                                  initializer=_worker_signals)
    try:
        pending = collections.deque()
        for job in jobs:
            pending.append(pool.submit(_render_chunk, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        # stopped (an error, Ctrl-C, SIGTERM, perhaps inside the pool's own machinery): the
        # chunks still rendering are not wanted, and waiting for them could wait forever
        for process in list((pool._processes or {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _worker_signals() -> None:
    """Ctrl-C and SIGTERM sent to the whole process group are the main process's to handle
    (it removes the half-written file and says so in one line): a rendering worker ignores
    Ctrl-C and dies quietly on SIGTERM, without a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


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
        raise ProbeError(f"must be a positive number of {'scenes' if spec.variants else 'images'}"
                         f" (got {n})", parameter="n")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ProbeError(f"must be a non-negative integer (got {seed})", parameter="seed")
    path = check_output_path(out, force)
    per_unit = spec.images_per_unit
    rows = min(chunk_rows(size, per_unit), n * per_unit)
    workers = workers_that_fit(rows, size, workers or default_workers())
    units_per_chunk = rows // per_unit
    starts = range(0, n, units_per_chunk)
    jobs = ((set_name, parsed, size, seed, start, min(start + units_per_chunk, n), rows)
            for start in starts)
    first = _render_chunk(next(jobs))  # its bytes tell what the whole file will take
    _check_disk(path, first, len(starts), n, spec)
    total = n * per_unit
    with atomic_output(path, force) as tmp:
        with writing_h5(tmp) as h5:
            _write_attrs(h5, spec, parsed, seed, size, n)
            datasets = _create_datasets(h5, spec, total, size, rows)
            bar = _progress(total, f"generate {set_name}", progress)
            results = itertools.chain([first], _ordered_results(jobs, len(starts) - 1, workers))
            for k, result in enumerate(results):
                _write_chunk(datasets, k * rows, result, spec.variants)
                check_h5(h5)  # a full disk stops the work here, not after the last chunk
                bar.update(len(result["labels"]))
            bar.close()
    return path


def workers_that_fit(rows: int, size: int, workers: int) -> int:
    """How many rendering processes fit in memory (each holds a chunk of images and masks);
    a chunk that does not fit at all is a one-line error before any work."""
    plane = rows * size * size  # bytes of one chunk of images (and of each kind of mask)
    chunk = plane * (1 + len(KINDS))
    memory = physical_memory()
    if chunk > memory // 2 or plane >= H5_CHUNK_LIMIT:
        raise ProbeError(f"is too large: a chunk of {rows} image{'s' * (rows > 1)} of "
                         f"{size}x{size} px with their masks takes {_bytes(chunk)}, more than "
                         f"half the memory of this machine ({_bytes(memory)}) or HDF5's 4 GiB per "
                         f"chunk; use a smaller size (256 is the original)", parameter="size")
    return max(1, min(workers, memory // (2 * chunk)))


def physical_memory() -> int:
    """Bytes of memory of this machine (the physical pages)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume plenty
        return 1 << 50


def _check_disk(path: Path, first: dict, chunks: int, n: int, spec) -> None:
    """Refuse, before writing, a file that the free space of its disk cannot hold, as
    estimated from its first chunk (compressed images and masks, labels, objects)."""
    chunk = len(first["images"]) + sum(len(m or b"") for m in first["masks"].values()) + \
        first["objects"].nbytes + 9 * len(first["labels"])
    needed = chunk * chunks
    free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
    if needed > free:
        raise ProbeError(f"is too large: {n} {'scenes' if spec.variants else 'images'} would "
                         f"take about {_bytes(needed)} but {path.parent} has {_bytes(free)} free; "
                         f"generate fewer or write to another disk", parameter="n")


def _bytes(count: float) -> str:
    """A byte count for people: ``"1.5 GiB"``."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024


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
        datasets["variant"] = h5.create_dataset("variant", dtype="S8", **vector)
    return datasets


def _write_chunk(datasets: dict, first: int, result: dict, variants: tuple = ()) -> None:
    datasets["images"].id.write_direct_chunk((first, 0, 0), result["images"])
    for kind, payload in result["masks"].items():
        if payload is not None:
            datasets["masks"][kind].id.write_direct_chunk((first, 0, 0), payload)
    stop = first + len(result["labels"])
    datasets["labels"][first:stop] = result["labels"]
    datasets["base_index"][first:stop] = result["base_index"]
    if variants:  # chunks hold whole units, so each starts with the first variant
        datasets["variant"][first:stop] = np.resize(np.array(variants, dtype="S8"),
                                                    stop - first)
    objects, table = result["objects"], datasets["objects"]
    if len(objects):
        table.resize((table.shape[0] + len(objects),))
        table[-len(objects):] = objects


# ----------------------------------------------------------------------------------------- reader
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
