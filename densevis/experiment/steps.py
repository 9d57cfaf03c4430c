"""The stages of a run, each ``step(runner) -> cached`` (True when nothing had to be computed).

Each stage reads what earlier stages put in ``runner.stages`` and adds its own output; outputs go
to the stage cache atomically, and tables are always read back from their cached CSV so a
resumed run and an uninterrupted one continue from identical values. A run has one or more
replicates (:class:`~densevis.experiment.plan.Replicate`, planned by
:mod:`densevis.experiment.plan`): the models trained (or given) for the same design, each one
trained, evaluated, explained, analysed and sanity-checked on its own; the probe sets are shared.
Every table of a run has a ``model`` column (first) naming the replicate.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from densevis.analysis.replicates import evaluate_replicated
from densevis.analysis.sanity import (EVERY_STEP, SIMILARITIES, data_randomization_test,
                                      engine_explain, randomization_test, run_explain)
from densevis.analysis.sanity import TABLE_FORMAT as SANITY_TABLE_FORMAT
from densevis.analysis.tables import baseline_grids, read_table, summarize, with_model
from densevis.distributed import main_only
from densevis.evaluation import TABLE_FORMAT as EVALUATION_TABLE_FORMAT
from densevis.evaluation import evaluate_checkpoint, typed_values
from densevis.labels import training_labels
from densevis.experiment.cache import StageCache
from densevis.experiment.plan import (SANITY_SET, Replicate, data_plan, model_source,
                                      sanity_selection, shuffled_config, spec_folder,
                                      train_config)
from densevis.experiment.behaviour import behaviour_table
from densevis.maps import MapsFile
from densevis.model import load_model, predict, resolve_device
from densevis.user_code import import_factory, source_sha256
from densevis.shards import explain_sharded, metrics_sharded
from densevis.train import train as train_files
from probes import ProbeSet, file_sha256, write_probe_set
from probes.atomic import atomic_output

def _write_csv(frame: pd.DataFrame, path) -> None:
    """Write a cache entry table (and record its hash)."""
    with atomic_output(path, force=True) as tmp:
        frame.to_csv(tmp, index=False)
    StageCache.record(path)


# ---------------------------------------------------------------------------------- generate
def generate(runner) -> bool:
    cached = True
    for role, set_name, n, seed, params in data_plan(runner.spec, runner.stages.replicates):
        key = runner.key("data", set=set_name, n=n, seed=seed, size=runner.spec.data.size,
                         params=params)
        path = runner.cache.path("data", role.replace("/", "-"), key, ".h5")
        if not runner.cache.reusable(path):
            cached = False
            write_probe_set(path, set_name, n=n, seed=seed, size=runner.spec.data.size,
                            params=params, force=True, progress=runner.progress)
            runner.cache.record(path)
        runner.stages.data[role], runner.stages.data_keys[role] = path, key
    return cached


# ------------------------------------------------------------------------------------- train
def train(runner) -> bool:
    spec, stages = runner.spec, runner.stages
    cached = True
    for replicate in stages.replicates:
        if replicate.given is not None:  # checked when the spec loaded (image size included)
            replicate.checkpoint = replicate.given
            replicate.source = model_source(spec, replicate.given, bool(spec.model.weights))
            replicate.model_key = _given_key(runner, replicate.source)
            continue
        replicate.checkpoint, replicate.model_key, done = _trained(
            runner, "train", spec.model.name, replicate.roles["train"], replicate.roles["val"],
            train_config(spec, replicate.seed), f"model {replicate.label}")
        replicate.source = model_source(spec, replicate.checkpoint)
        cached &= done
    return cached


def _model_code(spec) -> dict:
    """The hash of a factory model's source file, for the cache keys of what its code makes
    (edit the factory's module and its models are trained and explained again); empty for
    torchvision models, whose code is torchvision's version."""
    if not spec.model.factory:
        return {}
    return {"code": source_sha256(import_factory(spec.model.factory, spec_folder(spec)))}


def _given_key(runner, source) -> str:
    """The cache key of a given model: its file's hash, with the model's name, arguments and
    code where the file does not say them all (a weights file, a factory's checkpoint)."""
    digest = file_sha256(source.file)
    code = _model_code(runner.spec)
    if source.weights is None and not code:
        return digest[:20]
    named = {"name": source.name, "args": source.args} if source.weights is not None else {}
    return runner.key("given", file=digest, **named, **code)


def _trained(runner, stage: str, name: str, role: str, val_role: str, config,
             what: str) -> tuple:
    """``(checkpoint, cache key, cached)`` of a model trained on data ``role`` (validated on
    ``val_role``) with ``config``: from the cache, or trained into it (saying ``what``)."""
    stages = runner.stages
    key = runner.key(stage, train=stages.data_keys[role], val=stages.data_keys[val_role],
                     config=dataclasses.asdict(config), **_model_code(runner.spec))
    path = runner.cache.path("models", name, key, ".pt")
    if runner.cache.reusable(path):
        return path, key, True
    runner.say(f"  training {what}")
    train_files(stages.data[role], stages.data[val_role], path, config, force=True,
                progress=runner.progress, folder=spec_folder(runner.spec))
    runner.cache.record(path)
    return path, key, False


# ---------------------------------------------------------------------------------- evaluate
def evaluate(runner) -> bool:
    stages, cached, frames = runner.stages, True, []
    for replicate in stages.replicates:
        roles = [replicate.roles["val"]] + list(runner.spec.probes.sets)
        # named by role: the validation set is "base (val)" beside the probe set "base"
        names = [f"{runner.spec.data.train_set} (val)"] + roles[1:]
        key = runner.key("evaluate", model=replicate.model_key,
                         data=[stages.data_keys[role] for role in roles], names=names,
                         table=EVALUATION_TABLE_FORMAT)
        path = runner.cache.path("evaluate", "evaluation", key, ".csv")
        if not runner.cache.reusable(path):
            cached = False
            table, _ = evaluate_checkpoint(replicate.source, [stages.data[r] for r in roles],
                                           device=runner.spec.saliency.device, names=names)
            _write_csv(table, path)
        # read_csv makes the counts floats; as ints again, the run's evaluation.csv writes "12"
        frames.append(with_model(typed_values(read_table(path)), replicate.label))
    stages.tables["evaluation"] = pd.concat(frames, ignore_index=True)
    return cached


# ----------------------------------------------------------------------------------- explain
def explain(runner) -> bool:
    spec, stages = runner.spec, runner.stages
    saliency = spec.saliency
    device = resolve_device(saliency.device)
    cached = True
    for replicate in stages.replicates:
        for name in spec.probes.sets:
            key = runner.key("explain", model=replicate.model_key, data=stages.data_keys[name],
                             methods=saliency.methods, layers=saliency.layers,
                             params=saliency.params, method_layers=saliency.method_layers,
                             device=device.type)
            path = runner.cache.path("maps", name, key, ".h5")
            if not runner.cache.reusable(path):
                cached = False
                # each rank takes its cuda:LOCAL_RANK when sharded
                explain_sharded(replicate.source, stages.data[name], path,
                                methods=saliency.methods, layers=saliency.layers,
                                params=saliency.params, method_layers=saliency.method_layers,
                                device=saliency.device, batch_size=saliency.batch_size,
                                force=True, progress=runner.progress)
                if runner.world.rank == 0:  # rank 0 merged the file
                    runner.cache.record(path)
            replicate.maps[name] = path
    return cached


# ----------------------------------------------------------------------------------- analyze
def analyze(runner) -> bool:
    """Per replicate the metric rows of its maps and behaviour; the null baselines, which do
    not depend on the model, are scored once per layer layout and given to every replicate."""
    spec, stages = runner.spec, runner.stages
    cached, frames, baselines = True, [], {}
    for replicate in stages.replicates:
        key = runner.key("analyze", maps=[replicate.maps[s].name for s in spec.probes.sets],
                         seed=spec.analysis.seed)
        path = runner.cache.path("analysis", "metrics", key, ".csv")
        cached &= _metrics_entry(runner, path, replicate.maps, baselines=())
        layout = _layer_layout(replicate.maps)
        if layout not in baselines:
            key = runner.key("baselines", data=[stages.data_keys[s] for s in spec.probes.sets],
                             layout=layout, baselines=spec.analysis.baselines,
                             seed=spec.analysis.seed)
            baselines[layout] = runner.cache.path("analysis", "baselines", key, ".csv")
            cached &= _metrics_entry(runner, baselines[layout], replicate.maps,
                                     baselines=tuple(spec.analysis.baselines), only_baselines=True)
        frames.append(with_model(pd.concat([read_table(path), read_table(baselines[layout])],
                                           ignore_index=True), replicate.label))
    metrics = pd.concat(frames, ignore_index=True)
    stages.tables["metrics"] = metrics
    stages.tables["summary"] = summarize(metrics)
    return cached


def _layer_layout(maps: dict[str, Path]) -> str:
    """What the baselines of a replicate's maps depend on besides the images: the layers
    explained at each grid (the same for every replicate of one architecture)."""
    layout = {}
    for name, path in maps.items():
        with MapsFile(path) as opened:
            layout[name] = sorted((list(grid), layers)
                                  for grid, layers in baseline_grids(opened).items())
    return json.dumps(layout, sort_keys=True)


def _metrics_entry(runner, path, maps: dict[str, Path], baselines, only_baselines=False) -> bool:
    """The metrics cache entry ``path`` of ``maps``: reused, or scored (sharded) and written."""
    if runner.cache.reusable(path):
        return True
    sets = runner.spec.probes.sets
    # the table on rank 0 (None on the others when sharded)
    metrics = metrics_sharded([maps[s] for s in sets], [runner.stages.data[s] for s in sets],
                              baselines=baselines, device=runner.spec.saliency.device,
                              seed=runner.spec.analysis.seed, only_baselines=only_baselines)
    main_only("analyze", lambda: _write_csv(metrics, path))
    return False


# ------------------------------------------------------------------------------------ sanity
def sanity(runner) -> bool:
    spec, stages = runner.spec, runner.stages
    check = spec.analysis.sanity
    if not (check.cascading or check.independent or check.data_randomization) \
            or not check.methods:
        stages.tables["sanity"] = pd.DataFrame(columns=[
            "model", "test", "step", "step_index", "method", "layer", "image", "metric",
            "value"])
        return True
    cached, frames = True, []
    for number, replicate in enumerate(stages.replicates):
        shuffled_key = ""
        if check.data_randomization:
            cached &= _train_shuffled(runner, replicate)
            shuffled_key = replicate.shuffled_key
        curves = number < check.curves
        key = runner.key("sanity", model=replicate.model_key,
                         data=stages.data_keys[replicate.roles[SANITY_SET]],
                         sanity=dataclasses.asdict(check), shuffled=shuffled_key,
                         explained=sanity_selection(spec), seed=spec.analysis.seed,
                         curves=curves, table=SANITY_TABLE_FORMAT)
        path = runner.cache.path("sanity", "similarity", key, ".csv")
        if not runner.cache.reusable(path):
            cached = False
            runner.say(f"  randomization checks of model {replicate.label}")
            _write_csv(_similarity(runner, replicate, curves), path)
        frames.append(with_model(read_table(path), replicate.label))
    stages.tables["sanity"] = pd.concat(frames, ignore_index=True)
    return cached


def _sanity_images(runner, replicate: Replicate) -> tuple[np.ndarray, np.ndarray]:
    """The first ``sanity.images`` images with a square of the sanity set, and their labels."""
    with ProbeSet(runner.stages.data[replicate.roles[SANITY_SET]]) as probe:
        labels = probe.labels[:]
        chosen = np.flatnonzero(labels == 1)[:runner.spec.analysis.sanity.images]
        return probe.images[np.sort(chosen)], labels[np.sort(chosen)].astype(np.int64)


def _similarity(runner, replicate: Replicate, curves: bool) -> pd.DataFrame:
    """The randomization checks of one replicate. ``curves``: every cascading step, the
    independent test and every similarity measure; otherwise what the verdicts read (the last
    cascading step and the shuffled-label model, Spearman measures)."""
    spec = runner.spec
    check = spec.analysis.sanity
    device = resolve_device(spec.saliency.device)
    model, _ = load_model(replicate.source, device)
    images, targets = _sanity_images(runner, replicate)
    methods, layers, method_layers, params = sanity_selection(spec)
    explain = engine_explain(methods, layers, params, method_layers)
    original = run_explain(explain, model, images, targets)  # every test compares with these
    frames = []
    for mode, wanted in (("cascading", check.cascading),
                         ("independent", check.independent and curves)):
        if wanted:
            frames.append(randomization_test(model, explain, images, targets, mode,
                                             seed=spec.analysis.seed, every_step=curves,
                                             original=original))
    if check.data_randomization:
        shuffled, _ = load_model(model_source(spec, replicate.shuffled_checkpoint), device)
        frames.append(data_randomization_test(model, shuffled, explain, images, targets,
                                              measures=SIMILARITIES if curves else EVERY_STEP,
                                              original=original))
        frames.append(_label_fit(runner, replicate, shuffled, device))
    return pd.concat(frames, ignore_index=True)


def _label_fit(runner, replicate: Replicate, shuffled, device) -> pd.DataFrame:
    """Per training image of the shuffled-label model: 1 where it reproduces its shuffled
    label (metric ``label_fit``; its mean is how far the model memorized)."""
    with ProbeSet(runner.stages.data[replicate.roles["train_shuffled"]]) as probe:
        logits = predict(shuffled, probe, device=device)
        labels = training_labels(probe, shuffled_config(runner.spec, replicate.seed))
    fits = (logits.argmax(1) == labels).astype(np.float64)
    return pd.DataFrame({"test": "data", "step": "shuffled_labels", "step_index": 1,
                         "method": "model", "layer": "", "image": np.arange(len(fits)),
                         "metric": "label_fit", "value": fits})


def _train_shuffled(runner, replicate: Replicate) -> bool:
    """The replicate's data-randomization model: the spec's model trained on shuffled training
    labels with its seed."""
    spec = runner.spec
    replicate.shuffled_checkpoint, replicate.shuffled_key, cached = _trained(
        runner, "train-shuffled", f"{spec.model.name}-shuffled",
        replicate.roles["train_shuffled"], replicate.roles["val"],
        shuffled_config(spec, replicate.seed), f"the shuffled-label model of {replicate.label}")
    return cached


# -------------------------------------------------------------------------------- hypotheses
def hypotheses(runner) -> bool:
    tables, stages = runner.stages.tables, runner.stages
    tables["hypotheses"] = evaluate_replicated(tables["metrics"], tables["sanity"],
                                               runner.spec.hypotheses)
    tables["behaviour"] = pd.concat(
        [with_model(behaviour_table(tables["metrics"][tables["metrics"]["model"] == r.label],
                                    stages.data, runner.spec.probes.sets), r.label)
         for r in stages.replicates], ignore_index=True)
    return False  # cheap: computed every time from the cached tables
