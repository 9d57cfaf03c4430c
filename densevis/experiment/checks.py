"""Every value of a spec checked when it loads, by the code that will use it, so that a mistake
is one line naming the file, the line and the key before any work, not an error mid-run that
names a command-line flag the user never typed.

The checks run what the stages would run first on each value: the probe geometry at
``data.size``, the training recipe, the arch and whether it classifies ``data.size`` images, the
checkpoint (read whole), the device, the saliency methods, layers and parameters on the model,
the null baselines. An error about one API parameter
(:class:`probes.errors.InputError` with ``parameter``) is reported at its spec key.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from probes.errors import InputError

#: API parameters of the training recipe -> their spec keys (the others keep their defaults).
TRAIN_KEYS = {"arch": "model.arch", "epochs": "model.epochs", "seed": "model.seed",
              "max_minutes": "model.max_minutes", "labels": "model.labels"}


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


def check_values(spec, locate) -> None:
    """Raise the :class:`~densevis.errors.DensevisError` of the first unusable value of
    ``spec`` (see the module docstring), located by ``locate``."""
    _check_data(spec, locate)
    model = _check_model(spec, locate)
    _check_saliency(spec, locate, model)
    _check_analysis(spec, locate)


def _check_data(spec, locate) -> None:
    from probes import get_set
    from probes.writer import workers_that_fit

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
    """The model the run will explain (untrained when it will be trained), checked."""
    import torch

    from densevis.experiment.steps import checkpoint_paths, train_config
    from densevis.model import build_model, check_image_size, check_model_fits, load_checkpoint

    if spec.model.checkpoint:
        for number, path in enumerate(checkpoint_paths(spec)):
            with at(locate, "model.checkpoint"):
                model, checkpoint = load_checkpoint(path)
            with at(locate, "data.size"):
                check_image_size(checkpoint, path, spec.data.size, "the run's data",
                                 fix="set data.size = {trained}")
            if number == 0:
                first = model
        return first
    with at(locate, "model", TRAIN_KEYS):
        train_config(spec).validate()
        model = build_model(spec.model.arch)
        check_model_fits(model, spec.model.arch, spec.data.size, torch.device("cpu"))
    with at(locate, "analysis.sanity", {"epochs": "analysis.sanity.data_randomization_epochs"}):
        train_config(spec, epochs=spec.analysis.sanity.data_randomization_epochs).validate()
    return model


def _check_saliency(spec, locate, model) -> None:
    from densevis.model import resolve_device

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
    from densevis.saliency.engine import SaliencyEngine
    from densevis.saliency.layers import resolve_layers
    from densevis.saliency.methods import METHODS, resolve_methods, resolve_params

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
        SaliencyEngine._own_layers(model, layer_methods, method_layers)
    if set(layer_methods) - set(method_layers):
        with at(locate, f"{table}.layers"):
            resolve_layers(model, layers)


def _check_analysis(spec, locate) -> None:
    from densevis.analysis.baselines import BASELINES

    unknown = [name for name in spec.analysis.baselines if name not in BASELINES]
    if unknown:
        raise locate.error("analysis.baselines", f"names unknown baseline {unknown[0]!r}; valid: "
                                                 f"{', '.join(BASELINES)}")
