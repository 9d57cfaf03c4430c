"""Run the densevis pipeline end to end into a new run folder.

What runs today: probe generation of the default sets (base train/validation and every
counterfactual set). Training, explaining, analysis and the report join this command as they land.
A run never overwrites an earlier one: each goes to a new folder under --out.

examples:
  densevis run
  densevis run --out reports --size 128 --seed 1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

HELP = "run the pipeline end to end (today: generate the default probe sets)"

#: (file stem, set, number of units) of the default run.
DEFAULT_SETS = (
    ("train", "base", 10000), ("val", "base", 1000), ("lines_only", "lines_only", 500),
    ("large_squares", "large_squares", 500), ("small_circles", "small_circles", 500),
    ("circles_only", "circles_only", 500), ("squares_only", "squares_only", 500),
    ("pairs", "pairs", 100),
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="reports", help="folder that receives the run folder "
                        "(default: reports)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="base seed; set k uses seed+k")


def run(args: argparse.Namespace) -> int:
    from densevis.errors import DensevisError
    from probes import write_probe_set

    root = Path(args.out)
    if root.exists() and not root.is_dir():
        raise DensevisError(f"--out {root} is a file; give a folder")
    run_dir = root / time.strftime("run-%Y%m%d-%H%M%S")
    suffix = 1
    while run_dir.exists():
        run_dir = root / f"{time.strftime('run-%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    data = run_dir / "data"
    data.mkdir(parents=True)
    for k, (stem, set_name, n) in enumerate(DEFAULT_SETS):
        path = write_probe_set(data / f"{stem}.h5", set_name, n=n, seed=args.seed + k,
                               size=args.size, progress=True)
        print(f"generated {path}")
    print(f"run folder: {run_dir}")
    return 0
