"""Shared session fixtures: tiny probe sets (64 px) written once per test session."""

from __future__ import annotations

import pytest
import torch

from probes import write_probe_set

TINY_SIZE = 64

# One thread: tiny convolutions gain nothing from a second and lose much when cores are busy.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def probe_dir(tmp_path_factory):
    """A folder of small probe files: ``<set>.h5`` for every registered set, size 64."""
    folder = tmp_path_factory.mktemp("probes")
    counts = {"base": 96, "lines_only": 16, "large_squares": 16, "small_circles": 16,
              "circles_only": 16, "squares_only": 16, "pairs": 4}
    for seed, (name, n) in enumerate(counts.items()):
        write_probe_set(folder / f"{name}.h5", name, n=n, seed=seed, size=TINY_SIZE, workers=1)
    return folder


@pytest.fixture(scope="session")
def base_file(probe_dir):
    return probe_dir / "base.h5"


@pytest.fixture
def one_line_error(capsys):
    """``check(command, *fragments)``: the densevis ``command`` just failed with one line on
    stderr, ``densevis <command>: error: ...``, holding every fragment."""
    def check(command: str, *fragments: str) -> None:
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"densevis {command}: error:"), err
        for fragment in fragments:
            assert fragment in err, err
    return check
