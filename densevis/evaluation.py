"""Evaluate a classifier on probe sets: accuracy, confusions, logit margins and where it fails.

Per image (:func:`evaluate_images`): the prediction, the logit margin (the positive, "square",
logit minus the negative one, as everywhere in densevis), and the square's geometry from the
masks and the objects table (:func:`probes.measure.scene_geometry`): its side, whether it touches a
circle (overlaps one or lies next to it, so that the two merge into one white blob) and whether
it is *invisible* (every square pixel is also a circle pixel: white on white, no model can see
it). :func:`accuracy_breakdown` turns that
into a tidy table ``set, breakdown, group, metric, value``; the counts (:data:`COUNTS`) in
``value`` are Python ints, the rest floats, so that the CSV writes counts as integers.

Breakdowns: ``all`` (accuracy, confusion counts, positive rate, mean logit margin, the
invisible-square ceiling), ``clean`` (negatives and positives whose square touches no circle),
``square_size`` (positives binned by side), ``touches_circle`` (positives), ``circles_merge``
(negatives whose circles touch one another, or not), ``label`` and, for ``pairs``, ``variant``
(the label follows the ground truth: 1 iff a square remains).

Examples
--------
>>> from densevis.model import load_model                            # doctest: +SKIP
>>> model, ckpt = load_model("model.pt")                             # doctest: +SKIP
>>> per_image = evaluate_images(model, ProbeSet("val.h5"))           # doctest: +SKIP
>>> accuracy_breakdown(per_image).query("breakdown == 'all'")                 # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from densevis.errors import DensevisError
from densevis.model import check_image_size, load_model, model_file, predict, resolve_device
from probes import STUDY_IMAGE_SIZE, ProbeSet
from probes.atomic import atomic_output
from probes.measure import scene_geometry

#: Square-side bin edges (px) at the study's image size (scaled to the set's size).
SQUARE_SIDE_EDGES = (0, 20, 30, 40, 50, 75, 1e9)
#: The metrics of :func:`accuracy_breakdown` that count images (integers in its ``value``
#: column).
COUNTS = ("n", "tn", "fp", "fn", "tp", "invisible_squares")
#: The format of :func:`accuracy_breakdown`'s table (a run's cache keys include it, so that a
#: table of an older format is computed again rather than mixed with new ones).
TABLE_FORMAT = "densevis-evaluation/2"


def size_bins(side: pd.Series, image_size: int) -> pd.Series:
    """Square sides binned by :data:`SQUARE_SIDE_EDGES` scaled to ``image_size``; labels in px."""
    edges = [e * image_size / STUDY_IMAGE_SIZE for e in SQUARE_SIDE_EDGES]
    labels = []
    for low, high in zip(edges[:-1], edges[1:]):
        first, stop = int(np.ceil(low)), int(np.ceil(high))  # integer sides in [low, high)
        labels.append(f"<{stop}px" if first == 0 else f">={first}px" if high > 1e8
                      else f"{first}-{stop - 1}px")
    return pd.cut(side, edges, right=False, labels=labels)


def evaluate_images(model: torch.nn.Module, probe: ProbeSet, batch_size: int = 256,
                    device: torch.device | str = "cpu", name: str | None = None) -> pd.DataFrame:
    """One row per image: ``set, image, label, prediction, correct, logit_margin, p_square``
    and the columns of :func:`scene_geometry` (and ``variant`` for paired sets).

    ``logit_margin`` is the positive (square, class 1) logit minus the negative one, whatever
    the label (> 0 iff the model says "square"): the metrics' and the behaviour table's logit
    margin. ``name`` replaces the set's name in the ``set`` column.
    """
    logits = predict(model, probe, batch_size, device, channels_last=True)
    if logits.shape[1] != 2:
        raise DensevisError(f"evaluate needs a 2-class model, got {logits.shape[1]} outputs")
    labels = probe.labels[:].astype(np.int64)
    # the scene columns describe drawn scenes: a user's own images have none to describe
    frame = scene_geometry(probe) if probe.has_objects else \
        pd.DataFrame({"image": np.arange(len(probe))})
    frame.insert(0, "set", name or probe.name)
    frame["label"] = labels
    frame["prediction"] = logits.argmax(axis=1)
    frame["correct"] = frame["prediction"] == labels
    frame["logit_margin"] = logits[:, 1] - logits[:, 0]
    frame["p_square"] = torch.softmax(torch.from_numpy(logits), dim=1)[:, 1].numpy()
    if probe.has_variants:
        frame["variant"] = probe.variant(slice(None))
    return frame


def _group_metrics(rows: pd.DataFrame) -> dict[str, float]:
    return {"n": len(rows), "accuracy": rows["correct"].mean(),
            "positive_rate": (rows["prediction"] == 1).mean(),
            "mean_logit_margin": rows["logit_margin"].mean()}


def typed_values(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (of :func:`accuracy_breakdown`, e.g. read back from CSV) with its ``value`` column as
    objects: Python ints for the counts (:data:`COUNTS`), floats otherwise.

    >>> table = pd.DataFrame({"metric": ["n", "accuracy"], "value": [4.0, 0.75]})
    >>> typed_values(table)["value"].tolist()
    [4, 0.75]
    """
    counts = table["metric"].isin(COUNTS).to_numpy()
    values = table["value"].to_numpy(dtype=np.float64)
    typed = [int(v) if count else float(v) for v, count in zip(values, counts)]
    return table.assign(value=pd.Series(typed, index=table.index, dtype=object))


def accuracy_breakdown(per_image: pd.DataFrame, image_size: int | None = None) -> pd.DataFrame:
    """Tidy table ``set, breakdown, group, metric, value`` from :func:`evaluate_images` rows.

    Empty groups are left out; rows without the scene columns (a user's own images, which
    have no drawn objects) get the overall, label and variant breakdowns only. ``image_size``
    (the probe set's) scales the square-size bins; without it the sides are binned as if the
    images were of the study's size (256 px).

    Examples
    --------
    >>> rows = pd.DataFrame({"set": "s", "label": [0, 1, 1], "prediction": [0, 1, 0],
    ...                      "correct": [True, True, False], "logit_margin": [-2.0, 1.0, -1.0],
    ...                      "square_side": [np.nan, 8, 20],
    ...                      "touches_circle": [False, False, True],
    ...                      "invisible": [False, False, True]})
    >>> table = accuracy_breakdown(rows, image_size=128)
    >>> float(table.query("breakdown == 'all' and metric == 'accuracy'")["value"].iloc[0])
    0.6666666666666666
    >>> table.query("breakdown == 'all' and metric == 'tp'")["value"].iloc[0]
    1
    """
    records = []
    for set_name, rows in per_image.groupby("set", sort=False):
        def add(breakdown, group, metrics):
            records.extend((set_name, breakdown, str(group), metric,
                            int(value) if metric in COUNTS else float(value))
                           for metric, value in metrics.items())

        positives = rows[rows["label"] == 1]
        overall = _group_metrics(rows)
        for name, (label, prediction) in {"tn": (0, 0), "fp": (0, 1), "fn": (1, 0),
                                          "tp": (1, 1)}.items():
            overall[name] = int(((rows["label"] == label) &
                                 (rows["prediction"] == prediction)).sum())
        scenes = "touches_circle" in rows
        if scenes:
            overall["invisible_squares"] = int(rows["invisible"].sum())
            overall["ceiling"] = 1.0 - rows["invisible"].mean()
        add("all", "all", overall)
        clean = rows[(rows["label"] == 0) | ~rows["touches_circle"]] if scenes else rows[:0]
        if len(clean):
            add("clean", "clean", _group_metrics(clean))
        for label, group in rows.groupby("label"):
            add("label", int(label), _group_metrics(group))
        negatives = rows[rows["label"] == 0]
        if len(negatives) and "circles_merge" in rows:
            for merge, group in negatives.groupby("circles_merge"):
                add("circles_merge", "yes" if merge else "no", _group_metrics(group))
        if len(positives) and scenes:
            for touches, group in positives.groupby("touches_circle"):
                add("touches_circle", "yes" if touches else "no", _group_metrics(group))
            size = image_size or STUDY_IMAGE_SIZE
            bins = size_bins(positives["square_side"], size)
            for label, group in positives.groupby(bins, observed=True):
                add("square_size", label, _group_metrics(group))
        if "variant" in rows:
            for variant, group in rows.groupby("variant", sort=False):
                add("variant", variant, _group_metrics(group))
    table = pd.DataFrame.from_records(records, columns=["set", "breakdown", "group", "metric",
                                                        "value"])
    # from_records would make the ints floats: the column is built as objects
    return table.assign(value=pd.Series([r[-1] for r in records], dtype=object))


def format_summary(table: pd.DataFrame) -> str:
    """A readable printout of :func:`accuracy_breakdown`'s table, one block per set."""
    lines = []
    for set_name, rows in table.groupby("set", sort=False):
        get = rows.set_index(["breakdown", "group", "metric"])["value"]
        a = ("all", "all")
        ceiling = (f" (ceiling {get[a + ('ceiling',)]:.2%}: "
                   f"{int(get[a + ('invisible_squares',)])} invisible squares)"
                   if a + ("ceiling",) in get.index else "")
        lines.append(f"== {set_name}: {int(get[a + ('n',)])} images, accuracy "
                     f"{get[a + ('accuracy',)]:.2%}{ceiling}, positive rate "
                     f"{get[a + ('positive_rate',)]:.2%}, mean logit margin "
                     f"(square minus no-square) {get[a + ('mean_logit_margin',)]:.2f}")
        lines.append(f"   confusion (label/prediction): 0/0 {int(get[a + ('tn',)])}  "
                     f"0/1 {int(get[a + ('fp',)])}  1/0 {int(get[a + ('fn',)])}  "
                     f"1/1 {int(get[a + ('tp',)])}")
        for breakdown in ("clean", "label", "touches_circle", "circles_merge", "square_size",
                          "variant"):
            part = rows[rows["breakdown"] == breakdown]
            if part.empty:
                continue
            cells = []
            for group, values in part.groupby("group", sort=False):
                value = values.set_index("metric")["value"]
                cells.append(f"{group}: {value['accuracy']:.1%} of {int(value['n'])}"
                             + (f" (pos {value['positive_rate']:.0%})"
                                if breakdown == "variant" else ""))
            lines.append(f"   {breakdown:15s} " + "; ".join(cells))
    return "\n".join(lines)


def evaluate_checkpoint(checkpoint, data: list, batch_size: int = 256, device: str = "auto",
                        names: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(summary table, per-image table)`` of a model on probe files ``data``: a checkpoint
    path, or a :class:`densevis.model.ModelSource` (a model with its weights file).

    Every file is opened and checked (image size against the checkpoint's; a model loaded from
    weights, which records none, must classify the data's size) before the model runs. Sets
    are named by ``names`` when given, else by their ``set`` attribute, two files of one set
    told apart by file name, as ``base[val.h5]``.

    Examples
    --------
    >>> table, rows = evaluate_checkpoint("model.pt", ["val.h5", "pairs.h5"])   # doctest: +SKIP
    """
    device = resolve_device(device)
    model, ckpt = load_model(checkpoint, device)
    probes = [ProbeSet(path) for path in data]
    for probe in probes:
        check_image_size(ckpt, model_file(checkpoint), probe.size, probe.path, model=model)
    if names is None:
        names = [probe.name for probe in probes]
        names = [f"{name}[{probe.path.name}]" if names.count(name) > 1 else name
                 for name, probe in zip(names, probes)]
    if len(names) != len(probes):
        raise DensevisError(f"{len(names)} names for {len(probes)} probe files")
    if len(set(names)) < len(names):
        raise DensevisError("a probe file is given twice; give each --data once")
    per_image, tables = [], []
    for name, probe in zip(names, probes):
        with probe:
            rows = evaluate_images(model, probe, batch_size, device, name=name)
        per_image.append(rows)
        tables.append(accuracy_breakdown(rows, probe.size))
    return pd.concat(tables, ignore_index=True), pd.concat(per_image, ignore_index=True)


def write_csv(frame: pd.DataFrame, path, force: bool = False) -> None:
    """Write ``frame`` as CSV atomically (a failure leaves nothing at ``path``)."""
    with atomic_output(path, force) as tmp:
        frame.to_csv(tmp, index=False)
