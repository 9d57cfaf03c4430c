"""Probe-set files, written: a streaming, reproducible HDF5 writer of the contract in
:mod:`probes.contract` (read back by :class:`probes.reader.ProbeSet`).

Determinism: unit ``u`` of a set is drawn from its own generator seeded by ``(seed, set, u)``, so
the bytes do not depend on how many worker processes render, and chunks are compressed with a
fixed zlib level and written whole (``write_direct_chunk``) in index order.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np
from tqdm.auto import tqdm

from .atomic import atomic_output, check_h5, check_output_path, writing_h5
from .contract import FORMAT, OBJECT_DTYPE
from .errors import ProbeError
from .params import STUDY_IMAGE_SIZE
from .pool import default_workers, new_pool, signals_deferred, stop_pool
from .scene import KINDS, draw_into
from .sets import get_set
from .version import __version__

GZIP_LEVEL = 1
H5_CHUNK_LIMIT = 2**32  # bytes: HDF5's largest chunk


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
    pool = new_pool(workers)  # workers only draw with numpy/skimage
    try:
        pending = collections.deque()
        for job in jobs:
            with signals_deferred():  # the first submit forks the workers
                pending.append(pool.submit(_render_chunk, job))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown()


def write_probe_set(out: str | os.PathLike, set_name: str, n: int, seed: int = 0,
                    size: int = STUDY_IMAGE_SIZE, params: dict | None = None, force: bool = False,
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
        Image side in pixels (default: the study's); geometry scales by ``size / 256``.
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
    >>> from probes import ProbeSet
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
            bar = progress_bar(total, f"generate {set_name}", progress)
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
                         f"chunk; use a smaller size ({STUDY_IMAGE_SIZE} is the original)",
                         parameter="size")
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


def progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar over ``total`` images, shown (when ``enabled``) on terminals only."""
    # disable=None: tqdm's "terminals only", so logs and tests stay clean
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
