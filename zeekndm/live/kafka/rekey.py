"""`zeekndm rekey`: an unkeyed topic to the same records keyed by source, exactly once.

For pipelines that cannot set a key (the zeek-kafka plugin produces without one; a
shipper whose key option cannot reach the source address), this is the repartition step
a Kafka Streams application would insert (`selectKey()` before a grouping): it consumes
the unkeyed topic as a consumer group of its own, reads every line with the same readers
as `zeekndm run`, and produces each record to the destination topic with the source
address as its key, on the partition the chosen partitioner gives that key (`murmur2` by
default, what `zeekndm run`'s key check expects).

An unkeyed producer spreads each source's records over every partition, so reading the
partitions one after another would scramble them (a backlog read partition by partition
goes through the hour once per partition). The stage therefore merges its partitions by
message timestamp, oldest first, as Kafka Streams picks the next record of a task from the
partition whose head is oldest: it waits for a partition with nothing buffered for at
most `MERGE_WAIT` (Streams' `max.task.idle.ms`), never for one at its end, and pauses a
partition whose buffer is full. With the producer's timestamps in write order (zeek-kafka
produces each record as Zeek writes it) each source's records come out in the order they
were written. A message holding several lines becomes
one message per line; a line that is not a connection record (a bad line, another log) is
forwarded without a key; a Zeek TSV header line (`#fields`) is forwarded to every
partition, so each partition's reader knows the columns.

Exactly once: the records produced and the consumed offsets are committed in one Kafka
transaction (`send_offsets_to_transaction`) every `commit_interval`, so after a crash the
destination holds each record once (read_committed consumers never see an aborted
transaction's records), and `zeekndm run` reading it sees what `replay` would.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from zeekndm.detection import Detection
from zeekndm.flow import Flow
from zeekndm.live.kafka.consumer import OP_TIMEOUT, LibrdkafkaLog, require_client
from zeekndm.live.kafka.keys import partition_for
from zeekndm.live.kafka.records import PartitionReader
from zeekndm.live.kafka.spec import ClientSecrets, KafkaClientError, KafkaSpec, client_config

log = logging.getLogger("zeekndm.rekey")

DEFAULT_GROUP = "zeekndm-rekey"
MERGE_BUFFER = 5000
"""Messages buffered per partition for the merge before the partition is paused."""
MERGE_WAIT = 0.5
"""Seconds the merge waits for a partition that has nothing buffered and is not at its end
(Kafka Streams' max.task.idle.ms), before going on without it."""


class Rekeyer:
    """The rekey stage from `spec`'s topics to `destination` (see the module docstring)."""

    def __init__(
        self,
        spec: KafkaSpec,
        destination: str,
        *,
        group: str = DEFAULT_GROUP,
        partitioner: str | None = None,
        state_dir: str = ".",
        stats_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        require_client()
        if destination in spec.topics:
            raise KafkaClientError(
                f"rekey would write into its own input topic {destination}: give --to another"
            )
        self.spec = spec
        self.destination = destination
        self.group = group
        self.partitioner = partitioner or spec.partitioner
        self.member = f"zeekndm-rekey-{group}-{spec.instance(state_dir)}"
        self.stats_interval = stats_interval
        self.clock = clock
        self.stop_requested = False
        self.counts: Counter = Counter()
        self.readers: dict[tuple[str, int], PartitionReader] = {}
        self._in_txn = False
        self._fatal: str | None = None
        # the merge across partitions (see `_emit`)
        self.owned: set[tuple[str, int]] = set()
        self.buffers: dict[tuple[str, int], deque] = {}
        self.forwarded: dict[tuple[str, int], int] = {}
        self.at_end: set[tuple[str, int]] = set()
        self.paused: set[tuple[str, int]] = set()
        self.empty_since: dict[tuple[str, int], float] = {}

    def request_stop(self) -> None:
        self.stop_requested = True

    def run(self) -> int:
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient

        secrets = ClientSecrets.load(self.spec)
        self.redact = secrets.redactor(self.spec)
        conf = client_config(self.spec, secrets)
        conf["logger"] = LibrdkafkaLog(self.redact)
        admin = AdminClient(conf)
        self.partitions = self._partitions(admin)
        self.producer = Producer(
            {
                **conf,
                "transactional.id": self.member,
                "transaction.timeout.ms": int(self.spec.transaction_timeout * 1000),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 20,
                "compression.type": "lz4",
            }
        )
        try:
            self.producer.init_transactions(OP_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - KafkaException: one line, redacted
            raise KafkaClientError(
                f"cannot start a Kafka transaction as {self.member}: {self.redact(exc)}"
            ) from None
        self.consumer = Consumer(
            {
                **conf,
                "group.id": self.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": self.spec.start,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": int(self.spec.session_timeout * 1000),
                "enable.partition.eof": True,
            }
        )
        self.consumer.subscribe(
            list(self.spec.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        previous = {}
        try:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self.request_stop())
        except ValueError:
            pass
        log.info(
            "zeekndm rekey: %s -> %s (%d partitions, %s of the source address) as group %s",
            ", ".join(self.spec.topics),
            self.destination,
            self.partitions,
            self.partitioner,
            self.group,
        )
        status = 0
        try:
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._fatal is None:
                if not self._commit():
                    status = 1
            else:
                log.error("stopping on %s; the last transaction is aborted", self._fatal)
                status = 1
            try:
                self.consumer.close()
            except Exception:  # noqa: BLE001
                pass
            self._log_stats("stopped")
        return status

    def _partitions(self, admin: Any) -> int:
        try:
            metadata = admin.list_topics(timeout=15)
        except Exception as exc:  # noqa: BLE001 - KafkaException
            raise KafkaClientError(
                f"cannot reach Kafka at {', '.join(self.spec.brokers)}: {self.redact(exc)}"
            ) from None
        for topic in (*self.spec.topics, self.destination):
            t = metadata.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                raise KafkaClientError(
                    f"topic {topic} does not exist (create the destination with the partitions "
                    "the zeekndm group will share)"
                )
        return len(metadata.topics[self.destination].partitions)

    def _loop(self) -> None:
        next_commit = self.clock() + self.spec.commit_interval
        next_stats = self.clock() + self.stats_interval
        while not self.stop_requested:
            messages = self.consumer.consume(1000, 0.1)
            if messages:
                self._take(messages)
            self._emit()
            now = self.clock()
            if now >= next_commit:
                if not self._commit():
                    return
                next_commit = self.clock() + self.spec.commit_interval
            if now >= next_stats:
                self._log_stats("stats")
                next_stats = now + self.stats_interval

    def _take(self, messages: list[Any]) -> None:
        """Buffer messages per partition (pausing a partition whose buffer is full)."""
        from confluent_kafka import KafkaError, TopicPartition

        for msg in messages:
            key = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.at_end.add(key)
                    continue
                log.warning("kafka: %s", self.redact(err))
                if err.fatal():
                    self._fatal = f"a fatal Kafka error ({self.redact(err)})"
                    self.stop_requested = True
                continue
            if key not in self.owned:
                continue  # revoked meanwhile
            self.at_end.discard(key)
            ts_type, ts_ms = msg.timestamp()
            buffer = self.buffers.setdefault(key, deque())
            buffer.append((ts_ms if ts_type else 0, msg))
            if len(buffer) >= MERGE_BUFFER and key not in self.paused:
                self.consumer.pause([TopicPartition(*key)])
                self.paused.add(key)

    def _emit(self) -> None:
        """Forward buffered messages oldest first across partitions (by message timestamp),
        as long as every partition that may still deliver older ones has some buffered;
        one that has delivered nothing for `MERGE_WAIT` seconds is not waited for."""
        from confluent_kafka import TopicPartition

        now = self.clock()
        while True:
            heads = [(buf[0][0], key) for key, buf in self.buffers.items() if buf]
            if not heads:
                break
            empty = [k for k in self.owned if not self.buffers.get(k) and k not in self.at_end]
            if empty:
                since = min(self.empty_since.setdefault(k, now) for k in empty)
                if now - since < MERGE_WAIT:
                    break
            _, key = min(heads)
            _, msg = self.buffers[key].popleft()
            self._forward(msg)
            if not self.buffers[key]:
                self.empty_since[key] = now
            if key in self.paused and len(self.buffers[key]) <= MERGE_BUFFER // 4:
                self.consumer.resume([TopicPartition(*key)])
                self.paused.discard(key)
        for key in list(self.empty_since):
            if self.buffers.get(key):
                del self.empty_since[key]

    def _forward(self, msg: Any) -> None:
        if not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True
        key = (msg.topic(), msg.partition())
        reader = self.readers.get(key)
        if reader is None:
            reader = self.readers[key] = PartitionReader(
                f"{key[0]}[{key[1]}]",
                self.spec.format,
                clock=self.clock,
                fields=self.spec.fields,
                max_message_bytes=self.spec.max_message_bytes,
            )
        self.counts["messages"] += 1
        self.forwarded[key] = msg.offset() + 1
        value = msg.value() or b""
        ts_type, ts_ms = msg.timestamp()
        timestamp = ts_ms if ts_type else 0
        if len(value) > self.spec.max_message_bytes or b"\n" not in value:
            lines = [value]
        else:
            lines = [ln.rstrip(b"\r") for ln in value.split(b"\n") if ln.strip()]
        for line in lines:
            self._forward_line(reader, line, msg.offset(), timestamp)

    def _forward_line(self, reader: PartitionReader, line: bytes, offset: int, ts: int) -> None:
        if line[:1] == b"#":
            reader.line_records(line, offset)
            for p in range(self.partitions):
                self._produce(line, None, p, ts)
            self.counts["header lines"] += 1
            return
        items = reader.line_records(line, offset) if len(line) <= reader.max_message_bytes else []
        source = None
        if items:
            item = items[0]
            if type(item) is Flow:
                source = item.src
            elif isinstance(item, Detection):
                source = item.source
        if source is None:
            self._produce(line, None, None, ts)
            self.counts["unkeyed"] += 1
            return
        key = source.encode()
        self._produce(line, key, partition_for(key, self.partitions, self.partitioner), ts)
        self.counts["keyed"] += 1

    def _produce(self, value: bytes, key: bytes | None, partition: int | None, ts: int) -> None:
        kwargs: dict[str, Any] = {"value": value, "key": key}
        if partition is not None:
            kwargs["partition"] = partition
        if ts:
            kwargs["timestamp"] = ts
        while True:
            try:
                self.producer.produce(self.destination, **kwargs)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _commit(self) -> bool:
        """Commit the open transaction with the consumed positions."""
        from confluent_kafka import KafkaException

        if not self._in_txn:
            return True
        try:
            offsets = self._offsets()
            self.producer.send_offsets_to_transaction(
                offsets, self.consumer.consumer_group_metadata(), OP_TIMEOUT
            )
            self.producer.commit_transaction(OP_TIMEOUT)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and error.txn_requires_abort():
                self._abort(exc)
                return True
            self._fatal = f"a failed Kafka transaction ({self.redact(exc)})"
            return False
        self._in_txn = False
        self.counts["commits"] += 1
        return True

    def _offsets(self) -> list[Any]:
        """Per owned partition, the offset of its first message not yet forwarded: the head
        of its buffer, else the position after the last one forwarded (or the consumer's,
        which is past transaction markers)."""
        from confluent_kafka import TopicPartition

        out = []
        owned = sorted(self.owned)
        positions = self.consumer.position([TopicPartition(t, p) for t, p in owned])
        for (t, p), tp in zip(owned, positions):
            buffer = self.buffers.get((t, p))
            if buffer:
                offset = buffer[0][1].offset()
            else:
                offset = max(tp.offset, self.forwarded.get((t, p), -1))
            if offset >= 0:
                out.append(TopicPartition(t, p, offset))
        return out

    def _abort(self, why: Any) -> None:
        """Abort the open transaction and go back to the last committed positions."""
        log.warning("rekey: transaction aborted (%s); reading again from the last commit", why)
        self.producer.abort_transaction(OP_TIMEOUT)
        self._in_txn = False
        self.buffers.clear()
        self.forwarded.clear()
        assignment = self.consumer.assignment()
        if assignment:
            for tp in self.consumer.committed(assignment, timeout=OP_TIMEOUT):
                if tp.offset >= 0:
                    self.consumer.seek(tp)
        self.readers.clear()

    def _on_assign(self, consumer: Any, tps: list[Any]) -> None:
        for tp in tps:
            self.owned.add((tp.topic, tp.partition))

    def _on_revoke(self, consumer: Any, tps: list[Any]) -> None:
        if not self._commit():
            self.stop_requested = True
        for tp in tps:
            self._forget((tp.topic, tp.partition))

    def _forget(self, key: tuple[str, int]) -> None:
        """A partition given up: its buffered messages are read again by its new owner."""
        self.owned.discard(key)
        self.readers.pop(key, None)
        self.buffers.pop(key, None)
        self.forwarded.pop(key, None)
        self.at_end.discard(key)
        self.paused.discard(key)
        self.empty_since.pop(key, None)

    def _on_lost(self, consumer: Any, tps: list[Any]) -> None:
        if self._in_txn:
            try:
                self.producer.abort_transaction(OP_TIMEOUT)
            except Exception:  # noqa: BLE001 - fenced already: the broker aborts it
                pass
            self._in_txn = False
        for tp in tps:
            self._forget((tp.topic, tp.partition))

    def _log_stats(self, what: str) -> None:
        bad = sum(r.stats.bad_lines for r in self.readers.values())
        log.info(
            "rekey %s: messages=%d keyed=%d unkeyed=%d (bad lines %d) header_lines=%d commits=%d",
            what,
            self.counts["messages"],
            self.counts["keyed"],
            self.counts["unkeyed"],
            bad,
            self.counts["header lines"],
            self.counts["commits"],
        )
