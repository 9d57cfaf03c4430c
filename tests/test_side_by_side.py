"""Replicates' work side by side (a forked process each, one torch thread): the pool helper
(:mod:`probes.pool`) and the run's stages (:func:`densevis.experiment.steps.side_by_side`), whose
numbers must not depend on how many models ran at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import pytest
import torch

from densevis.errors import DensevisError
from densevis.experiment import load_spec, steps
from densevis.experiment.runner import Runner
from densevis.maps import MapsFile
from probes.pool import call_in_processes


def test_calls_run_in_other_processes_and_return_in_order():
    results = call_in_processes([lambda k=k: (k, os.getpid()) for k in range(4)], workers=2)
    assert [k for k, _ in results] == [0, 1, 2, 3]
    assert os.getpid() not in {pid for _, pid in results}


def test_one_worker_or_one_call_runs_here():
    assert call_in_processes([os.getpid, os.getpid], workers=1) == [os.getpid()] * 2
    assert call_in_processes([os.getpid], workers=4) == [os.getpid()]


def test_a_call_inside_a_worker_runs_its_calls_in_turn():
    def nested():
        return call_in_processes([os.getpid, os.getpid], workers=2)

    inner = call_in_processes([nested, nested], workers=2)
    assert all(len(set(pids)) == 1 for pids in inner)  # each worker ran both itself


def test_the_first_error_stops_the_others_and_keeps_its_message(tmp_path):
    started = tmp_path / "sleeper"

    def sleeper():
        started.write_text(str(os.getpid()))
        time.sleep(600)

    def failing():
        while not started.exists():
            time.sleep(0.01)
        raise DensevisError("must be positive (got 0)", parameter="n")

    begin = time.monotonic()
    with pytest.raises(DensevisError) as raised:
        call_in_processes([sleeper, failing], workers=2)
    assert time.monotonic() - begin < 60, "the error waited for the sleeping call"
    assert str(raised.value) == "n must be positive (got 0)" and raised.value.parameter == "n"
    pid = int(started.read_text())
    assert _gone(pid), f"worker {pid} still runs"  # killed, not left sleeping


def _gone(pid: int, seconds: float = 10.0) -> bool:
    """Whether process ``pid`` ends within ``seconds``."""
    for _ in range(int(seconds / 0.05)):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _trained_and_explained(spec_path, out, apart: bool, monkeypatch) -> Runner:
    monkeypatch.setattr(steps, "runs_apart", lambda runner, device: apart)
    runner = Runner(load_spec(spec_path), out, progress=False, echo=lambda _: None)
    for stage in (steps.generate, steps.train, steps.explain):
        stage(runner)
    return runner


def test_models_trained_side_by_side_equal_models_trained_in_turn(tiny_spec, tmp_path,
                                                                  monkeypatch):
    """The tiny spec's two replicates, trained and explained in two processes at once and
    then one after the other here: the same weights and the same maps, bit for bit."""
    apart = _trained_and_explained(tiny_spec, tmp_path / "apart", True, monkeypatch)
    in_turn = _trained_and_explained(tiny_spec, tmp_path / "in_turn", False, monkeypatch)
    assert len(apart.stages.replicates) == 2
    for one, other in zip(apart.stages.replicates, in_turn.stages.replicates):
        weights = [torch.load(r.checkpoint, weights_only=False)["state_dict"]
                   for r in (one, other)]
        assert weights[0].keys() == weights[1].keys()
        assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
        for name in ("base", "pairs"):
            with MapsFile(one.maps[name]) as a, MapsFile(other.maps[name]) as b:
                for method in a.methods:
                    for layer in a.layers(method) or [None]:
                        assert (a.read(method, layer) == b.read(method, layer)).all()
    first = [torch.load(r.checkpoint, weights_only=False)["state_dict"]
             for r in apart.stages.replicates]
    assert not all(torch.equal(first[0][k], first[1][k]) for k in first[0]), \
        "the two replicates should be different models"


def test_threads_is_checked_and_more_than_one_runs_in_turn(tiny_spec, tmp_path):
    text = tiny_spec.read_text().replace("[model]\n", "[model]\nthreads = 0\n")
    (tmp_path / "zero.toml").write_text(text)
    with pytest.raises(DensevisError, match="model.threads"):
        load_spec(tmp_path / "zero.toml")
    (tmp_path / "two.toml").write_text(text.replace("threads = 0", "threads = 2"))
    runner = Runner(load_spec(tmp_path / "two.toml"), tmp_path, progress=False)
    assert not steps.runs_apart(runner, "cpu")
    assert steps.side_by_side(runner, [torch.get_num_threads, os.getpid], "cpu") == \
        [2, os.getpid()]


def test_figures_drawn_in_processes_equal_those_drawn_here(tiny_run, monkeypatch):
    from densevis.report import plots, sections

    behaviour, metrics = (pd.read_csv(tiny_run / f"{name}.csv") for name in ("behaviour",
                                                                             "metrics"))
    metrics = metrics[metrics["model"] == metrics["model"].iloc[0]]
    calls = {"behaviour": partial(plots.behaviour_bars, behaviour),
             ("localization", "pointing_game"): partial(plots.localization_by_layer, metrics,
                                                        "pointing_game")}
    apart = sections.drawn(calls)
    monkeypatch.setattr(sections, "default_workers", lambda: 1)
    assert sections.drawn(calls) == apart
    assert all(png.startswith(b"\x89PNG") for png in apart.values())


def test_sigterm_while_models_train_side_by_side_stops_every_process(tiny_spec, tmp_path):
    """As ``timeout`` or ``kill`` of the main process alone: it kills its training workers,
    says so in one line, exits 143, and leaves no trained model and no run folder."""
    spec = tmp_path / "long.toml"
    spec.write_text(tiny_spec.read_text().replace("epochs = 1\n", "epochs = 500\n"))
    process = subprocess.Popen([sys.executable, "-m", "densevis", "run", str(spec), "--out",
                                str(tmp_path / "out")], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in process.stdout:  # the workers fork right after this line
        if line.startswith("  training model"):
            break
    time.sleep(2)
    workers = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True,
                             text=True).stdout.split()
    assert len(workers) >= 2, "the two models should train in processes of their own"
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.count("\n") == 1 and "terminated" in err and "Traceback" not in err, err
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid), 0)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [".cache"]
    assert not list((tmp_path / "out" / ".cache" / "models").glob("*.pt"))


STOPPED_WHILE_SENDING = """
import sys, time
from probes.pool import new_pool, stop_pool
def big(_):
    return b"x" * 100_000_000
pool = new_pool(2)
futures = [pool.submit(big, k) for k in range(4)]
time.sleep(float(sys.argv[1]))
stop_pool(pool)
"""


@pytest.mark.parametrize("delay", [0.4, 0.8])
def test_a_pool_stopped_while_its_workers_send_results_lets_the_process_exit(tmp_path, delay):
    """A worker killed in the middle of sending its result must not leave the pool's reader
    thread waiting for the rest of the message: the process exits (it hung at exit, as
    ``generate --workers 2`` did after SIGTERM in CI)."""
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED_WHILE_SENDING)
    done = subprocess.run([sys.executable, str(script), str(delay)], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr


def test_a_worker_never_outlives_its_main_process(tmp_path):
    """The main process killed outright (``kill -9``): its workers end with it instead of
    waiting on the pool's queue forever (as one forked after a group's SIGTERM did)."""
    script = tmp_path / "main.py"
    script.write_text("import os, time\nfrom probes.pool import new_pool\n"
                      "pool = new_pool(2)\n"
                      "futures = [pool.submit(time.sleep, 600) for _ in range(2)]\n"
                      "time.sleep(1)\nprint(*pool._processes, flush=True)\ntime.sleep(600)\n")
    main = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(pid) for pid in main.stdout.readline().split()]
    assert len(workers) == 2
    main.kill()
    main.wait(timeout=60)
    for pid in workers:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"worker {pid} outlived its main process")
