"""The maps of one image of a finished run (:meth:`densevis.report.run_folder.Run.plot_saliency`):
read from the run's maps file, or computed again from its checkpoint as the run's explain stage
computes them (:func:`densevis.saliency.files.prepare_explain`: the same checks, methods, layers
and parameters; the image's label as the target).

Both return ``{(method, layer or None): (H, W) map}`` with the methods in the order the run
asked for them and each method's layers in network order, the order
:func:`densevis.saliency.panel.saliency_panel` draws.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from densevis.maps import MapsFile
from densevis.model import preprocess
from densevis.saliency.files import prepare_explain


def stored_maps(path: Path, image: int) -> dict | None:
    """The maps of probe image ``image`` in the maps file ``path`` (None when the file has no
    row of it)."""
    with MapsFile(path) as stored:
        rows = np.flatnonzero(stored.index[:] == image)
        if not len(rows):
            return None
        order = {layer: k for k, layer in enumerate(stored.attrs.get("layers", []))}
        methods = [m for m in stored.attrs.get("methods", []) if m in stored.methods] \
            or stored.methods
        maps = {}
        for method in methods:
            layers = sorted(stored.layers(method), key=lambda l: order.get(l, len(order)))
            for layer in layers or [None]:
                maps[method, layer] = stored.read(method, layer, int(rows[0]))
    return maps


def computed_maps(checkpoint: Path, data: Path, saliency: dict, image: np.ndarray, label: int,
                  device: str = "cpu") -> dict:
    """The maps of one ``image`` (uint8 (H, W) of probe file ``data``) explaining class
    ``label`` under ``checkpoint``, with the run's ``[saliency]`` settings (provenance's
    ``spec.saliency``: methods, layers, params, method_layers)."""
    job = prepare_explain(checkpoint, data, saliency.get("methods", "panel"),
                          saliency.get("layers", "all"), saliency.get("params") or None,
                          saliency.get("method_layers") or None, device, progress=False)
    with job.probe:
        result = job.engine.attribute(preprocess(image[None]), targets=[label])
    return {key: values[0] for key, values in result.numpy().items()}
