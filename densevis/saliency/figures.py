"""Figures of the original study (matplotlib, Agg, no pyplot state): per-image panels of gradient
maps and grids of layer maps over the image.

- :func:`gradient_panel`: a 3x3 grid per pixel method: image, model input, blank; all / positive
  / negative values in colour; the same in grey, each capped at its 99th percentile (so a few
  extreme pixels do not wash the rest out).
- :func:`layer_grid`: one map per layer (Grad-CAM, guided Grad-CAM, ...) overlaid on the image.
- :func:`method_figure`: the one of these that shows a method's maps of one image.
- :func:`render_maps`: every figure of the first images of a maps file, one PNG each.

Scaling is for display only; the maps file keeps the unnormalized maps.

Drawing maps is part of the saliency room, like :mod:`densevis.saliency.tiles`: both read only
maps, probe images and the method registry (never the analysis or the report), and the rooms
above draw with them: ``densevis explain --figures`` and the report
(:mod:`densevis.report.build`, :mod:`densevis.report.panels`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from densevis.model import preprocess
from probes.atomic import atomic_output

#: Percentile at which the grey rows of :func:`gradient_panel` are capped.
CAP_PERCENTILE = 99.0


def _show(ax, values, title: str, **style) -> None:
    ax.imshow(values, interpolation="nearest", **style)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def _cap(values: np.ndarray) -> float:
    """The 99th percentile of the nonzero magnitudes (1 when there are none)."""
    nonzero = np.abs(values[values != 0])
    return float(np.percentile(nonzero, CAP_PERCENTILE)) if nonzero.size else 1.0


def gradient_panel(image: np.ndarray, model_input: np.ndarray, grad: np.ndarray,
                   title: str = "") -> Figure:
    """The original study's 3x3 panel of one pixel map.

    Parameters
    ----------
    image : (H, W) uint8 grey image.
    model_input : (H, W) float, what the model saw (one channel of the input).
    grad : (H, W) float map (signed).

    Examples
    --------
    >>> fig = gradient_panel(np.zeros((8, 8), np.uint8), np.zeros((8, 8)), np.eye(8) - 0.5)
    >>> len(fig.axes)
    9
    """
    fig = Figure(figsize=(7.5, 7.5))
    axes = fig.subplots(3, 3)
    # a fixed layout: images without ticks need no layout engine, which costs most of the time
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.15)
    _show(axes[0, 0], image, "image", cmap="gray", vmin=0, vmax=255)
    _show(axes[0, 1], model_input, "model input", cmap="gray", vmin=0, vmax=1)
    axes[0, 2].set_axis_off()
    positive, negative = np.maximum(grad, 0), np.maximum(-grad, 0)
    top = float(np.abs(grad).max()) or 1.0
    _show(axes[1, 0], grad, "all", cmap="coolwarm", vmin=-top, vmax=top)
    _show(axes[1, 1], positive, "positive", cmap="Reds", vmin=0, vmax=top)
    _show(axes[1, 2], negative, "negative", cmap="Blues", vmin=0, vmax=top)
    cap = _cap(grad)
    _show(axes[2, 0], np.clip(grad, -cap, cap), f"all, cap p{CAP_PERCENTILE:g}", cmap="gray",
          vmin=-cap, vmax=cap)
    for ax, values, name in ((axes[2, 1], positive, "positive"), (axes[2, 2], negative, "negative")):
        cap = _cap(values)
        _show(ax, np.clip(values, 0, cap), f"{name}, cap p{CAP_PERCENTILE:g}", cmap="gray",
              vmin=0, vmax=cap)
    fig.suptitle(title, fontsize=10)
    return fig


def layer_grid(image: np.ndarray, maps: dict[str, np.ndarray], title: str = "",
               columns: int = 4) -> Figure:
    """One map per layer over the grey image (jet, half transparent), ``columns`` per row.

    Signed maps (guided Grad-CAM) are shown as magnitudes; each map is scaled to its own
    maximum.
    """
    rows = max(1, math.ceil(len(maps) / columns))
    height = 2.3 * rows + 0.4
    fig = Figure(figsize=(2.2 * columns, height))
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.55 / height, wspace=0.05,
                        hspace=0.15)
    for ax, (layer, values) in zip(axes, maps.items()):
        heat = np.abs(values)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        _show(ax, heat, layer, cmap="jet", alpha=0.5, vmin=0, vmax=float(heat.max()) or 1.0)
    for ax in axes[len(maps):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=10)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically (overwriting)."""
    with atomic_output(path, force=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def render_maps(maps, probe, folder: str | os.PathLike, limit: int = 8) -> list[Path]:
    """Figures of the first ``limit`` images of a maps file, as PNGs in ``folder``.

    Parameters
    ----------
    maps : densevis.maps.MapsFile
    probe : probes.ProbeSet
        The probe file the maps were computed from (checked by the caller).

    Returns
    -------
    list of Path
        ``<folder>/img<index>_<method>.png`` per pixel method and
        ``<folder>/img<index>_<method>_layers.png`` per layer method.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = min(limit, len(maps))
    index, targets = maps.index[:rows], maps.targets[:rows]
    # the order the maps were asked for, else the file's
    methods = [m for m in maps.attrs.get("methods", []) if m in maps.methods] or maps.methods
    written = []
    for row in range(rows):
        image = probe.images[int(index[row])]
        stem = f"img{int(index[row]):05d}"
        label = f"image {int(index[row])}, target class {int(targets[row])}"
        for method in methods:
            fig = method_figure(maps, method, row, image, f"{method}: {label}")
            suffix = "_layers" if maps.layers(method) else ""
            written.append(save_figure(fig, folder / f"{stem}_{method}{suffix}.png"))
    return written


def method_figure(maps, method: str, row: int, image: np.ndarray, title: str) -> Figure:
    """The figure of one method's maps of row ``row`` of a maps file: a layer method's
    :func:`layer_grid` (its layers in the model's order, as the maps were asked for), a pixel
    method's :func:`gradient_panel`.

    Parameters
    ----------
    maps : densevis.maps.MapsFile
    image : (H, W) uint8
        The probe image of that row.
    """
    order = {layer: i for i, layer in enumerate(maps.attrs.get("layers", []))}
    layers = sorted(maps.layers(method), key=lambda layer: order.get(layer, len(order)))
    if layers:
        return layer_grid(image, {layer: maps.read(method, layer, row) for layer in layers}, title)
    return gradient_panel(image, preprocess(image[None])[0, 0].numpy(),
                          maps.read(method, None, row), title)
