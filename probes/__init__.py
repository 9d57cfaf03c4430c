"""Synthetic probe sets with exact ground truth for testing saliency hypotheses.

``probes`` draws the original study's "circles and a square" images and counterfactual sets (lines
only, large squares, small circles, paired edits of one scene) with exact per-object masks, and
writes them reproducibly to HDF5 (see ``docs/DESIGN.md``, probe-set contract); a user's own
images, labels and region masks become a probe file with :func:`write_arrays`.

Examples
--------
>>> import tempfile, pathlib
>>> from probes import ProbeSet, write_probe_set
>>> path = write_probe_set(pathlib.Path(tempfile.mkdtemp()) / "lines.h5", "lines_only", n=8,
...                        seed=1, size=64)
>>> probe = ProbeSet(path)
>>> probe.name, int(probe.labels[:].max()), bool(probe.masks("line")[:].any())
('lines_only', 0, True)
"""

from .arrays import grey_levels, to_grey, write_arrays
from .contract import FORMAT
from .errors import ProbeError
from .params import STUDY_IMAGE_SIZE
from .reader import ProbeSet, file_sha256, shape_of
from .scene import KINDS, Shape, footprint, render
from .sets import SETS, get_set
from .version import __version__
from .writer import write_probe_set

__all__ = ["FORMAT", "KINDS", "SETS", "STUDY_IMAGE_SIZE", "ProbeError", "ProbeSet", "Shape",
           "__version__", "file_sha256", "footprint", "get_set", "grey_levels", "render",
           "shape_of", "to_grey", "write_arrays", "write_probe_set"]
