"""densevis: sanity checks and hypothesis tests for saliency maps on CNNs.

Data flows one way: probe sets (``probes``) -> model (``densevis.model``, ``densevis.train``) ->
saliency maps (``densevis.saliency``) -> metrics and statistics (``densevis.analysis``) -> tables
and reports (``densevis.report``). ``densevis.cli`` is the command line.
"""

__version__ = "0.1.0"
