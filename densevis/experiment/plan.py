"""What a spec implies before any work: its replicate models, the probe files it needs (each
seeded by its name), the models' training recipe and what the sanity checks explain.

:mod:`densevis.experiment.steps` runs the stages from these plans.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from densevis.model import ModelSource, resolve_device
from densevis.recipe import TrainConfig
from densevis.saliency.methods import resolve_methods

SANITY_SET = "val"  # held-out images of the training set, always present
AUTO_REPLICATES = {"cpu": 3, "cuda": 5}  # models of a run whose spec leaves replicates unset



@dataclass
class Replicate:
    """One model of a run: the unit of evidence, named in every table's ``model`` column."""

    label: str
    seed: int  # its training seed (and, with data.resample, its data's)
    given: Path | None = None  # a checkpoint or weights file to use instead of training
    roles: dict = field(default_factory=dict)  # train / val / train_shuffled -> data role
    checkpoint: Path | None = None  # its model file (a checkpoint, or the given weights)
    source: ModelSource | None = None  # what loads it (densevis.model.load_model)
    model_key: str = ""
    shuffled_checkpoint: Path | None = None  # its data-randomization model
    shuffled_key: str = ""
    maps: dict[str, Path] = field(default_factory=dict)  # set -> maps file


def replicate_plan(spec) -> list[Replicate]:
    """The replicates of ``spec``: one per given checkpoint or weights file, else one per
    training seed (``model.seeds``, else ``model.replicates`` seeds from ``model.seed``, else
    as many as :data:`AUTO_REPLICATES` gives the device)."""
    model = spec.model
    if model.checkpoint or model.weights:
        labels: dict[str, int] = {}
        plan = []
        for path in given_paths(spec):
            stem = path.stem
            labels[stem] = labels.get(stem, 0) + 1
            label = stem if labels[stem] == 1 else f"{stem}-{labels[stem]}"
            plan.append(Replicate(label, model.seed, given=path))
    else:
        count = model.replicates or AUTO_REPLICATES.get(
            resolve_device(spec.saliency.device).type, AUTO_REPLICATES["cpu"])
        seeds = list(model.seeds) or [model.seed + k for k in range(count)]
        plan = [Replicate(f"seed{seed}", seed) for seed in seeds]
    for replicate in plan:
        own = f"/{replicate.label}" if spec.data.resample and replicate.given is None else ""
        replicate.roles = {role: role + own for role in ("train", "val", "train_shuffled")}
    return plan


def data_seed(seed: int, name: str) -> int:
    """The seed of a run's probe file ``name`` (a role such as ``val`` or a set's name): drawn
    from the run's data seed and the name, so no file's images depend on which others exist.

    >>> data_seed(0, "lines_only") == data_seed(0, "lines_only") != data_seed(0, "pairs")
    True
    """
    digest = hashlib.sha256(f"densevis-data/{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def data_plan(spec, replicates: list[Replicate]) -> list[tuple[str, str, int, int, dict]]:
    """``(role, set, n, seed, params)`` of every probe file a spec needs."""
    data = spec.data
    trained = spec.probes.params.get(data.train_set, {})
    check = spec.analysis.sanity
    plan = {}
    for replicate in replicates:
        train = replicate.roles["train"]
        if replicate.given is None:
            plan[train] = (train, data.train_set, data.train, data_seed(data.seed, train),
                           trained)
        if check.data_randomization and check.methods:
            # the first images of its training set (each image draws from its own seed)
            shuffled = replicate.roles["train_shuffled"]
            plan[shuffled] = (shuffled, data.train_set,
                              min(check.data_randomization_images, data.train),
                              data_seed(data.seed, train), trained)
    for replicate in replicates:
        val = replicate.roles["val"]
        plan[val] = (val, data.train_set, data.val, data_seed(data.seed, val), trained)
    for name in spec.probes.sets:
        n = data.pair_scenes if name == "pairs" else data.images_per_set
        plan[name] = (name, name, n, data_seed(data.seed, name),
                      spec.probes.params.get(name, {}))
    return list(plan.values())


def train_config(spec, seed: int | None = None, **changes):
    """The recipe of ``spec``'s models (trained with ``seed``, default ``model.seed``)."""
    values = dict(arch=spec.model.name, model_args=dict(spec.model.args),
                  seed=spec.model.seed if seed is None else seed,
                  max_minutes=spec.model.max_minutes, labels=spec.model.labels,
                  threads=spec.model.threads)
    if spec.model.epochs is not None:
        values["epochs"] = spec.model.epochs
    return dataclasses.replace(TrainConfig(**values), **changes)


def shuffled_config(spec, seed: int):
    """The shuffled-label model's recipe: memorize the labels (Adebayo et al. 2018 train until
    the model fits its random labels): no augmentation, no loss weighting, the last epoch."""
    return train_config(spec, seed, epochs=spec.analysis.sanity.data_randomization_epochs,
                        labels="shuffled", patience=10**6, keep="last", augment="none",
                        shift=0, class_weighted=False, ignore_hidden=None, touching_weight=1.0)



def given_paths(spec) -> list[Path]:
    """Where the given models' files (``model.checkpoint``, or ``model.weights``) are: as
    given, else beside the spec file."""
    paths = []
    for given in spec.model.checkpoint or spec.model.weights:
        path = Path(given)
        if not path.is_absolute() and spec.source and not path.is_file():
            path = Path(spec.source).parent / path
        paths.append(path)
    return paths


def spec_folder(spec) -> Path | None:
    """The spec file's folder, where the modules it names are looked up first."""
    return Path(spec.source).parent if spec.source and Path(spec.source).is_file() else None


def model_source(spec, path: Path, weights: bool = False) -> ModelSource:
    """What loads model file ``path`` of a run of ``spec``: with ``weights``, the spec's model
    with that weights file; else a checkpoint, whose factory (if it has one) is imported only
    when it is the spec's ``model.factory``."""
    if weights:
        return ModelSource(name=spec.model.name, args=dict(spec.model.args), weights=path,
                           folder=spec_folder(spec))
    return ModelSource(checkpoint=path, name=spec.model.factory or None,
                       folder=spec_folder(spec))


def sanity_selection(spec) -> tuple[list[str], list[str], dict, dict]:
    """``(methods, layers, method_layers, params)`` the sanity checks explain: those of
    ``[saliency]`` where ``[analysis.sanity]`` says ``"saliency"`` (the default)."""
    check, saliency = spec.analysis.sanity, spec.saliency
    methods = resolve_methods(saliency.methods if check.methods == ["saliency"]
                              else check.methods)
    if check.layers == ["saliency"]:
        layers = list(saliency.layers)
        method_layers = {m: v for m, v in saliency.method_layers.items() if m in methods}
    else:
        layers, method_layers = list(check.layers), {}
    params = {m: v for m, v in saliency.params.items() if m in methods}
    return methods, layers, method_layers, params
