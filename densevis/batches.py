"""Training batches streamed from a probe-set file, shuffled and augmented from a seed.

The whole file is never loaded: each epoch visits the HDF5 chunks (whole, so each is decompressed
once) in a seeded random order, pools a few of them, shuffles the pooled images and cuts batches.
Augmentations are symmetries of the task (a square stays a square and a circle a circle under
flips and quarter turns), drawn per image from a seeded ``torch.Generator``.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from probes import write_probe_set
>>> path = write_probe_set(Path(tempfile.mkdtemp()) / "train.h5", "base", n=24, size=32,
...                        workers=1)
>>> stream = BatchStream(ProbeSet(path), batch_size=16, seed=0)
>>> images, labels, index = next(iter(stream.epoch(0)))
>>> images.shape, labels.dtype, len(index)  # numpy arrays
((16, 32, 32), dtype('int64'), 16)
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from densevis.errors import DensevisError
from densevis.recipe import AUGMENTATIONS
from probes import ProbeSet



class BatchStream:
    """Seeded, shuffled batches ``(images uint8 (B,H,W), labels int64 (B,), index (B,))``.

    Parameters
    ----------
    probe : ProbeSet
    batch_size : int
    seed : int
        With ``epoch``, fixes the order: ``epoch(e)`` gives the same batches every time.
    pool_chunks : int
        HDF5 chunks shuffled together (memory: ``pool_chunks`` chunks of images).
    labels : array, optional
        Labels to serve instead of the file's (one per image).
    """

    def __init__(self, probe: ProbeSet, batch_size: int, seed: int, pool_chunks: int = 16,
                 labels: np.ndarray | None = None):
        if batch_size < 1:
            raise DensevisError(f"must be positive (got {batch_size})", parameter="batch_size")
        self.probe, self.batch_size, self.seed = probe, batch_size, seed
        self.labels = np.asarray(probe.labels[:] if labels is None else labels, np.int64)
        if self.labels.shape != (len(probe),):
            raise DensevisError(f"{len(self.labels)} labels given for {len(probe)} images")
        self.block = probe.images.chunks[0] if probe.images.chunks else 64
        self.pool = max(1, pool_chunks) * self.block

    def __len__(self) -> int:
        """Batches per epoch (the last one may be smaller)."""
        return -(-len(self.probe) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.probe)
        starts = rng.permutation(np.arange(0, n, self.block))
        images_ds, labels = self.probe.images, self.labels
        carry = None
        for first in range(0, len(starts), self.pool // self.block):
            blocks = np.sort(starts[first:first + self.pool // self.block])
            index = np.concatenate([np.arange(b, min(b + self.block, n)) for b in blocks])
            images = np.concatenate([images_ds[b:b + self.block] for b in blocks])
            order = rng.permutation(len(index))
            index, images = index[order], images[order]
            if carry is not None:  # the remainder of the previous pool leads the next one
                index = np.concatenate([carry[0], index])
                images = np.concatenate([carry[1], images])
            whole = len(index) - len(index) % self.batch_size
            for b in range(0, whole, self.batch_size):
                rows = slice(b, b + self.batch_size)
                yield images[rows], labels[index[rows]], index[rows]
            carry = (index[whole:], images[whole:])
        if carry is not None and len(carry[0]):
            yield carry[1], labels[carry[0]], carry[0]


def augment(images: torch.Tensor, generator: torch.Generator, kind: str = "dihedral",
            shift: int = 0) -> torch.Tensor:
    """Random symmetries (``kind`` in :data:`AUGMENTATIONS`) and shifts of (N, H, W) images.

    ``shift`` > 0 also translates each image by up to that many pixels (zero fill): a random
    crop of the padded image.

    Examples
    --------
    >>> x = torch.arange(4, dtype=torch.uint8).reshape(1, 2, 2)
    >>> augment(x, torch.Generator().manual_seed(0), "none").tolist()
    [[[0, 1], [2, 3]]]
    """
    if kind not in AUGMENTATIONS:
        raise DensevisError(f"unknown augmentation {kind!r}; valid: {', '.join(AUGMENTATIONS)}")
    elements = torch.tensor(AUGMENTATIONS[kind])
    draws = elements[torch.randint(len(elements), (len(images),), generator=generator)]
    out = images.clone()
    for element in elements.tolist():
        rows = torch.nonzero(draws == element).flatten()
        if element == 0 or len(rows) == 0:
            continue
        chosen = images[rows].transpose(1, 2) if element & 4 else images[rows]
        out[rows] = torch.rot90(chosen, element & 3, dims=(1, 2))
    if shift > 0:
        size = images.shape[-1]
        padded = torch.nn.functional.pad(out, (shift, shift, shift, shift))
        offsets = torch.randint(0, 2 * shift + 1, (len(images), 2), generator=generator).tolist()
        out = torch.stack([padded[i, dy:dy + size, dx:dx + size]
                           for i, (dy, dx) in enumerate(offsets)])
    return out
