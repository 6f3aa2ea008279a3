"""Live mode's Prometheus endpoint (`metrics.listen: 127.0.0.1:9477`).

The run loop publishes a `MetricsSnapshot` (plain numbers) after each turn that committed
or logged stats; the endpoint, served by `prometheus_client` in its own thread, renders
the latest snapshot on each scrape. So a scrape never touches the loop's live structures
and never slows it down. `prometheus_client` is optional (`pip install 'zeekndm[metrics]'`):
without it, `metrics.listen` is an error at start naming the package.

Metric names (all prefixed `zeekndm_`): records_total / records_per_second per input,
file_lag_bytes / file_lag_seconds per file, bad_lines_total per input and reason,
late_records_total, tracked_sources, alerts_total per model and state, spool_alerts and
spool_bytes, delivery_retries_total and dead_letters_total per output,
last_commit_timestamp_seconds; with a Kafka input also kafka_lag_messages /
kafka_lag_seconds and kafka_misplaced_records_total per topic and partition, and
kafka_rebalance_partitions_total per event (assigned, revoked, lost). `zeekndm status`
prints the same numbers from the registry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from zeekndm.errors import ZeekNDMError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MetricsSnapshot:
    records: dict[str, int] = field(default_factory=dict)  # input -> records
    records_per_second: dict[str, float] = field(default_factory=dict)
    lag_bytes: dict[str, int] = field(default_factory=dict)  # file -> bytes behind
    lag_seconds: dict[str, float] = field(default_factory=dict)
    bad_lines: dict[tuple[str, str], int] = field(default_factory=dict)  # (input, reason)
    late_records: int = 0
    tracked_sources: int = 0
    alerts: dict[tuple[str, str], int] = field(default_factory=dict)  # (model, state)
    spool_alerts: int = 0
    spool_bytes: int = 0
    retries: dict[str, int] = field(default_factory=dict)  # output -> retries
    dead_letters: dict[str, int] = field(default_factory=dict)
    last_commit: float | None = None
    # a Kafka input: per (topic, partition) owned, and rebalance events by kind
    kafka_lag_messages: dict[tuple[str, str], int] = field(default_factory=dict)
    kafka_lag_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    kafka_misplaced: dict[tuple[str, str], int] = field(default_factory=dict)
    kafka_rebalances: dict[str, int] = field(default_factory=dict)  # assigned/revoked/lost


def _families(snap: MetricsSnapshot):
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def labelled(kind, name, doc, labels, values):
        family = kind(name, doc, labels=labels)
        for key, value in sorted(values.items()):
            family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
        return family

    yield labelled(CounterMetricFamily, "zeekndm_records", "records read", ["input"], snap.records)
    yield labelled(
        GaugeMetricFamily,
        "zeekndm_records_per_second",
        "records read per second over the last interval",
        ["input"],
        snap.records_per_second,
    )
    yield labelled(
        GaugeMetricFamily,
        "zeekndm_file_lag_bytes",
        "bytes between what was read and the end of the file",
        ["file"],
        snap.lag_bytes,
    )
    yield labelled(
        GaugeMetricFamily,
        "zeekndm_file_lag_seconds",
        "seconds since the unread data of the file was written",
        ["file"],
        snap.lag_seconds,
    )
    yield labelled(
        CounterMetricFamily,
        "zeekndm_bad_lines",
        "malformed input lines",
        ["input", "reason"],
        snap.bad_lines,
    )
    late = CounterMetricFamily(
        "zeekndm_late_records", "records later than the allowed lateness (not counted)"
    )
    late.add_metric([], snap.late_records)
    yield late
    tracked = GaugeMetricFamily("zeekndm_tracked_sources", "sources with detector state")
    tracked.add_metric([], snap.tracked_sources)
    yield tracked
    yield labelled(
        CounterMetricFamily, "zeekndm_alerts", "alerts raised", ["model", "state"], snap.alerts
    )
    spool = GaugeMetricFamily("zeekndm_spool_alerts", "alerts waiting in the on-disk spool")
    spool.add_metric([], snap.spool_alerts)
    yield spool
    spool_bytes = GaugeMetricFamily("zeekndm_spool_bytes", "size of the on-disk spool")
    spool_bytes.add_metric([], snap.spool_bytes)
    yield spool_bytes
    yield labelled(
        CounterMetricFamily,
        "zeekndm_delivery_retries",
        "delivery attempts retried",
        ["output"],
        snap.retries,
    )
    yield labelled(
        CounterMetricFamily,
        "zeekndm_dead_letters",
        "alerts an output refused for good (in its dead-letter file)",
        ["output"],
        snap.dead_letters,
    )
    if snap.kafka_rebalances or snap.kafka_lag_messages:
        yield labelled(
            GaugeMetricFamily,
            "zeekndm_kafka_lag_messages",
            "messages between the consumer's position and the end of the partition",
            ["topic", "partition"],
            snap.kafka_lag_messages,
        )
        yield labelled(
            GaugeMetricFamily,
            "zeekndm_kafka_lag_seconds",
            "age of the last message read while more wait (0 when caught up)",
            ["topic", "partition"],
            snap.kafka_lag_seconds,
        )
        yield labelled(
            CounterMetricFamily,
            "zeekndm_kafka_misplaced_records",
            "records whose source belongs to another partition (topic not keyed by source)",
            ["topic", "partition"],
            snap.kafka_misplaced,
        )
        yield labelled(
            CounterMetricFamily,
            "zeekndm_kafka_rebalance_partitions",
            "partitions assigned, revoked or lost in consumer group rebalances",
            ["event"],
            snap.kafka_rebalances,
        )
    commit = GaugeMetricFamily(
        "zeekndm_last_commit_timestamp_seconds", "when the registry was last committed"
    )
    if snap.last_commit is not None:
        commit.add_metric([], snap.last_commit)
    yield commit


class MetricsEndpoint:
    """The HTTP endpoint at `listen` (HOST:PORT) serving the latest published snapshot."""

    def __init__(self, listen: str) -> None:
        try:
            from prometheus_client import CollectorRegistry, start_http_server
        except ImportError:
            raise ZeekNDMError(
                "metrics.listen needs the prometheus_client package: "
                "pip install 'zeekndm[metrics]' (or pip install prometheus_client)"
            ) from None
        host, _, port = listen.rpartition(":")
        self.snapshot = MetricsSnapshot()
        endpoint = self

        class _Collector:
            def collect(self):
                return _families(endpoint.snapshot)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector())
        try:
            self._server, self._thread = start_http_server(
                int(port), addr=host.strip("[]"), registry=registry
            )
        except OSError as exc:
            raise ZeekNDMError(f"cannot serve metrics on {listen}: {exc.strerror or exc}") from None
        self.address = self._server.server_address
        log.info("metrics on http://%s/metrics", listen)

    def publish(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot  # one assignment: the server thread reads it

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
