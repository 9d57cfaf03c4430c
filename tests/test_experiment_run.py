"""``densevis run`` end to end on a tiny spec: run folder, caching, resume, report, plugin."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import densevis.experiment.steps as steps
from densevis.analysis.replicates import EXTRA_COLUMNS
from densevis.cli import main
from densevis.experiment import load_spec, run_experiment
from densevis.analysis.tables import RUN_TABLES

HYPOTHESIS_COLUMNS = ["hypothesis", "method", "layer", "statistic", "effect", "ci_low",
                      "ci_high", "p_value", "p_adjusted", "verdict"]


def _tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_csv(run_dir / f"{name}.csv") for name in RUN_TABLES}


def test_run_folder_holds_tables_report_and_provenance(tiny_run, tiny_spec):
    for name in RUN_TABLES + ("report",):
        assert (tiny_run / (f"{name}.csv" if name != "report" else "report.html")).is_file()
    tables = _tables(tiny_run)
    for name in RUN_TABLES:  # every table names the model (replicate) of each row
        assert tables[name].columns[0] == "model", name
        assert set(tables[name]["model"]) - {"replicated"} == {"seed0", "seed1"}, name
    assert list(tables["metrics"].columns[:7]) == ["model", "set", "image", "method", "layer",
                                                   "reduction", "metric"]
    assert HYPOTHESIS_COLUMNS == [c for c in tables["hypotheses"].columns
                                  if c in HYPOTHESIS_COLUMNS]
    assert set(tables["hypotheses"]["verdict"]) <= {"supported", "rejected", "inconclusive"}
    assert {"localizes_square", "edge_detector", "small_object_detector",
            "passes_randomization", "mass_on_square"} <= set(tables["hypotheses"]["hypothesis"])
    behaviour = tables["behaviour"]
    assert list(behaviour.columns) == [
        "model", "set", "variant", "n", "label_rate", "positive_rate", "positive_rate_ci_low",
        "positive_rate_ci_high", "logit_margin", "logit_margin_ci_low", "logit_margin_ci_high",
        "accuracy", "accuracy_ci_low", "accuracy_ci_high"]
    # the set and the edit in columns of their own; "" (read as NaN) on a whole set's row
    edits = behaviour[behaviour["set"] == "pairs"]
    assert "sides" in set(edits["variant"]) and edits["variant"].isna().sum() == 2
    assert set(behaviour["set"]) == set(tomllib.loads(tiny_spec.read_text())["probes"]["sets"])
    assert behaviour["n"].dtype == "int64"
    assert (behaviour["positive_rate_ci_low"] <= behaviour["positive_rate"]).all()
    # the first model's checks draw the curves; the other's hold what the verdicts read
    sanity = tables["sanity"]
    assert set(sanity[sanity["model"] == "seed0"]["test"]) == {"cascading", "independent",
                                                               "data"}
    assert set(sanity[sanity["model"] == "seed1"]["test"]) == {"cascading", "data"}
    last = sanity[sanity["model"] == "seed1"]
    assert last[last["test"] == "cascading"]["step_index"].nunique() == 1
    # replicated rows: one per statistic of the per-model rows, first in the table
    hypotheses = tables["hypotheses"]
    assert hypotheses["model"].iloc[0] == "replicated"
    per_model = hypotheses[hypotheses["model"] == "seed0"]
    replicated = hypotheses[hypotheses["model"] == "replicated"]
    keys = ["hypothesis", "method", "layer", "statistic_key"]
    assert set(map(tuple, per_model[keys].fillna("").values)) == \
        set(map(tuple, replicated[keys].fillna("").values))
    # models: how many had a finite effect (the tiny run leaves some statistics untestable)
    assert replicated["models"].max() == 2 and replicated["models"].min() >= 0
    assert {"base (val)", "base", "pairs"} <= set(tables["evaluation"]["set"])
    record = json.loads((tiny_run / "provenance.json").read_text())
    assert record["seeds"]["data"] == 0 and "torch" in record["versions"]
    assert all(len(entry["sha256"]) == 64 for entry in record["files"].values())
    assert len(list((tiny_run / "figures").glob("*.png"))) >= 5
    assert (tiny_run / "spec.toml").read_text() == tiny_spec.read_text()


def _cells(path: Path, column: str) -> list[str]:
    """The text of one column of a CSV file, as written."""
    with open(path, newline="") as handle:
        return [row[column] for row in csv.DictReader(handle)]


def test_the_run_tables_agree(tiny_run, tiny_spec):
    """One logit margin, one layer naming, counts written as integers, every image traceable
    to a probe file in the run folder, and a provenance without absolute paths."""
    tables = _tables(tiny_run)
    behaviour, evaluation, metrics = tables["behaviour"], tables["evaluation"], tables["metrics"]
    margins = metrics[(metrics["method"] == "model") & (metrics["metric"] == "logit_margin")]
    for model in ("seed0", "seed1"):
        mine = behaviour[behaviour["model"] == model].fillna({"variant": ""})
        theirs = evaluation[(evaluation["model"] == model)
                            & (evaluation["metric"] == "mean_logit_margin")]
        for set_name, variant in (("lines_only", ""), ("pairs", "sides"), ("base", "")):
            ours = mine[(mine["set"] == set_name) & (mine["variant"] == variant)]
            shown = theirs[(theirs["set"] == set_name) & (theirs["breakdown"] == (
                "variant" if variant else "all")) & (theirs["group"] == (variant or "all"))]
            ours, shown = float(ours["logit_margin"].iloc[0]), float(shown["value"].iloc[0])
            # the same definition (square minus no-square logit): the same value and sign
            # (logits from the maps' pass and from evaluate's: float32 apart)
            assert ours == pytest.approx(shown, rel=1e-3, abs=1e-3), (model, set_name, variant)
            if variant == "":
                assert ours == pytest.approx(margins[(margins["model"] == model) & (
                    margins["set"] == set_name)]["value"].mean())
        lines = mine[(mine["set"] == "lines_only") & (mine["variant"] == "")]
        assert float(lines["positive_rate"].iloc[0]) == \
            pytest.approx((margins[(margins["model"] == model)
                                   & (margins["set"] == "lines_only")]["value"] > 0).mean())
    # sanity steps are named as the maps name layers (and the classifier)
    from densevis.model import build_model
    from densevis.saliency.layers import resolve_layers

    sanity = tables["sanity"]
    steps = set(sanity[sanity["test"].isin(["cascading", "independent"])]["step"])
    assert steps <= set(resolve_layers(build_model("original"), "all")) | {"classifier"}
    explained = set(metrics["layer"].dropna()) - {""}
    assert explained == {"conv0", "denseblock4"} and explained <= steps
    # counts as integers (empty where a row has none), flags as True/False, in the CSV text
    integer = re.compile(r"-?[0-9]+")
    counts = {"hypotheses": ["n", "family_size", "models", "models_supported",
                             "models_rejected"],
              "summary": ["n", "n_finite"], "behaviour": ["n"], "metrics": ["image"],
              "sanity": ["step_index", "image"]}
    for name, columns in counts.items():
        for column in columns:
            cells = [c for c in _cells(tiny_run / f"{name}.csv", column) if c != ""]
            assert cells and all(integer.fullmatch(c) for c in cells), (name, column)
    assert set(_cells(tiny_run / "hypotheses.csv", "paired")) == {"True", "False", ""}
    written = list(zip(_cells(tiny_run / "evaluation.csv", "metric"),
                       _cells(tiny_run / "evaluation.csv", "value")))
    assert {metric for metric, _ in written} >= {"n", "tp", "fp", "tn", "fn", "accuracy"}
    assert all(integer.fullmatch(value) for metric, value in written
               if metric in ("n", "tp", "fp", "tn", "fn", "invisible_squares"))
    # every image of metrics.csv lies in a probe file of the run folder, hashed in provenance
    from probes import ProbeSet, file_sha256

    record = json.loads((tiny_run / "provenance.json").read_text())
    labels = metrics[(metrics["method"] == "model") & (metrics["metric"] == "label")]
    for set_name in set(metrics["set"]):
        copy = tiny_run / "data" / f"{set_name}.h5"
        entry = record["files"][f"data/{set_name}"]
        assert (entry["path"], entry["relative_to"]) == (f"data/{set_name}.h5", "run")
        assert entry["sha256"] == file_sha256(copy)
        with ProbeSet(copy) as probe:
            rows = labels[labels["set"] == set_name]
            assert (probe.labels[:][rows["image"].to_numpy()] == rows["value"]).all()
    assert sorted(p.stem for p in (tiny_run / "data").iterdir()) == \
        sorted(tomllib.loads(tiny_spec.read_text())["probes"]["sets"])  # not the training data
    # provenance: relative paths only, resolvable from the run folder or the output folder
    text = (tiny_run / "provenance.json").read_text()
    assert str(tiny_run.parent) not in text

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        if isinstance(value, list):
            return [s for v in value for s in strings(v)]
        return [value] if isinstance(value, str) else []

    assert not [s for s in strings(record) if Path(s).is_absolute()]
    base = {"run": tiny_run, "out": tiny_run.parent}
    assert all((base[entry["relative_to"]] / entry["path"]).is_file()
               for entry in record["files"].values())
    assert record["spec"]["source"] == "tiny.toml"
    assert record["device"]["saliency"] in ("cpu", "cuda:0")  # not "auto"
    assert record["device"]["train"] == record["device"]["saliency"]
    assert record["device"]["threads"] >= 1


def test_report_is_self_contained_and_opens_in_chromium(tiny_run, tmp_path):
    page = (tiny_run / "report.html").read_text()
    assert not re.search(r"""(src|href)=["'](?![#]|data:)""", page), "external reference"
    assert page.count("data:image/png;base64,") >= 5
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed here (.ci/run installs Debian's chromium); "
                    "the report was checked for inline images and tables without a browser")
    # what a reader sees: the answers block, where each contents link lands, every image loaded,
    # and that a click on a column head sorts the table
    check = ("<script>window.addEventListener('load',()=>{const i=[...document.images];"
             "const a=document.getElementById('answers');"
             "const links=[...document.querySelectorAll('#contents a')].map(x=>x.hash.slice(1));"
             "const t=document.querySelector('table.data');const col=t.querySelectorAll('th')[0];"
             "col.click();const first=[...t.tBodies[0].rows].map(r=>r.cells[0].textContent);"
             "const r={images:i.length,loaded:i.filter(x=>x.complete&&x.naturalWidth>0).length,"
             "answers:a?[...a.querySelectorAll('li.answer')].map(x=>x.textContent):null,"
             "answersTop:a?a.getBoundingClientRect().top:null,"
             "links:links,missing:links.filter(h=>!document.getElementById(h)),"
             "sorted:first.every((v,k)=>k==0||first[k-1]<=v),"
             "details:document.querySelectorAll('details').length,"
             "sections:[...document.querySelectorAll('section > h2')].map(h=>h.textContent)};"
             "const p=document.createElement('pre');p.id='densevis-check';"
             "p.textContent=JSON.stringify(r);document.body.appendChild(p);});</script>")
    probe = tmp_path / "report.html"
    probe.write_text(page.replace("</body>", check + "</body>"))
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
         "--window-size=1400,900", "--virtual-time-budget=10000", "--dump-dom",
         probe.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="densevis-check">(.*?)</pre>', done.stdout)
    assert found, f"Chromium did not render the report: {done.stderr[-500:]}"
    result = json.loads(found.group(1))
    assert result["images"] >= 5 and result["loaded"] == result["images"]
    # one answer per hypothesis of the spec, each with its verdict, on the first screen
    spec = load_spec(tiny_run / "spec.toml")
    assert len(result["answers"]) == len(spec.hypotheses)
    assert all(re.search(r"supported|rejected|inconclusive|mixed", a) for a in result["answers"])
    assert 0 <= result["answersTop"] < 900
    assert "mass_on_square" in "".join(result["answers"]) or \
        any("relevance_mass" in a for a in result["answers"])
    assert not result["missing"] and len(result["links"]) >= 8
    assert result["sorted"] and result["details"] >= 4
    assert result["sections"][:3] == ["Answers", "Hypotheses", "Behaviour per probe set"]
    assert "Provenance" in result["sections"]


def test_rerun_is_cached_identical_and_never_overwrites(tiny_run, tiny_spec, capsys):
    """Run again from the command line: every stage but the cheap verdicts is cached, the tables
    are the same, the first run's folder stays, and the command prints where the new one is."""
    assert main(["run", str(tiny_spec), "--out", str(tiny_run.parent)]) == 0
    lines = capsys.readouterr().out.splitlines()
    again = Path(next(line for line in lines if line.startswith("run folder:")).split(":", 1)[1]
                 .strip())
    assert again != tiny_run and tiny_run.is_dir() and again.is_dir()
    assert any("report.html" in line for line in lines)
    assert "every verdict rests on 2 trained models" in lines[0]
    stages = [line for line in lines if line.startswith("[")]
    assert all("cached" in line for line in stages[:6]), stages  # all but the cheap verdicts
    first, second = _tables(tiny_run), _tables(again)
    for name in RUN_TABLES:
        pd.testing.assert_frame_equal(first[name], second[name])


def test_killed_run_resumes_with_identical_results(tiny_run, tiny_spec, tmp_path, monkeypatch):
    real = steps.analyze

    def killed(runner):
        raise KeyboardInterrupt

    monkeypatch.setattr(steps, "analyze", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(load_spec(tiny_spec), tmp_path, progress=False, echo=lambda _: None)
    assert [p.name for p in tmp_path.iterdir()] == [".cache"], "a killed run left a run folder"
    monkeypatch.setattr(steps, "analyze", real)
    lines = []
    resumed = run_experiment(load_spec(tiny_spec), tmp_path, progress=False, echo=lines.append)
    stages = [line for line in lines if line.startswith("[")]
    assert [line.split(":")[1].strip().split()[0] for line in stages[:5]] == \
        ["cached", "cached", "cached", "cached", "done"]
    first, second = _tables(tiny_run), _tables(resumed)
    for name in RUN_TABLES:
        pd.testing.assert_frame_equal(first[name], second[name])


def test_pytest_plugin_asserts_hypotheses_of_a_run(tiny_run, tmp_path):
    hypotheses = pd.read_csv(tiny_run / "hypotheses.csv")
    mass = hypotheses[(hypotheses["hypothesis"] == "mass_on_square")
                      & (hypotheses["statistic"] == "overall")].iloc[0]
    wrong = "supported" if mass["verdict"] != "supported" else "rejected"
    tests = tmp_path / "test_claims.py"
    tests.write_text(
        "from densevis.testing import assert_hypothesis, assert_localizes\n\n"
        "def test_right(densevis_run):\n"
        f"    assert_hypothesis(densevis_run, 'mass_on_square', verdict={mass['verdict']!r},\n"
        "                      method='vanilla')\n\n"
        "def test_wrong(densevis_run):\n"
        f"    assert_hypothesis(densevis_run, 'mass_on_square', verdict={wrong!r})\n\n"
        "def test_unknown(densevis_run):\n"
        "    assert_hypothesis(densevis_run, 'no_such_claim', verdict='supported')\n\n"
        "def test_new_question_of_the_run(densevis_run):\n"
        "    from densevis.analysis import HypothesisSpec\n"
        "    table = densevis_run.evaluate(HypothesisSpec('mass', set='base',\n"
        "                                                 metric='relevance_mass'))\n"
        "    assert set(table['hypothesis']) == {'mass'}\n\n"
        "def test_localizes(densevis_run):\n"
        "    assert_localizes(densevis_run, method='vanilla')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", str(tests), "-q", "-p",
                           "no:cacheprovider", "--densevis-run", str(tiny_run.parent)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    # the tiny run's 16 images cannot show localization at the family-adjusted level
    assert "3 failed, 2 passed" in done.stdout, done.stdout[-2000:]
    assert "FAILED test_claims.py::test_localizes" in done.stdout
    assert f"expected mass_on_square to be {wrong}" in done.stdout
    assert "primary: mass_on_square" in done.stdout  # the statistics behind the overall verdict
    assert " CI " in done.stdout and "p adjusted" in done.stdout and "rule:" in done.stdout
    assert "has no result for hypothesis 'no_such_claim'" in done.stdout
    assert "vanilla does not localize the square" in done.stdout
    missing = subprocess.run([sys.executable, "-m", "pytest", str(tests), "-q", "-p",
                              "no:cacheprovider"],
                             capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert missing.returncode != 0 and "--densevis-run" in missing.stdout + missing.stderr


def test_assert_localizes_honours_the_margin(tmp_path):
    """Significant is not enough: the effect must reach the row's margin (or min_effect)."""
    from densevis.testing import Run, assert_localizes

    row = dict(hypothesis="localizes_square", method="vanilla", layer="", role="primary",
               statistic="mass_minus_area > 0", statistic_key="mass_minus_area", ci_low=0.01,
               ci_high=0.06, p_value=1e-6, p_adjusted=1e-5, alpha=0.05, effect_margin=0.05,
               verdict="inconclusive", effect=0.03)
    pd.DataFrame([row, dict(row, method="gradcam", layer="denseblock3", effect=0.2,
                            ci_low=0.1, verdict="supported")]).to_csv(
        tmp_path / "hypotheses.csv", index=False)
    run = Run(tmp_path)
    assert_localizes(run, method="gradcam", layer="denseblock3")
    with pytest.raises(AssertionError, match="an effect of at least the row's effect_margin"):
        assert_localizes(run, method="vanilla")
    assert_localizes(run, method="vanilla", min_effect=0.02)
    with pytest.raises(AssertionError, match="does not localize"):
        assert_localizes(run, method="gradcam", layer="denseblock3", min_effect=0.3)


def test_analyze_and_run_give_equal_hypotheses(tiny_run, tiny_spec, tmp_path):
    """One evaluation path: 'densevis analyze --sanity' on the run's maps, probe files and
    sanity table, with the run's spec, writes the run's hypotheses.csv."""
    files = json.loads((tiny_run / "provenance.json").read_text())["files"]
    base = {"run": tiny_run, "out": tiny_run.parent}  # what provenance paths are relative to
    args = ["analyze", "--spec", str(tiny_spec), "--sanity", str(tiny_run / "sanity.csv"),
            "--model", "seed1", "--out", str(tmp_path / "analysis")]
    for name in load_spec(tiny_spec).probes.sets:
        maps, data = files[f"maps/seed1/{name}"], files[f"data/{name}"]
        assert data["relative_to"] == "run"  # the run folder's copy: analyze checks its hash
        args += ["--maps", str(base[maps["relative_to"]] / maps["path"]),
                 "--data", str(base[data["relative_to"]] / data["path"])]
    assert main(args) == 0
    ours = pd.read_csv(tmp_path / "analysis" / "hypotheses.csv")
    run = pd.read_csv(tiny_run / "hypotheses.csv")
    ours, run = (table[table["model"] == "seed1"].reset_index(drop=True) for table in (ours, run))
    # the columns across models are empty on a model's own rows (their dtype differs by table)
    assert ours[EXTRA_COLUMNS].isna().all(axis=None) and run[EXTRA_COLUMNS].isna().all(axis=None)
    pd.testing.assert_frame_equal(ours.drop(columns=EXTRA_COLUMNS),
                                  run.drop(columns=EXTRA_COLUMNS))
    assert (ours["hypothesis"] == "passes_randomization").any()
    assert main(args[:5] + ["--model", "seed7"] + args[7:]) == 2  # not a model of the table


def test_report_command_renders_tables_of_a_folder(tiny_run, tmp_path, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    for name in ("metrics", "summary", "hypotheses"):  # what `densevis analyze` writes
        shutil.copyfile(tiny_run / f"{name}.csv", tables / f"{name}.csv")
    assert main(["report", str(tables)]) == 0
    page = (tables / "report.html").read_text()
    assert "Hypotheses" in page and "Localization of the square" in page
    assert "Behaviour per probe set" not in page  # no behaviour.csv in an analyze folder
    assert main(["report", str(tables)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no hypotheses.csv" in capsys.readouterr().err
    assert not (tmp_path / "report.html").exists()
