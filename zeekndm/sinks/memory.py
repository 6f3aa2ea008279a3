"""An in-memory sink for tests and for embedding: keeps every alert it acknowledged."""

from __future__ import annotations

from typing import Sequence

from zeekndm.enrich import Alert
from zeekndm.sinks.base import SendResult


class MemorySink:
    name = "memory"

    def __init__(self) -> None:
        self.alerts: list[Alert] = []
        self.closed = False

    @property
    def docs(self) -> list[dict]:
        return [a.doc for a in self.alerts]

    def send(self, batch: Sequence[Alert]) -> SendResult:
        self.alerts.extend(batch)
        return SendResult(acked=len(batch))

    def flush(self) -> SendResult:
        return SendResult()

    def close(self) -> None:
        self.closed = True
