"""Probe sets: reproducibility, ground-truth properties and each set's defining property.

Every check reads the written file (images, masks, objects table) and re-derives the property
from it; none trusts the generator's own bookkeeping.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from probes import SETS, ProbeSet, footprint, get_set, shape_of, write_probe_set
from probes.scene import KINDS


_SCRATCH: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _scratch_folder():
    """One folder for the sets written inside hypothesis examples (no ``tmp_path`` there),
    removed with the module."""
    with tempfile.TemporaryDirectory(prefix="dv-probes-") as folder:
        _SCRATCH.append(Path(folder))
        yield
        _SCRATCH.pop()


def _generate(name: str, n: int, seed: int, size: int, **params) -> ProbeSet:
    folder = Path(tempfile.mkdtemp(dir=_SCRATCH[-1]))
    return ProbeSet(write_probe_set(folder / f"{name}.h5", name, n=n, seed=seed, size=size,
                                    params=params, workers=1))


def _dataset_bytes(path: Path) -> dict[str, bytes]:
    out = {}
    with h5py.File(path, "r") as h5:
        h5.visititems(lambda name, node: out.__setitem__(name, node[()].tobytes())
                      if isinstance(node, h5py.Dataset) else None)
        out["@attrs"] = repr(sorted((k, str(v)) for k, v in h5.attrs.items())).encode()
    return out


# ---------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("name", ["base", "pairs", "lines_only"])
def test_same_seed_same_bytes_other_seed_differs(tmp_path, name):
    one = write_probe_set(tmp_path / "one.h5", name, n=24, seed=7, size=64, workers=1)
    two = write_probe_set(tmp_path / "two.h5", name, n=24, seed=7, size=64, workers=2)
    other = write_probe_set(tmp_path / "other.h5", name, n=24, seed=8, size=64, workers=1)
    assert _dataset_bytes(one) == _dataset_bytes(two)
    assert one.read_bytes() == two.read_bytes()  # whole file, whatever the worker count
    assert _dataset_bytes(one)["images"] != _dataset_bytes(other)["images"]


def test_parallel_workers_match_single_process(tmp_path):
    # enough chunks (64 px: 64 images each) to engage the process pool
    single = write_probe_set(tmp_path / "a.h5", "base", n=300, seed=3, size=64, workers=1)
    pooled = write_probe_set(tmp_path / "b.h5", "base", n=300, seed=3, size=64, workers=2)
    assert single.read_bytes() == pooled.read_bytes()


def test_params_change_the_data_and_are_recorded(tmp_path):
    probe = _generate("base", 16, 0, 64, max_circles=2, positive_rate=1.0)
    assert probe.params["max_circles"] == 2
    assert (probe.labels[:] == 1).all()
    assert probe.objects().query("kind == 'circle'").groupby("image").size().max() <= 2


# ------------------------------------------------------------------ ground truth, any set/size
def _check_ground_truth(probe: ProbeSet) -> None:
    images = probe.images[:]
    masks = {kind: probe.masks(kind)[:] for kind in KINDS}
    labels = probe.labels[:]
    objects = probe.objects()
    union = masks["circle"] | masks["square"] | masks["line"]
    assert not ((images > 0) & ~union).any(), "a lit pixel lies outside every mask"
    assert ((images > 0) == union).all(), "a masked pixel is not lit"
    assert (masks["square"].any(axis=(1, 2)) == (labels == 1)).all()
    rebuilt = {kind: np.zeros_like(masks[kind]) for kind in KINDS}
    for row in objects.itertuples(index=False):
        rr, cc = footprint(shape_of(row), (probe.size, probe.size))
        assert len(rr) == row.area > 0
        rebuilt[row.kind][row.image, rr, cc] = True
    for kind in KINDS:
        assert (rebuilt[kind] == masks[kind]).all(), f"objects table disagrees with masks/{kind}"
    assert (objects.groupby("image").size().reindex(range(len(probe)), fill_value=0) >= 0).all()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SETS)), seed=st.integers(0, 2**32 - 1),
       size=st.sampled_from([64, 96, 128, 200, 256]))
def test_masks_objects_and_labels_agree(name, seed, size):
    n = 2 if name == "pairs" else 12
    _check_ground_truth(_generate(name, n, seed, size))


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(64, 256))
def test_base_geometry_scales_with_size(seed, size):
    probe = _generate("base", 30, seed, size)
    objects = probe.objects()
    scale = size / 256
    high = math.floor(49 * scale + 1e-9)
    for kind, floor in (("circle", 5), ("square", 5)):
        sizes = objects.loc[objects["kind"] == kind, "size"]
        assert sizes.between(max(floor, math.ceil(10 * scale - 1e-9)), high).all()
    assert objects.groupby("image").apply(lambda g: (g.kind == "square").sum()).max() <= 1
    counts = objects.query("kind == 'circle'").groupby("image").size()
    assert counts.max() <= 9
    corner = objects.cx - (objects["size"] - 1) / 2
    assert corner.min() >= round(10 * scale) and corner.max() < round(206 * scale)


def test_base_at_128_draws_the_documented_ranges():
    objects = _generate("base", 400, 1, 128).objects()
    circles = objects.query("kind == 'circle'")["size"]
    assert (circles.min(), circles.max()) == (5, 24)
    squares = objects.query("kind == 'square'")
    assert 150 < len(squares) < 250  # p = 0.5 of 400
    assert squares["filled"].all()


# ----------------------------------------------------------------- each set's defining property
@pytest.fixture(scope="module")
def sets_128():
    return {name: _generate(name, 6 if name == "pairs" else 40, 11, 128) for name in SETS}


def _per_image(objects, kind):
    return {image: group for image, group in objects.query("kind == @kind").groupby("image")}


def test_lines_only_has_lines_and_never_a_square(sets_128):
    probe = sets_128["lines_only"]
    assert (probe.labels[:] == 0).all()
    assert not probe.masks("square")[:].any()
    assert probe.masks("line")[:].any(axis=(1, 2)).all()
    lines = probe.objects().query("kind == 'line'")
    per_image = lines.groupby("image").size()
    assert per_image.index.tolist() == list(range(len(probe)))
    assert per_image.between(1, 4).all()
    side = SETS["base"].geometry(128).side
    assert lines["size"].between(*side).all(), "line lengths are not like square sides"
    axis = lines["angle"].isin([0.0, 90.0])
    assert axis.any() and (~axis).any(), "expected both axis-aligned and oblique lines"


def test_large_squares_are_larger_than_every_circle(sets_128):
    probe = sets_128["large_squares"]
    objects = probe.objects()
    assert (probe.labels[:] == 1).all()
    squares = _per_image(objects, "square")
    circles = _per_image(objects, "circle")
    base_max_side = SETS["base"].geometry(128).side[1]
    for image in range(len(probe)):
        square = squares[image]
        assert len(square) == 1
        area = int(probe.masks("square")[image].sum())
        assert square["size"].iloc[0] > base_max_side
        if image in circles:
            assert square["size"].iloc[0] > circles[image]["size"].max()
            assert area > circles[image]["area"].max()
    assert max(s["size"].iloc[0] for s in squares.values()) > 1.5 * base_max_side


def test_small_circles_are_smaller_than_the_smallest_base_square(sets_128):
    probe = sets_128["small_circles"]
    assert (probe.labels[:] == 0).all()
    assert not (probe.masks("square")[:].any() or probe.masks("line")[:].any())
    smallest_side = SETS["base"].geometry(128).side[0]
    objects = probe.objects()
    assert (objects["kind"] == "circle").all()
    assert (objects["size"] < smallest_side).all()
    assert (objects["area"] < smallest_side**2).all()
    assert probe.masks("circle")[:].any(axis=(1, 2)).all()


def test_controls(sets_128):
    circles, squares = sets_128["circles_only"], sets_128["squares_only"]
    assert (circles.labels[:] == 0).all() and (squares.labels[:] == 1).all()
    assert not circles.masks("square")[:].any() and not circles.masks("line")[:].any()
    assert circles.masks("circle")[:].any(axis=(1, 2)).all()
    assert not squares.masks("circle")[:].any() and not squares.masks("line")[:].any()
    assert (squares.objects().groupby("image").size() == 1).all()


def _components(mask: np.ndarray) -> int:
    return ndimage.label(mask)[1]


def test_pairs_are_the_documented_edits_of_one_scene(sets_128):
    probe = sets_128["pairs"]
    variants = probe.variants
    assert variants == ("original", "removed", "circle", "outline", "sides", "half", "double",
                        "moved")
    labels = probe.labels[:]
    base_index = probe.base_index[:]
    square, circle, line = (probe.masks(kind)[:] for kind in ("square", "circle", "line"))
    images = probe.images[:]
    for start in range(0, len(probe), len(variants)):
        group = dict(zip(variants, range(start, start + len(variants))))
        assert (base_index[start:start + len(variants)] == start).all()
        assert list(probe.variant(slice(start, start + 8))) == list(variants)
        original = square[group["original"]]
        side = int(round(math.sqrt(original.sum())))
        assert original.sum() == side * side and labels[group["original"]] == 1
        # every edit keeps the circles of the original scene untouched
        for name, index in group.items():
            if name != "circle":
                assert (circle[index] == circle[group["original"]]).all()
        # removed: no square, and nothing new lit
        removed = group["removed"]
        assert labels[removed] == 0 and not square[removed].any()
        assert not ((images[removed] > 0) & (images[group["original"]] == 0)).any()
        # equal-area circle at the square's centre: the one circle the original lacks
        assert labels[group["circle"]] == 0 and not square[group["circle"]].any()
        rows, cols = np.nonzero(original)
        table, stack = probe.object_masks(group["circle"])
        old = probe.objects(group["original"])[["cx", "cy", "size"]].to_records(index=False)
        added = [k for k, row in enumerate(table.itertuples()) if row.kind == "circle"
                 and (row.cx, row.cy, row.size) not in old.tolist()]
        assert len(added) == 1
        r, c = np.nonzero(stack[added[0]])
        assert abs(r.mean() - rows.mean()) <= 0.5 and abs(c.mean() - cols.mean()) <= 0.5
        assert abs(len(r) / original.sum() - 1) < 0.2
        assert (circle[group["circle"]] == circle[group["original"]] | stack[added[0]]).all()
        # outline: the square's border band only
        outline = square[group["outline"]]
        assert labels[group["outline"]] == 1
        assert (outline <= original).all() and 0 < outline.sum() < original.sum()
        assert outline[rows.min(), cols.min()] and outline[rows.max(), cols.max()]
        # sides: four separate segments on the square's edges, corners left out
        sides = line[group["sides"]]
        assert labels[group["sides"]] == 0 and not square[group["sides"]].any()
        assert (sides <= original).all() and _components(sides) == 4
        for corner in ((rows.min(), cols.min()), (rows.min(), cols.max()),
                       (rows.max(), cols.min()), (rows.max(), cols.max())):
            assert not sides[corner]
        # half and double: a quarter and four times the area
        assert labels[group["half"]] == labels[group["double"]] == 1
        half_side = math.isqrt(int(square[group["half"]].sum()))
        assert half_side**2 == square[group["half"]].sum() and abs(half_side - side / 2) <= 0.5
        assert square[group["double"]].sum() == 4 * original.sum()
        # moved: same size elsewhere, not overlapping its old place
        moved = square[group["moved"]]
        assert labels[group["moved"]] == 1 and moved.sum() == original.sum()
        assert not (moved & original).any()


def test_pairs_n_counts_scenes():
    probe = _generate("pairs", 3, 0, 64)
    assert len(probe) == 3 * 8 and get_set("pairs").images_per_unit == 8
