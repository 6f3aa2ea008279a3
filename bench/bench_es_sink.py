"""Throughput of the Elasticsearch output into the in-process stand-in (alerts per second).

What it measures: wall-clock alerts/s through `ElasticsearchSink.send` (bulk bodies built
by the official client, per-item results parsed) with the stand-in in a separate process,
and the sink's own CPU time per alert. The stand-in (pure Python, validating every field
against the template) is usually the bottleneck; a real cluster has its own indexing
cost, so read the CPU column as the sink's ceiling, not Elasticsearch's.

    cd /work/main && PYTHONPATH=.:tests /work/venv/bin/python bench/bench_es_sink.py
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_sink_elasticsearch import many  # noqa: E402

from zeekndm.setup import run_setup  # noqa: E402
from zeekndm.sinks.elasticsearch import ElasticsearchSettings, ElasticsearchSink  # noqa: E402

SERVER = (
    "import sys, time; sys.path.insert(0, 'tests'); from es_standin import "
    "ElasticsearchStandin as S; s = S().start(); print(s.url, flush=True); time.sleep(1e9)"
)


def run(batch_size: int, total: int) -> tuple[float, float]:
    """(alerts/s wall clock, sink CPU microseconds per alert) for one fresh stand-in."""
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        url = server.stdout.readline().strip()
        settings = ElasticsearchSettings.from_dict({"hosts": [url], "batch_size": batch_size})
        run_setup(settings, None, {"template"})
        alerts = many(total)
        with tempfile.TemporaryDirectory() as state:
            sink = ElasticsearchSink(settings, Path(state))
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, total, batch_size):
                result = sink.send(alerts[i : i + batch_size])
                assert result.complete and not result.rejected and not sink.spool
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            sink.close()
        assert sink.stats["indexed"] == total
        return total / elapsed, cpu / total * 1e6
    finally:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"| batch size | alerts | alerts/s (best of {args.repeat}) | sink CPU µs/alert |")
    print("|---:|---:|---:|---:|")
    for batch_size in (100, 500, 2000):
        rate, cpu = max(run(batch_size, args.alerts) for _ in range(args.repeat))
        print(f"| {batch_size} | {args.alerts} | {rate:,.0f} | {cpu:.0f} |")


if __name__ == "__main__":
    main()
