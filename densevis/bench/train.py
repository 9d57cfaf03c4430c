"""Training speed and the accuracy it buys: the default recipe on 10,000 base images at 128 px.

Generates (or reuses, in --workdir) base sets: training (seed S, 10,000 images), validation
(seed S+1, 1,000, picks the best epoch) and held-out test (seed S+2, 1,000). Trains with the
defaults of 'densevis train' and reports the training seconds (wall and CPU; data generation
and evaluation excluded), the held-out accuracy, the accuracy on its clean part (negatives and
positives whose square touches no circle) and the ceiling that invisible squares leave.
The target: >= 98% held-out, >= 99% clean, <= 5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

HELP = "training: seconds to train the default recipe and its held-out accuracy"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                          "densevis-bench-train"),
                        help="folder for the generated sets, reused between runs "
                        "(default: %(default)s)")
    parser.add_argument("--n", type=int, default=10000, help="training images (default 10000)")
    parser.add_argument("--n-test", type=int, default=1000,
                        help="validation and held-out test images, each (default 1000)")
    parser.add_argument("--size", type=int, default=128, help="image side (default 128)")
    parser.add_argument("--arch", default="original", help="model (default original)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed; the data use seeds S, S+1, S+2 (default 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--device", default="cpu", help="device (default cpu: the target is "
                        "stated for 2 CPU cores)")


def probe_file(folder: Path, n: int, size: int, seed: int) -> Path:
    """A base set in ``folder``, generated unless an identical one is there already."""
    from probes import ProbeSet, write_probe_set

    path = folder / f"base-n{n}-s{size}-seed{seed}.h5"
    if path.is_file():
        try:
            with ProbeSet(path) as probe:
                if (probe.name, len(probe), probe.size, probe.seed) == ("base", n, size, seed):
                    return path
        except Exception:  # an unreadable leftover is simply regenerated
            pass
    return write_probe_set(path, "base", n=n, seed=seed, size=size, force=True)


def run(args: argparse.Namespace) -> dict:
    import torch

    from densevis.errors import DensevisError
    from densevis.evaluation import evaluate_images, summarize
    from densevis.train import TrainConfig, train_model
    from probes import ProbeSet

    if args.n < 2 or args.n_test < 1:
        raise DensevisError("--n must be at least 2 and --n-test at least 1")
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [probe_file(folder, n, args.size, args.seed + k)
             for k, n in enumerate((args.n, args.n_test, args.n_test))]
    config = TrainConfig(arch=args.arch, seed=args.seed, threads=args.threads,
                         device=args.device)
    with ProbeSet(paths[0]) as train_set, ProbeSet(paths[1]) as val_set, \
            ProbeSet(paths[2]) as test_set:
        cpu, wall = time.process_time(), time.perf_counter()
        result = train_model(train_set, val_set, config, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        threads = args.threads or torch.get_num_threads()
        device = next(result.model.parameters()).device
        rows = evaluate_images(result.model, test_set, device=device)
        summary = summarize(rows, test_set.size).set_index(["breakdown", "group", "metric"])
    value = summary["value"]
    steps = result.history[-1]["step"]
    return {
        "arch": args.arch,
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "threads": threads,
        "train_seconds": wall,
        "train_cpu_seconds": cpu,
        "epochs": len(result.history),
        "best_epoch": result.best["epoch"],
        "steps": steps,
        "images_per_s": steps * config.batch_size / wall,
        "stopped": result.stopped,
        "val_accuracy": result.best["val_accuracy"],
        "test_accuracy": float(value[("all", "all", "accuracy")]),
        "test_clean_accuracy": float(value[("clean", "clean", "accuracy")]),
        "test_touching_accuracy": float(value[("touches_circle", "yes", "accuracy")]),
        "test_ceiling": float(value[("all", "all", "ceiling")]),
        "test_errors": int(value[("all", "all", "fp")] + value[("all", "all", "fn")]),
    }
