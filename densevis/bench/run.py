"""The whole experiment: seconds of ``densevis run`` (default, or ``--quick``) per stage, in a
fresh folder, against the targets: the default run (three models on CPU) within 10 minutes and
the quick run within 2 minutes on 2 CPU cores.

``target_ratio`` is the run's seconds over its target (<= 1: met). The run's held-out accuracy
of each model is printed too: a fast run of models that learned nothing would mean nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

HELP = "the whole experiment: seconds of 'densevis run' (or --quick) per stage vs its target"
TARGET_SECONDS = {"default": 600.0, "quick": 120.0}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="time 'densevis run --quick'")
    parser.add_argument("--workdir", default=None,
                        help="run folder parent (default: a new temporary folder; a folder "
                             "with a cache from an earlier run times only what is not cached)")


def run(args: argparse.Namespace) -> dict:
    import json

    from densevis.experiment import load_spec, run_experiment
    from densevis.testing import Run

    spec = load_spec(quick=args.quick)
    out = args.workdir or tempfile.mkdtemp(prefix="densevis-bench-run-")
    start = time.perf_counter()
    run_dir = run_experiment(spec, out, progress=False, echo=lambda _: None)
    seconds = time.perf_counter() - start
    record = json.loads((run_dir / "provenance.json").read_text())
    evaluation = Run(run_dir).table("evaluation")
    held_out = evaluation[(evaluation["breakdown"] == "all") & (evaluation["metric"] == "accuracy")
                          & evaluation["set"].str.endswith("(val)")]
    kind = "quick" if args.quick else "default"
    figures = {"run": kind, "models": len(record["models"]), "cpu_cores": os.cpu_count(),
               "seconds": seconds, "target_seconds": TARGET_SECONDS[kind],
               "target_ratio": seconds / TARGET_SECONDS[kind]}
    figures.update({f"{name}_seconds": stage["seconds"]
                    for name, stage in record["stages"].items()})
    figures.update({f"held_out_accuracy_{row.model}": float(row.value)
                    for row in held_out.itertuples()})
    figures["run_folder"] = str(run_dir)
    return figures
