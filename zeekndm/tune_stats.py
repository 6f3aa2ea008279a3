"""Per-source statistics of a history, as the detector counts it.

`StatsRecorder` is installed as the detector's recorder (see `zeekndm.detect`, "Recorder
hook"): for every record a model counts it hears the tracked key, the record's time and
outcome, the distinct items in the window after the record and the distinct items the
track holds since it began. From that it keeps, per (model, key), a `SourceStats`:
attempts, failures, answers, the peak window count and when it was reached, the peak
on the slow path (distinct items within one run of activity, a run ending after the
model's idle timeout), first and last seen, and the days and hours it was active.

The peaks are the detector's own numbers, the ones the thresholds compare against, so a
threshold just above a source's peak keeps that source quiet in `replay`.

`ModelStats` turns the per-key rows into what tune prints: sources seen, percentiles of
the peaks up to the maximum, the top sources, and each source's character (benign-looking,
scanner-like, other). The Spark engine produces the same `SourceStats` rows and hands them
to the same code, so both engines print the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from zeekndm.flow import Outcome

#: Percentiles tune reports, up to the maximum
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 100.0)
#: A source "behaves like a scanner" when at least this share of its attempts failed
SCANNER_FAILURE_SHARE = 0.5
#: A source "looks benign" when less than this share failed, at least BENIGN_ANSWER_SHARE
#: were answered, and it is steady (`steady`)
BENIGN_FAILURE_SHARE = 0.2
BENIGN_ANSWER_SHARE = 0.5
_NA = Outcome.NO_ANSWER
_REJ = Outcome.REJECTED
_EST = Outcome.ESTABLISHED
_ABT = Outcome.ABORTED

BENIGN = "benign"
SCANNER = "scanner"
OTHER = "other"


class SourceStats:
    """What one (model, tracked key) did over the history."""

    __slots__ = (
        "attempts",
        "failures",
        "answered",
        "peak",
        "peak_at",
        "slow_peak",
        "slow_at",
        "first",
        "last",
        "days",
        "hours",
    )

    def __init__(self, ts: float) -> None:
        self.attempts = 0
        self.failures = 0
        self.answered = 0
        self.peak = 0
        self.peak_at = ts
        self.slow_peak = 0
        self.slow_at = ts
        self.first = ts
        self.last = ts
        self.days: set[int] = set()
        self.hours: set[int] = set()

    @property
    def failure_share(self) -> float:
        return self.failures / self.attempts if self.attempts else 0.0

    @property
    def answer_share(self) -> float:
        return self.answered / self.attempts if self.attempts else 0.0

    def as_row(self) -> dict[str, Any]:
        """A plain row (JSON, and what the engines compare)."""
        return {
            "attempts": self.attempts,
            "failures": self.failures,
            "answered": self.answered,
            "peak": self.peak,
            "peak_at": self.peak_at,
            "slow_peak": self.slow_peak,
            "slow_at": self.slow_at,
            "first": self.first,
            "last": self.last,
            "days": len(self.days),
            "hours": len(self.hours),
        }

    def merge(self, other: "SourceStats") -> None:
        """Add `other` (the same key seen by another worker) into this one."""
        self.attempts += other.attempts
        self.failures += other.failures
        self.answered += other.answered
        if other.peak > self.peak or (other.peak == self.peak and other.peak_at < self.peak_at):
            self.peak, self.peak_at = other.peak, other.peak_at
        if other.slow_peak > self.slow_peak or (
            other.slow_peak == self.slow_peak and other.slow_at < self.slow_at
        ):
            self.slow_peak, self.slow_at = other.slow_peak, other.slow_at
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        self.days |= other.days
        self.hours |= other.hours


class StatsRecorder:
    """The detector's recorder for tune (`Detector.recorder`): per (model, key) stats.

    `hit` is set whenever a record was counted, so the caller can tell the records that
    changed some track from those that only moved the detector's clock."""

    __slots__ = ("sources", "hit")

    def __init__(self) -> None:
        self.sources: dict[str, dict[Any, SourceStats]] = {}
        self.hit = False

    def counted(
        self, model: str, key: Any, ts: float, outcome: Outcome, window: int, distinct: int
    ) -> None:
        self.hit = True
        per_model = self.sources.get(model)
        if per_model is None:
            per_model = self.sources[model] = {}
        s = per_model.get(key)
        if s is None:
            s = per_model[key] = SourceStats(ts)
        s.attempts += 1
        if outcome is _NA or outcome is _REJ:
            s.failures += 1
        elif outcome is _EST or outcome is _ABT:
            s.answered += 1
        if window > s.peak:
            s.peak = window
            s.peak_at = ts
        if distinct > s.slow_peak:
            s.slow_peak = distinct
            s.slow_at = ts
        if ts < s.first:
            s.first = ts
        if ts > s.last:
            s.last = ts
        hour = int(ts // 3600)
        if hour not in s.hours:
            s.hours.add(hour)
            s.days.add(hour // 24)


def percentile(sorted_values: list[int], q: float) -> int:
    """The nearest-rank percentile (`q` in 0-100) of ascending values: a value some
    source really reached, never an interpolation."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True, slots=True)
class Span:
    """The time the history covers (record time)."""

    first: float
    last: float

    @property
    def days(self) -> float:
        """Length in days, at least an hour's worth (episodes per day of a short sample)."""
        return max(self.last - self.first, 3600.0) / 86400.0

    @property
    def day_count(self) -> int:
        return int(self.last // 86400) - int(self.first // 86400) + 1

    @property
    def hour_count(self) -> int:
        return int(self.last // 3600) - int(self.first // 3600) + 1


def steady(s: SourceStats, span: Span) -> bool:
    """Active through the history: on at least half of its days (and two of them) when it
    lasts two days or more, else in at least half of its hours (and two of them)."""
    if span.last - span.first >= 2 * 86400:
        return len(s.days) >= max(2, math.ceil(span.day_count / 2))
    return len(s.hours) >= max(2, math.ceil(span.hour_count / 2))


def character(s: SourceStats, span: Span) -> str:
    """SCANNER (mostly failing: it behaves like a scanner, whatever else it does),
    BENIGN (mostly answered, few failures, steady over the history) or OTHER."""
    if s.failure_share >= SCANNER_FAILURE_SHARE:
        return SCANNER
    if (
        s.failure_share < BENIGN_FAILURE_SHARE
        and s.answer_share >= BENIGN_ANSWER_SHARE
        and steady(s, span)
    ):
        return BENIGN
    return OTHER


def key_label(key: Any, track_by: str) -> str:
    """How a tracked key is shown: `10.0.0.5`, `10.0.0.5 > 192.0.2.7`, `10.0.0.5 port
    16464`, or `> 10.0.0.9` for an exposure model's destination."""
    if track_by == "source_destination":
        return f"{key[0]} > {key[1]}"
    if track_by == "source_port":
        return f"{key[0]} port {key[1]}"
    if track_by == "destination":
        return f"> {key}"
    return str(key)


def key_source(key: Any, track_by: str) -> str | None:
    """The source address of a key (None for an exposure model, which tracks a
    destination)."""
    if track_by in ("source_destination", "source_port"):
        return str(key[0])
    if track_by == "destination":
        return None
    return str(key)


@dataclass
class ModelStats:
    """The statistics of one model over the history."""

    name: str
    track_by: str
    sources: dict[Any, SourceStats]
    span: Span

    @property
    def records(self) -> int:
        return sum(s.attempts for s in self.sources.values())

    def distribution(self, slow: bool = False) -> dict[str, int]:
        values = sorted(s.slow_peak if slow else s.peak for s in self.sources.values())
        return {_pname(q): percentile(values, q) for q in PERCENTILES}

    def ranked(self) -> list[tuple[Any, SourceStats]]:
        """Keys by peak (highest first), then by slow-path peak, then by key."""
        return sorted(
            self.sources.items(), key=lambda kv: (-kv[1].peak, -kv[1].slow_peak, str(kv[0]))
        )

    def top(self, n: int = 10) -> list[tuple[Any, SourceStats]]:
        return self.ranked()[:n]


def _pname(q: float) -> str:
    return "max" if q == 100.0 else f"p{q:g}"


def merge_sources(parts: Iterable[dict[Any, SourceStats]]) -> dict[Any, SourceStats]:
    out: dict[Any, SourceStats] = {}
    for part in parts:
        for key, s in part.items():
            if key in out:
                out[key].merge(s)
            else:
                out[key] = s
    return out
