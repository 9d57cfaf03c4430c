"""densevis: sanity checks and hypothesis tests for saliency maps on CNNs.

Data flows one way: probe sets (``probes``) -> model (``densevis.model``, ``densevis.train``) ->
saliency maps (``densevis.saliency``) -> metrics and statistics (``densevis.analysis``) -> tables
and reports (``densevis.report``). ``densevis.cli`` is the command line.

For notebooks: :func:`load_run` reads a finished run (tables, answers, figures;
:mod:`densevis.report.run_folder`) and :func:`saliency_panel` draws maps held in memory
(:mod:`densevis.saliency.panel`). Both are imported on first use, so ``import densevis`` stays
light (the command line and the pytest plugin import it).

>>> import densevis
>>> densevis.load_run.__module__
'densevis.report.run_folder'
"""

import importlib

__version__ = "0.1.0"

#: Name -> the module that defines it, imported when the name is first used.
_LAZY = {"load_run": "densevis.report.run_folder", "Run": "densevis.report.run_folder",
         "saliency_panel": "densevis.saliency.panel"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'densevis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
