"""`zeekndm run` over a Kafka input: a member of a consumer group, exactly once.

Scale-out is Kafka's own: every process started with the same `group` gets a share of the
partitions (cooperative-sticky assignment, so a rebalance moves only the partitions that
change owner). Because the topic is keyed by source address, all records of a source are
in one partition, and each partition has its own detector: its window state, its event
clock (lateness and time jumps are decided per partition by the same rules as for a file,
so a partition that lags behind another never makes the other's records late) and its
parsers. A partition's alerts therefore depend only on its own records, whichever process
reads them.

Exactly once, as for files. A partition's offset is committed only after every sink
acknowledged or spooled the alerts of the records before it, and in the same Kafka
transaction as the partition's detector state (written to the compacted state topic, see
`state`). A process that takes a partition over, after a rebalance or after its owner was
SIGKILLed, reads the committed offset and the state committed with it: it resumes that
partition's sources exactly where the commit left them, reads the records after it again
and raises the same alerts with the same ids, which the sinks recognise as delivered. A
transaction cut short by a SIGKILL is aborted by the broker (after `transaction_timeout`
at the latest) and its state records are never read (`read_committed`).

One thread, one loop, as `live.runner`: consume a batch, detect, deliver alerts as they
come, and every `commit_interval` deliver everything pending and commit (Kafka
transaction, then the local registry: totals, the NDJSON output's size, what `zeekndm
status` shows). Rebalance callbacks run inside the consumer's poll, in the same thread: a
revoked partition is committed before it is given up; a lost one (the session expired) is
dropped without committing, its new owner reads it from the last commit.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zeekndm.config import Config
from zeekndm.detect import Detector
from zeekndm.detection import Detection
from zeekndm.enrich import Observer
from zeekndm.errors import ZeekNDMError
from zeekndm.eventtime import EventClock
from zeekndm.flow import Flow
from zeekndm.live.kafka.keys import KeyCheck
from zeekndm.live.kafka.records import PartitionReader
from zeekndm.live.kafka.spec import ClientSecrets, KafkaClientError, KafkaSpec, client_config
from zeekndm.live.kafka.state import PartitionState, StateStore
from zeekndm.live.metrics import MetricsEndpoint, MetricsSnapshot
from zeekndm.live.registry import Registry, RegistryState, Totals
from zeekndm.live.service import Service
from zeekndm.models import watched_ports
from zeekndm.outputs import build_sinks, state_dir_for
from zeekndm.pipeline import Pipeline
from zeekndm.readers import sensor_type
from zeekndm.sinks.base import (
    InterruptibleSink,
    ReopenableSink,
    ResumableSink,
)
from zeekndm.statedir import refuse_world_writable

log = logging.getLogger("zeekndm.live")
klog = logging.getLogger("zeekndm.live.kafka")

BATCH = 1000
"""Messages taken from the consumer at once."""
POLL_WAIT = 0.2
"""Seconds the loop waits for a first message when none is queued."""
IDLE_SWEEP_AFTER = 60.0
"""Wall-clock seconds without a record in a partition after which its event time is
advanced by the idle time (every IDLE_STEP), so that its episodes still end when its
sensors go quiet."""
IDLE_STEP = 10.0
OP_TIMEOUT = 30.0
"""Seconds a transaction step or an offset look-up may take before it is retried."""
ERROR_LOG_EVERY = 30.0


def require_client() -> None:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        raise ZeekNDMError(
            "a kafka input needs the confluent-kafka package: pip install 'zeekndm[kafka]' "
            "(or pip install confluent-kafka)"
        ) from None


@dataclass
class Partition:
    """One partition this process owns: its detector, clock, parsers and position."""

    topic: str
    partition: int
    partitions: int  # of its topic, for the key check
    detector: Detector
    clock: EventClock
    reader: PartitionReader
    next_offset: int  # the next offset to read (-1: where the consumer starts)
    committed_offset: int
    counters: Counter = field(default_factory=Counter)  # across owners: records, bad, ...
    dirty: bool = False
    last_record: float = 0.0  # clock() of the last record
    idle_base: float | None = None
    next_idle: float = 0.0
    last_message_ts: float | None = None  # wall time the last message read was produced
    observer: Observer | None = None
    observer_format: str | None = None
    filtered_seen: int = 0  # of reader.filtered, already counted as records

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]"

    def state(self, member: str, wall: float) -> PartitionState:
        return PartitionState(
            topic=self.topic,
            partition=self.partition,
            offset=self.next_offset,
            detector=self.detector.snapshot(),
            reader=self.reader.to_dict(),
            counters=self.cumulative(),
            committed_at=wall,
            member=member,
        )

    def cumulative(self) -> dict[str, Any]:
        stats = self.reader.stats
        bad = Counter(self.counters.get("bad_by_reason") or {})
        bad.update(stats.bad_by_reason)
        return {
            "records": int(self.counters.get("records", 0)) + stats.records,
            "bad_lines": int(self.counters.get("bad_lines", 0)) + stats.bad_lines,
            "bad_by_reason": dict(bad),
            "misplaced": int(self.counters.get("misplaced", 0)) + int(self.counters["_misplaced"]),
            "late": int(self.counters.get("late", 0)) + self.detector.stats.late_records,
        }


class KafkaRunner(Service):
    """`zeekndm run` with one Kafka input (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        spec: KafkaSpec,
        *,
        output: str | None = None,
        elasticsearch_url: str | None = None,
        state_dir: str | None = None,
        stdout: Any = None,
        models_spec: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        require_client()
        self.config = config
        self.spec = spec
        self.output = output
        self.elasticsearch_url = elasticsearch_url
        self.state_dir = state_dir_for(config, state_dir)
        self.stdout = stdout
        self.models_spec = models_spec
        self.clock = clock
        self.wall = wall
        self.commit_interval = max(0.05, spec.commit_interval)
        self.member = spec.transactional_id(str(self.state_dir))
        self.parts: dict[tuple[str, int], Partition] = {}
        self.partition_counts: dict[str, int] = {}
        self.rebalances: Counter = Counter()
        self.stop_requested = False
        self.reload_requested = False
        self.reopen_requested = False
        self.crashed = False
        self.totals = Totals()
        self.commits = 0
        self.last_commit_wall: float | None = None
        self._commit_took = 0.0
        self._since_commit = 0
        self._error_logged: dict[str, float] = {}
        self._classifier = config.classifier()
        self.keycheck = KeyCheck(spec.partitioner, clock)
        self.metrics: MetricsEndpoint | None = None
        self._config_mtime = self._mtime(config.path)
        self._fatal: str | None = None
        self._local_at = -1
        self._dropped_records: Counter = Counter()  # partitions given up: read by us
        self._dropped_bad: Counter = Counter()

    # -- lifecycle --------------------------------------------------------------------
    def run(self) -> int:
        refuse_world_writable(self.state_dir)
        registry = Registry(self.state_dir)
        registry.lock()
        try:
            return self._run(registry)
        finally:
            registry.unlock()

    def _run(self, registry: Registry) -> int:
        from confluent_kafka import Consumer, Producer
        from confluent_kafka.admin import AdminClient

        self.registry = registry
        saved = RegistryState.from_dict(registry.load())
        self.totals = saved.totals
        self._notices_before = saved.totals.notices
        secrets = ClientSecrets.load(self.spec)
        self.redact = secrets.redactor(self.spec)
        conf = client_config(self.spec, secrets)
        conf["logger"] = LibrdkafkaLog(self.redact)
        conf["error_cb"] = self._on_error
        sinks = build_sinks(
            self.config,
            self.state_dir,
            output=self.output,
            elasticsearch_url=self.elasticsearch_url,
            stdout=self.stdout,
            allow_unreachable=True,
        )
        self._resume_outputs(sinks, saved.ndjson)
        self.pipeline = Pipeline(
            Detector([], self._classifier, self.config.detector),
            sinks,
            Observer(hostname=self.config.sensor_name),
            event_time=self.config.event_time,
        )
        self.admin = AdminClient(conf)
        self._learn_topics()
        self.store = StateStore(self.spec, conf, self.redact, self.clock)
        self.store.ensure(self.admin, max(self.partition_counts.values()))
        self.producer = Producer(
            {
                **conf,
                "transactional.id": self.member,
                "transaction.timeout.ms": int(self.spec.transaction_timeout * 1000),
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.max.bytes": 4 << 20,
            }
        )
        try:
            self.producer.init_transactions(OP_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - KafkaException: one line, redacted
            raise KafkaClientError(
                f"cannot start a Kafka transaction as {self.member} (exactly once needs "
                f"transactions: a broker >= 2.5, and WRITE and DESCRIBE on this transactional "
                f"id): {self.redact(exc)}"
            ) from None
        session_ms = int(self.spec.session_timeout * 1000)
        self.consumer = Consumer(
            {
                **conf,
                "group.id": self.spec.group,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "isolation.level": "read_committed",
                "auto.offset.reset": self.spec.start,
                "partition.assignment.strategy": "cooperative-sticky",
                "session.timeout.ms": session_ms,
                "heartbeat.interval.ms": max(100, min(3000, session_ms // 3)),
                "enable.partition.eof": False,
            }
        )
        self.consumer.subscribe(
            list(self.spec.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self.metrics = (
            MetricsEndpoint(self.config.metrics_listen) if self.config.metrics_listen else None
        )
        previous = self._install_signals()
        log.info(
            "zeekndm run: consuming %s as member %s of group %s; state in %s and topic %s; "
            "%d model(s) enabled",
            self.spec.describe(),
            self.member,
            self.spec.group,
            self.state_dir,
            self.spec.state_topic,
            len(self.config.enabled_models),
        )
        self._log_effective_config(sinks)
        status = 0
        try:
            self._loop()
        except BaseException:
            self.crashed = True
            raise
        finally:
            self._restore_signals(previous)
            if self.crashed or self._fatal:
                log.error(
                    "stopping on %s; nothing is committed after it, each partition is read "
                    "again from its last commit",
                    self._fatal or "an unexpected error",
                )
                self.crashed = True
                status = 1
            elif not self._commit():
                log.error(
                    "%d alerts could not be delivered to every output; the records that "
                    "caused them will be read again from the last commit",
                    self.pipeline.pending,
                )
                status = 1
            self._close()
        return status

    def _close(self) -> None:
        try:
            self.consumer.close()  # leaves the group: its partitions move at once
        except Exception as exc:  # noqa: BLE001 - closing must not hide the first error
            klog.warning("closing the consumer: %s", self.redact(exc))
        self.store.close()
        try:
            self.producer.flush(5)
        except Exception:  # noqa: BLE001
            pass
        self.pipeline.close()
        self._log_stats(final=True)
        if self.metrics is not None:
            self.metrics.close()

    def _learn_topics(self) -> None:
        """The partition count of every input topic (refused when a topic is missing)."""
        try:
            metadata = self.admin.list_topics(timeout=15)
        except Exception as exc:  # noqa: BLE001 - KafkaException: unreachable, refused
            raise KafkaClientError(
                f"cannot reach Kafka at {', '.join(self.spec.brokers)}: {self.redact(exc)}"
            ) from None
        for topic in self.spec.topics:
            t = metadata.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                why = f" ({self.redact(t.error)})" if t is not None and t.error else ""
                raise KafkaClientError(
                    f"topic {topic} does not exist on {', '.join(self.spec.brokers)}{why}"
                )
            self.partition_counts[topic] = len(t.partitions)

    def request_stop(self) -> None:
        self.stop_requested = True
        pipeline = getattr(self, "pipeline", None)
        for sink in pipeline.sinks if pipeline is not None else ():
            if isinstance(sink, InterruptibleSink):
                sink.interrupt()

    def _on_error(self, err: Any) -> None:
        """librdkafka's error callback: connection trouble is logged (rate-limited); a
        fatal error stops the loop."""
        fatal = getattr(err, "fatal", lambda: False)()
        if fatal:
            self._fatal = f"a fatal Kafka client error ({self.redact(err)})"
            self.stop_requested = True
            return
        key = str(getattr(err, "code", lambda: err)())
        now = self.clock()
        if now - self._error_logged.get(key, float("-inf")) >= ERROR_LOG_EVERY:
            self._error_logged[key] = now
            klog.warning("kafka: %s", self.redact(err))

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        clock = self.clock
        now = clock()
        self._start_timers(now)
        self._rate_mark = (now, self.totals.records)
        consume = self.consumer.consume
        poll = self.consumer.poll
        while not self.stop_requested:
            # What is queued, up to BATCH, without waiting; when nothing is, wait for the
            # first message only (consume(BATCH, wait) would hold a trickle of records
            # until BATCH arrived or the wait ran out: latency for nothing).
            messages = consume(BATCH, 0)
            if not messages:
                first = poll(POLL_WAIT)
                if first is not None:
                    messages = [first, *consume(BATCH - 1, 0)]
            if messages:
                self._feed(messages)
            now = clock()
            self._idle(now)
            self._housekeeping(now)

    def _feed(self, messages: list[Any]) -> None:
        from confluent_kafka import KafkaError

        pipeline = self.pipeline
        parts = self.parts
        check = self.spec.key_check
        keycheck = self.keycheck
        now = self.clock()
        records = 0
        # each partition's messages of this batch, in order, then parsed together
        runs: dict[tuple[str, int], list[tuple[int, bytes | None]]] = {}
        by_offset: dict[tuple[str, int], dict[int, Any]] = {}  # for the key check's text
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self._on_error(err)
                continue
            tp = (msg.topic(), msg.partition())
            part = parts.get(tp)
            if part is None:
                continue  # revoked meanwhile: its new owner reads it from the commit
            offset = msg.offset()
            if offset < part.next_offset:
                continue
            part.next_offset = offset + 1
            ts_type, ts_ms = msg.timestamp()
            if ts_type:
                part.last_message_ts = ts_ms / 1000.0
            run = runs.get(tp)
            if run is None:
                run = runs[tp] = []
                by_offset[tp] = {}
            run.append((offset, msg.value()))
            by_offset[tp][offset] = msg
        for tp, run in runs.items():
            part = parts[tp]
            part.dirty = True
            self._since_commit += len(run)
            # the partition is not quiet: its records may all be on unwatched ports
            part.last_record = now
            part.idle_base = None
            reader = part.reader
            stats = reader.stats
            if part.observer is not None:
                pipeline.observer = part.observer
            observe = part.detector.observe
            clock = part.clock
            for offset, item in reader.batch(run):
                if part.observer_format is not reader.format or part.observer is None:
                    part.observer_format = reader.format
                    part.observer = Observer(self.config.sensor_name, sensor_type(reader.format))
                    pipeline.observer = part.observer
                try:
                    if type(item) is Flow:
                        # the cached expected partition first: the full check (and the
                        # text naming the record) only for a record that fails it
                        if (
                            check
                            and keycheck.expected(item.src, part.partitions) != part.partition
                            and not keycheck.check(
                                part.topic,
                                item.src,
                                part.partition,
                                part.partitions,
                                by_offset[tp][offset].key(),
                                f"{part.where}:{offset}",
                            )
                        ):
                            part.counters["_misplaced"] += 1
                        ts = item[0]
                        if ts <= clock.ceiling:
                            if ts > clock.high:
                                clock.high = ts
                            detections = observe(item)
                            if detections:
                                pipeline.add_detections(detections)
                        else:
                            for flow in clock.admit(item, stats, offset):
                                detections = observe(flow)
                                if detections:
                                    pipeline.add_detections(detections)
                    elif isinstance(item, Detection):
                        pipeline.notices += 1
                        pipeline.add_detections([item])
                except Exception as exc:  # noqa: BLE001 - one record must never stop the service
                    stats.add_bad(offset, "record not processed", f"{type(exc).__name__}: {exc}")
                    klog.debug("%s:%d: record not processed", part.where, offset, exc_info=True)
                    continue
                records += 1
                stats.records += 1
        for part in parts.values():  # records the prefilter passed over are records too
            filtered = part.reader.filtered
            if filtered != part.filtered_seen:
                part.reader.stats.records += filtered - part.filtered_seen
                records += filtered - part.filtered_seen
                part.filtered_seen = filtered
        self.totals.records += records

    def _idle(self, now: float) -> None:
        """Advance the event time of partitions whose sensors went quiet."""
        for part in self.parts.values():
            if now < part.next_idle or part.detector.max_ts == float("-inf"):
                continue
            quiet = now - part.last_record
            if quiet < IDLE_SWEEP_AFTER:
                continue
            part.next_idle = now + IDLE_STEP
            if part.idle_base is None:
                part.idle_base = part.detector.max_ts - quiet
            self.pipeline.observer = part.observer or self.pipeline.observer
            detections = part.detector.advance(part.idle_base + quiet)
            if detections:
                self.pipeline.add_detections(detections)
            part.dirty = True

    # -- rebalances -------------------------------------------------------------------
    def _on_assign(self, consumer: Any, tps: list[Any]) -> None:
        from confluent_kafka import OFFSET_INVALID, TopicPartition

        new = [tp for tp in tps if (tp.topic, tp.partition) not in self.parts]
        if not new:
            return  # the client assigns what it was given
        started = self.clock()
        committed = self._committed(consumer, new)
        wanted = [(tp.topic, tp.partition) for tp in new]
        states = self.store.load(wanted)
        # The commit that moved a partition here may still be completing (its offsets
        # visible, its state records not yet): look again before deciding.
        deadline = self.clock() + 5.0
        while self.clock() < deadline:
            behind = [
                tp for tp in wanted
                if committed.get(tp, -1) >= 0
                and (tp not in states or states[tp].offset < committed[tp])
            ]  # fmt: skip
            if not behind:
                break
            time.sleep(0.2)
            states.update(self.store.load(behind))
        assign = []
        restored = sources = 0
        for t, p in wanted:
            state = states.get((t, p))
            offset = committed.get((t, p), -1)
            if state is not None and (offset < 0 or state.offset == offset):
                offset = state.offset
            elif state is not None:
                klog.warning(
                    "kafka: %s[%d]: the committed offset %d is not the one its state was "
                    "saved with (%d): the group's offsets were moved by hand? reading from %d "
                    "with empty windows",
                    t,
                    p,
                    offset,
                    state.offset,
                    offset,
                )
                state = None
            part = self._new_partition(t, p, offset, state)
            if state is not None:
                restored += 1
                sources += part.detector.tracked_sources
            self.parts[(t, p)] = part
            assign.append(TopicPartition(t, p, offset if offset >= 0 else OFFSET_INVALID))
        consumer.incremental_assign(assign)
        self.rebalances["assigned"] += len(assign)
        klog.info(
            "kafka: assigned %s; %d with saved state (%d tracked sources) restored in %.2f s",
            ", ".join(f"{t}[{p}]@{o if o >= 0 else self.spec.start}" for t, p, o in (
                (a.topic, a.partition, a.offset) for a in assign
            )),
            restored,
            sources,
            self.clock() - started,
        )  # fmt: skip

    def _committed(self, consumer: Any, tps: list[Any]) -> dict[tuple[str, int], int]:
        deadline = self.clock() + OP_TIMEOUT
        while True:
            try:
                got = consumer.committed(tps, timeout=10)
                return {(tp.topic, tp.partition): tp.offset for tp in got}
            except Exception as exc:  # noqa: BLE001 - KafkaException: retried until the deadline
                if self.clock() > deadline:
                    raise KafkaClientError(
                        f"cannot read the group's committed offsets: {self.redact(exc)}"
                    ) from None
                klog.info("kafka: committed offsets not readable yet (%s)", self.redact(exc))

    def _new_partition(
        self, topic: str, partition: int, offset: int, state: PartitionState | None
    ) -> Partition:
        config = self.config
        count = self.partition_counts.get(topic, 0)
        if partition >= count:
            self._learn_topics()
            count = self.partition_counts.get(topic, partition + 1)
        detector = Detector(config.enabled_models, self._classifier, config.detector)
        if state is not None and state.detector:
            try:
                detector.restore(state.detector)
            except Exception as exc:  # noqa: BLE001 - any malformed snapshot: start empty
                klog.warning(
                    "kafka: %s[%d]: the saved detector state cannot be used (%s: %s); "
                    "starting with empty windows",
                    topic,
                    partition,
                    type(exc).__name__,
                    exc,
                )
                detector = Detector(config.enabled_models, self._classifier, config.detector)
        where = f"{topic}[{partition}]"
        reader = PartitionReader(
            where,
            self.spec.format,
            clock=self.clock,
            models=config.models,
            notices=config.notices,
            fields=self.spec.fields,
            max_message_bytes=self.spec.max_message_bytes,
            dports=watched_ports(detector.models),
        )
        counters: Counter = Counter()
        if state is not None:
            reader.restore(state.reader)
            for k, v in state.counters.items():
                counters[k] = v
        return Partition(
            topic=topic,
            partition=partition,
            partitions=count,
            detector=detector,
            clock=EventClock(config.event_time, self.wall, start=detector.max_ts),
            reader=reader,
            next_offset=offset,
            committed_offset=offset,
            counters=counters,
            last_record=self.clock(),
        )

    def _on_revoke(self, consumer: Any, tps: list[Any]) -> None:
        gone = [self.parts[k] for k in ((tp.topic, tp.partition) for tp in tps) if k in self.parts]
        if not gone:
            return
        committed = False
        if not self.crashed:
            try:
                committed = self._commit(gone)
            except Exception as exc:  # noqa: BLE001 - the new owner reads from the last commit
                klog.warning("kafka: committing revoked partitions failed: %s", self.redact(exc))
        for part in gone:
            self._drop(part)
        self.rebalances["revoked"] += len(gone)
        klog.info(
            "kafka: revoked %s (%s)",
            ", ".join(p.where for p in gone),
            "committed" if committed else "not committed: read again by their new owner",
        )

    def _on_lost(self, consumer: Any, tps: list[Any]) -> None:
        gone = [self.parts[k] for k in ((tp.topic, tp.partition) for tp in tps) if k in self.parts]
        for part in gone:
            self._drop(part)
        self.rebalances["lost"] += len(gone)
        if gone:
            klog.warning(
                "kafka: lost %s (the group's session expired); their new owner reads them "
                "from the last commit",
                ", ".join(p.where for p in gone),
            )

    def _drop(self, part: Partition) -> None:
        """Forget a partition given up; what this process read of it stays in its counts."""
        self.parts.pop((part.topic, part.partition), None)
        self._dropped_records[part.where] += part.reader.stats.records
        self._dropped_bad[part.where] += part.reader.stats.bad_lines

    # -- commits ------------------------------------------------------------------------
    def _commit(self, parts: list[Partition] | None = None) -> bool:
        """Deliver everything pending; then commit (in one Kafka transaction) the state and
        offset of each changed partition in `parts` (default: all owned), then the local
        registry. False when something is still waiting (nothing committed for it)."""
        if not self.pipeline.deliver(flush=True):
            return False
        todo = [
            p for p in (self.parts.values() if parts is None else parts)
            if p.dirty and not p.clock.holding
        ]  # fmt: skip
        if todo and not self._transact(todo):
            return False
        self._commit_local()
        return True

    def _transact(self, todo: list[Partition]) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        started = self.clock()
        producer = self.producer
        wall = self.wall()
        self._advance_positions(todo)
        try:
            producer.begin_transaction()
            for part in todo:
                sp = self.store.state_partition(part.partition)
                for key, value in part.state(self.member, wall).encode(self.spec.group):
                    self._produce(sp, key, value)
            offsets = [TopicPartition(p.topic, p.partition, p.next_offset) for p in todo]
            self._retrying(
                lambda: producer.send_offsets_to_transaction(
                    offsets, self.consumer.consumer_group_metadata(), OP_TIMEOUT
                )
            )
            self._retrying(lambda: producer.commit_transaction(OP_TIMEOUT))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if error is not None and error.txn_requires_abort():
                try:
                    producer.abort_transaction(OP_TIMEOUT)
                except KafkaException as again:
                    self._fatal = (
                        f"a Kafka transaction that cannot be aborted ({self.redact(again)})"
                    )
                    self.stop_requested = True
                    return False
                klog.warning(
                    "kafka: the commit of %s was aborted (%s); committed again at the next turn",
                    ", ".join(p.where for p in todo),
                    self.redact(exc),
                )
                return False
            self._fatal = (
                f"a failed Kafka transaction ({self.redact(exc)}): another zeekndm with the "
                f"transactional id {self.member} fenced this one?"
            )
            self.stop_requested = True
            return False
        for part in todo:
            part.dirty = False
            part.committed_offset = part.next_offset
        self.commits += 1
        self._commit_took = self.clock() - started
        return True

    def _advance_positions(self, parts: list[Partition]) -> None:
        """Move each partition's next offset past control records (the markers of the
        transactions that wrote it, which take an offset but are never delivered): the
        consumer's position, once it is past every record handed to us."""
        from confluent_kafka import TopicPartition

        try:
            positions = self.consumer.position(
                [TopicPartition(p.topic, p.partition) for p in parts]
            )
        except Exception:  # noqa: BLE001 - not known yet: the offsets we saw are right
            return
        for part, tp in zip(parts, positions):
            if tp.offset > part.next_offset >= 0:
                part.next_offset = tp.offset

    def _produce(self, partition: int, key: bytes, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(self.store.topic, value=value, key=key, partition=partition)
                self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.1)

    def _retrying(self, step: Callable[[], None]) -> None:
        from confluent_kafka import KafkaException

        deadline = self.clock() + 3 * OP_TIMEOUT
        while True:
            try:
                step()
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if error is None or not error.retriable() or self.clock() > deadline:
                    raise
                klog.info("kafka: retrying a transaction step (%s)", self.redact(exc))

    def _commit_local(self) -> None:
        if not (self._since_commit or self.commits != self._local_at):
            return
        positions = {
            str(sink.path): pos
            for sink in self.pipeline.sinks
            if isinstance(sink, ResumableSink) and (pos := sink.position()) is not None
        }
        totals = Totals(
            self.totals.records,
            self.totals.bad_lines + self._bad_since_start(),
            self._notices_before + self.pipeline.notices,
            self.totals.alerts + self.pipeline.alerts_by_model,
        )
        state = RegistryState(
            totals=totals, ndjson=positions, committed_at=self.wall(), kafka=self._kafka_view()
        )
        self.registry.commit(state.to_dict())
        self._since_commit = 0
        self._local_at = self.commits
        self.last_commit_wall = self.wall()

    def _bad_since_start(self) -> int:
        return sum(p.reader.stats.bad_lines for p in self.parts.values()) + sum(
            self._dropped_bad.values()
        )

    def _kafka_view(self) -> dict[str, Any]:
        lag = self.lag()
        partitions = []
        for (t, p), part in sorted(self.parts.items()):
            c = part.cumulative()
            messages, seconds = lag.get((t, p), (0, 0.0))
            partitions.append(
                {
                    "topic": t,
                    "partition": p,
                    "offset": part.committed_offset,
                    "lag_messages": messages,
                    "lag_seconds": round(seconds, 3),
                    "records": c["records"],
                    "bad_lines": c["bad_lines"],
                    "bad_by_reason": c["bad_by_reason"],
                    "misplaced": c["misplaced"],
                    "late": c["late"],
                    "tracked_sources": part.detector.tracked_sources,
                }
            )
        return {
            "group": self.spec.group,
            "member": self.member,
            "topics": list(self.spec.topics),
            "state_topic": self.spec.state_topic,
            "partitions": partitions,
            "rebalances": dict(self.rebalances),
            "commits": self.commits,
        }

    def lag(self) -> dict[tuple[str, int], tuple[int, float]]:
        """(messages, seconds) behind the end of each owned partition: the cached high
        watermark of the last fetch, and the age of the last message read while more wait."""
        from confluent_kafka import TopicPartition

        now = self.wall()
        out = {}
        self._advance_positions([p for p in self.parts.values() if not p.dirty])
        for key, part in self.parts.items():
            try:
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(part.topic, part.partition), cached=True
                )
            except Exception:  # noqa: BLE001 - not fetched yet
                high = -1
            behind = max(0, high - part.next_offset) if high >= 0 and part.next_offset >= 0 else 0
            seconds = (
                max(0.0, now - part.last_message_ts)
                if behind and part.last_message_ts is not None
                else 0.0
            )
            out[key] = (behind, seconds)
        return out

    # -- outputs -----------------------------------------------------------------------
    def _commit_due(self) -> None:
        self._commit()

    def _config_note(self) -> str:
        return f"key check: {'on' if self.spec.key_check else 'off'} ({self.spec.partitioner})"

    def _apply_models(self, new: Any) -> None:
        self._classifier = new.classifier()
        for part in self.parts.values():
            part.detector.set_models(new.enabled_models, self._classifier)
            part.reader.set_models(new.models, new.notices)
            part.reader.set_dports(watched_ports(part.detector.models))

    def _reopen_outputs(self) -> None:
        if not self._commit():
            return
        for sink in self.pipeline.sinks:
            if isinstance(sink, ReopenableSink):
                sink.reopen()
        self._local_at = -1
        self._commit_local()
        self.reopen_requested = False

    # -- operations -----------------------------------------------------------------------
    def metrics_snapshot(self) -> MetricsSnapshot:
        now = self.clock()
        records = Counter(self._dropped_records)
        bad: Counter = Counter()
        for part in self.parts.values():
            records[part.where] += part.reader.stats.records
            for reason, n in part.reader.stats.bad_by_reason.items():
                bad[(part.where, reason)] += n
        rates = self._rates(now, records)
        lag = self.lag()
        spool_alerts, spool_bytes = self.spool_depth()
        retries, dead = self._output_series()
        return MetricsSnapshot(
            records=dict(records),
            records_per_second=rates,
            bad_lines=dict(bad),
            late_records=sum(p.detector.stats.late_records for p in self.parts.values()),
            tracked_sources=sum(p.detector.tracked_sources for p in self.parts.values()),
            alerts=dict(self.pipeline.alerts_by_model_state),
            spool_alerts=spool_alerts,
            spool_bytes=spool_bytes,
            retries=dict(retries),
            dead_letters=dict(dead),
            last_commit=self.last_commit_wall,
            kafka_lag_messages={(t, str(p)): v[0] for (t, p), v in lag.items()},
            kafka_lag_seconds={(t, str(p)): v[1] for (t, p), v in lag.items()},
            kafka_misplaced={(t, str(p)): n for (t, p), n in self.keycheck.misplaced.items()},
            kafka_rebalances={
                k: self.rebalances.get(k, 0) for k in ("assigned", "revoked", "lost")
            },
        )

    def _log_stats(self, final: bool = False) -> None:
        now = self.clock()
        then, records_then = getattr(self, "_rate_mark", (now, self.totals.records))
        rate = (self.totals.records - records_then) / max(now - then, 1e-9)
        self._rate_mark = (now, self.totals.records)
        lag = {} if final else self.lag()
        parts = ", ".join(
            f"{part.where} lag {lag.get(k, (0, 0.0))[0]}/{lag.get(k, (0, 0.0))[1]:.0f}s"
            for k, part in sorted(self.parts.items())
        )
        alerts = self.totals.alerts + self.pipeline.alerts_by_model
        log.info(
            "%s: records=%d (%.0f/s) bad_lines=%d notices=%d late=%d tracked_sources=%d "
            "alerts={%s} pending=%d spool=%d partitions=[%s] misplaced=%d rebalances=%s",
            "stopped" if final else "stats",
            self.totals.records,
            rate,
            self.totals.bad_lines + self._bad_since_start(),
            self.pipeline.notices,
            sum(p.detector.stats.late_records for p in self.parts.values()),
            sum(p.detector.tracked_sources for p in self.parts.values()),
            ", ".join(f"{m}: {n}" for m, n in sorted(alerts.items())),
            self.pipeline.pending,
            self.spool_depth()[0],
            parts,
            sum(self.keycheck.misplaced.values()),
            dict(self.rebalances) or "{}",
        )


class LibrdkafkaLog:
    """librdkafka's log lines into `zeekndm.live.kafka.client`, redacted."""

    def __init__(self, redact: Callable[[object], str]) -> None:
        self._log = logging.getLogger("zeekndm.live.kafka.client")
        self._redact = redact

    def log(self, level: int, fmt: str, *args: Any) -> None:
        # librdkafka warns about every transient condition it then retries (a coordinator
        # moving, a broker restarting); real failures also reach the error callback, which
        # logs them once per kind. So its warnings are INFO here, its errors stay errors.
        if level == logging.WARNING:
            level = logging.INFO
        if self._log.isEnabledFor(level):
            self._log.log(level, "%s", self._redact(fmt % args if args else fmt))
