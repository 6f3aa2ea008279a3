"""The cost of each alert: CPU µs per alert of `enrich` (and of the NDJSON encoding),
this checkout's against another git revision's (default `main`), alternating in one
process over the same real detections, so the machine's load touches both alike.

    python bench/bench_enrich.py /tmp/storm1000-300k.log --rounds 5 --base main

The detections come from the default models over the file (read and detected once,
before timing). The base revision's enrich.py and detection.py are loaded from git as
separate modules, with each detection rebuilt as the base's own `Detection` class, so
each side pays its own id hashing. Both sides' documents are checked to be equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import subprocess
import sys
import time
import types
from pathlib import Path

import orjson

from zeekndm import enrich as new_enrich
from zeekndm.detect import Detector
from zeekndm.models import load_builtin_models
from zeekndm.readers import read_flows

ROOT = Path(__file__).resolve().parent.parent


def load_base(rev: str) -> types.ModuleType:
    """The base revision's enrich module, importing the base's detection module."""

    def source(path: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    detection = types.ModuleType("_base_detection")
    detection.__dict__["__name__"] = "_base_detection"
    sys.modules["_base_detection"] = detection
    exec(compile(source("zeekndm/detection.py"), "base:detection.py", "exec"), detection.__dict__)
    text = source("zeekndm/enrich.py").replace(
        "from zeekndm.detection import", "from _base_detection import"
    )
    enrich = types.ModuleType("_base_enrich")
    sys.modules["_base_enrich"] = enrich
    exec(compile(text, "base:enrich.py", "exec"), enrich.__dict__)
    enrich.BaseDetection = detection.Detection
    return enrich


def detections(path: str) -> list:
    det = Detector(list(load_builtin_models().values()))
    out = []
    for flow in read_flows(path):
        out.extend(det.observe(flow) or ())
    out.extend(det.finish())
    return out


def forget() -> None:
    """Empty this checkout's caches, so each round pays its misses as a replay does."""
    from zeekndm import detection

    for cache in (
        new_enrich._ISO,
        new_enrich._SECOND,
        new_enrich._MODELS,
        new_enrich._ON,
        detection._EPISODES,
    ):
        cache.clear()


def cpu_per_alert(enrich, items: list, created: float, encode: bool) -> float:
    dumps = orjson.dumps
    forget()
    start = time.process_time()
    for d in items:
        alert = enrich(d, None, created)
        if encode:
            dumps(alert.doc)
    return (time.process_time() - start) / len(items) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--base", default="main", help="git revision to compare with")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    base = load_base(args.base)
    new = detections(args.file)
    old = [
        base.BaseDetection(**{f.name: getattr(d, f.name) for f in dataclasses.fields(d)})
        for d in new
    ]
    created = time.time()
    for a, b in zip(old, new):
        if orjson.dumps(base.enrich(a, None, created).doc) != orjson.dumps(
            new_enrich.enrich(b, None, created).doc
        ):
            sys.exit("bench_enrich: the two revisions' documents differ")
    gc.freeze()
    for encode in (False, True):
        got: dict[str, list[float]] = {"base": [], "this": []}
        for _ in range(args.rounds):
            got["base"].append(cpu_per_alert(base.enrich, old, created, encode))
            got["this"].append(cpu_per_alert(new_enrich.enrich, new, created, encode))
        best = {k: min(v) for k, v in got.items()}
        what = "enrich + orjson.dumps" if encode else "enrich"
        print(
            f"{args.file}: {len(new):,} alerts; {what}, CPU µs/alert, best of {args.rounds}: "
            f"{args.base} {best['base']:.2f}, this {best['this']:.2f} "
            f"({best['base'] / best['this']:.2f}x); all: "
            + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v) for k, v in got.items())
        )


if __name__ == "__main__":
    main()
