"""Write files so that a failure never leaves half a file behind.

Every output of densevis goes through :func:`atomic_output`: the writer fills a temporary file in
the destination's folder and it is renamed over the destination only when the writer finished.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from .errors import ProbeError


def check_output_path(path: str | os.PathLike, force: bool = False) -> Path:
    """Validate an output path before any work starts; return it as a :class:`Path`.

    Raises
    ------
    ProbeError
        If the path exists and ``force`` is false, names a folder, or its folder is missing or
        not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise ProbeError(f"output {path} is a folder; give a file name")
    if path.exists() and not force:
        raise ProbeError(f"output {path} exists; pass --force to overwrite it or choose another path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ProbeError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ProbeError(f"cannot write {path}: folder {folder} is not writable")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is
    left as it was.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_output(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    path = check_output_path(path, force)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced no file for {path}")
        os.replace(tmp, path)
    except PermissionError as exc:
        raise ProbeError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
