"""Maps files: the saliency engine's output and the analysis layer's input (HDF5).

Layout (maps contract of ``shared/DESIGN.md``):

- ``maps/<method>`` float32 (N, H, W) for pixel methods (``vanilla``, ``guided``, ...);
- ``maps/<method>/<layer>`` float32 (N, H, W) for layer methods (``gradcam``, ...), one dataset
  per layer, keyed by the layer's name (e.g. ``denseblock4``);
- ``logits`` float32 (N, C), ``targets`` int64 (N,), ``index`` int64 (N,) into the probe set;
- attrs: ``format``, ``checkpoint_sha256``, ``probe_sha256``, ``probe_set``, ``methods`` and
  ``layers`` (JSON lists), ``method_params`` (JSON), ``method_signs`` (JSON: ``signed`` or
  ``non_negative`` per method, as its registration declares, ``Method.sign``), ``versions``
  (JSON), ``image_size``.

Every map is unnormalized, at input resolution, as the method's paper defines it.

:class:`MapsWriter` streams batches into a temporary file that becomes the destination only when
:meth:`MapsWriter.close` succeeds; :class:`MapsFile` checks the contract when it opens a file
(types and shapes of every dataset, one row per image, each image once) and reads lazily.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from densevis.errors import DensevisError
from probes.atomic import atomic_output, check_h5, check_input_file, same_file, writing_h5
from probes.errors import first_line
from probes.reader import CheckedDataset

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
            writing = writing_h5(tmp)
            self._h5 = writing.__enter__()
            self._writing = writing
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
        check_h5(self._h5)  # a full disk stops the work here, not at the end

    def close(self) -> None:
        """Finish the file and move it to its destination."""
        try:
            self._writing.__exit__(None, None, None)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._atomic.__exit__(None, None, None)

    def _abort(self, exc: BaseException) -> None:
        if getattr(self, "_writing", None) is not None:
            self._writing.__exit__(type(exc), exc, exc.__traceback__)
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
        self.path = check_input_file(path, "maps file", "create it with 'densevis explain'",
                                     DensevisError)
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise DensevisError(f"{self.path} is not a readable HDF5 file ({first_line(exc)}); "
                                f"create it with 'densevis explain'") from None
        try:
            self._validate()
        except OSError as exc:  # a damaged chunk of index, say
            self._h5.close()
            raise DensevisError(f"maps file {self.path} is damaged ({first_line(exc)}); make it "
                                f"again with 'densevis explain'") from None
        except BaseException:
            self._h5.close()
            raise

    def _validate(self) -> None:
        """The maps contract, checked on open: every dataset there, of its type and shape, one
        row per image, each image once."""
        h5 = self._h5
        if h5.attrs.get("format") != FORMAT:
            raise DensevisError(f"{self.path} is not a densevis maps file (format "
                                f"{h5.attrs.get('format')!r}, expected {FORMAT!r}); create one "
                                f"with 'densevis explain'")
        self.attrs = {k: _decode(v) for k, v in h5.attrs.items()}
        bad = f"maps file {self.path}: {{}}; it is damaged or was not written by densevis: " \
              f"make it again with 'densevis explain'"
        missing = [name for name in ("logits", "targets", "index") if name not in h5]
        if missing:
            raise DensevisError(bad.format(f"it lacks {', '.join(missing)}"))
        rows = h5["targets"].shape[0] if h5["targets"].ndim == 1 else -1
        expected = {"targets": ((rows,), "i"), "index": ((rows,), "i"), "logits": (None, "f")}
        for name, (shape, kinds) in expected.items():
            dataset = h5[name]
            if (shape is not None and dataset.shape != shape) or dataset.dtype.kind not in kinds \
                    or (name == "logits" and (dataset.ndim != 2 or dataset.shape[0] != rows)):
                raise DensevisError(bad.format(f"{name} is {dataset.dtype} of shape "
                                               f"{dataset.shape} for {rows} rows"))
        keys = []
        for method, node in h5.get("maps", {}).items():
            if isinstance(node, h5py.Dataset):
                keys.append((method, None))
            else:
                keys.extend((method, layer) for layer in node)
        self.keys = sorted(keys, key=lambda key: (key[0], key[1] or ""))
        side = self.attrs.get("image_size")
        for key in self.keys:
            dataset = h5[map_key(*key)]
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind != "f" or \
                    dataset.shape != (rows, side, side):
                raise DensevisError(bad.format(
                    f"maps {map_key(*key)[5:]} are {getattr(dataset, 'dtype', 'a group')} of "
                    f"shape {getattr(dataset, 'shape', '?')}, expected ({rows}, {side}, {side}) "
                    f"float: one {side}x{side} map per row"))
        index = h5["index"][:]
        if len(np.unique(index)) != len(index) or (len(index) and index.min() < 0):
            raise DensevisError(bad.format("index names an image twice or a negative image"))

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
        return self._dataset(map_key(method, layer))[index]

    def _dataset(self, name: str) -> CheckedDataset:
        return CheckedDataset(self._h5[name], self.path)

    @property
    def logits(self) -> np.ndarray:
        return self._dataset("logits")[:]

    @property
    def targets(self) -> np.ndarray:
        return self._dataset("targets")[:]

    @property
    def index(self) -> np.ndarray:
        return self._dataset("index")[:]

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


def check_distinct(paths) -> None:
    """Refuse maps files given twice (one file under two names included) and two files with
    maps of one method and layer of one probe file: every image would be counted twice, the
    confidence intervals too narrow."""
    seen: dict[tuple, str] = {}
    paths = [Path(p) for p in paths]
    for k, path in enumerate(paths):
        twin = next((other for other in paths[:k] if same_file(path, other)), None)
        if twin is not None:
            raise DensevisError(f"maps file {path} is given twice (as {twin} too); give each "
                                f"maps file once")
        with MapsFile(path) as maps:
            for key in maps.keys:
                owner = seen.setdefault((maps.attrs.get("probe_sha256"), key), str(path))
                if owner != str(path):
                    raise DensevisError(
                        f"maps files {owner} and {path} both hold {map_key(*key)[5:]} maps of "
                        f"probe file {maps.attrs.get('probe', '?')}: its images would be "
                        f"counted twice; give one of them")
