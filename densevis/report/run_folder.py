"""A finished run read back in Python (a notebook, a script, the pytest plugin): :func:`load_run`.

A run folder (``densevis run``; its contract is docs/DESIGN.md, "Run folder") holds the tables as
CSV, ``provenance.json``, ``answers.md`` and copies of the probe sets analysed
(``data/<set>.h5``); the models and their maps files are cache entries of the output folder
(``OUT/.cache``), which ``provenance.json`` names relative to it. :class:`Run` reads each part
when first asked, checks every model or maps file against the hash the run recorded, and draws
the report's figures of it as matplotlib figures. A folder of ``densevis analyze`` (its tables
without provenance) loads too; what needs the provenance then says so.

The pytest plugin's ``densevis_run`` fixture (:mod:`densevis.testing`) is a :class:`Run`. The
maps of one image come from :mod:`densevis.report.run_maps`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from densevis.analysis.replicates import evaluate_replicated
from densevis.analysis.tables import RUN_TABLES, read_table
from densevis.errors import DensevisError
from densevis.report.answers import (Answer, answers, answers_markdown, facts, models_of,
                                     verdict_rows)
from densevis.report.build import RUN_DATA
from densevis.report.plots import build_hypothesis_forest, build_hypothesis_forests
from densevis.report.run_maps import computed_maps, stored_maps
from densevis.report.sections import run_order, sort_rows
from densevis.saliency.panel import saliency_panel
from probes import ProbeSet, file_sha256

#: What marks a folder as a run (or an analysis) folder.
MARKER = "hypotheses.csv"


def find_run(path: str | os.PathLike) -> Path:
    """A run folder: ``path`` itself, or the newest run folder inside it (an output folder).

    Raises
    ------
    DensevisError
        ``path`` neither is nor holds a run folder.
    """
    path = Path(path)
    if (path / MARKER).is_file():
        return path
    if path.is_dir():
        runs = sorted((p for p in path.iterdir() if (p / MARKER).is_file()),
                      key=lambda p: ((p / MARKER).stat().st_mtime, p.name))
        if runs:
            return runs[-1]
    raise DensevisError(f"{path} holds no {MARKER} and no run folder with one; give a run "
                        f"folder of 'densevis run', or its --out folder for the newest run there")


def load_run(path: str | os.PathLike) -> Run:
    """The run at ``path``: a run folder, or an output folder (``densevis run --out``), of which
    the newest run is read (:class:`Run`: its tables, answers, files and figures).

    Examples
    --------
    A folder with one hypotheses table (a run's also holds the other tables, provenance, data):

    >>> import tempfile
    >>> import pandas as pd
    >>> folder, none = Path(tempfile.mkdtemp()), [float("nan")] * 2
    >>> pd.DataFrame({"hypothesis": ["passes_randomization"] * 2,
    ...               "method": ["vanilla", "gradcam"], "layer": ["", "conv0"],
    ...               "statistic": ["overall"] * 2, "statistic_key": ["overall"] * 2,
    ...               "verdict": ["rejected", "supported"], "effect": none, "ci_low": none,
    ...               "ci_high": none}).to_csv(folder / "hypotheses.csv", index=False)
    >>> run = load_run(folder)
    >>> run  # doctest: +ELLIPSIS
    Run('...'): 1 hypothesis: 1 mixed
    >>> run.hypotheses[["method", "layer", "verdict"]].values.tolist()
    [['vanilla', '', 'rejected'], ['gradcam', 'conv0', 'supported']]
    >>> [(answer.name, answer.verdict) for answer in run.answers()]
    [('passes_randomization', 'mixed')]

    On a run folder (``densevis run --out reports``), in a notebook:

    >>> run = load_run("reports")                      # the newest run there  # doctest: +SKIP
    >>> run.behaviour                                  # a table (pandas)      # doctest: +SKIP
    >>> run.plot_answers()                             # every forest plot     # doctest: +SKIP
    >>> run.plot_saliency("base", 3, model="seed1")    # every map of image 3  # doctest: +SKIP
    """
    return Run(find_run(path))


class Run:
    """A finished run (or ``densevis analyze`` output): its tables, provenance, answers, files
    and figures, each read when first asked.

    Tables (pandas, as written: :func:`~densevis.analysis.tables.read_table`) are attributes
    named as their CSV files: ``hypotheses``, ``behaviour``, ``evaluation``, ``summary``,
    ``metrics``, ``sanity`` (:data:`~densevis.analysis.tables.RUN_TABLES`); ``table(name)``
    reads any of them and ``tables`` all the folder holds. ``path``: the run folder (not a
    run folder: :class:`DensevisError`; :func:`load_run` also takes an output folder).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / MARKER).is_file():
            raise DensevisError(f"{self.path} holds no {MARKER}; give the --out folder of "
                                f"'densevis analyze' or a run folder of 'densevis run'")
        self._tables: dict[str, pd.DataFrame] = {}
        self._provenance: dict | None = None
        self._hashes: dict[Path, str] = {}

    def __repr__(self) -> str:
        """The folder, spec name, models and how many answers have each verdict."""
        parts = []
        try:
            if self.provenance.get("spec", {}).get("name"):
                parts.append(f"spec {self.name}")
            if self.models:
                parts.append(f"models {', '.join(self.models)}")
            counts = Counter(answer.verdict for answer in self.answers())
            parts.append(f"{sum(counts.values())} hypothes"
                         f"{'is' if sum(counts.values()) == 1 else 'es'}: "
                         + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()))
        except (DensevisError, KeyError) as exc:  # a repr must not raise on a damaged file
            parts.append(f"unreadable ({exc})")
        return f"Run({str(self.path)!r}): " + "; ".join(parts)

    # ---------------------------------------------------------------------------- tables
    def table(self, name: str) -> pd.DataFrame:
        """The run's ``<name>.csv`` as a DataFrame (read once; empty text stays "")."""
        if name not in self._tables:
            csv = self.path / f"{name}.csv"
            if not csv.is_file():
                held = [n for n in RUN_TABLES if (self.path / f"{n}.csv").is_file()]
                raise DensevisError(f"{self.path} has no {name}.csv; it has "
                                    f"{', '.join(held)}")
            try:
                self._tables[name] = read_table(csv)
            except (pd.errors.ParserError, pd.errors.EmptyDataError,
                    UnicodeDecodeError) as exc:
                raise DensevisError(f"{csv} is not a readable CSV table ({exc})") from None
        return self._tables[name]

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table the folder holds, by name (in :data:`RUN_TABLES` order)."""
        return {name: self.table(name) for name in RUN_TABLES
                if (self.path / f"{name}.csv").is_file()}

    def evaluate(self, *hypotheses) -> pd.DataFrame:
        """A new question asked of a finished run: a hypotheses table of its metrics and
        sanity tables for ``hypotheses`` (:class:`~densevis.analysis.hypotheses.HypothesisSpec`)
        by :func:`~densevis.analysis.replicates.evaluate_replicated`, which made
        ``hypotheses.csv`` (a run without a ``model`` column is one replicate, ``model``).

        >>> from densevis.analysis import HypothesisSpec
        >>> run.evaluate(HypothesisSpec("passes_randomization", threshold=0.3))  # doctest: +SKIP
        """
        sanity = self.table("sanity") if (self.path / "sanity.csv").is_file() else None
        return evaluate_replicated(self.metrics, sanity, list(hypotheses))

    def hypothesis_rows(self, name: str, method: str | None = None, layer: str | None = None,
                        model: str | None = "replicated") -> pd.DataFrame:
        """Rows of ``hypotheses`` for one hypothesis (and method/layer when given) of ``model``:
        by default the rows across replicate models, ``None`` for every model's; ignored when
        the table has no ``model`` column (a run of one model).

        Raises
        ------
        AssertionError
            No such rows (the pytest plugin's assertions report it as a failed claim).
        """
        table = self.hypotheses
        if model is not None and "model" in table.columns:
            models = table["model"].astype(str)
            if model not in models.values:
                raise AssertionError(f"run {self.path} has no model {model!r}; it has: "
                                     f"{', '.join(dict.fromkeys(models))}")
            table = table[models == model]
        rows = table[table["hypothesis"] == name]
        if method is not None:
            rows = rows[rows["method"].fillna("") == method]
        if layer is not None:
            rows = rows[rows["layer"].fillna("") == layer]
        if rows.empty:
            known = sorted({(h, m if isinstance(m, str) else "", l if isinstance(l, str) else "")
                            for h, m, l in table[["hypothesis", "method", "layer"]].itertuples(
                                index=False)})
            listed = "; ".join("/".join(p for p in key if p) for key in known[:40])
            raise AssertionError(f"run {self.path} has no result for hypothesis {name!r}"
                                 f"{f' model {model!r}' if 'model' in table and model else ''}"
                                 f"{f' method {method!r}' if method else ''}"
                                 f"{f' layer {layer!r}' if layer else ''}; it has: {listed}")
        return rows

    # -------------------------------------------------------------------- what it records
    @property
    def provenance(self) -> dict:
        """``provenance.json`` (empty for a folder without one, as ``densevis analyze``'s)."""
        if self._provenance is None:
            path = self.path / "provenance.json"
            try:
                self._provenance = json.loads(path.read_text()) if path.is_file() else {}
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DensevisError(f"{path} is not readable JSON ({exc}); restore it from "
                                    f"the run or remove it") from None
        return self._provenance

    @property
    def name(self) -> str:
        """The spec's name (the folder's name without a provenance record)."""
        return self.provenance.get("spec", {}).get("name") or self.path.name

    @property
    def models(self) -> list[str]:
        """The models' labels (the tables' ``model`` column), in the run's order."""
        recorded = [entry["model"] for entry in self.provenance.get("models", [])]
        return recorded or models_of(self.hypotheses)

    @property
    def layers(self) -> list[str]:
        """The explained layers in network order (the order of every figure and table)."""
        return self._order()["layers"]

    @property
    def data(self) -> dict[str, Path]:
        """Probe set -> its copy in the run folder (``data/<set>.h5``): where the tables'
        ``set`` and ``image`` point."""
        recorded = self._recorded("data")
        return recorded or {path.stem: path
                            for path in sorted((self.path / RUN_DATA).glob("*.h5"))}

    @property
    def checkpoints(self) -> dict[str, Path]:
        """Model label -> its checkpoint (a cache entry of the output folder; it may have
        been removed since)."""
        return self._recorded("checkpoint")

    @property
    def maps(self) -> dict[str, dict[str, Path]]:
        """Model label -> probe set -> its maps file (cache entries of the output folder, as
        :attr:`checkpoints`)."""
        out: dict[str, dict[str, Path]] = {}
        for key, path in self._recorded("maps").items():
            model, _, name = key.partition("/")
            out.setdefault(model, {})[name] = path
        return out

    def _recorded(self, kind: str) -> dict[str, Path]:
        """The provenance's files ``<kind>/<key>`` as ``{key: path}``, each path resolved from
        what it is recorded relative to (the run folder or the output folder above it)."""
        base = {"run": self.path, "out": self.path.parent}
        found = {}
        for key, entry in self.provenance.get("files", {}).items():
            head, _, rest = key.partition("/")
            if head == kind and entry.get("relative_to") in base:
                found[rest] = base[entry["relative_to"]] / entry["path"]
        return found

    def _intact(self, kind: str, key: str) -> Path | None:
        """The recorded file ``<kind>/<key>`` when it is there with the hash the run recorded,
        else None (removed, or replaced since)."""
        path = self._recorded(kind).get(key)
        if path is None or not path.is_file():
            return None
        if path not in self._hashes:
            self._hashes[path] = file_sha256(path)
        expected = self.provenance["files"][f"{kind}/{key}"].get("sha256")
        return path if self._hashes[path] == expected else None

    def _order(self) -> dict:
        return run_order({"hypotheses": self.hypotheses}, self.provenance)

    # --------------------------------------------------------------------------- answers
    def answers(self) -> list[Answer]:
        """The report's answers: per hypothesis (the spec's order) its question, verdict and
        evidence (:func:`densevis.report.answers.answers`)."""
        order = self._order()
        tables = {name: self.table(name) for name in ("hypotheses", "behaviour")
                  if (self.path / f"{name}.csv").is_file()}
        return answers(tables, order["hypotheses"], order["questions"])

    def answers_markdown(self) -> str:
        """The answers block as Markdown, as ``answers.md`` holds it (show it in a notebook
        with ``IPython.display.Markdown``)."""
        question = self.provenance.get("spec", {}).get("description", "")
        return answers_markdown(f"densevis run: {self.name}", self.answers(),
                                facts(self.tables, self.provenance or None), question)

    # --------------------------------------------------------------------------- figures
    def plot_answers(self, hypothesis: str | None = None, model: str | None = None):
        """The report's forest plots: every statistic of each hypothesis with its effect,
        family-adjusted interval and verdict (:func:`densevis.report.plots.hypothesis_forest`).

        Parameters
        ----------
        hypothesis : str, optional
            One hypothesis; default: every one, in the spec's order, in one figure.
        model : str, optional
            One model's rows (``seed0``); default: the verdicts' rows (the replicated ones
            where the run has them), as the report shows.

        Returns a matplotlib Figure (not attached to pyplot).
        """
        table = self.hypotheses
        if model is not None and "model" in table.columns:
            if model not in table["model"].astype(str).values:
                raise DensevisError(f"{model!r} is not a model of {self.path}; it has "
                                    f"{', '.join(dict.fromkeys(table['model'].astype(str)))}",
                                    parameter="model")
            rows = table[table["model"].astype(str) == model]
        else:
            rows = verdict_rows(table)
        order = self._order()
        rows = sort_rows(rows, order)
        detail = rows[rows["statistic_key"] != "overall"]
        if hypothesis is not None and hypothesis not in detail["hypothesis"].values:
            raise DensevisError(f"{hypothesis!r} has no statistics in {self.path}; it has "
                                f"{', '.join(dict.fromkeys(detail['hypothesis']))}",
                                parameter="hypothesis")
        figure = (build_hypothesis_forest(detail, hypothesis, order["layers"]) if hypothesis
                  else build_hypothesis_forests(detail, order["hypotheses"], order["layers"]))
        if figure is None:
            raise DensevisError(f"{self.path / MARKER} holds no statistics to plot")
        return figure

    def plot_saliency(self, set: str, image: int, model: str | None = None,
                      methods: list[str] | None = None, device: str = "cpu"):
        """Every saliency map of the run of one image: a row per method, a column per layer
        (:func:`densevis.saliency.panel.saliency_panel`).

        The maps are read from the run's maps file where it is still in the output folder's
        cache with the hash the run recorded; otherwise they are computed again from the
        model's checkpoint with the run's methods, layers and parameters, for the image's
        label (the class the run's maps explain).

        Parameters
        ----------
        set : str
            A probe set of the run (the tables' ``set``).
        image : int
            The image's index in that set (the tables' ``image``).
        model : str, optional
            The model's label; default: the first.
        methods : list of str, optional
            Only these methods.
        device : str
            Where maps are computed again (``cpu``, ``cuda``, ``auto``).

        Returns a matplotlib Figure (not attached to pyplot).
        """
        if not self.provenance:
            raise DensevisError(f"{self.path} has no provenance.json, so no models or maps to "
                                f"draw; plot_saliency needs a folder that 'densevis run' wrote")
        label = model or (self.models or [""])[0]
        if label not in self.models:
            raise DensevisError(f"{label!r} is not a model of the run; it has "
                                f"{', '.join(self.models)}", parameter="model")
        data = self.data.get(set)
        if data is None or not data.is_file():
            raise DensevisError(f"{set!r} is not a probe set of the run; it has "
                                f"{', '.join(self.data)}", parameter="set")
        with ProbeSet(data) as probe:
            if not 0 <= int(image) < len(probe):
                raise DensevisError(f"is {image}, but {set} has {len(probe)} images (0 to "
                                    f"{len(probe) - 1})", parameter="image")
            picture, truth = probe.images[int(image)], int(probe.labels[int(image)])
        stored = self._intact("maps", f"{label}/{set}")
        maps = stored_maps(stored, int(image)) if stored else None
        source = "the run's maps"
        if maps is None:
            checkpoint = self._intact("checkpoint", label)
            if checkpoint is None:
                raise DensevisError(
                    f"neither the maps nor the checkpoint of model {label} are in the output "
                    f"folder's cache with the hashes the run recorded "
                    f"({self.checkpoints.get(label)}); keep the run folder beside its .cache, "
                    f"or run its spec again (cached stages are reused)")
            maps = computed_maps(checkpoint, data, self.provenance["spec"].get("saliency", {}),
                                 picture, truth, device)
            source = "maps computed again from the checkpoint"
        explained = list(dict.fromkeys(method for method, _ in maps))
        unknown = [m for m in methods or () if m not in explained]
        if unknown:
            raise DensevisError(f"names {', '.join(unknown)}, which the run did not explain; "
                                f"it has {', '.join(explained)}", parameter="methods")
        maps = {key: values for key, values in maps.items() if key[0] in (methods or explained)}
        return saliency_panel(picture, maps, f"{self.name}, model {label}: {set} image "
                              f"{image} (label {truth}), {source}")


for _name in RUN_TABLES:  # one attribute per table of the run's contract
    setattr(Run, _name, property(lambda self, name=_name: self.table(name),
                                 doc=f"The run's ``{_name}.csv`` (:meth:`Run.table`)."))
