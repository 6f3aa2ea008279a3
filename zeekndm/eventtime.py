"""Event time that one damaged record cannot move: a bound on how far record time jumps.

The detector's clock is the newest record time it has seen, and records far behind it
are "late". One record whose timestamp lost or flipped a digit (9700000050 instead of
1700000050) would move that clock centuries ahead: every later record is late, nothing
is detected again, and live mode keeps the clock in its registry across restarts.
`EventClock` stands in front of the detector (in `Pipeline`, so replay and live mode
share it) and decides, per record, whether its time is believable:

- A record more than `max_future` seconds ahead of the wall clock is a bad ts at once:
  no sensor writes connections from the future (allowing for a skewed clock).
- A record more than `max_jump` seconds ahead of the newest accepted record is *held*.
  Legitimate jumps happen (a replay of two files days apart, a sensor restarting after
  a gap), and then the records after it agree with it: once `confirmations` records
  (the first included) agree on the new time, all of them go to the detector in their
  order and the clock moves. If instead `confirmations` records at the old time arrive
  first, or the input ends, the held records are bad ts lines, counted for the file and
  line they came from.

Holding is short (a few records), and while a record is held the pipeline reports that
work is pending, so live mode commits no input offset past it: a crash re-reads it.
The common case costs the pipeline two comparisons per record (see `Pipeline.push_many`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

from zeekndm.flow import Flow

log = logging.getLogger(__name__)

_NEG_INF = float("-inf")
_INF = float("inf")
LOG_REJECTIONS = 5
"""Rejections logged when the record's file is not known (after that only counted)."""


@dataclass(frozen=True, slots=True)
class EventTimeSettings:
    """`detector.max_future`, `detector.max_time_jump`, `detector.time_jump_confirmations`.

    None for either bound switches that bound off."""

    max_future: float | None = 86400.0
    max_jump: float | None = 86400.0
    confirmations: int = 3


class BadLineSink(Protocol):
    """Where a rejected record is counted: a reader's ReadStats."""

    def add_bad(self, lineno: int, reason: str, detail: str = "") -> None: ...


def _iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError, OSError):
        return f"{ts!r}"


class EventClock:
    """Admits records whose time is believable; see the module docstring.

    `high` is the newest accepted record time; a record at or below `ceiling` needs no
    further thought (the pipeline tests that inline and only calls `admit` above it)."""

    def __init__(
        self,
        settings: EventTimeSettings | None = None,
        wall_clock: Callable[[], float] = time.time,
        start: float = _NEG_INF,
    ) -> None:
        self.settings = settings or EventTimeSettings()
        self.wall_clock = wall_clock
        self.high = _NEG_INF
        self.rejected = 0
        self._wall_limit = _NEG_INF
        self._held: list[tuple[Flow, Any, int]] = []
        self._against = 0  # records at the old time since the held jump
        self._refresh_wall()
        if start > _NEG_INF and start <= self._wall_limit:
            self.high = start  # live mode: resume from the restored detector clock
        self.ceiling = self._ceiling()

    @property
    def holding(self) -> int:
        """How many records wait for their jump to be confirmed or refuted."""
        return len(self._held)

    # -- decisions ------------------------------------------------------------------
    def admit(self, flow: Flow, source: BadLineSink | None = None, lineno: int = 0) -> list[Flow]:
        """The records that may go to the detector now, in order (often just `flow`)."""
        ts = flow[0]
        if ts <= self.ceiling:
            if ts > self.high:
                self.high = ts
            return [flow]
        return self._decide(flow, source, lineno)

    def _decide(self, flow: Flow, source: BadLineSink | None, lineno: int) -> list[Flow]:
        s = self.settings
        ts = flow[0]
        if ts > self._wall_limit:
            self._refresh_wall()
            if ts > self._wall_limit:
                ahead = ts - (self._wall_limit - (s.max_future or 0.0))
                self._reject(flow, source, lineno, f"{ahead:,.0f} s ahead of the wall clock")
                self.ceiling = self._ceiling()
                return []
        max_jump = _INF if s.max_jump is None else s.max_jump
        if self.high == _NEG_INF or ts <= self.high + max_jump:
            out = [flow]
            if ts > self.high:
                self.high = ts
            if self._held:
                self._against += 1
                if self._against >= s.confirmations:
                    self._refute()
            self.ceiling = self._ceiling()
            return out
        # a jump: hold it until later records confirm or refute the new time
        if self._held:
            times = [f[0] for f, _, _ in self._held]
            if ts > max(times) + max_jump or ts < min(times) - max_jump:
                self._refute()  # a different jump: the earlier one had no support
        self._held.append((flow, source, lineno))
        out = []
        if len(self._held) >= s.confirmations:
            out = [f for f, _, _ in self._held]
            log.info(
                "record time jumped from %s to %s, confirmed by %d records",
                _iso(self.high),
                _iso(min(f[0] for f in out)),
                len(out),
            )
            self.high = max(self.high, *(f[0] for f in out))
            self._held = []
            self._against = 0
        self.ceiling = self._ceiling()
        return out

    def finish(self) -> None:
        """The input ended: a jump still unconfirmed was damage."""
        if self._held:
            self._refute()
            self.ceiling = self._ceiling()

    # -- helpers --------------------------------------------------------------------
    def _refute(self) -> None:
        for flow, source, lineno in self._held:
            ahead = flow[0] - self.high
            self._reject(
                flow,
                source,
                lineno,
                f"{ahead:,.0f} s ahead of the records around it, not confirmed by later ones",
            )
        self._held = []
        self._against = 0

    def _reject(self, flow: Flow, source: BadLineSink | None, lineno: int, why: str) -> None:
        self.rejected += 1
        detail = f"{_iso(flow[0])}: {why}"
        if source is not None:
            source.add_bad(lineno, "bad ts", detail)
        elif self.rejected <= LOG_REJECTIONS:
            log.warning("record from %s dropped: bad ts (%s)", flow.src, detail)

    def _refresh_wall(self) -> None:
        future = self.settings.max_future
        self._wall_limit = _INF if future is None else self.wall_clock() + future

    def _ceiling(self) -> float:
        """Highest time accepted without a second look; -inf while a jump is held, so
        every record is looked at until the jump is settled (and before the first)."""
        jump = self.settings.max_jump
        if jump is None:
            return self._wall_limit
        if self._held or self.high == _NEG_INF:  # the first record sets `high` in _decide
            return _NEG_INF
        return min(self.high + jump, self._wall_limit)
