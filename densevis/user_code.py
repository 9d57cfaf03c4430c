"""The user's own code: modules a spec or a command names (hypotheses, model factories) and a
model factory's keyword arguments.

Every module the user names is found by one lookup, :func:`import_module_beside`: beside the
spec file first (its folder is put on ``sys.path`` for the import), then on ``sys.path``.
Importing a module runs its code, like running a script: densevis imports only what the user
names.

Examples
--------
>>> factory = import_factory("torchvision.models:resnet18")
>>> typed_args(factory, {"num_classes": "2"}, "torchvision.models:resnet18")
{'num_classes': 2}
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types
import typing
from pathlib import Path
from typing import Callable

from densevis.errors import DensevisError
from probes import file_sha256
from probes.errors import first_line
from probes.params import parse_value

#: Kinds a text argument is read as when the factory does not declare one, in this order.
GUESSED_KINDS = (int, float, bool)


def import_module_beside(name: str, folder: str | Path | None = None) -> types.ModuleType:
    """Import module ``name`` from ``folder`` first (a spec's folder), then from ``sys.path``;
    :class:`DensevisError` says why it failed (any exception of the module's own code too).

    Examples
    --------
    >>> import_module_beside("json").__name__
    'json'
    >>> import_module_beside("no_such_module_here")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    densevis.errors.DensevisError: module 'no_such_module_here' failed to import ...
    """
    folder = str(Path(folder).resolve()) if folder is not None else None
    added = folder is not None and folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module is reported
        where = f"{folder}, then " if folder else ""
        raise DensevisError(f"module {name!r} failed to import ({type(exc).__name__}: "
                            f"{first_line(exc)}); it is looked up in {where}sys.path "
                            f"(PYTHONPATH)") from None
    finally:
        if added:
            sys.path.remove(folder)


def import_factory(text: str, folder: str | Path | None = None) -> Callable:
    """The callable ``"package.module:name"`` names (``name`` may be dotted: ``Net.small``),
    its module imported by :func:`import_module_beside`. Errors are about ``model``.

    Examples
    --------
    >>> import_factory("torchvision.models:resnet18").__name__
    'resnet18'
    >>> import_factory("torchvision.models:nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    densevis.errors.DensevisError: model 'torchvision.models:nope': module torchvision.models ...
    """
    module_name, _, attribute = text.partition(":")
    if not module_name.strip() or not attribute.strip():
        raise DensevisError(f"{text!r} is not a factory; write package.module:callable, e.g. "
                            f"small_resnet:small_resnet", parameter="model")
    try:
        module = import_module_beside(module_name, folder)
    except DensevisError as exc:
        raise DensevisError(f"{text!r}: {exc}", parameter="model") from None
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            public = sorted(n for n, v in vars(module).items()
                            if callable(v) and not n.startswith("_"))[:8]
            raise DensevisError(f"{text!r}: module {module_name} has no {attribute!r}; its "
                                f"callables: {', '.join(public) or 'none'}", parameter="model")
        target = getattr(target, part)
    if not callable(target):
        raise DensevisError(f"{text!r} is {_a(type(target))}, not a callable that returns a "
                            f"model; name a function or an nn.Module class", parameter="model")
    return target


def source_sha256(target) -> str:
    """SHA-256 of the file that defines ``target`` (a function, class or module): what a
    cache key of its results holds, so that editing the code computes them again; empty when
    it has no source file.

    >>> len(source_sha256(import_factory)) == 64
    True
    """
    try:
        path = inspect.getsourcefile(target)
    except TypeError:  # builtins
        path = None
    return file_sha256(path) if path and Path(path).is_file() else ""


def typed_args(builder: Callable, args: dict, name: str) -> dict:
    """``args`` checked against ``builder``'s signature, text values read as the type each
    parameter declares (its annotation, else its default's type) by
    :func:`probes.params.parse_value`; an undeclared parameter's text reads as the first of
    :data:`GUESSED_KINDS` that fits, else stays text. Values that are not text (from a spec)
    are kept as they are. Errors are about ``model_args``.

    Examples
    --------
    >>> def net(width: int = 8, scale=0.5, tag="a", **extra): ...
    >>> typed_args(net, {"width": "16", "scale": "1", "tag": "7", "dropout": "0.1"}, "net")
    {'width': 16, 'scale': 1.0, 'tag': '7', 'dropout': 0.1}
    >>> typed_args(net, {"width": "wide"}, "net")
    Traceback (most recent call last):
    densevis.errors.DensevisError: model_args width='wide' is not an int (an argument of net)
    """
    try:
        signature = inspect.signature(builder, eval_str=True)
    except (NameError, TypeError, ValueError):  # unresolvable annotations, builtins
        try:
            signature = inspect.signature(builder)
        except (TypeError, ValueError):
            signature = None
    parameters = dict(signature.parameters) if signature is not None else {}
    open_ended = signature is None or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    named = [n for n, p in parameters.items() if p.kind in (p.KEYWORD_ONLY,
                                                              p.POSITIONAL_OR_KEYWORD)]
    typed = {}
    for key, value in args.items():
        if key not in named and not open_ended:
            raise DensevisError(f"{key!r} is not an argument of {name}; its arguments: "
                                f"{', '.join(named) or 'none'}", parameter="model_args")
        if not isinstance(value, str):
            typed[key] = value
            continue
        kind = _declared_kind(parameters.get(key))
        if kind is None:
            typed[key] = next((v for v in (_read(value, k) for k in GUESSED_KINDS)
                               if v is not None), value)
            continue
        typed[key] = _read(value, kind)
        if typed[key] is None:
            raise DensevisError(f"{key}={value!r} is not {_a(kind)} (an argument of {name})",
                                parameter="model_args")
    return typed


def _declared_kind(parameter: inspect.Parameter | None) -> type | None:
    """bool, int, float or str where ``parameter`` declares it, else None."""
    if parameter is None:
        return None
    kinds = (bool, int, float, str)
    hint = parameter.annotation
    if typing.get_origin(hint) in (types.UnionType, typing.Union):  # int | None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else None
    if hint in kinds:
        return hint
    default = parameter.default
    return type(default) if type(default) in kinds else None


def _read(text: str, kind: type):
    try:
        return parse_value(text.strip(), kind)
    except ValueError:
        return None


def _a(kind: type) -> str:
    return f"an {kind.__name__}" if kind.__name__[0] in "aeiou" else f"a {kind.__name__}"
