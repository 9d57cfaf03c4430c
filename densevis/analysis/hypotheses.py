"""The hypothesis registry: the study's questions as tests on the tidy metrics table (and the
sanity-check similarities), and the one :func:`evaluate` that every driver calls.

A hypothesis is one registered definition (:func:`hypothesis`): its name, its question, its
statistics (each with key, formula, unit, direction, role and the probe sets it reads; the
margin comes from the unit, see :data:`UNITS`) and one function that adds its rows. Everything
else (spec validation, ``densevis analyze``, ``densevis run``, the pytest plugin, the report)
reads those declarations from :data:`HYPOTHESES`. A spec's ``[[hypotheses]]`` entry is a
:class:`HypothesisSpec`: it selects a registered hypothesis (or states a custom one) and may
keep some statistics, methods and layers, set margins per statistic and declare the family.

Verdicts (:mod:`densevis.analysis.stats`): per row the median (sign test) or Hodges-Lehmann
shift (Mann-Whitney), bounds that invert the same test, Bonferroni within each family (the
declared family, split into the model's ``behaviour`` and its ``maps``). Per hypothesis,
method and layer an ``overall`` row: supported iff every primary statistic is (none may be
missing), rejected iff any is. A map-based ``supported`` also needs the method and layer to
pass ``passes_randomization`` **in the same table**: unchecked, inconclusive or failing gives
``inconclusive`` with a note saying which.

Replicate models (a ``model`` column): :func:`evaluate_replicated` (module
:mod:`densevis.analysis.replicates`) runs :func:`evaluate` per model and adds the rows across
them (replication: supported iff every model's own verdict is; a t test over the models beside
it).

Built-ins
---------
``localizes_square`` (per method and layer; base set's images with a square, or
    ``squares_only`` / ``large_squares`` when the base set is not scored): ``mass_minus_area > 0``,
    ``density_ratio > 1``, and ``mass_minus_area`` above each null baseline's on the same images
    (paired; for layer-resolution maps the baseline pooled to the layer's grid).
``edge_detector`` (would a line alone do?)
    primary: the logit margin is higher on ``lines_only`` than on square-free controls, and on
    ``pairs`` the loose ``sides`` keep more of the square's evidence than removing it; maps:
    ``line_mass > circle_mass`` on ``lines_only`` and that contrast above each null baseline's.
    Secondary: ``edge_interior_ratio > 1``, the ``outline`` keeping more than removing.
``small_object_detector`` (is the square just the smallest thing?)
    primary: small circles raise the margin over square-free controls; maps:
    ``smallest_object_mass > square_mass`` and that contrast above each null baseline's.
    Secondary: large squares, doubling and halving in logits; ``circle_mass > square_mass`` on
    ``large_squares``.
``passes_randomization`` (per method and layer)
    the median similarity (``spearman_abs`` by default) of the maps to the trained model's is
    below ``threshold`` (0.5) once every layer is re-initialized (cascading, last step) and,
    where it ran, for the shuffled-label model. Supported = passes; rejected = its maps stay
    similar (it is flagged).

Examples
--------
>>> import pandas as pd, numpy as np
>>> rng = np.random.default_rng(0)
>>> metrics = pd.DataFrame({"set": "base", "image": np.arange(30), "method": "model",
...                         "layer": "", "reduction": "", "metric": "logit_margin",
...                         "value": rng.normal(3, 1, 30), "note": ""})
>>> spec = HypothesisSpec("margin_positive", set="base", metric="logit_margin", margin=1.0)
>>> table = evaluate(metrics, hypotheses=[spec])
>>> table[["statistic", "verdict"]].values.tolist()
[['overall', 'supported'], ['logit_margin > 0', 'supported']]
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from densevis.analysis.baselines import BASELINES
from densevis.analysis.stats import adjust, combine_verdicts, test_hypothesis
from densevis.errors import DensevisError
from densevis.saliency.methods import METHODS

MODEL = "model"  # the method name of behaviour rows (from logits)
RANDOMIZATION = "passes_randomization"
#: Sets whose squares the map-based statistics use, in order of preference.
SQUARE_SETS = ("base", "squares_only", "large_squares")
#: ``Statistic.sets`` of a statistic that reads the squares of any one of :data:`SQUARE_SETS`.
ANY_SQUARE_SET = (SQUARE_SETS,)
#: A square-free control: ``circles_only``, else the base set's images without a square.
CONTROL_SETS = ("circles_only", "base")
#: Units of the statistics and the smallest effect that matters in each (the default margin).
UNITS = {
    "mass share": 0.05,           # share of the map's mass beyond the area share
    "ratio": 0.25,                # density_ratio, edge_interior_ratio above 1
    "area-corrected mass": 0.25,  # difference of area-corrected masses (1 = image mean)
    "logit": 1.0,                 # logit-margin difference
    "similarity": 0.0,            # rank correlation: the threshold itself is the line
    "metric": 0.0,                # a custom hypothesis' metric, in its own units
}
KINDS = ("maps", "behaviour")
#: The tables contract's ten columns first, then the details.
COLUMNS = ["hypothesis", "method", "layer", "statistic", "effect", "ci_low", "ci_high",
           "p_value", "p_adjusted", "verdict", "statistic_key", "role", "ci_level", "n",
           "estimand", "test", "unit", "direction", "null", "effect_margin", "alpha", "family",
           "family_size", "correction", "rank_biserial", "paired", "sets", "rule", "note"]
#: How an ``overall`` row decides (its ``rule`` column).
OVERALL_RULE = ("supported iff every primary statistic is, none is missing and, for maps, the "
                "method and layer pass passes_randomization in the same table; rejected iff "
                "any primary statistic is; else inconclusive")


@dataclass(frozen=True)
class Statistic:
    """One statistic of a hypothesis.

    Attributes
    ----------
    key : str
        Machine-readable name, unique in the hypothesis (``statistic_key`` column; a per-baseline
        statistic's rows are ``key.baseline``).
    text : str
        The formula shown (``statistic`` column); ``{baseline}`` and the hypothesis' options
        (e.g. ``{threshold}``) are filled in.
    unit : str
        One of :data:`UNITS`; its entry is the default margin.
    kind : str
        ``maps`` (per method and layer) or ``behaviour`` (the model's logits, method ``model``).
    role : str
        ``primary`` (decides the overall verdict) or ``secondary`` (reported beside it).
    direction : str
        ``greater`` or ``less``: the side the hypothesis predicts.
    per_baseline : bool
        One row per null baseline in the table.
    required : bool
        A primary whose absence leaves the overall verdict inconclusive.
    sets : tuple of tuples
        The probe sets it reads: each entry lists alternatives, one of which must be in the run.
    """

    key: str
    text: str
    unit: str
    kind: str = "maps"
    role: str = "primary"
    direction: str = "greater"
    per_baseline: bool = False
    required: bool = True
    sets: tuple = ()

    @property
    def margin(self) -> float:
        return UNITS[self.unit]


@dataclass(frozen=True)
class Hypothesis:
    """A registered hypothesis: declarations and the function adding its rows to a
    :class:`Context`. ``source`` is the table it reads (``metrics`` or ``similarity``);
    ``options`` are the parameters a spec may set, with their defaults."""

    name: str
    question: str
    statistics: tuple
    compute: Callable
    source: str = "metrics"
    options: dict = field(default_factory=dict)

    def statistic(self, key: str) -> Statistic:
        for statistic in self.statistics:
            if statistic.key == key:
                return statistic
        raise DensevisError(f"hypothesis {self.name!r} has no statistic {key!r}; it has: "
                            f"{', '.join(s.key for s in self.statistics)}")

    def needed_sets(self, keep=()) -> list[tuple[str, ...]]:
        """Alternatives of probe sets its required primary statistics (of ``keep``) read."""
        needed = []
        for s in self.statistics:
            if s.role == "primary" and s.required and (not keep or s.key in keep):
                needed += [group for group in s.sets if group not in needed]
        return needed


#: Every registered hypothesis by name.
HYPOTHESES: dict[str, Hypothesis] = {}


def hypothesis(name: str, question: str, statistics, source: str = "metrics", **options):
    """Decorator registering ``compute(context)`` as hypothesis ``name``.

    Examples
    --------
    >>> @hypothesis("square_is_found", "Is the square found at all?",
    ...             [Statistic("pointing", "pointing_game > 0.5", "ratio", sets=(("base",),))])
    ... def square_is_found(context):
    ...     for method, layer in context.explained("base", "pointing_game"):
    ...         context.test("pointing", method, layer, "base",
    ...                      context.series("base", "pointing_game", method, layer), null=0.5)
    >>> HYPOTHESES["square_is_found"].needed_sets()
    [('base',)]
    >>> del HYPOTHESES["square_is_found"]
    """
    statistics = tuple(statistics)
    for s in statistics:
        if s.unit not in UNITS or s.kind not in KINDS or s.role not in ("primary", "secondary"):
            raise ValueError(f"statistic {s.key!r}: unit in {list(UNITS)}, kind in {KINDS}, "
                             f"role primary or secondary")

    def decorate(compute: Callable) -> Callable:
        HYPOTHESES[name] = Hypothesis(name, question, statistics, compute, source, options)
        return compute
    return decorate


@dataclass(frozen=True)
class HypothesisSpec:
    """A spec's ``[[hypotheses]]`` entry: a registered hypothesis selected (and narrowed), or a
    custom one: ``metric`` on ``set`` lies on ``direction`` of ``threshold``, per method and
    layer."""

    name: str
    family: str = ""  # Bonferroni-corrected together (split into behaviour and maps)
    alpha: float = 0.05
    statistics: list[str] = field(default_factory=list)  # keep only these (default: all)
    margins: dict = field(default_factory=dict)  # statistic key -> smallest meaningful effect
    methods: list[str] = field(default_factory=list)  # keep only these (default: all)
    layers: list[str] = field(default_factory=list)
    threshold: float | None = None  # passes_randomization: similarity; custom: the null value
    similarity: str = ""  # passes_randomization: the similarity measure (spearman_abs)
    set: str = ""  # custom: the probe set
    metric: str = ""  # custom: the metric tested
    direction: str = "greater"  # custom
    margin: float | None = None  # custom: smallest meaningful effect (default 0)


def default_specs() -> list[HypothesisSpec]:
    """Every registered hypothesis, each its own family."""
    return [HypothesisSpec(name) for name in HYPOTHESES]


def resolve(spec: HypothesisSpec) -> Hypothesis:
    """The registered hypothesis ``spec`` names, or the custom one it states."""
    if spec.name in HYPOTHESES:
        return HYPOTHESES[spec.name]
    if not (spec.set and spec.metric):
        raise DensevisError(f"hypothesis {spec.name!r} is not registered (built-ins: "
                            f"{', '.join(HYPOTHESES)}); a custom hypothesis needs set and metric")
    sign = ">" if spec.direction == "greater" else "<"
    null = spec.threshold or 0.0
    statistic = Statistic(spec.metric, f"{spec.metric} {sign} {null:g}", "metric",
                          direction=spec.direction, sets=((spec.set,),))

    def compute(context: Context) -> None:
        rows = context.metrics[(context.metrics["set"] == spec.set)
                               & (context.metrics["metric"] == spec.metric)]
        if rows.empty:
            raise DensevisError(f"hypothesis {spec.name!r}: no values of metric "
                                f"{spec.metric!r} on set {spec.set!r} in this run")
        for method, layer in sorted(set(zip(rows["method"], rows["layer"]))):
            context.test(spec.metric, method, layer, spec.set,
                         context.series(spec.set, spec.metric, method, layer), null=null)
    return Hypothesis(spec.name, f"Custom: {statistic.text} on {spec.set}", (statistic,),
                      compute)


# ------------------------------------------------------------------------------------- context
_SERIES_KEYS = ["set", "metric", "method", "layer"]
_LAST_INDEX: list = [lambda: None, {}, ()]  # (a metrics table, its row index, arrays)


def _rows_by_key(metrics: pd.DataFrame) -> dict:
    """Row positions of ``metrics`` per (set, metric, method, layer), built once per table:
    hundreds of statistics each select one series, and a boolean mask per selection over a
    million-row table costs seconds. Tables are read, never changed, while tested."""
    if _LAST_INDEX[0]() is not metrics:
        _LAST_INDEX[:] = [weakref.ref(metrics),
                          metrics.groupby(_SERIES_KEYS, sort=False, dropna=False).indices,
                          (np.asarray(metrics["image"], dtype=np.int64),
                           np.asarray(metrics["value"], dtype=float))]
    return _LAST_INDEX[1]


def _image_values(metrics: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``metrics``' image and value columns as numpy arrays, converted once per table."""
    _rows_by_key(metrics)
    return _LAST_INDEX[2]


def _first_per_image(images: np.ndarray, values: np.ndarray) -> pd.Series:
    """Per image (sorted) its first non-NaN value, NaN where it has none: what
    ``groupby("image")["value"].first()`` gives, without a groupby per series."""
    order = np.argsort(images, kind="stable")
    images, values = images[order], values[order].astype(float)
    every = np.unique(images)
    finite = ~np.isnan(values)
    found, first = np.unique(images[finite], return_index=True)
    series = pd.Series(values[finite][first], index=pd.Index(found, name="image"), name="value")
    return series if len(found) == len(every) else \
        series.reindex(pd.Index(every, name="image"))


def at_layer_resolution(method: str) -> bool:
    """Whether ``method``'s maps are at its layer's grid (declared on the method)."""
    declared = METHODS.get(method)
    return declared is not None and declared.resolution == "layer"


class Context:
    """What a hypothesis' function reads (tables, options) and the rows it adds."""

    def __init__(self, definition: Hypothesis, spec: HypothesisSpec, metrics: pd.DataFrame,
                 similarity: pd.DataFrame | None, baselines: list[str]):
        self.definition, self.spec = definition, spec
        self.metrics, self.similarity, self.baselines = metrics, similarity, baselines
        self.options = {name: (default if getattr(spec, name, None) in (None, "")
                               else getattr(spec, name))
                        for name, default in definition.options.items()}
        self.rows: list[dict] = []
        self._series: dict[tuple, pd.Series] = {}

    # -- reading --------------------------------------------------------------------------------
    def series(self, set_name: str, metric: str, method: str = MODEL,
               layer: str = "") -> pd.Series:
        """Per-image values of one metric of one map (or of the model) on one set."""
        key = (set_name, metric, method, layer)
        if key not in self._series:  # baselines are read once per method and layer compared
            rows = _rows_by_key(self.metrics).get(key, np.empty(0, np.int64))
            images, values = _image_values(self.metrics)
            self._series[key] = _first_per_image(images[rows], values[rows])
        return self._series[key]

    def explained(self, set_name: str, metric: str) -> list[tuple[str, str]]:
        """(method, layer) of the saliency maps scored on ``metric`` in ``set_name``."""
        skip = (MODEL,) + BASELINES
        return sorted({(method, layer) for (name, scored, method, layer)
                       in _rows_by_key(self.metrics)
                       if name == set_name and scored == metric and method not in skip})

    def baseline(self, set_name: str, metric: str, baseline: str, method: str,
                 layer: str) -> pd.Series:
        """``baseline``'s values as ``method`` at ``layer`` is compared with them: pooled to the
        layer's grid for layer-resolution maps (when the table has them), else at full
        resolution."""
        if layer and at_layer_resolution(method):
            matched = self.series(set_name, metric, baseline, layer)
            if len(matched):
                return matched
        return self.series(set_name, metric, baseline)

    def square_set(self, metric: str) -> str:
        """The first of :data:`SQUARE_SETS` scored on ``metric``."""
        scored = set(self.metrics.loc[self.metrics["metric"] == metric, "set"])
        return next((name for name in SQUARE_SETS if name in scored), SQUARE_SETS[0])

    def by_label(self, set_name: str, label: int) -> pd.Series:
        """Logit margins of the images of ``set_name`` whose label is ``label``."""
        margins, labels = (self.series(set_name, m) for m in ("logit_margin", "label"))
        return margins[labels.reindex(margins.index) == label]

    def control(self) -> tuple[pd.Series, str]:
        """Margins of a square-free control (see :data:`CONTROL_SETS`) and its name."""
        margins = self.series(CONTROL_SETS[0], "logit_margin")
        if len(margins):
            return margins, CONTROL_SETS[0]
        return self.by_label(CONTROL_SETS[1], 0), f"{CONTROL_SETS[1]} (label 0)"

    # -- testing --------------------------------------------------------------------------------
    def test(self, key: str, method: str, layer: str, sets: str, a: pd.Series,
             b: pd.Series | None = None, paired: bool = True, null: float = 0.0,
             baseline: str | None = None, note: str = "") -> None:
        """Add the row of statistic ``key`` (one sample, paired on the index, or unpaired)."""
        statistic = self.definition.statistic(key)
        if self.spec.statistics and key not in self.spec.statistics:
            return
        if b is not None and paired:
            a, b = a.align(b, join="inner")
        if not len(a) or (b is not None and not len(b)):
            return
        margin = float(self.spec.margins.get(key, statistic.margin)
                       if self.spec.name in HYPOTHESES else self.spec.margin or 0.0)
        result = test_hypothesis(a.to_numpy(), None if b is None else b.to_numpy(),
                                 paired=paired, null=null, direction=statistic.direction,
                                 margin=margin, alpha=self.spec.alpha)
        self.rows.append({
            "hypothesis": self.definition.name, "method": method, "layer": layer,
            "statistic": statistic.text.format(baseline=baseline, **self.options),
            "statistic_key": key if baseline is None else f"{key}.{baseline}",
            "role": statistic.role, "unit": statistic.unit, "sets": sets,
            **result, "note": "; ".join(filter(None, (result["note"], note)))})

    def pairs_delta(self, key: str, variant: str, other: str) -> None:
        """``logit_delta_<variant> > logit_delta_<other>`` on the pairs' scenes."""
        self.test(key, MODEL, "", "pairs", self.series("pairs", f"logit_delta_{variant}"),
                  self.series("pairs", f"logit_delta_{other}"))

    def mass_contrast(self, key: str, set_name: str, more: str, less: str) -> None:
        """``more > less`` per image (``key``), and that contrast above each null baseline's on
        the same images (``key_vs_baseline``). Area-corrected mass favours thin and small shapes
        for any map that follows edges (the Sobel map itself puts more on lines than on
        circles, and on the smallest object than on the square), so only a contrast beyond the
        baselines' says something about the model."""
        for method, layer in self.explained(set_name, more):
            contrast = (self.series(set_name, more, method, layer)
                        - self.series(set_name, less, method, layer)).dropna()
            self.test(key, method, layer, set_name, contrast)
            for baseline in self.baselines:
                reference = (self.baseline(set_name, more, baseline, method, layer)
                             - self.baseline(set_name, less, baseline, method, layer)).dropna()
                self.test(f"{key}_vs_baseline", method, layer, set_name, contrast, reference,
                          baseline=baseline)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=[c for c in COLUMNS if c not in (
            "ci_low", "ci_high", "ci_level", "p_adjusted", "verdict", "family", "family_size",
            "correction", "rule")] + ["evidence"])


# ------------------------------------------------------------------------------------ built-ins
@hypothesis("localizes_square",
            "Do the maps put relevance on the square beyond its area and beyond null maps?", [
                Statistic("mass_minus_area", "mass_minus_area > 0", "mass share",
                          sets=ANY_SQUARE_SET),
                Statistic("density_ratio", "density_ratio > 1", "ratio", sets=ANY_SQUARE_SET),
                Statistic("mass_vs_baseline", "mass_minus_area > {baseline}'s", "mass share",
                          per_baseline=True, sets=ANY_SQUARE_SET)])
def localizes_square(context: Context) -> None:
    set_name = context.square_set("mass_minus_area")
    for method, layer in context.explained(set_name, "mass_minus_area"):
        mass = context.series(set_name, "mass_minus_area", method, layer)
        context.test("mass_minus_area", method, layer, set_name, mass)
        context.test("density_ratio", method, layer, set_name,
                     context.series(set_name, "density_ratio", method, layer), null=1.0)
        for baseline in context.baselines:
            context.test("mass_vs_baseline", method, layer, set_name, mass,
                         context.baseline(set_name, "mass_minus_area", baseline, method, layer),
                         baseline=baseline)


@hypothesis("edge_detector", "Is the model an edge/line detector: would a line alone do?", [
    Statistic("lines_vs_control", "logit_margin: lines_only > square-free control", "logit",
              kind="behaviour", sets=(("lines_only",), CONTROL_SETS)),
    Statistic("sides_vs_removed", "logit_delta_sides > logit_delta_removed", "logit",
              kind="behaviour", sets=(("pairs",),)),
    Statistic("outline_vs_removed", "logit_delta_outline > logit_delta_removed", "logit",
              kind="behaviour", role="secondary", sets=(("pairs",),)),
    Statistic("line_vs_circle_mass", "line_mass > circle_mass", "area-corrected mass",
              sets=(("lines_only",),)),
    Statistic("line_vs_circle_mass_vs_baseline", "line_mass - circle_mass > {baseline}'s",
              "area-corrected mass", per_baseline=True, sets=(("lines_only",),)),
    Statistic("edge_interior_ratio", "edge_interior_ratio > 1", "ratio", role="secondary",
              sets=ANY_SQUARE_SET)])
def edge_detector(context: Context) -> None:
    context.mass_contrast("line_vs_circle_mass", "lines_only", "line_mass", "circle_mass")
    square_set = context.square_set("edge_interior_ratio")
    for method, layer in context.explained(square_set, "edge_interior_ratio"):
        context.test("edge_interior_ratio", method, layer, square_set,
                     context.series(square_set, "edge_interior_ratio", method, layer), null=1.0)
    control, control_set = context.control()
    context.test("lines_vs_control", MODEL, "", f"lines_only, {control_set}",
                 context.series("lines_only", "logit_margin"), control, paired=False)
    context.pairs_delta("sides_vs_removed", "sides", "removed")
    context.pairs_delta("outline_vs_removed", "outline", "removed")


@hypothesis("small_object_detector", "Is the model a small-object detector: is the square just "
            "the smallest thing?", [
                Statistic("small_circles_vs_control",
                          "logit_margin: small_circles > square-free control", "logit",
                          kind="behaviour", sets=(("small_circles",), CONTROL_SETS)),
                Statistic("large_vs_base_squares",
                          "logit_margin: large_squares < base-size squares", "logit",
                          kind="behaviour", role="secondary", direction="less",
                          sets=(("large_squares",), ("base", "squares_only"))),
                Statistic("double_delta", "logit_delta_double < 0", "logit", kind="behaviour",
                          role="secondary", direction="less", sets=(("pairs",),)),
                Statistic("half_vs_double", "logit_delta_half > logit_delta_double", "logit",
                          kind="behaviour", role="secondary", sets=(("pairs",),)),
                Statistic("smallest_vs_square_mass", "smallest_object_mass > square_mass",
                          "area-corrected mass", sets=ANY_SQUARE_SET),
                Statistic("smallest_vs_square_mass_vs_baseline",
                          "smallest_object_mass - square_mass > {baseline}'s",
                          "area-corrected mass", per_baseline=True, sets=ANY_SQUARE_SET),
                Statistic("large_squares_circle_vs_square_mass",
                          "circle_mass > square_mass on large_squares", "area-corrected mass",
                          role="secondary", sets=(("large_squares",),))])
def small_object_detector(context: Context) -> None:
    square_set = context.square_set("smallest_object_mass")
    context.mass_contrast("smallest_vs_square_mass", square_set, "smallest_object_mass",
                          "square_mass")
    for method, layer in context.explained("large_squares", "circle_mass"):
        context.test("large_squares_circle_vs_square_mass", method, layer, "large_squares",
                     context.series("large_squares", "circle_mass", method, layer),
                     context.series("large_squares", "square_mass", method, layer))
    control, control_set = context.control()
    context.test("small_circles_vs_control", MODEL, "", f"small_circles, {control_set}",
                 context.series("small_circles", "logit_margin"), control, paired=False)
    squares, squares_set = context.by_label("base", 1), "base (label 1)"
    if not len(squares):
        squares, squares_set = context.series("squares_only", "logit_margin"), "squares_only"
    context.test("large_vs_base_squares", MODEL, "", f"large_squares, {squares_set}",
                 context.series("large_squares", "logit_margin"), squares, paired=False)
    context.test("double_delta", MODEL, "", "pairs", context.series("pairs", "logit_delta_double"))
    context.pairs_delta("half_vs_double", "half", "double")


@hypothesis(RANDOMIZATION, "Do the maps change when the model's weights (or labels) are "
            "randomized, as maps that explain the model must?", [
                Statistic("cascading", "cascading, all layers: median {similarity} < "
                          "{threshold:g}", "similarity", direction="less"),
                Statistic("shuffled_labels", "shuffled labels: median {similarity} < "
                          "{threshold:g}", "similarity", direction="less", required=False)],
            source="similarity", threshold=0.5, similarity="spearman_abs")
def passes_randomization(context: Context) -> None:
    """At the last cascading step (every layer group re-initialized) and for the shuffled-label
    model (``test == "data"``), per method and layer."""
    similarity, threshold = context.similarity, context.options["threshold"]
    rows = similarity[similarity["metric"] == context.options["similarity"]]
    fit = similarity.loc[similarity["metric"] == "label_fit", "value"]
    fitted = (f"the shuffled-label model reproduces {fit.mean():.0%} of its {len(fit)} "
              f"shuffled training labels" if len(fit) else "")
    for test, key in (("cascading", "cascading"), ("data", "shuffled_labels")):
        part = rows[rows["test"] == test]
        if part.empty:
            continue
        part = part[part["step_index"] == part["step_index"].max()]
        for (method, layer), group in part.groupby(["method", "layer"], sort=True):
            context.test(key, method, layer, test, group.set_index("image")["value"],
                         null=threshold, note=fitted if test == "data" else "")


# ------------------------------------------------------------------------------------ evaluate
def _missing_primaries(definition: Hypothesis, spec: HypothesisSpec, method: str,
                       group: pd.DataFrame, baselines: list[str]) -> list[str]:
    """Keys of the required primary statistics a (method, layer) group lacks (a custom
    hypothesis has one statistic: its group cannot lack it)."""
    if definition.name not in HYPOTHESES:
        return []
    kind = "behaviour" if method == MODEL else "maps"
    expected = []
    for s in definition.statistics:
        if s.role == "primary" and s.required and s.kind == kind and \
                (not spec.statistics or s.key in spec.statistics):
            expected += [f"{s.key}.{b}" for b in baselines] if s.per_baseline else [s.key]
    found = set(group["statistic_key"])
    return [key for key in expected if key not in found]


def _gate(table: pd.DataFrame) -> dict:
    """``(method, layer) -> verdict`` of ``passes_randomization``'s overall in ``table``."""
    checks = {}
    rows = table[table["hypothesis"] == RANDOMIZATION]
    for (method, layer), group in rows.groupby(["method", "layer"], sort=False):
        primary = group[group["role"] == "primary"]
        checks[(method, layer)] = combine_verdicts(primary["verdict"]) if len(primary) \
            else "inconclusive"
    return checks


def _gate_note(method: str, layer: str, check: str | None, hypothesis_name: str) -> str:
    where = f"{method}{f' at {layer}' if layer else ''}"
    reason = {None: "has no randomization check in this table",
              "inconclusive": "has an inconclusive randomization check",
              "rejected": "fails passes_randomization: its maps do not show the model"}[check]
    return (f"{where} {reason}, so its statistics (all supported) are no evidence for "
            f"{hypothesis_name}")


def overall(table: pd.DataFrame, definitions: dict, specs: dict,
            baselines: list[str]) -> pd.DataFrame:
    """One ``overall`` row per (hypothesis, method, layer) of a finished table (see the module
    docstring): the intersection-union verdict of its primary statistics, inconclusive when one
    is missing (``baselines``: those the per-baseline statistics should cover), and, for maps,
    gated by ``passes_randomization`` in the same table."""
    checks = _gate(table)
    rows = []
    for (name, method, layer), group in table.groupby(["hypothesis", "method", "layer"],
                                                      sort=False):
        definition, spec = definitions[name], specs[name]
        parts = group[group["role"] == "primary"]
        verdict, notes = combine_verdicts(parts["verdict"]), []
        missing = _missing_primaries(definition, spec, method, group, baselines)
        if missing or parts.empty:
            verdict = "inconclusive" if verdict == "supported" else verdict
            notes.append(f"primary statistics not tested: {', '.join(missing) or 'all'}")
        if name != RANDOMIZATION and method != MODEL and verdict == "supported" \
                and checks.get((method, layer)) != "supported":
            verdict = "inconclusive"
            notes.append(_gate_note(method, layer, checks.get((method, layer)), name))
        rows.append({"hypothesis": name, "method": method, "layer": layer,
                     "statistic": "overall", "statistic_key": "overall", "role": "overall",
                     "p_value": parts["p_value"].max(), "p_adjusted": parts["p_adjusted"].max(),
                     "verdict": verdict, "family": group["family"].iloc[0],
                     "alpha": group["alpha"].iloc[0], "test": "intersection-union",
                     "rule": OVERALL_RULE, "note": "; ".join(notes),
                     "sets": ", ".join(sorted(set(parts["sets"])))})
    return pd.DataFrame(rows, columns=table.columns)


def evaluate(metrics: pd.DataFrame | None, similarity: pd.DataFrame | None = None,
             hypotheses: list[HypothesisSpec] | None = None) -> pd.DataFrame:
    """The hypotheses table: every row of ``hypotheses`` (default: :func:`default_specs`) on
    ``metrics`` and the sanity ``similarity`` table, finished within its family, with the
    ``overall`` rows first. ``densevis analyze``, ``densevis run`` and the pytest plugin all
    get their table from here.

    Families: the spec's ``family`` (default: the hypothesis' name) + ``/behaviour`` for the
    model's rows or ``/maps`` for the maps' rows: what the model does and what its maps show are
    separate questions.
    """
    if metrics is None or metrics.empty:  # e.g. only the randomization checks
        metrics = pd.DataFrame(columns=["set", "image", "method", "layer", "metric", "value"])
    specs = list(default_specs() if hypotheses is None else hypotheses)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise DensevisError(f"hypotheses listed twice: "
                            f"{', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    definitions = {spec.name: resolve(spec) for spec in specs}
    present = set(metrics["method"])
    baselines = [b for b in BASELINES if b in present]  # the null maps scored with the maps
    parts = []
    for spec in specs:
        definition = definitions[spec.name]
        source = similarity if definition.source == "similarity" else metrics
        if source is None or source.empty:
            continue
        context = Context(definition, spec, metrics, similarity, baselines)
        definition.compute(context)
        rows = context.frame()
        if spec.methods:
            rows = rows[rows["method"].isin(spec.methods) | (rows["method"] == MODEL)]
        if spec.layers:
            rows = rows[rows["layer"].isin(spec.layers) | (rows["layer"] == "")]
        family = spec.family or spec.name
        parts.append(rows.assign(family=[f"{family}/{'behaviour' if m == MODEL else 'maps'}"
                                         for m in rows["method"]]))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=COLUMNS)
    table = adjust(pd.concat(parts, ignore_index=True), family="family")[COLUMNS]
    by_name = {spec.name: spec for spec in specs}
    table = pd.concat([overall(table, definitions, by_name, baselines), table],
                      ignore_index=True)
    for column in ("n", "family_size"):  # counts, empty on the overall rows
        table[column] = table[column].astype("Int64")
    table["paired"] = table["paired"].astype("boolean")  # a flag, not a number
    return table
