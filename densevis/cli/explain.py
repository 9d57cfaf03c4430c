"""Compute saliency maps of a trained model on a probe set into a maps file (and figures).

One shared capture per batch (one forward, a plain and a guided backward) gives vanilla and
guided gradients, input x gradient and the CAM family on every selected layer; integrated
gradients, SmoothGrad, occlusion, Score-CAM and RISE add their own batched passes. Maps are
unnormalized, at input resolution, w.r.t. the grey image (see the maps contract). Each image is
explained for its own target: its label by default.

The model is a checkpoint of 'densevis train' (--checkpoint; one of a factory model needs its
--model named too: loading it imports the factory's module), or a model trained elsewhere:
--model NAME (a config, a torchvision classifier or package.module:callable, with --model-arg)
and --weights FILE (a state dict or a .safetensors file), explained at the data's image size.

{methods}
layers: all (every block the forward runs once whose output is a spatial map, in forward order:
the 12 children of features on the DenseNet, conv1 ... layer4.1 on a ResNet), the names the
maps file uses (denseblock4) or module paths (features.denseblock1.denselayer2, block1).

Sharded over processes/GPUs: under torchrun (WORLD_SIZE > 1) each process explains its slice
of the probe set on cuda:LOCAL_RANK (or the CPU) into OUT.shards/, and rank 0 merges the shards
into OUT, equal to a one-process run. If a rank fails, no OUT is written, finished shards are
kept, and the same command again resumes from them.

examples:
  densevis explain --checkpoint model.pt --data base.h5 --out maps.h5
  torchrun --nproc_per_node 4 -m densevis explain --checkpoint model.pt --data base.h5 \\
      --out maps.h5      # 4 GPUs (or 4 CPU processes with --device cpu)
  densevis explain --checkpoint model.pt --data base.h5 --methods all --layers denseblock4 \\
      --param integrated_gradients.steps=32 --param rise.masks=1000 --out maps.h5
  densevis explain --checkpoint model.pt --data base.h5 --out maps.h5 --figures figs --limit 4
  densevis explain --maps maps.h5 --data base.h5 --figures figs   # figures of an existing file
  densevis explain --model resnet18 --weights resnet18_state.pt --data base.h5 \
      --layers layer3,layer4 --out maps.h5
  PYTHONPATH=experiments/own_model densevis explain --checkpoint small.pt \
      --model small_resnet:small_resnet --layers block1,block2 --data base.h5 --out maps.h5
"""

from __future__ import annotations

import argparse
import textwrap

HELP = "compute saliency maps (vanilla, guided, Grad-CAM family, IG, ...) into a maps file"


def describe() -> str:
    """The command's description with the methods, groups and parameters of the registry (read
    only when the help is shown: the registry imports torch)."""
    from densevis.saliency import GROUPS, METHODS

    groups = ", ".join(f"{name} ({', '.join(members)})" for name, members in GROUPS.items())
    sharing: dict[tuple, list[str]] = {}  # methods with the same parameters are listed together
    for method in METHODS.values():
        if method.defaults:
            sharing.setdefault(tuple(method.defaults.items()), []).append(method.name)
    params = "; ".join(f"{', '.join(names)} {' '.join(f'{k}={v}' for k, v in defaults)}"
                       for defaults, names in sharing.items())
    text = (f"methods: {' '.join(METHODS)}; groups: all, {groups}; the default, panel, is the "
            f"original study's panel. method parameters (--param METHOD.KEY=VALUE): {params}.")
    return __doc__.replace("{methods}", textwrap.fill(text, width=96))


def configure(parser: argparse.ArgumentParser) -> None:
    from densevis.cli import add_model_arguments

    parser.add_argument("--checkpoint", metavar="MODEL.pt",
                        help="checkpoint from 'densevis train' (or give --model and --weights)")
    add_model_arguments(parser, "weights of --model trained elsewhere: a state dict "
                        "(torch.save(model.state_dict(), FILE)) or a .safetensors file")
    parser.add_argument("--data", metavar="SET.h5", required=True, help="probe-set file")
    parser.add_argument("--out", metavar="MAPS.h5", help="maps file to write")
    parser.add_argument("--maps", metavar="MAPS.h5",
                        help="draw --figures from this existing maps file instead of computing")
    parser.add_argument("--methods", default="panel",
                        help="all, panel, or comma-separated names (default panel)")
    parser.add_argument("--layers", default="all",
                        help="layers of the layer methods: all or comma-separated (default all)")
    parser.add_argument("--target", default="label",
                        help="class explained: label (default), predicted, or a class number")
    parser.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                        help="method parameter, e.g. smoothgrad.samples=50 (repeatable)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="images per shared capture (default 32; halved on GPU OOM)")
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="model inputs per pass of the path/perturbation methods (default 64)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the passes")
    parser.add_argument("--figures", metavar="DIR", help="also draw figures of the first images")
    parser.add_argument("--limit", type=int, default=8, help="images with figures (default 8)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def parse_method_params(items: list[str]) -> dict[str, dict[str, str]]:
    """``["ig.steps=8", ...]`` -> ``{"ig": {"steps": "8"}}`` (typed later by the registry)."""
    from densevis.errors import DensevisError

    params: dict[str, dict[str, str]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        method, dot, key = name.partition(".")
        if not sep or not dot or not method.strip() or not key.strip():
            raise DensevisError(f"--param {item!r} is not METHOD.KEY=VALUE (e.g. --param "
                                f"smoothgrad.samples=50)")
        params.setdefault(method.strip(), {})[key.strip()] = value.strip()
    return params


def run(args: argparse.Namespace) -> int:
    from densevis.errors import DensevisError

    if args.limit < 0:
        raise DensevisError(f"--limit must be >= 0 (got {args.limit})")
    if args.figures:  # before any work: figures go into a folder
        from probes.atomic import check_output_folder

        check_output_folder(args.figures)
    if args.maps:
        if args.checkpoint or args.model or args.weights or args.out:
            raise DensevisError("--maps draws figures of an existing file; do not combine it "
                                "with --checkpoint, --model, --weights or --out")
        if not args.figures:
            raise DensevisError("--maps needs --figures DIR (where to draw them)")
        return draw(args.maps, args.data, args.figures, args.limit)
    if not args.out:
        raise DensevisError("give --out MAPS.h5 and the model (--checkpoint MODEL.pt, or --model "
                            "NAME --weights FILE), or --maps MAPS.h5 --figures DIR to draw an "
                            "existing file")
    from densevis.cli import model_source
    from densevis.distributed import exit_status
    from densevis.saliency.files import target_rule

    source = model_source(args)  # before any work
    target = target_rule(args.target)
    return exit_status("explain", lambda: explain(args, source, target))


def explain(args: argparse.Namespace, source, target) -> None:
    from densevis.distributed import is_main
    from densevis.maps import MapsFile
    from densevis.shards import explain_sharded

    # a plain run under WORLD_SIZE 1 (or without torchrun): explain_file itself
    path = explain_sharded(source, args.data, args.out, methods=args.methods,
                           layers=args.layers, params=parse_method_params(args.param),
                           device=args.device, batch_size=args.batch_size,
                           chunk_size=args.chunk_size, bf16=args.bf16, target=target,
                           force=args.force)
    if not is_main():
        return
    with MapsFile(path) as maps:
        print(f"wrote {path}: {len(maps.keys)} maps of {len(maps)} images "
              f"({', '.join(maps.attrs['methods'])}; {len(maps.attrs['layers'])} layers) on "
              f"{maps.attrs['device']}"
              + (f" ({maps.attrs['world_size']} processes)" if "world_size" in maps.attrs
                 else ""))
    if args.figures:
        draw(path, args.data, args.figures, args.limit)


def draw(maps_path, data_path, folder, limit: int) -> int:
    from densevis.errors import DensevisError
    from densevis.maps import MapsFile
    from densevis.saliency.figures import render_maps
    from probes import ProbeSet, file_sha256

    probe = ProbeSet(data_path)
    with MapsFile(maps_path) as maps:
        recorded = maps.attrs.get("probe_sha256")
        if recorded != file_sha256(data_path):
            raise DensevisError(f"{maps_path} was computed from another probe file than "
                                f"{data_path} (sha256 {str(recorded)[:12]}...); pass the probe "
                                f"file it was made from ({maps.attrs.get('probe', '?')})")
        written = render_maps(maps, probe, folder, limit)
    print(f"wrote {len(written)} figures to {folder}")
    return 0
