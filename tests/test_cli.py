"""The command line as a whole: help for every command, the one-line error convention, run."""

from __future__ import annotations

import subprocess
import sys

import pytest

import densevis.cli.run as run_command
from densevis.cli import COMMANDS, main
from probes import ProbeSet


def test_every_command_has_help(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "usage: densevis " + command in capsys.readouterr().out


def test_console_script_usage_error_is_one_line_exit_2():
    done = subprocess.run([sys.executable, "-m", "densevis", "generate", "--n", "many"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "invalid int value" in done.stderr


def test_run_generates_the_default_sets_into_a_new_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_command, "DEFAULT_SETS", (("train", "base", 8), ("pairs", "pairs", 1)))
    assert main(["run", "--out", str(tmp_path), "--size", "64"]) == 0
    assert main(["run", "--out", str(tmp_path), "--size", "64"]) == 0
    runs = sorted(tmp_path.iterdir())
    assert len(runs) == 2, "a second run must not overwrite the first"
    for run_dir in runs:
        assert len(ProbeSet(run_dir / "data" / "train.h5")) == 8
        assert ProbeSet(run_dir / "data" / "pairs.h5").name == "pairs"
