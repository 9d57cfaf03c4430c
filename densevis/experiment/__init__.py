"""Experiments end to end: specs (TOML), the cached stage runner and the hypotheses' verdicts."""

from densevis.experiment.runner import Runner, run_experiment
from densevis.experiment.spec import ExperimentSpec, load_spec, parse_spec

__all__ = ["ExperimentSpec", "Runner", "load_spec", "parse_spec", "run_experiment"]
