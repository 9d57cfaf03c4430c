"""Sharded runs on torch.distributed: ranks, process group, shards, agreement on failures.

``torchrun --nproc_per_node N -m densevis explain ...`` (or ``analyze``) starts N processes
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; each
process finds its place with :func:`world_from_env`, joins the process group
(:func:`init_process_group`: NCCL on CUDA, gloo on the CPU, plus a gloo group for control
messages), runs on :func:`rank_device` (``cuda:LOCAL_RANK``) and works on its contiguous slice
of the rows, :func:`shard_ranges`. The sharded commands are built on this module in
:mod:`densevis.shards` (:func:`~densevis.shards.explain_sharded`,
:func:`~densevis.shards.analyze_sharded`, :func:`~densevis.shards.metrics_sharded`); this
module knows nothing of them.

Every step of a sharded run is an :func:`agree` call: each rank runs its part, then all ranks
exchange one status; when any rank failed, every rank raises the same :class:`RankFailure`
(:class:`RankInputError`, exit status 2, when each failure was bad input), and only rank 0
prints it. A rank that dies outright (killed, segfault) is torchrun's to notice: it stops the
others. Collective waits time out after ``DENSEVIS_DIST_TIMEOUT`` seconds (default 24 hours: a
rank that resumes a finished shard waits for the others' whole shard).

Examples
--------
>>> world_from_env({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
World(rank=1, size=4, local_rank=1)
>>> shard_ranges(100, 3, align=32)
[(0, 32), (32, 64), (64, 100)]
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

from densevis.errors import USER_ERRORS, DensevisError
from densevis.model import resolve_device

TIMEOUT_ENV = "DENSEVIS_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 24 * 3600

_CONTROL: dict = {}  # "group": the gloo group of the status exchanges, once initialized


@dataclass(frozen=True)
class World:
    """This process's place in a run: ``rank`` of ``size`` processes, ``local_rank`` on its
    node (the index of its GPU). A plain run is ``World(0, 1, 0)``."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def sharded(self) -> bool:
        return self.size > 1


class RankFailure(RuntimeError):
    """A sharded step failed on some rank; raised on every rank with the same message.

    Attributes
    ----------
    exit_code : int
        1 (a bug or a crash somewhere); :class:`RankInputError` has 2.
    reporter : bool
        True on the one rank (0) that should print the message.
    """

    exit_code = 1
    reporter = True


class RankInputError(DensevisError, RankFailure):
    """A sharded step failed because of bad input on every failing rank (exit status 2)."""

    exit_code = 2


def world_from_env(env=None) -> World:
    """The :class:`World` that torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` describe
    (a plain run when they are unset)."""
    env = os.environ if env is None else env

    def number(name: str, default: int) -> int:
        text = str(env.get(name, "")).strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise DensevisError(f"environment variable {name}={text!r} is not an integer; "
                                f"start sharded runs with torchrun, which sets it") from None

    size = number("WORLD_SIZE", 1)
    rank = number("RANK", 0)
    local_rank = number("LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise DensevisError(f"RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank} do not "
                            f"describe a process of a run (need 0 <= RANK < WORLD_SIZE); start "
                            f"sharded runs with torchrun")
    return World(rank, size, local_rank)


def rank_device(spec: str, world: World | None = None):
    """The device of this rank: ``auto`` and ``cuda`` give ``cuda:LOCAL_RANK`` (``auto`` falls
    back to the CPU without CUDA); ``cpu`` and an explicit ``cuda:N`` are taken as given."""
    world = world or world_from_env()
    spec = str(spec)
    if spec == "cuda" or (spec == "auto" and torch.cuda.is_available()):
        resolve_device("cuda")  # a clear error when CUDA is missing
        count = torch.cuda.device_count()
        if world.local_rank >= count:
            raise DensevisError(f"LOCAL_RANK {world.local_rank} has no GPU: {count} visible on "
                                f"this node; start at most {count} processes per node "
                                f"(torchrun --nproc_per_node {count}) or use --device cpu")
        return torch.device("cuda", world.local_rank)
    return resolve_device(spec)


def timeout() -> datetime.timedelta:
    """How long a rank waits in a collective (``DENSEVIS_DIST_TIMEOUT`` seconds)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DensevisError(f"{TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    return datetime.timedelta(seconds=seconds)


def init_process_group(world: World | None = None, device_type: str = "cpu") -> None:
    """Join the run's process group once per process (no-op for a plain run or when the caller
    already did): NCCL when the ranks use CUDA, else gloo; the status exchanges always go
    through gloo (CPU objects; NCCL would make a waiting rank spin its GPU)."""
    world = world or world_from_env()
    if not world.sharded:
        return
    if not dist.is_available():
        raise DensevisError("this torch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise DensevisError(f"WORLD_SIZE={world.size} but {' and '.join(missing)} "
                                f"{'is' if len(missing) == 1 else 'are'} not set; start "
                                f"sharded runs with torchrun --nproc_per_node N -m densevis ...")
        backend = "nccl" if device_type == "cuda" else "gloo"
        if backend == "nccl" and world.local_rank < torch.cuda.device_count():
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group(backend, rank=world.rank, world_size=world.size,
                                timeout=timeout())
        atexit.register(_shutdown)
    elif (dist.get_rank(), dist.get_world_size()) != (world.rank, world.size):
        raise DensevisError(f"the process group is rank {dist.get_rank()} of "
                            f"{dist.get_world_size()} but the environment says {world.rank} of "
                            f"{world.size}")
    if "group" not in _CONTROL:
        _CONTROL["group"] = dist.group.WORLD if dist.get_backend() == "gloo" else \
            dist.new_group(backend="gloo", timeout=timeout())


def init_process_group_for(device, world: World | None = None) -> None:
    """:func:`init_process_group` for ranks that compute on ``device`` (``auto``, ``cpu``,
    ``cuda``, ``cuda:N``): the backend follows the device type it resolves to."""
    init_process_group(world, resolve_device(str(device)).type)


def _shutdown() -> None:
    _CONTROL.clear()
    if dist.is_initialized():
        dist.destroy_process_group()


def _control_group():
    if "group" not in _CONTROL:
        init_process_group()
    return _CONTROL["group"]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def agree(step: str, work: Callable, hint: str = "", values: str | None = "all"):
    """Run ``work()`` on every rank; stop every rank alike if any rank failed.

    Parameters
    ----------
    step : str
        What the ranks were doing, for the message (``explain``, ``merge``...).
    work : callable
        This rank's part. It must not call :func:`agree` itself (every rank has to reach the
        same collectives in the same order).
    hint : str
        Appended to the failure message (what is left on disk, how to resume).
    values : {"all", "main", None}
        Who receives the ranks' return values: every rank, rank 0 only, or nobody.

    Returns
    -------
    list or None
        The return values in rank order (``None`` where not received). In a plain run:
        ``[work()]``, exceptions propagating unchanged.

    Raises
    ------
    RankInputError, RankFailure
        On every rank, when a rank raised: bad input everywhere it failed -> RankInputError.
    """
    world = world_from_env()
    if not world.sharded:
        return [work()]
    value = None
    try:
        value, status = work(), ("ok", "")
    except USER_ERRORS as exc:
        status = ("input", _one_line(exc))
    except Exception as exc:  # a bug or a crash: its traceback stays on this rank's stderr
        traceback.print_exc()
        status = ("bug", f"{type(exc).__name__}: {_one_line(exc)}")
    group = _control_group()
    statuses: list = [None] * world.size
    dist.all_gather_object(statuses, status, group=group)
    failed = [(rank, kind, text) for rank, (kind, text) in enumerate(statuses) if kind != "ok"]
    if failed:
        raise _failure(step, failed, world, hint)
    if values == "all":
        gathered: list = [None] * world.size
        dist.all_gather_object(gathered, value, group=group)
        return gathered
    if values == "main":
        gathered = [None] * world.size if world.rank == 0 else None
        dist.gather_object(value, gathered, dst=0, group=group)
        return gathered
    return None


def _failure(step: str, failed: list, world: World, hint: str) -> RankFailure:
    texts = {text for _, _, text in failed}
    if len(failed) == world.size and len(texts) == 1:
        message = texts.pop()  # the same error everywhere: say it as a plain run would
    else:
        rank, _, text = failed[0]
        message = f"{step} failed on rank {rank} of {world.size}: {text}"
        if len(failed) > 1:
            message += f" (also on rank {', '.join(str(r) for r, _, _ in failed[1:])})"
    if hint:
        message += f"; {hint}"
    kind = RankInputError if all(k == "input" for _, k, _ in failed) else RankFailure
    exc = kind(message)
    exc.reporter = world.rank == 0
    return exc


def stop(message: str) -> RankInputError:
    """A :class:`RankInputError` for a decision every rank takes alike from gathered values
    (no exchange needed); raise it on every rank."""
    exc = RankInputError(message)
    exc.reporter = world_from_env().rank == 0
    return exc


def main_only(step: str, work: Callable):
    """Run ``work()`` on rank 0 while the others wait; its failure stops every rank. Returns
    rank 0's value on every rank (keep it small: it is sent to all)."""
    world = world_from_env()
    return agree(step, work if world.rank == 0 else (lambda: None))[0]


def report(command: str, exc: RankFailure) -> int:
    """Print a sharded command's failure once (on rank 0) and return its exit status."""
    if exc.reporter:
        print(f"densevis {command}: error: {exc}", file=sys.stderr, flush=True)
    if world_from_env().sharded and dist.is_initialized():
        # torchrun stops every process once one has exited: the others wait for the message
        with contextlib.suppress(RuntimeError):
            dist.barrier(group=_control_group())
    return exc.exit_code


def is_main() -> bool:
    """Whether this process is rank 0 (a plain run's one process is): the one that prints and
    writes what the run returns."""
    return world_from_env().rank == 0


def exit_status(command: str, work: Callable[[], int | None]) -> int:
    """Run a command's ``work()`` and return its exit status; a :class:`RankFailure` is
    printed once (rank 0) and gives the same status on every rank (see :func:`report`)."""
    try:
        return int(work() or 0)
    except RankFailure as exc:
        return report(command, exc)


def shard_ranges(count: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """Split rows ``0..count`` into ``parts`` contiguous ``(start, stop)`` ranges whose starts
    are multiples of ``align`` (the batch size: a shard's batches are then exactly the batches
    of one whole run, so its maps are the same numbers). Sizes differ by at most one block;
    a range may be empty when there are fewer blocks than parts."""
    if count < 0 or parts < 1 or align < 1:
        raise DensevisError(f"cannot split {count} rows into {parts} parts of {align}-row blocks")
    blocks = -(-count // align)
    bounds = [min(count, blocks * part // parts * align) for part in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))
