"""Generate a probe set (the base set or a counterfactual set) into an HDF5 file.

Geometry parameters are stated at 256 px and scaled by --size/256. The same set, parameters, size
and seed give identical datasets, byte for byte.

examples:
  densevis generate --list
  densevis generate base --n 10000 --size 128 --seed 0 --out train.h5
  densevis generate pairs --n 100 --size 128 --seed 3 --out pairs.h5 --param gap=4
"""

from __future__ import annotations

import argparse


HELP = "generate a probe set (base or counterfactual) into an HDF5 file"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("set", nargs="?", metavar="SET", help="probe set name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the sets and their parameters")
    parser.add_argument("--n", type=int, default=1000,
                        help="number of images (scenes for 'pairs', 8 images each; default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--size", type=int, default=256,
                        help="image side in pixels; geometry scales with it (default 256)")
    parser.add_argument("--out", metavar="FILE.h5", help="output file")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="override a set parameter (repeatable; see --list)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.add_argument("--workers", type=int, default=None,
                        help="rendering processes (default: all CPUs; output does not depend on it)")


def list_sets() -> str:
    from dataclasses import fields

    from probes import SETS

    lines = []
    for spec in SETS.values():
        lines.append(f"{spec.name:14s} {spec.description}")
        defaults = ", ".join(f"{f.name}={f.default}" for f in fields(spec.params_type))
        lines.append(f"{'':14s} params: {defaults}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from densevis.errors import DensevisError

    if args.list:
        print(list_sets())
        return 0
    if args.set is None or args.out is None:
        raise DensevisError("give a SET and --out FILE.h5, or --list to see the sets")
    if args.workers is not None and args.workers < 1:
        raise DensevisError(f"--workers must be at least 1 (got {args.workers})")

    from densevis.cli import parse_key_values
    from probes import ProbeSet, write_probe_set

    path = write_probe_set(args.out, args.set, n=args.n, seed=args.seed, size=args.size,
                           params=parse_key_values(args.param, "--param", "max_circles=5"),
                           force=args.force, workers=args.workers, progress=True)
    with ProbeSet(path) as probe:
        positives = int(probe.labels[:].sum())
        print(f"wrote {path}: set {probe.name}, {len(probe)} images of {probe.size}x{probe.size}, "
              f"{positives} with a square, seed {probe.seed}")
    return 0
