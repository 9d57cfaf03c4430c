"""Experiment specs: TOML files validated against typed dataclasses.

A spec states everything a run does: data (image size, images per set, seed), model (arch or
a factory of one's own, and training, or existing checkpoints or weights), probe sets,
saliency methods and layers, metrics, sanity checks, hypotheses and outputs. A ``[quick]``
table holds overrides applied by ``densevis run --quick`` (same structure as the spec, e.g.
``[quick.data] size = 64``).

Types are checked here; names, files and values in :mod:`densevis.experiment.checks`. Every
problem is reported with the key, the file and the line, e.g.
``experiments/x.toml line 3: key 'data.sise' is unknown; valid: images_per_set, ...``.

Examples
--------
>>> spec = parse_spec('[data]\\nsize = 64\\n[model]\\narch = "original"\\n', "inline.toml")
>>> spec.data.size, spec.model.name
(64, 'original')
"""

from __future__ import annotations

import copy
import dataclasses
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from densevis.analysis.baselines import BASELINES
from densevis.analysis.hypothesis_registry import HypothesisSpec
from densevis.errors import DensevisError
from densevis.experiment.checks import check_spec
from densevis.recipe import TrainConfig
from densevis.saliency.methods import GROUPS
from probes.atomic import check_input_file

DEFAULT_SPEC = Path(__file__).resolve().parent / "default.toml"


@dataclass(frozen=True)
class DataSpec:
    size: int = 128  # image side in pixels
    seed: int = 0
    train: int = 10000  # base images to train on
    val: int = 1000  # held-out base images
    images_per_set: int = 200  # images of each probe set that are explained and analysed
    pair_scenes: int = 16  # scenes of the pairs set (8 images each)
    train_set: str = "base"  # the set trained and validated on ("mixed" for planted cues)
    # each model trains and validates on images of its own, drawn with its seed (false: every
    # model sees the same training images, so replicates differ only in their training seed)
    resample: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """The models of a run: ``replicates`` trainings of one recipe (seeds ``seed``,
    ``seed + 1``, ...; or the explicit ``seeds``), or the given checkpoints or weights files,
    one replicate each. Every table holds one ``model`` column naming the replicate; verdicts
    replicate across them (:mod:`densevis.analysis.replicates`).

    The model is ``arch`` (a config or a torchvision classifier) or ``factory``, a callable of
    one's own, ``"module:callable"``, its module looked up beside the spec file first; ``args``
    are its keyword arguments (:func:`densevis.model.resolve_model`)."""

    arch: str = ""  # "" means the recipe's default ("original") unless factory is set
    factory: str = ""  # "module:callable" returning an nn.Module with 2 outputs
    args: dict = field(default_factory=dict)  # keyword arguments of the factory (or the arch's)
    # use these checkpoints (one replicate each) instead of training; a string is one
    checkpoint: list[str] = field(default_factory=list)
    # or these weights files of the model (state dicts or .safetensors), one replicate each
    weights: list[str] = field(default_factory=list)
    epochs: int | None = None  # None: the trainer's default
    max_minutes: float | None = None  # training time budget (makes training time-dependent)
    seed: int = 0  # the first replicate's training seed
    replicates: int | None = None  # models trained; None: 3 on CPU, 5 on CUDA (AUTO_REPLICATES)
    seeds: list[int] = field(default_factory=list)  # explicit training seeds, one per replicate
    labels: str = "square"  # label rule: square (ground truth), edge, small, shuffled
    # torch CPU threads of each model's work (training, maps, scores, checks). With 1, the
    # models' work runs side by side, a process each; a model's weights depend on this number,
    # never on the machine's cores or on how many models ran at once
    threads: int = 1

    @property
    def name(self) -> str:
        """The model's name as :func:`densevis.model.resolve_model` reads it."""
        return self.factory or self.arch or TrainConfig.arch


@dataclass(frozen=True)
class ProbesSpec:
    sets: list[str] = field(default_factory=lambda: ["base", "lines_only", "large_squares",
                                                     "small_circles", "pairs"])
    params: dict = field(default_factory=dict)  # set -> {param: value}


@dataclass(frozen=True)
class SaliencySpec:
    methods: list[str] = field(default_factory=lambda: list(GROUPS["panel"]))
    layers: list[str] = field(default_factory=lambda: ["all"])
    params: dict = field(default_factory=dict)  # method -> {param: value}
    method_layers: dict = field(default_factory=dict)  # method -> its own layers
    batch_size: int = 32
    device: str = "auto"


@dataclass(frozen=True)
class SanitySpec:
    """The randomization checks (Adebayo et al. 2018). By default they cover every method and
    layer of ``[saliency]`` (``"saliency"``), so that every map-based verdict can be gated."""

    methods: list[str] = field(default_factory=lambda: ["saliency"])  # [] turns them off
    layers: list[str] = field(default_factory=lambda: ["saliency"])  # of the layer methods
    images: int = 32
    cascading: bool = True
    independent: bool = True
    data_randomization: bool = True
    # the shuffled-label model memorizes these first training images' shuffled labels (no
    # augmentation, the last epoch kept); its fit is recorded with the verdicts
    data_randomization_images: int = 256
    data_randomization_epochs: int = 25
    # replicates (the first ones) whose checks record every cascading step, the independent
    # test and SSIM/HOG: the curves of the report; the others record what the verdicts read
    # (the last cascading step and the shuffled-label model, Spearman measures)
    curves: int = 1


@dataclass(frozen=True)
class AnalysisSpec:
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    sanity: SanitySpec = field(default_factory=SanitySpec)
    seed: int = 0  # of the random baseline and the randomized weights


@dataclass(frozen=True)
class OutputsSpec:
    figures: bool = True
    panels_per_set: int = 2
    html: bool = True


@dataclass(frozen=True)
class ExperimentSpec:
    name: str = "experiment"
    description: str = ""
    data: DataSpec = field(default_factory=DataSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    probes: ProbesSpec = field(default_factory=ProbesSpec)
    saliency: SaliencySpec = field(default_factory=SaliencySpec)
    analysis: AnalysisSpec = field(default_factory=AnalysisSpec)
    hypotheses: list[HypothesisSpec] = field(default_factory=list)
    # modules to import before the hypotheses are checked: they register hypotheses of their
    # own (densevis.analysis.hypothesis); looked up beside the spec file, then on sys.path
    imports: list[str] = field(default_factory=list)
    outputs: OutputsSpec = field(default_factory=OutputsSpec)
    quick: dict = field(default_factory=dict)
    source: str = ""  # the file it was read from (not a TOML key)

    def to_dict(self) -> dict:
        """Plain data (for hashing and provenance), without ``source`` and ``quick``."""
        data = dataclasses.asdict(self)
        data.pop("source")
        data.pop("quick")
        return data


# ------------------------------------------------------------------------------------- loading
def load_spec(path: str | Path | None = None, quick: bool = False) -> ExperimentSpec:
    """Read and validate a spec file (the embedded default when ``path`` is None)."""
    path = check_input_file(path if path is not None else DEFAULT_SPEC, "experiment spec",
                            "give a .toml file such as experiments/default.toml", DensevisError)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DensevisError(f"experiment spec {path} is not a text file; give a .toml file such "
                            f"as experiments/default.toml") from None
    return parse_spec(text, str(path), quick=quick, base_dir=path.parent)


def parse_spec(text: str, source: str = "<spec>", quick: bool = False,
               base_dir: Path | None = None) -> ExperimentSpec:
    """Validate TOML ``text`` as an :class:`ExperimentSpec`; ``quick`` applies ``[quick]``."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DensevisError(f"{source}: not valid TOML ({exc})") from None
    locate = _Locator(text, source)
    raw.pop("source", None)
    if quick and "quick" in raw:
        overrides = raw["quick"]
        _check(ExperimentSpec, {k: v for k, v in overrides.items()}, "quick.", locate,
               partial=True)
        raw = _merge(raw, overrides)
    spec = _build(ExperimentSpec, raw, "", locate)
    spec = dataclasses.replace(spec, source=source)
    check_spec(spec, locate, base_dir)
    return spec


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class _Locator:
    """Line numbers of dotted keys in TOML text (for error messages)."""

    def __init__(self, text: str, source: str):
        self.source = source
        self.lines: dict[str, int] = {}
        table, counts = "", {}
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.split("#", 1)[0].strip()
            header = re.fullmatch(r"\[\[\s*([\w.\-\"]+)\s*\]\]", stripped)
            if header:
                name = header.group(1).replace('"', "")
                table = f"{name}[{counts.get(name, 0)}]"
                counts[name] = counts.get(name, 0) + 1
                self.lines.setdefault(table, number)
                continue
            header = re.fullmatch(r"\[\s*([\w.\-\"]+)\s*\]", stripped)
            if header:
                table = header.group(1).replace('"', "")
                self.lines.setdefault(table, number)
                continue
            assignment = re.match(r"([\w.\-\"]+)\s*=", stripped)
            if assignment:
                key = assignment.group(1).replace('"', "")
                self.lines.setdefault(f"{table}.{key}" if table else key, number)

    def where(self, dotted: str) -> str:
        probe = dotted
        while probe:
            if probe in self.lines:
                return f"{self.source} line {self.lines[probe]}"
            # a table given only by its subtables ([saliency.params.x] for saliency.params)
            nested = [line for key, line in self.lines.items() if key.startswith(probe + ".")]
            if nested:
                return f"{self.source} line {min(nested)}"
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        return self.source

    def error(self, dotted: str, message: str) -> DensevisError:
        return DensevisError(f"{self.where(dotted)}: key '{dotted}' {message}")


def _type_name(hint) -> str:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    if dataclasses.is_dataclass(hint):
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            dict: "a table"}.get(hint, str(hint))


def _convert(hint, value, dotted: str, locate: _Locator):
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(options[0], value, dotted, locate)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise locate.error(dotted, f"must be a table, got {type(value).__name__}")
        return _build(hint, value, dotted + ".", locate)
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str) and item is str:
            value = [value]
        if not isinstance(value, list):
            raise locate.error(dotted, f"must be {_type_name(hint)}, got {type(value).__name__}")
        return [_convert(item, v, f"{dotted}[{k}]" if dataclasses.is_dataclass(item) else dotted,
                         locate) for k, v in enumerate(value)]
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str), dict: isinstance(value, dict)}.get(hint, True)
    if not ok:
        raise locate.error(dotted, f"must be {_type_name(hint)}, got {value!r}")
    return float(value) if hint is float else value


def _check(cls, raw: dict, prefix: str, locate: _Locator, partial: bool = False) -> None:
    """Unknown keys and types of ``raw`` against ``cls`` (no defaults needed when partial)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.name != "source"]
    for key, value in raw.items():
        dotted = prefix + key
        if key not in names or (partial and key == "quick"):
            raise locate.error(dotted, f"is unknown; valid: {', '.join(sorted(names))}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict) and partial:
            _check(hint, value, dotted + ".", locate, partial=True)
        elif not partial:
            _convert(hint, value, dotted, locate)


def _build(cls, raw: dict, prefix: str, locate: _Locator):
    _check(cls, raw, prefix, locate)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            values[f.name] = _convert(hints[f.name], raw[f.name], prefix + f.name, locate)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise locate.error(prefix + f.name, "is missing; it is required")
    return cls(**values)
