"""Memory-bounded chunks that shrink by half when the GPU runs out of memory."""

from __future__ import annotations

from typing import Callable

import torch

#: What a too-large chunk raises (``torch.OutOfMemoryError`` is ``torch.cuda.OutOfMemoryError``).
OOM_ERRORS = (torch.cuda.OutOfMemoryError,)


def in_chunks(count: int, size: int, step: Callable[[int, int], None]) -> int:
    """Call ``step(start, stop)`` over ``range(count)`` in consecutive chunks of at most ``size``.

    When a chunk raises an out-of-memory error the chunk size becomes half that chunk's length
    and the chunk is tried again (``step`` must have no side effect before it fails: compute, then store). A
    chunk of one that still does not fit re-raises.

    Returns
    -------
    int
        The chunk size that worked, so that later calls start from it.

    Examples
    --------
    >>> seen = []
    >>> in_chunks(5, 2, lambda a, b: seen.append((a, b)))
    2
    >>> seen
    [(0, 2), (2, 4), (4, 5)]
    """
    start, size = 0, max(1, int(size))
    while start < count:
        stop = min(count, start + size)
        try:
            step(start, stop)
        except OOM_ERRORS:
            if stop - start == 1:
                raise
            size = (stop - start) // 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop
    return size
