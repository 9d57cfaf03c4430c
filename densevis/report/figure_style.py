"""What every figure of the report shares: page size, fonts, colours and the orders of layers
and methods.

The report's page is at most 1200 px wide and ``png_of`` renders at 90 dpi, so a figure at most
:data:`PAGE_WIDTH_IN` inches wide is shown at its own size (never scaled down). An 8 pt CSS font
is 10.7 px; a :data:`MIN_FONT_PT` point font at 90 dpi is 11.25 px, so no text of a figure is
smaller than 8 pt on the page.

Examples
--------
>>> in_order(["denseblock4", "x", "conv0", ""], ["conv0", "denseblock4"])
['', 'conv0', 'denseblock4', 'x']
>>> is_ratio_metric("density_ratio"), is_ratio_metric("mass_minus_area")
(True, False)
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from densevis.analysis.hypotheses import HYPOTHESES
from densevis.saliency.methods import METHODS

#: Widest figure (inches) that the 1200 px page shows unscaled at 90 dpi, with room to spare.
PAGE_WIDTH_IN = 12.8
#: Smallest font (points at 90 dpi) of any text: 8 pt or more on the page (module docstring).
MIN_FONT_PT = 9
VERDICT_COLOURS = {"supported": "#2e7d32", "rejected": "#c62828", "inconclusive": "#757575"}
#: Units (:data:`densevis.analysis.hypothesis_registry.UNITS`) whose statistics are ratios of positive
#: quantities (1 = no preference): drawn on a log scale, where 2x and 1/2x are equally far.
RATIO_UNITS = ("ratio",)
#: Sequential colour map of layers in network order (shallow light, deep dark).
LAYER_COLOURMAP = "viridis_r"


def new_figure(height: float, width: float = PAGE_WIDTH_IN) -> Figure:
    """A figure (no pyplot state) whose constrained layout keeps every label inside it."""
    return Figure(figsize=(width, height), layout="constrained")


def blank(value) -> str:
    """A table cell as text: "" for a missing value (a pixel method's layer read from CSV)."""
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def in_order(values: Iterable, order: Iterable[str]) -> list:
    """The distinct ``values`` in ``order`` (e.g. layers in network order): "" first, then the
    ordered ones, then the rest in their first appearance."""
    order = list(order)
    distinct = list(dict.fromkeys(blank(v) for v in values))
    known = [v for v in order if v in distinct]
    rest = [v for v in distinct if v not in order and v != ""]
    return [""] * ("" in distinct) + known + rest


def method_order(methods: Iterable[str]) -> list[str]:
    """The distinct ``methods`` in the saliency registry's order (unknown ones after, sorted)."""
    distinct = set(blank(m) for m in methods)
    return [m for m in METHODS if m in distinct] + sorted(distinct - set(METHODS))


def is_ratio_metric(metric: str) -> bool:
    """Whether a registered hypothesis declares ``metric`` as a statistic in a ratio unit."""
    return any(statistic.key == metric and statistic.unit in RATIO_UNITS
               for definition in HYPOTHESES.values() for statistic in definition.statistics)


def layer_colours(layers: list[str]) -> dict[str, tuple]:
    """One colour per layer from :data:`LAYER_COLOURMAP`, in the given (network) order."""
    cmap = colormaps[LAYER_COLOURMAP]
    positions = np.linspace(0.1, 0.95, max(len(layers), 2))
    return {layer: cmap(float(p)) for layer, p in zip(layers, positions)}


def one_model(table: pd.DataFrame, what: str) -> pd.DataFrame:
    """``table`` itself when it holds one model's rows (or has no ``model`` column).

    Raises
    ------
    ValueError
        Rows of several models: a figure of ``what`` would pool them silently.
    """
    if "model" in table.columns and table["model"].nunique() > 1:
        models = ", ".join(map(str, dict.fromkeys(table["model"])))
        raise ValueError(f"{what}: the rows hold several models ({models}); pass one model's "
                         f"rows (e.g. table[table['model'] == 'seed0'])")
    return table
