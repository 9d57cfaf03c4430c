"""A run folder: the tables as CSV, the probe sets analysed (``data/<set>.h5``), figures,
``report.html`` and ``provenance.json``.

The folder is written under a temporary name and renamed when complete; its name is new for
every run (``<spec name>-<date>-<time>[-k]``, claimed exclusively: two runs finishing in the same
second get two folders), so a finished run is never overwritten.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Iterator

import pandas as pd

from densevis import __version__
from densevis.maps import MapsFile
from densevis.model import resolve_device
from densevis.report.panels import map_figures
from densevis.saliency.methods import GROUPS
from densevis.report.html import Figure, Section, png_of
from densevis.report.sections import report_page
from probes.atomic import (os_error_reason, output_error, publish_folder, remove_stale_temps,
                           temp_path)

#: Tables of a run folder (each ``<name>.csv``), in report order.
RUN_TABLES = ("hypotheses", "behaviour", "evaluation", "summary", "metrics", "sanity")
#: The run folder's copies of the probe sets analysed (``<set>.h5``).
RUN_DATA = "data"


def run_dir_names(out: Path, stem: str) -> Iterator[Path]:
    """``OUT/STEM``, then ``OUT/STEM-1``, ``OUT/STEM-2``...: the names a run folder may take."""
    yield out / stem
    for k in itertools.count(1):
        yield out / f"{stem}-{k}"


def versions() -> dict:
    import h5py
    import numpy
    import scipy
    import skimage
    import torch
    import torchvision

    return {"densevis": __version__, "python": platform.python_version(), "torch":
            torch.__version__, "torchvision": torchvision.__version__, "numpy":
            numpy.__version__, "scipy": scipy.__version__, "pandas": pd.__version__, "h5py":
            h5py.__version__, "scikit-image": skimage.__version__,
            "platform": platform.platform()}


def provenance(runner, run_dir: Path) -> dict:
    """The run's record: spec, seeds, versions, the devices used, stage times and every file
    it read or made, each ``{path, relative_to, sha256}``.

    No path is absolute. The probe sets analysed (``data/<set>``) are the copies in the run
    folder ``run_dir`` (``data/<set>.h5``, ``relative_to: "run"``: the files metrics.csv's
    ``set`` and ``image`` point into); cache entries (checkpoints, maps, training and
    validation data) are relative to the output folder (``relative_to: "out"``), and so is a
    given checkpoint kept elsewhere (a path from the output folder to it). The spec's source
    is its file name (the run folder's spec.toml is its copy).
    """
    import torch

    from densevis.experiment.steps import train_config
    from probes import file_sha256

    stages, out, spec = runner.stages, runner.out, runner.spec
    files = {}
    for role, path in stages.data.items():
        if role in spec.probes.sets:
            copy = Path(RUN_DATA) / f"{role}.h5"
            files[f"data/{role}"] = {"path": copy.as_posix(), "relative_to": "run",
                                     "sha256": file_sha256(run_dir / copy)}
        else:
            files[f"training_data/{role}"] = _cache_entry(path, out)
    for replicate in stages.replicates:
        files.update({f"maps/{replicate.label}/{name}": _cache_entry(path, out)
                      for name, path in replicate.maps.items()})
        files[f"checkpoint/{replicate.label}"] = _cache_entry(replicate.checkpoint, out)
        if replicate.shuffled_checkpoint:
            files[f"checkpoint_shuffled_labels/{replicate.label}"] = \
                _cache_entry(replicate.shuffled_checkpoint, out)
    devices = {"saliency": _device_used(spec.saliency.device)}  # evaluate, explain, analyze
    if any(r.given is None for r in stages.replicates):
        devices["train"] = _device_used(train_config(spec).device)
    record = dataclasses.asdict(spec)
    record["source"] = Path(spec.source).name
    record["model"]["checkpoint"] = [_relative(path, out) if Path(path).is_absolute() else path
                                     for path in spec.model.checkpoint]
    layers = []
    if stages.replicates and stages.replicates[0].maps:
        with MapsFile(next(iter(stages.replicates[0].maps.values()))) as maps:
            layers = list(maps.attrs.get("layers", []))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "layers": layers,  # network (forward) order: the report orders layers by it
        "spec": record,
        "models": [{"model": r.label, "seed": r.seed,
                    "checkpoint": files[f"checkpoint/{r.label}"]["path"]}
                   for r in stages.replicates],
        "seeds": {"data": spec.data.seed,
                  "models": [r.seed for r in stages.replicates if r.given is None],
                  "analysis": spec.analysis.seed},
        "versions": versions(),
        "device": {**devices, "threads": torch.get_num_threads(),
                   "processes": runner.world.size},
        "files": files,
        "stages": {name: {"seconds": round(stages.seconds[name], 2),
                          "cached": stages.cached[name]} for name in stages.seconds},
    }


def _relative(path, out: Path) -> str:
    """``path`` relative to the output folder ``out`` (its file name where no relative path
    leads there, as across Windows drives)."""
    try:
        return Path(os.path.relpath(path, out)).as_posix()
    except ValueError:
        return Path(path).name


def _cache_entry(path, out: Path) -> dict:
    from probes import file_sha256

    return {"path": _relative(path, out), "relative_to": "out", "sha256": file_sha256(path)}


def _device_used(requested: str) -> str:
    """The device ``requested`` ("auto", "cuda", ...) resolves to here, with its index."""
    import torch

    from densevis.model import resolve_device

    device = resolve_device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def _panels(runner, limit: int) -> list[Figure]:
    from densevis.model import preprocess
    from densevis.saliency.figures import gradient_panel, layer_grid
    from probes import ProbeSet

    figures = []
    first = runner.stages.replicates[0]  # the panels show one model's maps
    for name, path in first.maps.items():
        with MapsFile(path) as maps, ProbeSet(runner.stages.data[name]) as probe:
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


def _map_figures(runner, record: dict) -> dict[str, list[Figure]]:
    """The report's figures of saliency maps, drawn from the first model: per probe set a grid of
    typical and misclassified images explaining the square logit, the ``pairs`` strip, the
    cascading-randomization grid (on the images and weights the sanity check scored) and the
    original study's panels (from the run's maps files)."""
    spec, stages = runner.spec, runner.stages
    first = stages.replicates[0]
    sets = list(spec.probes.sets)
    data = {name: stages.data[name] for name in sets} | {"val": stages.data[first.roles["val"]]}
    layers = record.get("layers") or []
    layer = "denseblock3" if "denseblock3" in layers or not layers else layers[-1]
    found = map_figures(first.checkpoint, data, sets, layer=layer,
                        device=resolve_device(spec.saliency.device), seed=spec.analysis.seed,
                        sanity_set="val")
    figures = {key: [Figure(png, caption) for png, caption in pairs]
               for key, pairs in found.items()}
    figures["panels"] = _panels(runner, spec.outputs.panels_per_set)
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


def write_run(runner) -> Path:
    """Write the run folder of a finished runner; returns its path."""
    out = runner.out
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # the run folders of killed runs
    stem = f"{runner.spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    tmp = temp_path(out / stem)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tables = runner.stages.tables
        for name in RUN_TABLES:
            tables[name].to_csv(tmp / f"{name}.csv", index=False)
        (tmp / RUN_DATA).mkdir()
        for name in runner.spec.probes.sets:  # what metrics.csv's set and image point into
            shutil.copyfile(runner.stages.data[name], tmp / RUN_DATA / f"{name}.h5")
        record = provenance(runner, tmp)
        (tmp / "provenance.json").write_text(json.dumps(record, indent=2, default=str))
        if runner.spec.source and Path(runner.spec.source).is_file():
            shutil.copyfile(runner.spec.source, tmp / "spec.toml")
        outputs = runner.spec.outputs
        if outputs.figures or outputs.html:
            maps = _map_figures(runner, record) if outputs.figures else {}
            page, parts, answers = report_page(f"densevis run: {runner.spec.name}", tables,
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
