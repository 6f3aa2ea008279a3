"""`zeekndm tune` against `zeekndm replay` on the same 1M-record files, and zat's loaders.

Same inputs and method as `bench_replay.py` (its generator, its child runner: a fresh
process per run pinned to one CPU, wall clock with interpreter start-up, peak RSS from
the child's own VmHWM), one run after another in this order per round:

1. zat's `ZeekLogReader.readrows()` over the TSV (the baseline of every bench table);
2. zat's `LogToDataFrame.create_dataframe()` over the TSV, reading only the columns
   tune needs (ts, uid, the four id fields, proto, conn_state, local_orig, local_resp):
   the pandas loader issue 14 names for the statistics;
3. `zeekndm replay FILE --output /dev/null` and `zeekndm tune FILE --json` on the Zeek
   TSV, the Zeek JSON and the eve.json of the same traffic (the default models; tune
   reads once, then runs the what-if: four more detector runs over the counted records).

    python bench/bench_tune.py --workdir /tmp/tunebench --write-results
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_replay as br  # noqa: E402

SECTION = "## Tuning: tune against replay"
ZAT_DF = br._REPORT_HWM + (
    "import time; from zat.log_to_dataframe import LogToDataFrame\n"
    "cols = ['ts', 'uid', 'id.orig_h', 'id.orig_p', 'id.resp_h', 'id.resp_p', 'proto',\n"
    "        'conn_state', 'local_orig', 'local_resp']\n"
    "t = time.perf_counter()\n"
    "df = LogToDataFrame().create_dataframe(sys.argv[1], ts_index=False, usecols=cols)\n"
    "print(len(df), time.perf_counter() - t, file=sys.stderr)\n"
)


def bench_zat_df(path: Path, repeat: int, cpu: int | None) -> br.Row:
    runs = [br.run_child([sys.executable, "-c", ZAT_DF, str(path)], cpu) for _ in range(repeat)]
    parsed = [br._ZAT_DONE.search(r.stderr) for r in runs]
    if not all(parsed):
        raise RuntimeError(f"no count in zat's stderr:\n{runs[0].stderr}")
    records = int(parsed[0].group(1))
    best = min(runs, key=lambda r: r.wall)
    return br.Row(
        "zat LogToDataFrame, 10 columns (pandas)",
        records,
        records / best.wall,
        max(records / float(p.group(2)) for p in parsed),
        max(r.max_rss_mb for r in runs),
        best.cpu,
    )


def bench_tune(what: str, path: Path, repeat: int, cpu: int | None) -> br.Row:
    argv = [sys.executable, "-c", br.ZEEKNDM, "tune", str(path), "--json"]
    runs = [br.run_child(argv, cpu) for _ in range(repeat)]
    summaries = [br._SUMMARY.search(r.stderr) for r in runs]
    if not all(summaries):
        raise RuntimeError(f"no summary in tune's stderr:\n{runs[0].stderr}")
    records = int(summaries[0].group(1).replace(",", ""))
    best = min(runs, key=lambda r: r.wall)
    return br.Row(
        what,
        records,
        records / best.wall,
        max(int(s.group(2).replace(",", "")) for s in summaries),
        max(r.max_rss_mb for r in runs),
        best.cpu,
    )


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f} (1 min) / {five:.1f} (5 min)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin each run to (-1: none)")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args()
    cpu = None if args.cpu < 0 else args.cpu
    args.workdir.mkdir(parents=True, exist_ok=True)
    files = br.write_inputs(args.workdir, args.records, 0)
    load_before = load()
    rows = [br.bench_zat(files["zeek_tsv"], args.repeat, cpu)]
    br._note(f"zat reader: {rows[-1].wall_rate:,.0f} records/s")
    rows.append(bench_zat_df(files["zeek_tsv"], args.repeat, cpu))
    br._note(f"zat DataFrame: {rows[-1].wall_rate:,.0f} records/s")
    for name, label in (("zeek_tsv", "Zeek TSV"), ("zeek_json", "Zeek JSON"), ("eve", "eve.json")):
        rows.append(br.bench_zeekndm(f"zeekndm replay, {label}", files[name], args.repeat, cpu))
        br._note(f"{rows[-1].what}: {rows[-1].wall_rate:,.0f} records/s")
        rows.append(bench_tune(f"zeekndm tune, {label}", files[name], args.repeat, cpu))
        br._note(f"{rows[-1].what}: {rows[-1].wall_rate:,.0f} records/s")
    load_after = load()
    by = {r.what: r for r in rows}
    lines = [
        SECTION,
        "",
        f"Command ({br.machine()}, {dt.date.today().isoformat()}; load average before "
        f"{load_before}, after {load_after}):",
        "",
        f"    python bench/bench_tune.py --workdir {args.workdir} --records {args.records} "
        f"--repeat {args.repeat} --cpu {args.cpu}",
        "",
        "Same inputs as the replay benchmark (1,000,000 connections of mixed traffic; the "
        "eight default models). Each run a fresh process pinned to one CPU; best wall of "
        f"{args.repeat}.",
        "",
        br.table(rows, args.repeat).replace("| alerts |", "| alerts (replay) |"),
        "",
    ]
    for label in ("Zeek TSV", "Zeek JSON", "eve.json"):
        r, t = by[f"zeekndm replay, {label}"], by[f"zeekndm tune, {label}"]
        lines.append(
            f"- {label}: tune {t.wall_rate:,.0f} records/s against replay {r.wall_rate:,.0f} "
            f"(tune / replay {t.wall_rate / r.wall_rate:.2f} on the wall clock, CPU "
            f"{t.cpu:.1f} s against {r.cpu:.1f} s)."
        )
    zdf, tsv = by["zat LogToDataFrame, 10 columns (pandas)"], by["zeekndm tune, Zeek TSV"]
    lines.append(
        f"- zat's LogToDataFrame only loads 10 columns into pandas at {zdf.wall_rate:,.0f} "
        f"records/s ({zdf.rss_mb:.0f} MB); tune reads, counts, suggests and runs the what-if "
        f"at {tsv.wall_rate:,.0f} records/s ({tsv.rss_mb:.0f} MB)."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_results:
        current = br.RESULTS.read_text()
        start = current.find(SECTION + "\n")
        if start < 0:
            br.RESULTS.write_text(current.rstrip("\n") + "\n\n" + text)
        else:
            end = current.find("\n## ", start + len(SECTION))
            rest = "" if end < 0 else current[end + 1 :]
            br.RESULTS.write_text(current[:start] + text + ("\n" + rest if rest else ""))


if __name__ == "__main__":
    main()
