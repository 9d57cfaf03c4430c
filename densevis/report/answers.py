"""The answers block of a report: each question of the spec with its verdict and key evidence.

One :class:`Answer` per hypothesis of the run, read from the run's tables and the hypothesis
registry (its question, and which of its statistics are behaviour and which maps); the replicated
rows decide where the table has them. A reader who stops after this block knows the answers:

- a behaviour hypothesis (``edge_detector``, ``small_object_detector``): the verdict of its
  behaviour ``overall`` row, each behaviour statistic's effect and bounds in logits with how many
  models showed it, and how often the model calls each probe set it reads a square;
- a map hypothesis (``localizes_square``, the map statistics of the others): for how many
  methods and layers it is supported, rejected and inconclusive, naming the supported ones;
- ``passes_randomization``: which methods pass and which fail.

Examples
--------
>>> import pandas as pd
>>> hypotheses = pd.DataFrame({
...     "hypothesis": ["passes_randomization"] * 2, "method": ["vanilla", "gradcam"],
...     "layer": ["", "denseblock4"], "statistic": ["overall"] * 2, "statistic_key": ["overall"] * 2,
...     "verdict": ["rejected", "supported"], "effect": [float("nan")] * 2,
...     "ci_low": [float("nan")] * 2, "ci_high": [float("nan")] * 2})
>>> answer = answers({"hypotheses": hypotheses}, ["passes_randomization"])[0]
>>> answer.verdict, answer.evidence
('mixed', ['passes: gradcam/denseblock4', 'fails: vanilla'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from densevis.analysis.hypotheses import HYPOTHESES
from densevis.analysis.hypothesis_registry import MODEL, RANDOMIZATION
from densevis.analysis.replicates import REPLICATED

VERDICT_ORDER = ("supported", "rejected", "inconclusive")


@dataclass
class Answer:
    """One question's answer: the verdict in a word and the evidence in plain units."""

    name: str
    question: str
    verdict: str  # supported / rejected / inconclusive, "mixed" across methods, or "not tested"
    evidence: list[str] = field(default_factory=list)
    basis: str = ""  # what the verdict rests on, e.g. "behaviour, replicated over 3 models"


def verdict_rows(hypotheses: pd.DataFrame) -> pd.DataFrame:
    """The rows a verdict is read from: the replicated ones when the table has them, else all
    (a single model's table)."""
    if "model" in hypotheses.columns and (hypotheses["model"] == REPLICATED).any():
        return hypotheses[hypotheses["model"] == REPLICATED]
    return hypotheses


def models_of(table: pd.DataFrame) -> list[str]:
    """The trained models' labels of a table, in order (none when it has no ``model`` column)."""
    if "model" not in table.columns:
        return []
    return [m for m in dict.fromkeys(table["model"].astype(str)) if m != REPLICATED]


def _place(method: str, layer) -> str:
    return f"{method}/{layer}" if isinstance(layer, str) and layer else str(method)


def _agreement(row) -> str:
    """"models: 2 supported, 1 rejected of 3" (empty for a single model's row)."""
    if "models_supported" not in row or pd.isna(row.get("models")) or not row.get("models"):
        return ""
    counts = [f"{int(row[f'models_{v}']) if pd.notna(row.get(f'models_{v}')) else 0} {v}"
              for v in ("supported", "rejected")]
    return f"models: {', '.join(counts)}, of {int(row['models'])}"


def _number(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:+.2f}"


def _statistic_line(row) -> str:
    bounds = (f" [{_number(row['ci_low'])}, {_number(row['ci_high'])}]"
              if np.isfinite(row["ci_low"]) or np.isfinite(row["ci_high"]) else "")
    agreement = _agreement(row)
    role = " [secondary]" if row.get("role") == "secondary" else ""
    return (f"{row['statistic']}{role}: {_number(row['effect'])} logits{bounds}, "
            f"{row['verdict']}" + (f" ({agreement})" if agreement else ""))


def _called_square(behaviour: pd.DataFrame | None, sets: list[str]) -> str:
    """"lines_only 59% (47%, 60%, 71%)": how often each set is called a square, the mean over
    models and each model's rate."""
    if behaviour is None or behaviour.empty:
        return ""
    variant = behaviour["variant"].fillna("") if "variant" in behaviour.columns else \
        pd.Series("", index=behaviour.index)
    parts = []
    for name in sets:
        edits = behaviour[(behaviour["set"] == name) & (variant != "")]
        if len(edits):
            rates = edits.groupby("variant", sort=False)["positive_rate"].mean()
            parts.append(f"{name} edits (mean over models) " + ", ".join(
                f"{edit} {rate:.0%}" for edit, rate in rates.items()))
            continue
        rows = behaviour[(behaviour["set"] == name) & (variant == "")]
        if rows.empty:
            continue
        rates = rows["positive_rate"].to_numpy(dtype=float)
        if len(rates) == 1:
            low, high = rows[["positive_rate_ci_low", "positive_rate_ci_high"]].iloc[0]
            parts.append(f"{name} {rates[0]:.0%} [{low:.0%}, {high:.0%}]")
        else:
            parts.append(f"{name} {rates.mean():.0%} (models: "
                         + ", ".join(f"{r:.0%}" for r in rates) + ")")
    return ("called a square: " + "; ".join(parts)) if parts else ""


def _sets_of(rows: pd.DataFrame) -> list[str]:
    sets = []
    for value in rows["sets"].dropna() if "sets" in rows.columns else []:
        for name in str(value).split(","):
            name = name.strip().split(" ")[0]
            if name and name not in sets:
                sets.append(name)
    return sets


def _maps_summary(overall: pd.DataFrame, passed: str = "supported") -> tuple[str, list[str]]:
    """Verdict in a word and one evidence line over the method/layer overall rows."""
    counts = overall["verdict"].value_counts()
    words = {"supported": passed, "rejected": "rejected", "inconclusive": "inconclusive"}
    line = ", ".join(f"{words[v]} at {counts[v]}" for v in VERDICT_ORDER if counts.get(v, 0))
    line = f"maps, {len(overall)} methods/layers: {line}"
    good = overall[overall["verdict"] == "supported"]
    named = [line]
    if len(good):
        named.append(f"{passed}: " + ", ".join(_place(r.method, r.layer)
                                               for r in good.itertuples()))
    present = [v for v in VERDICT_ORDER if counts.get(v, 0)]
    return (present[0] if len(present) == 1 else "mixed"), named


def _randomization(overall: pd.DataFrame) -> tuple[str, list[str]]:
    lines = []
    for verdict, word in (("supported", "passes"), ("rejected", "fails")):
        rows = overall[overall["verdict"] == verdict]
        if len(rows):
            lines.append(f"{word}: " + ", ".join(_place(r.method, r.layer)
                                                 for r in rows.itertuples()))
    undecided = overall[overall["verdict"] == "inconclusive"]
    if len(undecided):
        by_method = undecided.groupby("method", sort=False).size()
        lines.append("inconclusive: " + ", ".join(
            f"{method} ({count} layer{'s' if count > 1 else ''})" if count > 1 or
            undecided[undecided["method"] == method]["layer"].fillna("").iloc[0] else method
            for method, count in by_method.items()))
    present = [v for v in VERDICT_ORDER if (overall["verdict"] == v).any()]
    return (present[0] if len(present) == 1 else "mixed"), lines


def answers(tables: dict[str, pd.DataFrame], names: list[str],
            questions: dict[str, str] | None = None) -> list[Answer]:
    """One :class:`Answer` per hypothesis ``names`` (in that order), from the run's tables.

    ``questions`` gives the question of a hypothesis the registry does not hold (a custom one);
    the registry's own question is used otherwise. ``tables`` needs ``hypotheses``; ``behaviour``
    adds how often each set is called a square.
    """
    rows = verdict_rows(tables["hypotheses"])
    behaviour = tables.get("behaviour")
    models = models_of(tables["hypotheses"])
    replicated = bool(models) and (tables["hypotheses"]["model"] == REPLICATED).any()
    out = []
    for name in names:
        question = (questions or {}).get(name) or getattr(HYPOTHESES.get(name), "question", name)
        mine = rows[rows["hypothesis"] == name]
        if mine.empty:
            out.append(Answer(name, question, "not tested", ["no rows in this run's table"]))
            continue
        overall = mine[mine["statistic_key"] == "overall"]
        is_model = overall["method"] == MODEL
        behaviour_overall, maps_overall = overall[is_model], overall[~is_model]
        basis = (f"replicated over {len(models)} models" if replicated else
                 f"model {models[0]}" if models else "one model")
        if name == RANDOMIZATION:
            verdict, evidence = _randomization(maps_overall)
            out.append(Answer(name, question, verdict, evidence, f"maps, {basis}"))
            continue
        evidence = []
        if len(behaviour_overall):
            verdict = str(behaviour_overall["verdict"].iloc[0])
            statistics = mine[(mine["method"] == MODEL) & (mine["statistic_key"] != "overall")]
            order = {"primary": 0, "secondary": 1}
            statistics = statistics.sort_values("role", key=lambda r: r.map(order).fillna(2),
                                                kind="stable")
            evidence += [_statistic_line(r) for _, r in statistics.iterrows()]
            called = _called_square(behaviour, _sets_of(statistics))
            evidence += [called] if called else []
            basis = f"behaviour, {basis}"
            if len(maps_overall):
                evidence += _maps_summary(maps_overall)[1]
        else:
            verdict, lines = _maps_summary(maps_overall)
            evidence += lines
            basis = f"maps, {basis}"
        out.append(Answer(name, question, verdict, evidence, basis))
    return out


def facts(tables: dict[str, pd.DataFrame], record: dict | None = None) -> list[str]:
    """The run's model accuracy (held-out and clean, per model), models, date and device."""
    lines = []
    evaluation = tables.get("evaluation")
    if evaluation is not None and not evaluation.empty:
        held = evaluation[(evaluation["metric"] == "accuracy")
                          & evaluation["set"].astype(str).str.endswith("(val)")]
        for breakdown, word in (("all", "held-out accuracy"), ("clean", "clean held-out")):
            values = held[held["breakdown"] == breakdown]
            if len(values):
                lines.append(f"{word}: " + ", ".join(
                    f"{float(v):.1%}" + (f" ({m})" if "model" in values.columns else "")
                    for v, m in zip(values["value"], values.get("model", values["value"]))))
    models = models_of(tables["hypotheses"])
    if models:
        # the model's name (config, torchvision arch or factory) as provenance records it
        names = dict.fromkeys(m["name"] for m in (record or {}).get("models", [])
                              if isinstance(m, dict) and m.get("name"))
        lines.append(f"{len(models)} trained model{'s' if len(models) > 1 else ''}"
                     f"{' of ' + ', '.join(names) if names else ''}: {', '.join(models)}")
    if record:
        when = record.get("date") or record.get("created")
        device = record.get("device")
        if isinstance(device, dict):  # {"saliency": "cpu", "train": "cpu", "threads": 2, ...}
            used = dict.fromkeys(v for k, v in device.items() if k in ("train", "saliency"))
            threads = device.get("threads")
            per_model = " per model, models side by side" if device.get("side_by_side") else ""
            device = ", ".join(used) + (f" ({threads} thread{'s' if threads > 1 else ''}"
                                        f"{per_model})" if threads else "")
        lines += [f"run {when}"] if when else []
        lines += [f"device {device}"] if device else []
        version = record.get("versions", {}).get("densevis")
        lines += [f"densevis {version}"] if version else []
    return lines


def answers_markdown(title: str, items: list[Answer], lines: list[str],
                     question: str = "") -> str:
    """The answers block as Markdown (the run folder's ``answers.md``; the README's findings are
    a copy of the default run's)."""
    out = [f"**{title}**", ""] + ([" ".join(question.split()), ""] if question else [])
    for number, answer in enumerate(items, start=1):
        out.append(f"{number}. **{answer.question}** — *{answer.verdict}* ({answer.basis})")
        out += [f"   - {line}" for line in answer.evidence]
    if lines:
        out += ["", "; ".join(lines) + "."]
    return "\n".join(out) + "\n"
