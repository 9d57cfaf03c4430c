"""The hypothesis registry: what a hypothesis declares and how a spec names one.

A hypothesis is one registered definition (:func:`hypothesis`): its name, its question, its
statistics (:class:`Statistic`: key, formula, unit, direction, role and the probe sets it reads;
the margin comes from the unit, see :data:`UNITS`) and one function that adds its rows to a
:class:`~densevis.analysis.hypothesis_context.Context`. A spec's ``[[hypotheses]]`` entry is a
:class:`HypothesisSpec`; :func:`resolve` turns it into the registered definition or the custom
one it states.

The built-in hypotheses register themselves in :mod:`densevis.analysis.hypotheses`: import
:data:`HYPOTHESES` from there (as every driver does), so that they are in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from densevis.errors import DensevisError

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

    def compute(context) -> None:  # a Context (hypothesis_context)
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
