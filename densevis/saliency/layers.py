"""Layer selection: names of children of ``model.features`` or module paths -> modules."""

from __future__ import annotations

from torch import nn

from densevis.errors import DensevisError


def feature_children(model: nn.Module) -> dict[str, nn.Module]:
    """The children of ``model.features`` by name (empty when the model has no ``features``)."""
    features = getattr(model, "features", None)
    return dict(features.named_children()) if isinstance(features, nn.Module) else {}


def layer_name(model: nn.Module, path: str) -> str:
    """The name of module ``path`` of ``model`` in maps files and tables: a child of
    ``model.features`` by its own name, any other module by its path.

    >>> from densevis.model import build_model
    >>> model = build_model("original")
    >>> layer_name(model, "features.denseblock4"), layer_name(model, "classifier")
    ('denseblock4', 'classifier')
    """
    prefix = "features."
    child = path[len(prefix):]
    return child if path.startswith(prefix) and child in feature_children(model) else path


def resolve_layers(model: nn.Module, spec="all") -> dict[str, nn.Module]:
    """``{key: module}`` for a layer selection, in the order given.

    Parameters
    ----------
    spec : str or list of str
        ``"all"``: every child of ``model.features`` (12 on the original DenseNet, ``conv0`` to
        ``norm5``); ``"a,b"`` or a list of children names (``"denseblock4"``, key as given) or
        module paths (``"features.denseblock1.denselayer2"``; ``"features.<child>"`` is keyed
        ``<child>``).

    Examples
    --------
    >>> from densevis.model import build_model
    >>> model = build_model("original")
    >>> list(resolve_layers(model, "all"))[:5]
    ['conv0', 'norm0', 'relu0', 'pool0', 'denseblock1']
    >>> list(resolve_layers(model, "features.norm5,denseblock1.denselayer1"))
    ['norm5', 'features.denseblock1.denselayer1']
    """
    children = feature_children(model)
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [name.strip() for name in names if name.strip()]
    if names == ["all"]:
        if not children:
            raise DensevisError(f"layers 'all' means the children of model.features, which "
                                f"{type(model).__name__} lacks; name module paths instead, "
                                f"e.g. {_examples(model)}")
        return children
    if not names:
        raise DensevisError("no layer given; use 'all' or names such as "
                            + (", ".join(children) or _examples(model)))
    modules = dict(model.named_modules())
    resolved: dict[str, nn.Module] = {}
    for name in names:
        key = layer_name(model, name)
        if key in children:
            resolved[key] = children[key]
        elif name in modules and name:
            resolved[name] = modules[name]
        elif f"features.{name}" in modules:
            resolved[f"features.{name}"] = modules[f"features.{name}"]
        else:
            valid = ", ".join(children) if children else _examples(model)
            raise DensevisError(f"unknown layer {name!r}; valid: all, {valid}, or a module "
                                f"path such as {_examples(model)}")
    return resolved


def _examples(model: nn.Module) -> str:
    paths = [name for name, _ in model.named_modules() if name.count(".") >= 1][:3]
    return ", ".join(paths) if paths else ", ".join(n for n, _ in model.named_children())
