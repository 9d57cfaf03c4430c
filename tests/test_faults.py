"""Fault injection: bad inputs and faults of the machine against every verb.

Each failing case must give exit status 2 and exactly one line on stderr (what is wrong, how to
fix it) without a traceback, leave every input byte for byte as it was and leave no stray file
(no temporary file, no half output). The machine's faults are real where a test can make them
(a full disk: the temporary file is a link to /dev/full; SIGTERM and SIGKILL: a real process)
and simulated where root would not notice them (a read-only or forbidden folder).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from densevis.cli import main
from densevis.errors import DensevisError
from densevis.experiment import load_spec, run_experiment
from densevis.maps import MapsWriter
from densevis.recipe import TrainConfig
from densevis.saliency.files import explain_file
from densevis.train import train
from probes import file_sha256, write_probe_set
from probes.atomic import atomic_output, publish_folder, remove_stale_temps, temp_path

SIZE = 32
MICRO = """
name = "micro"
[data]
size = 32
train = 48
val = 16
images_per_set = 8
[model]
epochs = 1
replicates = 1
[probes]
sets = ["base"]
[saliency]
methods = ["vanilla", "gradcam"]
layers = ["denseblock4"]
device = "cpu"
[analysis]
baselines = ["random"]
[analysis.sanity]
methods = []
[[hypotheses]]
name = "localizes_square"
[outputs]
figures = false
html = false
"""


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny inputs at 32 px: train.h5, val.h5, model.pt (one epoch) and maps.h5 of val.h5."""
    folder = tmp_path_factory.mktemp("faults")
    write_probe_set(folder / "train.h5", "base", n=48, seed=0, size=SIZE, workers=1)
    write_probe_set(folder / "val.h5", "base", n=16, seed=1, size=SIZE, workers=1)
    train(folder / "train.h5", folder / "val.h5", folder / "model.pt",
          TrainConfig(epochs=1, batch_size=16, recalibrate=16, device="cpu", threads=1),
          progress=False)
    explain_file(folder / "model.pt", folder / "val.h5", folder / "maps.h5",
                 methods="vanilla,gradcam", layers="denseblock4", device="cpu", progress=False)
    return folder


@pytest.fixture
def fails(capsys, files, tmp_path):
    """``fails(argv, *fragments, vanish=())``: ``densevis argv`` exits with 2 and one line on
    stderr that holds every fragment, no traceback; every file of the fixtures and of
    ``tmp_path`` is unchanged but those of ``vanish`` (which must be gone), and nothing was
    added (no temporary file, no output). Returns the line."""
    def check(argv: list, *fragments: str, vanish: tuple = ()) -> str:
        before = {path: state for path, state in _snapshot(files, tmp_path).items()
                  if path not in vanish}
        code = main([str(arg) for arg in argv])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith("densevis ") and "Traceback" not in err, err
        for fragment in fragments:
            assert fragment in err, err
        assert _snapshot(files, tmp_path) == before, "an input changed or a file was left"
        return err
    return check


def _snapshot(*folders: Path) -> dict:
    """Every file and link below ``folders`` (hidden ones included) with the SHA-256 of its
    bytes (a link: its target)."""
    return {path: f"-> {os.readlink(path)}" if path.is_symlink() else
            hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            for folder in folders for path in sorted(folder.rglob("*"))}


def _copy(source: Path, target: Path, edit=None) -> Path:
    shutil.copyfile(source, target)
    if edit is not None:
        with h5py.File(target, "a") as h5:
            edit(h5)
    return target


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def _stale(folder: Path, name: str, directory: bool = False) -> Path:
    """A temporary file (or folder) of a dead process, as a killed writer leaves it."""
    path = temp_path(folder / name)
    path = path.with_name(path.name.replace(f".{os.getpid()}.", f".{_dead_pid()}."))
    path.mkdir() if directory else path.write_bytes(b"half")
    return path


def _full_disk(out: Path) -> tuple[Path]:
    """Make this process's writes to ``out`` fail with ENOSPC: its temporary file is a link to
    /dev/full, where every write fails as on a full disk. Returns the link (to vanish)."""
    os.symlink("/dev/full", temp_path(out))
    return (temp_path(out),)


# ----------------------------------------------------------------------- code from a checkpoint
def test_a_pickled_payload_in_a_checkpoint_does_not_run(files, tmp_path, fails):
    sentinel = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    checkpoint = torch.load(files / "model.pt", weights_only=True)
    checkpoint["metrics"]["note"] = Payload()
    torch.save(checkpoint, tmp_path / "evil.pt")
    fails(["evaluate", "--checkpoint", tmp_path / "evil.pt", "--data", files / "val.h5"],
          "holds more than plain data (posix.system)", "could run code", "retrain it")
    assert not sentinel.exists()


def test_a_checkpoint_needing_unpickling_is_refused(files, tmp_path, fails):
    checkpoint = torch.load(files / "model.pt", weights_only=True)
    checkpoint["metrics"]["best_epoch"] = np.int64(1)
    torch.save(checkpoint, tmp_path / "numpy.pt")
    fails(["explain", "--checkpoint", tmp_path / "numpy.pt", "--data", files / "val.h5",
           "--out", tmp_path / "maps.h5"], "holds more than plain data", "retrain it")


def test_written_checkpoints_hold_plain_data_only(files):
    checkpoint = torch.load(files / "model.pt", weights_only=True)  # raises otherwise
    assert checkpoint["train_config"]["epochs"] == 1 and checkpoint["data"]["train"]["n"] == 48


# --------------------------------------------------------------------------- inputs destroyed
def test_train_out_equal_to_its_data_is_refused_even_with_force(files, fails):
    fails(["train", "--data", files / "train.h5", "--val", files / "val.h5",
           "--out", files / "train.h5", "--force"], "is also an input", "choose another")


def test_explain_out_equal_to_its_probe_file_is_refused(files, fails):
    fails(["explain", "--checkpoint", files / "model.pt", "--data", files / "val.h5",
           "--out", files / "val.h5", "--force"], "is also an input")


def test_an_output_hard_linked_to_an_input_is_refused(files, tmp_path, fails):
    os.link(files / "val.h5", tmp_path / "alias.h5")
    fails(["explain", "--checkpoint", files / "model.pt", "--data", files / "val.h5",
           "--out", tmp_path / "alias.h5", "--force"], "is also an input")


def test_an_output_symlinked_to_an_input_is_refused(files, tmp_path, fails):
    (tmp_path / "table.csv").symlink_to(files / "model.pt")
    fails(["evaluate", "--checkpoint", files / "model.pt", "--data", files / "val.h5",
           "--out", tmp_path / "table.csv", "--force"], "is also an input")


def test_report_out_equal_to_one_of_its_tables_is_refused(tmp_path, fails):
    (tmp_path / "hypotheses.csv").write_text("hypothesis,verdict\nx,supported\n")
    (tmp_path / "summary.csv").write_text("set,n\nbase,3\n")
    fails(["report", tmp_path, "--out", tmp_path / "summary.csv", "--force"], "is also an input")


def test_a_file_that_appears_while_writing_is_kept(tmp_path, monkeypatch, capsys):
    """Two writers of one new --out: the second to finish fails and the first file stays."""
    import probes.writer

    out, real = tmp_path / "a.h5", probes.writer._write_attrs

    def racing(h5, *args):  # another process finishes the same output meanwhile
        out.write_bytes(b"the other writer's file")
        return real(h5, *args)

    monkeypatch.setattr(probes.writer, "_write_attrs", racing)
    assert main(["generate", "base", "--n", "4", "--size", "32", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "appeared while this command wrote it" in err and err.count("\n") == 1
    assert out.read_bytes() == b"the other writer's file"
    assert [p.name for p in tmp_path.iterdir()] == ["a.h5"]


def test_two_run_folders_published_at_once_get_two_names(tmp_path):
    names = [tmp_path / "run", tmp_path / "run-1", tmp_path / "run-2"]
    made = []
    for k in range(2):
        tmp = tmp_path / f".run.{k}.tmp"
        tmp.mkdir()
        (tmp / "table.csv").write_text(str(k))
        made.append(publish_folder(tmp, iter(names)))
    assert made == names[:2]
    assert [(p / "table.csv").read_text() for p in made] == ["0", "1"]


# ------------------------------------------------------------------------- the cache of a run
@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro")
    (folder / "micro.toml").write_text(MICRO)
    run_dir = run_experiment(load_spec(folder / "micro.toml"), folder / "out", progress=False,
                             echo=lambda _: None)
    return folder / "micro.toml", run_dir


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _edit_table(path: Path) -> None:
    table = pd.read_csv(path)
    table.loc[0, "value"] = 123.0
    table.to_csv(path, index=False)


@pytest.mark.parametrize("stage, pattern, damage", [
    ("models", "original-*.pt", _truncate),
    ("maps", "base-*.h5", _truncate),
    ("analysis", "metrics-*.csv", _edit_table),
])
def test_a_damaged_cache_entry_is_computed_again(micro_run, tmp_path, capsys, stage, pattern,
                                                 damage):
    spec, first = micro_run
    out = tmp_path / "out"
    shutil.copytree(first.parent / ".cache", out / ".cache")
    (entry,) = (out / ".cache" / stage).glob(pattern)
    damage(entry)
    stale = [_stale(out, "micro-x", directory=True), _stale(out / ".cache" / stage, entry.name)]
    assert main(["run", str(spec), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"cache entry {entry} is not used" in err and "computing it again" in err, err
    assert file_sha256(entry) == (entry.parent / f"{entry.name}.sha256").read_text().strip()
    (again,) = [p for p in out.iterdir() if p.name.startswith("micro-")]
    for name in ("metrics", "summary", "hypotheses", "evaluation"):
        pd.testing.assert_frame_equal(pd.read_csv(first / f"{name}.csv"),
                                      pd.read_csv(again / f"{name}.csv"))
    assert not any(path.exists() for path in stale), "stale temporary files of killed runs"


# -------------------------------------------------------------------------- probe files
def _float_images(h5):
    images = h5["images"][:] / 255.0
    del h5["images"]
    h5["images"] = images


def _negative_images(h5):
    images = h5["images"][:].astype(np.int16) - 128
    del h5["images"]
    h5["images"] = images


def _kind_codes(h5):  # objects.kind as integer codes, as another tool might write them
    rows = h5["objects"][:]
    table = pd.DataFrame(rows).assign(kind=lambda t: (t["kind"] == b"square").astype(np.int64))
    del h5["objects"]
    h5["objects"] = table.to_records(index=False)


def _set(name, row, value):
    def edit(h5):
        h5[name][row] = value
    return edit


@pytest.mark.parametrize("verb, edit, message", [
    ("evaluate", _float_images, "images are float64, expected uint8"),
    ("train", _negative_images, "images are int16, expected uint8"),
    ("evaluate", _set("labels", 3, 7), "image 3 has label 7"),
    ("train", _kind_codes, "objects table has kind int64"),
    ("evaluate", _set("base_index", 2, 99), "base_index of image 2 is 99"),
    ("explain", lambda h5: h5.attrs.__delitem__("seed"), "lacks attribute seed"),
])
def test_a_probe_file_breaking_the_contract_is_refused(files, tmp_path, fails, verb, edit,
                                                       message):
    bad = _copy(files / "val.h5", tmp_path / "bad.h5", edit)
    argv = {"evaluate": ["evaluate", "--checkpoint", files / "model.pt", "--data", bad],
            "train": ["train", "--data", bad, "--val", files / "val.h5",
                      "--out", tmp_path / "m.pt"],
            "explain": ["explain", "--checkpoint", files / "model.pt", "--data", bad,
                        "--out", tmp_path / "maps.h5"]}[verb]
    fails(argv, message, "regenerate it")


def _corrupt_chunk(path: Path, dataset: str) -> None:
    with h5py.File(path, "r") as h5:
        offset = h5[dataset].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset + 8)
        handle.write(b"\xff" * 64)


def test_a_corrupt_chunk_of_a_probe_file_is_one_line_for_evaluate(files, tmp_path, fails):
    bad = _copy(files / "val.h5", tmp_path / "bad.h5")
    _corrupt_chunk(bad, "images")
    fails(["evaluate", "--checkpoint", files / "model.pt", "--data", bad],
          "cannot read images", "the file is damaged")


def test_a_corrupt_chunk_of_a_probe_file_is_one_line_for_analyze(files, tmp_path, fails):
    bad = _copy(files / "val.h5", tmp_path / "bad.h5")
    _corrupt_chunk(bad, "masks/square")
    maps = _copy(files / "maps.h5", tmp_path / "maps.h5",
                 lambda h5: h5.attrs.__setitem__("probe_sha256", file_sha256(bad)))
    fails(["analyze", "--maps", maps, "--data", bad, "--out", tmp_path / "tables"],
          "cannot read masks/square", "the file is damaged")


def test_a_corrupt_chunk_of_a_maps_file_is_one_line(files, tmp_path, fails):
    maps = _copy(files / "maps.h5", tmp_path / "maps.h5")
    _corrupt_chunk(maps, "maps/vanilla")
    fails(["analyze", "--maps", maps, "--data", files / "val.h5", "--out", tmp_path / "t"],
          "cannot read maps/vanilla")


# ---------------------------------------------------------------------------------- maps files
def _maps_of_shape(files, path: Path, rows: int, side: int) -> Path:
    attrs = {"probe_sha256": file_sha256(files / "val.h5"), "probe_set": "base",
             "probe": str(files / "val.h5")}
    keys = [("vanilla", None)]
    with MapsWriter(path, rows, SIZE, 2, keys, attrs) as out:
        out.write(0, {keys[0]: np.zeros((rows, SIZE, SIZE))}, np.zeros((rows, 2)),
                  np.zeros(rows, np.int64), np.arange(rows))
    if side != SIZE:
        with h5py.File(path, "a") as h5:
            del h5["maps/vanilla"]
            h5["maps/vanilla"] = np.zeros((rows, side, side), np.float32)
    return path


def test_maps_of_the_wrong_shape_are_refused(files, tmp_path, fails):
    maps = _maps_of_shape(files, tmp_path / "maps.h5", 16, 16)
    fails(["analyze", "--maps", maps, "--data", files / "val.h5", "--out", tmp_path / "t"],
          "maps vanilla are float32 of shape (16, 16, 16), expected (16, 32, 32)")


def test_maps_of_another_row_count_are_refused(files, tmp_path, fails):
    def fewer(h5):
        del h5["index"]
        h5["index"] = np.arange(15)

    maps = _copy(files / "maps.h5", tmp_path / "maps.h5", fewer)
    fails(["explain", "--maps", maps, "--data", files / "val.h5", "--figures", tmp_path / "f"],
          "index is int64 of shape (15,) for 16 rows")


def test_maps_naming_an_image_twice_are_refused(files, tmp_path, fails):
    maps = _copy(files / "maps.h5", tmp_path / "maps.h5", _set("index", 1, 0))
    fails(["analyze", "--maps", maps, "--data", files / "val.h5", "--out", tmp_path / "t"],
          "index names an image twice")


def test_the_same_maps_file_twice_is_refused(files, tmp_path, fails):
    fails(["analyze", "--maps", files / "maps.h5", "--maps", files / "maps.h5",
           "--data", files / "val.h5", "--out", tmp_path / "t"], "is given twice")


def test_a_copy_of_a_maps_file_is_refused(files, tmp_path, fails):
    twin = _copy(files / "maps.h5", tmp_path / "twin.h5")
    fails(["analyze", "--maps", files / "maps.h5", "--maps", twin,
           "--data", files / "val.h5", "--out", tmp_path / "t"], "both hold", "counted twice")


# ---------------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_with_nan_weights_is_refused(files, tmp_path, fails):
    checkpoint = torch.load(files / "model.pt", weights_only=True)
    checkpoint["state_dict"]["features.conv0.weight"][0, 0, 0, 0] = float("nan")
    torch.save(checkpoint, tmp_path / "nan.pt")
    fails(["evaluate", "--checkpoint", tmp_path / "nan.pt", "--data", files / "val.h5"],
          "non-finite weights", "features.conv0.weight", "retrain")


def test_weights_of_another_arch_name_the_tensor_and_the_fix(files, tmp_path, fails):
    checkpoint = torch.load(files / "model.pt", weights_only=True)
    checkpoint["config"]["growth_rate"] = 12
    torch.save(checkpoint, tmp_path / "other.pt")
    fails(["evaluate", "--checkpoint", tmp_path / "other.pt", "--data", files / "val.h5"],
          "of another shape, e.g. features.denseblock1", "instead of", "retrain it")


def test_a_probe_file_given_as_checkpoint_is_refused(files, fails):
    fails(["evaluate", "--checkpoint", files / "val.h5", "--data", files / "val.h5"],
          "not a readable torch checkpoint")


@pytest.mark.parametrize("flag", ["--checkpoint", "--data"])
def test_a_folder_given_as_a_file_is_called_a_folder(files, tmp_path, fails, flag):
    argv = {"--checkpoint": tmp_path, "--data": files / "val.h5"}
    argv.update({flag: tmp_path})
    fails(["evaluate", "--checkpoint", argv["--checkpoint"], "--data", argv["--data"]],
          "is a folder, not a file")


def test_a_diverging_training_stops_with_an_error(files, tmp_path, fails):
    fails(["train", "--data", files / "train.h5", "--val", files / "val.h5", "--out",
           tmp_path / "m.pt", "--epochs", "1", "--batch-size", "16", "--recalibrate", "16",
           "--lr", "1e9", "--device", "cpu", "--threads", "1", "--quiet"],
          "--lr is too high: the training diverged", "no checkpoint was written")


def test_errors_name_the_api_parameter_and_the_command_line_its_flag(files, tmp_path, fails):
    with pytest.raises(DensevisError, match=r"^epochs must be at least 1 \(got 0\)$"):
        TrainConfig(epochs=0).validate()
    fails(["train", "--data", files / "train.h5", "--val", files / "val.h5",
           "--out", tmp_path / "m.pt", "--epochs", "0"], "--epochs must be at least 1")


# ---------------------------------------------------------------------------------- generate
@pytest.mark.parametrize("argv, message", [
    (["--size", "32", "--param", "min_side=40", "--param", "max_side=20"],
     "min_side=40 must not exceed max_side=20"),
    (["--param", "max_side=400", "--param", "min_side=300"], "largest side (400 px"),
    (["--size", "100000"], "--size is too large"),
    (["--size", "32", "--n", "1000000000000"], "--n is too large"),
])
def test_impossible_generate_requests_are_refused_before_work(tmp_path, fails, argv, message):
    fails(["generate", "base", "--out", tmp_path / "x.h5", *argv], message)


# ------------------------------------------------------------------------ faults of the machine
def test_a_full_disk_during_generate(tmp_path, fails):
    link = _full_disk(tmp_path / "x.h5")
    fails(["generate", "base", "--n", "8", "--size", "32", "--out", tmp_path / "x.h5"],
          "cannot write", "the disk is full", vanish=link)


def test_a_full_disk_during_explain(files, tmp_path, fails):
    link = _full_disk(tmp_path / "maps.h5")
    fails(["explain", "--checkpoint", files / "model.pt", "--data", files / "val.h5",
           "--out", tmp_path / "maps.h5", "--methods", "vanilla", "--device", "cpu"],
          "the disk is full", vanish=link)


def test_a_full_disk_during_train(files, tmp_path, fails):
    link = _full_disk(tmp_path / "m.pt")
    fails(["train", "--data", files / "train.h5", "--val", files / "val.h5", "--out",
           tmp_path / "m.pt", "--epochs", "1", "--batch-size", "16", "--recalibrate", "16",
           "--device", "cpu", "--threads", "1", "--quiet"], "the disk is full", vanish=link)


def test_a_full_disk_during_analyze_writes_no_table(files, tmp_path, fails):
    (tmp_path / "t").mkdir()
    link = _full_disk(tmp_path / "t" / "summary.csv")
    fails(["analyze", "--maps", files / "maps.h5", "--data", files / "val.h5",
           "--out", tmp_path / "t", "--no-baselines", "--device", "cpu"], "the disk is full",
          vanish=link)
    assert list((tmp_path / "t").iterdir()) == []


def test_an_io_error_when_the_output_is_committed(files, tmp_path, fails, monkeypatch):
    def failing(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "link", failing)
    fails(["evaluate", "--checkpoint", files / "model.pt", "--data", files / "val.h5",
           "--out", tmp_path / "e.csv", "--device", "cpu"], "input/output error")


def _forbid(monkeypatch, folder: Path, code: int) -> None:
    """Creating files in ``folder`` fails with ``code`` (root ignores permissions, so a
    read-only or forbidden folder is simulated)."""
    real = os.open

    def guarded(path, *args, **kwargs):
        if Path(path).parent == folder:
            raise OSError(code, os.strerror(code), str(path))
        return real(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", guarded)


def test_a_read_only_analyze_out_is_refused_before_work(files, tmp_path, fails, monkeypatch):
    _forbid(monkeypatch, tmp_path, errno.EROFS)
    fails(["analyze", "--maps", files / "maps.h5", "--data", files / "val.h5",
           "--out", tmp_path / "t"], "cannot write", "read-only")


def test_a_forbidden_run_out_is_refused_before_work(micro_run, tmp_path, fails, monkeypatch):
    _forbid(monkeypatch, tmp_path, errno.EACCES)
    fails(["run", micro_run[0], "--out", tmp_path / "runs"], "permission denied")


def test_figures_naming_a_file_are_refused(files, tmp_path, fails):
    (tmp_path / "figs").write_text("not a folder")
    fails(["explain", "--maps", files / "maps.h5", "--data", files / "val.h5",
           "--figures", tmp_path / "figs"], "is a file; give a folder")


def _wait_for_temp(out: Path, process: subprocess.Popen) -> None:
    """Until the writer of ``out`` has its temporary file (or ended)."""
    for _ in range(600):
        if any(p.name.startswith(f".{out.name}.") for p in out.parent.iterdir()) \
                or process.poll() is not None:
            return
        time.sleep(0.05)


def _generating(out: Path, workers: int = 1) -> subprocess.Popen:
    """A long ``generate`` in a process group of its own (with its rendering workers)."""
    return subprocess.Popen([sys.executable, "-m", "densevis", "generate", "base", "--n",
                             "500000", "--size", "64", "--workers", str(workers), "--out",
                             str(out)], stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_removes_the_half_written_output(tmp_path, workers):
    """As ``timeout`` or ``kill`` of a process group: workers die quietly, one line."""
    process = _generating(tmp_path / "x.h5", workers)
    _wait_for_temp(tmp_path / "x.h5", process)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.count("\n") == 1 and "terminated" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_the_next_writer_removes_what_a_killed_one_left(tmp_path):
    process = _generating(tmp_path / "x.h5")
    _wait_for_temp(tmp_path / "x.h5", process)
    process.kill()
    process.communicate(timeout=60)
    left = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert left, "kill -9 left nothing to clean up"
    assert main(["generate", "base", "--n", "4", "--size", "32", "--out",
                 str(tmp_path / "y.h5")]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["y.h5"]


def test_temporary_files_of_live_processes_stay(tmp_path):
    mine = temp_path(tmp_path / "x.h5")
    mine.write_bytes(b"being written")
    dead = _stale(tmp_path, "y.h5")
    assert remove_stale_temps(tmp_path) == [dead]
    assert mine.exists()
    with atomic_output(tmp_path / "z.txt") as tmp:
        tmp.write_text("done")
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "z.txt"]


# ----------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text, key, message", [
    ("[model]\nepochs = 0\n", "model.epochs", "must be at least 1"),
    ("[data]\nsize = 16\n", "data.size", "use 32 or more"),
    ("[saliency]\nmethods = ['vanilla', 'magic']\n", "saliency.methods", "'magic'"),
    ("[saliency]\nlayers = ['denseblock9']\n", "saliency.layers", "unknown layer"),
    ("[model]\narch = 'nonet'\n", "model.arch", "'nonet' is unknown"),
    ("[saliency]\ndevice = 'tpu'\n", "saliency.device", "'tpu' is not a device"),
    ("[saliency]\nmethods = ['smoothgrad']\n[saliency.params.smoothgrad]\nsamples = 'many'\n",
     "saliency.params", "smoothgrad.samples='many'"),
    ("[saliency.params.vanilla]\nfoo = 1\n", "saliency.params", "has no parameter 'foo'"),
    ("[probes.params.base]\nmin_side = 40\nmax_side = 20\n", "probes.params.base",
     "min_side=40 must not exceed"),
    ("[probes.params.base]\ncolour = 'red'\n", "probes.params.base", "unknown parameter"),
    ("[analysis]\nbaselines = ['random', 'noise']\n", "analysis.baselines", "'noise'"),
    ("[model]\ncheckpoint = 'VAL'\n", "model.checkpoint", "not a readable torch checkpoint"),
])
def test_a_bad_spec_value_is_one_line_with_file_line_and_key(files, tmp_path, fails, text, key,
                                                             message):
    spec = tmp_path / "bad.toml"
    spec.write_text(text.replace("VAL", str(files / "val.h5")))
    err = fails(["run", spec, "--out", tmp_path / "runs"], f"{spec} line ", f"key '{key}'",
                message)
    assert " --" not in err, "a flag the user never typed"


def test_a_binary_spec_file_is_refused(tmp_path, fails):
    (tmp_path / "spec.toml").write_bytes(bytes(range(256)))
    fails(["run", tmp_path / "spec.toml", "--out", tmp_path / "runs"], "is not a text file")


class _SignalledWhileCollected:
    """Sends SIGTERM from ``__del__``: the handler runs there, and its raise is ignored."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_where_python_ignores_exceptions_still_ends_as_terminated(monkeypatch, capsys):
    """SIGTERM's handler can run inside an at-fork callback or a ``__del__``, where Python
    ignores the exception it raises (seen in CI: a worker pool starting while ``kill`` hit the
    process group). The failure that follows is SIGTERM's doing: one line, exit status 143."""
    import densevis.cli.report as report_command

    def run(args):
        _SignalledWhileCollected()
        raise RuntimeError("a process in the process pool was terminated abruptly")

    monkeypatch.setattr(report_command, "run", run)
    assert main(["report", "somewhere"]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "terminated" in err, err
    assert "Exception ignored" not in err and "Traceback" not in err, err


def test_sigterm_lost_in_a_callback_is_raised_again_where_the_program_is(monkeypatch, capsys):
    """The same, but nothing fails after it: the program must still stop (it went on drawing
    500,000 images when SIGTERM's Terminated was lost in a weakref callback)."""
    import densevis.cli.report as report_command

    def run(args):
        _SignalledWhileCollected()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # work that would go on
            sum(range(1000))
        return 0

    monkeypatch.setattr(report_command, "run", run)
    started = time.monotonic()
    assert main(["report", "somewhere"]) == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "terminated" in err and "Exception ignored" not in err, err
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
