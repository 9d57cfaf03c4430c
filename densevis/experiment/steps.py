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
from functools import partial
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
from densevis.model import load_model, predict, resolve_device, torch_threads
from densevis.user_code import import_factory, source_sha256
from densevis.shards import explain_sharded, metrics_sharded
from densevis.train import train as train_files
from probes import ProbeSet, file_sha256, write_probe_set
from probes.atomic import atomic_output
from probes.pool import call_in_processes, default_workers

def _write_csv(frame: pd.DataFrame, path) -> None:
    """Write a cache entry table (and record its hash)."""
    with atomic_output(path, force=True) as tmp:
        frame.to_csv(tmp, index=False)
    StageCache.record(path)


def side_by_side(runner, calls: list, device: str) -> list:
    """The results of ``calls`` (no arguments; one replicate's work each), each call with
    ``model.threads`` torch CPU threads.

    Where the work runs on the CPU with one thread each (the default) and the run is not
    sharded, the calls run at once, each in its own forked process: these models are small, so
    a second thread speeds one up by 9-36% while a second process nearly doubles the work done
    (README, "Benchmarks"). With more threads they run here in turn: OpenMP cannot start
    threads in a process forked after it ran. Either way a call's numbers are those of
    ``model.threads`` threads, whatever the machine's cores and however many ran at once."""
    threads = runner.spec.model.threads

    def limited(call):
        def run():
            with torch_threads(threads):
                return call()
        return run

    return call_in_processes([limited(call) for call in calls],
                             2 * default_workers() if runs_apart(runner, device) else 1)


def runs_apart(runner, device: str) -> bool:
    """Whether :func:`side_by_side` runs its calls in processes of their own (where several
    calls then write at once, progress bars are off)."""
    return (runner.spec.model.threads == 1 and not runner.world.sharded
            and resolve_device(device).type == "cpu")


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
    trainings = []
    for replicate in stages.replicates:
        if replicate.given is not None:  # checked when the spec loaded (image size included)
            replicate.checkpoint = replicate.given
            replicate.source = model_source(spec, replicate.given, bool(spec.model.weights))
            replicate.model_key = _given_key(runner, replicate.source)
            continue
        replicate.checkpoint, replicate.model_key, training = _model_entry(
            runner, "train", spec.model.name, replicate.roles["train"], replicate.roles["val"],
            train_config(spec, replicate.seed), f"model {replicate.label}", replicate.label)
        replicate.source = model_source(spec, replicate.checkpoint)
        trainings.append(training)
    return _train_models(runner, trainings)


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


def _model_entry(runner, stage: str, name: str, role: str, val_role: str, config, what: str,
                 label: str) -> tuple[Path, str, dict | None]:
    """``(checkpoint, cache key, training)`` of a model trained on data ``role`` (validated on
    ``val_role``) with ``config``; ``training`` is what :func:`_train_models` trains it from
    (saying ``what``; ``label`` starts its lines), None when the cache holds it."""
    stages = runner.stages
    key = runner.key(stage, train=stages.data_keys[role], val=stages.data_keys[val_role],
                     config=dataclasses.asdict(config), **_model_code(runner.spec))
    path = runner.cache.path("models", name, key, ".pt")
    if runner.cache.reusable(path):
        return path, key, None
    return path, key, dict(data=stages.data[role], val=stages.data[val_role], out=path,
                           config=config, what=what, label=label)


def _train_models(runner, trainings: list) -> bool:
    """Train the models of ``trainings`` (from :func:`_model_entry`) side by side into their
    cache entries; whether all were cached."""
    trainings = [t for t in trainings if t is not None]
    if not trainings:
        return True
    device = train_config(runner.spec).device
    runner.say(f"  training {', '.join(t['what'] for t in trainings)}")
    labelled = len(trainings) > 1 and runs_apart(runner, device)  # their lines interleave

    def trained(t) -> Path:  # the result holds the model: only its path comes back
        return train_files(t["data"], t["val"], t["out"], t["config"], force=True,
                           progress=runner.progress, folder=spec_folder(runner.spec),
                           label=t["label"] if labelled else "").path
    for path in side_by_side(runner, [partial(trained, t) for t in trainings], device):
        runner.cache.record(path)
    return False


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
    todos, written = [], []
    for replicate in stages.replicates:
        todo = []
        for name in spec.probes.sets:
            key = runner.key("explain", model=replicate.model_key, data=stages.data_keys[name],
                             methods=saliency.methods, layers=saliency.layers,
                             params=saliency.params, method_layers=saliency.method_layers,
                             device=device.type, threads=spec.model.threads)
            path = runner.cache.path("maps", name, key, ".h5")
            if not runner.cache.reusable(path):
                todo.append((stages.data[name], path))
            replicate.maps[name] = path
        if todo:
            todos.append((replicate.source, todo))
            written += [path for _, path in todo]
    progress = runner.progress and (len(todos) == 1 or not runs_apart(runner, saliency.device))
    side_by_side(runner, [partial(_explain_into, runner, source, todo, progress)
                          for source, todo in todos], saliency.device)
    if runner.world.rank == 0:  # rank 0 merged the files
        for path in written:
            runner.cache.record(path)
    return not written


def _explain_into(runner, source, todo: list, progress: bool) -> None:
    """Explain each ``(probe file, maps file)`` of ``todo`` with ``source``'s model."""
    saliency = runner.spec.saliency
    for data, path in todo:
        # each rank takes its cuda:LOCAL_RANK when sharded
        explain_sharded(source, data, path, methods=saliency.methods, layers=saliency.layers,
                        params=saliency.params, method_layers=saliency.method_layers,
                        device=saliency.device, batch_size=saliency.batch_size, force=True,
                        progress=progress)


# ----------------------------------------------------------------------------------- analyze
def analyze(runner) -> bool:
    """Per replicate the metric rows of its maps and behaviour; the null baselines, which do
    not depend on the model, are scored once per layer layout and given to every replicate."""
    spec, stages = runner.spec, runner.stages
    entries, work, baselines = [], [], {}
    for replicate in stages.replicates:
        key = runner.key("analyze", maps=[replicate.maps[s].name for s in spec.probes.sets],
                         seed=spec.analysis.seed, threads=spec.model.threads)
        path = runner.cache.path("analysis", "metrics", key, ".csv")
        if not runner.cache.reusable(path):
            work.append(partial(_score_into, runner, path, replicate.maps, baselines=()))
        layout = _layer_layout(replicate.maps)
        if layout not in baselines:
            key = runner.key("baselines", data=[stages.data_keys[s] for s in spec.probes.sets],
                             layout=layout, baselines=spec.analysis.baselines,
                             seed=spec.analysis.seed, threads=spec.model.threads)
            baselines[layout] = runner.cache.path("analysis", "baselines", key, ".csv")
            if not runner.cache.reusable(baselines[layout]):
                work.append(partial(_score_into, runner, baselines[layout], replicate.maps,
                                    baselines=tuple(spec.analysis.baselines),
                                    only_baselines=True))
        entries.append((replicate.label, path, baselines[layout]))
    side_by_side(runner, work, spec.saliency.device)
    metrics = pd.concat([with_model(pd.concat([read_table(path), read_table(null)],
                                              ignore_index=True), label)
                         for label, path, null in entries], ignore_index=True)
    stages.tables["metrics"] = metrics
    stages.tables["summary"] = summarize(metrics)
    return not work


def _layer_layout(maps: dict[str, Path]) -> str:
    """What the baselines of a replicate's maps depend on besides the images: the layers
    explained at each grid (the same for every replicate of one architecture)."""
    layout = {}
    for name, path in maps.items():
        with MapsFile(path) as opened:
            layout[name] = sorted((list(grid), layers)
                                  for grid, layers in baseline_grids(opened).items())
    return json.dumps(layout, sort_keys=True)


def _score_into(runner, path, maps: dict[str, Path], baselines, only_baselines=False) -> None:
    """Score ``maps`` (sharded) into the metrics cache entry ``path``."""
    sets = runner.spec.probes.sets
    # the table on rank 0 (None on the others when sharded)
    metrics = metrics_sharded([maps[s] for s in sets], [runner.stages.data[s] for s in sets],
                              baselines=baselines, device=runner.spec.saliency.device,
                              seed=runner.spec.analysis.seed, only_baselines=only_baselines)
    main_only("analyze", lambda: _write_csv(metrics, path))


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
    work, entries, trainings = [], [], []
    for number, replicate in enumerate(stages.replicates):
        shuffled_key = ""
        if check.data_randomization:
            replicate.shuffled_checkpoint, replicate.shuffled_key, training = _model_entry(
                runner, "train-shuffled", f"{spec.model.name}-shuffled",
                replicate.roles["train_shuffled"], replicate.roles["val"],
                shuffled_config(spec, replicate.seed),
                f"the shuffled-label model of {replicate.label}", replicate.label)
            shuffled_key = replicate.shuffled_key
            trainings.append(training)
        curves = number < check.curves
        key = runner.key("sanity", model=replicate.model_key,
                         data=stages.data_keys[replicate.roles[SANITY_SET]],
                         sanity=dataclasses.asdict(check), shuffled=shuffled_key,
                         explained=sanity_selection(spec), seed=spec.analysis.seed,
                         curves=curves, table=SANITY_TABLE_FORMAT, threads=spec.model.threads)
        path = runner.cache.path("sanity", "similarity", key, ".csv")
        if not runner.cache.reusable(path):
            work.append((replicate.label, partial(_check_into, runner, replicate, curves, path)))
        entries.append((replicate.label, path))
    # the shuffled-label models first: they train side by side, as the models did
    cached = _train_models(runner, trainings)
    if work:
        runner.say(f"  randomization checks of model{'s' if len(work) > 1 else ''} "
                   f"{', '.join(label for label, _ in work)}")
        side_by_side(runner, [call for _, call in work], spec.saliency.device)
    stages.tables["sanity"] = pd.concat([with_model(read_table(path), label)
                                         for label, path in entries], ignore_index=True)
    return cached and not work


def _check_into(runner, replicate: Replicate, curves: bool, path: Path) -> None:
    """The randomization checks of one replicate (:func:`_similarity`) into cache entry
    ``path``."""
    _write_csv(_similarity(runner, replicate, curves), path)


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
