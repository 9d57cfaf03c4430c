"""The command line as a whole: help for every command, the one-line error convention, run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from densevis.cli import COMMANDS, main


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
