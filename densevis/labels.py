"""Label rules: which images a model is trained to call positive.

``square`` is the probe file's ground truth (the original study's task). The other rules plant a
known cue, for validating densevis's verdicts on models whose true cue is known, and for the
data-randomization sanity check:

- ``edge``: positive iff the image holds any straight segment (a square's side or a line);
- ``small``: positive iff any object is smaller than the smallest base square at the probe's
  size (as every circle of ``small_circles`` is), whatever its shape;
- ``shuffled``: the ground truth permuted by a seeded generator (no cue at all).

``edge`` and ``small`` read the objects table, which only the generated sets have: on a file
without one (a user's own images) they are an error that says so.

Examples
--------
>>> import tempfile, pathlib
>>> from probes import ProbeSet, write_probe_set
>>> path = write_probe_set(pathlib.Path(tempfile.mkdtemp()) / "m.h5", "mixed", n=50, size=64)
>>> probe = ProbeSet(path)
>>> edge = rule_labels(probe, "edge")
>>> bool((edge >= probe.labels[:]).all())   # every square has straight sides
True
"""

from __future__ import annotations

import numpy as np

from densevis.errors import DensevisError
from densevis.recipe import LABEL_RULES as RULES
from densevis.recipe import TrainConfig
from probes import SETS, ProbeSet


def rule_labels(probe: ProbeSet, rule: str = "square", seed: int = 0) -> np.ndarray:
    """uint8 (N,) labels of ``probe`` under ``rule`` (see the module docstring)."""
    if rule not in RULES:
        raise DensevisError(f"unknown label rule {rule!r}; valid: {', '.join(RULES)}")
    truth = probe.labels[:]
    if rule == "square":
        return truth
    if rule == "shuffled":
        return np.random.default_rng([seed, 2]).permutation(truth)
    if not probe.has_objects:
        raise probe.missing("label_rules", f"train with the label rule 'square' (the file's "
                                           f"labels) or 'shuffled' instead of {rule!r}")
    objects = probe.objects()
    if rule == "edge":
        hits = objects.loc[objects["kind"].isin(["square", "line"]), "image"]
    else:
        smallest_square = SETS["base"].geometry(probe.size).side[0]
        hits = objects.loc[objects["size"] < smallest_square, "image"]
    labels = np.zeros(len(probe), np.uint8)
    labels[np.unique(hits.to_numpy())] = 1
    return labels


def training_labels(probe: ProbeSet, config: TrainConfig) -> np.ndarray:
    """The labels a model learns (and is validated on) under ``config.labels``: the file's
    ground truth, a planted cue, or a seeded permutation (the data-randomization check: no
    image keeps a reason for its label), as int64 (N,)."""
    return rule_labels(probe, config.labels, config.seed).astype(np.int64)
