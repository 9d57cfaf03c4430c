"""Probe files: lazy reading, torch Dataset use, bad input and no half-written files; a user's
own arrays as a probe file (write_arrays) and what a file without the optional parts gives."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

import probes.contract
import probes.writer
from densevis.cli import main
from probes import (ProbeError, ProbeSet, file_sha256, grey_levels, to_grey, write_arrays,
                    write_probe_set)


def test_reader_matches_file_and_reads_lazily(base_file):
    probe = ProbeSet(base_file)
    assert probe.name == "base" and probe.size == 64 and len(probe) == 96
    with h5py.File(base_file, "r") as h5:
        assert h5.attrs["format"] == "densevis-probes/1"
        assert h5["images"].chunks[0] < len(probe)  # chunked: a read touches only its chunks
        assert h5["images"].compression == "gzip"
        first = h5["images"][5]
        assert h5["base_index"][:].tolist() == [-1] * 96
    assert (probe[5]["image"] == first).all()
    sizes = [len(batch["index"]) for batch in probe.batches(40, fields=("images", "masks/square"))]
    assert sizes == [40, 40, 16]
    assert probe[-1]["index"] == 95
    with pytest.raises(IndexError):
        probe[96]


def test_probe_set_is_a_torch_dataset(base_file):
    probe = ProbeSet(base_file)
    clone = pickle.loads(pickle.dumps(probe))  # what DataLoader workers receive
    assert clone[3]["label"] == probe[3]["label"]
    loader = torch.utils.data.DataLoader(probe, batch_size=16, num_workers=2, shuffle=False)
    batches = list(loader)
    images = torch.cat([batch["image"] for batch in batches])
    assert images.shape == (96, 64, 64) and images.dtype == torch.uint8
    assert (images.numpy() == probe.images[:]).all()
    assert torch.cat([b["label"] for b in batches]).tolist() == probe.labels[:].tolist()


def test_object_masks_are_each_objects_own_footprint(probe_dir):
    probe = ProbeSet(probe_dir / "pairs.h5")
    table, stack = probe.object_masks(0)
    assert len(table) == len(stack) > 0
    assert (stack.sum(axis=(1, 2)) == table["area"].to_numpy()).all()
    square = stack[(table["kind"] == "square").to_numpy()].any(axis=0)
    assert (square == probe.masks("square")[0]).all()


@pytest.mark.parametrize("make_bad, message", [
    (lambda p: p.write_text("not hdf5"), "not a readable HDF5 file"),
    (lambda p: h5py.File(p, "w").close(), "not a densevis probe file"),
])
def test_bad_probe_files_are_clear_errors(tmp_path, make_bad, message):
    path = tmp_path / "bad.h5"
    make_bad(path)
    with pytest.raises(ProbeError, match=message):
        ProbeSet(path)
    with pytest.raises(ProbeError, match="not found"):
        ProbeSet(tmp_path / "missing.h5")


def test_inconsistent_probe_file_is_rejected(tmp_path, base_file):
    path = tmp_path / "cut.h5"
    path.write_bytes(base_file.read_bytes())
    with h5py.File(path, "a") as h5:
        del h5["labels"]
        h5["labels"] = np.zeros(3, np.uint8)
    with pytest.raises(ProbeError, match="labels has shape"):
        ProbeSet(path)


@pytest.mark.parametrize("args, message", [
    (["generate", "nosuchset"], "unknown probe set 'nosuchset'; valid: base"),
    (["generate", "base", "--param", "colour=red"], "unknown parameter 'colour'"),
    (["generate", "base", "--param", "max_circles=many"], "not a valid int"),
    (["generate", "base", "--param", "novalue"], "is not KEY=VALUE"),
    (["generate", "base", "--n", "0"], "--n must be a positive"),
    (["generate", "base", "--size", "20"], "--size 20 is too small for the geometry; use 32"),
    (["generate", "large_squares", "--size", "64", "--param", "min_side=30"], "min_side > max_diameter"),
    (["generate", "base", "--seed", "-1"], "non-negative"),
])
def test_bad_generate_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "out.h5"
    assert main(args + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "out.h5"
    out.write_text("keep me")
    assert main(["generate", "base", "--n", "4", "--size", "64", "--out", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main(["generate", "base", "--n", "4", "--size", "64", "--out", str(out), "--force"]) == 0
    assert len(ProbeSet(out)) == 4


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    assert main(["generate", "base", "--out", str(tmp_path / "no" / "such" / "x.h5")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["generate", "base", "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    real = probes.writer._render_chunk
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(job)

    monkeypatch.setattr(probes.writer, "_render_chunk", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_probe_set(tmp_path / "x.h5", "base", n=200, size=64, workers=1)
    assert list(tmp_path.iterdir()) == []


def test_generate_list_and_success_message(tmp_path, capsys):
    assert main(["generate", "--list"]) == 0
    listing = capsys.readouterr().out
    for name in ("base", "lines_only", "large_squares", "small_circles", "circles_only",
                 "squares_only", "pairs"):
        assert name in listing
    assert "max_circles=9" in listing
    out = tmp_path / "p.h5"
    assert main(["generate", "pairs", "--n", "2", "--size", "64", "--seed", "4",
                 "--out", str(out)]) == 0
    assert "16 images of 64x64" in capsys.readouterr().out


# ------------------------------------------------------------------ a user's arrays (write_arrays)
def _own_arrays(count=6, size=32):
    rng = np.random.default_rng(5)
    images = rng.integers(0, 60, (count, size, size), dtype=np.uint8)
    labels = np.arange(count) % 2
    lesion = np.zeros((count, size, size), bool)
    for k in np.flatnonzero(labels):
        lesion[k, 4 + k:14 + k, 6:16] = True
    images[lesion] = 250
    return images, labels, {"lesion": lesion, "organ": images > 30}


def test_write_arrays_round_trip_and_same_bytes(tmp_path):
    images, labels, masks = _own_arrays()
    names = [f"scan_{k}é.png" for k in range(6)]
    first = write_arrays(tmp_path / "a.h5", images, labels, masks, name="scans", target="lesion",
                         names=names, params={"site": "A"})
    again = write_arrays(tmp_path / "b.h5", images, labels, masks, name="scans", target="lesion",
                         names=names, params={"site": "A"})
    assert file_sha256(first) == file_sha256(again)
    probe = ProbeSet(first)
    assert (probe.name, probe.seed, probe.imported, probe.size, len(probe)) == \
        ("scans", -1, True, 32, 6)
    assert probe.regions == ("lesion", "organ") and probe.target == "lesion"
    assert (probe.images[:] == images).all() and (probe.labels[:] == labels).all()
    assert all((probe.masks(r)[:] == m).all() for r, m in masks.items())
    assert probe.image_names().tolist() == names and probe.params == {"site": "A"}
    assert probe.base_index[:].tolist() == [-1] * 6 and not probe.has_variants
    objects = probe.objects()
    assert len(objects) == 0 and not probe.has_objects
    assert list(objects.columns) == list(probes.contract.OBJECT_DTYPE.names)
    with h5py.File(first, "r") as h5:
        assert h5["objects"].dtype == probes.contract.OBJECT_DTYPE and h5.attrs["source"]
    with pytest.raises(ProbeError, match="no mask of region 'square'; its regions: lesion, organ"):
        probe.masks("square")
    one = ProbeSet(write_arrays(tmp_path / "c.h5", images, labels, {"lesion": masks["lesion"]},
                                name="scans"))
    assert one.target == "lesion"  # the only region


def test_write_arrays_keeps_objects_and_pairs_of_a_generated_file(probe_dir, tmp_path):
    pairs = ProbeSet(probe_dir / "pairs.h5")
    copy = ProbeSet(write_arrays(
        tmp_path / "copy.h5", pairs.images[:], pairs.labels[:],
        {region: pairs.masks(region)[:] for region in pairs.regions}, pairs.objects(),
        name="my_pairs", base_index=pairs.base_index[:], variants=pairs.variant(slice(None))))
    assert copy.target == "square" and copy.regions == pairs.regions == ("circle", "square", "line")
    assert copy.objects().equals(pairs.objects()) and copy.has_objects
    assert copy.variants == pairs.variants
    assert (copy.variant(slice(None)) == pairs.variant(slice(None))).all()
    assert (copy.base_index[:] == pairs.base_index[:]).all()


def test_a_generated_file_keeps_its_target_and_regions(base_file):
    probe = ProbeSet(base_file)
    assert probe.target == "square" and probe.regions == ("circle", "square", "line")
    assert not probe.imported and probe.has_objects and probe.image_names() is None


def _bad(**change):
    images, labels, masks = _own_arrays()
    args = {"images": images, "labels": labels, "masks": masks, "target": "lesion",
            "name": "scans"}
    return {**args, **change}


@pytest.mark.parametrize("change, parameter, message", [
    (dict(images=np.zeros((6, 32, 32))), "images", "probes.grey_levels(images)"),
    (dict(images=np.zeros((6, 32, 32, 3), np.uint8)), "images", "probes.to_grey(image)"),
    (dict(images=np.zeros((6, 32, 40), np.uint8)), "images", "32x40 px, not square"),
    (dict(images=np.zeros((32, 32), np.uint8)), "images", "images[None]"),
    (dict(labels=[0, 1]), "labels", "expected one per image, (6,)"),
    (dict(labels=np.array([0, 1, 2, 0, 1, 0])), "labels", "of image 2 is 2"),
    (dict(labels=np.zeros(6)), "labels", "labels.astype(np.uint8)"),
    (dict(masks={"lesion": np.zeros((6, 32, 32), np.uint8)}), "masks", "mask != 0"),
    (dict(masks={"lesion": np.zeros((6, 16, 16), bool)}), "masks", "expected the images'"),
    (dict(masks={"my lesion": np.zeros((6, 32, 32), bool)}, target=None), "masks",
     "is not a word"),
    (dict(masks={"smallest_object": np.zeros((6, 32, 32), bool)}, target=None), "masks",
     "is taken"),
    (dict(masks=np.zeros((6, 32, 32), bool)), "masks", "must be a dict"),
    (dict(target="tumour"), "target", "'tumour' is not a region of the masks"),
    (dict(target=None), "target", "the masks hold 2 regions (lesion, organ)"),
    (dict(name="base"), "name", "name of a generated set"),
    (dict(name="my scans"), "name", "must be a word"),
    (dict(objects=np.zeros(2, dtype=[("image", "<i8")])), "objects", "no kind"),
    (dict(variants=["a"] * 6), "variants", "need base_index"),
    (dict(base_index=np.full(6, 9)), "base_index", "of image 0 is 9"),
    (dict(params={"when": object()}), "params", "JSON-able"),
])
def test_write_arrays_bad_input_is_a_clear_error(tmp_path, change, parameter, message):
    args = _bad(**change)
    with pytest.raises(ProbeError) as error:
        write_arrays(tmp_path / "x.h5", args.pop("images"), args.pop("labels"), **args)
    assert error.value.parameter == parameter and message in str(error.value), str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_grey_levels_and_to_grey():
    assert grey_levels(np.array([0.0, 1.0])).tolist() == [0, 255]
    with pytest.raises(ProbeError, match="floats from 0 to 255"):
        grey_levels(np.array([0.0, 255.0]))
    with pytest.raises(ProbeError, match="int32"):
        grey_levels(np.zeros(2, np.int32))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 1], rgba[..., 3] = 200, 17  # pure green, alpha ignored
    assert (to_grey(rgba) == round(0.7154 * 200)).all()
    with pytest.raises(ProbeError, match=r"shape \(2, 2, 5\)"):
        to_grey(np.zeros((2, 2, 5), np.uint8))


def test_a_minimal_file_of_another_tool_is_read(tmp_path):
    """Images, labels and the attributes alone: every optional part reads as absent, and what
    needs it says so."""
    from densevis.analysis.regions import RegionReader
    from densevis.labels import rule_labels
    from probes.measure import scene_geometry

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as h5:
        h5["images"] = np.zeros((4, 16, 16), np.uint8)
        h5["labels"] = np.array([0, 1, 0, 1], np.uint8)
        h5.attrs.update({"format": probes.FORMAT, "set": "other", "seed": -1, "params": "{}"})
    probe = ProbeSet(path)
    assert probe.regions == () and probe.target is None and not probe.has_objects
    assert probe.base_index[:].tolist() == [-1] * 4 and len(probe.objects()) == 0
    geometry = scene_geometry(probe)
    assert not geometry["touches_circle"].any() and geometry["square_side"].isna().all()
    assert rule_labels(probe, "shuffled").sum() == 2
    with pytest.raises(ProbeError, match="lacks objects .*, needed by the label rules edge and "
                                         "small; train with the label rule 'square'"):
        rule_labels(probe, "edge")
    with pytest.raises(ProbeError, match="other.h5 .*lacks objects rows of other kinds"):
        RegionReader(probe).read([0], ["smallest_object"])
    probe.close()
    with h5py.File(path, "a") as h5:
        h5["variant"] = np.array([b"a"] * 4)
    with pytest.raises(ProbeError, match="lacks base_index"):
        ProbeSet(path)
