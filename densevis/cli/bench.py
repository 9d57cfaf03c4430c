"""Benchmarks: speed and memory measured in one run, printed as figures and ratios.

Each target prints what it measured, one "name: value" line each; with --json the last line is one
JSON object of the same figures, for scripts. Timing belongs here, never in unit tests.

examples:
  densevis bench generate
  densevis bench generate --n 20000 --json
  densevis bench run --quick        # the whole quick experiment against its 2-minute target
"""

from __future__ import annotations

import argparse
import importlib
import json

HELP = "measure speed and memory (generate, ...) and print the figures"

#: Benchmark targets, each a module ``densevis.bench.<name>`` with HELP, configure and run.
TARGETS = ("generate", "train", "saliency", "analysis", "run")


def configure(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for name in TARGETS:
        module = importlib.import_module(f"densevis.bench.{name}")
        sub = targets.add_parser(name, help=module.HELP, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.add_argument("--json", action="store_true",
                         help="end with one line holding a JSON object of the figures")
        module.configure(sub)
        sub.set_defaults(measure=module.run)


def run(args: argparse.Namespace) -> int:
    figures = args.measure(args)
    for key, value in figures.items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    return 0
