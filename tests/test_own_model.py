"""Any model: the three ways to name one, keyword arguments, weights files, factory checkpoints,
and train -> evaluate -> explain of a model of one's own on the command line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from densevis.cli import main
from densevis.errors import DensevisError
from densevis.maps import MapsFile
from densevis.model import (ModelSource, build_model, check_model_fits, load_checkpoint,
                            load_model, resolve_model, save_checkpoint)
from probes import file_sha256, write_probe_set

REPO = Path(__file__).resolve().parents[1]
OWN_MODEL = REPO / "experiments" / "own_model"
FACTORY = "small_resnet:small_resnet"
SIZE = 32
HAS_SAFETENSORS = importlib.util.find_spec("safetensors") is not None

# Factories of the bad inputs, imported from their folder (tmp_path) by the tests below.
BAD_FACTORIES = '''
import torch
from torch import nn

def ten_classes():
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(10))

def pair_output():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(2))
        def forward(self, x):
            return self.head(x), x
    return Pair()

def not_a_module():
    return "a model"

def breaks():
    raise RuntimeError("no GPU here")

NOT_CALLABLE = 3
'''


@pytest.fixture
def own_model_path(monkeypatch):
    """experiments/own_model on sys.path, as PYTHONPATH puts it for the command line."""
    monkeypatch.syspath_prepend(str(OWN_MODEL))


@pytest.fixture(scope="session")
def bad_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("factories")
    (folder / "bad_factories.py").write_text(BAD_FACTORIES)
    return folder


@pytest.fixture(scope="session")
def tiny_sets(tmp_path_factory):
    """``(train, val)``: 64 base images of 32 px each."""
    folder = tmp_path_factory.mktemp("own_data")
    paths = []
    for seed, name in enumerate(("train", "val")):
        paths.append(write_probe_set(folder / f"{name}.h5", "base", n=64, seed=seed, size=SIZE,
                                     workers=1))
    return tuple(paths)


# ------------------------------------------------------------------------------------ naming
def test_the_three_ways_to_name_a_model():
    config, classifier = resolve_model("original"), resolve_model("resnet18")
    own = resolve_model(FACTORY, {"width": "4"}, folder=OWN_MODEL)
    assert (config.arch, config.factory, config.config["growth_rate"]) == ("DenseNet", "", 8)
    assert (classifier.arch, classifier.config) == ("resnet18",
                                                   {"num_classes": 2, "weights": None})
    assert (own.arch, own.factory, own.config) == ("", FACTORY, {"width": 4})  # text -> int
    model = own.build()
    assert type(model).__name__ == "SmallResNet" and model.block1.conv1.out_channels == 4
    assert own.record() == {"factory": FACTORY, "name": FACTORY, "config": {"width": 4}}
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 2)


def test_model_args_are_read_as_the_builder_declares_them():
    assert resolve_model("original", {"growth_rate": "12"}).config["growth_rate"] == 12
    assert resolve_model("original", {"growth_rate": 12}).config["growth_rate"] == 12
    with pytest.raises(DensevisError, match="growth_rate='big' is not an int"):
        resolve_model("original", {"growth_rate": "big"})
    with pytest.raises(DensevisError, match="'widht' is not an argument of small_resnet:small"
                                            "_resnet; its arguments: width, num_classes"):
        resolve_model(FACTORY, {"widht": "4"}, folder=OWN_MODEL)


@pytest.mark.parametrize("name, message", [
    ("no_such_module_xyz:net", "module 'no_such_module_xyz' failed to import "
                               "(ModuleNotFoundError"),
    ("bad_factories:missing", "module bad_factories has no 'missing'; its callables: breaks, "),
    ("bad_factories:NOT_CALLABLE", "is an int, not a callable"),
    ("bad_factories:", "is not a factory; write package.module:callable"),
])
def test_factories_that_cannot_be_imported_say_why(bad_folder, name, message):
    with pytest.raises(DensevisError, match=message.replace("(", r"\(")) as error:
        resolve_model(name, folder=bad_folder)
    assert error.value.parameter == "model"


@pytest.mark.parametrize("name, message", [
    ("bad_factories:ten_classes", "gives an output of shape (2, 10) for 2 images of 32 px; "
                                  "densevis needs 2 logits per image, (N, 2)"),
    ("bad_factories:pair_output", "returns a tuple, not a tensor of logits"),
    ("bad_factories:not_a_module", "returned a str, not a torch.nn.Module"),
    ("bad_factories:breaks", "failed to build a model from arguments {} (RuntimeError: no GPU "
                             "here)"),
])
def test_models_that_do_not_give_two_logits_say_what_is_wrong(bad_folder, name, message):
    with pytest.raises(DensevisError) as error:
        choice = resolve_model(name, folder=bad_folder)
        check_model_fits(choice.build(), choice.name, SIZE, "cpu")
    assert message in str(error.value) and error.value.parameter == "model"


def test_a_model_too_deep_for_the_images_says_so():
    with pytest.raises(DensevisError, match=r"original cannot classify 8-px images \(RuntimeError: "
                                            r".*\); use larger images or another model"):
        check_model_fits(build_model("original"), "original", 8, "cpu")


# ----------------------------------------------------------------------------------- weights
def _resnet_state(path: Path, seed: int = 0) -> tuple[nn.Module, Path]:
    torch.manual_seed(seed)
    model = build_model("resnet18")
    torch.save(model.state_dict(), path)  # a state dict as saved anywhere
    return model, path


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_a_state_dict_loads_plain_or_under_its_key(tmp_path, wrap):
    torch.manual_seed(1)
    reference = build_model("resnet18")
    state = reference.state_dict()
    torch.save(state if wrap is None else {wrap: state, "epoch": 3}, tmp_path / "w.pt")
    model, record = load_model(ModelSource(name="resnet18", weights=tmp_path / "w.pt"))
    assert record["arch"] == "resnet18" and record["image_size"] is None
    assert not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.skipif(not HAS_SAFETENSORS, reason="safetensors is not installed "
                                                "(pip install safetensors)")
def test_a_safetensors_file_loads(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    reference = resolve_model(FACTORY, {"width": 4}, OWN_MODEL).build()
    save_file(reference.state_dict(), tmp_path / "w.safetensors")
    source = ModelSource(name=FACTORY, args={"width": "4"}, weights=tmp_path / "w.safetensors",
                         folder=OWN_MODEL)
    model, record = load_model(source)
    assert record["factory"] == FACTORY and record["config"] == {"width": 4}
    assert all(torch.equal(v, model.state_dict()[k])
               for k, v in reference.state_dict().items())


def test_safetensors_without_its_package_says_how_to_install_it(tmp_path, monkeypatch):
    (tmp_path / "w.safetensors").write_bytes(b"\0" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)  # importing it now fails
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(DensevisError, match="needs the safetensors package: pip install "
                                            "safetensors"):
        load_model(ModelSource(name="resnet18", weights=tmp_path / "w.safetensors"))


def test_weights_that_are_not_a_state_dict_are_refused(tmp_path):
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(DensevisError, match="holds a list, not a state dict"):
        load_model(ModelSource(name="resnet18", weights=tmp_path / "list.pt"))
    torch.save(build_model("original"), tmp_path / "pickled.pt")  # the module, not its state
    with pytest.raises(DensevisError, match="holds more than plain data .*torchvision"):
        load_model(ModelSource(name="original", weights=tmp_path / "pickled.pt"))


def test_weights_of_another_model_give_the_mismatch(tmp_path):
    _, path = _resnet_state(tmp_path / "resnet.pt")
    with pytest.raises(DensevisError, match=r"resnet.pt does not fit model original \(\d+ "
                                            r"tensors missing, e.g. features.conv0.weight"):
        load_model(ModelSource(name="original", weights=path))


def test_non_finite_weights_are_refused(tmp_path):
    model, path = _resnet_state(tmp_path / "resnet.pt")
    state = model.state_dict()
    state["fc.weight"][0, 0] = float("nan")
    torch.save(state, path)
    with pytest.raises(DensevisError, match=r"non-finite weights \(NaN or infinite in "
                                            r"fc.weight\); densevis refuses them"):
        load_model(ModelSource(name="resnet18", weights=path))


# ----------------------------------------------------------------------- factory checkpoints
def test_a_factory_checkpoint_loads_only_when_its_factory_is_named(tmp_path):
    choice = resolve_model(FACTORY, {"width": 4}, OWN_MODEL)
    path = save_checkpoint(tmp_path / "own.pt", choice.build(), choice, SIZE)
    saved = torch.load(path, weights_only=True)
    assert saved["factory"] == FACTORY and "arch" not in saved
    assert saved["config"] == {"width": 4}
    with pytest.raises(DensevisError, match=r"must name 'small_resnet:small_resnet', the factory "
                                            r"of checkpoint .*own.pt, to load it \(got none\)"):
        load_checkpoint(path)
    with pytest.raises(DensevisError, match="got other:factory"):
        load_checkpoint(path, named="other:factory")
    model, checkpoint = load_checkpoint(path, named=FACTORY, folder=OWN_MODEL)
    assert type(model).__name__ == "SmallResNet" and checkpoint["image_size"] == SIZE
    saved["config"]["width"] = 8  # as if the factory now built another model
    torch.save(saved, path)
    with pytest.raises(DensevisError, match="do not fit its factory small_resnet:small_resnet "
                                            r"with its config \(.*\); its factory's code changed"):
        load_checkpoint(path, named=FACTORY, folder=OWN_MODEL)


def test_a_checkpoint_named_as_another_model_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", build_model("original"), "original", SIZE)
    assert load_checkpoint(path, named="original")[1]["arch"] == "DenseNet"
    with pytest.raises(DensevisError, match="names 'resnet18', but checkpoint .* holds "
                                            "'original'"):
        load_checkpoint(path, named="resnet18")


# ------------------------------------------------------------------------------ command line
@pytest.fixture(scope="session")
def own_run(tiny_sets, tmp_path_factory):
    """train -> evaluate -> explain of the small residual CNN on the command line."""
    folder = tmp_path_factory.mktemp("own_run")
    train, val = map(str, tiny_sets)
    sys.path.insert(0, str(OWN_MODEL))
    try:
        codes = [main(["train", "--data", train, "--val", val, "--model", FACTORY,
                       "--model-arg", "width=4", "--epochs", "1", "--batch-size", "16",
                       "--recalibrate", "16", "--device", "cpu", "--threads", "1", "--quiet",
                       "--out", str(folder / "own.pt")]),
                 main(["evaluate", "--checkpoint", str(folder / "own.pt"), "--model", FACTORY,
                       "--data", val, "--out", str(folder / "eval.csv"), "--device", "cpu"]),
                 main(["explain", "--checkpoint", str(folder / "own.pt"), "--model", FACTORY,
                       "--data", val, "--layers", "block1,block2", "--device", "cpu",
                       "--out", str(folder / "maps.h5")])]
    finally:
        sys.path.remove(str(OWN_MODEL))
    return folder, codes


def test_train_evaluate_explain_a_model_of_ones_own(own_run, tiny_sets):
    folder, codes = own_run
    assert codes == [0, 0, 0]
    checkpoint = torch.load(folder / "own.pt", weights_only=True)
    assert (checkpoint["factory"], checkpoint["config"]) == (FACTORY, {"width": 4})
    assert checkpoint["train_config"]["model_args"] == {"width": 4}
    assert "accuracy" in (folder / "eval.csv").read_text()
    with MapsFile(folder / "maps.h5") as maps:
        assert list(maps.attrs["layers"]) == ["block1", "block2"]
        assert maps.attrs["checkpoint_sha256"] == file_sha256(folder / "own.pt")
        assert maps.read("gradcam", "block2").shape == (64, SIZE, SIZE)


@pytest.mark.parametrize("command", ["evaluate", "explain"])
def test_a_factory_checkpoint_without_its_model_says_which_flag_to_add(
        own_run, tiny_sets, command, tmp_path, one_line_error):
    folder, _ = own_run
    extra = ["--out", str(tmp_path / "out.h5")] if command == "explain" else []
    assert main([command, "--checkpoint", str(folder / "own.pt"), "--data", str(tiny_sets[1]),
                 *extra]) == 2
    one_line_error(command, "--model must name 'small_resnet:small_resnet', the factory of "
                            "checkpoint")
    assert not (tmp_path / "out.h5").exists()


def test_a_torchvision_state_dict_is_explained_with_model_and_weights(tiny_sets, tmp_path,
                                                                      capsys):
    _, weights = _resnet_state(tmp_path / "resnet18_state.pt")
    data = str(tiny_sets[1])
    assert main(["explain", "--model", "resnet18", "--weights", str(weights), "--data", data,
                 "--methods", "vanilla,gradcam", "--layers", "layer2,layer3", "--device", "cpu",
                 "--out", str(tmp_path / "maps.h5")]) == 0
    with MapsFile(tmp_path / "maps.h5") as maps:
        assert list(maps.attrs["layers"]) == ["layer2", "layer3"]
        assert maps.attrs["checkpoint_sha256"] == file_sha256(weights)
        assert maps.read("vanilla", None).shape == (64, SIZE, SIZE)
    assert main(["evaluate", "--model", "resnet18", "--weights", str(weights), "--data", data,
                 "--device", "cpu"]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["train", "--model", "nope"], "--model 'nope' is unknown"),
    (["train", "--arch", "no_such_module_xyz:net"], "--model 'no_such_module_xyz:net': module "
                                                    "'no_such_module_xyz' failed to import"),
    (["train", "--model", "resnet18", "--model-arg", "num_classes=3"],
     "--model resnet18 gives an output of shape (2, 3)"),
    (["train", "--model", "resnet18", "--model-arg", "wide"], "--model-arg 'wide' is not "
                                                              "KEY=VALUE"),
    (["train", "--model", "original", "--weights", "RESNET"], "--weights RESNET does not fit "
                                                              "model original"),
    (["evaluate", "--model", "original", "--weights", "RESNET"], "--weights RESNET does not fit "
                                                                 "model original"),
    (["evaluate", "--model", "resnet18"], "give --checkpoint MODEL.pt (from 'densevis train'), "
                                          "or --model NAME --weights FILE"),
    (["evaluate", "--checkpoint", "RESNET", "--weights", "RESNET"], "--weights and "
                                                                    "--checkpoint both"),
    (["explain", "--checkpoint", "RESNET", "--model-arg", "a=1"], "--model-arg is for --model "
                                                                  "with --weights"),
])
def test_bad_models_on_the_command_line_exit_2(args, message, tiny_sets, tmp_path,
                                               one_line_error):
    _, weights = _resnet_state(tmp_path / "resnet.pt")
    args = [str(weights) if a == "RESNET" else a for a in args]
    message = message.replace("RESNET", str(weights))
    data = {"train": ["--data", str(tiny_sets[0]), "--val", str(tiny_sets[1]), "--epochs", "1",
                      "--device", "cpu", "--quiet"],
            "evaluate": ["--data", str(tiny_sets[1])],
            "explain": ["--data", str(tiny_sets[1])]}[args[0]]
    out = tmp_path / "out"
    assert main([*args, *data, "--out", str(out)]) == 2
    one_line_error(args[0], message)
    assert not out.exists()


def test_fine_tuning_starts_from_the_weights_and_records_them(tiny_sets, tmp_path, capsys):
    _, weights = _resnet_state(tmp_path / "resnet.pt")
    out = tmp_path / "tuned.pt"
    assert main(["train", "--data", str(tiny_sets[0]), "--val", str(tiny_sets[1]), "--model",
                 "resnet18", "--weights", str(weights), "--epochs", "1", "--lr", "1e-9",
                 "--warmup-epochs", "0", "--recalibrate", "0", "--device", "cpu", "--threads",
                 "1", "--quiet", "--out", str(out)]) == 0
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["initial_weights"]["sha256"] == file_sha256(weights)
    start = torch.load(weights, weights_only=True)
    # a learning rate of 1e-9 leaves the convolutions where the weights file put them
    assert torch.allclose(checkpoint["state_dict"]["conv1.weight"], start["conv1.weight"],
                          atol=1e-6)


# ---------------------------------------------------------------------------------------- specs
@pytest.mark.parametrize("text, message", [
    ("[model]\narch = 'original'\nfactory = 'a:b'\n",
     "line 3: key 'model.factory' and model.arch both name the model; keep one"),
    ("[model]\ncheckpoint = 'RESNET'\nweights = 'RESNET'\n",
     "line 3: key 'model.weights' and model.checkpoint both give the models"),
    ("[model]\ncheckpoint = 'RESNET'\nargs = { width = 4 }\n",
     "line 3: key 'model.args' do not apply to given checkpoints"),
    ("[model]\nweights = 'RESNET'\nreplicates = 2\n", "line 2: key 'model.weights' gives the "
                                                       "models, so model.seeds and"),
    ("[model]\nweights = 'nowhere.pt'\n", "line 2: key 'model.weights' names a missing file"),
    ("[model]\nfactory = 'no_such_module_xyz:net'\n", "line 2: key 'model.factory' "
     "'no_such_module_xyz:net': module 'no_such_module_xyz' failed to import"),
    ("[model]\nfactory = 'bad_factories:ten_classes'\n", "line 2: key 'model.factory' "
     "bad_factories:ten_classes gives an output of shape (2, 10) for 2 images of 32 px"),
    ("[model]\nfactory = 'bad_factories:breaks'\n", "line 2: key 'model.factory' "
     "bad_factories:breaks failed to build a model"),
    ("[model]\nfactory = 'bad_factories:ten_classes'\nargs = { depth = 3 }\n",
     "line 3: key 'model.args' 'depth' is not an argument of bad_factories:ten_classes"),
    ("[model]\narch = 'original'\nweights = ['RESNET']\n", "line 3: key 'model.weights' "
     "RESNET does not fit model original"),
])
def test_bad_model_specs_name_the_key_and_line(text, message, bad_folder, tmp_path):
    from densevis.experiment.spec import load_spec

    _, weights = _resnet_state(tmp_path / "resnet.pt")
    spec = bad_folder / "bad_model.toml"  # beside bad_factories.py
    spec.write_text(text.replace("RESNET", str(weights)) + "[data]\nsize = 32\n")
    with pytest.raises(DensevisError) as error:
        load_spec(spec)
    assert f"{spec} {message.replace('RESNET', str(weights))}" in str(error.value)


def test_a_spec_imports_its_factory_from_its_own_folder_first(tmp_path):
    from densevis.experiment.plan import replicate_plan
    from densevis.experiment.spec import load_spec

    (tmp_path / "beside_spec_model.py").write_text(
        "from torch import nn\n"
        "def net(width: int = 2):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),\n"
        "                         nn.Flatten(), nn.Linear(width, 2))\n")
    torch.manual_seed(0)
    torch.save(resolve_model("beside_spec_model:net", {"width": 3}, tmp_path).build()
               .state_dict(), tmp_path / "trained_elsewhere.pt")
    (tmp_path / "spec.toml").write_text(
        "[data]\nsize = 32\n[model]\nfactory = 'beside_spec_model:net'\nargs = { width = 3 }\n"
        "weights = ['trained_elsewhere.pt']\n[saliency]\nlayers = ['0']\n")
    try:
        spec = load_spec(tmp_path / "spec.toml")
        (replicate,) = replicate_plan(spec)
    finally:
        sys.modules.pop("beside_spec_model", None)
    assert (spec.model.name, replicate.label) == ("beside_spec_model:net", "trained_elsewhere")
    assert replicate.given == tmp_path / "trained_elsewhere.pt"


def test_a_factory_checkpoint_in_a_spec_needs_its_factory(own_run, tmp_path):
    from densevis.experiment.spec import load_spec

    folder, _ = own_run
    spec = tmp_path / "spec.toml"
    spec.write_text(f"[data]\nsize = 32\n[model]\ncheckpoint = '{folder / 'own.pt'}'\n")
    with pytest.raises(DensevisError, match="line 3: key 'model.factory' must name "
                                            "'small_resnet:small_resnet', the factory of "
                                            "checkpoint"):
        load_spec(spec)


# ------------------------------------------------------------------------------------- runs
@pytest.fixture(scope="session")
def own_model_run(tmp_path_factory):
    """The worked example, experiments/own_model/own_model.toml, run with --quick."""
    from densevis.experiment import load_spec, run_experiment

    out = tmp_path_factory.mktemp("own_model_runs")
    return run_experiment(load_spec(OWN_MODEL / "own_model.toml", quick=True), out,
                          progress=False, echo=lambda _: None)


def test_the_worked_example_runs_every_stage_on_the_factory_model(own_model_run):
    from densevis.analysis.tables import RUN_TABLES, read_table

    record = json.loads((own_model_run / "provenance.json").read_text())
    assert [(m["model"], m["name"]) for m in record["models"]] == [("seed0", FACTORY)]
    assert (record["spec"]["model"]["factory"], record["spec"]["model"]["arch"]) == (FACTORY, "")
    assert set(record["stages"]) == {"generate", "train", "evaluate", "explain", "analyze",
                                     "sanity", "hypotheses"}
    assert not any(stage["cached"] for stage in record["stages"].values())
    # layers = "all" on the model: its blocks in forward order (declared with the head first)
    assert record["layers"] == ["stem", "stem_norm", "block1", "down", "block2"]
    for name in RUN_TABLES:
        table = read_table(own_model_run / f"{name}.csv")
        assert len(table) and "seed0" in set(table["model"]), name
    metrics = read_table(own_model_run / "metrics.csv")
    assert {"block1", "block2"} <= set(metrics["layer"])
    assert {"vanilla", "guided", "gradcam", "integrated_gradients"} <= set(metrics["method"])
    assert {"cascading", "data"} <= set(read_table(own_model_run / "sanity.csv")["test"])
    assert f"1 trained model of {FACTORY}: seed0" in (own_model_run / "answers.md").read_text()
    assert (own_model_run / "report.html").is_file()


def test_weights_trained_elsewhere_are_a_runs_replicates(own_model_run, tmp_path):
    """The worked example's model saved as a plain state dict, named in a spec's weights: loaded,
    not trained, and it scores the held-out images as the run that trained it did."""
    from densevis.analysis.tables import read_table
    from densevis.experiment import load_spec, run_experiment

    record = json.loads((own_model_run / "provenance.json").read_text())
    trained = own_model_run.parent / record["models"][0]["checkpoint"]
    torch.save(torch.load(trained, weights_only=True)["state_dict"], tmp_path / "mine.pt")
    shutil.copy(OWN_MODEL / "small_resnet.py", tmp_path)
    (tmp_path / "spec.toml").write_text(
        "name = 'weights'\n[data]\nsize = 32\ntrain = 160\nval = 64\nimages_per_set = 8\n"
        f"[model]\nfactory = '{FACTORY}'\nargs = {{ width = 8 }}\nweights = ['mine.pt']\n"
        "[probes]\nsets = ['base']\n[saliency]\nmethods = ['vanilla', 'gradcam']\n"
        "layers = ['block2']\n[analysis.sanity]\nmethods = []\n"
        "[[hypotheses]]\nname = 'localizes_square'\n[outputs]\nfigures = false\nhtml = false\n")
    run = run_experiment(load_spec(tmp_path / "spec.toml"), tmp_path / "out", progress=False,
                         echo=lambda _: None)
    models = json.loads((run / "provenance.json").read_text())["models"]
    assert [(m["model"], m["name"]) for m in models] == [("mine", FACTORY)]
    ours, theirs = (read_table(folder / "evaluation.csv") for folder in (run, own_model_run))
    held = "set == 'base (val)' and breakdown == 'all'"
    assert ours.query(held)["value"].tolist() == theirs.query(held)["value"].tolist()
    assert set(read_table(run / "metrics.csv")["model"]) == {"mine"}
