"""Run an experiment end to end: generate -> train (or load) -> evaluate -> explain -> analyze ->
sanity checks -> report, into a new run folder under --out.

Without SPEC, the embedded default (experiments/default.toml) runs: the original study's
questions (square, edge or small-object detector? do the maps pass the randomization checks?).
A run trains K replicate models of one recipe ([model] replicates; unset: 3 on CPU, 5 on CUDA)
and every stage runs per model; every table has a 'model' column. The verdicts are tested per
model and across them (model 'replicated'): supported iff every model's own verdict is, rejected
iff every model's is, else inconclusive; the mean_* columns hold a t test over the models.
Each stage's output is cached in OUT/.cache by a hash of its inputs: a rerun skips finished
work, and a run killed mid-way resumes; an entry whose bytes are not those recorded when it
was written is computed again. The spec is checked whole before any work. A finished run
folder is never overwritten.

Verdicts of one model (hypotheses.csv): per statistic the median (sign test) or Hodges-Lehmann shift
(Mann-Whitney) with bounds that invert the same test, Bonferroni within each family; supported
= significant and at least the margin, rejected = certainly below the margin. The sanity stage
checks every saliency method and layer of the spec by default; a map-based verdict is supported
only for a method and layer that pass passes_randomization: the median spearman_abs similarity
of its maps to the trained model's, once every layer is re-initialized (and for a model that
memorized shuffled labels), certainly below 0.5 (the threshold, with no further margin).

examples:
  densevis run                          # the default: 3 models (times: README, Benchmarks)
  densevis run --quick --out reports    # the same design at 64 px, a few minutes
  densevis run experiments/my.toml --out reports
  torchrun --nproc_per_node 2 -m densevis run --distributed --quick   # explain/analyze sharded
  pytest experiments/test_original_questions.py --densevis-run reports   # assert hypotheses on the newest run
"""

from __future__ import annotations

import argparse

HELP = "run an experiment end to end (default: the original study's questions) into a report"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", nargs="?", metavar="SPEC",
                        help="experiment spec .toml (default: the embedded default.toml)")
    parser.add_argument("--quick", action="store_true",
                        help="apply the spec's [quick] overrides (a small, fast run)")
    parser.add_argument("--out", default="reports",
                        help="folder of run folders, with the stage cache in OUT/.cache "
                             "(default: reports)")
    parser.add_argument("--distributed", action="store_true",
                        help="under torchrun: shard explain and analyze over the processes "
                             "(the other stages run on rank 0)")


def run(args: argparse.Namespace) -> int:
    from densevis.distributed import exit_status
    from densevis.experiment import load_spec

    spec = load_spec(args.spec, quick=args.quick)
    return exit_status("run", lambda: _run(spec, args))


def _run(spec, args: argparse.Namespace) -> int:
    from densevis.distributed import is_main
    from densevis.experiment import run_experiment

    run_dir = run_experiment(spec, args.out, distributed=args.distributed)
    if is_main():
        print(f"run folder: {run_dir}")
        print(f"report: {run_dir / 'report.html'}")
    return 0
