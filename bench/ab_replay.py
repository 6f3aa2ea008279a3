"""Two source trees' `zeekndm replay FILE --output /dev/null`, alternating run by run.

Each run is a fresh `python -m zeekndm` in the tree's directory (so that tree's package
is the one imported), pinned to one CPU; the figure is the child's CPU seconds (user +
sys), steadier than the wall clock on a shared machine. One warm-up run each first
(bytecode, caches). For a "before" tree: `git archive main | tar -x -C /tmp/before` and
copy the built `zeekndm/_core*.so` in.

    python bench/ab_replay.py /tmp/before . /tmp/sb/eve-1000000.json --rounds 5
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("file")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cpu", default="1")
    args = ap.parse_args()
    trees = {"before": args.before, "after": args.after}
    cmd = [sys.executable, "-m", "zeekndm", "replay", args.file, "--output", "/dev/null"]
    for cwd in trees.values():
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in trees}
    for i in range(args.rounds):
        order = list(trees.items()) if i % 2 == 0 else list(reversed(trees.items()))
        for name, cwd in order:
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            pinned = ["taskset", "-c", args.cpu, *cmd]
            subprocess.run(pinned, cwd=cwd, check=True, capture_output=True)
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
            runs[name].append((wall, cpu))
    for name, values in runs.items():
        walls = sorted(w for w, _ in values)
        cpus = sorted(c for _, c in values)
        print(
            f"{name}: CPU median {statistics.median(cpus) * 1e3:.0f} ms (min {cpus[0] * 1e3:.0f});"
            f" wall median {statistics.median(walls) * 1e3:.0f} ms (min {walls[0] * 1e3:.0f});"
            f" {len(values)} runs"
        )


if __name__ == "__main__":
    main()
