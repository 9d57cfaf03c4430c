"""The ``densevis`` command line: one module per subcommand, each with ``configure`` and ``run``.

A subcommand module defines ``HELP`` (one line), ``configure(parser)`` to add its arguments and
``run(args) -> int | None``, and may define ``describe() -> str``, its description made when
the help is shown (from a registry). Heavy imports (torch) happen inside ``run`` so ``--help``
is quick.
Bad input raises one of :data:`densevis.errors.USER_ERRORS`; it is printed as one line on stderr
and the exit status is 2 (an error about an API parameter, such as ``batch_size``, is printed
with the command's flag, ``--batch-size``). So are the OS errors of a full disk, a read-only or
forbidden folder and a failing disk. Ctrl-C (exit status 130) and SIGTERM (143, what ``kill``
and ``timeout`` send) stop a command the same way: the half-written output is removed. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import keyword
import signal
import sys
import threading
from typing import Callable

from densevis import __version__
from densevis.errors import USER_ERRORS

#: Subcommands in the order of the data flow.
COMMANDS = ("generate", "import", "train", "evaluate", "explain", "analyze", "report", "run",
            "bench")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line (exit 2), pointing at ``--help``.

    ``describe``, when set, makes the description when the help is shown: a command whose help
    lists a registry imports it only then, so every other command's start stays quick.
    """

    describe: Callable[[], str] | None = None

    def format_help(self) -> str:  # noqa: D102 - argparse API
        if self.describe is not None:
            self.description, self.describe = self.describe(), None
        return super().format_help()

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
        module = importlib.import_module(module_name(name))
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.describe = getattr(module, "describe", None)
        module.configure(sub)
        sub.set_defaults(handler=module.run, flags=flags_of(sub))
    return parser


def module_name(command: str) -> str:
    """The module of a subcommand: ``densevis.cli.<command>``, with a trailing ``_`` where the
    command is a Python keyword (``import`` -> ``densevis.cli.import_``).

    >>> module_name("train"), module_name("import")
    ('densevis.cli.train', 'densevis.cli.import_')
    """
    return f"densevis.cli.{command}{'_' * keyword.iskeyword(command)}"


def flags_of(parser: argparse.ArgumentParser) -> dict[str, str]:
    """How the user spells each API parameter on this command line: ``dest -> --flag`` (the
    long form; the first option of a dest wins), positionals by their metavar."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if action.dest != "help":
            spelled = max(action.option_strings, key=len) if action.option_strings \
                else action.metavar or action.dest.upper()
            flags.setdefault(action.dest, spelled)
    return flags


def parse_key_values(items: list[str], flag: str, example: str) -> dict[str, str]:
    """``["k=v", ...]`` given with ``flag`` -> ``{"k": "v"}``; a malformed item is a user
    error naming the flag and an ``example``.

    >>> parse_key_values(["width = 16", "name=a=b"], "--model-arg", "width=16")
    {'width': '16', 'name': 'a=b'}
    """
    from densevis.errors import DensevisError

    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise DensevisError(f"{flag} {item!r} is not KEY=VALUE (e.g. {flag} {example})")
        pairs[key.strip()] = value.strip()
    return pairs


#: How the commands that load a model name one (evaluate, explain, and train's --model).
MODEL_HELP = ("'original' (58,212 parameters), 'original-large', a torchvision classifier such "
              "as resnet18, or a factory of your own, package.module:callable (a callable "
              "returning an nn.Module with 2 outputs; its module imported from sys.path)")


def add_model_arguments(parser: argparse.ArgumentParser, weights_help: str,
                        default: str | None = None) -> None:
    """The ``--model`` (``--arch`` too where it has a ``default``: train's older name),
    ``--model-arg`` and ``--weights`` flags."""
    names = ("--model", "--arch") if default else ("--model",)
    parser.add_argument(*names, dest="model", default=default, metavar="NAME",
                        help=MODEL_HELP + (f" (default {default})" if default else ""))
    parser.add_argument("--model-arg", dest="model_args", action="append", default=[],
                        metavar="KEY=VALUE", help="keyword argument of the model's builder, "
                        "e.g. width=16, read as the type it declares (repeatable)")
    parser.add_argument("--weights", metavar="FILE", help=weights_help)


def model_source(args: argparse.Namespace):
    """The model ``--checkpoint``, or ``--model`` with ``--model-arg`` and ``--weights``,
    name (a :class:`densevis.model.ModelSource`); a combination that names none is a user
    error."""
    from densevis.errors import DensevisError
    from densevis.model import ModelSource

    model_args = parse_key_values(args.model_args, "--model-arg", "width=16")
    if args.checkpoint:
        if args.weights:
            raise DensevisError("--weights and --checkpoint both give the weights; give one "
                                "(a checkpoint holds its model's weights)")
        if model_args:
            raise DensevisError("--model-arg is for --model with --weights; a checkpoint "
                                "records its model's arguments")
        return ModelSource(checkpoint=args.checkpoint, name=args.model)
    if args.model and args.weights:
        return ModelSource(name=args.model, args=model_args, weights=args.weights)
    raise DensevisError("give --checkpoint MODEL.pt (from 'densevis train'), or --model NAME "
                        "--weights FILE (a model trained elsewhere)")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so the cleanup of Ctrl-C runs (temporary files
    removed, nothing half-written kept)."""


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises :class:`Terminated` for the block (in the main thread, where Python
    delivers signals); the previous handlers return after it. Yields an event set once SIGTERM
    came.

    Python may run the handler where it ignores exceptions (a weakref or ``__del__`` callback,
    an at-fork callback while a worker starts: both seen in CI). Such a Terminated is raised
    again 10 ms later, by an alarm, outside that callback; an error that follows it before then
    (a broken worker pool) is SIGTERM's consequence and is reported as the termination it is.
    """
    received = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def terminate(signum, frame) -> None:
        received.set()
        raise Terminated()

    def unraisable(info) -> None:
        if isinstance(info.exc_value, Terminated):
            signal.setitimer(signal.ITIMER_REAL, 0.01)  # once out of the callback that lost it
        else:
            previous_hook(info)

    previous_hook = sys.unraisablehook
    previous = {number: signal.signal(number, terminate)
                for number in (signal.SIGTERM, signal.SIGALRM)}
    sys.unraisablehook = unraisable
    try:
        yield received
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)  # before SIGALRM's own handler returns
        for number, handler in previous.items():
            signal.signal(number, handler)
        sys.unraisablehook = previous_hook


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``densevis`` console script; returns the exit status."""
    from probes.atomic import os_error_reason

    args = build_parser().parse_args(argv)
    name = f"densevis {args.command}"
    try:
        with _sigterm_raises() as sigterm:
            try:
                return int(args.handler(args) or 0)
            except Exception:
                if sigterm.is_set():
                    raise Terminated() from None
                raise
    except USER_ERRORS as exc:
        flag = args.flags.get(exc.parameter) if exc.parameter else None
        message = " ".join((exc.naming(flag) if flag else str(exc)).split())
        print(f"{name}: error: {message}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{name}: terminated (SIGTERM); no partial output was kept", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"{name}: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine's fault, not a bug (outputs say which file they were)
        reason = os_error_reason(exc)
        if reason is None:
            raise
        print(f"{name}: error: {exc.filename or 'a file'}: {reason}", file=sys.stderr)
        return 2
