"""The stages of a run, each ``step(runner) -> cached`` (True when nothing had to be computed).

Each stage reads what earlier stages put in ``runner.stages`` and adds its own output; outputs go
to the stage cache atomically, and tables are always read back from their cached CSV so a
resumed run and an uninterrupted one continue from identical values.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from densevis.analysis.tables import read_table
from densevis.errors import DensevisError

SANITY_SET = "val"  # held-out images of the training set, always present


def _write_csv(frame: pd.DataFrame, path) -> None:
    """Write a cache entry table (and record its hash)."""
    from densevis.experiment.cache import StageCache
    from probes.atomic import atomic_output

    with atomic_output(path, force=True) as tmp:
        frame.to_csv(tmp, index=False)
    StageCache.record(path)


# ---------------------------------------------------------------------------------- generate
def data_plan(spec) -> list[tuple[str, str, int, int, dict]]:
    """``(role, set, n, seed, params)`` of every probe file a spec needs."""
    from probes import SETS

    data = spec.data
    trained = spec.probes.params.get(data.train_set, {})
    plan = [("train", data.train_set, data.train, data.seed, trained),
            ("val", data.train_set, data.val, data.seed + 1, trained)]
    check = spec.analysis.sanity
    if check.data_randomization and check.methods:
        # the first images of the training set (each image draws from its own seed)
        plan.append(("train_shuffled", data.train_set,
                     min(check.data_randomization_images, data.train), data.seed, trained))
    order = list(SETS)
    for name in spec.probes.sets:
        n = data.pair_scenes if name == "pairs" else data.images_per_set
        plan.append((name, name, n, data.seed + 2 + order.index(name),
                     spec.probes.params.get(name, {})))
    return plan


def generate(runner) -> bool:
    from probes import write_probe_set

    cached = True
    for role, set_name, n, seed, params in data_plan(runner.spec):
        key = runner.key("data", set=set_name, n=n, seed=seed, size=runner.spec.data.size,
                         params=params)
        path = runner.cache.path("data", role, key, ".h5")
        if not runner.cache.reusable(path):
            cached = False
            write_probe_set(path, set_name, n=n, seed=seed, size=runner.spec.data.size,
                            params=params, force=True, progress=runner.progress)
            runner.cache.record(path)
        runner.stages.data[role], runner.stages.data_keys[role] = path, key
    return cached


# ------------------------------------------------------------------------------------- train
def train_config(spec, **changes):
    from densevis.recipe import TrainConfig

    values = dict(arch=spec.model.arch, seed=spec.model.seed,
                  max_minutes=spec.model.max_minutes, labels=spec.model.labels)
    if spec.model.epochs is not None:
        values["epochs"] = spec.model.epochs
    return dataclasses.replace(TrainConfig(**values), **changes)


def train(runner) -> bool:
    from probes import file_sha256

    spec, stages = runner.spec, runner.stages
    if spec.model.checkpoint:  # checked when the spec loaded (image size included)
        path = checkpoint_path(spec)
        stages.checkpoint, stages.model_key = path, file_sha256(path)[:20]
        return True
    stages.checkpoint, stages.model_key, cached = _trained(runner, "train", spec.model.arch,
                                                           "train", train_config(spec))
    return cached


def _trained(runner, stage: str, name: str, role: str, config) -> tuple:
    """``(checkpoint, cache key, cached)`` of a model trained on data ``role`` (validated on
    ``val``) with ``config``: from the cache, or trained into it."""
    from densevis.train import train as train_files

    stages = runner.stages
    key = runner.key(stage, train=stages.data_keys[role], val=stages.data_keys["val"],
                     config=dataclasses.asdict(config))
    path = runner.cache.path("models", name, key, ".pt")
    if runner.cache.reusable(path):
        return path, key, True
    train_files(stages.data[role], stages.data["val"], path, config, force=True,
                progress=runner.progress)
    runner.cache.record(path)
    return path, key, False


def checkpoint_path(spec):
    """Where ``model.checkpoint`` is: as given, else beside the spec file."""
    from pathlib import Path

    path = Path(spec.model.checkpoint)
    if not path.is_absolute() and spec.source and not path.is_file():
        path = Path(spec.source).parent / path
    return path


# ---------------------------------------------------------------------------------- evaluate
def evaluate(runner) -> bool:
    from densevis.evaluation import evaluate_checkpoint

    stages = runner.stages
    roles = ["val"] + list(runner.spec.probes.sets)
    # named by role: the validation set is "base (val)" beside the probe set "base"
    names = [f"{runner.spec.data.train_set} (val)"] + roles[1:]
    key = runner.key("evaluate", model=stages.model_key,
                     data=[stages.data_keys[role] for role in roles], names=names)
    path = runner.cache.path("evaluate", "evaluation", key, ".csv")
    cached = runner.cache.reusable(path)
    if not cached:
        table, _ = evaluate_checkpoint(stages.checkpoint, [stages.data[r] for r in roles],
                                       device=runner.spec.saliency.device, names=names)
        _write_csv(table, path)
    stages.tables["evaluation"] = read_table(path)
    return cached


# ----------------------------------------------------------------------------------- explain
def explain(runner) -> bool:
    from densevis.model import resolve_device
    from densevis.shards import explain_sharded

    spec, stages = runner.spec, runner.stages
    saliency = spec.saliency
    device = resolve_device(saliency.device)
    cached = True
    for name in spec.probes.sets:
        key = runner.key("explain", model=stages.model_key, data=stages.data_keys[name],
                         methods=saliency.methods, layers=saliency.layers,
                         params=saliency.params, method_layers=saliency.method_layers,
                         device=device.type)
        path = runner.cache.path("maps", name, key, ".h5")
        if not runner.cache.reusable(path):
            cached = False
            # each rank takes its cuda:LOCAL_RANK when sharded
            explain_sharded(stages.checkpoint, stages.data[name], path, methods=saliency.methods,
                            layers=saliency.layers, params=saliency.params,
                            method_layers=saliency.method_layers, device=saliency.device,
                            batch_size=saliency.batch_size, force=True,
                            progress=runner.progress)
            if runner.world.rank == 0:  # rank 0 merged the file
                runner.cache.record(path)
        stages.maps[name] = path
    return cached


# ----------------------------------------------------------------------------------- analyze
def analyze(runner) -> bool:
    from densevis.analysis.tables import summarize
    from densevis.distributed import main_only
    from densevis.shards import metrics_sharded

    spec, stages = runner.spec, runner.stages
    analysis = spec.analysis
    key = runner.key("analyze", maps=[str(stages.maps[s].name) for s in spec.probes.sets],
                     baselines=analysis.baselines, seed=analysis.seed)
    path = runner.cache.path("analysis", "metrics", key, ".csv")
    cached = runner.cache.reusable(path)
    if not cached:
        # the table on rank 0 (None on the others when sharded)
        metrics = metrics_sharded([stages.maps[s] for s in spec.probes.sets],
                                  [stages.data[s] for s in spec.probes.sets],
                                  baselines=tuple(analysis.baselines),
                                  device=spec.saliency.device, seed=analysis.seed)
        main_only("analyze", lambda: _write_csv(metrics, path))
    metrics = read_table(path)
    stages.tables["metrics"] = metrics
    stages.tables["summary"] = summarize(metrics)
    return cached


# ------------------------------------------------------------------------------------ sanity
def sanity(runner) -> bool:
    spec, stages = runner.spec, runner.stages
    check = spec.analysis.sanity
    if not (check.cascading or check.independent or check.data_randomization) \
            or not check.methods:
        stages.tables["sanity"] = pd.DataFrame(
            columns=["test", "step", "step_index", "method", "layer", "image", "metric", "value"])
        return True
    shuffled_key = ""
    cached = True
    if check.data_randomization:
        cached = _train_shuffled(runner)
        shuffled_key = stages.shuffled_key
    key = runner.key("sanity", model=stages.model_key, data=stages.data_keys[SANITY_SET],
                     sanity=dataclasses.asdict(check), shuffled=shuffled_key,
                     explained=sanity_selection(spec), seed=spec.analysis.seed)
    path = runner.cache.path("sanity", "similarity", key, ".csv")
    if not runner.cache.reusable(path):
        cached = False
        _write_csv(_similarity(runner), path)
    stages.tables["sanity"] = read_table(path)
    return cached


def _sanity_images(runner) -> tuple[np.ndarray, np.ndarray]:
    """The first ``sanity.images`` images with a square of the sanity set, and their labels."""
    from probes import ProbeSet

    with ProbeSet(runner.stages.data[SANITY_SET]) as probe:
        labels = probe.labels[:]
        chosen = np.flatnonzero(labels == 1)[:runner.spec.analysis.sanity.images]
        return probe.images[np.sort(chosen)], labels[np.sort(chosen)].astype(np.int64)


def sanity_selection(spec) -> tuple[list[str], list[str], dict, dict]:
    """``(methods, layers, method_layers, params)`` the sanity checks explain: those of
    ``[saliency]`` where ``[analysis.sanity]`` says ``"saliency"`` (the default)."""
    from densevis.saliency.methods import resolve_methods

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


def _similarity(runner) -> pd.DataFrame:
    from densevis.analysis.sanity import (data_randomization_test, engine_explain,
                                          randomization_test)
    from densevis.model import load_checkpoint, resolve_device

    spec, stages = runner.spec, runner.stages
    check = spec.analysis.sanity
    device = resolve_device(spec.saliency.device)
    model, _ = load_checkpoint(stages.checkpoint, device)
    images, targets = _sanity_images(runner)
    methods, layers, method_layers, params = sanity_selection(spec)
    explain = engine_explain(methods, layers, params, method_layers)
    frames = []
    for mode, wanted in (("cascading", check.cascading), ("independent", check.independent)):
        if wanted:
            frames.append(randomization_test(model, explain, images, targets, mode,
                                             seed=spec.analysis.seed))
    if check.data_randomization:
        shuffled, _ = load_checkpoint(stages.shuffled_checkpoint, device)
        frames.append(data_randomization_test(model, shuffled, explain, images, targets))
        frames.append(_label_fit(runner, shuffled, device))
    return pd.concat(frames, ignore_index=True)


def _shuffled_config(spec):
    """The shuffled-label model's recipe: memorize the labels (Adebayo et al. 2018 train until
    the model fits its random labels): no augmentation, no loss weighting, the last epoch."""
    return train_config(spec, epochs=spec.analysis.sanity.data_randomization_epochs,
                        labels="shuffled", patience=10**6, keep="last", augment="none",
                        shift=0, class_weighted=False, ignore_hidden=None, touching_weight=1.0)


def _label_fit(runner, shuffled, device) -> pd.DataFrame:
    """Per training image of the shuffled-label model: 1 where it reproduces its shuffled
    label (metric ``label_fit``; its mean is how far the model memorized)."""
    from densevis.evaluation import predict
    from densevis.train import training_labels
    from probes import ProbeSet

    with ProbeSet(runner.stages.data["train_shuffled"]) as probe:
        logits = predict(shuffled, probe, device=device)
        labels = training_labels(probe, _shuffled_config(runner.spec))
    fits = (logits.argmax(1) == labels).astype(np.float64)
    return pd.DataFrame({"test": "data", "step": "shuffled_labels", "step_index": 1,
                         "method": "model", "layer": "", "image": np.arange(len(fits)),
                         "metric": "label_fit", "value": fits})


def _train_shuffled(runner) -> bool:
    """The data-randomization model: the same arch trained on shuffled training labels."""
    spec, stages = runner.spec, runner.stages
    stages.shuffled_checkpoint, stages.shuffled_key, cached = _trained(
        runner, "train-shuffled", f"{spec.model.arch}-shuffled", "train_shuffled",
        _shuffled_config(spec))
    return cached


# -------------------------------------------------------------------------------- hypotheses
def hypotheses(runner) -> bool:
    from densevis.analysis.hypotheses import evaluate
    from densevis.experiment.verdicts import behaviour_table

    tables = runner.stages.tables
    tables["hypotheses"] = evaluate(tables["metrics"], tables["sanity"], runner.spec.hypotheses)
    tables["behaviour"] = behaviour_table(tables["metrics"], runner.stages.data,
                                          runner.spec.probes.sets)
    return False  # cheap: computed every time from the cached tables
