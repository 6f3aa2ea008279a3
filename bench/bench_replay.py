"""Replay throughput and peak memory of `zeekndm replay`, against zat's Zeek log reader.

What it measures (issue 2, "Speed and memory"), every run in a fresh process pinned to one
CPU (zeekndm is single-threaded), run one after another:

1. zat's `ZeekLogReader.readrows()` over the conn.log TSV: the baseline.
2. `python -m zeekndm replay FILE --output /dev/null` end to end on the same TSV, on the
   Zeek JSON and on the Suricata eve.json of the same traffic: wall-clock records/s
   (interpreter start-up included) and the records/s zeekndm's own summary reports. Each
   as shipped (records on ports no model watches are only shape-checked) and with
   `--parse-all` (every record parsed into a Flow and seen by the detector).
3. Peak RSS of each run: the child's own `VmHWM`, which it writes to stderr on exit.
   (`ru_maxrss` from `wait4` would not do: a forked child starts with its parent's
   resident pages counted, so it can never report less than this script's own RSS.)
4. An adversarial memory run: 1,000,000 internal sources each touching two external
   27017 destinations, interleaved with one source touching 1,000,000 distinct external
   destinations (3,000,000 records in one hour), plus the same shape at a quarter of the
   size, so a flat peak RSS shows the detector's state is bounded.

The inputs are written with `zeekndm.synth` into a temporary directory (or `--workdir`,
reused when the files are already there). Throughput is the best of `--repeat` runs.

    cd /work/main && /work/venv/bin/python bench/bench_replay.py --write-results
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zeekndm.synth import Conn, Traffic, write_eve, write_zeek_json, write_zeek_tsv  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Replay throughput and memory"

# Ordinary services besides background()'s web/DNS/LDAP-to-DCs/MongoDB-client mix, so the
# file looks like a busy sensor: most records are on ports no model watches.
_OTHER_PORTS = (
    22, 25, 110, 123, 137, 143, 161, 445, 465, 587, 853, 993, 995, 1194, 1433, 1521, 1883,
    2049, 3306, 3389, 5060, 5222, 5432, 5671, 5900, 6379, 8000, 8080, 8443, 8883, 9000,
    9092, 9200, 11211,
)  # fmt: skip
_CHUNK = 100_000  # records generated (and sorted into write order) at a time


def _other_services(t: Traffic, n: int, clients: list[str]) -> None:
    """`n` ordinary connections on many ports and ephemeral ones, in and out."""
    r = t.rng
    for _ in range(n):
        ts = t.start + r.random() * 3600.0
        port = r.choice(_OTHER_PORTS) if r.random() < 0.7 else r.randint(10_000, 65_535)
        proto = "udp" if port in (123, 137, 161, 5060) else "tcp"
        dst = t.public_ip() if r.random() < 0.6 else r.choice(clients)
        state = "SF" if r.random() < 0.85 else r.choice(("S0", "REJ", "RSTO", "SH", "S1"))
        t.add(
            Conn(
                ts,
                t.uid(),
                r.choice(clients),
                r.randint(1024, 65535),
                dst,
                port,
                proto,
                state,
                r.random() * 10,
                r.randint(40, 3000),
                r.randint(0, 20000),
            )
        )


def mixed_traffic(records: int, seed: int = 11) -> Iterator[Conn]:
    """About `records` connections in write order: 70 % synth background, 30 % other
    services, and every third hour an outbound MongoDB scan and an outbound LDAP scan.

    Generated an hour (`_CHUNK` records) at a time so memory stays small; records at the
    edge of two hours are slightly out of order, as a sensor's are.
    """
    t = Traffic(seed=seed)
    base = t.start
    clients = [
        f"10.{t.rng.randint(0, 3)}.{t.rng.randint(0, 255)}.{i % 250 + 2}" for i in range(3000)
    ]
    for hour, done in enumerate(range(0, records, _CHUNK)):
        n = min(_CHUNK, records - done)
        t.start = base + 3600.0 * hour
        scans = 0
        if hour % 3 == 0:
            scans += len(t.scan(f"10.1.7.{20 + hour % 200}", 27017, 150, start_offset=900.0))
            scans += len(t.scan(f"10.3.4.{5 + hour % 200}", 389, 60, start_offset=1500.0))
            scans += len(t.scan(f"10.3.4.{5 + hour % 200}", 636, 30, start_offset=1550.0))
        background = int((n - scans) * 0.7)
        t.background(background, duration=3600.0, clients=2000)
        _other_services(t, n - scans - background, clients)
        yield from t.in_write_order()
        t.conns.clear()


def adversarial_traffic(sources: int) -> Iterator[Conn]:
    """`sources` internal hosts each trying two external 27017 hosts, interleaved with one
    internal host trying `sources` distinct external ones: 3 x `sources` records in an hour.

    Far more sources than `max_tracked_sources` are live in one window, and the sweeper
    has far more destinations than `max_destinations_per_source`: both caps must hold.
    """
    start, step = 1_700_000_000.0, 3600.0 / (3 * sources)
    k = 0
    for i in range(sources):
        src = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        for j in (0, 1):
            dst = f"{11 + j}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
            yield Conn(start + k * step, f"A{k:017d}", src, 40000 + j, dst, 27017, "tcp", "S0")
            k += 1
        dst = f"{20 + (i >> 24)}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        yield Conn(start + k * step, f"A{k:017d}", "10.200.0.1", 50000, dst, 27017, "tcp", "REJ")
        k += 1


def _addr(prefix: int, i: int) -> str:
    return f"{prefix + (i >> 24)}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def storm_traffic(records: int, sweepers: int, share: float) -> Iterator[Conn]:
    """A scan storm: `sweepers` internal hosts each sweeping distinct external hosts on
    27017/tcp (S0, as a worm's probes are), making `share` of `records` in one hour; the
    rest is ordinary traffic (internal clients to a few hundred external web and
    database servers, answered). In time order.

    One sweeper at 100 % is a single masscan-like source; 1,000 sweepers at 50 % is a
    worm outbreak: every sweeper far above every threshold and the per-source cap.
    """
    step = 3600.0 / records
    start = 1_700_000_000.0
    per = max(1, round(1 / share)) if share < 1 else 1
    k_sweep = 0
    for k in range(records):
        ts = start + k * step
        if share >= 1 or k % per == 0:
            s = k_sweep % sweepers
            n = k_sweep // sweepers
            k_sweep += 1
            yield Conn(
                ts, f"S{k:017d}", _addr(10, 1 << 16 | s), 40000 + n % 20000,
                _addr(20 + (s & 7), n * 131 + s * 7919 & 0xFFFFFF), 27017, "tcp", "S0",
            )  # fmt: skip
        else:
            c = k * 2654435761 % 3000
            yield Conn(
                ts, f"B{k:017d}", _addr(10, 2 << 16 | c), 30000 + k % 30000,
                _addr(40, k * 40503 % 300), (443, 27017, 80, 22)[k & 3], "tcp", "SF", 0.2, 500,
                900,
            )  # fmt: skip


def growth_traffic(records: int, sources: int) -> Iterator[Conn]:
    """`records` connections from `sources` distinct internal clients, each to three
    external hosts on 27017/tcp (answered): benign clients, as many tracks as sources.
    The cost per record should not depend on how many sources are remembered."""
    step = 3600.0 / records
    start = 1_700_000_000.0
    for k in range(records):
        i = k % sources
        j = k // sources % 3
        yield Conn(
            start + k * step, f"G{k:017d}", _addr(10, 3 << 16 | i), 30000 + k % 30000,
            _addr(50 + j, i & 0xFFFFFF), 27017, "tcp", "SF", 0.1, 100, 200,
        )  # fmt: skip


STORMS = {"storm-1x100": (1, 1.0), "storm-1000x50": (1000, 0.5)}
GROWTH = (1_000, 100_000, 1_000_000)


def write_inputs(
    workdir: Path, records: int, adversarial: int, storm_records: int = 0, growth: int = 0
) -> dict[str, Path]:
    """Write (or reuse) the benchmark inputs; returns name -> path."""
    files = {
        "zeek_tsv": workdir / f"conn-{records}.log",
        "zeek_json": workdir / f"conn-{records}.json",
        "eve": workdir / f"eve-{records}.json",
    }
    writers = {"zeek_tsv": write_zeek_tsv, "zeek_json": write_zeek_json, "eve": write_eve}
    if adversarial:
        for n in (adversarial // 4, adversarial):
            files[f"adversarial-{n}"] = workdir / f"adversarial-{n}.conn.log"
    if storm_records:
        for name in STORMS:
            files[name] = workdir / f"{name}-{storm_records}.conn.log"
    if growth:
        for n in GROWTH:
            files[f"growth-{n}"] = workdir / f"growth-{n}-{growth}.conn.log"
    for name, path in files.items():
        if path.exists() and path.stat().st_size:
            continue
        started = time.perf_counter()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", buffering=1 << 20) as out:
            if name.startswith("adversarial"):
                n = write_zeek_tsv(adversarial_traffic(int(name.split("-")[1])), out)
            elif name in STORMS:
                n = write_zeek_tsv(storm_traffic(storm_records, *STORMS[name]), out)
            elif name.startswith("growth"):
                n = write_zeek_tsv(growth_traffic(growth, int(name.split("-")[1])), out)
            else:
                n = writers[name](mixed_traffic(records), out)
        tmp.replace(path)
        _note(f"wrote {path.name}: {n:,} records in {time.perf_counter() - started:.1f} s")
    return files


@dataclass(frozen=True, slots=True)
class Run:
    """One measured child process."""

    wall: float  # seconds, process start to exit
    cpu: float  # user + system seconds of the child
    stderr: str

    @property
    def max_rss_mb(self) -> float:
        """Peak RSS the child reported (`VmHWM` of its own address space, after exec)."""
        found = _HWM.findall(self.stderr)
        if not found:
            raise RuntimeError(f"no peak RSS in the child's stderr:\n{self.stderr}")
        return int(found[-1]) / 1024


def run_child(argv: list[str], cpu: int | None) -> Run:
    """Run `argv` pinned to `cpu`; wall and CPU time from this side, via `wait4`."""
    with tempfile.TemporaryFile("w+") as err:
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        started = time.perf_counter()
        child = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pin
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {child.returncode}:\n{text}")
    return Run(wall, usage.ru_utime + usage.ru_stime, text)


# Both children write their own peak RSS to stderr as they exit (an atexit hook runs after
# zeekndm's SystemExit); `python -c` plus runpy is `python -m zeekndm` with that hook.
_REPORT_HWM = (
    "import atexit, re, sys\n"
    "atexit.register(lambda: sys.stderr.write('peak-rss-kb %s\\n' % re.search("
    "r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)))\n"
)
ZEEKNDM = _REPORT_HWM + (
    "import runpy; sys.argv[0] = 'zeekndm'\n"
    "runpy.run_module('zeekndm', run_name='__main__', alter_sys=True)\n"
)
ZAT = _REPORT_HWM + (
    "import time; from zat.zeek_log_reader import ZeekLogReader\n"
    "t = time.perf_counter(); n = sum(1 for _ in ZeekLogReader(sys.argv[1]).readrows())\n"
    "print(n, time.perf_counter() - t, file=sys.stderr)\n"
)
_SUMMARY = re.compile(r"([\d,]+) records in [\d.]+ s \(([\d,]+) records/s\)")
_ALERTS = re.compile(r"alerts: (\d+)")
_ZAT_DONE = re.compile(r"^(\d+) ([\d.e-]+)$", re.M)
_HWM = re.compile(r"^peak-rss-kb (\d+)$", re.M)


@dataclass(frozen=True, slots=True)
class Row:
    what: str
    records: int
    wall_rate: float  # records / wall seconds, start-up included (best run)
    own_rate: float  # records/s as the tool itself reports (loop only; best run)
    rss_mb: float  # highest peak RSS over the runs
    cpu: float  # CPU seconds of the best run
    alerts: str = ""


def bench_zat(path: Path, repeat: int, cpu: int | None) -> Row:
    runs = [run_child([sys.executable, "-c", ZAT, str(path)], cpu) for _ in range(repeat)]
    parsed = [_ZAT_DONE.search(r.stderr) for r in runs]
    if not all(parsed):
        raise RuntimeError(f"no count in zat's stderr:\n{runs[0].stderr}")
    records = int(parsed[0].group(1))
    best = min(runs, key=lambda r: r.wall)
    return Row(
        "zat ZeekLogReader.readrows() (baseline)",
        records,
        records / best.wall,
        max(records / float(p.group(2)) for p in parsed),
        max(r.max_rss_mb for r in runs),
        best.cpu,
    )


def bench_zeekndm(what: str, path: Path, repeat: int, cpu: int | None, *extra: str) -> Row:
    argv = [sys.executable, "-c", ZEEKNDM, "replay", str(path), "--output", "/dev/null"]
    runs = [run_child(argv + list(extra), cpu) for _ in range(repeat)]
    summaries = [_SUMMARY.search(r.stderr) for r in runs]
    if not all(summaries):
        raise RuntimeError(f"no summary in zeekndm's stderr:\n{runs[0].stderr}")
    records = int(summaries[0].group(1).replace(",", ""))
    best = min(runs, key=lambda r: r.wall)
    alerts = _ALERTS.search(runs[0].stderr)
    return Row(
        what,
        records,
        records / best.wall,
        max(int(s.group(2).replace(",", "")) for s in summaries),
        max(r.max_rss_mb for r in runs),
        best.cpu,
        alerts.group(1) if alerts else "?",
    )


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} vCPU {model}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def table(rows: list[Row], repeat: int) -> str:
    zat = rows[0]
    lines = [
        f"| run | records | records/s wall (best of {repeat}) | records/s own summary "
        "| × zat (wall) | CPU s | peak RSS MB | alerts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {r.records:,} | {r.wall_rate:,.0f} | {r.own_rate:,.0f} "
            f"| {r.wall_rate / zat.wall_rate:.1f} | {r.cpu:.1f} | {r.rss_mb:.0f} "
            f"| {r.alerts or '-'} |"
        )
    return "\n".join(lines)


def storm_table(pairs: list[tuple[Row, Row]]) -> str:
    """One row per storm input: zat on that file, zeekndm on it, the ratio, peak RSS."""
    lines = [
        "| input | records | zat records/s | zeekndm records/s (wall) | × zat | zeekndm CPU s "
        "| µs/record (CPU) | peak RSS MB | alerts |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for zat, z in pairs:
        lines.append(
            f"| {z.what} | {z.records:,} | {zat.wall_rate:,.0f} | {z.wall_rate:,.0f} "
            f"| {z.wall_rate / zat.wall_rate:.1f} | {z.cpu:.1f} | {z.cpu / z.records * 1e6:.2f} "
            f"| {z.rss_mb:.0f} | {z.alerts or '-'} |"
        )
    return "\n".join(lines)


def growth_table(rows: list[Row]) -> str:
    lines = [
        "| distinct sources | records | records/s (wall) | µs/record (CPU) | peak RSS MB |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.what} | {r.records:,} | {r.wall_rate:,.0f} | {r.cpu / r.records * 1e6:.2f} "
            f"| {r.rss_mb:.0f} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[Row], storms: list[tuple[Row, Row]]) -> list[str]:
    """The targets of issue 15, checked against this run."""
    by = {r.what: r for r in rows}
    out = []
    tsv = by.get("zeekndm replay, Zeek TSV")
    eve = by.get("zeekndm replay, eve.json")
    if rows and tsv is not None:
        zat = rows[0]
        ratio = tsv.wall_rate / zat.wall_rate
        out.append(
            f"- ordinary TSV end to end: {ratio:.1f}x zat's reader on the wall clock "
            f"(target ≥ 10x, moonshot 25x): {'met' if ratio >= 10 else 'MISSED'}."
        )
    if eve is not None:
        out.append(
            f"- eve.json end to end: {eve.wall_rate:,.0f} records/s (target ≥ 1,000,000): "
            f"{'met' if eve.wall_rate >= 1e6 else 'MISSED'}."
        )
    for zat, z in storms:
        target = 3.0 if "1 sweeper" in z.what else 2.0
        ratio = z.wall_rate / zat.wall_rate
        out.append(
            f"- {z.what}: {ratio:.1f}x zat (target ≥ {target:.0f}x): "
            f"{'met' if ratio >= target else 'MISSED'}; peak RSS {z.rss_mb:.0f} MB "
            f"(target < 200 MB): {'met' if z.rss_mb < 200 else 'MISSED'}."
        )
    adv = [r for r in rows if r.what.startswith("adversarial")]
    if len(adv) == 2:
        out.append(
            f"- adversarial input, {adv[0].records:,} → {adv[1].records:,} records: peak RSS "
            f"{adv[0].rss_mb:.0f} → {adv[1].rss_mb:.0f} MB."
        )
    return out


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def write_results(text: str) -> None:
    """Replace this benchmark's section of RESULTS.md (up to the next `## `), or append it."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = current.find(SECTION + "\n")
    if start < 0:
        RESULTS.write_text(current.rstrip("\n") + "\n\n" + text)
        return
    end = current.find("\n## ", start + len(SECTION))
    rest = "" if end < 0 else current[end + 1 :]
    RESULTS.write_text(current[:start] + text + ("\n" + rest if rest else ""))


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


GROUPS = ("ordinary", "parse-all", "storms", "growth", "adversarial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument(
        "--adversarial-sources", type=int, default=1_000_000, help="0 skips the memory run"
    )
    parser.add_argument(
        "--storm-records", type=int, default=1_000_000, help="records per storm input"
    )
    parser.add_argument(
        "--growth-records", type=int, default=1_000_000, help="records per growth input"
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated groups to run (default all): {', '.join(GROUPS)}",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="environment of the zeekndm children (e.g. ZEEKNDM_CORE=python)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per throughput figure")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin each run to (-1: none)")
    parser.add_argument("--workdir", type=Path, help="keep (and reuse) the inputs here")
    parser.add_argument("--write-results", action="store_true", help="update bench/RESULTS.md")
    args = parser.parse_args()
    cpu = None if args.cpu < 0 else args.cpu
    groups = set(args.only.split(","))
    for name in args.env:
        key, _, value = name.partition("=")
        os.environ[key] = value
    # The children run as an installed package does: with its bytecode compiled (pip
    # compiles it at install time) and written, not recompiled from source on every
    # start as PYTHONDONTWRITEBYTECODE (set on some machines) would have it.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "zeekndm")], check=True)
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        files = write_inputs(
            workdir,
            args.records,
            args.adversarial_sources if "adversarial" in groups else 0,
            args.storm_records if "storms" in groups else 0,
            args.growth_records if "growth" in groups else 0,
        )
        plan = []
        if "ordinary" in groups:
            plan += [
                ("zeekndm replay, Zeek TSV", "zeek_tsv", ()),
                ("zeekndm replay, Zeek JSON", "zeek_json", ()),
                ("zeekndm replay, eve.json", "eve", ()),
            ]
        if "parse-all" in groups:
            plan += [
                ("zeekndm replay --parse-all, Zeek TSV", "zeek_tsv", ("--parse-all",)),
                ("zeekndm replay --parse-all, Zeek JSON", "zeek_json", ("--parse-all",)),
                ("zeekndm replay --parse-all, eve.json", "eve", ("--parse-all",)),
            ]
        rows: list[Row] = []
        if plan:
            _note("zat baseline ...")
            rows.append(bench_zat(files["zeek_tsv"], args.repeat, cpu))
        for what, name, extra in plan:
            _note(f"{what} ...")
            rows.append(bench_zeekndm(what, files[name], args.repeat, cpu, *extra))
        storms: list[tuple[Row, Row]] = []
        for name, (sweepers, share) in STORMS.items():
            if name not in files:
                continue
            what = f"{sweepers:,} sweeper{'s' if sweepers > 1 else ''}, {share:.0%} of the records"
            _note(f"{name} ...")
            zat = bench_zat(files[name], args.repeat, cpu)
            storms.append((zat, bench_zeekndm(what, files[name], args.repeat, cpu)))
        growth = []
        for n in GROWTH:
            if f"growth-{n}" in files:
                _note(f"growth-{n} ...")
                growth.append(bench_zeekndm(f"{n:,}", files[f"growth-{n}"], args.repeat, cpu))
        for name in sorted((n for n in files if n.startswith("adversarial")), key=len):
            _note(f"{name} ...")
            n = int(name.split("-")[1])
            rows.append(
                bench_zeekndm(f"adversarial, {n:,} sources + 1 sweeper", files[name], 1, cpu)
            )
    load_after = load_average()
    command = "python bench/bench_replay.py " + " ".join(sys.argv[1:])
    parts = [
        SECTION,
        "",
        f"Command ({machine()}, {dt.date.today().isoformat()}, load average "
        f"{load_before} before and {load_after} after):",
        "",
        "    " + command.strip(),
        "",
    ]
    if rows:
        parts += [
            f"Inputs from `zeekndm.synth`: {args.records:,} connections (70 % synth "
            "background, 30 % other services on ~35 ports and ephemeral ones, an outbound "
            "MongoDB and LDAP scan every third hour), written as Zeek TSV, Zeek JSON and "
            "Suricata eve.json (eve adds one dns event per ten flows, skipped and counted). "
            "Each run is a fresh process pinned to one CPU, output to /dev/null; "
            '"wall" includes interpreter start-up, "own summary" is the rate the tool '
            "prints (zat: its read loop only). Peak RSS is the child's own `VmHWM` at exit.",
            "",
            table(rows, args.repeat),
            "",
        ]
    if storms:
        parts += [
            f"Scan storms ({args.storm_records:,} records in one hour, Zeek TSV; zat's reader "
            "on the same file, same run; best of "
            f"{args.repeat}):",
            "",
            storm_table(storms),
            "",
        ]
    if growth:
        parts += [
            f"Growth ({args.growth_records:,} records of benign clients, each to 3 external "
            "hosts on 27017/tcp, from N distinct sources; CPU per record should stay flat):",
            "",
            growth_table(growth),
            "",
        ]
    parts += [*verdicts(rows, storms), ""]
    text = "\n".join(parts)
    print(text)
    if args.write_results:
        write_results(text)
        _note(f"updated {RESULTS}")


if __name__ == "__main__":
    main()
