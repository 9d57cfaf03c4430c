"""A run folder: the tables as CSV, the probe sets analysed (``data/<set>.h5``), figures,
``report.html`` and ``provenance.json``.

The folder is written under a temporary name and renamed when complete; its name is new for
every run (``<spec name>-<date>-<time>[-k]``, claimed exclusively: two runs finishing in the same
second get two folders), so a finished run is never overwritten.

The report reads a finished run through :class:`FinishedRun` (tables, files, stage times and
devices), which the experiment runner builds: nothing here knows how the stages ran.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy
import pandas as pd
import scipy
import skimage
import torch
import torchvision

from densevis import __version__
from densevis.analysis.tables import RUN_TABLES
from densevis.maps import MapsFile
from densevis.model import preprocess, resolve_device, torch_threads
from densevis.report.html import Figure, Section, png_of
from densevis.report.model_figures import map_figures
from densevis.report.sections import report_page
from densevis.saliency.figures import gradient_panel, layer_grid
from densevis.saliency.methods import GROUPS
from probes import ProbeSet, file_sha256
from probes.atomic import (os_error_reason, output_error, publish_folder, remove_stale_temps,
                           temp_path)

#: The run folder's copies of the probe sets analysed (``<set>.h5``).
RUN_DATA = "data"


@dataclass(frozen=True)
class ModelFiles:
    """One model (replicate) of a run as the report shows and records it."""

    label: str  # its name in the tables' ``model`` column
    seed: int  # its training seed
    trained: bool  # False for a given checkpoint
    checkpoint: Path
    shuffled_checkpoint: Path | None  # its data-randomization model, if any
    maps: dict[str, Path]  # probe set -> maps file
    val_data: str  # the data role of its held-out images (the sanity figure's images)
    name: str = ""  # the model's name: its config, torchvision arch or factory
    source: Any = None  # what loads it (densevis.model.ModelSource); None: the checkpoint


@dataclass(frozen=True)
class FinishedRun:
    """Everything the run folder is made of, built by :mod:`densevis.experiment.runner`.

    ``spec`` is the run's :class:`~densevis.experiment.spec.ExperimentSpec`, read as data
    (recorded whole in provenance.json); ``data`` maps each data role (a probe set's name, or a
    training role such as ``train``) to its probe file; ``seconds`` and ``cached`` are per
    stage; ``devices`` names the device each kind of work ran on (``saliency``, ``train``).
    """

    spec: Any
    out: Path  # the output folder: cache entries are recorded relative to it
    tables: dict[str, pd.DataFrame]
    data: dict[str, Path]
    models: list[ModelFiles]
    seconds: dict[str, float]
    cached: dict[str, bool]
    devices: dict[str, str]
    processes: int


def run_dir_names(out: Path, stem: str) -> Iterator[Path]:
    """``OUT/STEM``, then ``OUT/STEM-1``, ``OUT/STEM-2``...: the names a run folder may take."""
    yield out / stem
    for k in itertools.count(1):
        yield out / f"{stem}-{k}"


def versions() -> dict:
    return {"densevis": __version__, "python": platform.python_version(), "torch":
            torch.__version__, "torchvision": torchvision.__version__, "numpy":
            numpy.__version__, "scipy": scipy.__version__, "pandas": pd.__version__, "h5py":
            h5py.__version__, "scikit-image": skimage.__version__,
            "platform": platform.platform()}


def provenance(run: FinishedRun, run_dir: Path) -> dict:
    """The run's record: spec, seeds, versions, the devices used, stage times and every file
    it read or made, each ``{path, relative_to, sha256}``.

    No path is absolute. The probe sets analysed (``data/<set>``) are the copies in the run
    folder ``run_dir`` (``data/<set>.h5``, ``relative_to: "run"``: the files metrics.csv's
    ``set`` and ``image`` point into); cache entries (checkpoints, maps, training and
    validation data) are relative to the output folder (``relative_to: "out"``), and so is a
    given checkpoint kept elsewhere (a path from the output folder to it). The spec's source
    is its file name (the run folder's spec.toml is its copy).
    """
    out, spec = run.out, run.spec
    files = {}
    for role, path in run.data.items():
        if role in spec.probes.sets:
            copy = Path(RUN_DATA) / f"{role}.h5"
            files[f"data/{role}"] = {"path": copy.as_posix(), "relative_to": "run",
                                     "sha256": file_sha256(run_dir / copy)}
        else:
            files[f"training_data/{role}"] = _cache_entry(path, out)
    for model in run.models:
        files.update({f"maps/{model.label}/{name}": _cache_entry(path, out)
                      for name, path in model.maps.items()})
        files[f"checkpoint/{model.label}"] = _cache_entry(model.checkpoint, out)
        if model.shuffled_checkpoint:
            files[f"checkpoint_shuffled_labels/{model.label}"] = \
                _cache_entry(model.shuffled_checkpoint, out)
    record = dataclasses.asdict(spec)
    record["source"] = Path(spec.source).name
    for key in ("checkpoint", "weights"):  # given models' files
        record["model"][key] = [_relative(path, out) if Path(path).is_absolute() else path
                                for path in getattr(spec.model, key)]
    layers = []
    if run.models and run.models[0].maps:
        with MapsFile(next(iter(run.models[0].maps.values()))) as maps:
            layers = list(maps.attrs.get("layers", []))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "layers": layers,  # network (forward) order: the report orders layers by it
        "spec": record,
        "models": [{"model": m.label, "name": m.name, "seed": m.seed,
                    "checkpoint": files[f"checkpoint/{m.label}"]["path"]}
                   for m in run.models],
        "seeds": {"data": spec.data.seed,
                  "models": [m.seed for m in run.models if m.trained],
                  "analysis": spec.analysis.seed},
        "versions": versions(),
        # threads: of each model's work (the run's devices say so), else this process's
        "device": {"threads": torch.get_num_threads(), **run.devices,
                   "processes": run.processes},
        "files": files,
        "stages": {name: {"seconds": round(run.seconds[name], 2),
                          "cached": run.cached[name]} for name in run.seconds},
    }


def _relative(path, out: Path) -> str:
    """``path`` relative to the output folder ``out`` (its file name where no relative path
    leads there, as across Windows drives)."""
    try:
        return Path(os.path.relpath(path, out)).as_posix()
    except ValueError:
        return Path(path).name


def _cache_entry(path, out: Path) -> dict:
    return {"path": _relative(path, out), "relative_to": "out", "sha256": file_sha256(path)}


def _panels(run: FinishedRun, limit: int) -> list[Figure]:
    figures = []
    first = run.models[0]  # the panels show one model's maps
    for name, path in first.maps.items():
        with MapsFile(path) as maps, ProbeSet(run.data[name]) as probe:
            order = {layer: i for i, layer in enumerate(maps.attrs.get("layers", []))}
            for row in range(min(limit, len(maps))):
                index = int(maps.index[row])
                image = probe.images[index]
                caption = f"{name}, image {index} (label {int(probe.labels[index])}, target " \
                          f"{int(maps.targets[row])}, model {first.label})"
                for method in (m for m in GROUPS["panel"] if m in maps.methods):
                    layers = sorted(maps.layers(method), key=lambda l: order.get(l, len(order)))
                    if layers:
                        fig = layer_grid(image, {l: maps.read(method, l, row) for l in layers},
                                         f"{method}: {caption}")
                    else:
                        fig = gradient_panel(image, preprocess(image[None])[0, 0].numpy(),
                                             maps.read(method, None, row), f"{method}: {caption}")
                    figures.append(Figure(png_of(fig, tight=False),
                                          f"the original study's panel, {method} — {caption}"))
    return figures


def _map_figures(run: FinishedRun, record: dict) -> dict[str, list[Figure]]:
    """The report's figures of saliency maps, drawn from the first model: per probe set a grid of
    typical and misclassified images explaining the square logit, the ``pairs`` strip, the
    cascading-randomization grid (on the images and weights the sanity check scored) and the
    original study's panels (from the run's maps files)."""
    spec = run.spec
    first = run.models[0]
    sets = list(spec.probes.sets)
    data = {name: run.data[name] for name in sets} | {"val": run.data[first.val_data]}
    layers = record.get("layers") or []
    layer = "denseblock3" if "denseblock3" in layers or not layers else layers[-1]
    with torch_threads(1):  # drawn in a forked worker (sections.drawn)
        found = map_figures(first.source or first.checkpoint, data, sets, layer=layer,
                            device=resolve_device(spec.saliency.device),
                            seed=spec.analysis.seed, sanity_set="val")
        figures = {key: [Figure(png, caption) for png, caption in pairs]
                   for key, pairs in found.items()}
        figures["panels"] = _panels(run, spec.outputs.panels_per_set)
    return figures


def _save_figures(parts: list[Section], folder: Path) -> None:
    """Every figure of the report also as a PNG file, numbered in report order."""
    folder.mkdir()
    number = 0
    for part in parts:
        for figure in part.figures:
            number += 1
            slug = "".join(c if c.isalnum() else "-" for c in figure.caption.lower())[:60]
            (folder / f"{number:03d}-{slug.strip('-')}.png").write_bytes(figure.png)


def write_run(run: FinishedRun) -> Path:
    """Write the run folder of a finished run; returns its path."""
    out, spec = run.out, run.spec
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # the run folders of killed runs
    stem = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tmp = temp_path(out / stem)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name in RUN_TABLES:
            run.tables[name].to_csv(tmp / f"{name}.csv", index=False)
        (tmp / RUN_DATA).mkdir()
        for name in spec.probes.sets:  # what metrics.csv's set and image point into
            shutil.copyfile(run.data[name], tmp / RUN_DATA / f"{name}.h5")
        record = provenance(run, tmp)
        (tmp / "provenance.json").write_text(json.dumps(record, indent=2, default=str))
        if spec.source and Path(spec.source).is_file():
            shutil.copyfile(spec.source, tmp / "spec.toml")
        outputs = spec.outputs
        if outputs.figures or outputs.html:
            # drawn in a forked worker beside the other figures, but not from CUDA, which a
            # forked process cannot use
            maps = ({} if not outputs.figures else partial(_map_figures, run, record)
                    if resolve_device(spec.saliency.device).type == "cpu"
                    else _map_figures(run, record))
            page, parts, answers = report_page(f"densevis run: {spec.name}", run.tables,
                                               record, maps)
            (tmp / "answers.md").write_text(answers, encoding="utf-8")
            if outputs.figures:
                _save_figures(parts, tmp / "figures")
            if outputs.html:
                (tmp / "report.html").write_text(page, encoding="utf-8")
        # a name of its own even when another run of the spec finishes in the same second
        return publish_folder(tmp, run_dir_names(out, stem))
    except OSError as exc:
        if os_error_reason(exc) is None:
            raise
        raise output_error(out / stem, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
