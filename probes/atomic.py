"""Safe paths: inputs checked, outputs written whole or not at all, never over an input.

Every output of densevis goes through :func:`atomic_output`: the writer fills a temporary file in
the destination's folder, named ``.NAME.PID.HOST.tmp``, and it becomes the destination only when
the writer finished. The guarantees:

- an output is never one of the command's inputs (same resolved path or same inode), even with
  ``force``: :func:`check_output_path`;
- without ``force`` the destination is created exclusively (a hard link, or ``O_EXCL``): two
  writers of one new file never both succeed, and a file that appeared meanwhile is kept;
- OS errors of the destination (disk full, read-only, permission, I/O error) become one-line
  :class:`ProbeError` messages and the temporary file is removed; HDF5 files are written through
  :func:`writing_h5`, which keeps such errors from reaching (and crashing) the HDF5 library;
- a temporary file whose process died (``kill -9``, power loss) is removed by the next writer in
  its folder: :func:`remove_stale_temps`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import h5py

from .errors import ProbeError

#: This machine in temporary names (a short hash of the host name): on a filesystem that several
#: nodes share, a node removes only its own dead processes' files.
HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
#: errno of os.link on a file system without hard links.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV,
                  errno.ENOSYS}
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)(?:\.(?P<host>[0-9a-f]{8}))?\.tmp$")

#: errno -> what it means for an output and how to fix it.
_WRITE_ERRORS = {
    errno.ENOSPC: "the disk is full; free some space or write to another disk",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write elsewhere",
    errno.EFBIG: "the file is too large for this file system; write to another disk",
    errno.EROFS: "the file system is read-only; write to a writable folder",
    errno.EACCES: "permission denied; write to a folder you may write to",
    errno.EPERM: "operation not permitted; write to a folder you may write to",
    errno.EIO: "input/output error (a failing disk or network file system); check the disk "
               "and run again",
}


# ------------------------------------------------------------------------------------- inputs
def check_input_file(path: str | os.PathLike, what: str, fix: str,
                     error: type[ProbeError] | type = ProbeError) -> Path:
    """``path`` as a :class:`Path` if it is an existing file; else a one-line ``error``.

    ``what`` names the file (``"probe file"``), ``fix`` says how to get one.

    Examples
    --------
    >>> check_input_file("/", "probe file", "create one with 'densevis generate'")
    Traceback (most recent call last):
    ...
    probes.errors.ProbeError: probe file / is a folder, not a file; create one with 'densevis generate'
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file; {fix}")
    if not path.is_file():
        raise error(f"{what} {path} not found; {fix}")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether ``a`` and ``b`` name one file: the same inode when both exist (hard links and
    symbolic links included), else the same resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


# ------------------------------------------------------------------------------------ outputs
def check_output_path(path: str | os.PathLike, force: bool = False,
                      inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Validate an output path before any work starts; return it as a :class:`Path`.

    Parameters
    ----------
    path : path
        The file to write.
    force : bool
        Whether an existing file may be replaced.
    inputs : paths
        The files the command reads: ``path`` must be none of them, whatever ``force`` says.

    Raises
    ------
    ProbeError
        If the path is an input, exists and ``force`` is false, names a folder, or its folder
        is missing or not writable.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise ProbeError(f"output {path} is also an input ({source}); writing it would "
                             f"destroy the input, even with --force: choose another output path")
    if path.is_dir():
        raise ProbeError(f"output {path} is a folder; give a file name")
    if path.exists() and not force:
        raise ProbeError(f"output {path} exists; pass --force to overwrite it or choose another path")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ProbeError(f"cannot write {path}: folder {folder} does not exist; create it first")
    _check_writable(folder, path)
    return path


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Validate a folder that will be created if needed and written into, before any work.

    Raises
    ------
    ProbeError
        If ``folder`` is a file, or it (or the nearest folder above it that exists, where it
        would be created) cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ProbeError(f"{folder} is a file; give a folder")
    existing = folder
    while not existing.is_dir():
        if existing.exists() or existing == existing.parent:
            raise ProbeError(f"cannot create folder {folder}: {existing} is not a folder")
        existing = existing.parent
    _check_writable(existing, folder)
    return folder


def _check_writable(folder: Path, path: Path) -> None:
    """Create and remove a file in ``folder``: the only test of writing that holds for root, on
    read-only mounts and on full disks alike (``os.access`` says yes to root)."""
    probe = temp_path(folder / ".write-test")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise output_error(path, exc) from None


def os_error_reason(exc: OSError) -> str | None:
    """What OS error ``exc`` means and how to fix it, for the errors of the machine (disk
    full, read-only, forbidden, failing); ``None`` for the others."""
    return _WRITE_ERRORS.get(exc.errno)


def output_error(path: str | os.PathLike, exc: OSError) -> ProbeError:
    """The one-line error of OS error ``exc`` while writing ``path``."""
    return ProbeError(f"cannot write {path}: {os_error_reason(exc) or exc.strerror or exc}")


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name of ``path`` in this process: ``.NAME.PID.HOST.tmp`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{HOST}.tmp")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` whose process (on this machine) is
    dead; return what was removed. Those of live processes and of other machines stay."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _TEMP.match(entry.name)
            if not match or match["host"] not in (None, HOST) or _alive(int(match["pid"])):
                continue
            with contextlib.suppress(OSError):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path)
                else:
                    os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, force: bool = False,
                  inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it becomes ``path`` if the block succeeds.

    On any exception (KeyboardInterrupt included) the temporary file is removed and ``path`` is
    left as it was. Without ``force`` the final name is created exclusively: if ``path``
    appeared while the block ran (another process wrote it), that file is kept and this raises.
    OS errors of the output become :class:`ProbeError`.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_output(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    path = check_output_path(path, force, inputs)
    remove_stale_temps(path.parent)
    tmp = temp_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced no file for {path}")
        _commit(tmp, path, force)
    except OSError as exc:
        # an error of another file (an input being read) keeps its own name and message
        if exc.errno in _WRITE_ERRORS and exc.filename in (None, str(tmp), str(path)):
            raise output_error(path, exc) from None
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _commit(tmp: Path, path: Path, force: bool) -> None:
    """Give the finished ``tmp`` its final name (``tmp`` itself is removed by the caller)."""
    if force:
        os.replace(tmp, path)
        return
    try:
        try:
            os.link(tmp, path)  # fails if path exists: never a rename over a newer file
        except OSError as exc:
            if exc.errno not in _NO_HARD_LINKS:
                raise
            # no hard links here (some network and FUSE file systems): claim the name, then
            # move the file onto the claim
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            os.replace(tmp, path)
    except FileExistsError:
        raise ProbeError(f"output {path} appeared while this command wrote it (another process "
                         f"wrote it); that file was kept and this result dropped: pass --force "
                         f"to overwrite it or choose another path") from None


def publish_folder(tmp: Path, names: Iterable[Path]) -> Path:
    """Rename the finished folder ``tmp`` to the first of ``names`` that no one has taken.

    Each name is claimed by creating it (exclusive), then ``tmp`` replaces the empty folder in
    one rename: two processes never publish under one name and neither loses its folder.
    """
    for name in names:
        try:
            name.mkdir()
        except FileExistsError:
            continue
        try:
            os.rename(tmp, name)
        except BaseException:
            with contextlib.suppress(OSError):
                name.rmdir()
            raise
        return name
    raise ProbeError(f"no free name for {tmp}")  # names is endless in practice


# --------------------------------------------------------------------------------------- HDF5
class _Sink:
    """A file for h5py's ``fileobj`` driver that never reports a write error to HDF5.

    HDF5 cannot recover from a failed write: closing the file then fails, and h5py crashes the
    interpreter (segfault) when it frees the file later. The first error is kept instead, later
    writes are dropped, and :meth:`check` raises it where the writer can stop cleanly.
    """

    def __init__(self, path: Path):
        self.path = path
        self.file = open(path, "w+b", buffering=0)
        self.error: OSError | None = None

    def write(self, data) -> int:
        size = memoryview(data).nbytes
        if self.error is None:
            try:
                view = memoryview(data).cast("B")
                while view:
                    view = view[self.file.write(view):]
            except OSError as exc:
                self.error = exc
        return size

    def readinto(self, buffer) -> int:
        return self.file.readinto(buffer)

    def read(self, size: int = -1) -> bytes:
        return self.file.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.file.seek(offset, whence)

    def tell(self) -> int:
        return self.file.tell()

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self.file.truncate(size)
            except OSError as exc:
                self.error = exc
        return self.file.tell() if size is None else size

    def flush(self) -> None:
        pass  # unbuffered

    def check(self) -> None:
        if self.error is not None:
            raise OSError(self.error.errno, self.error.strerror, str(self.path))


@contextlib.contextmanager
def writing_h5(path: str | os.PathLike, **options) -> Iterator:
    """A new HDF5 file at ``path`` (a temporary path of :func:`atomic_output`) whose write
    errors surface as :class:`OSError` from :func:`check_h5` or on leaving the block, never
    inside HDF5."""
    sink = _Sink(Path(path))
    try:
        h5 = h5py.File(sink, "w", **options)
        h5._densevis_sink = sink
        try:
            yield h5
        finally:
            h5.close()
    finally:
        sink.file.close()
    sink.check()


def check_h5(h5) -> None:
    """Raise the write error of a file from :func:`writing_h5`, if one happened: the writer
    calls it after each block so that a full disk stops the work at once."""
    sink = getattr(h5, "_densevis_sink", None)
    if sink is not None:
        sink.check()
