"""Evaluate a model on probe sets: accuracy, confusions, logit margins and where it fails.

The model is a checkpoint of 'densevis train' (--checkpoint; one of a factory model needs its
--model named too: loading it imports the factory's module), or a model trained elsewhere:
--model NAME (a config, a torchvision classifier or package.module:callable, with --model-arg)
and --weights FILE (a state dict or a .safetensors file). Such a model records no image size:
it is evaluated at the data's size.

Per set (named by the file's 'set' attribute): accuracy, confusion counts, positive rate, mean
logit margin (the square logit minus the no-square logit, whatever the label), the ceiling set
by invisible squares (wholly inside a circle, from the masks), accuracy on the clean part
(negatives and positives whose square touches no circle), and accuracy by square size, by
whether the square touches a circle, by whether a negative's circles merge into one blob and,
for pairs, by variant (the label follows the ground truth: 1 iff a square remains). The tidy
table (set, breakdown, group, metric, value; counts as integers) goes to --out as CSV.

examples:
  densevis evaluate --checkpoint model.pt --data val.h5
  densevis evaluate --checkpoint model.pt --data lines_only.h5 --data pairs.h5 --out eval.csv
  densevis evaluate --model resnet18 --weights resnet18_state.pt --data val.h5
  PYTHONPATH=experiments/own_model densevis evaluate --checkpoint small.pt \\
      --model small_resnet:small_resnet --data val.h5
"""

from __future__ import annotations

import argparse

HELP = "evaluate a model on probe sets (accuracy, confusions, breakdowns)"


def configure(parser: argparse.ArgumentParser) -> None:
    from densevis.cli import add_model_arguments

    parser.add_argument("--checkpoint", metavar="MODEL.pt",
                        help="checkpoint from 'densevis train' (or give --model and --weights)")
    add_model_arguments(parser, "weights of --model trained elsewhere: a state dict "
                        "(torch.save(model.state_dict(), FILE)) or a .safetensors file")
    parser.add_argument("--data", required=True, action="append", metavar="SET.h5",
                        help="probe set to evaluate on (repeatable)")
    parser.add_argument("--out", metavar="TABLE.csv", help="write the tidy table as CSV")
    parser.add_argument("--per-image", metavar="IMAGES.csv",
                        help="also write one row per image (prediction, logit margin, square "
                             "geometry)")
    parser.add_argument("--batch-size", type=int, default=256, help="default 256")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N "
                        "(default auto: CUDA when present)")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def run(args: argparse.Namespace) -> int:
    from densevis.cli import model_source
    from densevis.evaluation import evaluate_checkpoint, format_summary, write_csv
    from densevis.errors import DensevisError
    from probes.atomic import check_output_path

    source = model_source(args)
    if args.batch_size < 1:
        raise DensevisError(f"--batch-size must be positive (got {args.batch_size})")
    outputs = [path for path in (args.out, args.per_image) if path]
    if len(set(outputs)) < len(outputs):
        raise DensevisError("--out and --per-image name the same file; give two names")
    for path in outputs:  # before any work: an existing file without --force is an error now
        check_output_path(path, args.force, inputs=[source.file, *args.data])
    table, per_image = evaluate_checkpoint(source, args.data, args.batch_size, args.device)
    print(format_summary(table))
    for path, frame in ((args.out, table), (args.per_image, per_image)):
        if path:
            write_csv(frame, path, args.force)
            print(f"wrote {path}: {len(frame)} rows")
    return 0
