"""The interface every alert output implements.

An output gets a batch and must end it explicitly, as Filebeat outputs do: each alert is
acknowledged (delivered, or durably spooled to disk), rejected with a reason (a permanent
error; the sink has already written it to its dead-letter file), or left for retry. The
pipeline commits input offsets only when nothing in the batch is left for retry, so a
crash can duplicate alerts (harmless: ids are deterministic) but never lose one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from zeekndm.enrich import Alert


@dataclass(frozen=True, slots=True)
class SendResult:
    """How a sink ended one batch."""

    acked: int = 0
    rejected: tuple[tuple[str, str], ...] = ()  # (alert id, reason), already dead-lettered
    retry: tuple[Alert, ...] = field(default=())  # not delivered; send again later

    @property
    def complete(self) -> bool:
        """True when every alert of the batch is settled (acked or dead-lettered)."""
        return not self.retry


@runtime_checkable
class AlertSink(Protocol):
    """An alert output. `name` appears in logs and stats."""

    name: str

    def send(self, batch: Sequence[Alert]) -> SendResult: ...

    def flush(self) -> SendResult: ...

    def close(self) -> None: ...


@runtime_checkable
class SpoolingSink(Protocol):
    """A sink that acknowledges alerts by keeping them on disk until its output answers.

    `undelivered()` is (alerts still waiting, the last delivery error): a replay that
    ends with alerts waiting has not delivered them, whatever `send` acknowledged."""

    def undelivered(self) -> tuple[int, str | None]: ...


@runtime_checkable
class InterruptibleSink(Protocol):
    """A sink whose sending can be cut short: `interrupt()` ends the request under way and
    any backoff wait at once (undelivered alerts are spooled). Safe in a signal handler."""

    def interrupt(self) -> None: ...


@runtime_checkable
class ResumableSink(Protocol):
    """An output that can find its place again after a crash (a file it appends to).

    `position()` is committed with the input offsets; after a restart,
    `skip_written_since(position)` makes it drop the alerts it already wrote after that
    point, which the re-read records produce again with the same ids. `position()` is
    None when there is nothing to find (a stream such as stdout)."""

    def position(self) -> int | None: ...

    def skip_written_since(self, offset: int) -> int: ...


@runtime_checkable
class ReopenableSink(Protocol):
    """An output whose file can be rotated away: `reopen()` starts writing to a new file
    at the same path (logrotate's `postrotate` sends SIGHUP)."""

    def reopen(self) -> None: ...


@runtime_checkable
class SpoolHolder(Protocol):
    """An output whose on-disk spool can be inspected: `spool.count()` alerts, `spool.size`
    bytes (for stats, metrics and `status`)."""

    spool: Any


@runtime_checkable
class CountingSink(Protocol):
    """An output that counts its delivery work in `stats` ("retried", "dead_lettered",
    ...), for the metrics endpoint and `status`."""

    stats: dict[str, int]


@runtime_checkable
class RemoteSink(Protocol):
    """An output that sends to a server: `endpoint` says where, redacted, for logs."""

    @property
    def endpoint(self) -> str: ...
