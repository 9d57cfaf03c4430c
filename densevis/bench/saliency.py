"""Saliency engine speed: the original study's panel against its floor and against Captum.

The panel: vanilla gradient + guided backprop + Grad-CAM on the 11 children of model.features
from conv0 to denseblock4 + guided Grad-CAM on the same 11, for a batch of images (default 16 at
224x224, the original DenseNet, 2 threads), each image explained for its own target.

- floor: one forward + two backwards to the input through the retained graph (the fewest passes
  that can give a plain and a guided gradient);
- densevis: SaliencyEngine(model, "panel", those 11 layers).attribute(images, targets);
- captum (when installed): Saliency + GuidedBackprop + LayerGradCam (+ bilinear interpolate) on
  11 layers + GuidedGradCam on 11 layers, one call per method and layer for the whole batch, as
  a user would write it;
- pytorch-grad-cam (when installed): GradCAM on each of the 11 layers (its CAMs alone), run as its
  users run it (it backpropagates into the parameters).

The floor, densevis and Captum run in eval mode with frozen parameters. Repeats are interleaved
(each round in a rotated order) and the medians reported (``ratio_to_floor_best`` compares the fastest repeats, which are the
least disturbed when the machine is shared); compare ratios measured in one run.
``maps_per_s`` counts every map delivered (images x the panel's 24 maps), on the host: densevis's
time includes copying the maps back from the GPU, the floor's does not.

On CUDA (``--device cuda``) the model and inputs are in channels-last layout for every
contender (the engine's default there), and ``--bf16`` runs the floor and densevis under
bfloat16 autocast; the references are skipped with ``--references none`` (as on machines
without them).

examples:
  densevis bench saliency
  densevis bench saliency --device cuda --n 64 --references none --json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

HELP = "saliency: the original study's panel vs the 1-forward-2-backward floor and vs Captum"

#: The original study's panel layers: the children of model.features from conv0 to denseblock4.
PANEL_LAYERS = ("conv0", "norm0", "relu0", "pool0", "denseblock1", "transition1", "denseblock2",
                "transition2", "denseblock3", "transition3", "denseblock4")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: the original "
                                             "architecture, randomly initialized)")
    parser.add_argument("--n", type=int, default=16, help="images per batch (default 16)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (default 5)")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--bf16", action="store_true",
                        help="bfloat16 autocast for the floor and densevis")
    parser.add_argument("--references", choices=("all", "captum", "none"), default="all",
                        help="also time Captum and pytorch-grad-cam (all, the default), Captum "
                             "only, or none")


def _seconds(run, synchronize) -> float:
    synchronize()
    start = time.perf_counter()
    run()
    synchronize()
    return time.perf_counter() - start


def floor_passes(model, x, targets, bf16: bool = False) -> None:
    """One forward and two backwards to the input, nothing else."""
    import torch

    x = x.detach().requires_grad_(True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model(x)
    score = logits.float().gather(1, targets[:, None]).sum()
    torch.autograd.grad(score, x, retain_graph=True)
    torch.autograd.grad(score, x)


def captum_panel(model, x, targets, layers) -> None:
    from captum.attr import (GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam,
                             Saliency)

    Saliency(model).attribute(x, target=targets, abs=False).sum(1)
    GuidedBackprop(model).attribute(x, target=targets).sum(1)
    for layer in layers:
        cam = LayerGradCam(model, layer).attribute(x, target=targets, relu_attributions=True)
        LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")
    for layer in layers:
        GuidedGradCam(model, layer).attribute(x, target=targets,
                                              interpolate_mode="bilinear").sum(1)


def grad_cam_panel(model, x, targets, layers) -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wanted = [ClassifierOutputTarget(int(t)) for t in targets]
    for layer in layers:
        with GradCAM(model, [layer]) as cam:
            cam(x, wanted)


def run(args: argparse.Namespace) -> dict:
    import importlib.util
    import warnings

    import torch

    from densevis.errors import DensevisError
    from densevis.model import build_model, load_checkpoint, resolve_device
    from densevis.saliency import SaliencyEngine, frozen_eval

    if min(args.n, args.size, args.threads, args.repeats) < 1:
        raise DensevisError("--n, --size, --threads and --repeats must be positive")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    if args.checkpoint:
        model, _ = load_checkpoint(args.checkpoint, device)
    else:
        model = build_model("original").to(device).eval()
    grey = torch.rand(args.n, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))
    x = grey.expand(-1, 3, -1, -1).contiguous().to(device)
    if device.type == "cuda":  # the engine's layout on CUDA, for every contender
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    targets = torch.arange(args.n, device=device) % 2
    layers = [getattr(model.features, name) for name in PANEL_LAYERS]
    engine = SaliencyEngine(model, "panel", list(PANEL_LAYERS), autocast=args.bf16)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    # (name, measured call, whether it runs in eval mode with frozen parameters)
    runs = [("floor_s", lambda: floor_passes(model, x, targets, args.bf16), True),
            ("densevis_s", lambda: engine.attribute(x, targets), True)]
    has_captum = args.references != "none" and importlib.util.find_spec("captum") is not None
    has_grad_cam = args.references == "all" and \
        importlib.util.find_spec("pytorch_grad_cam") is not None
    if has_captum:
        runs.append(("captum_s", lambda: captum_panel(model, x, targets, layers), True))
    if has_grad_cam:  # on its own copy: it leaves gradients in the parameters
        own = copy.deepcopy(model)
        own_layers = [getattr(own.features, name) for name in PANEL_LAYERS]
        runs.append(("pytorch_grad_cam_s",
                     lambda: grad_cam_panel(own, x, targets, own_layers), False))
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns about the inputs' requires_grad
        for repeat in range(args.repeats + 1):  # the first round warms up, not counted
            for name, fn, frozen in runs[repeat % len(runs):] + runs[:repeat % len(runs)]:
                with frozen_eval(model) if frozen else contextlib.nullcontext():
                    seconds = _seconds(fn, sync)
                if repeat:
                    times[name].append(seconds)
    figures = {name: statistics.median(values) for name, values in times.items()}
    floor = figures["floor_s"]
    best = {name: min(values) for name, values in times.items()}
    result = {
        "model": args.checkpoint or "original (random init)", "images": args.n,
        "size": args.size, "threads": args.threads, "device": str(device),
        "repeats": args.repeats, "layers": len(PANEL_LAYERS), "bf16": args.bf16,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "floor_s": floor, "densevis_s": figures["densevis_s"],
        "maps_per_s": args.n * len(engine.keys) / figures["densevis_s"],
        "images_per_s": args.n / figures["densevis_s"],
        "ratio_to_floor": figures["densevis_s"] / floor,
        "ratio_to_floor_best": best["densevis_s"] / best["floor_s"],
        "captum_s": figures.get("captum_s"),
        "captum_ratio_to_floor": figures["captum_s"] / floor if has_captum else None,
        "speedup_vs_captum": figures["captum_s"] / figures["densevis_s"] if has_captum else None,
        "pytorch_grad_cam_s": figures.get("pytorch_grad_cam_s"),
        "pytorch_grad_cam_ratio_to_floor":
            figures["pytorch_grad_cam_s"] / floor if has_grad_cam else None,
        "note": "medians of interleaved repeats (best: fastest repeats); the machine may be "
                "shared",
    }
    return result
