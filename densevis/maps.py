"""Maps files: the saliency engine's output and the analysis layer's input (HDF5).

Layout (maps contract of ``shared/DESIGN.md``):

- ``maps/<method>`` float32 (N, H, W) for pixel methods (``vanilla``, ``guided``, ...);
- ``maps/<method>/<layer>`` float32 (N, H, W) for layer methods (``gradcam``, ...), one dataset
  per layer, keyed by the layer's name (e.g. ``denseblock4``);
- ``logits`` float32 (N, C), ``targets`` int64 (N,), ``index`` int64 (N,) into the probe set;
- attrs: ``format``, ``checkpoint_sha256``, ``probe_sha256``, ``probe_set``, ``methods`` and
  ``layers`` (JSON lists), ``method_params`` (JSON), ``versions`` (JSON), ``image_size``.

Every map is unnormalized, at input resolution, as the method's paper defines it.

:class:`MapsWriter` streams batches into a temporary file that becomes the destination only when
:meth:`MapsWriter.close` succeeds; :class:`MapsFile` reads lazily.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from densevis.errors import DensevisError
from probes.atomic import atomic_output

FORMAT = "densevis-maps/1"


def map_key(method: str, layer: str | None = None) -> str:
    """HDF5 path of one method's maps (and layer's, for layer methods)."""
    return f"maps/{method}" if layer is None else f"maps/{method}/{layer}"


class MapsWriter:
    """Stream maps into a new maps file; nothing appears at ``path`` until :meth:`close`.

    Parameters
    ----------
    path : path
        Destination file.
    n : int
        Number of images.
    image_size : int
        Map side (the input resolution).
    num_classes : int
        Width of ``logits``.
    keys : list of (method, layer or None)
        The maps that will be written.
    attrs : dict
        File attributes (lists and dicts are stored as JSON).
    force : bool
        Overwrite an existing file.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "maps.h5"
    >>> with MapsWriter(path, 2, 8, 2, [("vanilla", None), ("gradcam", "conv0")]) as out:
    ...     out.write(0, {("vanilla", None): np.ones((2, 8, 8)), ("gradcam", "conv0"): np.zeros((2, 8, 8))},
    ...               logits=np.zeros((2, 2)), targets=np.array([0, 1]), index=np.array([5, 6]))
    >>> maps = MapsFile(path)
    >>> maps.keys, maps.read("vanilla").shape, maps.index.tolist()
    ([('gradcam', 'conv0'), ('vanilla', None)], (2, 8, 8), [5, 6])
    """

    def __init__(self, path, n: int, image_size: int, num_classes: int,
                 keys: list[tuple[str, str | None]], attrs: dict | None = None,
                 force: bool = False):
        self._atomic = atomic_output(path, force=force)
        tmp = self._atomic.__enter__()
        try:
            self._h5 = h5py.File(tmp, "w")
            self._h5.attrs["format"] = FORMAT
            self._h5.attrs["image_size"] = int(image_size)
            for name, value in (attrs or {}).items():
                self._h5.attrs[name] = value if isinstance(value, (str, int, float)) \
                    else json.dumps(value, sort_keys=True)
            rows = max(1, min(n, (1 << 20) // (4 * image_size * image_size)))
            # gzip 1 + shuffle: maps are mostly zeros or smooth, about 4x smaller for little time
            plane = dict(shape=(n, image_size, image_size), dtype="<f4",
                         chunks=(rows, image_size, image_size), compression="gzip",
                         compression_opts=1, shuffle=True)
            self._maps = {key: self._h5.create_dataset(map_key(*key), **plane) for key in keys}
            self._logits = self._h5.create_dataset("logits", (n, num_classes), "<f4")
            self._targets = self._h5.create_dataset("targets", (n,), "<i8")
            self._index = self._h5.create_dataset("index", (n,), "<i8")
        except BaseException as exc:
            self._abort(exc)
            raise

    def write(self, first: int, maps: dict, logits, targets, index) -> None:
        """Write a batch whose first row is ``first``; ``maps`` maps each key to (B, H, W)."""
        stop = first + len(targets)
        for key, dataset in self._maps.items():
            if key not in maps:
                raise KeyError(f"batch lacks maps for {key}")
            dataset[first:stop] = np.asarray(maps[key], dtype=np.float32)
        self._logits[first:stop] = np.asarray(logits, dtype=np.float32)
        self._targets[first:stop] = np.asarray(targets)
        self._index[first:stop] = np.asarray(index)

    def set_attr(self, name: str, value) -> None:
        self._h5.attrs[name] = value if isinstance(value, (str, int, float)) \
            else json.dumps(value, sort_keys=True)

    def close(self) -> None:
        """Finish the file and move it to its destination."""
        self._h5.close()
        self._atomic.__exit__(None, None, None)

    def _abort(self, exc: BaseException) -> None:
        if getattr(self, "_h5", None) is not None:
            self._h5.close()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)

    def __enter__(self) -> "MapsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self._abort(exc)


class MapsFile:
    """Lazy reader of a maps file.

    Attributes
    ----------
    keys : list of (method, layer or None)
        Every map stored, sorted.
    attrs : dict
        File attributes with JSON values decoded.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DensevisError(f"maps file {self.path} not found; create it with "
                                f"'densevis explain'")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise DensevisError(f"{self.path} is not a readable HDF5 file ({exc})") from None
        if self._h5.attrs.get("format") != FORMAT:
            found = self._h5.attrs.get("format")
            self._h5.close()
            raise DensevisError(f"{self.path} is not a densevis maps file (format {found!r}, "
                                f"expected {FORMAT!r}); create one with 'densevis explain'")
        self.attrs = {k: _decode(v) for k, v in self._h5.attrs.items()}
        keys = []
        for method, node in self._h5.get("maps", {}).items():
            if isinstance(node, h5py.Dataset):
                keys.append((method, None))
            else:
                keys.extend((method, layer) for layer in node)
        self.keys = sorted(keys, key=lambda key: (key[0], key[1] or ""))

    def __len__(self) -> int:
        return self._h5["targets"].shape[0]

    @property
    def methods(self) -> list[str]:
        return sorted({method for method, _ in self.keys})

    def layers(self, method: str) -> list[str]:
        return [layer for m, layer in self.keys if m == method and layer is not None]

    def read(self, method: str, layer: str | None = None, index=slice(None)) -> np.ndarray:
        """Maps of ``method`` (at ``layer``) for rows ``index``, float32 (n, H, W)."""
        if (method, layer) not in self.keys:
            known = ", ".join(m if l is None else f"{m}/{l}" for m, l in self.keys)
            raise DensevisError(f"{self.path} has no maps for {map_key(method, layer)[5:]}; "
                                f"it has: {known}")
        return self._h5[map_key(method, layer)][index]

    @property
    def logits(self) -> np.ndarray:
        return self._h5["logits"][:]

    @property
    def targets(self) -> np.ndarray:
        return self._h5["targets"][:]

    @property
    def index(self) -> np.ndarray:
        return self._h5["index"][:]

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "MapsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _decode(value):
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value.item() if isinstance(value, np.generic) else value
