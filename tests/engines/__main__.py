"""`python -m tests.engines NAME [--port P] [--home DIR]`: one engine in the foreground.

Resolves the jars (Maven's local repository caches them), starts the engine, prints one
line `ready URL` once it answers, and stops it cleanly on SIGTERM or Ctrl-C (exit 0).
`--prepare` only resolves and compiles (all engines when NAME is `all`), for a CI step that
fetches the jars once before the tests. Exit status: 0 stopped cleanly, 1 the engine failed,
3 Java, Maven or the jars are not available here.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

from . import ENGINES, EngineFailed, EngineUnavailable, prepare, prepare_all, start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.engines", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "name", choices=[*ENGINES, "all"], help="engine to run (all: with --prepare)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="HTTP (or Kafka) port; 0 picks a free one"
    )
    parser.add_argument(
        "--home", type=Path, help="engine home (kept); default a temporary directory (removed)"
    )
    parser.add_argument(
        "--prepare", action="store_true", help="resolve jars and compile launchers, then exit"
    )
    args = parser.parse_args(argv)
    if args.name == "all" and not args.prepare:
        parser.error("'all' needs --prepare (engines are started one per process)")
    try:
        if args.prepare:
            began = time.monotonic()
            done = prepare_all() if args.name == "all" else [prepare(args.name)]
            for prepared in done:
                print(
                    f"prepared {prepared.spec.name} {prepared.spec.version}: "
                    f"{len(prepared.jars)} jars, JDK {prepared.jdk}",
                    flush=True,
                )
            print(f"prepared in {time.monotonic() - began:.1f} s", flush=True)
            return 0
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        engine = start(args.name, port=args.port, home=args.home)
    except EngineUnavailable as exc:
        print(f"{args.name}: not available here: {exc}", file=sys.stderr)
        return 3
    except EngineFailed as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        return 1
    print(f"ready {engine.url}", flush=True)
    print(
        f"{engine.name} {engine.version} answered in {engine.started_in:.1f} s; "
        f"home {engine.home}, log {engine.log_path}",
        file=sys.stderr,
        flush=True,
    )
    while not stop.is_set() and engine.process.poll() is None:
        stop.wait(0.5)
    crashed = engine.process.poll() is not None
    code = engine.stop()
    if crashed:
        print(f"{args.name} exited by itself ({code}):\n{engine.log_tail()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
