"""Model files read as plain data: densevis checkpoints (the contract of ``docs/DESIGN.md``) and
weights trained elsewhere (a state dict, or a ``.safetensors`` file).

Both are read with ``torch.load(weights_only=True)`` (safetensors has no code at all): reading
one runs no code. :mod:`densevis.model` builds the models they hold; the checks here are the
file's own: its format, keys and tensors, whether a state dict fits a model
(:func:`state_mismatch`) and whether its weights are finite (:func:`non_finite`).

Examples
--------
>>> state = read_weights("resnet18.pt")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from densevis.errors import DensevisError
from probes.atomic import check_input_file

FORMAT = "densevis-checkpoint/1"
#: How a checkpoint names its model: a torchvision builder (``arch``) or a factory of the
#: user's (``factory``, "module:callable"); exactly one of them.
MODEL_KEYS = ("arch", "factory")
#: Keys of a dict under which a weights file may hold its state dict.
STATE_KEYS = ("state_dict", "model")


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


def _load_plain(path: Path, what: str, fix: str, redo: str, parameter: str | None = None):
    """``torch.load(path, weights_only=True)``; what is wrong as a :class:`DensevisError`
    (``fix``: how to make a file of the kind, ``redo``: how to make this one again plain)."""
    try:
        # weights only: a model file is plain data, and unpickling anything else can run code
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        needs = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if not needs:  # not a pickle of known operands: not a torch file at all
            raise DensevisError(f"{path} is not a readable torch {what} (UnpicklingError); "
                                f"{fix}", parameter=parameter) from None
        raise DensevisError(f"{what} {path} holds more than plain data ({needs.group(1)}), and "
                            f"loading it could run code; densevis loads only plain data "
                            f"(torch.load(weights_only=True)): {redo}, or, if you trust it, load "
                            f"it with torch.load(..., weights_only=False) and save its plain "
                            f"parts",
                            parameter=parameter) from None
    except Exception as exc:  # torch raises many types for a file that is not a torch file
        raise DensevisError(f"{path} is not a readable torch {what} ({type(exc).__name__}); "
                            f"{fix}", parameter=parameter) from None


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint dict at ``path``, validated; :class:`DensevisError` says what is wrong."""
    fix = "train one with 'densevis train'"
    path = check_input_file(path, "checkpoint", fix, DensevisError)
    checkpoint = _load_plain(path, "checkpoint", fix, "retrain it with 'densevis train'")
    found = checkpoint.get("format") if isinstance(checkpoint, dict) else None
    if found != FORMAT:
        raise DensevisError(f"{path} is not a densevis checkpoint (format {found!r}, expected "
                            f"{FORMAT!r}); {fix}"
                            + (" (weights of your own model: give --model NAME --weights FILE)"
                               if isinstance(checkpoint, dict) and found is None else ""))
    named = [key for key in MODEL_KEYS if key in checkpoint]
    missing = ([] if named else [" or ".join(MODEL_KEYS)]) + [
        k for k in ("config", "state_dict", "image_size") if k not in checkpoint]
    if missing:
        raise DensevisError(f"checkpoint {path} lacks {', '.join(missing)}; it is damaged, "
                            f"retrain it")
    wrong = [key for key, kind in ((named[0], str), ("config", dict), ("state_dict", dict),
                                   ("image_size", int)) if not isinstance(checkpoint[key], kind)]
    if len(named) > 1:
        wrong.insert(0, " and ".join(MODEL_KEYS))
    if wrong or isinstance(checkpoint["image_size"], bool) or checkpoint["image_size"] < 1:
        raise DensevisError(f"checkpoint {path}: {(wrong or ['image_size'])[0]} has the wrong "
                            f"type or value; it is damaged, retrain it")
    return checkpoint


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in weights file ``path``: a ``torch.save``d dict of tensors (or a dict
    holding one under one of :data:`STATE_KEYS`, as a densevis checkpoint does), or a
    ``.safetensors`` file (needs the ``safetensors`` package). Errors are about ``weights``.

    Examples
    --------
    >>> read_weights("nowhere.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    densevis.errors.DensevisError: weights file nowhere.pt not found...
    """
    fix = "save one with torch.save(model.state_dict(), path)"
    path = check_input_file(path, "weights file", fix, DensevisError)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    state = _load_plain(path, "weights file", fix, "save its model's state_dict() instead",
                        parameter="weights")
    if isinstance(state, dict) and not _is_state(state):
        state = next((state[k] for k in STATE_KEYS if _is_state(state.get(k))), state)
    if not _is_state(state):
        kind = type(state).__name__
        raise DensevisError(f"{path} holds a {kind}, not a state dict (a dict of tensors, or a "
                            f"dict holding one under {' or '.join(map(repr, STATE_KEYS))}); "
                            f"{fix}", parameter="weights")
    return state


def _is_state(value) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and torch.is_tensor(v) for k, v in value.items()))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise DensevisError(f"{path} is a safetensors file, which needs the safetensors "
                            f"package: pip install safetensors", parameter="weights") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types
        raise DensevisError(f"{path} is not a readable safetensors file "
                            f"({type(exc).__name__}); save one with "
                            f"safetensors.torch.save_file(model.state_dict(), path)",
                            parameter="weights") from None


def state_mismatch(expected: dict, found: dict) -> str:
    """What differs between a model's state dict ``expected`` and ``found`` (names and
    shapes), in words; empty when they fit.

    Examples
    --------
    >>> state_mismatch({"w": torch.zeros(2)}, {"w": torch.zeros(3), "b": torch.zeros(1)})
    '1 tensor unexpected, e.g. b; 1 tensor of another shape, e.g. w (3,) instead of (2,)'
    """
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


def non_finite(state: dict) -> str:
    """Where state dict ``state`` holds NaN or infinite weights, in words; empty if nowhere.

    >>> non_finite({"a": torch.tensor([float("nan")]), "b": torch.ones(1)})
    'NaN or infinite in a'
    """
    bad = [name for name, tensor in state.items()
           if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if not bad:
        return ""
    return f"NaN or infinite in {bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1 else "")
