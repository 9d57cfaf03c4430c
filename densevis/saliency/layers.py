"""Layer selection: a model's block-level units (found by tracing one forward), the layers
``"all"`` means, module paths -> modules, and the names maps files and tables give layers.

The unit rule, for any ``nn.Module``: walk the model's children; a module is looked into
(replaced by its children, recursively) when it is a plain ``nn.Sequential`` (the class itself:
a subclass such as DenseNet's ``_Transition`` names a block), when the forward never calls it
(an ``nn.ModuleList`` or ``nn.ModuleDict``, a holder whose children the forward calls
directly), or when its output is not a 4-D tensor (a wrapped backbone returning logits); every
other module is one unit (DenseNet's ``_DenseBlock`` and ``_Transition``, ResNet's
``BasicBlock``, a ``Conv2d``). Units are ordered by their first call in the forward, not by
declaration.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from densevis.errors import DensevisError
from densevis.saliency.trace import Trace, image_hw, trace


@dataclass(frozen=True)
class Unit:
    """A block-level module of a traced model.

    Attributes
    ----------
    path : str
        Its module path (``features.denseblock1``, ``layer1.0``).
    module : nn.Module
    calls : int
        How many times one forward calls it.
    shape : tuple or None
        The shape of its (first) output, ``None`` when that is not a tensor.
    """

    path: str
    module: nn.Module
    calls: int
    shape: tuple | None

    @property
    def spatial(self) -> bool:
        """Its output is a map (N, K, h, w) larger than 1x1 (what a CAM can be computed on)."""
        return self.shape is not None and len(self.shape) == 4 and self.shape[-2] * \
            self.shape[-1] > 1


def block_units(model: nn.Module, image_size=None) -> list[Unit]:
    """The units of ``model`` (the rule of the module docstring) that its forward calls, in the
    order of their first call, traced on one blank image of ``image_size``
    (:func:`~densevis.saliency.trace.trace`).

    Examples
    --------
    >>> from densevis.model import build_model
    >>> [unit.path for unit in block_units(build_model("resnet18"), 64)][:6]
    ['conv1', 'bn1', 'relu', 'maxpool', 'layer1.0', 'layer1.1']
    """
    record = trace(model, image_size)
    units: dict[int, Unit] = {}  # by module: a module registered twice is one unit
    _walk(model, "", record, units)
    return sorted(units.values(), key=lambda unit: record.first[id(unit.module)])


def _walk(parent: nn.Module, prefix: str, record: Trace, units: dict) -> None:
    for name, child in parent.named_children():
        path, key = f"{prefix}{name}", id(child)
        calls, shape = record.count(child), record.shapes.get(key)
        container = (type(child) is nn.Sequential or calls == 0 or shape is None
                     or len(shape) != 4)
        if container and next(child.children(), None) is not None:
            _walk(child, f"{path}.", record, units)
        elif calls and key not in units:
            units[key] = Unit(path, child, calls, shape)


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


def reused_layer(key: str, calls: int) -> DensevisError:
    """The error for a layer the forward calls more than once (no one output to explain)."""
    return DensevisError(f"layer {key} is called {calls} times per forward (a module the model "
                         f"reuses, such as one nn.ReLU applied twice), so it has no one output "
                         f"to explain; name a module that runs once (the block around it, or "
                         f"the layer before it)")


def selects_all(spec) -> bool:
    """Whether a layer selection is ``"all"`` (which needs a trace of the model)."""
    return _names(spec) == ["all"]


def resolve_layers(model: nn.Module, spec="all", *, image_size=None) -> dict[str, nn.Module]:
    """``{key: module}`` for a layer selection, in network order for ``"all"``, else as given.

    Parameters
    ----------
    spec : str or list of str
        ``"all"``: every unit of :func:`block_units` that the forward calls exactly once and
        whose output is a spatial map (a 4-D tensor larger than 1x1 at ``image_size``), in the
        order of first call. Not in ``"all"``: a module called twice (a reused ``nn.ReLU`` or
        block: no one output), a 2-D output (a ``Linear``), a 1x1 map (a global pooling: a CAM
        of it is constant). On the original DenseNet from 64 px up: the 12 children of
        ``features``, ``conv0`` to ``norm5``; on ResNets ``conv1``, ``bn1``, ``relu``,
        ``maxpool``, ``layer1.0`` ... ``layer4.1``. ``"a,b"`` or a list: children of
        ``model.features`` by name (``"denseblock4"``, key as given) or module paths
        (``"features.denseblock1.denselayer2"``; ``"features.<child>"`` is keyed ``<child>``).
    image_size : int or (int, int), optional
        The side (or height and width) of the model's images. ``"all"`` traces one forward at
        it (default :data:`~densevis.saliency.trace.DEFAULT_IMAGE_SIZE`); named layers are then
        also checked to run exactly once.

    Raises
    ------
    DensevisError
        An unknown name, a named layer that does not run or runs more than once, no spatial
        unit for ``"all"``, or a model that cannot run at ``image_size``.

    Examples
    --------
    >>> from densevis.model import build_model
    >>> model = build_model("original")
    >>> list(resolve_layers(model, "all", image_size=64))[:5]
    ['conv0', 'norm0', 'relu0', 'pool0', 'denseblock1']
    >>> list(resolve_layers(model, "features.norm5,denseblock1.denselayer1"))
    ['norm5', 'features.denseblock1.denselayer1']
    """
    children = feature_children(model)
    names = _names(spec)
    if names == ["all"]:
        units = block_units(model, image_size)
        layers = {layer_name(model, unit.path): unit.module for unit in units
                  if unit.calls == 1 and unit.spatial}
        if not layers:
            raise DensevisError(f"layers 'all' found no module of {type(model).__name__} that "
                                f"runs once and outputs a spatial map (N, K, h, w) larger than "
                                f"1x1 on {'x'.join(map(str, image_hw(image_size)))} images; "
                                f"name module paths instead, "
                                f"e.g. {_examples(model)}")
        return layers
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
    if image_size is not None:
        record = trace(model, image_size)
        for key, module in resolved.items():
            if record.count(module) == 0:
                raise DensevisError(f"layer {key} does not run in the forward of "
                                    f"{type(model).__name__}; choose another layer")
            if record.count(module) > 1:
                raise reused_layer(key, record.count(module))
    return resolved


def _names(spec) -> list[str]:
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    return [name.strip() for name in names if name.strip()]


def _examples(model: nn.Module) -> str:
    paths = [name for name, _ in model.named_modules() if name.count(".") >= 1][:3]
    return ", ".join(paths) if paths else ", ".join(n for n, _ in model.named_children())
