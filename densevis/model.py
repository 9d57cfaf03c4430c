"""Models and checkpoints: the original study's DenseNet, other torchvision classifiers, and the
checkpoint format of ``shared/DESIGN.md``.

A checkpoint is a ``torch.save`` dict of plain data (strings, numbers, lists, dicts, tensors)
that torch + torchvision alone can load, with ``weights_only=True``: loading one runs no code::

    ckpt = torch.load("model.pt", weights_only=True)
    model = getattr(torchvision.models, ckpt["arch"])(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])

Model input is the grey image / 255 repeated to 3 channels, float32 (N, 3, H, W): see
:func:`preprocess`; :func:`predict` gives a model's logits on a probe file.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from densevis import __version__
from densevis.errors import DensevisError
from probes import ProbeSet
from probes.atomic import atomic_output, check_input_file
from probes.errors import first_line

FORMAT = "densevis-checkpoint/1"
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


def resolve_arch(name: str) -> tuple[str, dict]:
    """``(torchvision.models attribute, kwargs)`` of a named config or a torchvision classifier.

    Examples
    --------
    >>> resolve_arch("resnet18")
    ('resnet18', {'num_classes': 2, 'weights': None})
    """
    if name in CONFIGS:
        attribute, config = CONFIGS[name]
        return attribute, dict(config)
    if name in torchvision_classifiers():
        return name, {"num_classes": NUM_CLASSES, "weights": None}
    raise DensevisError(f"{name!r} is unknown; valid: {', '.join(CONFIGS)}, or a torchvision "
                        f"classifier such as resnet18, vgg11, densenet121", parameter="arch")


def build_model(name: str) -> nn.Module:
    """A freshly initialized 2-class model (no weights are downloaded).

    Examples
    --------
    >>> sum(p.numel() for p in build_model("original").parameters())
    58212
    """
    attribute, config = resolve_arch(name)
    return getattr(torchvision.models, attribute)(**config)


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



def save_checkpoint(path: str | os.PathLike, model: nn.Module, name: str, image_size: int,
                    metrics: dict | None = None, force: bool = True, **extra) -> Path:
    """Write ``model`` as a checkpoint (atomically: a failure leaves no file)."""
    attribute, config = resolve_arch(name)
    checkpoint = plain({
        "format": FORMAT, "arch": attribute, "name": name, "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "image_size": int(image_size), "metrics": metrics or {}, "densevis_version": __version__,
        **extra,
    })
    buffer = io.BytesIO()  # torch's own file writing turns a full disk into a RuntimeError
    torch.save(checkpoint, buffer)
    with atomic_output(path, force=force) as tmp:
        tmp.write_bytes(buffer.getbuffer())
    return Path(path)


def plain(value, where: str = "checkpoint"):
    """``value`` as the plain data that ``torch.load(weights_only=True)`` reads: dicts with
    string keys, lists, tuples, strings, numbers, booleans, None and tensors; numpy scalars and
    arrays and paths are converted, anything else is a bug of the caller (TypeError).

    Examples
    --------
    >>> plain({"n": np.int64(3), "xs": (np.float32(0.5),)})
    {'n': 3, 'xs': (0.5,)}
    """
    if value is None or isinstance(value, (str, bool, int, float, torch.Tensor)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"{where} holds a {type(value).__name__}, which a weights-only checkpoint "
                    f"cannot store")


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict at ``path``, validated; :class:`DensevisError` says what is wrong."""
    path = check_input_file(path, "checkpoint", "train one with 'densevis train'", DensevisError)
    try:
        # weights only: a checkpoint is plain data, and unpickling anything else can run code
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not needs:  # not a pickle of known operands: not a checkpoint at all
            raise DensevisError(f"{path} is not a readable torch checkpoint (UnpicklingError); "
                                f"train one with 'densevis train'") from None
        raise DensevisError(f"checkpoint {path} holds more than plain data ({needs.group(1)}), "
                            f"and loading it could run code; densevis loads only weights-only "
                            f"checkpoints: retrain it with 'densevis train', or, if you trust "
                            f"it, load it with torch.load(..., weights_only=False) and save its "
                            f"plain parts") from None
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise DensevisError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}); "
                            f"train one with 'densevis train'") from None
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if found != FORMAT:
        raise DensevisError(f"{path} is not a densevis checkpoint (format {found!r}, expected "
                            f"{FORMAT!r}); train one with 'densevis train'")
    missing = [k for k in ("arch", "config", "state_dict", "image_size") if k not in checkpoint]
    if missing:
        raise DensevisError(f"checkpoint {path} lacks {', '.join(missing)}; it is damaged, "
                            f"retrain it")
    wrong = [key for key, kind in (("arch", str), ("config", dict), ("state_dict", dict),
                                   ("image_size", int)) if not isinstance(checkpoint[key], kind)]
    if wrong or isinstance(checkpoint["image_size"], bool) or checkpoint["image_size"] < 1:
        raise DensevisError(f"checkpoint {path}: {(wrong or ['image_size'])[0]} has the wrong "
                            f"type or value; it is damaged, retrain it")
    return checkpoint


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict]:
    """``(model in eval mode on device, checkpoint dict)`` from a checkpoint file."""
    checkpoint = read_checkpoint(path)
    builder = getattr(torchvision.models, checkpoint["arch"], None)
    if builder is None:
        raise DensevisError(f"checkpoint {path} names arch {checkpoint['arch']!r}, which this "
                            f"torchvision ({torchvision.__version__}) lacks")
    try:
        model = builder(**checkpoint["config"])
    except (TypeError, ValueError) as exc:
        raise DensevisError(f"checkpoint {path}: its config does not build arch "
                            f"{checkpoint['arch']} ({first_line(exc)}); it is damaged or "
                            f"edited: retrain it with 'densevis train'") from None
    state = checkpoint["state_dict"]
    mismatch = _state_mismatch(model.state_dict(), state)
    if mismatch:
        raise DensevisError(f"checkpoint {path}: its weights do not fit its arch "
                            f"{checkpoint['arch']} with its config ({mismatch}); it is damaged or "
                            f"edited: retrain it with 'densevis train'")
    bad = [name for name, tensor in state.items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise DensevisError(f"checkpoint {path} has non-finite weights (NaN or infinite in "
                            f"{bad[0]}{f' and {len(bad) - 1} more' if len(bad) > 1 else ''}): "
                            f"its training diverged; retrain it with a lower learning rate")
    model.load_state_dict(state)
    return model.to(device).eval(), checkpoint


def check_model_fits(model: nn.Module, arch: str, size: int, device: torch.device) -> None:
    """Raise :class:`DensevisError` (parameter ``arch``) if ``model`` cannot classify
    ``size``-px images (a forward pass of two blank images)."""
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(2, 3, size, size, device=device))
    except RuntimeError as exc:
        raise DensevisError(f"{arch} cannot classify {size}-px images ({first_line(exc, 80)}); "
                            f"use larger images or another arch", parameter="arch") from None


def check_image_size(checkpoint: dict, path: str | os.PathLike, size: int, data: object,
                     fix: str = "generate the probe sets with --size {trained}") -> None:
    """Raise :class:`DensevisError` unless the model of ``checkpoint`` (read from ``path``) was
    trained on images of the size of ``data``'s, ``size`` px.

    ``data`` names the images in the message (a path, "the run's data"); ``fix`` says how to
    make the sizes match, ``{trained}`` in it standing for the checkpoint's size.

    Examples
    --------
    >>> check_image_size({"image_size": 64}, "m.pt", 80, "big.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    densevis.errors.DensevisError: checkpoint m.pt was trained on 64px images but big.h5 ...
    """
    trained = int(checkpoint["image_size"])
    if trained != size:
        raise DensevisError(f"checkpoint {path} was trained on {trained}px images but {data} "
                            f"holds {size}px images; " + fix.format(trained=trained))


def _state_mismatch(expected: dict, found: dict) -> str:
    """What differs between a model's state dict and a checkpoint's (names and shapes), in
    words; empty when they fit."""
    if not isinstance(found, dict) or not all(torch.is_tensor(v) for v in found.values()):
        return "state_dict is not a dict of tensors"
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    parts = []
    for names, what in ((missing, "missing"), (extra, "unexpected"), (shapes, "of another shape")):
        if names:
            parts.append(f"{len(names)} tensor{'s' * (len(names) > 1)} {what}, e.g. {names[0]}"
                         + (f" {tuple(found[names[0]].shape)} instead of "
                            f"{tuple(expected[names[0]].shape)}" if names is shapes else ""))
    return "; ".join(parts)


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
