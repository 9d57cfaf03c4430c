"""The analysis layer: maps and probe sets in, evidence out.

- :mod:`~densevis.analysis.reduce`: the named reduction of each map (``abs``, ``as_is``, ...);
- :mod:`~densevis.analysis.localization`: pointing game, relevance mass/rank, AUROC, AP, top-k
  IoU, density ratio, mass minus area, vectorized in torch;
- :mod:`~densevis.analysis.cues`: edge and size cues, behaviour from logits, paired deltas;
- :mod:`~densevis.analysis.baselines`: the null maps ``random``, ``sobel``, ``center``;
- :mod:`~densevis.analysis.sanity`: model and data randomization (Adebayo et al. 2018);
- :mod:`~densevis.analysis.stats`: sign and Mann-Whitney tests with the bounds that invert
  them, Bonferroni within families, verdicts;
- :mod:`~densevis.analysis.hypothesis_registry`: what a hypothesis declares (``Statistic``,
  ``hypothesis``, ``HypothesisSpec``); :mod:`~densevis.analysis.hypothesis_context`: the
  ``Context`` its function reads and adds rows to;
- :mod:`~densevis.analysis.hypotheses`: the built-in hypotheses (``localizes_square``,
  ``edge_detector``, ``small_object_detector``, ``passes_randomization``) and ``evaluate``;
- :mod:`~densevis.analysis.replicates`: inference across replicate models (``model`` column):
  ``evaluate_replicated``, replication across the trained models and a t test over them
  (:mod:`~densevis.analysis.replication`, per statistic);
- :mod:`~densevis.analysis.tables`: the ``metrics``, ``summary`` and ``hypotheses`` tables
  (``densevis analyze``).
"""

from densevis.analysis.hypotheses import (HYPOTHESES, HypothesisSpec, Statistic, evaluate,
                                          hypothesis)
from densevis.analysis.localization import METRICS, localization_scores
from densevis.analysis.replicates import REPLICATED, evaluate_replicated
from densevis.analysis.sanity import (data_randomization_test, engine_explain, layer_groups,
                                      randomization_test)
from densevis.analysis.stats import VERDICT_RULE, adjust, adjust_one, test_hypothesis
from densevis.analysis.tables import analyze, summarize, write_tables

__all__ = ["HYPOTHESES", "METRICS", "REPLICATED", "VERDICT_RULE", "HypothesisSpec", "Statistic",
           "adjust", "adjust_one", "analyze", "data_randomization_test", "engine_explain",
           "evaluate", "evaluate_replicated", "hypothesis", "layer_groups",
           "localization_scores", "randomization_test", "summarize", "test_hypothesis",
           "write_tables"]
