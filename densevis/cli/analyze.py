"""Score saliency maps against the probe sets' ground truth and test the study's hypotheses.

Each --maps file is matched to the --data probe file it was computed from (by the SHA-256 the
maps file records); files that do not match (hash, set, image size, number of images) are an
error. Writes three tidy CSV tables into --out, all together or none:

  metrics.csv     set, image, method, layer, reduction, metric, value, note (why a value is NaN)
  summary.csv     per set, method, layer, reduction, metric: n, mean, sd, median, 95% CI
  hypotheses.csv  hypothesis, method, layer, statistic, effect, ci_low, ci_high, p_value,
                  p_adjusted, verdict, ... rule (the verdict rule with its numbers)

Maps are reduced before scoring: 'abs' for signed methods, 'as_is' for non-negative ones (the
CAMs); override with --reduction METHOD=RULE (rules: abs, as_is, positive, signed). The null
baselines random, sobel and center are scored alongside, at full resolution and, for CAM-like
maps, pooled to each layer's grid.

Hypotheses are those of the experiment spec (--spec; default: the embedded default spec, as
'densevis run' uses), evaluated by the same code as 'densevis run': given the same maps, probe
files and --sanity table (sanity.csv of a run), hypotheses.csv is the same. Per row: the
median (sign test) or Hodges-Lehmann shift (Mann-Whitney), with bounds that invert the same
test, Bonferroni within each family. supported = the family-adjusted bound excludes 0 in the
hypothesized direction (p_adjusted <= alpha) and the estimate reaches the margin; rejected =
the other bound excludes every effect of at least the margin; inconclusive otherwise. An
'overall' row per hypothesis, method and layer is supported iff all its primary statistics
are, rejected iff any is; a map-based overall is supported only where passes_randomization
passed for that method and layer (median similarity after randomization certainly below the
threshold, 0.5 spearman_abs by default) - without --sanity no map verdict is supported.

Sharded under torchrun (WORLD_SIZE > 1): each process scores its rows of every maps file on
cuda:LOCAL_RANK (or the CPU); rank 0 gathers the rows, computes the summary and hypotheses and
writes the tables, equal to a one-process run's. If a rank fails nothing is written.

examples:
  densevis analyze --maps base-maps.h5 --data base.h5 --out reports/analysis
  torchrun --nproc_per_node 2 -m densevis analyze --maps m.h5 --data d.h5 --out out
  densevis analyze --maps base-maps.h5 --maps lines-maps.h5 --maps pairs-maps.h5 \\
      --data base.h5 --data lines_only.h5 --data pairs.h5 --out reports/analysis --force
  densevis analyze --maps m.h5 --data d.h5 --out out --reduction vanilla=positive
  densevis analyze --maps m.h5 --data d.h5 --sanity reports/RUN/sanity.csv --out out
"""

from __future__ import annotations

import argparse
import dataclasses

HELP = "score maps against ground truth and test the hypotheses (metrics/summary/hypotheses CSV)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--maps", action="append", required=True, metavar="MAPS.h5",
                        help="maps file from 'densevis explain' (repeatable)")
    parser.add_argument("--data", action="append", required=True, metavar="SET.h5",
                        help="probe file the maps were computed from (repeatable)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--force", action="store_true", help="overwrite existing tables")
    parser.add_argument("--reduction", action="append", default=[], metavar="METHOD=RULE",
                        help="reduction of a method's maps (METHOD or METHOD/LAYER; repeatable)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the null baselines random, sobel, center")
    parser.add_argument("--batch-size", type=int, default=128, help="maps per batch (default 128)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random baseline")
    parser.add_argument("--sanity", metavar="SANITY.csv", default=None,
                        help="similarity table of the randomization checks (sanity.csv of a "
                             "run): adds passes_randomization and its gate")
    parser.add_argument("--spec", metavar="SPEC.toml", default=None,
                        help="take the hypotheses from this experiment spec (default: the "
                             "embedded default spec's)")
    parser.add_argument("--model", default="model", metavar="LABEL",
                        help="the replicate these maps come from: its label in the tables' "
                             "model column, and the rows of --sanity used when that table "
                             "holds several models (default: model)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="family-wise level of every hypothesis (default: the spec's, 0.05)")


def run(args: argparse.Namespace) -> int:
    from densevis.distributed import exit_status

    return exit_status("analyze", lambda: _analyze(args))


def _analyze(args: argparse.Namespace) -> int:
    from densevis.analysis.baselines import BASELINES
    from densevis.analysis.reduce import parse_overrides
    from densevis.analysis.tables import read_sanity
    from densevis.experiment.spec import load_spec
    from densevis.errors import DensevisError
    from densevis.shards import analyze_into

    if args.alpha is not None and not 0 < args.alpha < 1:
        raise DensevisError(f"--alpha must be between 0 and 1 (got {args.alpha})")
    reductions = parse_overrides(args.reduction)
    hypotheses = load_spec(args.spec).hypotheses
    if args.alpha is not None:
        hypotheses = [dataclasses.replace(h, alpha=args.alpha) for h in hypotheses]
    similarity = read_sanity(args.sanity) if args.sanity else None
    if similarity is not None and "model" in similarity.columns:
        models = list(dict.fromkeys(similarity["model"]))
        if args.model not in models:
            raise DensevisError(f"--sanity {args.sanity} holds the checks of models "
                                f"{', '.join(models)}, not of --model {args.model}; pass "
                                f"--model with the label of the model these maps come from")
        similarity = similarity[similarity["model"] == args.model]
    written = analyze_into(args.out, args.maps, args.data, force=args.force,
                           reductions=reductions,
                           baselines=() if args.no_baselines else BASELINES,
                           batch_size=args.batch_size, device=args.device, seed=args.seed,
                           hypotheses=hypotheses, similarity=similarity, model=args.model)
    if written is None:  # not rank 0
        return 0
    tables, paths = written
    from probes import ProbeSet

    for data in args.data:
        with ProbeSet(data) as probe:
            if probe.target is None:  # the tables are right, but the user asked for scores
                print(f"note: {data} has no target region, so no localization metrics were "
                      f"scored on it; give it region masks ('densevis import --masks DIR "
                      f"--target REGION', or masks= and target= of probes.write_arrays)")
    verdicts = tables["hypotheses"].query("statistic_key == 'overall'")["verdict"].value_counts()
    counts = ", ".join(f"{count} {name}" for name, count in verdicts.items()) or "none testable"
    print(f"wrote {', '.join(str(p) for p in paths)}: {len(tables['metrics'])} metric rows; "
          f"overall verdicts: {counts}")
    return 0
