"""From maps files and probe files to the tidy tables: per-map metrics, summary and hypotheses.

``metrics``
    ``set, image, method, layer, reduction, metric, value, note``: one row per image, map (method
    and layer; ``layer`` empty for pixel methods) and metric. The null baselines are methods
    ``random``, ``sobel`` and ``center``; behaviour rows have method ``model`` (``logit_margin``,
    ``predicted_positive``, ``label``, and on ``pairs`` ``logit_delta_<variant>`` per scene).
    ``note`` says why a value is NaN (or infinite). Localization is scored on the probe file's
    target region (``square`` in the generated sets; ``probes.ProbeSet.target``), the
    area-corrected mass (``<region>_mass``) on each of its regions, the edge ratio and the
    smallest object's mass where the file has drawn objects (the generated sets).
``summary``
    Per ``set, method, layer, reduction, metric``: ``n`` rows, ``n_finite``, ``mean``, ``sd``,
    ``median`` and a 95% Student-t CI of the mean, over the finite values.
``hypotheses``
    :func:`densevis.analysis.hypotheses.evaluate` (with the sanity table when given).

Null baselines are scored at full resolution (``layer`` empty) and, for each layer whose maps
are at the layer's grid (``Method.resolution``; grids recorded by the maps file), pooled to that
grid and upsampled as the CAMs are (``layer`` = that layer): a coarse map is compared with what
a null map can show at its resolution.

Examples
--------
>>> import pandas as pd
>>> metrics = pd.DataFrame({"set": "base", "image": [0, 1, 2], "method": "vanilla", "layer": "",
...                         "reduction": "abs", "metric": "auroc", "value": [0.5, 0.75, 1.0],
...                         "note": ""})
>>> summarize(metrics)[["metric", "n", "mean", "median"]].values.tolist()
[['auroc', 3, 0.75, 0.75]]
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats

from densevis.analysis.baselines import BASELINES, baseline_maps
from densevis.analysis.cues import (behaviour_scores, edge_scores, edge_width, mass_scores,
                                    pair_deltas)
from densevis.analysis.hypothesis_context import at_layer_resolution
from densevis.analysis.hypothesis_registry import MODEL
from densevis.analysis.localization import localization_scores
from densevis.analysis.reduce import reduce_maps, reduction_for
from densevis.analysis.regions import RegionReader, read_rows
from densevis.analysis.replicates import evaluate_replicated
from densevis.analysis.scores import Scores
from densevis.errors import DensevisError
from densevis.maps import MapsFile, check_distinct
from densevis.saliency.methods import upsample
from probes import ProbeSet, file_sha256
from probes.atomic import atomic_output, check_output_folder, check_output_path

METRIC_COLUMNS = ["set", "image", "method", "layer", "reduction", "metric", "value", "note"]
#: Tables ``densevis analyze`` writes (each ``<name>.csv``).
ANALYZE_TABLES = ("metrics", "summary", "hypotheses")
#: Tables of a run folder (each ``<name>.csv``), in report order: the analyze tables and the
#: run's ``behaviour``, ``evaluation`` and ``sanity``.
RUN_TABLES = ("hypotheses", "behaviour", "evaluation", "summary", "metrics", "sanity")


def match_files(maps_paths, data_paths, hashes: dict | None = None
                ) -> list[tuple[MapsFile, ProbeSet]]:
    """Pair each maps file with the probe file it was computed from (by the recorded SHA-256).

    ``hashes`` maps ``str(path)`` of data files to their SHA-256 when already known (a sharded
    run hashes them once, on rank 0); the others are hashed here.

    Raises
    ------
    DensevisError
        A maps file records no probe hash, no ``--data`` file has it, or the pair disagrees on
        the set, the image size or the number of images.
    """
    check_distinct(maps_paths)  # each map once: no image counted twice
    probes = {}
    for path in data_paths:
        ProbeSet(path)  # validates the format with a clear message
        probes.setdefault((hashes or {}).get(str(path)) or file_sha256(path), Path(path))
    pairs = []
    for path in maps_paths:
        maps = MapsFile(path)
        recorded = maps.attrs.get("probe_sha256")
        if not isinstance(recorded, str):
            raise DensevisError(f"maps file {path} records no single probe file (attribute "
                                f"probe_sha256); recreate it with 'densevis explain'")
        if recorded not in probes:
            given = ", ".join(str(p) for p in probes.values()) or "none"
            raise DensevisError(
                f"maps file {path} was computed from probe file {maps.attrs.get('probe', '?')} "
                f"(set {maps.attrs.get('probe_set', '?')}, sha256 {recorded[:12]}...), which "
                f"matches none of the --data files ({given}); pass that probe file")
        probe = ProbeSet(probes[recorded])
        _check_pair(path, maps, probe)
        pairs.append((maps, probe))
    return pairs


def _check_pair(path, maps: MapsFile, probe: ProbeSet) -> None:
    recorded_set = maps.attrs.get("probe_set")
    if recorded_set is not None and recorded_set != probe.name:
        raise DensevisError(f"maps file {path} says set {recorded_set!r} but {probe.path} holds "
                            f"set {probe.name!r}; the files do not belong together")
    if not maps.keys:
        raise DensevisError(f"maps file {path} holds no maps; run 'densevis explain' again")
    size = maps.read(*maps.keys[0], index=slice(0, 1)).shape[-1]
    if size != probe.size:
        raise DensevisError(f"maps in {path} are {size}x{size} px but {probe.path} holds "
                            f"{probe.size}x{probe.size} px images; use the matching files")
    index = maps.index
    if len(index) > len(probe) or (len(index) and (index.min() < 0 or index.max() >= len(probe))):
        raise DensevisError(f"maps file {path} has {len(index)} rows indexing images "
                            f"{index.min()}..{index.max()}, but {probe.path} holds "
                            f"{len(probe)} images; the files do not match")


def long_rows(scores: Scores, set_name: str, images, method: str, layer: str,
              reduction: str) -> pd.DataFrame:
    """Tidy rows (:data:`METRIC_COLUMNS`) of one map's (or the model's) scores."""
    names = list(scores.values)
    images = np.asarray(images)
    count = len(images)
    return pd.DataFrame({
        "set": set_name, "image": np.tile(images, len(names)), "method": method, "layer": layer,
        "reduction": reduction, "metric": np.repeat(np.array(names, dtype=object), count),
        "value": np.concatenate([scores.values[m].cpu().numpy() for m in names]),
        "note": np.concatenate([scores.notes[m] for m in names]),
    }, columns=METRIC_COLUMNS)


def score_file(maps: MapsFile, probe: ProbeSet, reductions: dict | None = None,
               baselines=BASELINES, batch_size: int = 128, device="cpu",
               seed: int = 0) -> pd.DataFrame:
    """The metrics table of one maps file against its probe file (see the module docstring):
    :func:`score_maps` of every row, then :func:`score_model`."""
    return pd.concat([score_maps(maps, probe, reductions, baselines, batch_size, device, seed),
                      score_model(maps, probe)], ignore_index=True)


def score_maps(maps: MapsFile, probe: ProbeSet, reductions: dict | None = None,
               baselines=BASELINES, batch_size: int = 128, device="cpu", seed: int = 0,
               rows: tuple[int, int] | None = None,
               only_baselines: bool = False) -> pd.DataFrame:
    """Metric rows of every map (and null baseline) of maps-file rows ``rows`` = ``(start,
    stop)`` (default: all), in batches of ``batch_size`` rows from ``start``; only those rows
    of the maps and probe files are read. A sharded run gives each rank a slice whose start is
    a multiple of ``batch_size``: the batches, hence the rows, are those of one whole run.
    ``only_baselines``: the null baselines' rows alone (pooled to the maps' layer grids)."""
    device = torch.device(device)
    reader = RegionReader(probe)
    target = reader.target
    drawn_square = "square" in reader.kinds  # the edge ratio needs the squares' footprints
    mass_regions = list(reader.regions) + (["smallest_object"] if set(reader.kinds) - {"square"}
                                           else [])
    wanted = mass_regions + (["square_filled"] if drawn_square else [])
    width = edge_width(probe.size)
    index = maps.index
    first, last = (0, len(index)) if rows is None else rows
    computed = [name for name in baselines if (name, None) not in maps.keys]
    grids = baseline_grids(maps)
    frames = []

    def score(raw: torch.Tensor, method: str, layers: list[str], rule: str) -> None:
        reduced = reduce_maps(raw.to(device), rule)
        scores = Scores()
        if target is not None:
            scores.update(localization_scores(reduced, regions[target], region=target))
        if drawn_square:
            scores.update(edge_scores(reduced, regions["square_filled"], width))
        scores.update(mass_scores(reduced, {name: regions[name] for name in mass_regions}))
        if not scores.values:  # a file without regions (a user's images without masks)
            return
        frames.extend(long_rows(scores, probe.name, images, method, layer, rule)
                      for layer in layers)

    for start in range(first, last, batch_size):
        rows_ = slice(start, min(start + batch_size, last))
        images = index[rows_]
        regions = {name: torch.from_numpy(mask).to(device)
                   for name, mask in reader.read(images, wanted).items()}
        for method, layer in ([] if only_baselines else maps.keys):
            score(torch.from_numpy(maps.read(method, layer, rows_)), method, [layer or ""],
                  reduction_for(method, layer, reductions))
        pixels = read_rows(probe.images, images) if computed else None
        for name in computed:
            raw = baseline_maps(name, pixels, images, probe.name, seed)
            rule = reduction_for(name, None, reductions)
            score(raw, name, [""], rule)
            for grid, layers in grids.items():
                score(upsample(F.adaptive_avg_pool2d(raw[:, None], grid)[:, 0], raw.shape[-2:]),
                      name, layers, rule)
    return pd.concat(frames, ignore_index=True) if frames else \
        pd.DataFrame(columns=METRIC_COLUMNS).astype({"image": np.int64, "value": np.float64})


def baseline_grids(maps: MapsFile) -> dict[tuple[int, int], list[str]]:
    """The layers whose maps are at the layer's grid, grouped by that grid (recorded by the
    maps file as ``layer_grids``; files without it get full-resolution baselines only)."""
    recorded = maps.attrs.get("layer_grids") or {}
    grids: dict[tuple[int, int], list[str]] = {}
    for layer in sorted({layer for method, layer in maps.keys
                         if layer in recorded and at_layer_resolution(method)}):
        grids.setdefault(tuple(recorded[layer]), []).append(layer)
    return grids


def score_model(maps: MapsFile, probe: ProbeSet) -> pd.DataFrame:
    """The model's behaviour rows of every image (logit margin, prediction, label) and, on
    paired sets, the logit deltas of each edit against its base scene (these pair rows that
    a shard could split, so they are scored over the whole file)."""
    index = maps.index
    frames = []
    behaviour = behaviour_scores(torch.from_numpy(maps.logits))
    behaviour.add("label", torch.from_numpy(read_rows(probe.labels, index).astype(np.float64)))
    frames.append(long_rows(behaviour, probe.name, index, MODEL, "", ""))
    if probe.has_variants:
        variants = read_rows(probe.h5["variant"], index).astype(str)
        deltas = pair_deltas(behaviour.values["logit_margin"].numpy(), index,
                             read_rows(probe.base_index, index), variants)
        frames.append(deltas.assign(set=probe.name, method=MODEL, layer="", reduction="")
                      [METRIC_COLUMNS])
    return pd.concat(frames, ignore_index=True)


def summarize(metrics: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per model (when the table has that column), set, method, layer, reduction and metric:
    counts, mean, sd, median, t-CI of the mean."""
    keys = ["model"] * ("model" in metrics.columns) + ["set", "method", "layer", "reduction",
                                                       "metric"]
    finite = metrics.assign(value=metrics["value"].where(np.isfinite(metrics["value"])))
    grouped = finite.groupby(keys, sort=True, dropna=False)["value"]
    table = grouped.agg(n="size", n_finite="count", mean="mean", sd="std",
                        median="median").reset_index()
    half = stats.t.ppf(0.5 + level / 2, np.maximum(table["n_finite"] - 1, 1)) * \
        table["sd"] / np.sqrt(table["n_finite"])
    table["ci_low"], table["ci_high"] = table["mean"] - half, table["mean"] + half
    return table


def analyze(maps_paths, data_paths, reductions: dict | None = None, baselines=BASELINES,
            batch_size: int = 128, device="cpu", seed: int = 0, hypotheses=None,
            similarity: pd.DataFrame | None = None,
            model: str = "model") -> dict[str, pd.DataFrame]:
    """``{"metrics", "summary", "hypotheses"}`` tables of maps files (of one model, labelled
    ``model`` in the tables' ``model`` column) against their probe files; ``hypotheses`` (a
    list of :class:`~densevis.analysis.hypotheses.HypothesisSpec`, default: every registered
    one) are evaluated with the sanity ``similarity`` table when given, as one replicate
    (:func:`~densevis.analysis.replicates.evaluate_replicated`)."""
    if batch_size < 1:
        raise DensevisError(f"must be positive (got {batch_size})", parameter="batch_size")
    pairs = match_files(maps_paths, data_paths)
    try:
        frames = [score_file(maps, probe, reductions, baselines, batch_size, device, seed)
                  for maps, probe in pairs]
    finally:
        for maps, probe in pairs:
            maps.close()
            probe.close()
    metrics = with_model(pd.concat(frames, ignore_index=True), model)
    return {"metrics": metrics, "summary": summarize(metrics),
            "hypotheses": evaluate_replicated(metrics, similarity, hypotheses,
                                              default_model=model)}


def with_model(frame: pd.DataFrame, label: str) -> pd.DataFrame:
    """``frame`` with the replicate's ``model`` column first (the tables contract).

    >>> list(with_model(pd.DataFrame({"value": [1.0]}), "seed0").columns)
    ['model', 'value']
    """
    return pd.concat([pd.DataFrame({"model": [label] * len(frame)}, index=frame.index),
                      frame.drop(columns="model", errors="ignore")], axis=1)


def read_table(path) -> pd.DataFrame:
    """A table CSV (a file path) as written: empty text stays "" (a pixel method's layer), not
    NaN; a column of integers with empty cells (a count that some rows lack, as ``n`` on the
    hypotheses' ``overall`` rows) is nullable ``Int64``, not float, and one of True / False
    with empty cells nullable ``boolean``, not text."""
    frame = pd.read_csv(path)
    gaps = [column for column in frame.columns if _whole_with_gaps(frame[column])]
    if gaps:  # only the text tells a count ("3") from a float that happens to be whole ("3.0")
        text = pd.read_csv(path, usecols=gaps, dtype=str, keep_default_na=False)
        for column in gaps:
            written = text[column][text[column] != ""]
            if written.str.fullmatch(r"-?[0-9]+").all():
                frame[column] = frame[column].astype("Int64")
    for column in frame.columns:
        values = frame[column]
        present = values.dropna()
        if values.dtype == object and len(present) and \
                present.map(lambda v: isinstance(v, bool)).all():
            frame[column] = values.astype("boolean")
        elif not pd.api.types.is_numeric_dtype(values) or values.isna().all():
            frame[column] = values.astype(object).where(values.notna(), "").astype(str)
    return frame


def _whole_with_gaps(values: pd.Series) -> bool:
    """Floats with some NaN whose other values are all whole numbers (a candidate count)."""
    if values.dtype != np.float64:
        return False
    present = values.to_numpy()[~values.isna().to_numpy()]
    return 0 < len(present) < len(values) and bool(np.all(np.floor(present) == present))


#: Columns a sanity similarity table (:mod:`densevis.analysis.sanity`) must have.
SANITY_COLUMNS = ("test", "step", "step_index", "method", "layer", "image", "metric", "value")


def read_sanity(path) -> pd.DataFrame:
    """The similarity table of a run's ``sanity.csv``, checked."""
    path = Path(path)
    if not path.is_file():
        raise DensevisError(f"--sanity {path} not found; give the sanity.csv of a densevis run")
    try:
        table = read_table(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DensevisError(f"--sanity {path} is not a CSV table ({exc})") from None
    missing = [c for c in SANITY_COLUMNS if c not in table.columns]
    if missing:
        raise DensevisError(f"--sanity {path} lacks columns {', '.join(missing)}; give the "
                            f"sanity.csv of a densevis run")
    return table


def check_outputs(folder, force: bool) -> list[Path]:
    """The CSV paths in ``folder``, checked before any work (exists without force -> error)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DensevisError(f"--out {folder} is a file; give a folder")
    check_output_folder(folder)  # writable, or creatable where it is to be
    paths = [folder / f"{name}.csv" for name in ANALYZE_TABLES]
    if folder.is_dir():
        for path in paths:
            check_output_path(path, force)
    return paths


def write_tables(folder, tables: dict[str, pd.DataFrame], force: bool = False) -> list[Path]:
    """Write ``<name>.csv`` for each table; all appear together or none (temporary files)."""
    paths = check_outputs(folder, force)
    Path(folder).mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for path, name in zip(paths, ANALYZE_TABLES):
            tmp = stack.enter_context(atomic_output(path, force))
            tables[name].to_csv(tmp, index=False)
    return paths
