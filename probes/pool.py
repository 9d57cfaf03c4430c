"""Worker processes that start safely and stop cleanly, for the probe writer and densevis runs.

Workers are forked (where the platform can): they inherit the caller's state, so the work
needs no pickling and no import time. Two things make that safe with the signals a command
stops on (Ctrl-C, SIGTERM; their handlers raise, :mod:`densevis.cli`):

- the fork runs with them held back (:func:`signals_deferred`): a handler raising inside
  Python's at-fork callbacks is ignored by Python and can leave logging's lock held, so the
  next fork waits forever (seen in CI);
- workers leave them to the main process (:func:`worker_signals`), which stops the pool
  (:func:`stop_pool`) without waiting for work nobody wants.

Examples
--------
>>> call_in_processes([lambda: 1 + 1, lambda: 2 * 3], workers=2)
[2, 6]
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
from typing import Callable, Iterator, Sequence

#: The signals a command stops on: their handlers raise (densevis.cli).
STOPPING_SIGNALS = {signal.SIGINT, signal.SIGTERM}
#: Held back while workers fork: those, and the alarm that raises a lost SIGTERM again
#: (densevis.cli), which could otherwise stop the pool between a fork and its record.
DEFERRED_SIGNALS = STOPPING_SIGNALS | {signal.SIGALRM}


def default_workers() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def fork_context():
    """Fork where the platform has it (workers inherit the caller's state and start at once;
    it works from scripts without a main guard), else spawn."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGALRM wait until the block ends (they stay pending, then are
    handled).

    Wrap what forks workers: a fork runs Python's at-fork callbacks, logging's among them (it
    holds its module lock across the fork). A handler that raises inside one is ignored by
    Python and can leave that lock held: the next fork then waits forever.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, DEFERRED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def worker_signals(main: int | None = None) -> None:
    """A worker's initializer. Ctrl-C and SIGTERM sent to the whole process group are the main
    process's to handle (it removes half-written files and says so in one line): a worker
    ignores Ctrl-C and dies quietly on SIGTERM, without a traceback of its own. A worker forked
    while the main process deferred them inherits that mask: it takes them again here.

    And a worker never outlives the main process (on Linux the kernel kills it when the main
    process ``main`` ends): one the pool had not yet recorded when it stopped, or whose main
    process was killed outright, would otherwise wait on the pool's queue forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, DEFERRED_SIGNALS)
    if main is not None:
        _die_with(main)


def _die_with(parent: int) -> None:
    """SIGKILL this process when ``parent``, the process that forked it, ends (Linux'
    PR_SET_PDEATHSIG); exit now if it has already ended. Elsewhere nothing."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):  # no prctl here
        return
    if os.getppid() != parent:
        os._exit(1)


def new_pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """A pool of ``workers`` forked workers with :func:`worker_signals`; submit to it inside
    :func:`signals_deferred` (the first submit forks them all) and end it with
    :func:`stop_pool` when stopped early."""
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=fork_context(),
                                                  initializer=worker_signals,
                                                  initargs=(os.getpid(),))


def stop_pool(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End a pool whose caller stopped (an error, Ctrl-C, SIGTERM, perhaps inside the pool's
    own machinery): the work still running is not wanted, and waiting for it could wait
    forever."""
    for process in list((pool._processes or {}).values()):
        process.kill()
    # a worker killed while it sent a result leaves the pool's reader thread waiting for the
    # rest of that message, and exit waits for that thread: with this process's copy of the
    # pipe's write end closed too, the reader gets end-of-file instead (its workers are dead)
    result_queue = getattr(pool, "_result_queue", None)
    if result_queue is not None:
        result_queue._writer.close()
    # the queue's feeder thread may be blocked writing to a pipe no worker reads any more;
    # joining it at exit would wait forever (the work it holds is not wanted)
    call_queue = getattr(pool, "_call_queue", None)
    if call_queue is not None:
        call_queue.cancel_join_thread()
    pool.shutdown(wait=False, cancel_futures=True)


_CALLS: Sequence[Callable] = ()  # what the workers of call_in_processes run, by index


def _call(index: int):
    return _CALLS[index]()


def call_in_processes(calls: Sequence[Callable[[], object]], workers: int) -> list:
    """Call each of ``calls`` (no arguments) in its own forked worker, at most ``workers`` at
    once; return their results in order.

    The calls need not pickle (the workers are forked after they are known), their results
    and exceptions must. The first exception stops every other call and is raised here. With
    one call or one worker, where the platform cannot fork, or inside a call of another
    ``call_in_processes`` (a worker), the calls run here in turn.

    Examples
    --------
    >>> os.getpid() in call_in_processes([os.getpid, os.getpid], 2)
    False
    """
    global _CALLS
    if workers <= 1 or len(calls) <= 1 or _CALLS \
            or "fork" not in multiprocessing.get_all_start_methods():
        return [call() for call in calls]
    _CALLS = tuple(calls)
    pool = new_pool(min(workers, len(calls)))
    try:
        with signals_deferred():  # the first submit forks every worker
            futures = {pool.submit(_call, index): index for index in range(len(calls))}
        results = [None] * len(calls)
        for future in concurrent.futures.as_completed(futures):
            results[futures[future]] = future.result()
    except BaseException:
        stop_pool(pool)
        raise
    finally:
        _CALLS = ()
    pool.shutdown()
    return results
