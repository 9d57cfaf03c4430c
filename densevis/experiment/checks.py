"""Every spec checked when it loads, beyond its types: its names and files
(:func:`check_spec`: known probe sets, label rules and hypotheses, readable checkpoints and
weights, importable modules), then every value, by the code that will use it, so that a mistake
is one line naming the file, the line and the key before any work, not an error mid-run that
names a command-line flag the user never typed.

The checks run what the stages would run first on each value: the probe geometry at
``data.size``, the training recipe, the model (arch, or factory: imported, built with its
args) and whether it gives 2 logits for ``data.size`` images, the checkpoints (read whole) or
weights (loaded), the device, the saliency methods, layers and parameters on the model,
the null baselines. An error about one API parameter
(:class:`probes.errors.InputError` with ``parameter``) is reported at its spec key.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from densevis.analysis.baselines import BASELINES
from densevis.analysis.hypotheses import HYPOTHESES
from densevis.analysis.sanity import SIMILARITIES
from densevis.experiment.plan import given_paths, model_source, spec_folder, train_config
from densevis.model import (check_image_size, check_model_fits, load_model, load_weights,
                            resolve_device, resolve_model)
from densevis.recipe import LABEL_RULES
from densevis.saliency.engine import SaliencyEngine
from densevis.saliency.layers import resolve_layers
from densevis.saliency.methods import METHODS, resolve_methods, resolve_params
from densevis.user_code import import_module_beside
from probes import SETS, get_set
from probes.errors import InputError
from probes.writer import workers_that_fit

#: API parameters of the training recipe and the model -> their spec keys (the others keep
#: their defaults); ``model`` is model.arch or model.factory, whichever names the model.
TRAIN_KEYS = {"epochs": "model.epochs", "seed": "model.seed",
              "max_minutes": "model.max_minutes", "labels": "model.labels",
              "model_args": "model.args", "weights": "model.weights",
              "threads": "model.threads"}


@contextmanager
def at(locate, key: str, parameters: dict[str, str] | None = None) -> Iterator[None]:
    """Report an input error of the block at spec ``key`` (or, for an error about an API
    parameter listed in ``parameters``, at that parameter's key)."""
    try:
        yield
    except InputError as exc:
        named = (parameters or {}).get(exc.parameter)
        if named:
            raise locate.error(named, exc.detail) from None
        raise locate.error(key, f"is not usable: {exc}") from None


def check_spec(spec, locate, base_dir: Path | None) -> None:
    """Raise the :class:`~densevis.errors.DensevisError` of the first problem of a typed
    ``spec`` beyond its types: its names and files (known sets, label rules, hypotheses,
    readable checkpoints, importable modules; relative paths from ``base_dir``), then every
    value (:func:`check_values`)."""
    _check_semantics(spec, locate, base_dir)
    check_values(spec, locate)  # every value, by the code that will use it


def check_values(spec, locate) -> None:
    """Raise the :class:`~densevis.errors.DensevisError` of the first unusable value of
    ``spec`` (see the module docstring), located by ``locate``."""
    _check_data(spec, locate)
    model = _check_model(spec, locate)
    _check_saliency(spec, locate, model)
    _check_analysis(spec, locate)


def _check_data(spec, locate) -> None:
    size = spec.data.size
    for name in dict.fromkeys([spec.data.train_set, *spec.probes.sets]):
        probe_set = get_set(name)
        with at(locate, f"probes.params.{name}"):
            params = probe_set.parse_params(spec.probes.params.get(name, {}))
        try:
            probe_set.geometry(size, params)
            workers_that_fit(probe_set.images_per_unit, size, 1)
        except InputError as exc:
            # the size alone is at fault when the set's default parameters fail too
            alone = spec.probes.params.get(name) is None or _fails(probe_set, size)
            if exc.parameter == "size" or alone:
                raise locate.error("data.size", f"does not suit set {name}: {exc}") from None
            raise locate.error(f"probes.params.{name}", f"does not suit size {size}: "
                                                        f"{exc}") from None


def _fails(probe_set, size: int) -> bool:
    try:
        probe_set.geometry(size)
    except InputError:
        return True
    return False


def _check_model(spec, locate):
    """The model the run will explain (untrained when it will be trained), checked: a given
    checkpoint loads (a factory one only as the spec's factory) and suits data.size; the
    spec's model builds, gives 2 logits for data.size images, and takes the given weights."""
    if spec.model.checkpoint:
        for number, path in enumerate(given_paths(spec)):
            with at(locate, "model.checkpoint", {**TRAIN_KEYS, "model": "model.factory"}):
                model, checkpoint = load_model(model_source(spec, path))
            with at(locate, "data.size"):
                check_image_size(checkpoint, path, spec.data.size, "the run's data",
                                 fix="set data.size = {trained}")
            if number == 0:
                first = model
        return first
    named = {**TRAIN_KEYS, "model": "model.factory" if spec.model.factory else "model.arch"}
    with at(locate, "model", named):
        train_config(spec).validate()
        choice = resolve_model(spec.model.name, spec.model.args, spec_folder(spec))
        model = choice.build()
        check_model_fits(model, choice.name, spec.data.size, torch.device("cpu"))
    for path in given_paths(spec):  # weights files: each loads into the model
        with at(locate, "model.weights", named):
            load_weights(model, path, choice.name)
    with at(locate, "analysis.sanity", {"epochs": "analysis.sanity.data_randomization_epochs"}):
        train_config(spec, epochs=spec.analysis.sanity.data_randomization_epochs).validate()
    return model


def _check_saliency(spec, locate, model) -> None:
    saliency = spec.saliency
    with at(locate, "saliency.device", {"device": "saliency.device"}):
        resolve_device(saliency.device)
    if saliency.batch_size < 1:
        raise locate.error("saliency.batch_size", f"must be positive (got {saliency.batch_size})")
    _check_methods(locate, "saliency", model, saliency.methods, saliency.layers,
                   saliency.params, saliency.method_layers, spec.data.size)


def _check_methods(locate, table: str, model, methods, layers, params, method_layers,
                   size: int) -> None:
    """Methods, their parameters and layers as :class:`SaliencyEngine` will resolve them."""
    with at(locate, f"{table}.methods"):
        methods = resolve_methods(methods)
    with at(locate, f"{table}.params"):
        resolved = resolve_params(methods, params)
    for name in methods:
        if METHODS[name].check is not None:
            with at(locate, f"{table}.params.{name}"):
                METHODS[name].check(resolved[name], (size, size))
    layer_methods = [m for m in methods if METHODS[m].kind == "layer"]
    with at(locate, f"{table}.method_layers"):
        SaliencyEngine.own_layers(model, layer_methods, method_layers, size)
    if set(layer_methods) - set(method_layers):
        with at(locate, f"{table}.layers"):
            resolve_layers(model, layers, image_size=size)


def _check_analysis(spec, locate) -> None:
    unknown = [name for name in spec.analysis.baselines if name not in BASELINES]
    if unknown:
        raise locate.error("analysis.baselines", f"names unknown baseline {unknown[0]!r}; valid: "
                                                 f"{', '.join(BASELINES)}")


def _check_semantics(spec, locate, base_dir: Path | None) -> None:
    """Checks beyond types: positive sizes, known sets, readable files."""
    for key in ("size", "train", "val", "images_per_set", "pair_scenes"):
        if getattr(spec.data, key) < 1:
            raise locate.error(f"data.{key}", "must be positive")
    for name in spec.probes.sets:
        if name not in SETS:
            raise locate.error("probes.sets", f"names unknown probe set {name!r}; valid: "
                                              f"{', '.join(SETS)}")
    if spec.data.train_set not in SETS:
        raise locate.error("data.train_set", f"names unknown probe set "
                                             f"{spec.data.train_set!r}; valid: {', '.join(SETS)}")
    if spec.model.labels not in LABEL_RULES:
        raise locate.error("model.labels", f"must be one of {', '.join(LABEL_RULES)}")
    for name in spec.probes.params:
        if name not in SETS:
            raise locate.error(f"probes.params.{name}", f"is not a probe set; valid: "
                                                        f"{', '.join(SETS)}")
    _check_model_names(spec.model, locate)
    _check_replicates(spec.model, locate)
    for key in ("checkpoint", "weights"):
        for given in getattr(spec.model, key):
            path = Path(given)
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            if path.is_dir():
                raise locate.error(f"model.{key}", f"names a folder, {path}; give the {key} "
                                                   f"file in it")
            if not path.is_file():
                raise locate.error(f"model.{key}", f"names a missing file {path}")
    _import_modules(spec, locate, base_dir)
    _check_hypotheses(spec, locate)


def _check_replicates(model, locate) -> None:
    """One way to name the replicates: a count, explicit seeds or checkpoints."""
    if model.replicates is not None and model.replicates < 1:
        raise locate.error("model.replicates", f"must be at least 1 (got {model.replicates})")
    if model.seeds:
        if len(set(model.seeds)) != len(model.seeds):
            raise locate.error("model.seeds", "lists a seed twice; replicates need different "
                                              "seeds")
        if min(model.seeds) < 0:
            raise locate.error("model.seeds", "must not be negative")
        if model.replicates is not None and model.replicates != len(model.seeds):
            raise locate.error("model.replicates", f"is {model.replicates} but model.seeds "
                                                   f"lists {len(model.seeds)} seeds; give one "
                                                   f"of the two")
    for key in ("checkpoint", "weights"):
        if getattr(model, key) and (model.seeds or model.replicates is not None):
            raise locate.error(f"model.{key}", "gives the models, so model.seeds and "
                                               "model.replicates do not apply; remove them")


def _check_model_names(model, locate) -> None:
    """One way to name the model and one way to give models."""
    if model.arch and model.factory:
        raise locate.error("model.factory", "and model.arch both name the model; keep one "
                                            "(factory: a model of your own; arch: a config or "
                                            "a torchvision classifier)")
    if model.checkpoint and model.weights:
        raise locate.error("model.weights", "and model.checkpoint both give the models; keep "
                                            "one")
    if model.checkpoint and model.args:
        raise locate.error("model.args", "do not apply to given checkpoints, which record "
                                         "their model's arguments; remove them")


def _import_modules(spec, locate, base_dir: Path | None) -> None:
    """Import ``spec.imports`` (the spec's folder first on the path) so that the hypotheses
    they register can be named; like running a script, this runs the named modules' code."""
    for name in spec.imports:
        with at(locate, "imports"):
            import_module_beside(name, base_dir)


def _check_hypotheses(spec, locate) -> None:
    """Each ``[[hypotheses]]`` entry against the hypothesis registry: names, statistics,
    margins, options, methods and the probe sets and sanity checks it needs."""
    seen = set()
    for k, hypothesis in enumerate(spec.hypotheses):
        where = f"hypotheses[{k}]"
        if hypothesis.name in seen:
            raise locate.error(f"{where}.name", f"lists {hypothesis.name!r} a second time")
        seen.add(hypothesis.name)
        if not 0 < hypothesis.alpha < 1:
            raise locate.error(f"{where}.alpha", "must be between 0 and 1")
        for method in hypothesis.methods:
            if method not in METHODS:
                raise locate.error(f"{where}.methods", f"names unknown method {method!r}; "
                                                       f"valid: {', '.join(METHODS)}")
        definition = HYPOTHESES.get(hypothesis.name)
        if definition is None:
            _check_custom(hypothesis, where, spec.probes.sets, locate)
            continue
        for key in ("set", "metric", "margin"):
            if getattr(hypothesis, key) not in (None, ""):
                hint = " (set margins = {statistic = value})" if key == "margin" else ""
                raise locate.error(f"{where}.{key}", f"is for custom hypotheses; "
                                                     f"{hypothesis.name!r} is registered{hint}")
        if hypothesis.direction != "greater":
            raise locate.error(f"{where}.direction", "is for custom hypotheses; a registered "
                                                     "one declares its directions")
        keys = [s.key for s in definition.statistics]
        for field_name in ("statistics", "margins"):
            for key in getattr(hypothesis, field_name):
                if key not in keys:
                    raise locate.error(f"{where}.{field_name}", f"names unknown statistic "
                                       f"{key!r} of {hypothesis.name}; valid: {', '.join(keys)}")
        for key, value in hypothesis.margins.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise locate.error(f"{where}.margins", f"{key} must be a number >= 0 "
                                                       f"(got {value!r})")
        for option in ("threshold", "similarity"):
            if getattr(hypothesis, option) not in (None, "") and option not in definition.options:
                raise locate.error(f"{where}.{option}", f"is not an option of "
                                                        f"{hypothesis.name}")
        if hypothesis.similarity and hypothesis.similarity not in SIMILARITIES:
            raise locate.error(f"{where}.similarity",
                               f"must be one of {', '.join(SIMILARITIES)}")
        for group in definition.needed_sets(hypothesis.statistics):
            if not set(group) & set(spec.probes.sets):
                raise locate.error(f"{where}.name", f"{hypothesis.name} needs probe set "
                                   f"{' or '.join(group)}; add it to probes.sets (or keep other "
                                   f"statistics with {where}.statistics)")
        check = spec.analysis.sanity
        if definition.source == "similarity" and not (check.methods and check.cascading):
            raise locate.error(f"{where}.name", f"{hypothesis.name} needs the cascading "
                               f"randomization check: set analysis.sanity.cascading = true and "
                               f"keep analysis.sanity.methods non-empty")


def _check_custom(hypothesis, where: str, sets, locate) -> None:
    if not (hypothesis.set and hypothesis.metric):
        raise locate.error(f"{where}.name", f"names no registered hypothesis "
                           f"({', '.join(HYPOTHESES)}); a custom hypothesis needs set and metric")
    if hypothesis.set not in sets:
        raise locate.error(f"{where}.set", f"names probe set {hypothesis.set!r}, which the run "
                                           f"does not make; add it to probes.sets")
    if hypothesis.direction not in ("greater", "less"):
        raise locate.error(f"{where}.direction", "must be 'greater' or 'less'")
    if hypothesis.margin is not None and hypothesis.margin < 0:
        raise locate.error(f"{where}.margin", "must be >= 0")
    for key in ("statistics", "margins", "similarity"):
        if getattr(hypothesis, key):
            raise locate.error(f"{where}.{key}", "is for registered hypotheses; a custom one "
                                                 "tests metric (with margin)")
