"""pytest plugin: state hypotheses about a densevis run as assertions.

Installed with densevis (entry point ``pytest11``). Give pytest a run::

    densevis run --quick --out reports
    pytest experiments/test_original_questions.py --densevis-run reports      # newest run there
    pytest experiments/test_original_questions.py --densevis-run reports/default-20261129-101500
    pytest experiments/own_model --densevis-run experiments/own_model/own_model.toml  # run it

and write tests against the ``densevis_run`` fixture (a :class:`densevis.report.run_folder.Run`,
what :func:`densevis.load_run` returns: its tables, answers and figures)::

    from densevis.testing import assert_hypothesis, assert_localizes

    def test_a_line_alone_is_enough(densevis_run):
        assert_hypothesis(densevis_run, "edge_detector", "supported", method="model")

    def test_guided_gradcam_finds_the_square(densevis_run):
        assert_localizes(densevis_run, method="guided_gradcam", layer="denseblock3")

A failing assertion shows the effect, its family-adjusted confidence interval, the p-values and
the verdict rule.

Replicates: a run of several trained models (``model`` column: ``seed0``, ``seed1``, ...) has
``replicated`` rows across them (:mod:`densevis.analysis.replicates`: supported iff every
model's own verdict is, rejected iff every model's is; the t test over the models beside it in
the ``mean_*`` columns). The assertions check those by default (``model="replicated"``);
pass ``model="seed0"`` to check one replicate, or ``model=None`` to any row. A failure then also
says in how many models each row was supported and each model's effect. A run without a
``model`` column (one model) is checked as before: the ``model`` argument is ignored::

    def test_the_lines_replicate(densevis_run):
        assert_hypothesis(densevis_run, "edge_detector", "supported", method="model")

    def test_seed0_alone(densevis_run):
        assert_hypothesis(densevis_run, "edge_detector", "supported", method="model",
                          model="seed0")
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

# A boundary like the command line: pytest loads this plugin (entry point ``pytest11``) in every
# session of an environment with densevis, so the project's modules (and torch, pandas) are
# imported inside the functions that use them, not here.


def __getattr__(name: str):
    """``Run`` and ``find_run``: the run as :func:`densevis.load_run` reads it
    (:mod:`densevis.report.run_folder`), imported on first use."""
    if name in ("Run", "find_run"):
        from densevis.report import run_folder

        return getattr(run_folder, name)
    raise AttributeError(f"module 'densevis.testing' has no attribute {name!r}")


def number_of(value) -> str:
    """A count as written ("?" where the row has none)."""
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "?"


def _absent(value) -> bool:
    """Whether a cell is empty: None, NaN, or NA (a nullable count or flag column)."""
    import pandas as pd

    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def _describe(row) -> str:
    def number(value) -> str:
        return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) \
            else f"{value:.4g}"

    where = "/".join(str(v) for v in (row.get("method"), row.get("layer"))
                     if isinstance(v, str) and v)
    model = row.get("model")
    if not _absent(model):
        where = "; ".join(filter(None, (str(model), where)))
    level = row.get("ci_level")
    level = f"{level:.4g}" if isinstance(level, float) and not math.isnan(level) else "?"
    text = (f"{row['hypothesis']}{f' [{where}]' if where else ''}: verdict {row['verdict']}, "
            f"{row.get('statistic', 'effect')} effect {number(row['effect'])} "
            f"({row.get('estimand', 'effect')}; {level} CI {number(row['ci_low'])} to "
            f"{number(row['ci_high'])}), p {number(row['p_value'])}, p adjusted "
            f"{number(row['p_adjusted'])}")
    models = row.get("models")
    if not _absent(models):
        text += (f"; supported in {number_of(row.get('models_supported'))} of "
                 f"{number_of(models)} models, rejected in "
                 f"{number_of(row.get('models_rejected'))}")
        if isinstance(row.get("model_effects"), str) and row["model_effects"]:
            text += f"; model effects {row['model_effects']}"
    if isinstance(row.get("rule"), str):
        text += f"; rule: {row['rule']}"
    if isinstance(row.get("note"), str) and row["note"]:
        text += f"; note: {row['note']}"
    return text


def assert_hypothesis(run: Run, name: str, verdict: str | tuple[str, ...],
                      method: str | None = None, layer: str | None = None,
                      statistic: str | None = "overall",
                      model: str | None = "replicated") -> None:
    """Assert that hypothesis ``name`` (for ``method``/``layer``) has ``verdict``.

    ``verdict`` is ``supported``, ``rejected`` or ``inconclusive``, or a tuple of allowed
    verdicts (e.g. ``("rejected", "inconclusive")``: not supported). By default the ``overall``
    verdict of each matching method and layer is checked (the one its primary statistics
    decide); pass ``statistic`` (its ``statistic_key``, e.g. ``"lines_vs_control"`` or
    ``"mass_vs_baseline.sobel"``; the formula shown in the ``statistic`` column is accepted too)
    to check one statistic, or ``None`` to require the verdict of every row.
    A failure lists the statistics behind each wrong verdict with effect, its family-adjusted
    CI, p-values and the rule. ``model``: the replicated rows (default), one replicate's
    label, or ``None`` for every model's rows (see the module docstring).
    """
    allowed = (verdict,) if isinstance(verdict, str) else tuple(verdict)
    if not allowed or not set(allowed) <= {"supported", "rejected", "inconclusive"}:
        raise ValueError(f"verdict must be supported, rejected or inconclusive (or a tuple of "
                         f"them), not {verdict!r}")
    rows = run.hypothesis_rows(name, method, layer, model)
    checked = rows if statistic is None else rows[(rows["statistic_key"] == statistic)
                                                  | (rows["statistic"] == statistic)]
    if checked.empty:
        listed = "; ".join(sorted({f"{key} ({text})" if key != text else key for key, text in
                                   zip(rows["statistic_key"].astype(str),
                                       rows["statistic"].astype(str))}))
        raise AssertionError(f"run {run.path} has no statistic {statistic!r} for hypothesis "
                             f"{name!r}; it has: {listed}")
    wrong = [row for _, row in checked.iterrows() if row["verdict"] not in allowed]
    if wrong:
        details = []
        for row in wrong:
            details.append(_describe(row))
            if row["statistic_key"] == "overall":
                parts = rows[(rows["statistic_key"] != "overall")
                             & (rows.get("model", "") == row.get("model", ""))
                             & (rows["method"].fillna("") == _text(row["method"]))
                             & (rows["layer"].fillna("") == _text(row["layer"]))]
                details += [f"  {part['role']}: {_describe(part)}"
                            for _, part in parts.iterrows()]
        raise AssertionError(f"expected {name} to be {' or '.join(allowed)}, but:\n  "
                             + "\n  ".join(details))


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def assert_localizes(run: Run, method: str, layer: str | None = None,
                     min_effect: float | None = None,
                     hypothesis: str = "localizes_square",
                     model: str | None = "replicated") -> None:
    """Assert that ``method`` (at ``layer``) puts more relevance on the square than area predicts.

    Checks the hypothesis's ``mass_minus_area`` statistics (against 0 and against each null
    baseline on the same images) as the verdicts do: each must have ``p_adjusted`` at most its
    ``alpha`` (equivalently, its family-adjusted lower bound above 0) and an effect (a share of
    the map's mass) of at least ``min_effect`` (default: the row's ``effect_margin``, the smallest
    effect that matters). This is a statement about the maps; whether they show the model is
    the randomization check's question (``assert_hypothesis(run, "localizes_square", ...)``
    includes it). ``model``: the replicated rows across replicate models (default; their effect
    is the mean over models, their bounds the t test's), one replicate's label, or ``None``.
    """
    rows = run.hypothesis_rows(hypothesis, method, layer, model)
    keys = rows["statistic_key"].astype(str)
    checked = rows[(keys == "mass_minus_area") | keys.str.startswith("mass_vs_baseline.")]
    if checked.empty:
        raise AssertionError(f"run {run.path} has no mass_minus_area statistic for {hypothesis} "
                             f"{method}{f' at {layer}' if layer else ''}")
    failing = [row for _, row in checked.iterrows()
               if not (row["p_adjusted"] <= row["alpha"] and row["ci_low"] > 0
                       and row["effect"] >= (row["effect_margin"] if min_effect is None
                                             else min_effect))]
    if failing:
        details = "\n  ".join(_describe(row) for row in failing)
        need = "the row's effect_margin" if min_effect is None else f"{min_effect}"
        raise AssertionError(f"{method}{f' at {layer}' if layer else ''} does not localize the "
                             f"square (need p adjusted <= alpha, CI low > 0 and an effect of "
                             f"at least {need}):\n  {details}")


# ----------------------------------------------------------------------------------- the plugin
def pytest_addoption(parser) -> None:
    group = parser.getgroup("densevis", "densevis hypothesis assertions")
    group.addoption("--densevis-run", metavar="PATH", default=None,
                    help="a densevis run folder, a folder of runs (the newest is used), or an "
                         "experiment spec .toml to run first (stages are cached)")
    group.addoption("--densevis-quick", action="store_true", default=False,
                    help="with a spec: run it in --quick mode")


@pytest.fixture(scope="session")
def densevis_run(request) -> Run:
    """The run given by ``--densevis-run`` (running a spec first if one is given)."""
    value = request.config.getoption("--densevis-run")
    if value is None:
        raise pytest.UsageError("these tests need a densevis run: pass --densevis-run DIR (a run "
                                "folder or the --out folder of 'densevis run') or a spec .toml")
    from densevis.errors import DensevisError
    from densevis.report.run_folder import Run, load_run

    path = Path(value)
    if path.suffix == ".toml":
        from densevis.experiment import run_experiment
        from densevis.experiment.spec import load_spec

        quick = request.config.getoption("--densevis-quick")
        return Run(run_experiment(load_spec(path, quick=quick), progress=False))
    try:
        return load_run(path)
    except DensevisError as exc:
        raise pytest.UsageError(str(exc)) from None
