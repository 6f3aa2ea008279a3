"""Traffic and plumbing the Kafka tests share (plain functions, not fixtures).

`scenario()` is held-out-style traffic: ordinary background plus, for every partition of
the topic, one long outbound scan whose source lands on that partition (murmur2 of the
address), so whichever partitions a killed process owned, a scan straddles the kill.
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import orjson

from zeekndm.live.kafka.keys import partition_for
from zeekndm.synth import Traffic, write_zeek_json

SCANS = ((27017, 150), (389, 120), (23, 120), (2375, 120), (445, 160), (27017, 120))


def scanner_for(partition: int, partitions: int, salt: int) -> str:
    """An internal address whose murmur2 partition is `partition`."""
    for i in range(1, 60000):
        ip = f"10.{20 + salt}.{i // 250}.{i % 250 + 1}"
        if partition_for(ip.encode(), partitions) == partition:
            return ip
    raise AssertionError("no address found")


def scenario(partitions: int = 4, background: int = 3000, seed: int = 11) -> list[str]:
    """Zeek JSON conn records in write order (see the module docstring)."""
    t = Traffic(seed=seed)
    t.background(background, duration=3600.0)
    for p in range(partitions):
        port, targets = SCANS[p % len(SCANS)]
        t.scan(
            scanner_for(p, partitions, p),
            port,
            targets=targets,
            start_offset=200.0 + 150 * p,
            duration=2600.0,
        )
    buf = io.StringIO()
    write_zeek_json(t.in_write_order(), buf)
    return buf.getvalue().splitlines()


def source_of(line: str) -> str:
    return orjson.loads(line)["id.orig_h"]


def create_topic(bootstrap: str, name: str, partitions: int, **config: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config)]
    )
    futures[name].result(timeout=30)


def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes | str],
    keys: list[str | None] | None = None,
    *,
    rate: float | None = None,
    partitions: list[int] | None = None,
    partitioner: str = "murmur2",
    timestamps: list[int] | None = None,
    progress: list[int] | None = None,
) -> None:
    """Produce `values` (keyed by `keys`, on `partitions`, with `timestamps` in ms when
    given) at `rate` per second (None: as fast as possible), idempotently, in order."""
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": partitioner,
            "enable.idempotence": True,
            "linger.ms": 5,
            "message.max.bytes": 8 << 20,
        }
    )
    period = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    for i, value in enumerate(values):
        if progress is not None:
            progress[0] = i
        kwargs = {"value": value}
        if keys is not None and keys[i] is not None:
            kwargs["key"] = keys[i]
        if partitions is not None:
            kwargs["partition"] = partitions[i]
        if timestamps is not None:
            kwargs["timestamp"] = timestamps[i]
        producer.produce(topic, **kwargs)
        producer.poll(0)
        if period:
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    assert producer.flush(30) == 0


class Producing(threading.Thread):
    """`produce()` in a thread, re-raising its error on `join()`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(daemon=True)
        self.progress = [0]  # values produced so far
        self._args, self._kwargs = args, {**kwargs, "progress": self.progress}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            produce(*self._args, **self._kwargs)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        assert not self.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error


def replay_alerts(tmp: Path, lines: list[str], name: str = "all.json") -> list[dict]:
    """`zeekndm replay --parse-all` over `lines` (in-process), without the END records that
    only the end of a replay's input causes."""
    from helpers import Run

    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    out = tmp / f"{name}.alerts"
    run = Run(["replay", "--parse-all", path, "-o", out])
    assert run.status == 0, run.err
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    return [d for d in docs if d["zeekndm"].get("end_reason") != "input_end"]


def signature(alert: dict) -> tuple:
    """What an analyst sees of an alert, independent of exactly which record crossed the
    threshold: model, source, state and severity."""
    return (
        alert["rule"]["name"],
        alert["source"]["ip"],
        alert["zeekndm"]["alert_state"],
        alert["event"]["severity"],
    )
