"""The Kafka input (issue 16): consumer throughput, produce-to-alert latency, takeover time.

Everything runs against the real Kafka 4.x broker of the test suite (`tests/engines`,
started here on a free port and stopped at the end), on this machine:

1. Throughput. The benchmark traffic of `bench_replay.py` (`mixed_traffic`, 1,000,000
   connections, `--records`) as Zeek JSON, written to a file and produced to a topic of
   `--partitions` partitions keyed by `id.orig_h` (murmur2, as a Java producer or `zeekndm
   rekey` keys it). Then, one after another, each a fresh process: `zeekndm replay FILE -o
   /dev/null` (as shipped, and `--parse-all`: a Kafka input parses every record) — the
   baseline, in the same run — then one `zeekndm run` member reading the whole topic as a
   new consumer group, then two members in another group sharing it. A run's time is from
   the launch of its process(es) until the committed offsets (each member's registry, one
   commit a second) cover every message; so it includes start-up, joining the group and up
   to one commit interval. Reported: records/s, the ratio to replay, the members' CPU
   seconds and their alert count (replay's, less its end-of-input END records, which a
   stream never reaches).
2. Latency. One member on an empty topic; this script produces Zeek JSON records at
   `--rate` for `--seconds` (`ts` = the wall clock, a live sensor's), in batches every
   `--batch-ms`, with `--scans-per-second` outbound MongoDB scans embedded: each from its
   own internal source to 25 distinct external hosts on 27017/tcp over `--scan-span`
   seconds, so its 25th record crosses the model's threshold and makes one START alert.
   Latency = when the alert line appeared in the member's NDJSON output (polled every
   millisecond) - when the record that crossed the threshold (the alert's `@timestamp` is
   its `ts`: the 10th with the model's early path, else the 25th) was handed to the
   producer (its `linger.ms` of 5 ms included, as a shipper's would be).
3. Takeover. Two members with `session_timeout` `--session-timeout`; records flow at
   `--takeover-rate`; one member is SIGKILLed. Reported: kill -> the survivor's assignment
   of the dead member's partitions (the group notices the death at the session timeout),
   the survivor's restore of their detector state from the state topic (its log line), and
   kill -> the survivor's first commit past the dead member's last committed offsets on
   every one of them (its sources resumed and their records delivered).

    cd /work/wt/kafka && /work/venvs/kafka/bin/python bench/bench_kafka.py --write-results

`--write-results` replaces the "Kafka input" section of RESULTS.md. The load average is
printed before and after: the machine is shared, say so with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import math
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import engines  # noqa: E402
from bench_replay import mixed_traffic  # noqa: E402

from zeekndm.enrich import isotime  # noqa: E402
from zeekndm.synth import Conn, Traffic, write_zeek_json  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Kafka input"
RULE = "mongodb_scan_internal_external"
THRESHOLD = 25


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


# -- plumbing -----------------------------------------------------------------------------
def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[
        name
    ].result(timeout=30)


def producer(bootstrap: str):
    from confluent_kafka import Producer

    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
        }
    )


def produce_file(bootstrap: str, topic: str, path: Path) -> tuple[int, float]:
    p = producer(bootstrap)
    started = time.perf_counter()
    n = 0
    with open(path, "rb") as f:
        for line in f:
            line = line.rstrip(b"\n")
            src = orjson.loads(line)["id.orig_h"]
            while True:
                try:
                    p.produce(topic, value=line, key=src.encode())
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
            if n % 10000 == 0:
                p.poll(0)
    assert p.flush(60) == 0
    return n, time.perf_counter() - started


def config(tmp: Path, bootstrap: str, topic: str, group: str, **opts) -> Path:
    cfg = tmp / f"{group}.yaml"
    lines = [
        "inputs:",
        "  - type: kafka",
        f"    brokers: [{bootstrap}]",
        f"    topics: [{topic}]",
        f"    group: {group}",
        f"    state_topic: {group}-state",
        *(f"    {k}: {v}" for k, v in opts.items()),
        "logging:",
        "  stats_interval: 5",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


@dataclass
class Member:
    tmp: Path
    name: str
    cfg: Path
    proc: subprocess.Popen | None = None
    ps: psutil.Process | None = None
    cpu: float = 0.0

    @property
    def state(self) -> Path:
        return self.tmp / f"state-{self.name}"

    @property
    def out(self) -> Path:
        return self.tmp / f"alerts-{self.name}.ndjson"

    @property
    def log(self) -> Path:
        return self.tmp / f"{self.name}.log"

    def start(self) -> None:
        argv = [
            sys.executable, "-m", "zeekndm", "run", "--config", str(self.cfg),
            "--output", str(self.out), "--state-dir", str(self.state),
        ]  # fmt: skip
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(argv, stderr=err, stdout=subprocess.DEVNULL)
        self.ps = psutil.Process(self.proc.pid)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def partitions(self) -> dict[int, dict]:
        try:
            data = orjson.loads((self.state / "registry.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return {p["partition"]: p for p in (data.get("kafka") or {}).get("partitions") or []}

    def sample_cpu(self) -> None:
        try:
            t = self.ps.cpu_times()
            self.cpu = t.user + t.system
        except (psutil.Error, AttributeError):
            pass

    def alerts(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [orjson.loads(x) for x in self.out.read_bytes().splitlines() if x.strip()]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.sample_cpu()
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def wait(pred, timeout: float, what: str, step: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(step)
    return time.monotonic()


def committed(members: list[Member]) -> dict[int, int]:
    out: dict[int, int] = {}
    for m in members:
        for n, p in m.partitions().items():
            out[n] = max(out.get(n, 0), p["offset"])
    return out


# -- 1. throughput ------------------------------------------------------------------------
@dataclass
class Row:
    what: str
    records: int
    seconds: float
    cpu: float
    alerts: int

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def replay(path: Path, records: int, *extra: str) -> Row:
    out = path.with_suffix(f".replay{len(extra)}.ndjson")
    started = time.perf_counter()
    before = os.times()
    run = subprocess.run(
        [sys.executable, "-m", "zeekndm", "replay", str(path), "-o", str(out), *extra],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = os.times()
    assert run.returncode == 0, run.stderr
    docs = [orjson.loads(x) for x in out.read_bytes().splitlines() if x.strip()]
    alerts = sum(1 for d in docs if d["zeekndm"].get("end_reason") != "input_end")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    label = "zeekndm replay FILE" + (" " + " ".join(extra) if extra else "")
    return Row(label, records, wall, cpu, alerts)


def group_run(
    tmp: Path, bootstrap: str, topic: str, n_members: int, records: int, partitions: int
) -> Row:
    group = f"tput{n_members}-{os.getpid()}"
    cfg = config(tmp, bootstrap, topic, group)
    members = [Member(tmp, f"{group}-{i}", cfg) for i in range(n_members)]
    started = time.monotonic()
    for m in members:
        m.start()

    def done() -> bool:
        c = committed(members)
        for m in members:
            m.sample_cpu()
        return len(c) == partitions and sum(c.values()) == records

    finished = wait(done, 1800, f"{n_members} member(s) to commit every record", step=0.1)
    for m in members:
        assert m.stop() == 0, m.text()[-2000:]
    ids = {d["event"]["id"] for m in members for d in m.alerts()}
    label = f"zeekndm run, kafka input, {n_members} member{'s' if n_members > 1 else ''}"
    return Row(label, records, finished - started, sum(m.cpu for m in members), len(ids))


# -- 2. latency ---------------------------------------------------------------------------
@dataclass
class Latency:
    rate: int
    seconds: float
    produced: int = 0
    scans: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    missing: int = 0
    cpu_percent: float = 0.0


def latency_run(
    tmp: Path,
    bootstrap: str,
    partitions: int,
    rate: int,
    seconds: float,
    batch_ms: float,
    scans_per_second: float,
    scan_span: float,
    warmup: float = 3.0,
) -> Latency:
    topic = f"latency-{rate}-{os.getpid()}"
    create_topic(bootstrap, topic, partitions)
    m = Member(tmp, f"lat-{rate}", config(tmp, bootstrap, topic, f"lat{rate}-{os.getpid()}"))
    m.start()
    wait(lambda: "kafka: assigned" in m.text(), 60, "the member's assignment")
    time.sleep(1.0)
    t = Traffic(seed=7)
    t.background(20000, duration=3600.0)
    buf = io.StringIO()
    write_zeek_json(t.conns, buf)
    pool = [orjson.loads(x) for x in buf.getvalue().splitlines()]
    r = random.Random(7)
    # the schedule: (seconds from start, record, its scan's source or None)
    events: list[tuple[float, dict, str | None]] = []
    total = int(rate * seconds)
    n_scans = int(scans_per_second * (seconds - warmup - scan_span))
    for i in range(total):
        events.append((i / rate, pool[i % len(pool)], None))
    for k in range(n_scans):
        src = f"10.200.{k // 250}.{k % 250 + 1}"
        begin = warmup + k / scans_per_second
        dsts: list[str] = []
        while len(dsts) < THRESHOLD:
            d = t.public_ip()
            if d not in dsts:
                dsts.append(d)
        scan = io.StringIO()
        write_zeek_json(
            [Conn(0.0, "C", src, r.randint(1024, 65535), d, 27017, "tcp", "S0") for d in dsts],
            scan,
        )
        for j, line in enumerate(scan.getvalue().splitlines()):
            events.append((begin + scan_span * j / (THRESHOLD - 1), orjson.loads(line), src))
    events.sort(key=lambda e: e[0])
    prod = producer(bootstrap)
    sent_at: dict[str, dict[str, float]] = {}  # scan source -> record ts (as alerts print
    seen_at: dict[str, tuple[float, str]] = {}  # it) -> when produced; source -> (seen, ts)
    tail = open(m.out, "ab+")  # noqa: SIM115 - polled below
    tail.seek(0, os.SEEK_END)
    pending = b""
    cpu0 = m.ps.cpu_times()
    t0 = time.monotonic()
    wall0 = time.time()
    i = 0
    uid = 0
    batch = batch_ms / 1000.0
    next_batch = t0
    while i < len(events) or len(seen_at) < len(sent_at):
        now = time.monotonic()
        if i < len(events) and now >= next_batch:
            horizon = now - t0
            while i < len(events) and events[i][0] <= horizon:
                offset, rec, scan_src = events[i]
                uid += 1
                ts = wall0 + offset
                value = orjson.dumps({**rec, "ts": ts, "uid": f"L{uid}"})
                prod.produce(topic, value=value, key=rec["id.orig_h"].encode())
                if scan_src is not None:
                    sent_at.setdefault(scan_src, {})[isotime(ts)] = time.monotonic()
                i += 1
            prod.poll(0)
            next_batch += batch
        data = tail.read()
        if data:
            seen = time.monotonic()
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    d = orjson.loads(line)
                    if d["rule"]["name"] == RULE and d["zeekndm"]["alert_state"] == "start":
                        seen_at.setdefault(d["source"]["ip"], (seen, d["@timestamp"]))
        if i >= len(events) and time.monotonic() - t0 > seconds + 15:
            break
        time.sleep(0.001)
    elapsed = time.monotonic() - t0
    cpu1 = m.ps.cpu_times()
    prod.flush(30)
    tail.close()
    assert m.stop() == 0, m.text()[-2000:]
    out = Latency(rate, seconds, produced=len(events), scans=len(sent_at))
    # latency from the record that crossed the threshold (the alert's @timestamp is its ts;
    # with the early path on, the 10th of the scan's records, else the 25th)
    out.latencies_ms = [
        (seen - sent_at[s][ts]) * 1000
        for s, (seen, ts) in seen_at.items()
        if s in sent_at and ts in sent_at[s]
    ]
    out.missing = len(sent_at) - len(out.latencies_ms)
    used = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    out.cpu_percent = 100 * used / elapsed
    return out


# -- 3. takeover --------------------------------------------------------------------------
@dataclass
class Takeover:
    session_timeout: float
    rate: int
    moved: list[int] = field(default_factory=list)
    assigned_after: float = float("nan")
    restore_seconds: float = float("nan")
    sources_restored: int = 0
    resumed_after: float = float("nan")


def takeover_run(
    tmp: Path, bootstrap: str, path: Path, partitions: int, rate: int, session_timeout: float
) -> Takeover:
    topic = f"takeover-{os.getpid()}"
    create_topic(bootstrap, topic, partitions)
    group = f"take-{os.getpid()}"
    cfg = config(
        tmp,
        bootstrap,
        topic,
        group,
        session_timeout=session_timeout,
        transaction_timeout=max(10, session_timeout),
    )
    a, b = Member(tmp, f"{group}-a", cfg), Member(tmp, f"{group}-b", cfg)
    a.start()
    wait(lambda: "kafka: assigned" in a.text(), 60, "a's assignment")
    b.start()
    stop = threading.Event()
    errors: list[BaseException] = []

    def flow() -> None:
        try:
            p = producer(bootstrap)
            period = 1.0 / rate
            next_at = time.monotonic()
            with open(path, "rb") as f:
                for line in f:
                    if stop.is_set():
                        break
                    line = line.rstrip(b"\n")
                    p.produce(topic, value=line, key=orjson.loads(line)["id.orig_h"].encode())
                    p.poll(0)
                    next_at += period
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            p.flush(30)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=flow, daemon=True)
    thread.start()
    out = Takeover(session_timeout, rate)
    try:
        # both members own partitions and have committed state for them
        wait(
            lambda: a.partitions() and b.partitions()
            and all(p["offset"] > 0 for m in (a, b) for p in m.partitions().values())
            and len(a.partitions()) + len(b.partitions()) == partitions,
            120,
            "both members to commit their partitions",
            step=0.1,
        )  # fmt: skip
        time.sleep(5.0)
        last = {n: p["offset"] for n, p in a.partitions().items()}
        out.moved = sorted(last)
        assigned_before = b.text().count("kafka: assigned")
        killed = time.monotonic()
        a.stop(signal.SIGKILL)
        got = wait(lambda: b.text().count("kafka: assigned") > assigned_before, 300, "the takeover")
        out.assigned_after = got - killed
        line = [ln for ln in b.text().splitlines() if "kafka: assigned" in ln][-1]
        found = re.search(r"\((\d+) tracked sources\) restored in ([\d.]+) s", line)
        if found:
            out.sources_restored = int(found.group(1))
            out.restore_seconds = float(found.group(2))
        done = wait(
            lambda: all(b.partitions().get(n, {}).get("offset", 0) > o for n, o in last.items()),
            300,
            "the survivor to commit past the takeover",
        )
        out.resumed_after = done - killed
    finally:
        stop.set()
        thread.join(60)
        b.stop()
        a.stop(signal.SIGKILL)
    if errors:
        raise errors[0]
    return out


# -- report -------------------------------------------------------------------------------
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


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def render(args, rows, lats, take, produced, before, after, kafka_version) -> str:
    base = rows[0] if rows else None
    cmd = " ".join(["python", "bench/bench_kafka.py", *sys.argv[1:]])
    out = [
        SECTION,
        "",
        f"`{cmd}` on {dt.date.today().isoformat()}: {machine()}; Kafka {kafka_version} "
        f"(tests/engines, one broker on this machine, serial GC); load average "
        f"(1/5/15 min) {before} before, {after} after — the machine is shared with other "
        "sessions, so figures move with it.",
        "",
        f"Throughput: {args.records:,} records of the replay benchmark's traffic as Zeek "
        f"JSON, in a file and in a topic of {args.partitions} partitions keyed by "
        f"`id.orig_h` (produced in {produced:.1f} s, not counted). Each run a fresh process "
        "(or two); a member's time runs from its launch until the committed offsets cover "
        "every message (start-up, group join, up to one commit interval included).",
        "",
        "| run | records | wall s | records/s | vs replay | CPU s | alerts |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        assert base is not None
        out.append(
            f"| {r.what} | {r.records:,} | {r.seconds:.1f} | {r.rate:,.0f} | "
            f"{r.rate / base.rate:.2f} | {r.cpu:.1f} | {r.alerts} |"
        )
    out += [
        "",
        "(alerts: replay's without its end-of-input END records; the members' distinct ids.) "
        "A member's CPU seconds are well below its wall time: it waits for the broker, "
        "which runs on the same 2 vCPUs (C1 JIT only, serial GC: a test engine), as do "
        "the second member and this script, so one and two members come out alike here; "
        "on a real cluster the members run on their own hosts. A member parses each "
        "partition's messages of a batch together through the readers' block scan and "
        "prefilter, as replay does, and commits a Kafka transaction every second.",
        "",
        f"Latency, produce to alert: one member on a {args.partitions}-partition topic; "
        f"records produced at the rate below for {args.seconds:g} s in batches every "
        f"{args.batch_ms:g} ms, ts = wall clock, {args.scans_per_second:g} MongoDB scans a "
        f"second embedded (25 destinations over {args.scan_span:g} s each); latency = the "
        "START alert's line in the NDJSON output - the record that crossed the threshold "
        "(the alert's @timestamp) handed to the producer (linger.ms 5).",
        "",
        "| rate | records | scans | median ms | p90 ms | p99 ms | max ms | missing | member CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in lats:
        lat = x.latencies_ms
        out.append(
            f"| {x.rate:,}/s | {x.produced:,} | {x.scans} | {percentile(lat, 50):.0f} | "
            f"{percentile(lat, 90):.0f} | {percentile(lat, 99):.0f} | "
            f"{max(lat) if lat else float('nan'):.0f} | {x.missing} | {x.cpu_percent:.0f} % |"
        )
    if take is not None:
        out += [
            "",
            f"Takeover after a SIGKILL: two members, records flowing at {take.rate:,}/s, "
            f"`session_timeout: {take.session_timeout:g}`; the killed member owned partitions "
            f"{take.moved}. Kill -> the survivor assigned them: {take.assigned_after:.1f} s "
            f"(the group waits for the session timeout); restoring their detector state "
            f"({take.sources_restored} tracked sources) from the state topic: "
            f"{take.restore_seconds:.2f} s; kill -> the survivor's first commit past the dead "
            f"member's last offsets on all of them: {take.resumed_after:.1f} s. The session "
            "timeout dominates: `session_timeout` (45 s by default) trades false alarms "
            "(a long GC pause, a slow network) against this time.",
        ]
    return "\n".join(out) + "\n"


def write_results(text: str) -> None:
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = current.find(SECTION + "\n")
    if start < 0:
        RESULTS.write_text(current.rstrip("\n") + "\n\n" + text)
        return
    end = current.find("\n## ", start + len(SECTION))
    rest = "" if end < 0 else current[end + 1 :]
    RESULTS.write_text(current[:start] + text + ("\n" + rest if rest else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--workdir", type=Path, help="keep the inputs here (reused)")
    ap.add_argument("--rate", type=int, action="append", help="latency rates (10000)")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--batch-ms", type=float, default=10.0)
    ap.add_argument("--scans-per-second", type=float, default=2.0)
    ap.add_argument("--scan-span", type=float, default=2.0)
    ap.add_argument("--session-timeout", type=float, default=10.0)
    ap.add_argument("--takeover-rate", type=int, default=2000)
    ap.add_argument("--skip", action="append", default=[], choices=["throughput", "latency",
                    "takeover"])  # fmt: skip
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)
    rates = args.rate or [10000]
    before = load()
    _note(f"load before: {before}")
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmpdir:
        tmp = Path(tmpdir)
        work = args.workdir or tmp
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"conn-{args.records}.json"
        if not (path.exists() and path.stat().st_size):
            with open(path.with_suffix(".tmp"), "w", buffering=1 << 20) as f:
                n = write_zeek_json(mixed_traffic(args.records), f)
            path.with_suffix(".tmp").replace(path)
            _note(f"wrote {path.name}: {n:,} records")
        records = sum(1 for _ in open(path, "rb"))
        engine = engines.start("kafka")
        _note(f"kafka {engine.version} at {engine.bootstrap} in {engine.started_in:.1f} s")
        rows: list[Row] = []
        lats: list[Latency] = []
        take = None
        produced = float("nan")
        try:
            if "throughput" not in args.skip:
                topic = f"tput-{os.getpid()}"
                create_topic(engine.bootstrap, topic, args.partitions)
                _, produced = produce_file(engine.bootstrap, topic, path)
                _note(f"produced {records:,} records in {produced:.1f} s")
                rows.append(replay(path, records))
                rows.append(replay(path, records, "--parse-all"))
                for r in rows:
                    _note(f"{r.what}: {r.rate:,.0f}/s")
                for n in (1, 2):
                    rows.append(
                        group_run(tmp, engine.bootstrap, topic, n, records, args.partitions)
                    )
                    _note(f"{rows[-1].what}: {rows[-1].rate:,.0f}/s, {rows[-1].alerts} alerts")
            if "latency" not in args.skip:
                for rate in rates:
                    lats.append(
                        latency_run(
                            tmp,
                            engine.bootstrap,
                            args.partitions,
                            rate,
                            args.seconds,
                            args.batch_ms,
                            args.scans_per_second,
                            args.scan_span,
                        )  # fmt: skip
                    )
                    x = lats[-1]
                    _note(
                        f"latency at {rate}/s: median {percentile(x.latencies_ms, 50):.0f} "
                        f"ms, p99 {percentile(x.latencies_ms, 99):.0f} ms, missing {x.missing}"
                    )
            if "takeover" not in args.skip:
                take = takeover_run(
                    tmp, engine.bootstrap, path, args.partitions, args.takeover_rate,
                    args.session_timeout,
                )  # fmt: skip
                _note(json.dumps(take.__dict__))
        finally:
            engine.stop()
    after = load()
    text = render(args, rows, lats, take, produced, before, after, engine.version)
    print(text)
    if args.write_results and rows:
        write_results(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
