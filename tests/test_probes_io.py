"""Probe files: lazy reading, torch Dataset use, bad input and no half-written files."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

import probes.writer
from densevis.cli import main
from probes import ProbeError, ProbeSet, write_probe_set


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
