"""Models and checkpoints: the original study's DenseNet, other torchvision classifiers, and the
checkpoint format of ``shared/DESIGN.md``.

A checkpoint is a ``torch.save`` dict that torch + torchvision alone can load::

    ckpt = torch.load("model.pt", weights_only=False)
    model = getattr(torchvision.models, ckpt["arch"])(**ckpt["config"])
    model.load_state_dict(ckpt["state_dict"])

Model input is the grey image / 255 repeated to 3 channels, float32 (N, 3, H, W): see
:func:`preprocess`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from densevis import __version__
from densevis.errors import DensevisError
from probes.atomic import atomic_output

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
    raise DensevisError(f"unknown arch {name!r}; valid: {', '.join(CONFIGS)}, or a torchvision "
                        f"classifier such as resnet18, vgg11, densenet121")


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


def save_checkpoint(path: str | os.PathLike, model: nn.Module, name: str, image_size: int,
                    metrics: dict | None = None, force: bool = True, **extra) -> Path:
    """Write ``model`` as a checkpoint (atomically: a failure leaves no file)."""
    attribute, config = resolve_arch(name)
    checkpoint = {
        "format": FORMAT, "arch": attribute, "name": name, "config": config,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "image_size": int(image_size), "metrics": metrics or {}, "densevis_version": __version__,
        **extra,
    }
    with atomic_output(path, force=force) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict at ``path``, validated; :class:`DensevisError` says what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise DensevisError(f"checkpoint {path} not found; train one with 'densevis train'")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
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
    return checkpoint


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict]:
    """``(model in eval mode on device, checkpoint dict)`` from a checkpoint file."""
    checkpoint = read_checkpoint(path)
    builder = getattr(torchvision.models, checkpoint["arch"], None)
    if builder is None:
        raise DensevisError(f"checkpoint {path} names arch {checkpoint['arch']!r}, which this "
                            f"torchvision ({torchvision.__version__}) lacks")
    model = builder(**checkpoint["config"])
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise DensevisError(f"checkpoint {path}: weights do not fit arch "
                            f"{checkpoint['arch']} ({first})") from None
    return model.to(device).eval(), checkpoint


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DensevisError(f"--device {spec!r} is not a device; use auto, cpu, cuda or "
                            f"cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DensevisError(f"--device {spec}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and \
            device.index >= torch.cuda.device_count():
        raise DensevisError(f"--device {spec}: only {torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda"):
        raise DensevisError(f"--device {spec}: only auto, cpu and cuda[:N] are supported")
    return device
