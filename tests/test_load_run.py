"""``densevis.load_run``: a finished run's tables, answers and figures in Python, and the panel of
one image drawn from maps in memory (``densevis.saliency_panel``)."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import densevis
from densevis.analysis.tables import RUN_TABLES, read_table
from densevis.errors import DensevisError
from densevis.maps import MapsFile
from densevis.model import build_model, preprocess
from densevis.report import run_folder
from densevis.saliency import SaliencyEngine, panel

matplotlib.use("Agg")


def _texts(fig: Figure) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def _drawn(fig: Figure) -> None:
    """The figure renders to a PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    assert buffer.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def panels(monkeypatch) -> list:
    """The ``(image, maps)`` of every panel :meth:`Run.plot_saliency` draws."""
    calls = []

    def spy(image, maps, *args, **kwargs):
        calls.append((image, maps))
        return panel.saliency_panel(image, maps, *args, **kwargs)

    monkeypatch.setattr(run_folder, "saliency_panel", spy)
    return calls


# ------------------------------------------------------------------------------- the tables
def test_the_tables_are_the_csv_files_as_written(tiny_run):
    run = densevis.load_run(tiny_run)
    assert isinstance(run, densevis.Run) and run.path == tiny_run
    assert list(run.tables) == list(RUN_TABLES)
    for name in RUN_TABLES:
        table = getattr(run, name)
        pd.testing.assert_frame_equal(table, read_table(tiny_run / f"{name}.csv"))
        assert table.shape == pd.read_csv(tiny_run / f"{name}.csv").shape
        assert run.table(name) is table  # read once
    assert (run.hypotheses["layer"] == "").any()  # a pixel method's layer is "", not NaN
    # an output folder gives its newest run (other tests add runs beside this one)
    assert densevis.load_run(tiny_run.parent).path.parent == tiny_run.parent


def test_provenance_models_and_files(tiny_run):
    run = densevis.load_run(tiny_run)
    assert run.name == "tiny" and run.models == ["seed0", "seed1"]
    assert run.layers == ["conv0", "denseblock4"] == run.provenance["layers"]
    assert list(run.data) == run.provenance["spec"]["probes"]["sets"]
    assert all(path.parent == tiny_run / "data" and path.is_file()
               for path in run.data.values())
    assert set(run.checkpoints) == {"seed0", "seed1"}
    assert all(path.is_file() and tiny_run.parent in path.parents
               for path in run.checkpoints.values())
    assert set(run.maps["seed1"]) == set(run.data)
    assert "spec tiny" in repr(run) and "models seed0, seed1" in repr(run)
    assert "5 hypotheses:" in repr(run) and "rejected" in repr(run)


def test_the_answers_are_the_reports(tiny_run):
    run = densevis.load_run(tiny_run)
    found = run.answers()
    assert [answer.name for answer in found] == [entry["name"] for entry in
                                                 run.provenance["spec"]["hypotheses"]]
    assert {answer.verdict for answer in found} <= {"supported", "rejected", "inconclusive",
                                                   "mixed", "not tested"}
    assert run.answers_markdown() == (tiny_run / "answers.md").read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ the figures
def test_plot_answers_draws_the_reports_forests(tiny_run):
    run = densevis.load_run(tiny_run)
    every = run.plot_answers()
    assert isinstance(every, Figure)
    titles = [sub.get_suptitle() for sub in every.subfigs]
    assert [title.split(":")[0] for title in titles] == [answer.name for answer in run.answers()]
    one = run.plot_answers("edge_detector", model="seed0")
    assert one.get_suptitle().startswith("edge_detector:")
    _drawn(one)
    with pytest.raises(DensevisError, match="'seed7' is not a model.*seed0, seed1"):
        run.plot_answers(model="seed7")
    with pytest.raises(DensevisError, match="'no_such' has no statistics.*edge_detector"):
        run.plot_answers("no_such")


def test_plot_saliency_reads_the_runs_maps(tiny_run, panels):
    run = densevis.load_run(tiny_run)
    fig = run.plot_saliency("base", 3, model="seed1")
    _drawn(fig)
    image, maps = panels[-1]
    with MapsFile(run.maps["seed1"]["base"]) as stored:
        row = int(np.flatnonzero(stored.index[:] == 3)[0])
        assert list(maps) == [("vanilla", None), ("guided", None), ("gradcam", "conv0"),
                              ("gradcam", "denseblock4"), ("guided_gradcam", "conv0"),
                              ("guided_gradcam", "denseblock4")]
        for (method, layer), values in maps.items():
            np.testing.assert_array_equal(values, stored.read(method, layer, row))
    texts = _texts(fig)
    assert any("the run's maps" in text for text in texts)  # the title says where they are from
    assert {"pixels", "conv0", "denseblock4", "vanilla", "guided_gradcam"} <= set(texts)
    only = run.plot_saliency("base", 3, model="seed1", methods=["gradcam"])
    assert list(panels[-1][1]) == [("gradcam", "conv0"), ("gradcam", "denseblock4")]
    assert "vanilla" not in _texts(only)


def test_plot_saliency_computes_the_maps_again_without_the_cache(tiny_run, tmp_path, panels):
    run = densevis.load_run(tiny_run)
    run.plot_saliency("pairs", 5)
    stored = panels[-1][1]
    # the run folder moved with its checkpoints but not its maps files
    moved = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, moved)
    for path in run.checkpoints.values():
        target = tmp_path / path.relative_to(tiny_run.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    again = densevis.load_run(moved)
    fig = again.plot_saliency("pairs", 5)
    assert any("computed again from the checkpoint" in text for text in _texts(fig))
    recomputed = panels[-1][1]
    assert list(recomputed) == list(stored)
    for key, values in stored.items():
        np.testing.assert_allclose(recomputed[key], values, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(values).max()), err_msg=str(key))
    # a checkpoint that is not the run's is not used
    for path in again.checkpoints.values():
        path.write_bytes(b"not this run's model")
    with pytest.raises(DensevisError, match="neither the maps nor the checkpoint of model seed0"):
        densevis.load_run(moved).plot_saliency("pairs", 5)


def test_plot_saliency_names_a_bad_argument(tiny_run):
    run = densevis.load_run(tiny_run)
    with pytest.raises(DensevisError, match="set 'nope' is not a probe set.*base, lines_only"):
        run.plot_saliency("nope", 0)
    with pytest.raises(DensevisError, match="image is 16, but base has 16 images"):
        run.plot_saliency("base", 16)
    with pytest.raises(DensevisError, match="model 'seed9' is not a model.*seed0, seed1"):
        run.plot_saliency("base", 0, model="seed9")
    with pytest.raises(DensevisError, match="methods names rise, which the run did not explain"):
        run.plot_saliency("base", 0, methods=["rise"])


# ---------------------------------------------------------------------------- not a run
def test_a_folder_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(DensevisError, match="holds no hypotheses.csv and no run folder with "
                                            "one; give a run folder of 'densevis run'"):
        densevis.load_run(tmp_path)
    with pytest.raises(DensevisError, match="holds no hypotheses.csv; give the --out folder"):
        densevis.Run(tmp_path)
    with pytest.raises(DensevisError, match="missing holds no hypotheses.csv"):
        densevis.load_run(tmp_path / "missing")
    # an analysis folder (tables, no provenance): the tables load, the maps need a run
    (tmp_path / "hypotheses.csv").write_text("hypothesis,method,layer,statistic,statistic_key,"
                                             "verdict,effect,ci_low,ci_high\n"
                                             "mass,vanilla,,overall,overall,supported,,,\n")
    run = densevis.load_run(tmp_path)
    assert run.name == tmp_path.name and run.models == [] and run.provenance == {}
    with pytest.raises(DensevisError, match="has no metrics.csv; it has hypotheses"):
        run.metrics
    with pytest.raises(DensevisError, match="no provenance.json"):
        run.plot_saliency("base", 0)
    with pytest.raises(DensevisError, match="holds no statistics to plot"):
        run.plot_answers()
    (tmp_path / "provenance.json").write_text("{not json")
    with pytest.raises(DensevisError, match="provenance.json is not readable JSON"):
        densevis.load_run(tmp_path).provenance


def test_the_plugin_reads_runs_with_the_same_class():
    from densevis import testing

    assert testing.Run is densevis.Run and testing.find_run is run_folder.find_run
    # the plugin and the package stay light to import (the CLI's --help, every pytest session)
    done = subprocess.run([sys.executable, "-c", "import sys, densevis, densevis.testing; "
                           "print(sorted({'torch', 'pandas', 'matplotlib'} & set(sys.modules)))"],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


# ------------------------------------------------------------------- the panel from memory
def test_saliency_panel_draws_maps_in_memory(monkeypatch):
    grids = []
    monkeypatch.setattr(panel, "tile_grid",
                        lambda *args, **kwargs: grids.append(args) or Figure())
    image = np.zeros((32, 32), np.uint8)
    image[8:16, 8:16] = 255
    rng = np.random.default_rng(0)
    maps = {("vanilla", None): rng.normal(size=(32, 32)),
            ("gradcam", "conv0"): rng.random((32, 32)),
            ("gradcam", "denseblock4"): np.zeros((32, 32))}
    densevis.saliency_panel(image, maps, "demo")
    tiles, titles, rows, bars = grids[-1][:4]
    assert titles == ["image", "pixels", "conv0", "denseblock4"] and rows == ["vanilla", "gradcam"]
    assert bars == "rows"
    vanilla, gradcam = tiles
    assert vanilla[2] is None and vanilla[3] is None and gradcam[1] is None  # empty cells
    assert vanilla[1].style == "signed" and gradcam[2].style == "non_negative"
    # each map on its own scale: divided by its own 99th percentile of |value|
    scale = np.percentile(np.abs(maps["vanilla", None]), 99)
    np.testing.assert_allclose(vanilla[1].values, maps["vanilla", None] / scale)
    assert vanilla[1].footnote == f"÷ {scale:.2g}" and gradcam[3].footnote == ""


def test_saliency_panel_of_an_engine_result():
    image = np.zeros((32, 32), np.uint8)
    image[4:12, 20:28] = 255
    engine = SaliencyEngine(build_model("original"), "vanilla,gradcam", "conv0,denseblock4")
    result = engine.attribute(preprocess(np.stack([image, image.T])), targets=[1, 0])
    fig = densevis.saliency_panel(image.T, result, "second image", row=1)
    _drawn(fig)
    texts = _texts(fig)
    assert {"image", "pixels", "conv0", "denseblock4", "vanilla", "gradcam",
            "second image"} <= set(texts)
    assert sum(text.startswith("÷ ") for text in texts) + texts.count("all zero") == 3
    with pytest.raises(DensevisError, match="row is 2, but the explanation holds 2 images"):
        densevis.saliency_panel(image, result, row=2)


def test_saliency_panel_names_bad_maps():
    image = np.zeros((16, 16), np.uint8)
    with pytest.raises(DensevisError, match=r"maps keys must be \(method, layer\) pairs"):
        densevis.saliency_panel(image, {"vanilla": np.zeros((16, 16))})
    with pytest.raises(DensevisError, match=r"has shape \(8, 8\), the image \(16, 16\)"):
        densevis.saliency_panel(image, {("vanilla", None): np.zeros((8, 8))})
    with pytest.raises(DensevisError, match="image must be one"):
        densevis.saliency_panel(np.zeros((2, 16, 16)), {("vanilla", None): np.zeros((16, 16))})
    with pytest.raises(DensevisError, match="maps holds no map"):
        densevis.saliency_panel(image, {})
