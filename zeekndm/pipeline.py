"""Detector → enricher → sinks, with the delivery bookkeeping both `replay` and `run` share.

The pipeline holds alerts until every sink has settled them (acked, spooled, or
dead-lettered). `deliver()` says whether anything is still waiting for a retry, which is
what lets live mode commit an input offset only after the alerts of the records before
it are safe: a crash can then duplicate alerts (harmless, ids are deterministic) but
never lose one.

Every Flow passes the `EventClock` before the detector, so a record whose time is not
believable (far ahead of the wall clock, or a jump no later record confirms) is counted
as a bad ts line of its file instead of moving event time (see `zeekndm.eventtime`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Callable, Iterable, Sequence

from zeekndm.detect import Detector
from zeekndm.detection import Detection
from zeekndm.enrich import Alert, Observer, enrich
from zeekndm.eventtime import BadLineSink, EventClock, EventTimeSettings
from zeekndm.flow import Flow
from zeekndm.readers import FusedScan, ReadStats, _read
from zeekndm.sinks.base import AlertSink, SendResult

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        detector: Detector,
        sinks: Sequence[AlertSink],
        observer: Observer | None = None,
        batch_size: int = 500,
        event_time: EventTimeSettings | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.detector = detector
        self.clock = EventClock(event_time, wall_clock, start=detector.max_ts)
        self.wall_clock = wall_clock  # event.created: when an alert was raised
        self.sinks = list(sinks)
        self.observer = observer or Observer()
        self.batch_size = batch_size
        self._pending: dict[str, list[Alert]] = {s.name: [] for s in self.sinks}
        self.alerts_by_model: Counter = Counter()
        self.alerts_by_state: Counter = Counter()
        self.alerts_by_model_state: Counter = Counter()  # (model, state) -> alerts
        self.rejected: Counter = Counter()  # sink name -> dead-lettered count
        self.notices = 0

    # -- input side ----------------------------------------------------------------
    def push(
        self, item: Flow | Detection, source: BadLineSink | None = None, lineno: int = 0
    ) -> None:
        """One record from a reader: a Flow to detect on, or a ready Detection (a Zeek
        notice). `source` (the reader's ReadStats) and `lineno` say where a record the
        event clock rejects is counted."""
        if isinstance(item, Flow):
            observe = self.detector.observe
            for flow in self.clock.admit(item, source, lineno):
                detections = observe(flow)
                if detections:
                    self.add_detections(detections)
        else:
            self.notices += 1
            self.add_detections([item])

    def push_many(self, items: Iterable[Flow | Detection], source: Any = None) -> None:
        """Every record of `items`; `source` is the ReadStats of the reader producing
        them (its `lines` is the line of the record just yielded).

        When `items` is `read_flows`'s own generator for `source` and the detector is
        the plain compiled one (see `_fusable`), the compiled TSV block path observes
        the plain records itself: the reader yields a `FusedScan` for each stretch of a
        block, run here with this loop's clock state (`scan_observe`: the same clock
        test and `observe` call as the loop below), and only the records and lines it
        stops at come through as items."""
        observe = self.detector.observe
        clock = self.clock
        ceiling = clock.ceiling
        high = clock.high
        dispatch = self._fusable(items, source)
        if dispatch is not None:
            source.fuse = FusedScan()
        add = self.add_detections
        try:
            for item in items:
                if type(item) is Flow:
                    ts = item[0]
                    if ts > high:
                        if ts > ceiling:
                            if high > clock.high:
                                clock.high = high
                            for flow in clock._decide(
                                item, source, source.lines if source is not None else 0
                            ):
                                detections = observe(flow)
                                if detections:
                                    add(detections)
                            ceiling, high = clock.ceiling, clock.high
                            continue
                        high = ts
                    detections = observe(item)
                    if detections:
                        add(detections)
                elif type(item) is FusedScan:
                    result = item.scanner.scan_observe(
                        item.block, item.at, item.max_line_bytes, dispatch, high, ceiling, add
                    )
                    high = result[6]
                    item.result = result
                else:
                    self.push(item)
        finally:
            if high > clock.high:
                clock.high = high
            if dispatch is not None:
                source.fuse = None

    def _fusable(self, items: Any, source: Any) -> Any:
        """The detector's compiled dispatch when the fused block path is exactly this
        loop: `items` is `read_flows`'s generator (nothing between it and here),
        `source` a ReadStats not already fused, and the detector a plain compiled
        `Detector` (its `observe` is the dispatch's, no recorder); else None."""
        det = self.detector
        dispatch = getattr(det, "_dispatch", None)
        if (
            dispatch is None
            or type(det) is not Detector
            or det.recorder is not None
            or det.observe != dispatch.observe
            or type(source) is not ReadStats
            or source.fuse is not None
            or getattr(items, "gi_code", None) is not _read.__code__
        ):
            return None
        return dispatch

    def add_detections(self, detections: Iterable[Detection]) -> None:
        created = self.wall_clock()
        observer = self.observer
        queues = list(self._pending.values())
        by_model = self.alerts_by_model
        by_state = self.alerts_by_state
        by_model_state = self.alerts_by_model_state
        # One line per alert for an operator following the service's log (replay
        # logs at WARNING unless told otherwise, so this stays out of its way).
        info = log.isEnabledFor(logging.INFO)
        for detection in detections:
            alert = enrich(detection, observer, created)
            name = detection.model.name
            state = detection.state
            by_model[name] += 1
            by_state[state] += 1
            by_model_state[(name, state)] += 1
            if info:
                log.info(
                    "alert: %s %s from %s, severity %s",
                    name,
                    state,
                    detection.source,
                    detection.severity,
                )
            for queue in queues:
                queue.append(alert)
        if any(len(q) >= self.batch_size for q in queues):
            self.deliver()

    def finish_input(self) -> None:
        """The input is over (replay): settle a held time jump, end open episodes."""
        self.clock.finish()
        self.add_detections(self.detector.finish())

    # -- output side ---------------------------------------------------------------
    @property
    def pending(self) -> int:
        return max((len(q) for q in self._pending.values()), default=0)

    def deliver(self, flush: bool = False) -> bool:
        """Send what is pending to every sink. True when nothing waits for a retry and
        no record waits for the event clock (so an input offset may be committed)."""
        complete = not self.clock.holding
        for sink in self.sinks:
            queue = self._pending[sink.name]
            retry: list[Alert] = []
            while queue:
                batch, queue = queue[: self.batch_size], queue[self.batch_size :]
                result = self._send(sink, batch)
                if not result.complete:
                    retry.extend(result.retry)
                    retry.extend(queue)
                    queue = []
            if flush and not retry:
                result = self._flush(sink)
                retry.extend(result.retry)
            self._pending[sink.name] = retry
            if retry:
                complete = False
        return complete

    def _send(self, sink: AlertSink, batch: list[Alert]) -> SendResult:
        result = sink.send(batch)
        self._account(sink, result)
        return result

    def _flush(self, sink: AlertSink) -> SendResult:
        result = sink.flush()
        self._account(sink, result)
        return result

    def _account(self, sink: AlertSink, result: SendResult) -> None:
        for alert_id, reason in result.rejected:
            self.rejected[sink.name] += 1
            log.warning("%s rejected alert %s permanently: %s", sink.name, alert_id, reason)

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - closing one sink must not stop the others
                log.exception("closing sink %s failed", sink.name)
