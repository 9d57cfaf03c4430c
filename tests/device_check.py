"""Device check: the GPU path on one CUDA machine, in under 5 minutes, results into one folder.

Not a ``densevis bench`` target and not part of the installed package: a script for a GPU
machine, run from the repository root (the tests are read from ``tests/``). Steps, each with
its own time limit, each writing its file as soon as it ends (so a run cut short still says how
far it got):

1. ``env.json``: torch, CUDA and cuDNN versions, the GPU, its memory;
2. ``pytest.log`` and ``junit.xml``: the CUDA tests (``tests/test_saliency_engine.py -k gpu``:
   GPU maps equal the CPU's; ``tests/test_gpu_path.py``: channels-last, no host
   synchronisation inside a batch, OOM back-off on a real GPU, bf16 tolerance, explain_file
   on CUDA; ``tests/test_distributed.py -k cuda``: two torchrun ranks on NCCL equal one process);
3. ``bench.json`` (and ``bench-*.log``): ``densevis bench saliency --device cuda`` at 224 px
   (fp32 with 64 and 256 images, bf16 with 256): maps/s and the ratio to the
   1-forward-2-backward floor;
4. ``summary.json``: what passed, the figures, and a line for the README.

usage (no network needed; densevis need not be installed, PYTHONPATH will do):
  PYTHONPATH=$PWD python3 tests/device_check.py --out $OUT
  PYTHONPATH=$PWD python3 tests/device_check.py --out results --skip-tests
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: (name, densevis bench saliency arguments) of the benchmark runs.
BENCH_RUNS = (("fp32_n64", ["--n", "64"]), ("fp32_n256", ["--n", "256"]),
              ("bf16_n256", ["--n", "256", "--bf16"]))
TESTS = ("tests/test_saliency_engine.py::test_gpu_equals_cpu_within_tolerance",
         "tests/test_gpu_path.py", "tests/test_distributed.py::"
         "test_two_ranks_on_cuda_equal_one_cuda_process")


def environment() -> dict:
    import torch

    facts = {"date": datetime.date.today().isoformat(), "python": sys.version.split()[0],
             "torch": torch.__version__, "cuda": torch.version.cuda,
             "cudnn": torch.backends.cudnn.version(), "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(gpu=props.name, gpu_count=torch.cuda.device_count(),
                     gpu_memory_gib=round(props.total_memory / 2**30, 1),
                     capability=f"{props.major}.{props.minor}")
    return facts


def run_step(command: list[str], log: Path, limit_s: float, env: dict) -> dict:
    """Run ``command``, its output into ``log``; status and seconds (status None: timed out)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        try:
            status = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env,
                                    timeout=limit_s).returncode
        except subprocess.TimeoutExpired:
            status = None
            handle.write(f"\n[device check] stopped after {limit_s:.0f} s\n")
    return {"status": status, "seconds": round(time.perf_counter() - start, 1)}


def junit_counts(path: Path) -> dict:
    import xml.etree.ElementTree as ElementTree

    if not path.is_file():
        return {}
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    return {name: int(suite.get(name, 0)) for name in ("tests", "failures", "errors", "skipped")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tests/device_check.py",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT", "device-check"),
                        help="folder of the results (default: $OUT, else device-check)")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmark")
    parser.add_argument("--test-limit", type=float, default=140, help="seconds for the tests")
    parser.add_argument("--bench-limit", type=float, default=45,
                        help="seconds for each benchmark run")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(__file__).resolve().parents[1]  # the repository
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(root), os.environ.get("PYTHONPATH")])), "PYTHONUNBUFFERED": "1"}
    facts = environment()
    (out / "env.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts), flush=True)
    summary = {"env": facts}
    if not args.skip_tests:
        command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                   f"--junitxml={out / 'junit.xml'}", *TESTS]
        summary["tests"] = {**run_step(command, out / "pytest.log", args.test_limit, env),
                            **junit_counts(out / "junit.xml")}
        print("tests:", json.dumps(summary["tests"]), flush=True)
    bench = {}
    for name, extra in BENCH_RUNS:
        command = [sys.executable, "-m", "densevis", "bench", "saliency", "--device", "cuda",
                   "--size", "224", "--repeats", "10", "--references", "none", "--json", *extra]
        log = out / f"bench-{name}.log"
        step = run_step(command, log, args.bench_limit, env)
        lines = log.read_text().strip().splitlines()
        figures = json.loads(lines[-1]) if step["status"] == 0 and lines else {}
        bench[name] = {**step, **{key: figures.get(key) for key in (
            "images", "maps_per_s", "images_per_s", "floor_s", "densevis_s", "ratio_to_floor",
            "ratio_to_floor_best", "bf16")}}
        (out / "bench.json").write_text(json.dumps(bench, indent=1))
        print(name, json.dumps(bench[name]), flush=True)
    summary["bench"] = bench
    best = bench.get("fp32_n256", {})
    summary["readme_line"] = (
        f"{facts['date']}, {facts.get('gpu', 'no GPU')}, torch {facts['torch']}: panel at 224 px "
        f"({best.get('images')} images, fp32) {best.get('maps_per_s') or 0:.0f} maps/s, "
        f"{best.get('ratio_to_floor') or float('nan'):.2f}x the floor; tests "
        f"{summary.get('tests', {}).get('tests', '-')} run, "
        f"{summary.get('tests', {}).get('failures', '-')} failed")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(summary["readme_line"], flush=True)
    passed = args.skip_tests or summary["tests"]["status"] == 0
    return 0 if passed and all(run["status"] == 0 for run in bench.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
