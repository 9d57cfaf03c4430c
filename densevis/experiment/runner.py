"""``densevis run``: generate -> train (or load) -> evaluate -> explain -> analyze -> sanity ->
report, each stage cached by a hash of its inputs.

A run has K replicates (:class:`~densevis.experiment.plan.Replicate`): models trained by one
recipe with K seeds (or K given checkpoints). Each stage runs for every replicate, with its own
cache entries; the verdicts replicate across them (:mod:`densevis.analysis.replicates`).

Under torchrun (``densevis run --distributed``) explain and analyze are sharded over the ranks
(:mod:`densevis.shards`); the other stages run on rank 0 while the others wait.

A rerun skips finished stages; a run killed mid-way resumes from them and, every stage being
deterministic, ends with the same tables. The run folder is built under a temporary name and
renamed when complete, so a finished run is never overwritten and no half run is left.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from densevis.distributed import init_process_group_for, main_only, world_from_env
from densevis.errors import DensevisError
from densevis.experiment import steps
from densevis.experiment.cache import StageCache, stage_key
from densevis.experiment.spec import ExperimentSpec
from densevis.experiment.plan import Replicate, replicate_plan, train_config
from densevis.model import read_checkpoint, resolve_device
from densevis.report.build import FinishedRun, ModelFiles, write_run
from probes.atomic import check_output_folder


@dataclass
class Stages:
    """What the stages produced; paths are cache entries."""

    data: dict[str, Path] = field(default_factory=dict)  # role -> probe file
    data_keys: dict[str, str] = field(default_factory=dict)
    replicates: list[Replicate] = field(default_factory=list)  # their models and maps
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # every replicate's rows
    seconds: dict[str, float] = field(default_factory=dict)
    cached: dict[str, bool] = field(default_factory=dict)


class Runner:
    """Runs one spec into ``out`` (run folders) with its cache in ``out/.cache``."""

    def __init__(self, spec: ExperimentSpec, out: str | Path = "reports", progress: bool = True,
                 echo=print, distributed: bool = False):
        self.spec, self.out, self.progress, self.echo = spec, Path(out), progress, echo
        self.world = world_from_env()
        if distributed and not self.world.sharded:
            raise DensevisError("--distributed needs several processes: start the run with "
                                "torchrun --nproc_per_node N -m densevis run --distributed ...")
        if self.out.exists() and not self.out.is_dir():
            raise DensevisError(f"{self.out} is a file; give a folder for run folders",
                                parameter="out")
        if self.world.rank == 0:  # before any work: the tables are written last
            check_output_folder(self.out)
        self.cache = StageCache(self.out / ".cache")
        self.stages = Stages(replicates=replicate_plan(spec))

    # ---------------------------------------------------------------------------------- driver
    def run(self) -> Path:
        plan = [("generate", steps.generate), ("train", steps.train),
                ("evaluate", steps.evaluate), ("explain", steps.explain),
                ("analyze", steps.analyze), ("sanity", steps.sanity),
                ("hypotheses", steps.hypotheses)]
        if self.world.sharded:
            init_process_group_for(self.spec.saliency.device, self.world)
        models = len(self.stages.replicates)
        self.say(f"{models} model{'s' if models > 1 else ''} "
                 f"({', '.join(r.label for r in self.stages.replicates)}): every verdict rests "
                 f"on {models} trained model{'s' if models > 1 else ''}"
                 + ("" if models > 1 else "; replicated verdicts need at least 2"))
        for number, (name, step) in enumerate(plan, 1):
            start = time.perf_counter()
            cached = self._run_step(name, step, main_only)
            seconds = time.perf_counter() - start
            self.stages.seconds[name], self.stages.cached[name] = seconds, bool(cached)
            self.say(f"[{number}/{len(plan) + 1}] {name}: {'cached' if cached else 'done'} "
                     f"({seconds:.1f} s)")
        start = time.perf_counter()
        run_dir = Path(main_only("report", lambda: write_run(self.finished())))
        self.say(f"[{len(plan) + 1}/{len(plan) + 1}] report: {run_dir} "
                 f"({time.perf_counter() - start:.1f} s)")
        return run_dir

    def finished(self) -> FinishedRun:
        """What the report is written from, once every stage has run."""
        spec, stages = self.spec, self.stages
        devices = {"saliency": _device_used(spec.saliency.device)}  # evaluate, explain, analyze
        if any(r.given is None for r in stages.replicates):
            devices["train"] = _device_used(train_config(spec).device)
        devices["threads"] = spec.model.threads  # of each model's work
        devices["side_by_side"] = steps.runs_apart(self, spec.saliency.device)
        models = [ModelFiles(r.label, r.seed, r.given is None, r.checkpoint,
                             r.shuffled_checkpoint, dict(r.maps), r.roles["val"],
                             name=_model_name(spec, r), source=r.source)
                  for r in stages.replicates]
        return FinishedRun(spec, self.out, stages.tables, stages.data, models, stages.seconds,
                           stages.cached, devices, self.world.size)

    def _run_step(self, name: str, step, main_only) -> bool:
        """A step on every rank: explain and analyze shard their work themselves; the others run
        on rank 0, then on the other ranks, which find the output cached and only read it."""
        if not self.world.sharded or name in ("explain", "analyze"):
            return step(self)
        cached = main_only(name, lambda: step(self))
        if self.world.rank != 0:
            step(self)
        return cached

    def say(self, line: str) -> None:
        if self.world.rank == 0:
            self.echo(line)

    def key(self, stage: str, **inputs) -> str:
        return stage_key(stage, **inputs)


def _model_name(spec: ExperimentSpec, replicate: Replicate) -> str:
    """The name of a replicate's model: the spec's, or the one its given checkpoint records."""
    if replicate.given is None or spec.model.weights:
        return spec.model.name
    checkpoint = read_checkpoint(replicate.given)
    return str(checkpoint.get("name") or checkpoint.get("factory") or checkpoint["arch"])


def _device_used(requested: str) -> str:
    """The device ``requested`` ("auto", "cuda", ...) resolves to here, with its index."""
    device = resolve_device(requested)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device)


def run_experiment(spec: ExperimentSpec, out: str | Path = "reports", progress: bool = True,
                   echo=print, distributed: bool = False) -> Path:
    """Run ``spec`` into a new run folder under ``out``; return the folder.

    Examples
    --------
    >>> from densevis.experiment.spec import load_spec
    >>> run_dir = run_experiment(load_spec(quick=True), "reports")   # doctest: +SKIP
    """
    return Runner(spec, out, progress, echo, distributed).run()
