"""Sharded explain and analyze: each rank computes its slice, rank 0 merges (see
:mod:`densevis.distributed` for ranks, devices and the agreement on failures).

explain
    Rank r writes the maps of its rows to ``OUT.shards/rows-START-STOP.h5`` (atomically, like
    every maps file), then rank 0 copies the shards into ``OUT`` (atomically) and removes
    ``OUT.shards``. The merged file equals a one-process run's: same datasets, same attributes
    but ``device`` (the device type) and ``world_size``. When a rank fails no ``OUT`` appears
    and the finished shards stay; the same command again reuses every shard whose recorded
    hashes and settings match (checkpoint, probe file, methods, layers, parameters, target,
    bf16, versions, device type, rows) and computes only the rest. ``OUT`` must be on a
    filesystem that every node sees.
analyze
    Rank r scores its rows of every maps file; the metric rows are gathered to rank 0 (over the
    process group: no shared filesystem needed) in the order of a one-process run, where the
    summary and the hypotheses are computed; :func:`analyze_into` (``densevis analyze``) has
    rank 0 write them. Nothing is written when a rank fails (the command is cheap next to
    explain: a rerun starts over).

Examples
--------
>>> shard_path("out/maps.h5", (0, 64)).as_posix()
'out/maps.h5.shards/rows-000000000-000000064.h5'
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from densevis.analysis.baselines import BASELINES
from densevis.analysis.replicates import evaluate_replicated
from densevis.analysis.tables import (analyze, check_outputs, match_files, score_maps,
                                      score_model, summarize, with_model, write_tables)
from densevis.distributed import (RankFailure, agree, init_process_group_for, is_main,
                                  main_only, rank_device, shard_ranges, stop, world_from_env)
from densevis.errors import DensevisError
from densevis.maps import MapsFile, MapsWriter
from densevis.model import model_file, resolve_device
from densevis.saliency.files import explain_file, prepare_explain
from probes import ProbeSet, file_sha256
from probes.atomic import check_output_path

#: Attributes that may differ between a shard and the run that reuses it (paths, exact GPU).
LOCAL_ATTRS = ("checkpoint", "probe", "device", "format", "image_size", "shard_rows",
               "shard_of", "world_size")
#: Memory for the rows copied at once while merging.
MERGE_BYTES = 256 << 20


def shard_folder(out) -> Path:
    """Where the shards of maps file ``out`` are written: ``OUT.shards`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".shards")


def shard_path(out, rows: tuple[int, int]) -> Path:
    """The shard of probe rows ``rows`` = ``(start, stop)`` of maps file ``out``."""
    return shard_folder(out) / f"rows-{rows[0]:09d}-{rows[1]:09d}.h5"


def fingerprint(attrs: dict) -> dict:
    """What a shard must share with a run to be reused: the attributes but paths and the exact
    device (its type counts), in one canonical form for values read back from HDF5."""
    kept = {key: json.dumps(value, sort_keys=True) for key, value in attrs.items()
            if key not in LOCAL_ATTRS}
    return {**kept, "device_type": str(attrs.get("device", "")).split(":")[0]}


def finished(path: Path, attrs: dict, rows: tuple[int, int]) -> bool:
    """Whether ``path`` is a complete shard of ``rows`` made with these settings."""
    if not path.is_file():
        return False
    try:
        with MapsFile(path) as shard:
            return len(shard) == rows[1] - rows[0] and \
                shard.attrs.get("shard_rows") == list(rows) and \
                fingerprint(shard.attrs) == fingerprint(attrs)
    except DensevisError:  # unreadable: computed again
        return False


def explain_sharded(checkpoint, data, out, methods="panel", layers="all", params=None,
                    method_layers=None, device: str = "auto", batch_size: int = 32,
                    chunk_size: int = 64, bf16: bool = False, target="label",
                    force: bool = False, progress: bool = True) -> Path:
    """:func:`~densevis.saliency.files.explain_file` over every rank of the run (the same call
    on each), merged into ``out``; in a plain run exactly ``explain_file``. Returns ``out`` on
    every rank once it is complete.

    Raises
    ------
    RankInputError, RankFailure
        On every rank when one failed (see :func:`densevis.distributed.agree`).
    """
    world = world_from_env()
    options = dict(methods=methods, layers=layers, params=params, method_layers=method_layers,
                   batch_size=batch_size, chunk_size=chunk_size, bf16=bf16, target=target)
    if not world.sharded:
        return explain_file(checkpoint, data, out, device=device, force=force,
                            progress=progress, **options)
    init_process_group_for(device, world)
    out, folder = Path(out), shard_folder(out)
    hint = (f"no merged file was written; finished shards are kept in {folder} and the same "
            f"command again resumes from them")

    def look() -> tuple:
        check_output_path(out, force, inputs=(model_file(checkpoint), data))
        with ProbeSet(data) as probe:
            count = len(probe)
        if not count:
            raise DensevisError(f"probe file {data} holds no images; nothing to explain")
        # hashed once (rank 0): the others only read their rows
        return file_sha256(data) if world.rank == 0 else None, os.path.getsize(data), count
    seen = agree("setup", look)
    probe_sha256, size, count = seen[0]
    odd = [rank for rank, (_, s, n) in enumerate(seen) if (s, n) != (size, count)]
    if odd:
        raise stop(f"rank {odd[0]} sees another probe file at {data} ({seen[odd[0]][1]} bytes) "
                   f"than rank 0 ({size} bytes); every node needs the same files at the same "
                   f"paths")
    jobs = {}

    def prepare() -> dict:
        jobs["job"] = prepare_explain(checkpoint, data, device=rank_device(device, world),
                                      progress=progress and world.rank == 0,
                                      probe_sha256=probe_sha256, **options)
        return fingerprint(jobs["job"].attrs)
    prints = agree("setup", prepare)
    for rank, other in enumerate(prints):
        differs = sorted(key for key in prints[0] if other.get(key) != prints[0][key])
        if differs:
            raise stop(f"rank {rank} would compute other maps than rank 0 ({', '.join(differs)} "
                       f"differ); every node needs the same checkpoint, data and densevis")
    job = jobs["job"]
    ranges = shard_ranges(count, world.size, align=batch_size)
    mine = ranges[world.rank]

    def compute() -> str:
        with job.probe:
            if mine[0] == mine[1]:
                return "empty"
            folder.mkdir(exist_ok=True)
            path = shard_path(out, mine)
            if finished(path, job.attrs, mine):
                return "reused"
            job.write(path, mine, force=True)
            return "computed"
    try:
        done = agree("explain", compute, hint)
    except RankFailure:
        if world.rank == 0 and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()  # no shard finished: nothing to resume from
        raise

    def merge() -> None:
        if world.rank != 0:
            return
        shards = [(shard_path(out, rows), rows) for rows in ranges if rows[0] < rows[1]]
        unseen = [str(path) for path, _ in shards if not path.is_file()]
        if unseen:
            raise DensevisError(f"shard {unseen[0]} is not visible on rank 0: --out must be on "
                                f"a filesystem that every node sees")
        attrs = {**job.attrs, "device": job.device.type, "world_size": world.size}
        merge_maps(shards, out, count, attrs, force=force)
        shutil.rmtree(folder, ignore_errors=True)
        reused = done.count("reused")
        if reused and progress:
            print(f"densevis: resumed {out}: {reused} of {len(shards)} shards reused from an "
                  f"earlier run", file=sys.stderr)
    agree("merge", merge, hint, values=None)
    return out


def merge_maps(shards: list, out, count: int, attrs: dict, force: bool = False) -> Path:
    """Copy shards ``[(path, (start, stop)), ...]`` covering rows ``0..count`` in order into
    one maps file ``out`` (atomically) with attributes ``attrs``; chunk by chunk, so memory
    stays bounded (:data:`MERGE_BYTES`)."""
    readers = []
    try:
        for path, _ in shards:
            readers.append(MapsFile(path))
        keys = readers[0].keys
        side = int(readers[0].attrs["image_size"])
        classes = readers[0].logits.shape[1]
        expected = 0
        for (path, (start, stop_)), shard in zip(shards, readers):
            if start != expected or len(shard) != stop_ - start or shard.keys != keys:
                raise DensevisError(f"shard {path} does not continue the shards before it "
                                    f"(rows {start}..{stop_}, {len(shard)} rows); delete "
                                    f"{Path(path).parent} and run again")
            expected = stop_
        if expected != count:
            raise DensevisError(f"the shards cover rows 0..{expected}, not 0..{count}")
        block = max(1, MERGE_BYTES // (4 * side * side * max(1, len(keys))))
        with MapsWriter(out, count, side, classes, keys, attrs, force=force) as writer:
            for (_, (start, stop_)), shard in zip(shards, readers):
                logits, targets, index = shard.logits, shard.targets, shard.index
                for first in range(0, stop_ - start, block):
                    rows = slice(first, min(first + block, stop_ - start))
                    writer.write(start + first, {key: shard.read(*key, index=rows)
                                                 for key in keys},
                                 logits[rows], targets[rows], index[rows])
    finally:
        for reader in readers:
            reader.close()
    return Path(out)


def metrics_sharded(maps_paths, data_paths, reductions=None, baselines=None,
                    batch_size: int = 128, device="auto", seed: int = 0,
                    only_baselines: bool = False):
    """The metrics table of :func:`densevis.analysis.tables.analyze` (rows in the same order),
    each rank scoring its rows of every maps file. Returned on rank 0; ``None`` on the others.
    In a plain run: the same table, computed here. ``only_baselines``: the rows of the null
    baselines alone (they depend on the maps files' layers, not on their maps)."""
    world = world_from_env()
    baselines = BASELINES if baselines is None else tuple(baselines)
    if batch_size < 1:
        raise DensevisError(f"must be positive (got {batch_size})", parameter="batch_size")
    init_process_group_for(device, world)

    def hashes() -> dict:  # rank 0 reads the probe files whole, the others their rows only
        return {str(path): file_sha256(path) for path in data_paths} if world.rank == 0 else {}
    known = agree("setup", hashes)[0] if world.sharded else None

    def score() -> tuple:
        where = rank_device(device, world) if world.sharded else resolve_device(str(device))
        pairs = match_files(maps_paths, data_paths, hashes=known)
        try:
            parts, model = [], []
            for maps, probe in pairs:
                rows = shard_ranges(len(maps), world.size, align=batch_size)[world.rank]
                parts.append(score_maps(maps, probe, reductions, baselines, batch_size, where,
                                        seed, rows, only_baselines)
                             if rows[0] < rows[1] else None)
                model.append(score_model(maps, probe) if world.rank == 0 and not only_baselines
                             else None)
            return parts, model
        finally:
            for maps, probe in pairs:
                maps.close()
                probe.close()
    gathered = agree("analyze", score, values="main")
    if world.rank != 0:
        return None
    frames = []
    for number in range(len(maps_paths)):
        frames += [parts[number] for parts, _ in gathered if parts[number] is not None]
        if gathered[0][1][number] is not None:
            frames.append(gathered[0][1][number])
    return pd.concat(frames, ignore_index=True)


def analyze_sharded(maps_paths, data_paths, reductions=None, baselines=None,
                    batch_size: int = 128, device="auto", seed: int = 0, hypotheses=None,
                    similarity=None, model: str = "model"):
    """:func:`densevis.analysis.tables.analyze` over every rank of the run: the tables on
    rank 0 (equal to a one-process run's), ``None`` on the others."""
    baselines = BASELINES if baselines is None else tuple(baselines)
    if not world_from_env().sharded:
        return analyze(maps_paths, data_paths, reductions, baselines, batch_size,
                       resolve_device(str(device)), seed, hypotheses, similarity, model)
    metrics = metrics_sharded(maps_paths, data_paths, reductions, baselines, batch_size, device,
                              seed)
    metrics = None if metrics is None else with_model(metrics, model)
    tables = {}

    def conclude() -> None:
        if metrics is not None:
            tables.update(metrics=metrics, summary=summarize(metrics),
                          hypotheses=evaluate_replicated(metrics, similarity, hypotheses,
                                                         default_model=model))
    agree("hypotheses", conclude, values=None)
    return tables or None


def analyze_into(out, maps_paths, data_paths, force: bool = False, reductions=None,
                 baselines=None, batch_size: int = 128, device="auto", seed: int = 0,
                 hypotheses=None, similarity=None, model: str = "model"):
    """:func:`analyze_sharded` whose tables rank 0 writes into folder ``out``, all or none
    (:func:`densevis.analysis.tables.write_tables`); the outputs are checked on rank 0 before
    any work. Under torchrun the process group is joined first.

    Returns
    -------
    (tables, paths) or None
        The tables and the files written, on rank 0; ``None`` on the others.
    """
    init_process_group_for(device)
    main_only("setup", lambda: check_outputs(out, force))
    tables = analyze_sharded(maps_paths, data_paths, reductions, baselines, batch_size, device,
                             seed, hypotheses, similarity, model)
    paths = main_only("write", lambda: write_tables(out, tables, force=force))
    return (tables, paths) if is_main() else None
