"""Training speed and the accuracy it buys: the default recipe on 10,000 base images at 128 px.

Generates (or reuses, in --workdir) base sets: training (seed S, 10,000 images), validation
(seed S+1, 1,000, picks the best epoch) and held-out test (seed S+2, 1,000). Trains with the
defaults of 'densevis train' and reports the training seconds (wall and CPU; data generation
and evaluation excluded), the held-out accuracy, the accuracy on its clean part (negatives and
positives whose square touches no circle) and the ceiling that invisible squares leave.
The target: >= 98% held-out, >= 99% clean, <= 5 minutes on 2 CPU cores.

It also measures what the recipe's CPU speed-ups buy per training step
(:func:`densevis.optimization.fast_stem` and no NaN-filling of fresh tensors): ``--ratio-steps``
training steps (augmentation, weighted loss, Adam) of a plain model (3-channel input,
channels-last, torch's deterministic defaults) and of the recipe's are interleaved on the same
batches, and ``step_ratio`` is the ratio of their median times (< 1: the recipe is faster).
``--ratio-steps 0`` skips it.

And whether training several replicate models at once pays: ``--stacked K`` models' training
steps (forward, backward) on one batch, one model after another, against the same K models
stacked (``torch.func.stack_module_state`` and ``vmap``: grouped convolutions underneath);
``stacked_ratio`` < 1 means stacking is faster (it was not on 2 CPU cores: README, Benchmarks).
``--side-by-side K``: K models' training steps taken one model after another with torch's
threads, against the same steps taken side by side, a forked process per model with one thread
each, as runs train their replicates (``side_by_side_ratio`` < 1: side by side is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import tempfile
import time
from pathlib import Path

HELP = "training: seconds to train the default recipe and its held-out accuracy"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(),
                                                          "densevis-bench-train"),
                        help="folder for the generated sets, reused between runs "
                        "(default: %(default)s)")
    parser.add_argument("--n", type=int, default=10000, help="training images (default 10000)")
    parser.add_argument("--n-test", type=int, default=1000,
                        help="validation and held-out test images, each (default 1000)")
    parser.add_argument("--size", type=int, default=128, help="image side (default 128)")
    parser.add_argument("--arch", default="original", help="model (default original)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed; the data use seeds S, S+1, S+2 (default 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--device", default="cpu", help="device (default cpu: the target is "
                        "stated for 2 CPU cores)")
    parser.add_argument("--stacked", type=int, default=3, metavar="K",
                        help="time K models trained stacked (vmap) against one after another "
                        "(default 3; 0 skips)")
    parser.add_argument("--side-by-side", type=int, default=3, metavar="K",
                        help="time K models trained side by side (a process each, one thread) "
                        "against one after another (default 3; 0 skips)")
    parser.add_argument("--ratio-steps", type=int, default=30,
                        help="interleaved training steps that time the recipe's speed-ups "
                        "against a plain step (default 30; 0 skips)")


def probe_file(folder: Path, n: int, size: int, seed: int) -> Path:
    """A base set in ``folder``, generated unless an identical one is there already."""
    from probes import ProbeSet, write_probe_set

    path = folder / f"base-n{n}-s{size}-seed{seed}.h5"
    if path.is_file():
        try:
            with ProbeSet(path) as probe:
                if (probe.name, len(probe), probe.size, probe.seed) == ("base", n, size, seed):
                    return path
        except Exception:  # an unreadable leftover is simply regenerated
            pass
    return write_probe_set(path, "base", n=n, seed=seed, size=size, force=True)


def step_ratio(train_set, config, steps: int) -> dict:
    """Median seconds of a plain training step and of the recipe's, interleaved on the same
    batches (rounds alternate which goes first), and their ratio."""
    import statistics

    import torch.utils.deterministic as deterministic

    from densevis.model import resolve_device
    from densevis.optimization import TrainingSteps, deterministic_training, fast_stem

    with deterministic_training(config.threads), contextlib.ExitStack() as stack:
        contenders = {name: TrainingSteps(train_set, config, resolve_device(config.device))
                      for name in ("plain", "recipe")}  # seeded: the same initial weights
        grey = {"plain": False,
                "recipe": stack.enter_context(fast_stem(contenders["recipe"].model))}
        # torch's default for the plain step, the recipe's (deterministic_training's) for its
        fill = {"plain": True, "recipe": deterministic.fill_uninitialized_memory}
        stream = contenders["recipe"].stream
        epochs = itertools.chain.from_iterable(stream.epoch(e) for e in itertools.count())
        batches = list(itertools.islice(epochs, steps + 3))  # 3 warm-ups
        seconds = {name: [] for name in contenders}
        for contender in contenders.values():
            contender.model.train()
        for k, batch in enumerate(batches):
            for name in (("plain", "recipe") if k % 2 == 0 else ("recipe", "plain")):
                deterministic.fill_uninitialized_memory = fill[name]
                start = time.perf_counter()
                contenders[name].train_batch(*batch, grey[name])
                seconds[name].append(time.perf_counter() - start)
    plain, recipe = (statistics.median(seconds[name][3:]) for name in ("plain", "recipe"))
    return {"step_ms_plain": 1000 * plain, "step_ms_recipe": 1000 * recipe,
            "step_ratio": recipe / plain}


def stacked_ratio(models: int, size: int, device: str, batch: int = 64,
                  steps: int = 5) -> dict:
    """Median seconds of ``models`` training steps (forward and backward of one batch) taken
    one model after another, and of one step of the same models stacked with ``vmap``.

    BatchNorm layers are made statistics-free in both (running averages cannot be updated in
    place under ``vmap``): the convolutions, normalizations and concatenations are the same."""
    import copy
    import statistics

    import torch
    from torch.func import functional_call, grad, stack_module_state, vmap

    from densevis.model import build_model, resolve_device

    where = resolve_device(device)
    torch.manual_seed(0)
    nets = [build_model("original") for _ in range(models)]
    for net in nets:
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.track_running_stats = False
                module.running_mean = module.running_var = None
        net.to(where)
    images = torch.rand(batch, 3, size, size, device=where)
    labels = torch.randint(0, 2, (batch,), device=where)

    def one_after_another():
        for net in nets:
            torch.nn.functional.cross_entropy(net(images), labels).backward()

    params, buffers = stack_module_state(nets)
    skeleton = copy.deepcopy(nets[0]).to("meta")

    def loss(p, b, x):
        return torch.nn.functional.cross_entropy(functional_call(skeleton, (p, b), (x,)), labels)
    stacked_grad = vmap(grad(loss), in_dims=(0, 0, None))
    seconds = {"sequential": [], "stacked": []}
    for k in range(steps + 1):  # the first round warms up
        for name, step in (("sequential", one_after_another),
                           ("stacked", lambda: stacked_grad(params, buffers, images))):
            if where.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if where.type == "cuda":
                torch.cuda.synchronize()
            if k:
                seconds[name].append(time.perf_counter() - start)
    sequential, stacked = (statistics.median(seconds[n]) for n in ("sequential", "stacked"))
    return {"stacked_models": models, "stacked_step_ms": 1000 * stacked,
            "sequential_step_ms": 1000 * sequential, "stacked_ratio": stacked / sequential}


def side_by_side_ratio(models: int, size: int, batch: int = 64, steps: int = 20) -> dict:
    """Seconds of ``steps`` training steps (forward and backward of one batch) of each of
    ``models`` models: taken one model after another here with torch's threads, and taken side
    by side, a forked process per model with one thread (:func:`probes.pool.call_in_processes`,
    as :func:`densevis.experiment.steps.side_by_side` runs replicates), all at once: the slowest
    process's time. Each model warms up with one step first (not timed). CPU only."""
    import torch

    from densevis.model import build_model, torch_threads
    from probes.pool import call_in_processes

    torch.manual_seed(0)
    nets = [build_model("original") for _ in range(models)]
    images = torch.rand(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 2, (batch,))

    def step(net) -> None:
        torch.nn.functional.cross_entropy(net(images), labels).backward()

    def timed(net) -> float:
        step(net)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step(net)
        return time.perf_counter() - start

    in_turn = sum(timed(net) for net in nets)

    def alone(net) -> float:
        with torch_threads(1):
            return timed(net)
    apart = max(call_in_processes([lambda net=net: alone(net) for net in nets], models))
    return {"side_by_side_models": models, "side_by_side_seconds": apart,
            "in_turn_seconds": in_turn, "side_by_side_ratio": apart / in_turn}


def run(args: argparse.Namespace) -> dict:
    import torch

    from densevis.errors import DensevisError
    from densevis.evaluation import accuracy_breakdown, evaluate_images
    from densevis.recipe import TrainConfig
    from densevis.train import train_model
    from probes import ProbeSet

    if args.n < 2 or args.n_test < 1 or args.ratio_steps < 0:
        raise DensevisError("--n must be at least 2, --n-test at least 1 and --ratio-steps not "
                            "negative")
    folder = Path(args.workdir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [probe_file(folder, n, args.size, args.seed + k)
             for k, n in enumerate((args.n, args.n_test, args.n_test))]
    config = TrainConfig(arch=args.arch, seed=args.seed, threads=args.threads,
                         device=args.device)
    with ProbeSet(paths[0]) as train_set, ProbeSet(paths[1]) as val_set, \
            ProbeSet(paths[2]) as test_set:
        cpu, wall = time.process_time(), time.perf_counter()
        result = train_model(train_set, val_set, config, progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        threads = args.threads or torch.get_num_threads()
        device = next(result.model.parameters()).device
        rows = evaluate_images(result.model, test_set, device=device)
        summary = accuracy_breakdown(rows, test_set.size).set_index(["breakdown", "group", "metric"])
        ratio = step_ratio(train_set, config, args.ratio_steps) if args.ratio_steps else {}
        if args.stacked:
            ratio.update(stacked_ratio(args.stacked, args.size, args.device))
        if args.side_by_side and torch.device(args.device).type == "cpu":
            ratio.update(side_by_side_ratio(args.side_by_side, args.size))
    value = summary["value"]
    steps = result.history[-1]["step"]
    return {
        "arch": args.arch,
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "threads": threads,
        "train_seconds": wall,
        "train_cpu_seconds": cpu,
        "epochs": len(result.history),
        "best_epoch": result.best["epoch"],
        "steps": steps,
        "images_per_s": steps * config.batch_size / wall,
        "stopped": result.stopped,
        "val_accuracy": result.best["val_accuracy"],
        "test_accuracy": float(value[("all", "all", "accuracy")]),
        "test_clean_accuracy": float(value[("clean", "clean", "accuracy")]),
        "test_touching_accuracy": float(value[("touches_circle", "yes", "accuracy")]),
        "test_ceiling": float(value[("all", "all", "ceiling")]),
        "test_errors": int(value[("all", "all", "fp")] + value[("all", "all", "fn")]),
        **ratio,
    }
