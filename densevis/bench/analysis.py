"""Localization-suite speed and agreement: densevis vs Quantus on the same maps and masks.

Inputs: a ``squares_only`` probe set (real square masks, one square per image) and synthetic maps
(a Gaussian blob near the square plus uniform noise, reduced with ``abs``). densevis computes its
whole localization suite (9 metrics) on all N maps; Quantus 0.6 computes its five (PointingGame,
RelevanceMassAccuracy, RelevanceRankAccuracy, AUC, TopKIntersection; ``abs=False,
normalise=False``) on the first ``--quantus-n`` maps, timed per metric and extrapolated
linearly to N maps (Quantus' cost is per map). ``speedup_vs_quantus`` compares Quantus' five
metrics with densevis' nine, so it understates the like-for-like ratio. densevis runs on
``--threads`` CPU threads (default: one per core, as every densevis command; ``--threads 1`` for
the single-threaded figure: Quantus' per-map numpy code uses one core whatever it is given) or on
the GPU (``--device cuda``).
``max_abs_diff`` is the largest difference over Quantus' maps (top-k: Quantus' share of the top k
in the mask is turned into densevis' IoU, see ``densevis.analysis.localization``).

examples:
  densevis bench analysis
  densevis bench analysis --n 200 --quantus-n 20 --json
"""

from __future__ import annotations

import argparse

HELP = "localization suite on N maps of 224x224: densevis vs Quantus (values, seconds, speed-up)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=1000, help="maps (default 1000)")
    parser.add_argument("--size", type=int, default=224, help="map side (default 224)")
    parser.add_argument("--quantus-n", type=int, default=100,
                        help="maps Quantus is timed on, extrapolated to --n (default 100)")
    parser.add_argument("--batch-size", type=int, default=250, help="densevis batch (default 250)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, default=0, help="seed of the probes and maps")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for densevis (default: torch's, one per core; 1 for "
                             "the single-threaded figure)")


def synthetic_maps(squares, seed: int):
    """Blob near each square's centre (offset, random width) plus uniform noise, float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n, size = squares.shape[0], squares.shape[-1]
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    maps = rng.random(squares.shape, dtype=np.float32)
    for i in range(n):  # one blob per map; the bench times the metrics, not this
        where = np.argwhere(squares[i]).mean(axis=0) + rng.normal(0, size / 20, 2)
        sigma = size / rng.uniform(10, 30)
        distance2 = (rows - where[0]) ** 2 + (cols - where[1]) ** 2
        maps[i] += 2.0 * np.exp(-distance2 / (2 * sigma ** 2))
    return maps


def quantus_scores(maps, masks, k: int) -> tuple[dict, dict]:
    """Quantus' five localization metrics and their seconds, densevis' names as keys."""
    import time
    import warnings

    import numpy as np

    try:
        import quantus
    except ImportError:
        from densevis.errors import DensevisError
        raise DensevisError("the analysis bench compares with Quantus; install it "
                            "(pip install 'densevis[test]')") from None
    plain = dict(abs=False, normalise=False, disable_warnings=True)
    metrics = {"pointing_game": quantus.PointingGame(**plain),
               "relevance_mass": quantus.RelevanceMassAccuracy(**plain),
               "relevance_rank": quantus.RelevanceRankAccuracy(**plain),
               "auroc": quantus.AUC(**plain),
               "topk_iou": quantus.TopKIntersection(k=k, **plain)}
    x = np.zeros((len(maps), 1) + maps.shape[1:], np.float32)
    call = dict(model=None, x_batch=x, y_batch=np.ones(len(maps), int), a_batch=maps[:, None],
                s_batch=masks[:, None], channel_first=True, explain_func=None,
                explain_func_kwargs=None, model_predict_kwargs=None, softmax=False)
    values, seconds = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, metric in metrics.items():
            start = time.perf_counter()
            values[name] = np.asarray(metric(**call), dtype=np.float64)
            seconds[name] = time.perf_counter() - start
    inside = values["topk_iou"] * k  # Quantus: share of the top k in the mask
    area = masks.reshape(len(masks), -1).sum(axis=1)
    values["topk_iou"] = inside / (k + area - inside)
    return values, seconds


def run(args: argparse.Namespace) -> dict:
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import torch

    from densevis.analysis.localization import localization_scores, topk_pixels
    from densevis.analysis.reduce import reduce_maps
    from densevis.errors import DensevisError
    from densevis.model import resolve_device
    from probes import ProbeSet, write_probe_set

    if args.n < 1 or not 1 <= args.quantus_n <= args.n or args.batch_size < 1 or \
            (args.threads is not None and args.threads < 1):
        raise DensevisError("need --n >= 1, 1 <= --quantus-n <= --n, --batch-size >= 1 and "
                            "--threads >= 1")
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        path = write_probe_set(Path(folder) / "squares.h5", "squares_only", n=args.n,
                               seed=args.seed, size=args.size)
        with ProbeSet(path) as probe:
            masks = probe.masks("square")[:]
    maps = synthetic_maps(masks, args.seed)
    k = topk_pixels(args.size, args.size)

    values = {}
    start = time.perf_counter()
    for first in range(0, args.n, args.batch_size):
        batch = slice(first, first + args.batch_size)
        reduced = reduce_maps(torch.from_numpy(maps[batch]).to(device), "abs")
        scores = localization_scores(reduced, torch.from_numpy(masks[batch]).to(device), k=k)
        for name, tensor in scores.values.items():
            values.setdefault(name, []).append(tensor.cpu().numpy())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    densevis_s = time.perf_counter() - start
    values = {name: np.concatenate(parts) for name, parts in values.items()}

    subset = slice(0, args.quantus_n)
    reference, seconds = quantus_scores(np.abs(maps[subset]), masks[subset], k)
    diffs = {name: float(np.abs(reference[name] - values[name][subset]).max())
             for name in reference}
    per_map_metric = sum(seconds.values()) / (len(seconds) * args.quantus_n)
    quantus_s = per_map_metric * len(seconds) * args.n
    return {
        "n_maps": args.n, "size": args.size, "device": str(device),
        "threads": torch.get_num_threads(), "densevis_metrics": len(values),
        "densevis_s": densevis_s, "densevis_ms_per_map": 1000 * densevis_s / args.n,
        "quantus_metrics": len(seconds), "quantus_timed_maps": args.quantus_n,
        "quantus_ms_per_map_per_metric": 1000 * per_map_metric,
        "quantus_s": quantus_s, "quantus_extrapolated": args.quantus_n < args.n,
        "speedup_vs_quantus": quantus_s / densevis_s,
        "max_abs_diff": max(diffs.values()),
        **{f"max_abs_diff_{name}": value for name, value in diffs.items()},
        "values_equal": max(diffs.values()) < 1e-6,
    }
