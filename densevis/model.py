"""Models and checkpoints: the original study's DenseNet, other torchvision classifiers, models
of one's own (a factory ``"package.module:callable"``), and the checkpoint format of
``docs/DESIGN.md``.

One resolver reads a model's name (:func:`resolve_model`): a config of :data:`CONFIGS`
(``"original"``), a torchvision classifier (``"resnet18"``) or a factory of the user's
(``"small_resnet:small_resnet"``, keyword arguments from ``--model-arg`` or a spec's ``args``).
The model must give 2 logits (N, 2) for input (N, 3, H, W) (:func:`check_model_fits`).

A checkpoint is a ``torch.save`` dict of plain data (strings, numbers, lists, dicts, tensors)
that torch (+ torchvision, or the factory's module) can load, with ``weights_only=True``:
loading one runs no code. One of a torchvision model::

    ckpt = torch.load("model.pt", weights_only=True)
    model = getattr(torchvision.models, ckpt["arch"])(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])

One of a factory model records ``factory`` instead of ``arch``; densevis imports the factory's
module (running its code) only when the user names the same factory. A model trained elsewhere
is its name and a weights file (:class:`ModelSource`, :func:`load_model`).

Model input is the grey image / 255 repeated to 3 channels, float32 (N, 3, H, W): see
:func:`preprocess`; :func:`predict` gives a model's logits on a probe file.
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torchvision
from torch import nn

from densevis import __version__
from densevis.checkpoint import (FORMAT, non_finite, plain, read_checkpoint, read_weights,
                                 state_mismatch)
from densevis.errors import DensevisError
from densevis.user_code import import_factory, typed_args
from probes import ProbeSet
from probes.atomic import atomic_output
from probes.errors import first_line

NUM_CLASSES = 2

#: Named configurations: name -> (torchvision.models attribute, its kwargs).
CONFIGS: dict[str, tuple[str, dict]] = {
    # the model the original study trained: 58,212 parameters
    "original": ("DenseNet", dict(growth_rate=8, block_config=(4, 4, 4, 4), num_init_features=2,
                                  bn_size=4, num_classes=NUM_CLASSES)),
    # the ~444k model the original study's visualizations used
    "original-large": ("DenseNet", dict(growth_rate=8, block_config=(6, 12, 24, 16),
                                        num_init_features=8, bn_size=4,
                                        num_classes=NUM_CLASSES)),
}


def torchvision_classifiers() -> list[str]:
    """Names of torchvision's image classifiers (builders taking ``num_classes``)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


@dataclass(frozen=True)
class ModelChoice:
    """A model's name resolved (:func:`resolve_model`): what builds it, with which arguments."""

    name: str  # as the user gave it: "original", "resnet18", "small_resnet:small_resnet"
    builder: Callable = field(repr=False, compare=False)
    config: dict = field(default_factory=dict)  # its keyword arguments
    arch: str = ""  # the torchvision.models attribute (configs and classifiers)
    factory: str = ""  # "module:callable" (a factory of the user's)

    def build(self) -> nn.Module:
        """A freshly initialized model; :class:`DensevisError` (about ``model``) when the
        builder fails or returns something else than an ``nn.Module``."""
        try:
            model = self.builder(**self.config)
        except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
            raise DensevisError(f"{self.name} failed to build a model from arguments "
                                f"{self.config} ({type(exc).__name__}: {first_line(exc)})",
                                parameter="model") from None
        if not isinstance(model, nn.Module):
            raise DensevisError(f"{self.name} returned a {type(model).__name__}, not a "
                                f"torch.nn.Module; name a callable that returns the model",
                                parameter="model")
        return model

    def record(self) -> dict:
        """How a checkpoint names the model: ``arch`` or ``factory``, ``name``, ``config``."""
        key, value = ("factory", self.factory) if self.factory else ("arch", self.arch)
        return {key: value, "name": self.name, "config": self.config}


def resolve_model(name: str, args: dict | None = None,
                  folder: str | os.PathLike | None = None) -> ModelChoice:
    """The model ``name`` names: a config of :data:`CONFIGS`, a torchvision classifier (2
    classes, no downloaded weights) or a factory ``"package.module:callable"`` (its module
    imported from ``folder`` first, then ``sys.path``: see
    :func:`densevis.user_code.import_module_beside`). ``args`` are keyword arguments of the
    builder, overriding a config's; text values are read as the types the builder declares
    (:func:`densevis.user_code.typed_args`). Errors are about ``model`` or ``model_args``.

    Examples
    --------
    >>> resolve_model("resnet18").config
    {'num_classes': 2, 'weights': None}
    >>> resolve_model("original", {"growth_rate": "12"}).config["growth_rate"]
    12
    >>> resolve_model("nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    densevis.errors.DensevisError: model 'nope' is unknown; valid: original, original-large, ...
    """
    if ":" in name:
        factory = import_factory(name, folder)
        return ModelChoice(name, factory, typed_args(factory, dict(args or {}), name),
                           factory=name)
    if name in CONFIGS:
        attribute, config = CONFIGS[name]
    elif name in torchvision_classifiers():
        attribute, config = name, {"num_classes": NUM_CLASSES, "weights": None}
    else:
        raise DensevisError(f"{name!r} is unknown; valid: {', '.join(CONFIGS)}, a torchvision "
                            f"classifier such as resnet18, vgg11, densenet121, or a factory of "
                            f"your own, package.module:callable", parameter="model")
    builder = getattr(torchvision.models, attribute)
    return ModelChoice(name, builder, {**config, **typed_args(builder, dict(args or {}), name)},
                       arch=attribute)


def build_model(name: str, args: dict | None = None) -> nn.Module:
    """A freshly initialized model of ``name`` (see :func:`resolve_model`; no weights are
    downloaded).

    Examples
    --------
    >>> sum(p.numel() for p in build_model("original").parameters())
    58212
    """
    return resolve_model(name, args).build()


def preprocess(images) -> torch.Tensor:
    """Grey uint8 images (N, H, W) -> model input float32 (N, 3, H, W) = image / 255, 3 channels.

    Accepts numpy arrays or tensors; the result is on the tensor's device.
    """
    images = torch.as_tensor(np.asarray(images) if not torch.is_tensor(images) else images)
    if images.ndim != 3:
        raise DensevisError(f"images must be (N, H, W) grey, got shape {tuple(images.shape)}")
    return (images.to(torch.float32) / 255.0).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


@torch.no_grad()
def predict(model: torch.nn.Module, probe: ProbeSet, batch_size: int = 256,
            device: torch.device | str = "cpu", start: int = 0, stop: int | None = None,
            channels_last: bool = False) -> np.ndarray:
    """Logits (N, C) float32 of ``model`` in eval mode on images ``[start, stop)``, batched.

    The model is put in eval mode (BatchNorm uses its running statistics) and left there.

    Examples
    --------
    >>> logits = predict(build_model("original"), ProbeSet("val.h5"))   # doctest: +SKIP
    """
    model.eval()
    memory = torch.channels_last if channels_last else torch.contiguous_format
    chunks = []
    for batch in probe.batches(batch_size, fields=("images",), start=start, stop=stop):
        inputs = preprocess(batch["images"]).to(device, memory_format=memory)
        chunks.append(model(inputs).float().cpu().numpy())
    if not chunks:
        return np.zeros((0, 2), np.float32)
    return np.concatenate(chunks)



def save_checkpoint(path: str | os.PathLike, model: nn.Module, name: str | ModelChoice,
                    image_size: int, metrics: dict | None = None, force: bool = True,
                    **extra) -> Path:
    """Write ``model`` (of model ``name``, or its resolved :class:`ModelChoice`) as a checkpoint
    (atomically: a failure leaves no file)."""
    choice = name if isinstance(name, ModelChoice) else resolve_model(name)
    checkpoint = plain({
        "format": FORMAT, **choice.record(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "image_size": int(image_size), "metrics": metrics or {}, "densevis_version": __version__,
        **extra,
    })
    buffer = io.BytesIO()  # torch's own file writing turns a full disk into a RuntimeError
    torch.save(checkpoint, buffer)
    with atomic_output(path, force=force) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu",
                    named: str | None = None, folder: str | os.PathLike | None = None
                    ) -> tuple[nn.Module, dict]:
    """``(model in eval mode on device, checkpoint dict)`` from a checkpoint file.

    ``named`` is the model the user named (``--model``, a spec's ``[model] factory``): a
    checkpoint of a factory model loads only when it names that factory, since building it
    imports the factory's module (from ``folder`` first), which runs its code.
    """
    checkpoint = read_checkpoint(path)
    if "factory" in checkpoint:
        recorded = checkpoint["factory"]
        if named != recorded:
            raise DensevisError(f"must name {recorded!r}, the factory of checkpoint {path}, to "
                                f"load it (got {named or 'none'}): densevis imports a model's "
                                f"code only when you name it", parameter="model")
        model = resolve_model(recorded, checkpoint["config"], folder).build()
        what, cause = f"factory {recorded}", "its factory's code changed, or it is damaged"
    else:
        if named is not None and named not in (checkpoint.get("name"), checkpoint["arch"]):
            raise DensevisError(f"names {named!r}, but checkpoint {path} holds "
                                f"{checkpoint.get('name', checkpoint['arch'])!r}; leave the "
                                f"model out with a checkpoint, or give its name",
                                parameter="model")
        builder = getattr(torchvision.models, checkpoint["arch"], None)
        if builder is None:
            raise DensevisError(f"checkpoint {path} names arch {checkpoint['arch']!r}, which "
                                f"this torchvision ({torchvision.__version__}) lacks")
        try:
            model = builder(**checkpoint["config"])
        except (TypeError, ValueError) as exc:
            raise DensevisError(f"checkpoint {path}: its config does not build arch "
                                f"{checkpoint['arch']} ({first_line(exc)}); it is damaged or "
                                f"edited: retrain it with 'densevis train'") from None
        what, cause = f"arch {checkpoint['arch']}", "it is damaged or edited"
    state = checkpoint["state_dict"]
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise DensevisError(f"checkpoint {path}: its weights do not fit its {what} with its "
                            f"config ({mismatch}); {cause}: retrain it with 'densevis train'")
    bad = non_finite(state)
    if bad:
        raise DensevisError(f"checkpoint {path} has non-finite weights ({bad}): its training "
                            f"diverged; retrain it with a lower learning rate")
    model.load_state_dict(state)
    return model.to(device).eval(), checkpoint


def load_weights(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load weights file ``path`` (see :func:`densevis.checkpoint.read_weights`) into
    ``model`` (of model ``name``), refusing weights of another model and non-finite ones.
    Errors are about ``weights``."""
    state = read_weights(path)
    mismatch = state_mismatch(model.state_dict(), state)
    if mismatch:
        raise DensevisError(f"{path} does not fit model {name} ({mismatch}); give the weights "
                            f"of this model (with its arguments), or name the model they are "
                            f"of", parameter="weights")
    bad = non_finite(state)
    if bad:
        raise DensevisError(f"{path} has non-finite weights ({bad}); densevis refuses them: "
                            f"the training that made them diverged", parameter="weights")
    model.load_state_dict(state)


@dataclass(frozen=True)
class ModelSource:
    """A model to load (:func:`load_model`): a densevis ``checkpoint`` (``name``, if given, is
    the model the user named: it allows importing a factory checkpoint's module), or a model
    trained elsewhere: its ``name`` and ``args`` (see :func:`resolve_model`) and its
    ``weights`` file. ``folder``: where the factory's module is looked up first (a spec's
    folder).

    Examples
    --------
    >>> ModelSource(name="resnet18", weights="resnet18.pt").file
    PosixPath('resnet18.pt')
    """

    checkpoint: str | os.PathLike | None = None
    name: str | None = None
    args: dict = field(default_factory=dict)
    weights: str | os.PathLike | None = None
    folder: str | os.PathLike | None = None

    def __post_init__(self):
        if (self.checkpoint is None) == (self.weights is None) or \
                (self.weights is not None and not self.name):
            raise ValueError("a ModelSource is a checkpoint, or a name with weights")

    @property
    def file(self) -> Path:
        """The file the model's weights are in (its identity in hashes and provenance)."""
        return Path(self.checkpoint if self.checkpoint is not None else self.weights)


def model_file(source: str | os.PathLike | ModelSource) -> Path:
    """The file of a checkpoint path or a :class:`ModelSource`."""
    return source.file if isinstance(source, ModelSource) else Path(source)


def load_model(source: str | os.PathLike | ModelSource, device: str | torch.device = "cpu"
               ) -> tuple[nn.Module, dict]:
    """``(model in eval mode on device, its record)`` from a checkpoint path or a
    :class:`ModelSource`. The record of a checkpoint is the checkpoint dict; that of a model
    loaded from weights has its ``name``, ``arch`` or ``factory``, ``config``, ``weights`` and
    ``image_size`` None (no size is recorded: the data's size is used,
    see :func:`check_image_size`).

    Examples
    --------
    >>> model, record = load_model(ModelSource(name="resnet18", weights="r.pt"))  # doctest: +SKIP
    """
    if not isinstance(source, ModelSource):
        return load_checkpoint(source, device)
    if source.checkpoint is not None:
        return load_checkpoint(source.checkpoint, device, source.name, source.folder)
    choice = resolve_model(source.name, source.args, source.folder)
    model = choice.build()
    load_weights(model, source.weights, choice.name)
    record = {**choice.record(), "weights": str(source.weights), "image_size": None}
    return model.to(device).eval(), record


def check_model_fits(model: nn.Module, name: str, size: int, device: torch.device | str,
                     parameter: str = "model") -> None:
    """Raise :class:`DensevisError` (about ``parameter``) unless ``model`` (of model ``name``)
    gives 2 logits per image, (N, 2), for ``size``-px images (a forward pass of two blank
    images in eval mode).

    Examples
    --------
    >>> check_model_fits(nn.Flatten(), "flat", 8, "cpu")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    densevis.errors.DensevisError: model flat gives an output of shape (2, 192) for 2 images ...
    """
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 3, size, size, device=device))
    except Exception as exc:  # noqa: BLE001 - the user's forward may raise anything
        raise DensevisError(f"{name} cannot classify {size}-px images ({type(exc).__name__}: "
                            f"{first_line(exc, 80)}); use larger images or another model",
                            parameter=parameter) from None
    if not torch.is_tensor(out):
        raise DensevisError(f"{name} returns a {type(out).__name__}, not a tensor of logits; "
                            f"densevis needs a forward that gives (N, 2) logits: wrap the model "
                            f"in a module that returns them", parameter=parameter)
    if tuple(out.shape) != (2, NUM_CLASSES):
        raise DensevisError(f"{name} gives an output of shape {tuple(out.shape)} for 2 images of "
                            f"{size} px; densevis needs 2 logits per image, (N, 2): build it "
                            f"with 2 classes (num_classes=2 where it takes one) or add a 2-class "
                            f"head", parameter=parameter)


def check_image_size(checkpoint: dict, path: str | os.PathLike, size: int, data: object,
                     fix: str = "generate the probe sets with --size {trained}",
                     model: nn.Module | None = None) -> None:
    """Raise :class:`DensevisError` unless the model of ``checkpoint`` (read from ``path``) was
    trained on images of the size of ``data``'s, ``size`` px.

    ``data`` names the images in the message (a path, "the run's data"); ``fix`` says how to
    make the sizes match, ``{trained}`` in it standing for the checkpoint's size. A model loaded
    from weights records no size (``image_size`` None): then ``model``, when given, is checked
    to classify ``size``-px images (:func:`check_model_fits`) instead.

    Examples
    --------
    >>> check_image_size({"image_size": 64}, "m.pt", 80, "big.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    densevis.errors.DensevisError: checkpoint m.pt was trained on 64px images but big.h5 ...
    """
    trained = checkpoint.get("image_size")
    if trained is None:
        if model is not None:
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            check_model_fits(model, checkpoint.get("name", str(path)), size, device)
        return
    if int(trained) != size:
        raise DensevisError(f"checkpoint {path} was trained on {trained}px images but {data} "
                            f"holds {size}px images; " + fix.format(trained=trained))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``threads`` torch CPU threads for the block (None: torch's setting), then the previous
    number again.

    Work forked into a worker process must run with one: OpenMP cannot start threads in a
    process forked after it ran (the worker waits forever).

    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DensevisError(f"{spec!r} is not a device; use auto, cpu, cuda or cuda:N",
                            parameter="device") from None
    if device.type not in ("cpu", "cuda"):
        raise DensevisError(f"{spec!r} is not supported; use auto, cpu, cuda or cuda:N",
                            parameter="device")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DensevisError(f"{spec!r}: CUDA is not available here; use cpu or auto",
                            parameter="device")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise DensevisError(f"{spec!r}: there are only {torch.cuda.device_count()} CUDA devices",
                            parameter="device")
    return device
