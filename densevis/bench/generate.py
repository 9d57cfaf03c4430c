"""Probe generation speed and memory: base images at 256x256 into HDF5.

Each measurement runs in a fresh Python process so that its peak resident memory (the main
process plus its rendering workers) is its own. Memory is "flat in N" when the peak for 4N images
is about the peak for N.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

HELP = "probe generation: images/s into HDF5 and peak memory at N and 4N images"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=5000, help="images in the small run (default 5000)")
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument("--workers", type=int, default=None, help="rendering processes (default all)")


def measure(n: int, size: int, workers: int | None, folder: str) -> dict:
    """Generate ``n`` base images; return seconds and peak RSS (MiB) of this process + children."""
    import resource
    import time

    from probes import write_probe_set

    start = time.perf_counter()
    write_probe_set(f"{folder}/base-{n}.h5", "base", n=n, seed=0, size=size, workers=workers)
    seconds = time.perf_counter() - start
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"seconds": seconds, "peak_mib": peak_kib / 1024}


def _measure_in_child(n: int, size: int, workers: int | None, folder: str) -> dict:
    code = ("import json, sys; from densevis.bench.generate import measure; "
            f"print(json.dumps(measure({n}, {size}, {workers!r}, {folder!r})))")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict:
    from densevis.errors import DensevisError
    from probes.pool import default_workers

    if args.n < 1:
        raise DensevisError(f"--n must be positive (got {args.n})")
    with tempfile.TemporaryDirectory() as folder:
        small = _measure_in_child(args.n, args.size, args.workers, folder)
        large = _measure_in_child(4 * args.n, args.size, args.workers, folder)
    return {
        "size": args.size,
        "workers": args.workers or default_workers(),
        "images_per_s": 4 * args.n / large["seconds"],
        "images_per_s_small": args.n / small["seconds"],
        "peak_mib_n": small["peak_mib"],
        "peak_mib_4n": large["peak_mib"],
        "memory_ratio_4n_to_n": large["peak_mib"] / small["peak_mib"],
    }
