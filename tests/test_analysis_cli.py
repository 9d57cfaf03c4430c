"""``densevis analyze`` and ``densevis bench analysis`` end to end, and their bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from densevis.analysis.baselines import sobel_maps
from densevis.analysis.localization import METRICS
from densevis.cli import main
from densevis.maps import MapsWriter
from probes import ProbeSet, file_sha256, get_set

SETS = ("base", "lines_only", "circles_only", "small_circles", "large_squares", "pairs")
KEYS = [("vanilla", None), ("gradcam", "denseblock4")]


def write_maps(path, probe_path, size=None, index=None, nan_rows=(), constant_rows=(), seed=0):
    """A maps file for ``probe_path``: 'vanilla' = square + noise (signed), 'gradcam' = edges."""
    probe = ProbeSet(probe_path)
    rng = np.random.default_rng(seed)
    index = np.arange(len(probe)) if index is None else np.asarray(index)
    size = size or probe.size
    images = probe.images[:][index % len(probe)]
    squares = probe.masks("square")[:][index % len(probe)]
    vanilla = (2.0 * squares + rng.normal(0, 0.5, squares.shape)).astype(np.float32)
    gradcam = sobel_maps(images).numpy()
    vanilla[list(nan_rows)] = np.nan
    vanilla[list(constant_rows)] = 0.5
    labels = probe.labels[:][index % len(probe)].astype(np.int64)
    logits = np.stack([np.zeros(len(index)), 4.0 * labels - 2 + rng.normal(0, 1, len(index))], 1)
    attrs = {"probe_sha256": file_sha256(probe_path), "probe_set": probe.name,
             "probe": str(probe_path)}
    with MapsWriter(path, len(index), size, 2, KEYS, attrs, force=True) as out:
        out.write(0, {KEYS[0]: vanilla[:, :size, :size], KEYS[1]: gradcam[:, :size, :size]},
                  logits, labels, index)
    return path


@pytest.fixture(scope="module")
def maps_dir(probe_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("maps")
    for seed, name in enumerate(SETS):
        write_maps(folder / f"{name}.h5", probe_dir / f"{name}.h5", seed=seed)
    return folder


def _args(maps_dir, probe_dir, sets=SETS):
    args = []
    for name in sets:
        args += ["--maps", str(maps_dir / f"{name}.h5"), "--data", str(probe_dir / f"{name}.h5")]
    return args


@pytest.fixture(scope="module")
def tables(maps_dir, probe_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "out"
    assert main(["analyze", *_args(maps_dir, probe_dir), "--out", str(out)]) == 0
    return out, {name: pd.read_csv(out / f"{name}.csv", keep_default_na=False,
                                   na_values=["NaN", "nan", ""])
                 for name in ("metrics", "summary", "hypotheses")}


def test_metrics_table(tables):
    _, t = tables
    metrics = t["metrics"]
    assert list(metrics.columns) == ["model", "set", "image", "method", "layer", "reduction",
                                     "metric", "value", "note"]
    assert set(metrics["model"]) == {"model"}  # one model: analyze --model's default label
    base = metrics[metrics.set == "base"]
    assert set(METRICS) | {"edge_interior_ratio", "square_mass", "circle_mass",
                           "smallest_object_mass"} <= set(base.metric)
    assert set(base.method) == {"vanilla", "gradcam", "random", "sobel", "center", "model"}
    assert set(metrics[metrics.method == "vanilla"]["reduction"]) == {"abs"}
    assert set(metrics[metrics.method == "gradcam"]["reduction"]) == {"as_is"}
    assert metrics[metrics.method == "vanilla"]["layer"].isna().all()    # empty for pixel maps
    assert set(metrics[metrics.method == "gradcam"]["layer"]) == {"denseblock4"}
    lines = metrics[metrics.set == "lines_only"]
    assert {"line_mass", "circle_mass"} <= set(lines.metric) and "auroc" not in set(lines.metric)
    empty = base[(base.metric == "auroc") & base.value.isna()]
    assert len(empty) and empty["note"].str.contains("no square").all()
    pairs = metrics[(metrics.set == "pairs") & metrics.metric.str.startswith("logit_delta_")]
    assert set(pairs.metric) == {f"logit_delta_{v}" for v in get_set("pairs").variants[1:]}
    assert (pairs.image % 8 == 0).all()                      # keyed by the scene's original


def test_summary_and_hypotheses(tables):
    _, t = tables
    summary = t["summary"]
    rates = summary[(summary.method == "model") & (summary.metric == "predicted_positive")]
    assert set(rates.set) == set(SETS) and rates["mean"].between(0, 1).all()
    assert {"n", "n_finite", "mean", "median", "ci_low", "ci_high"} <= set(summary.columns)
    hypotheses = t["hypotheses"]
    assert list(hypotheses.columns[:11]) == ["model", "hypothesis", "method", "layer",
                                             "statistic", "effect", "ci_low", "ci_high",
                                             "p_value", "p_adjusted", "verdict"]
    # one model: its own rows, and replicated rows that cannot be supported (K = 1)
    assert set(hypotheses.model) == {"replicated", "model"}
    replicated = hypotheses[hypotheses.model == "replicated"]
    assert (replicated.verdict != "supported").all()
    hypotheses = hypotheses[hypotheses.model == "model"]
    assert set(hypotheses.hypothesis) == {"localizes_square", "edge_detector",
                                          "small_object_detector"}
    assert set(hypotheses.verdict) <= {"supported", "rejected", "inconclusive"}
    assert hypotheses["rule"].str.len().gt(0).all()
    vanilla = hypotheses.query("hypothesis == 'localizes_square' and method == 'vanilla'")
    assert vanilla.set_index("statistic_key").loc["mass_vs_baseline.random", "verdict"] == \
        "supported"


def test_existing_output_needs_force(tables, maps_dir, probe_dir, capsys):
    out, _ = tables
    before = (out / "metrics.csv").read_bytes()
    assert main(["analyze", *_args(maps_dir, probe_dir, ["base"]), "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "--force" in error and len(error.splitlines()) == 1
    assert (out / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize("problem, message", [
    ("hash", "matches none of the --data files"),
    ("size", "32x32 px but"),
    ("count", "indexing images"),
    ("missing", "not found"),
    ("reduction", "unknown reduction"),
])
def test_bad_input_is_one_line_exit_2(problem, message, maps_dir, probe_dir, tmp_path, capsys):
    base = probe_dir / "base.h5"
    maps = maps_dir / "base.h5"
    extra = []
    if problem == "hash":
        base = probe_dir / "lines_only.h5"
    elif problem == "size":
        maps = write_maps(tmp_path / "small.h5", base, size=32)
    elif problem == "count":
        maps = write_maps(tmp_path / "far.h5", base, index=np.arange(60, 70) * 2)
    elif problem == "missing":
        maps = tmp_path / "nothing.h5"
    else:
        extra = ["--reduction", "vanilla=cubed"]
    out = tmp_path / "out"
    code = main(["analyze", "--maps", str(maps), "--data", str(base), "--out", str(out), *extra])
    error = capsys.readouterr().err.strip()
    assert code == 2 and message in error and len(error.splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())


def test_nan_and_constant_maps_are_handled_per_row(probe_dir, tmp_path):
    maps = write_maps(tmp_path / "nan.h5", probe_dir / "squares_only.h5", nan_rows=[0, 3],
                      constant_rows=[5])
    out = tmp_path / "out"
    assert main(["analyze", "--maps", str(maps), "--data", str(probe_dir / "squares_only.h5"),
                 "--out", str(out), "--no-baselines"]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    vanilla = metrics[(metrics.method == "vanilla") & (metrics.metric == "auroc")]
    bad = vanilla[vanilla.image.isin([0, 3])]
    assert bad.value.isna().all() and bad.note.str.contains("NaN").all()
    assert vanilla[~vanilla.image.isin([0, 3])].value.notna().all()
    constant = metrics[(metrics.method == "vanilla") & (metrics.image == 5)].set_index("metric")
    assert constant.loc["auroc", "value"] == 0.5 and "constant map" in constant.loc["auroc", "note"]
    assert constant.loc["mass_minus_area", "value"] == pytest.approx(0.0, abs=1e-12)


def test_bench_analysis_json(capsys):
    assert main(["bench", "analysis", "--n", "6", "--size", "64", "--quantus-n", "3",
                 "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"densevis_s", "quantus_s", "speedup_vs_quantus"} <= set(figures)
    assert figures["values_equal"] and figures["max_abs_diff"] < 1e-6
