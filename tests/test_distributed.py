"""Sharded runs on torch.distributed: ranks and shards, 2 gloo processes equal 1 process (explain
under torchrun, analyze), a failing rank (bad input, a crash) and the rerun that resumes."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from densevis.cli import main
from densevis.distributed import (RankFailure, RankInputError, World, _failure, agree,
                                  exit_status, init_process_group_for, is_main, rank_device,
                                  shard_ranges, world_from_env)
from densevis.errors import DensevisError
from densevis.maps import MapsFile
from densevis.model import build_model, save_checkpoint
from densevis.saliency.files import explain_file
from densevis.shards import LOCAL_ATTRS, merge_maps, shard_folder, shard_path
from probes import write_probe_set

BATCH = 8
METHODS = ["--methods", "vanilla,guided,gradcam,guided_gradcam,smoothgrad",
           "--layers", "denseblock4,transition1", "--param", "smoothgrad.samples=2"]
TIMEOUT_S = 180
#: ``torchrun --standalone --nproc_per_node 2`` (the same entry point, found without PATH)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]

# One rank per process, as torchrun starts them; a test may break the engine on one rank
# (DENSEVIS_TEST_FAULT = {"rank": r, "message": ...}) to stand for a crash there.
LAUNCHER = """
import json, os, sys
fault = json.loads(os.environ.get("DENSEVIS_TEST_FAULT", "{}"))
if fault.get("rank") == int(os.environ["RANK"]):
    from densevis.saliency.engine import SaliencyEngine
    def broken(self, *args, **kwargs):
        raise RuntimeError(fault["message"])
    SaliencyEngine.submit = broken
from densevis.cli import main
sys.exit(main(sys.argv[1:]))
"""


def rank_env(**extra) -> dict:
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(argv: list[str], world: int = 2, fault: dict | None = None) -> list:
    """Run ``densevis ARGV`` as ``world`` ranks (gloo on localhost); (status, stdout, stderr)
    of each rank."""
    port = str(free_port())
    processes = []
    for rank in range(world):
        env = rank_env(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                       LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                       DENSEVIS_TEST_FAULT=json.dumps(fault or {}),
                       DENSEVIS_DIST_TIMEOUT="120")
        processes.append(subprocess.Popen([sys.executable, "-c", LAUNCHER, *argv], env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True))
    try:
        results = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=TIMEOUT_S)
            results.append((process.returncode, stdout, stderr))
        return results
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()


def explain_args(files, data, out, device: str = "cpu") -> list[str]:
    return ["explain", "--checkpoint", str(files / "model.pt"), "--data", str(data),
            "--out", str(out), "--batch-size", str(BATCH), "--device", device, *METHODS]


def assert_same_maps(path, reference, world_size: int | None = None) -> None:
    with MapsFile(path) as got, MapsFile(reference) as want:
        assert got.keys == want.keys
        for key in want.keys:
            np.testing.assert_array_equal(got.read(*key), want.read(*key), err_msg=str(key))
        for name in ("logits", "targets", "index"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
        assert {k: v for k, v in got.attrs.items() if k != "world_size"} == want.attrs
        assert got.attrs.get("world_size") == world_size
    with h5py.File(path) as got, h5py.File(reference) as want:  # same layout, chunks too
        assert got["maps/vanilla"].chunks == want["maps/vanilla"].chunks


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    write_probe_set(folder / "base.h5", "base", n=20, seed=3, size=64, workers=1)
    write_probe_set(folder / "pairs.h5", "pairs", n=2, seed=4, size=64, workers=1)
    torch.manual_seed(0)
    save_checkpoint(folder / "model.pt", build_model("original"), "original", image_size=64)
    return folder


@pytest.fixture(scope="module")
def single(files):
    """One-process maps of both sets: what every sharded run must reproduce."""
    for name in ("base", "pairs"):
        assert main(explain_args(files, files / f"{name}.h5", files / f"{name}-maps.h5")) == 0
    return {name: files / f"{name}-maps.h5" for name in ("base", "pairs")}


@pytest.fixture(autouse=True)
def plain_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


# -- ranks, devices, shards ----------------------------------------------------------------

def test_world_comes_from_torchrun_variables():
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    assert world_from_env({"RANK": "2", "WORLD_SIZE": "4"}).local_rank == 2
    for env, message in [({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
                         ({"RANK": "2", "WORLD_SIZE": "2"}, "need 0 <= RANK < WORLD_SIZE")]:
        with pytest.raises(DensevisError, match=message):
            world_from_env(env)


def test_each_rank_gets_its_device():
    assert rank_device("cpu", World(1, 2, 1)) == torch.device("cpu")
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        assert rank_device("auto", World(0, 2, count - 1)) == torch.device("cuda", count - 1)
        with pytest.raises(DensevisError, match="has no GPU"):
            rank_device("cuda", World(0, 2, count))
    else:
        assert rank_device("auto", World(1, 2, 1)) == torch.device("cpu")
        with pytest.raises(DensevisError, match="CUDA is not available"):
            rank_device("cuda", World(1, 2, 1))


@pytest.mark.parametrize("count", [0, 1, 7, 8, 20, 33, 100])
@pytest.mark.parametrize("parts", [1, 2, 3, 5])
@pytest.mark.parametrize("align", [1, 8])
def test_shards_cover_the_rows_in_order_aligned_to_batches(count, parts, align):
    ranges = shard_ranges(count, parts, align)
    assert len(ranges) == parts and ranges[0][0] == 0 and ranges[-1][1] == count
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(start % align == 0 or start == count for start, _ in ranges)
    blocks = [-(-(stop - start) // align) for start, stop in ranges]
    assert max(blocks) - min(blocks) <= 1


def test_a_failure_is_one_message_with_the_rank_and_the_exit_status():
    world = World(1, 4, 1)
    same = _failure("setup", [(r, "input", "output x exists") for r in range(4)], world, "")
    assert isinstance(same, RankInputError) and str(same) == "output x exists"
    assert same.exit_code == 2 and not same.reporter
    mixed = _failure("explain", [(2, "input", "bad"), (3, "bug", "RuntimeError: boom")],
                     World(0, 4, 0), "shards kept")
    assert type(mixed) is RankFailure and mixed.exit_code == 1 and mixed.reporter
    assert str(mixed) == "explain failed on rank 2 of 4: bad (also on rank 3); shards kept"


def test_a_command_reports_a_rank_failure_once_with_its_exit_status(capsys):
    def failing(reporter: bool):
        def work():
            exc = RankInputError("bad input on rank 1")
            exc.reporter = reporter
            raise exc
        return work

    assert exit_status("explain", lambda: None) == 0 and is_main()
    assert exit_status("explain", failing(reporter=False)) == 2
    assert capsys.readouterr().err == ""  # another rank prints it
    assert exit_status("explain", failing(reporter=True)) == 2
    assert capsys.readouterr().err == "densevis explain: error: bad input on rank 1\n"


def test_a_plain_run_joins_no_process_group_but_checks_the_device():
    init_process_group_for("cpu")  # a no-op without torchrun
    assert not torch.distributed.is_initialized()
    with pytest.raises(DensevisError, match="tpu"):
        init_process_group_for("tpu")


def test_a_plain_run_agrees_with_itself():
    def bad_input():
        raise DensevisError("raw")

    assert agree("step", lambda: 5) == [5]
    with pytest.raises(DensevisError, match="raw") as caught:  # unchanged, as without sharding
        agree("step", bad_input)
    assert not isinstance(caught.value, RankFailure)


def test_shards_of_explain_file_merge_into_the_one_process_file(files, single, tmp_path):
    out = tmp_path / "maps.h5"
    ranges = shard_ranges(20, 2, BATCH)
    options = dict(methods="vanilla,guided,gradcam,guided_gradcam,smoothgrad",
                   layers="denseblock4,transition1", params={"smoothgrad": {"samples": 2}},
                   batch_size=BATCH, device="cpu", progress=False)
    for rows in ranges:
        shard_folder(out).mkdir(exist_ok=True)
        explain_file(files / "model.pt", files / "base.h5", shard_path(out, rows), rows=rows,
                     **options)
    with MapsFile(single["base"]) as reference:
        attrs = {**reference.attrs, "world_size": 2}
    shards = [(shard_path(out, rows), rows) for rows in ranges]
    merge_maps(shards, out, 20, {k: v for k, v in attrs.items()
                                 if k not in ("format", "image_size")})
    assert_same_maps(out, single["base"], world_size=2)
    with pytest.raises(DensevisError, match="does not continue"):  # a gap: nothing written
        merge_maps(shards[1:], tmp_path / "gap.h5", 20, attrs)
    assert not (tmp_path / "gap.h5").exists()
    with pytest.raises(DensevisError, match="not a non-empty range"):
        explain_file(files / "model.pt", files / "base.h5", tmp_path / "x.h5", rows=(5, 99),
                     **options)
    assert not (tmp_path / "x.h5").exists()


# -- several processes ---------------------------------------------------------------------

def test_torchrun_explain_on_two_processes_equals_one_process(files, single, tmp_path):
    out = tmp_path / "maps.h5"
    done = subprocess.run([*TORCHRUN, "-m", "densevis",
                           *explain_args(files, files / "base.h5", out)],
                          env=rank_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1 and "(2 processes)" in done.stdout  # rank 0 only
    assert_same_maps(out, single["base"], world_size=2)
    assert not shard_folder(out).exists()


def test_analyze_on_two_processes_equals_one_process(files, single, tmp_path):
    common = ["--maps", str(single["pairs"]), "--data", str(files / "base.h5"),
              "--data", str(files / "pairs.h5"), "--batch-size", "4", "--device", "cpu"]
    assert main(["analyze", *common, "--out", str(tmp_path / "one")]) == 0
    results = launch(["analyze", *common, "--out", str(tmp_path / "two")])
    assert [status for status, _, _ in results] == [0, 0], results[0][2][-3000:]
    assert "wrote" in results[0][1] and not results[1][1].strip()  # rank 0 writes, once
    for name in ("metrics", "summary", "hypotheses"):  # pair deltas span both shards
        assert (tmp_path / "two" / f"{name}.csv").read_bytes() == \
            (tmp_path / "one" / f"{name}.csv").read_bytes(), name


def test_bad_input_on_one_rank_stops_every_rank_with_one_line(files, tmp_path):
    data = tmp_path / "base.h5"
    shutil.copy(files / "base.h5", data)
    with h5py.File(data, "r+") as h5:  # one chunk per batch: rank 1 alone reads the last
        images = h5["images"][:]
        del h5["images"]
        h5.create_dataset("images", data=images, chunks=(BATCH, *images.shape[1:]),
                          compression="gzip")
        offset = h5["images"].id.get_chunk_info_by_coord((16, 0, 0)).byte_offset
    with open(data, "r+b") as handle:  # a damaged chunk in rank 1's rows only
        handle.seek(offset + 8)
        handle.write(b"\xff" * 64)
    out = tmp_path / "maps.h5"
    results = launch(explain_args(files, data, out))
    assert [status for status, _, _ in results] == [2, 2]
    (_, _, told), (_, _, quiet) = results
    lines = [line for line in told.splitlines() if "densevis explain" in line]
    assert len(lines) == 1 and "Traceback" not in told + quiet, told + quiet
    assert lines[0].startswith("densevis explain: error: explain failed on rank 1 of 2: "
                               f"{data}: cannot read images")
    assert "no merged file was written" in lines[0] and "resumes" in lines[0]
    assert "densevis explain" not in quiet
    assert not out.exists()
    ranges = shard_ranges(20, 2, BATCH)
    assert sorted(p.name for p in shard_folder(out).iterdir()) == \
        [shard_path(out, ranges[0]).name]  # rank 0's finished shard, no temporary files


def test_a_crashed_rank_leaves_its_peers_shards_and_a_rerun_resumes(files, single, tmp_path):
    out = tmp_path / "maps.h5"
    argv = explain_args(files, files / "base.h5", out)
    results = launch(argv, fault={"rank": 1, "message": "injected failure"})
    assert [status for status, _, _ in results] == [1, 1]
    (_, _, told), (_, _, crashed) = results
    assert "RuntimeError: injected failure" in crashed  # the crash keeps its traceback there
    assert told.strip().splitlines()[-1].startswith(
        "densevis explain: error: explain failed on rank 1 of 2: RuntimeError: injected "
        "failure; no merged file was written; finished shards are kept in")
    assert not out.exists()
    kept = shard_path(out, shard_ranges(20, 2, BATCH)[0])
    assert [p.name for p in shard_folder(out).iterdir()] == [kept.name]
    # the rerun must not compute rank 0's shard again: its engine would fail if called
    results = launch(argv, fault={"rank": 0, "message": "rank 0 computed again"})
    assert [status for status, _, _ in results] == [0, 0], results[0][2][-3000:]
    assert "1 of 2 shards reused" in results[0][2]
    assert_same_maps(out, single["base"], world_size=2)
    assert not shard_folder(out).exists()


def test_a_shard_of_other_settings_is_computed_again(files, tmp_path):
    out = tmp_path / "maps.h5"
    rows = (0, 8)
    shard_folder(out).mkdir()
    explain_file(files / "model.pt", files / "base.h5", shard_path(out, rows), rows=rows,
                 methods="vanilla", device="cpu", batch_size=BATCH, progress=False)
    from densevis.saliency.files import prepare_explain
    from densevis.shards import finished

    job = prepare_explain(files / "model.pt", files / "base.h5", methods="vanilla",
                          device="cpu", batch_size=BATCH)
    with MapsFile(shard_path(out, rows)) as shard:
        assert shard.attrs["shard_rows"] == [0, 8]
    assert finished(shard_path(out, rows), job.attrs, rows)
    assert not finished(shard_path(out, rows), job.attrs, (0, 16))
    other = prepare_explain(files / "model.pt", files / "base.h5", methods="vanilla,guided",
                            device="cpu", batch_size=BATCH)
    assert not finished(shard_path(out, rows), other.attrs, rows)
    moved = {**job.attrs, "checkpoint": "elsewhere/model.pt", "device": "cpu"}
    assert finished(shard_path(out, rows), moved, rows)  # paths are not settings
    assert set(LOCAL_ATTRS) >= {"checkpoint", "probe", "device"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the NCCL "
                    "process group and cuda:N ranks are checked by the device check")
def test_two_ranks_on_cuda_equal_one_cuda_process(files, tmp_path):
    # one GPU is enough: both ranks on cuda:0 (NCCL is initialized; statuses go through gloo)
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    assert main(explain_args(files, files / "base.h5", one, device="cuda:0")) == 0
    done = subprocess.run([*TORCHRUN, "-m", "densevis",
                           *explain_args(files, files / "base.h5", two, device="cuda:0")],
                          env=rank_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    with MapsFile(one) as a, MapsFile(two) as b:
        assert a.keys == b.keys and b.attrs["world_size"] == 2
        for key in a.keys:
            want, got = a.read(*key), b.read(*key)
            scale = max(float(np.abs(want).max()), 1e-12)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale, err_msg=str(key))
