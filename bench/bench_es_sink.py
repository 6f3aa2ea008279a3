"""Throughput of the Elasticsearch output into the in-process stand-in (alerts per second).

What it measures: wall-clock alerts/s through `ElasticsearchSink.send` (bulk bodies built
with orjson, per-item results parsed) with the stand-in in a separate process, and the
sink's own CPU time per alert, in three configurations measured in the same run:

- `no lookup`: `dedupe_lookup: false`, the send path without the rollover lookup
  (the baseline);
- `lookup, 1 backing index`: the default, on a data stream that was never rolled over
  (nothing to look up: no extra request);
- `lookup, rollover just before`: the default on a data stream rolled over right after
  `--alerts` other alerts were stored, so every batch first runs one `ids` query over the
  older backing index and, within a minute of the rollover, a real-time multi-get of the
  same ids there (neither finds them: the worst case, every alert is then sent);
- `lookup, rollover a minute ago`: the same once the minute has passed (the search only;
  the window is set to 0 to stand for the passing time).

"time in lookup" is the share of the timed sends spent in the lookup (the `ids` query and
its answer), measured inside the same runs: the cost of keeping one copy across rollovers.
The stand-in (pure Python, validating every field against the template) is usually the
bottleneck; a real cluster has its own indexing cost, so read the CPU column as the
sink's ceiling, not Elasticsearch's.

    cd /work/wt/es && /work/venvs/es/bin/python bench/bench_es_sink.py --alerts 20000 --repeat 3
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_sink_elasticsearch import many  # noqa: E402

import zeekndm.sinks.datastream as es_sink  # noqa: E402
from zeekndm.setup import run_setup  # noqa: E402
from zeekndm.sinks.elasticsearch import ElasticsearchSettings, ElasticsearchSink  # noqa: E402

SERVER = (
    "import sys, time; sys.path.insert(0, 'tests'); from es_standin import "
    "ElasticsearchStandin as S; s = S().start(); print(s.url, flush=True); time.sleep(1e9)"
)
MODES = ("no lookup", "lookup, 1 backing index", "lookup, rollover just before",
         "lookup, rollover a minute ago")  # fmt: skip
DS = "logs-zeekndm.alert-default"


def run(mode: str, batch_size: int, total: int) -> tuple[float, float, float]:
    """(alerts/s wall clock, sink CPU microseconds per alert, share of the send time spent
    in the rollover lookup) for one fresh stand-in."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        settings = ElasticsearchSettings.from_dict(
            {"hosts": [url], "batch_size": batch_size, "dedupe_lookup": mode != "no lookup"}
        )
        run_setup(settings, None, {"template"})
        alerts = many(2 * total)
        stored, fresh = alerts[:total], alerts[total:]
        with tempfile.TemporaryDirectory() as state:
            if mode.startswith("lookup, rollover"):
                filler = ElasticsearchSink(settings, Path(state) / "fill")
                for i in range(0, total, 2000):
                    assert filler.send(stored[i : i + 2000]).complete
                filler._client.indices.rollover(alias=DS)
                filler.close()
            es_sink.REALTIME_WINDOW = 0.0 if mode.endswith("minute ago") else 60.0
            sink = ElasticsearchSink(settings, Path(state))
            sink.check()
            in_lookup = [0.0]
            lookup = sink._skip_stored_elsewhere

            def timed(*args, **kw):
                t0 = time.perf_counter()
                try:
                    return lookup(*args, **kw)
                finally:
                    in_lookup[0] += time.perf_counter() - t0

            sink._skip_stored_elsewhere = timed
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, total, batch_size):
                result = sink.send(fresh[i : i + batch_size])
                assert result.complete and not result.rejected and not sink.spool
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            sink.close()
        assert sink.stats["indexed"] == total and sink.stats["duplicates"] == 0
        return total / elapsed, cpu / total * 1e6, in_lookup[0] / elapsed
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-sizes", default="100,500,2000")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"| batch size | mode | alerts | alerts/s (best of {args.repeat}) | × no lookup | "
          "sink CPU µs/alert | time in lookup |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|")
    for batch_size in (int(b) for b in args.batch_sizes.split(",")):
        base = None
        for mode in MODES:
            best = max(
                (run(mode, batch_size, args.alerts) for _ in range(args.repeat)),
                key=lambda r: r[0],
            )
            base = base or best[0]
            rate, cpu, share = best
            print(f"| {batch_size} | {mode} | {args.alerts} | {rate:,.0f} | {rate / base:.3f} | "
                  f"{cpu:.0f} | {share:.1%} |", flush=True)  # fmt: skip
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
