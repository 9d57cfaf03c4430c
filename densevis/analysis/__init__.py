"""The analysis layer: maps and probe sets in, evidence out.

- :mod:`~densevis.analysis.reduce`: the named reduction of each map (``abs``, ``as_is``, ...);
- :mod:`~densevis.analysis.localization`: pointing game, relevance mass/rank, AUROC, AP, top-k
  IoU, density ratio, mass minus area, vectorized in torch;
- :mod:`~densevis.analysis.cues`: edge and size cues, behaviour from logits, paired deltas;
- :mod:`~densevis.analysis.baselines`: the null maps ``random``, ``sobel``, ``center``;
- :mod:`~densevis.analysis.sanity`: model and data randomization (Adebayo et al. 2018);
- :mod:`~densevis.analysis.stats`: tests, bootstrap CIs, effect sizes, Holm/BH, verdicts;
- :mod:`~densevis.analysis.hypotheses`: ``localizes_square``, ``edge_detector``,
  ``small_object_detector``, ``passes_randomization``;
- :mod:`~densevis.analysis.tables`: the ``metrics``, ``summary`` and ``hypotheses`` tables
  (``densevis analyze``).
"""

from densevis.analysis.hypotheses import (edge_detector, localizes_square, passes_randomization,
                                          run_all, small_object_detector)
from densevis.analysis.localization import METRICS, localization_scores
from densevis.analysis.sanity import (data_randomization_test, engine_explain, layer_groups,
                                      randomization_test)
from densevis.analysis.stats import VERDICT_RULE, adjust, test_hypothesis
from densevis.analysis.tables import analyze, summarize, write_tables

__all__ = ["METRICS", "VERDICT_RULE", "adjust", "analyze", "data_randomization_test",
           "edge_detector", "engine_explain", "layer_groups", "localization_scores",
           "localizes_square", "passes_randomization", "randomization_test", "run_all",
           "small_object_detector", "summarize", "test_hypothesis", "write_tables"]
