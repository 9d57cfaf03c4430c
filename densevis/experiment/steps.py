"""The stages of a run, each ``step(runner) -> cached`` (True when nothing had to be computed).

Each stage reads what earlier stages put in ``runner.stages`` and adds its own output; outputs go
to the stage cache atomically, and tables are always read back from their cached CSV so a
resumed run and an uninterrupted one continue from identical values. A run has one or more
replicates (:class:`Replicate`): the models trained (or given) for the same design, each one
trained, evaluated, explained, analysed and sanity-checked on its own; the probe sets are shared.
Every table of a run has a ``model`` column (first) naming the replicate.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from densevis.analysis.tables import read_table, with_model

SANITY_SET = "val"  # held-out images of the training set, always present
AUTO_REPLICATES = {"cpu": 3, "cuda": 5}  # models of a run whose spec leaves replicates unset


@dataclass
class Replicate:
    """One model of a run: the unit of evidence, named in every table's ``model`` column."""

    label: str
    seed: int  # its training seed (and, with data.resample, its data's)
    given: Path | None = None  # a checkpoint to use instead of training
    roles: dict = field(default_factory=dict)  # train / val / train_shuffled -> data role
    checkpoint: Path | None = None
    model_key: str = ""
    shuffled_checkpoint: Path | None = None  # its data-randomization model
    shuffled_key: str = ""
    maps: dict[str, Path] = field(default_factory=dict)  # set -> maps file


def replicate_plan(spec) -> list[Replicate]:
    """The replicates of ``spec``: one per given checkpoint, else one per training seed
    (``model.seeds``, else ``model.replicates`` seeds from ``model.seed``, else as many as
    :data:`AUTO_REPLICATES` gives the device)."""
    from densevis.model import resolve_device

    model = spec.model
    if model.checkpoint:
        labels: dict[str, int] = {}
        plan = []
        for path in checkpoint_paths(spec):
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


def _write_csv(frame: pd.DataFrame, path) -> None:
    """Write a cache entry table (and record its hash)."""
    from densevis.experiment.cache import StageCache
    from probes.atomic import atomic_output

    with atomic_output(path, force=True) as tmp:
        frame.to_csv(tmp, index=False)
    StageCache.record(path)


# ---------------------------------------------------------------------------------- generate
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


def generate(runner) -> bool:
    from probes import write_probe_set

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
def train_config(spec, seed: int | None = None, **changes):
    """The recipe of ``spec``'s models (trained with ``seed``, default ``model.seed``)."""
    from densevis.recipe import TrainConfig

    values = dict(arch=spec.model.arch, seed=spec.model.seed if seed is None else seed,
                  max_minutes=spec.model.max_minutes, labels=spec.model.labels)
    if spec.model.epochs is not None:
        values["epochs"] = spec.model.epochs
    return dataclasses.replace(TrainConfig(**values), **changes)


def train(runner) -> bool:
    from probes import file_sha256

    spec, stages = runner.spec, runner.stages
    cached = True
    for replicate in stages.replicates:
        if replicate.given is not None:  # checked when the spec loaded (image size included)
            replicate.checkpoint = replicate.given
            replicate.model_key = file_sha256(replicate.given)[:20]
            continue
        replicate.checkpoint, replicate.model_key, done = _trained(
            runner, "train", spec.model.arch, replicate.roles["train"], replicate.roles["val"],
            train_config(spec, replicate.seed), f"model {replicate.label}")
        cached &= done
    return cached


def _trained(runner, stage: str, name: str, role: str, val_role: str, config,
             what: str) -> tuple:
    """``(checkpoint, cache key, cached)`` of a model trained on data ``role`` (validated on
    ``val_role``) with ``config``: from the cache, or trained into it (saying ``what``)."""
    from densevis.train import train as train_files

    stages = runner.stages
    key = runner.key(stage, train=stages.data_keys[role], val=stages.data_keys[val_role],
                     config=dataclasses.asdict(config))
    path = runner.cache.path("models", name, key, ".pt")
    if runner.cache.reusable(path):
        return path, key, True
    runner.say(f"  training {what}")
    train_files(stages.data[role], stages.data[val_role], path, config, force=True,
                progress=runner.progress)
    runner.cache.record(path)
    return path, key, False


def checkpoint_paths(spec) -> list[Path]:
    """Where the ``model.checkpoint`` files are: as given, else beside the spec file."""
    paths = []
    for given in spec.model.checkpoint:
        path = Path(given)
        if not path.is_absolute() and spec.source and not path.is_file():
            path = Path(spec.source).parent / path
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------- evaluate
def evaluate(runner) -> bool:
    from densevis.evaluation import TABLE_FORMAT, evaluate_checkpoint, typed_values

    stages, cached, frames = runner.stages, True, []
    for replicate in stages.replicates:
        roles = [replicate.roles["val"]] + list(runner.spec.probes.sets)
        # named by role: the validation set is "base (val)" beside the probe set "base"
        names = [f"{runner.spec.data.train_set} (val)"] + roles[1:]
        key = runner.key("evaluate", model=replicate.model_key,
                         data=[stages.data_keys[role] for role in roles], names=names,
                         table=TABLE_FORMAT)
        path = runner.cache.path("evaluate", "evaluation", key, ".csv")
        if not runner.cache.reusable(path):
            cached = False
            table, _ = evaluate_checkpoint(replicate.checkpoint, [stages.data[r] for r in roles],
                                           device=runner.spec.saliency.device, names=names)
            _write_csv(table, path)
        # read_csv makes the counts floats; as ints again, the run's evaluation.csv writes "12"
        frames.append(with_model(typed_values(read_table(path)), replicate.label))
    stages.tables["evaluation"] = pd.concat(frames, ignore_index=True)
    return cached


# ----------------------------------------------------------------------------------- explain
def explain(runner) -> bool:
    from densevis.model import resolve_device
    from densevis.shards import explain_sharded

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
                explain_sharded(replicate.checkpoint, stages.data[name], path,
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
    from densevis.analysis.tables import summarize

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
    import json

    from densevis.analysis.tables import baseline_grids
    from densevis.maps import MapsFile

    layout = {}
    for name, path in maps.items():
        with MapsFile(path) as opened:
            layout[name] = sorted((list(grid), layers)
                                  for grid, layers in baseline_grids(opened).items())
    return json.dumps(layout, sort_keys=True)


def _metrics_entry(runner, path, maps: dict[str, Path], baselines, only_baselines=False) -> bool:
    """The metrics cache entry ``path`` of ``maps``: reused, or scored (sharded) and written."""
    from densevis.distributed import main_only
    from densevis.shards import metrics_sharded

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
    from densevis.analysis.sanity import TABLE_FORMAT

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
                         curves=curves, table=TABLE_FORMAT)
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
    from probes import ProbeSet

    with ProbeSet(runner.stages.data[replicate.roles[SANITY_SET]]) as probe:
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


def _similarity(runner, replicate: Replicate, curves: bool) -> pd.DataFrame:
    """The randomization checks of one replicate. ``curves``: every cascading step, the
    independent test and every similarity measure; otherwise what the verdicts read (the last
    cascading step and the shuffled-label model, Spearman measures)."""
    from densevis.analysis.sanity import (EVERY_STEP, SIMILARITIES, data_randomization_test,
                                          engine_explain, randomization_test, run_explain)
    from densevis.model import load_checkpoint, resolve_device

    spec = runner.spec
    check = spec.analysis.sanity
    device = resolve_device(spec.saliency.device)
    model, _ = load_checkpoint(replicate.checkpoint, device)
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
        shuffled, _ = load_checkpoint(replicate.shuffled_checkpoint, device)
        frames.append(data_randomization_test(model, shuffled, explain, images, targets,
                                              measures=SIMILARITIES if curves else EVERY_STEP,
                                              original=original))
        frames.append(_label_fit(runner, replicate, shuffled, device))
    return pd.concat(frames, ignore_index=True)


def _shuffled_config(spec, seed: int):
    """The shuffled-label model's recipe: memorize the labels (Adebayo et al. 2018 train until
    the model fits its random labels): no augmentation, no loss weighting, the last epoch."""
    return train_config(spec, seed, epochs=spec.analysis.sanity.data_randomization_epochs,
                        labels="shuffled", patience=10**6, keep="last", augment="none",
                        shift=0, class_weighted=False, ignore_hidden=None, touching_weight=1.0)


def _label_fit(runner, replicate: Replicate, shuffled, device) -> pd.DataFrame:
    """Per training image of the shuffled-label model: 1 where it reproduces its shuffled
    label (metric ``label_fit``; its mean is how far the model memorized)."""
    from densevis.labels import training_labels
    from densevis.model import predict
    from probes import ProbeSet

    with ProbeSet(runner.stages.data[replicate.roles["train_shuffled"]]) as probe:
        logits = predict(shuffled, probe, device=device)
        labels = training_labels(probe, _shuffled_config(runner.spec, replicate.seed))
    fits = (logits.argmax(1) == labels).astype(np.float64)
    return pd.DataFrame({"test": "data", "step": "shuffled_labels", "step_index": 1,
                         "method": "model", "layer": "", "image": np.arange(len(fits)),
                         "metric": "label_fit", "value": fits})


def _train_shuffled(runner, replicate: Replicate) -> bool:
    """The replicate's data-randomization model: its arch trained on shuffled training labels
    with its seed."""
    spec = runner.spec
    replicate.shuffled_checkpoint, replicate.shuffled_key, cached = _trained(
        runner, "train-shuffled", f"{spec.model.arch}-shuffled",
        replicate.roles["train_shuffled"], replicate.roles["val"],
        _shuffled_config(spec, replicate.seed), f"the shuffled-label model of {replicate.label}")
    return cached


# -------------------------------------------------------------------------------- hypotheses
def hypotheses(runner) -> bool:
    from densevis.analysis.replicates import evaluate_replicated
    from densevis.experiment.verdicts import behaviour_table

    tables, stages = runner.stages.tables, runner.stages
    tables["hypotheses"] = evaluate_replicated(tables["metrics"], tables["sanity"],
                                               runner.spec.hypotheses)
    tables["behaviour"] = pd.concat(
        [with_model(behaviour_table(tables["metrics"][tables["metrics"]["model"] == r.label],
                                    stages.data, runner.spec.probes.sets), r.label)
         for r in stages.replicates], ignore_index=True)
    return False  # cheap: computed every time from the cached tables
