"""Train a classifier on a probe set and keep the epoch of lowest validation loss as a checkpoint.

The defaults are the recipe that takes the original study's 58k-parameter DenseNet past 98%
held-out accuracy on 10,000 base images at 128 px in a few CPU minutes (see 'densevis bench
train'): Adam, class-weighted cross-entropy, the square's eight symmetries as augmentation,
warm-up then cosine learning rate, extra loss weight on squares that touch a circle, no loss on
squares hidden by circles, BatchNorm statistics re-estimated before each validation.
One seed gives identical weights on one device and thread count. On a busy machine, set
OMP_WAIT_POLICY=PASSIVE or use --threads 1: spinning OpenMP threads slow training many times.

Any model: --model names a config, a torchvision classifier or a factory of your own,
package.module:callable (a function or nn.Module class returning a model with 2 outputs,
imported from sys.path: the current folder under 'python -m', else PYTHONPATH), with keyword
arguments from --model-arg; --weights starts from trained weights (fine-tuning): a state dict
saved with torch.save(model.state_dict(), FILE), or a .safetensors file.

examples:
  densevis generate base --n 10000 --size 128 --seed 0 --out train.h5
  densevis generate base --n 1000 --size 128 --seed 1 --out val.h5
  densevis train --data train.h5 --val val.h5 --out model.pt
  densevis train --data train.h5 --val val.h5 --model resnet18 --epochs 5 --out resnet.pt
  PYTHONPATH=experiments/own_model densevis train --data train.h5 --val val.h5 \\
      --model small_resnet:small_resnet --model-arg width=16 --out small.pt
  densevis train --data train.h5 --val val.h5 --model resnet18 --weights resnet18.pt \\
      --lr 1e-3 --epochs 3 --out tuned.pt      # fine-tune weights trained elsewhere
  densevis train --data train.h5 --val val.h5 --max-minutes 3 --seed 2 --out model.pt --force
"""

from __future__ import annotations

import argparse
from dataclasses import fields

HELP = "train a model on a probe set (best-by-validation checkpoint)"


def configure(parser: argparse.ArgumentParser) -> None:
    from densevis.cli import add_model_arguments
    from densevis.recipe import AUGMENTATIONS, TrainConfig

    d = TrainConfig()
    parser.add_argument("--data", required=True, metavar="TRAIN.h5", help="training probe set")
    parser.add_argument("--val", required=True, metavar="VAL.h5",
                        help="validation probe set (picks the best epoch; same image size)")
    parser.add_argument("--out", required=True, metavar="MODEL.pt", help="checkpoint to write")
    add_model_arguments(parser, "initial weights of the model (fine-tuning): a state dict "
                        "(torch.save(model.state_dict(), FILE)) or a .safetensors file",
                        default=d.arch)
    parser.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    parser.add_argument("--batch-size", type=int, default=d.batch_size,
                        help=f"default {d.batch_size}")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak learning rate of Adam "
                        f"(default {d.lr})")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay,
                        help=f"default {d.weight_decay}")
    parser.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                        help=f"linear warm-up before the cosine decay (default {d.warmup_epochs})")
    parser.add_argument("--augment", choices=tuple(AUGMENTATIONS), default=d.augment,
                        help=f"random symmetries per image (default {d.augment})")
    parser.add_argument("--shift", type=int, default=d.shift, metavar="PX",
                        help=f"random translation up to PX pixels: the random crop "
                        f"(default {d.shift})")
    parser.add_argument("--no-class-weights", dest="class_weighted", action="store_false",
                        help="plain cross-entropy instead of weighting classes by inverse "
                        "frequency")
    parser.add_argument("--touching-weight", type=float, default=d.touching_weight,
                        help=f"loss weight of the hard cases: positives whose square touches a "
                        f"circle (default {d.touching_weight})")
    hidden = parser.add_mutually_exclusive_group()
    hidden.add_argument("--ignore-hidden", type=float, default=d.ignore_hidden,
                        metavar="FRACTION", help=f"no loss on positives that show at most this "
                        f"fraction of their square (circles cover the rest; 0: only wholly "
                        f"hidden squares; default {d.ignore_hidden})")
    hidden.add_argument("--keep-hidden", dest="ignore_hidden", action="store_const", const=None,
                        help="learn from every image, hidden squares included")
    parser.add_argument("--ema", type=float, default=d.ema, help=f"decay of the averaged "
                        f"model that is validated and saved; 0 saves the raw weights "
                        f"(default {d.ema})")
    parser.add_argument("--labels", default=d.labels, metavar="RULE",
                        help="what the model learns: square (the ground truth; default), edge "
                        "(any straight segment) or small (any object below the smallest base "
                        "square): planted cues for known-answer checks; shuffled: a seeded "
                        "permutation, the data-randomization sanity check's model")
    parser.add_argument("--recalibrate", type=int, default=d.recalibrate, metavar="N",
                        help=f"re-estimate BatchNorm statistics on N training images before "
                        f"each validation (default {d.recalibrate}; 0: off)")
    parser.add_argument("--patience", type=int, default=d.patience,
                        help=f"stop after this many epochs without a lower validation loss "
                        f"(default {d.patience})")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop cleanly after this long, keeping the best epoch so far")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"default {d.seed}")
    parser.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N "
                        "(default auto: CUDA when present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


def run(args: argparse.Namespace) -> int:
    from densevis.cli import parse_key_values
    from densevis.model import resolve_model
    from densevis.recipe import TrainConfig
    from densevis.train import train

    given = parse_key_values(args.model_args, "--model-arg", "width=16")
    typed = resolve_model(args.model, given).config  # before any work: the model's name
    values = {f.name: vars(args)[f.name] for f in fields(TrainConfig) if f.name in vars(args)}
    values.update(arch=args.model, model_args={key: typed[key] for key in given})
    config = TrainConfig(**values)
    result = train(args.data, args.val, args.out, config, force=args.force,
                   progress=not args.quiet)
    best = result.best
    print(f"wrote {result.path}: {config.arch}, best epoch {best['epoch']} of "
          f"{len(result.history)} ({result.stopped}), val accuracy {best['val_accuracy']:.4f}, "
          f"val loss {best['val_loss']:.4f}, {result.seconds:.0f} s")
    return 0
