"""Per-partition detector state in a compacted Kafka topic, committed with the offsets.

Why a topic and not the state directory: the members of a consumer group run on
different hosts, and the process that takes a partition over after a rebalance (or after
its owner was SIGKILLed) must resume that partition's sources where they were. A state
directory is local to one host; a compacted topic is reachable by every member, kept by
Kafka with the same replication as the data, and written in the same Kafka transaction as
the consumer offsets (`send_offsets_to_transaction`, KIP-447), so a partition's state and
its committed offset can never disagree: both are committed, or neither (this is how
Kafka Streams keeps its state stores in changelog topics under exactly-once).

Layout. One record per (group, topic, partition) at each commit that changed it, keyed
`GROUP/TOPIC/PARTITION`: a small JSON header (the next offset to read, counters, the
number of chunks, a CRC), preceded in the same transaction by the state itself, zlib
compressed and cut into chunks of at most `CHUNK_BYTES` (keys `GROUP/TOPIC/PARTITION#N`),
so a large window state never meets the broker's message size limit. Input partition p
of a topic goes to state partition p modulo the state topic's partitions. Compaction keeps
the latest value per key; reading uses `read_committed`, so the chunks of a transaction
that was aborted (a process killed mid-commit) are never seen.

Restoring reads a state partition backwards in growing windows from its end until the
newest complete snapshot of every wanted key is found, so a restore costs what the last
few commits wrote, not the topic's history.
"""

from __future__ import annotations

import logging
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from zeekndm.live.kafka.spec import KafkaClientError, KafkaSpec

log = logging.getLogger(__name__)

STATE_VERSION = 1
CHUNK_BYTES = 512 * 1024
_CHUNK_MAGIC = b"ZNDC"
STATE_TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    # compaction only touches closed segments: roll them often, so a restore reads little
    "segment.ms": str(10 * 60 * 1000),
    "min.cleanable.dirty.ratio": "0.1",
    "max.message.bytes": str(2 * CHUNK_BYTES),
}
RESTORE_TIMEOUT = 60.0


def state_key(group: str, topic: str, partition: int) -> bytes:
    return f"{group}/{topic}/{partition}".encode()


@dataclass
class PartitionState:
    """What a commit saves for one input partition (see the module docstring)."""

    topic: str
    partition: int
    offset: int  # the next offset to read
    detector: dict[str, Any] | None = None
    reader: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    committed_at: float | None = None
    member: str | None = None

    def encode(self, group: str, seq: int | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) records to produce, chunks first and the header last."""
        seq = int.from_bytes(os.urandom(8), "big") if seq is None else seq
        body = zlib.compress(orjson.dumps({"detector": self.detector, "reader": self.reader}), 1)
        pieces = [body[i : i + CHUNK_BYTES] for i in range(0, len(body), CHUNK_BYTES)] or [b""]
        base = state_key(group, self.topic, self.partition)
        prefix = _CHUNK_MAGIC + seq.to_bytes(8, "big")
        out = [(base + b"#%d" % i, prefix + piece) for i, piece in enumerate(pieces)]
        header = {
            "v": STATE_VERSION,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "seq": seq,
            "chunks": len(pieces),
            "bytes": len(body),
            "crc": zlib.crc32(body),
            "counters": self.counters,
            "committed_at": self.committed_at,
            "member": self.member,
        }
        out.append((base, orjson.dumps(header)))
        return out

    @classmethod
    def decode(cls, header_value: bytes, chunks: dict[int, bytes]) -> PartitionState:
        """From a header and its chunks (index -> value); ValueError when they do not match
        or are damaged."""
        try:
            header = orjson.loads(header_value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"the header is not JSON ({exc})") from None
        if not isinstance(header, dict) or header.get("v") != STATE_VERSION:
            raise ValueError(f"unsupported state version {header.get('v')!r}")
        seq, n = header.get("seq"), header.get("chunks")
        if not isinstance(seq, int) or not isinstance(n, int) or n < 1:
            raise ValueError("the header names no chunks")
        prefix = _CHUNK_MAGIC + seq.to_bytes(8, "big")
        parts = []
        for i in range(n):
            value = chunks.get(i)
            if value is None or not value.startswith(prefix):
                raise ValueError(f"chunk {i} of {n} is missing")
            parts.append(value[len(prefix) :])
        body = b"".join(parts)
        if zlib.crc32(body) != header.get("crc"):
            raise ValueError("the chunks do not match the header's CRC")
        try:
            data = orjson.loads(zlib.decompress(body))
        except (zlib.error, orjson.JSONDecodeError) as exc:
            raise ValueError(f"the state cannot be decoded ({exc})") from None
        offset = header.get("offset")
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"bad offset {offset!r}")
        counters = header.get("counters")
        detector = data.get("detector") if isinstance(data, dict) else None
        reader = data.get("reader") if isinstance(data, dict) else None
        return cls(
            topic=str(header.get("topic")),
            partition=int(header.get("partition", -1)),
            offset=offset,
            detector=detector if isinstance(detector, dict) else None,
            reader=reader if isinstance(reader, dict) else {},
            counters=counters if isinstance(counters, dict) else {},
            committed_at=header.get("committed_at"),
            member=header.get("member"),
        )


class StateStore:
    """The state topic: its creation, where a partition's state goes, and restoring it."""

    def __init__(
        self,
        spec: KafkaSpec,
        conf: dict[str, Any],
        redact: Callable[[object], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self.topic = spec.state_topic
        self.group = spec.group
        self._conf = conf
        self._redact = redact
        self._clock = clock
        self.partitions = 0
        self._reader: Any = None

    # -- the topic ----------------------------------------------------------------------
    def ensure(self, admin: Any, partitions_hint: int) -> None:
        """Check the state topic exists (creating it when allowed) and learn its size."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import NewTopic

        try:
            metadata = admin.list_topics(self.topic, timeout=15)
        except KafkaException as exc:
            raise KafkaClientError(
                f"cannot read the metadata of the state topic {self.topic}: {self._redact(exc)}"
            ) from None
        topic = metadata.topics.get(self.topic)
        exists = topic is not None and topic.error is None and topic.partitions
        if not exists:
            if not self.spec.create_state_topic:
                raise KafkaClientError(
                    f"the state topic {self.topic} does not exist and create_state_topic is "
                    f"false: create it compacted (kafka-topics.sh --create --topic {self.topic} "
                    "--config cleanup.policy=compact --partitions N)"
                )
            count = self.spec.state_partitions or max(1, partitions_hint)
            futures = admin.create_topics(
                [
                    NewTopic(
                        self.topic,
                        num_partitions=count,
                        replication_factor=-1,
                        config=STATE_TOPIC_CONFIG,
                    )
                ]
            )
            try:
                futures[self.topic].result(timeout=30)
                log.info("created the state topic %s (%d partitions, compacted)", self.topic, count)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if getattr(error, "name", lambda: "")() != "TOPIC_ALREADY_EXISTS":
                    raise KafkaClientError(
                        f"cannot create the state topic {self.topic}: {self._redact(exc)}; "
                        "create it yourself (compacted) or give the principal CREATE on it"
                    ) from None
            deadline = self._clock() + 15
            while True:  # a topic just created takes a moment to appear in the metadata
                topic = admin.list_topics(self.topic, timeout=15).topics.get(self.topic)
                if topic is not None and topic.error is None and topic.partitions:
                    break
                if self._clock() > deadline:
                    raise KafkaClientError(f"the state topic {self.topic} has no partitions")
                time.sleep(0.1)
        else:
            self._check_compacted(admin)
        self.partitions = len(topic.partitions)

    def _check_compacted(self, admin: Any) -> None:
        from confluent_kafka.admin import ConfigResource, ResourceType

        try:
            resource = ConfigResource(ResourceType.TOPIC, self.topic)
            configs = admin.describe_configs([resource])[resource].result(timeout=15)
        except Exception as exc:  # noqa: BLE001 - a missing DescribeConfigs ACL: only a warning
            log.warning(
                "cannot check that the state topic %s is compacted: %s",
                self.topic,
                self._redact(exc),
            )
            return
        policy = configs.get("cleanup.policy")
        if policy is not None and "compact" not in str(policy.value):
            log.warning(
                "the state topic %s has cleanup.policy=%s: Kafka will delete the state of "
                "partitions that stay idle longer than its retention; set "
                "cleanup.policy=compact",
                self.topic,
                policy.value,
            )

    def state_partition(self, partition: int) -> int:
        return partition % self.partitions

    # -- restoring --------------------------------------------------------------------
    def _consumer(self) -> Any:
        if self._reader is None:
            from confluent_kafka import Consumer

            self._reader = Consumer(
                {
                    **self._conf,
                    "group.id": f"{self.group}.state-reader",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                    "auto.offset.reset": "earliest",
                    # a restore reads to the end of a partition: the broker's answer at the
                    # end is what tells it so; don't let it hold that fetch 500 ms
                    "fetch.wait.max.ms": 10,
                }
            )
        return self._reader

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def load(
        self, wanted: list[tuple[str, int]], timeout: float = RESTORE_TIMEOUT
    ) -> dict[tuple[str, int], PartitionState]:
        """The newest committed state of each (topic, partition) in `wanted` that has one."""
        from confluent_kafka import TopicPartition

        deadline = self._clock() + timeout
        by_sp: dict[int, list[tuple[str, int]]] = {}
        for tp in wanted:
            by_sp.setdefault(self.state_partition(tp[1]), []).append(tp)
        consumer = self._consumer()
        found: dict[tuple[str, int], PartitionState] = {}
        for sp, tps in sorted(by_sp.items()):
            keys = {state_key(self.group, t, p): (t, p) for t, p in tps}
            low, high = consumer.get_watermark_offsets(
                TopicPartition(self.topic, sp), timeout=max(1.0, deadline - self._clock())
            )
            if high <= low:
                continue
            window = max(64, 16 * len(keys))
            while True:
                start = max(low, high - window)
                headers, chunks = self._read(consumer, sp, start, set(keys), deadline)
                unresolved = []
                for key, tp in keys.items():
                    if tp in found:
                        continue
                    header = headers.get(key)
                    if header is None:
                        unresolved.append(key)
                        continue
                    try:
                        found[tp] = PartitionState.decode(header, chunks.get(key, {}))
                    except ValueError as exc:
                        if start > low:
                            unresolved.append(key)  # its chunks may lie before the window
                        else:
                            log.warning(
                                "state of %s[%d] in %s cannot be used (%s); that partition "
                                "starts with empty windows",
                                tp[0],
                                tp[1],
                                self.topic,
                                exc,
                            )
                if not unresolved or start == low:
                    break
                window *= 8
        return found

    def _read(
        self, consumer: Any, sp: int, start: int, keys: set[bytes], deadline: float
    ) -> tuple[dict[bytes, bytes], dict[bytes, dict[int, bytes]]]:
        """Every wanted header and chunk from `start` to the end of state partition `sp`
        (the newest value of each key wins)."""
        from confluent_kafka import KafkaError, TopicPartition

        headers: dict[bytes, bytes] = {}
        chunks: dict[bytes, dict[int, bytes]] = {}
        consumer.assign([TopicPartition(self.topic, sp, start)])
        try:
            while True:
                if self._clock() > deadline:
                    raise KafkaClientError(
                        f"reading the state topic {self.topic} partition {sp} took longer "
                        f"than {RESTORE_TIMEOUT:.0f} s"
                    )
                batch = consumer.consume(500, 0)  # what is there, without waiting
                if not batch:
                    first = consumer.poll(0.5)
                    batch = [first] if first is not None else []
                done = False
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            done = True
                            continue
                        raise KafkaClientError(
                            f"cannot read the state topic {self.topic}: {self._redact(err)}"
                        )
                    key = msg.key()
                    if key is None:
                        continue
                    base, sep, index = key.partition(b"#")
                    if base not in keys:
                        continue
                    if sep:
                        if index.isdigit():
                            chunks.setdefault(base, {})[int(index)] = msg.value() or b""
                    else:
                        headers[base] = msg.value() or b""
                if done:
                    return headers, chunks
        finally:
            consumer.unassign()
