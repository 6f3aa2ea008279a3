"""The detector alone: CPU µs per record of `Detector.observe` with the compiled
counting and with the pure-Python one, alternating in one process over the same
records (read once, before timing), so the machine's load touches both alike.

    python bench/bench_detector.py /tmp/speed-bench/storm-1x100-1000000.conn.log \
        --records 200000 --rounds 4

Needs the compiled core (`zeekndm._core`); the default models of the package.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time

from zeekndm import core
from zeekndm.detect import Detector
from zeekndm.models import load_builtin_models
from zeekndm.readers import read_flows


def cpu_per_record(flows: list, native) -> float:
    saved = core.native
    core.native = native
    try:
        det = Detector(list(load_builtin_models().values()))
    finally:
        core.native = saved
    observe = det.observe
    start = time.process_time()
    for f in flows:
        observe(f)
    det.finish()
    return (time.process_time() - start) / len(flows) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--records", type=int, default=200_000, help="records of each file")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    if core.native is None:
        sys.exit(f"bench_detector: needs the compiled core ({core.describe()})")
    for path in args.files:
        flows = list(itertools.islice(read_flows(path), args.records))
        gc.freeze()
        got: dict[str, list[float]] = {"compiled": [], "python": []}
        for _ in range(args.rounds):
            got["compiled"].append(cpu_per_record(flows, core.native))
            got["python"].append(cpu_per_record(flows, None))
        best = {k: min(v) for k, v in got.items()}
        print(
            f"{path}: {len(flows):,} records; CPU µs/record, best of {args.rounds}: "
            f"compiled {best['compiled']:.2f}, pure Python {best['python']:.2f} "
            f"({best['python'] / best['compiled']:.2f}x); all: "
            + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v) for k, v in got.items())
        )
        del flows
        gc.unfreeze()


if __name__ == "__main__":
    main()
