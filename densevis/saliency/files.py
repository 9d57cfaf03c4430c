"""Probe file in, maps file out: the engine over a whole probe set (or a slice), batch by batch.

:func:`explain_file` is the one call; :func:`prepare_explain` and :meth:`ExplainJob.write` split
it into checking the inputs and loading the model once, then writing the maps of some rows (a
shard, see :mod:`densevis.shards`).

Examples
--------
>>> explain_file("model.pt", "base.h5", "maps.h5", methods="panel")   # doctest: +SKIP
PosixPath('maps.h5')
>>> job = prepare_explain("model.pt", "base.h5")                        # doctest: +SKIP
>>> job.write("rows-0-64.h5", rows=(0, 64))                            # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from tqdm.auto import tqdm

from densevis import __version__
from densevis.errors import DensevisError
from densevis.maps import MapsWriter
from densevis.model import (NUM_CLASSES, ModelSource, check_image_size, load_model, model_file,
                            preprocess, resolve_device)
from densevis.saliency.engine import SaliencyEngine
from densevis.saliency.methods import METHODS
from densevis.saliency.transfer import to_device
from probes import ProbeSet, file_sha256
from probes.atomic import check_output_path

#: The class each image's maps explain, besides a class number.
TARGET_RULES = ("label", "predicted")


def target_rule(value) -> str | int:
    """The target ``value`` names: ``label``, ``predicted`` or a class number (an int, or its
    text as the command line gives it); anything else is a user error about ``target``.

    Examples
    --------
    >>> target_rule("label"), target_rule("3"), target_rule(3)
    ('label', 3, 3)
    """
    if value in TARGET_RULES or isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        raise DensevisError(f"{value!r}: use label, predicted or a class number",
                            parameter="target") from None


@dataclass
class ExplainJob:
    """A checked model and probe set, ready to write the maps of any of its rows.

    Attributes
    ----------
    engine : SaliencyEngine
    probe : ProbeSet
    attrs : dict
        The maps file's attributes (checkpoint and probe hashes, methods, layers, ...).
    num_classes, batch_size : int
    target : str or int
    """

    engine: object
    probe: object
    attrs: dict
    num_classes: int
    batch_size: int
    target: object
    device: object
    progress: bool = True

    def write(self, out, rows: tuple[int, int] | None = None, force: bool = False) -> Path:
        """Write the maps of probe rows ``rows`` = ``(start, stop)`` (default: all) to ``out``.

        The file holds ``stop - start`` rows (its ``index`` says which images) and the job's
        attributes (for a slice also ``shard_rows`` = ``[start, stop]`` and ``shard_of`` = the
        number of images). Batches start at ``start``, every ``batch_size`` rows. On CUDA the
        next batch is queued before the previous one is written, so the GPU works while the
        host reads and writes HDF5.
        """
        start, stop = (0, len(self.probe)) if rows is None else (int(rows[0]), int(rows[1]))
        if not 0 <= start < stop <= len(self.probe):
            raise DensevisError(f"rows {start}..{stop} are not a non-empty range of the "
                                f"{len(self.probe)} images of {self.probe.path}")
        shard = {} if rows is None else {"shard_rows": [start, stop], "shard_of": len(self.probe)}
        with MapsWriter(out, stop - start, self.probe.size, self.num_classes, self.engine.keys,
                        {**self.attrs, **shard}, force=force) as writer, \
                tqdm(total=stop - start, desc=f"explain {self.probe.name}", unit="img",
                     disable=None if self.progress else True, leave=False) as bar:
            def store(pending, batch) -> None:
                result = pending.result()
                writer.write(int(batch["index"][0]) - start, result.numpy(),
                             result.logits.numpy(), result.targets.numpy(), batch["index"])
                bar.update(len(batch["index"]))

            queued = None
            for batch in self.probe.batches(self.batch_size, start=start, stop=stop):
                labels = batch["labels"].astype(np.int64)
                wrong = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
                if self.target == "label" and len(wrong):
                    raise DensevisError(
                        f"image {batch['index'][wrong[0]]} of {self.probe.path} has label "
                        f"{labels[wrong[0]]} but the model has {self.num_classes} classes; "
                        f"regenerate the probe file or use --target predicted")
                targets = {"label": labels, "predicted": None}.get(self.target, self.target)
                # uint8 to the device (4x fewer bytes than float input), scaled there
                images = to_device(torch.from_numpy(batch["images"]), self.device)
                pending = self.engine.submit(preprocess(images), targets=targets)
                if queued is not None:
                    store(*queued)
                queued = (pending, batch)
            if queued is not None:
                store(*queued)
        return Path(out)


def prepare_explain(checkpoint: str | os.PathLike | ModelSource, data: str | os.PathLike,
                    methods="panel", layers="all", params: dict | None = None,
                    method_layers: dict | None = None, device: str = "auto",
                    batch_size: int = 32, chunk_size: int = 64, bf16: bool = False,
                    target: str | int = "label", progress: bool = True,
                    probe_sha256: str | None = None) -> ExplainJob:
    """Check the inputs, load the model on ``device`` and build the engine (see
    :func:`explain_file` for the parameters). ``probe_sha256``, when known, saves hashing the
    probe file again (a sharded run hashes it once, on rank 0)."""
    for name, value in (("batch_size", batch_size), ("chunk_size", chunk_size)):
        if value < 1:
            raise DensevisError(f"must be positive (got {value})", parameter=name)
    target = target_rule(target)
    device = resolve_device(str(device))
    probe = ProbeSet(data)
    model, ckpt = load_model(checkpoint, device)
    check_image_size(ckpt, model_file(checkpoint), probe.size, data, model=model)
    engine = SaliencyEngine(model, methods, layers, params, method_layers=method_layers,
                            chunk_size=chunk_size, autocast=bf16, image_size=probe.size)
    num_classes = int(ckpt["config"].get("num_classes", NUM_CLASSES))
    if isinstance(target, int) and not 0 <= target < num_classes:
        raise DensevisError(f"{target} is out of range: the model has {num_classes} "
                            f"classes (0..{num_classes - 1})", parameter="target")
    attrs = {
        "checkpoint": str(model_file(checkpoint)),
        "checkpoint_sha256": file_sha256(model_file(checkpoint)),
        "probe": str(data), "probe_sha256": probe_sha256 or file_sha256(data),
        "probe_set": probe.name, "methods": engine.methods, "layers": list(engine.layers),
        "layer_grids": engine.layer_grids(probe.size),
        "method_params": engine.params,
        "method_signs": {name: METHODS[name].sign for name in engine.methods},
        "target": str(target), "device": str(device),
        "bf16": bool(bf16),
        "versions": {"densevis": __version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
    }
    return ExplainJob(engine, probe, attrs, num_classes, batch_size, target, device, progress)


def explain_file(checkpoint: str | os.PathLike | ModelSource, data: str | os.PathLike,
                 out: str | os.PathLike, methods="panel", layers="all",
                 params: dict | None = None, method_layers: dict | None = None,
                 device: str = "auto", batch_size: int = 32, chunk_size: int = 64,
                 bf16: bool = False, target: str | int = "label", force: bool = False,
                 progress: bool = True, rows: tuple[int, int] | None = None) -> Path:
    """Maps of every image of probe file ``data`` under the model ``checkpoint``, into ``out``.

    Parameters
    ----------
    checkpoint : path or ModelSource
        Model checkpoint, or a :class:`densevis.model.ModelSource` (a model with its weights
        file, explained at the data's image size).
    data, out : path
        Probe-set file, and the maps file to write (atomically).
    methods, layers, params, method_layers
        As :class:`densevis.saliency.SaliencyEngine`.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    batch_size : int
        Images per shared capture (halved on CUDA out-of-memory).
    chunk_size : int
        Model inputs per pass of the path and perturbation methods.
    bf16 : bool
        bfloat16 autocast for the passes.
    target : {"label", "predicted"} or int
        The class each image's maps explain (see :func:`target_rule`).
    force : bool
        Overwrite an existing ``out``.
    progress : bool
        Show a progress bar (on terminals).
    rows : (start, stop), optional
        Only these probe rows (a shard): ``out`` then holds ``stop - start`` rows, ``index``
        says which. Sharded runs over many processes: :func:`densevis.shards.explain_sharded`.

    Returns
    -------
    Path of the maps file (maps contract of ``shared/DESIGN.md``).
    """
    # before loading anything
    check_output_path(out, force, inputs=(model_file(checkpoint), data))
    job = prepare_explain(checkpoint, data, methods, layers, params, method_layers, device,
                          batch_size, chunk_size, bf16, target, progress)
    with job.probe:
        return job.write(out, rows, force=force)
