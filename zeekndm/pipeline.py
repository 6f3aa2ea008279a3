"""Detector → enricher → sinks, with the delivery bookkeeping both `replay` and `run` share.

The pipeline holds alerts until every sink has settled them (acked, spooled, or
dead-lettered). `deliver()` says whether anything is still waiting for a retry, which is
what lets live mode commit an input offset only after the alerts of the records before
it are safe: a crash can then duplicate alerts (harmless, ids are deterministic) but
never lose one.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable, Sequence

from zeekndm.detect import Detector
from zeekndm.detection import Detection
from zeekndm.enrich import Alert, Observer, enrich
from zeekndm.flow import Flow
from zeekndm.sinks.base import AlertSink, SendResult

log = logging.getLogger(__name__)


class Pipeline:
    def __init__(
        self,
        detector: Detector,
        sinks: Sequence[AlertSink],
        observer: Observer | None = None,
        batch_size: int = 500,
    ) -> None:
        self.detector = detector
        self.sinks = list(sinks)
        self.observer = observer or Observer()
        self.batch_size = batch_size
        self._pending: dict[str, list[Alert]] = {s.name: [] for s in self.sinks}
        self.alerts_by_model: Counter = Counter()
        self.alerts_by_state: Counter = Counter()
        self.rejected: Counter = Counter()  # sink name -> dead-lettered count
        self.notices = 0

    # -- input side ----------------------------------------------------------------
    def push(self, item: Flow | Detection) -> None:
        """One record from a reader: a Flow to detect on, or a ready Detection (a Zeek notice)."""
        if isinstance(item, Flow):
            detections = self.detector.observe(item)
            if not detections:
                return
        else:
            self.notices += 1
            detections = [item]
        self.add_detections(detections)

    def push_many(self, items: Iterable[Flow | Detection]) -> None:
        observe = self.detector.observe
        for item in items:
            if type(item) is Flow:
                detections = observe(item)
                if detections:
                    self.add_detections(detections)
            else:
                self.push(item)

    def add_detections(self, detections: Iterable[Detection]) -> None:
        for detection in detections:
            alert = enrich(detection, self.observer)
            self.alerts_by_model[detection.model.name] += 1
            self.alerts_by_state[detection.state] += 1
            for queue in self._pending.values():
                queue.append(alert)
        if any(len(q) >= self.batch_size for q in self._pending.values()):
            self.deliver()

    def finish_input(self) -> None:
        """The input is over (replay): end open episodes with their totals."""
        self.add_detections(self.detector.finish())

    # -- output side ---------------------------------------------------------------
    @property
    def pending(self) -> int:
        return max((len(q) for q in self._pending.values()), default=0)

    def deliver(self, flush: bool = False) -> bool:
        """Send what is pending to every sink. True when nothing waits for a retry."""
        complete = True
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
