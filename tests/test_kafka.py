"""The Kafka input against a real Kafka 4.x broker (tests/engines): issue 16.

The central test produces held-out-style traffic keyed by source into a topic with four
partitions while two `zeekndm run` processes share it as one consumer group; one is
SIGKILLed mid-stream and the other takes its partitions over. Every alert, taken together
in the Elasticsearch both deliver to, is what `zeekndm replay` finds in the same records:
no id twice and none missing. Then: an unkeyed topic triggers the key-check warning and,
through `zeekndm rekey`, gives the same detections; bad messages are counted per partition
and never stop the consumer; event time is per partition.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka_traffic import (
    Producing,
    create_topic,
    produce,
    replay_alerts,
    scenario,
    source_of,
)

pytestmark = [
    pytest.mark.engine,
    pytest.mark.kafka,
    pytest.mark.skipif(sys.platform != "linux", reason="live mode tests need Linux"),
]

PARTITIONS = 4
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def kafka_config(tmp: Path, bootstrap: str, topic: str, group: str, extra: str = "") -> Path:
    """A config with one kafka input tuned for a test: a short session, so a SIGKILLed
    member is noticed in seconds, and a short transaction timeout."""
    cfg = tmp / f"{group}.yaml"
    cfg.write_text(
        "inputs:\n"
        "  - type: kafka\n"
        f"    brokers: [{bootstrap}]\n"
        f"    topics: [{topic}]\n"
        f"    group: {group}\n"
        f"    state_topic: {group}-state\n"
        "    session_timeout: 6\n"
        "    transaction_timeout: 10\n"
        "    commit_interval: 0.5\n" + extra
    )
    return cfg


class Member:
    """One `zeekndm run` process of a consumer group."""

    def __init__(self, tmp: Path, name: str, config: Path, *args: str) -> None:
        self.name = name
        self.state = tmp / f"state-{name}"
        self.out = tmp / f"alerts-{name}.ndjson"
        self.log = tmp / f"{name}.log"
        self.args = [
            sys.executable, "-m", "zeekndm", "run", "--config", str(config),
            "--output", str(self.out), "--state-dir", str(self.state), *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(self.args, stderr=err, stdout=subprocess.DEVNULL, env=env)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_log(self, text: str, timeout: float = 30.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.text().count(text) < count:
            assert self.proc is not None and self.proc.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} in {self.name}:\n" + self.text()
            time.sleep(0.05)

    def registry(self) -> dict:
        try:
            return json.loads((self.state / "registry.json").read_text())
        except (OSError, ValueError):
            return {}

    def partitions(self) -> dict[int, dict]:
        """partition -> what this member's last local commit says of it."""
        parts = (self.registry().get("kafka") or {}).get("partitions") or []
        return {p["partition"]: p for p in parts}

    def committed(self) -> dict[int, int]:
        """partition -> committed offset, as of this member's last local commit."""
        return {n: p["offset"] for n, p in self.partitions().items()}

    def caught_up(self, records: int, partitions: int = PARTITIONS) -> bool:
        """Every record read and committed, nothing left in any partition."""
        parts = self.partitions()
        return (
            len(parts) == partitions
            and sum(p["records"] for p in parts.values()) == records
            and all(p["lag_messages"] == 0 for p in parts.values())
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)

    def alerts(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def members():
    made: list[Member] = []

    def make(*args, **kw) -> Member:
        m = Member(*args, **kw)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    """The metrics endpoint's samples by name and labels ({} while it is not up)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return {}
    out = {}
    for line in text.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def wait_until(predicate, timeout: float, what: str, context=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{context()}"
        time.sleep(0.1)


# -- the scenario ---------------------------------------------------------------
def test_group_member_sigkilled_mid_stream_loses_and_duplicates_no_alert(
    tmp_path, kafka_engine, members, es
):
    """Two members share four partitions; one is SIGKILLed while records flow; the other
    takes its partitions over with their committed state. The alerts both delivered, taken
    together, are replay's: same ids, each once."""
    from helpers import Run

    bootstrap = kafka_engine.bootstrap
    topic, group = unique("scenario"), unique("zeekndm")
    create_topic(bootstrap, topic, PARTITIONS)
    lines = scenario(PARTITIONS)
    assert Run(["setup", "--elasticsearch", es.url, "--template"]).status == 0
    cfg = kafka_config(
        tmp_path,
        bootstrap,
        topic,
        group,
        "output:\n  elasticsearch:\n"
        f"    hosts: ['{es.url}']\n    flush_interval: 0.2\n    request_timeout: 5\n",
    )
    a, b = members(tmp_path, "a", cfg), members(tmp_path, "b", cfg)
    a.start()
    b.start()
    for m in (a, b):
        m.wait_log("kafka: assigned")
    rng = random.Random(16)
    keys = [source_of(ln) for ln in lines]
    # the first half at once; `a` reads and commits some of its share of it
    half = len(lines) // 2
    produce(bootstrap, topic, lines[:half], keys[:half])
    wait_until(lambda: sum(a.committed().values()) > 0, 60, "a's first commit", a.text)
    # then the rest flows, and `a` dies at a random point of it (between two of its
    # commits): about 3.6 s of records, killed after 15 to 35 % of them
    rest = len(lines) - half
    producing = Producing(bootstrap, topic, lines[half:], keys[half:], rate=500.0)
    producing.start()
    kill_at = int(rest * rng.uniform(0.15, 0.35))
    wait_until(lambda: producing.progress[0] >= kill_at, 30, "the second half to flow")
    a.kill()
    assert producing.progress[0] < rest - 1  # records still flow while `b` takes over
    producing.join(60)
    # `b` takes `a`'s partitions over (after the session timeout) and reads them to the end
    b.wait_log("kafka: assigned", count=2, timeout=40)
    wait_until(
        lambda: len(b.committed()) == PARTITIONS and sum(b.committed().values()) == len(lines),
        60,
        "b to commit every record",
        b.text,
    )
    want = sorted(d["event"]["id"] for d in replay_alerts(tmp_path, lines))
    ds = "logs-zeekndm.alert-default"
    wait_until(lambda: sorted(es.docs(ds)) == want, 20, "the alerts", lambda: str(
        (sorted(es.docs(ds)), want)
    ))  # fmt: skip
    assert b.stop() == 0, b.text()[-3000:]

    assert es.count(ds) == len(want) >= 16  # every alert once (re-sends answered 409)
    for m in (a, b):
        ids = [d["event"]["id"] for d in m.alerts()]
        assert len(ids) == len(set(ids)), f"{m.name} wrote an alert twice"
        assert set(ids) <= set(want)
    assert {d["event"]["id"] for m in (a, b) for d in m.alerts()} == set(want)
    # `b` resumed `a`'s partitions from the state `a` committed with their offsets
    takeover = [ln for ln in b.text().splitlines() if "kafka: assigned" in ln][-1]
    assert " 0 with saved state" not in takeover, takeover
    assert "misplaced=0" in b.text()


# -- keying -------------------------------------------------------------------------------
def test_unkeyed_topic_warns_and_rekey_gives_the_same_detections(tmp_path, kafka_engine, members):
    """zeek-kafka produces without a key: records of one source land on every partition.
    zeekndm says so (rate-limited, counted per partition); `zeekndm rekey` copies the topic
    keyed by source, and the group reading that one finds what replay finds."""
    bootstrap = kafka_engine.bootstrap
    unkeyed, keyed = unique("unkeyed"), unique("keyed")
    create_topic(bootstrap, unkeyed, PARTITIONS)
    create_topic(bootstrap, keyed, PARTITIONS)
    lines = scenario(PARTITIONS, background=1500, seed=5)
    # zeek-kafka's tag_json form, spread over the partitions as an unkeyed producer does,
    # each message stamped when Zeek would have produced it (1 ms apart, in write order)
    tagged = [json.dumps({"conn": json.loads(ln)}) for ln in lines]
    start = int(time.time() * 1000) - 3_600_000
    produce(
        bootstrap,
        unkeyed,
        tagged,
        partitions=[i % PARTITIONS for i in range(len(lines))],
        timestamps=[start + i for i in range(len(lines))],
    )

    plain = members(tmp_path, "plain", kafka_config(tmp_path, bootstrap, unkeyed, unique("g")))
    rekey_log = tmp_path / "rekey.log"
    rekey = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zeekndm",
            "rekey",
            "--input",
            f"kafka://{bootstrap}/{unkeyed}?commit_interval=0.5",
            "--to",
            keyed,
            "--group",
            unique("rekey"),
            "--state-dir",
            str(tmp_path / "rekey-state"),
        ],  # fmt: skip
        stderr=open(rekey_log, "wb"),
        stdout=subprocess.DEVNULL,
    )
    by_source = members(tmp_path, "keyed", kafka_config(tmp_path, bootstrap, keyed, unique("g")))
    try:
        plain.start()
        by_source.start()
        plain.wait_log("the message has no key", timeout=40)
        wait_until(
            lambda: by_source.caught_up(len(lines)),
            60,
            "the keyed topic to be read",
            lambda: by_source.text() + rekey_log.read_text(),
        )
        wait_until(lambda: sum(plain.committed().values()) == len(lines), 30, "the unkeyed topic")
    finally:
        rekey.send_signal(signal.SIGTERM)
        assert rekey.wait(30) == 0, rekey_log.read_text()
    assert plain.stop() == 0 and by_source.stop() == 0

    warnings = [ln for ln in plain.text().splitlines() if "its source belongs to partition" in ln]
    assert 1 <= len(warnings) <= PARTITIONS  # at most one per partition per minute
    misplaced = {p["partition"]: p["misplaced"] for p in plain.registry()["kafka"]["partitions"]}
    assert all(n > 0 for n in misplaced.values()), misplaced
    assert "its source belongs to partition" not in by_source.text()
    assert all(p["misplaced"] == 0 for p in by_source.registry()["kafka"]["partitions"])
    # rekey merges the unkeyed partitions by message timestamp: each source's records reach
    # its partition in the order they were written, so the alerts are replay's, id for id
    want = replay_alerts(tmp_path, lines)
    assert sorted(d["event"]["id"] for d in by_source.alerts()) == sorted(
        d["event"]["id"] for d in want
    )
    # without rekey each partition's detector sees a quarter of each scan: not replay's
    # alerts (a scan counted four times apart, each part alerting on its own or not at all)
    assert {d["event"]["id"] for d in plain.alerts()} != {d["event"]["id"] for d in want}
    assert f"keyed={len(lines)}" in rekey_log.read_text()


# -- bad messages -----------------------------------------------------------------------
def test_bad_messages_are_counted_per_partition_and_never_stop_the_consumer(
    tmp_path, kafka_engine, members
):
    """Not JSON, the wrong schema, a message of 2 MiB: each is one bad record of its
    partition, counted by reason and logged as TOPIC[PARTITION]:OFFSET; every good record
    around them is read and the alerts are replay's."""
    from zeekndm.live.kafka.keys import partition_for

    bootstrap = kafka_engine.bootstrap
    topic, group = unique("bad"), unique("g")
    create_topic(bootstrap, topic, 2, **{"max.message.bytes": str(4 << 20)})
    lines = scenario(2, background=600, seed=3)
    bad = [b"this is not JSON", b'{"schema": "wrong", "ts": 1}', b"{" + b" " * (2 << 20) + b"}"]
    values: list[bytes | str] = []
    parts: list[int] = []
    rounds = 0
    for i, line in enumerate(lines):
        values.append(line)
        parts.append(partition_for(source_of(line).encode(), 2))
        if i % 200 == 100:
            values.extend(bad)
            parts.extend([1, 1, 1])
            rounds += 1
    produce(bootstrap, topic, values, partitions=parts)
    port = free_port()
    cfg = kafka_config(tmp_path, bootstrap, topic, group, f"metrics:\n  listen: 127.0.0.1:{port}\n")
    m = members(tmp_path, "m", cfg)
    m.start()
    wait_until(lambda: sum(m.committed().values()) == len(values), 60, "every message", m.text)
    # the metrics endpoint: per-partition records, bad records by reason, lag, rebalances
    wait_until(
        lambda: scrape(port).get(f'zeekndm_records_total{{input="{topic}[1]"}}', 0) > 0,
        10,
        "the metrics after the last commit",
    )
    got = scrape(port)
    assert got[f'zeekndm_bad_lines_total{{input="{topic}[1]",reason="invalid JSON"}}'] == rounds
    assert sum(got[f'zeekndm_records_total{{input="{topic}[{p}]"}}'] for p in (0, 1)) == len(lines)
    for p in (0, 1):
        assert got[f'zeekndm_kafka_lag_messages{{partition="{p}",topic="{topic}"}}'] == 0
        assert got[f'zeekndm_kafka_lag_seconds{{partition="{p}",topic="{topic}"}}'] == 0
    assert got['zeekndm_kafka_rebalance_partitions_total{event="assigned"}'] == 2
    assert m.stop() == 0
    # `zeekndm status`: the group, the member, each partition's offset, lag and counts
    status = subprocess.run(
        [sys.executable, "-m", "zeekndm", "status", "--state-dir", str(m.state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert f"kafka group {group} as " in status.stdout and "assigned 2" in status.stdout
    committed = m.committed()
    for p in (0, 1):
        assert f"partition {topic}[{p}]: offset {committed[p]}, lag 0 messages" in status.stdout
    assert f"bad {3 * rounds}, misplaced 0" in status.stdout
    view = {p["partition"]: p for p in m.registry()["kafka"]["partitions"]}
    assert view[1]["bad_by_reason"] == {
        "invalid JSON": rounds,
        "missing id.orig_h": rounds,
        "message too long": rounds,
    }, view[1]
    assert view[0]["bad_lines"] == 0 and view[0]["records"] + view[1]["records"] == len(lines)
    assert f"{topic}[1]:" in m.text() and "message too long (2,097,154 bytes)" in m.text()
    want = sorted(d["event"]["id"] for d in replay_alerts(tmp_path, lines))
    assert sorted(d["event"]["id"] for d in m.alerts()) == want


# -- event time ---------------------------------------------------------------------------
def test_a_partition_lagging_hours_behind_another_is_not_late(tmp_path, kafka_engine, members):
    """Event time is per partition: one partition's sensors two hours behind the other's
    (an outage upstream, a backlog) leave its records on time, where one clock for every
    partition would drop them as late; within a partition the allowed lateness applies as
    in a file."""
    from zeekndm.live.kafka.keys import partition_for

    bootstrap = kafka_engine.bootstrap
    topic, group = unique("skew"), unique("g")
    create_topic(bootstrap, topic, 2)
    lines = scenario(2, background=600, seed=3)
    values, parts = [], []
    for line in lines:
        rec = json.loads(line)
        p = partition_for(rec["id.orig_h"].encode(), 2)
        if p == 1:
            rec["ts"] -= 7200  # partition 1's sensors: two hours behind
        values.append(json.dumps(rec))
        parts.append(p)
    scan = next(
        json.loads(v) for v, p in zip(values, parts) if p == 0 and '"id.resp_p": 27017' in v
    )
    values.append(json.dumps({**scan, "ts": scan["ts"] - 99999}))  # late within partition 0
    parts.append(0)
    produce(bootstrap, topic, values, partitions=parts)
    m = members(tmp_path, "m", kafka_config(tmp_path, bootstrap, topic, group))
    m.start()
    wait_until(lambda: sum(m.committed().values()) == len(values), 60, "every message", m.text)
    assert m.stop() == 0
    late = {p["partition"]: p["late"] for p in m.registry()["kafka"]["partitions"]}
    assert late == {0: 1, 1: 0}
    sources = {d["source"]["ip"] for d in m.alerts()}
    per_partition = {partition_for(s.encode(), 2) for s in sources}
    assert per_partition == {0, 1}  # partition 1's scan is found despite the skew
