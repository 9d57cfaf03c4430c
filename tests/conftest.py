"""Shared session fixtures: tiny probe sets (64 px) and one tiny run (``densevis run`` of
:data:`TINY`, two replicates: about a minute), each made once per test session."""

from __future__ import annotations

import pytest
import torch

from densevis.experiment import load_spec, run_experiment
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


#: The tiny run's spec: every stage of a run, two replicates, on 64 px images.
TINY = """
name = "tiny"
[data]
size = 64
train = 320
val = 96
images_per_set = 16
pair_scenes = 2
[model]
epochs = 1
replicates = 2
[probes]
sets = ["base", "lines_only", "large_squares", "small_circles", "circles_only", "pairs"]
[saliency]
methods = ["vanilla", "guided", "gradcam", "guided_gradcam"]
layers = ["conv0", "denseblock4"]
[analysis.sanity]
methods = ["vanilla", "gradcam"]
images = 4
data_randomization_epochs = 1
[[hypotheses]]
name = "localizes_square"
family = "localization"
[[hypotheses]]
name = "edge_detector"
family = "cues"
[[hypotheses]]
name = "small_object_detector"
family = "cues"
[[hypotheses]]
name = "passes_randomization"
family = "sanity"
[[hypotheses]]
name = "mass_on_square"
set = "base"
metric = "relevance_mass"
threshold = 0.0
methods = ["vanilla"]
[outputs]
panels_per_set = 1
"""


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory):
    """The file of :data:`TINY`."""
    path = tmp_path_factory.mktemp("spec") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_spec, tmp_path_factory):
    """The run folder of :data:`TINY` (its output folder, the parent, holds the cache; some
    tests add runs there: use this folder, not the newest)."""
    out = tmp_path_factory.mktemp("runs")
    return run_experiment(load_spec(tiny_spec), out, progress=False, echo=lambda _: None)


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
