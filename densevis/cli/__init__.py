"""The ``densevis`` command line: one module per subcommand, each with ``configure`` and ``run``.

A subcommand module defines ``HELP`` (one line), ``configure(parser)`` to add its arguments and
``run(args) -> int | None``. Heavy imports (torch) happen inside ``run`` so ``--help`` is quick.
Bad input raises one of :data:`densevis.errors.USER_ERRORS`; it is printed as one line on stderr
and the exit status is 2. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from densevis import __version__
from densevis.errors import USER_ERRORS

#: Subcommands in the order of the data flow.
COMMANDS = ("generate", "train", "evaluate", "explain", "analyze", "report", "run", "bench")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit 2), pointing at ``--help``."""

    def error(self, message: str) -> None:  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="densevis",
        description="Sanity checks and hypothesis tests for saliency maps on CNNs: generate "
                    "probe sets, train, explain, analyze and report.",
        epilog="Run 'densevis COMMAND --help' for a command's options.")
    parser.add_argument("--version", action="version", version=f"densevis {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"densevis.cli.{name}")
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densevis`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as exc:
        message = " ".join(str(exc).split())
        print(f"densevis {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"densevis {args.command}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
