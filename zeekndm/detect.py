"""The generic detector: distinct external destinations per (model, source) over a
sliding window of record time, with an alert lifecycle and bounded state.

Invariants:
- Time is the records' own time (`Flow.ts`, the connection start), never the wall
  clock, so a replay and a live run over the same lines give the same alerts.
- Records may arrive out of order by up to `allowed_lateness` seconds behind the newest
  record seen (sensors write a connection when it ends or times out). Records later
  than that are counted in `stats.late_records`, never silently dropped.
- Memory is bounded: each source keeps at most `max_destinations_per_source`
  destinations (beyond that the count is a lower bound and the evidence says so), at
  most `max_tracked_sources` sources are tracked (the stalest is evicted), and windows
  expire.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from zeekndm.detection import END, ESCALATED, ONGOING, START, Detection
from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.models import SEVERITIES, Model
from zeekndm.networks import NetworkClassifier

log = logging.getLogger(__name__)

_TRANSPORT = {Transport.TCP: "tcp", Transport.UDP: "udp"}
_NO_DETECTIONS: list[Detection] = []


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    allowed_lateness: float = 3600.0
    max_tracked_sources: int = 50_000
    max_destinations_per_source: int = 1_000
    sample_size: int = 10
    trust_local_fields: bool = True


@dataclass
class DetectorStats:
    records: int = 0
    matched: int = 0  # on a model's port/transport
    outbound: int = 0  # ... and internal source to external destination
    discarded: int = 0  # allowlisted by a model's discards
    late_records: int = 0
    evicted_sources: int = 0
    detections: Counter = field(default_factory=Counter)  # model name -> count

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "matched": self.matched,
            "outbound": self.outbound,
            "discarded": self.discarded,
            "late_records": self.late_records,
            "evicted_sources": self.evicted_sources,
            "detections": dict(self.detections),
        }


class _Track:
    """State of one (model, source): destinations in the window and the episode."""

    __slots__ = (
        "dsts",
        "last_ts",
        "capped",
        "level",
        "episode_start",
        "last_emit",
        "seq",
        "ep_attempts",
        "ep_failures",
        "ep_successes",
        "ep_distinct",
        "sample",
        "ports",
        "transports",
        "sensor",
        "sensor_type",
        "threshold",
        "distinct_at_emit",
    )

    def __init__(self) -> None:
        # dst -> [last_seen, attempts, failures, successes, port, transport, first_seen];
        # insertion order ~ recency
        self.dsts: dict[str, list] = {}
        self.last_ts = float("-inf")
        self.capped = False
        self.level = -1  # index into the model's threshold levels; -1 = no episode
        self.episode_start = 0.0
        self.last_emit = 0.0
        self.seq = 0
        self.ep_attempts = self.ep_failures = self.ep_successes = self.ep_distinct = 0
        self.sample: list[str] = []
        self.ports: set[int] = set()
        self.transports: set[str] = set()
        self.sensor: str | None = None
        self.sensor_type: str | None = None
        self.threshold = 0
        self.distinct_at_emit = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, set):
                value = sorted(value)
            elif name == "dsts":
                value = {d: [*e[:5], e[5].value, e[6]] for d, e in value.items()}
            elif name == "last_ts" and value == float("-inf"):
                value = None
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "_Track":
        track = cls()
        for name in cls.__slots__:
            if name in data:
                value = data[name]
                if name in ("ports", "transports"):
                    value = set(value)
                elif name == "last_ts" and value is None:
                    value = float("-inf")
                setattr(track, name, value)
        return track


class _ModelRuntime:
    __slots__ = ("model", "levels", "window", "ratio", "update", "dsrc", "ddst", "_dcache", "cap")

    def __init__(self, model: Model, cap: int) -> None:
        self.model = model
        # a cap below the highest threshold would make that severity unreachable
        self.cap = max(cap, model.threshold.highest + 1)
        self.levels = model.threshold.levels
        self.window = model.threshold.window
        self.ratio = model.threshold.min_failure_ratio
        self.update = model.update_interval
        self.dsrc = model.discard_sources
        self.ddst = model.discard_destinations
        self._dcache: dict[str, bool] = {}

    def discarded(self, src: str, dst: str) -> bool:
        if not self.dsrc and not self.ddst:
            return False
        key = src + "|" + dst
        hit = self._dcache.get(key)
        if hit is None:
            s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
            hit = any(s.version == n.version and s in n for n in self.dsrc) or any(
                d.version == n.version and d in n for n in self.ddst
            )
            if len(self._dcache) > 100_000:
                self._dcache.clear()
            self._dcache[key] = hit
        return hit


class Detector:
    """`observe(flow)` returns the detections that flow caused (usually none)."""

    def __init__(
        self,
        models: Iterable[Model],
        classifier: NetworkClassifier | None = None,
        settings: DetectorSettings | None = None,
    ) -> None:
        self.settings = settings or DetectorSettings()
        self.classifier = classifier or NetworkClassifier()
        self.stats = DetectorStats()
        self._tracks: dict[tuple[str, str], _Track] = {}  # (model name, src); order = recency
        self.max_ts = float("-inf")
        self._next_sweep = float("-inf")
        self.set_models(models)

    # -- configuration ---------------------------------------------------------------
    def set_models(
        self, models: Iterable[Model], classifier: NetworkClassifier | None = None
    ) -> None:
        """Install (or reload) models, keeping the window state of models that remain."""
        if classifier is not None:
            self.classifier = classifier
        cap = self.settings.max_destinations_per_source
        runtimes = {m.name: _ModelRuntime(m, cap) for m in models if m.enabled}
        index: dict[tuple[Transport, int], list[_ModelRuntime]] = {}
        by_transport = {"tcp": Transport.TCP, "udp": Transport.UDP}
        for rt in runtimes.values():
            for transport, port in rt.model.port_keys():
                index.setdefault((by_transport[transport], port), []).append(rt)
        self._runtimes = runtimes
        self._index = index
        for key in [k for k in self._tracks if k[0] not in runtimes]:
            del self._tracks[key]
        self._min_window = min((rt.window for rt in runtimes.values()), default=300.0)

    @property
    def models(self) -> list[Model]:
        return [rt.model for rt in self._runtimes.values()]

    @property
    def tracked_sources(self) -> int:
        return len(self._tracks)

    # -- the hot path --------------------------------------------------------------
    def observe(self, flow: Flow) -> list[Detection]:
        self.stats.records += 1
        ts = flow.ts
        if ts > self.max_ts:
            self.max_ts = ts
            if ts >= self._next_sweep:
                out = self._sweep()
            else:
                out = None
        else:
            out = None
            if ts < self.max_ts - self.settings.allowed_lateness:
                if (flow.transport, flow.dport) in self._index:
                    self.stats.late_records += 1
                return _NO_DETECTIONS
        runtimes = self._index.get((flow.transport, flow.dport))
        if runtimes is None:
            return out or _NO_DETECTIONS
        self.stats.matched += 1
        if not self._outbound(flow):
            return out or _NO_DETECTIONS
        self.stats.outbound += 1
        for rt in runtimes:
            if rt.discarded(flow.src, flow.dst):
                self.stats.discarded += 1
                continue
            detection = self._update(rt, flow)
            if detection is not None:
                out = (out or []) + [detection]
        return out or _NO_DETECTIONS

    def _outbound(self, flow: Flow) -> bool:
        c = self.classifier
        trust = self.settings.trust_local_fields
        if trust and flow.local_orig is not None:
            if not flow.local_orig:
                return False
        elif not c.is_internal(flow.src):
            return False
        if trust and flow.local_resp is not None:
            return not flow.local_resp and not c.is_special(flow.dst)
        return c.is_external_target(flow.dst)

    def _update(self, rt: _ModelRuntime, flow: Flow) -> Detection | None:
        key = (rt.model.name, flow.src)
        tracks = self._tracks
        track = tracks.pop(key, None)
        if track is None:
            track = _Track()
            if len(tracks) >= self.settings.max_tracked_sources:
                self._evict_stalest()
        tracks[key] = track  # move to the end: most recently updated
        ts = flow.ts
        in_order = ts >= track.last_ts
        if in_order:
            track.last_ts = ts
        window = rt.window
        dsts = track.dsts
        # Forget destinations no record can still share a window with: older than the
        # newest record minus the allowed lateness minus the window. The dict is in
        # update order, so the front is (approximately) the oldest.
        horizon = self.max_ts - self.settings.allowed_lateness - window
        while dsts:
            first = next(iter(dsts))
            if dsts[first][0] >= horizon:
                break
            del dsts[first]
        outcome = flow.outcome
        failed = 1 if (outcome is Outcome.NO_ANSWER or outcome is Outcome.REJECTED) else 0
        ok = 1 if outcome is Outcome.ESTABLISHED else 0
        entry = dsts.pop(flow.dst, None)
        new_dst = entry is None
        if new_dst:
            if len(dsts) >= rt.cap:
                oldest = next(iter(dsts))
                if dsts[oldest][0] >= track.last_ts - window:
                    track.capped = True  # a destination still inside the window is lost
                del dsts[oldest]
            # [last seen, attempts, failures, successes, port, transport, first seen]
            entry = [ts, 0, 0, 0, flow.dport, flow.transport, ts]
        elif ts > entry[0]:
            entry[0] = ts
            entry[4] = flow.dport
            entry[5] = flow.transport
        elif ts < entry[6]:
            entry[6] = ts
        entry[1] += 1
        entry[2] += failed
        entry[3] += ok
        dsts[flow.dst] = entry
        if track.level >= 0:
            track.ep_attempts += 1
            track.ep_failures += failed
            track.ep_successes += ok
            track.ports.add(flow.dport)
            track.transports.add(_TRANSPORT[flow.transport])
            if ts < track.episode_start:
                track.episode_start = ts
            if new_dst:
                track.ep_distinct += 1
                if len(track.sample) < self.settings.sample_size:
                    track.sample.append(flow.dst)
        if flow.sensor and not track.sensor:
            track.sensor = flow.sensor
        levels = rt.levels
        nxt = track.level + 1
        if new_dst and nxt < len(levels) and len(dsts) >= levels[nxt][1]:
            return self._maybe_cross(rt, track, flow, in_order)
        if track.level >= 0 and track.last_ts - track.last_emit >= rt.update:
            return self._emit(rt, track, ONGOING, flow.src)
        return None

    @staticmethod
    def _best_window(track: _Track, ts: float, window: float, in_order: bool) -> list:
        """The destinations of the busiest window [s, s + window] that contains `ts`.

        In order (nothing newer than `ts`), that is [ts - window, ts]. A late record can
        complete a window in the past, so then every window start s in [ts - window, ts]
        is considered: a destination seen from `first` to `last` is in [s, s + window]
        when first - window <= s <= last; the best s is the one most such intervals
        share (a sweep over their end points).
        """
        if in_order:
            start = ts - window
            return [e for e in track.dsts.values() if e[0] >= start]
        lo, hi = ts - window, ts
        spans = []
        for e in track.dsts.values():
            a = e[6] - window
            b = e[0]
            if a < lo:
                a = lo
            if b > hi:
                b = hi
            if a <= b:
                spans.append((a, b, e))
        points = sorted([(a, 0) for a, _, _ in spans] + [(b, 1) for _, b, _ in spans])
        best, best_s, depth = -1, lo, 0
        for point, kind in points:
            if kind == 0:
                depth += 1
                if depth > best:
                    best, best_s = depth, point
            else:
                depth -= 1
        return [e for a, b, e in spans if a <= best_s <= b]

    def _maybe_cross(
        self, rt: _ModelRuntime, track: _Track, flow: Flow, in_order: bool = True
    ) -> Detection | None:
        live = self._best_window(track, flow.ts, rt.window, in_order)
        distinct = len(live)
        attempts = sum(e[1] for e in live)
        failures = sum(e[2] for e in live)
        if rt.ratio and (attempts == 0 or failures / attempts < rt.ratio):
            return None
        level = -1
        for i, (_, count) in enumerate(rt.levels):
            if distinct >= count:
                level = i
        if level <= track.level:
            return None
        state = START if track.level < 0 else ESCALATED
        if state == START:
            # The episode so far: the window that crossed and what led up to it
            # (destinations seen within one window before its start).
            since = min(e[6] for e in live) - rt.window
            held = [(d, e) for d, e in track.dsts.items() if e[0] >= since]
            track.episode_start = min(e[6] for _, e in held)
            track.ep_attempts = sum(e[1] for _, e in held)
            track.ep_failures = sum(e[2] for _, e in held)
            track.ep_successes = sum(e[3] for _, e in held)
            track.ep_distinct = len(held)
            held.sort(key=lambda de: de[1][6])
            track.sample = [d for d, _ in held[: self.settings.sample_size]]
            track.ports = {e[4] for _, e in held}
            track.transports = {_TRANSPORT[e[5]] for _, e in held}
            track.seq = 0
        track.level = level
        track.threshold = rt.levels[level][1]
        return self._emit(rt, track, state, flow.src, distinct=distinct)

    def _emit(
        self,
        rt: _ModelRuntime,
        track: _Track,
        state: str,
        src: str,
        distinct: int | None = None,
        end_reason: str | None = None,
    ) -> Detection:
        if distinct is None:
            window_start = track.last_ts - rt.window
            distinct = sum(1 for e in track.dsts.values() if e[0] >= window_start)
        if state != START:
            track.seq += 1
        track.last_emit = track.last_ts
        track.distinct_at_emit = distinct
        severity, threshold = rt.levels[track.level]
        self.stats.detections[rt.model.name] += 1
        return Detection(
            model=rt.model,
            source=src,
            state=state,
            severity=severity,
            threshold=threshold,
            first_seen=track.episode_start,
            last_seen=track.last_ts,
            distinct_destinations=distinct if state != END else track.ep_distinct,
            attempts=track.ep_attempts,
            failures=track.ep_failures,
            successes=track.ep_successes,
            sample_destinations=tuple(track.sample),
            ports=tuple(sorted(track.ports)),
            transports=tuple(sorted(track.transports)),
            sequence=track.seq,
            distinct_is_lower_bound=track.capped,
            total_distinct_destinations=track.ep_distinct,
            end_reason=end_reason,
            sensor=track.sensor,
            sensor_type=track.sensor_type,
        )

    # -- housekeeping ----------------------------------------------------------------
    def _evict_stalest(self) -> None:
        key = next(iter(self._tracks))
        del self._tracks[key]
        self.stats.evicted_sources += 1

    def _sweep(self) -> list[Detection] | None:
        """End quiet episodes and drop expired tracks.

        A track can be forgotten only when no record can still land in its window:
        the newest record time minus the allowed lateness is past its last record plus
        the window. An active episode ends then, with an END record carrying totals.
        """
        self._next_sweep = self.max_ts + max(1.0, self._min_window / 10)
        horizon = self.max_ts - self.settings.allowed_lateness
        out: list[Detection] | None = None
        for key in [
            k for k, t in self._tracks.items() if t.last_ts + self._runtimes[k[0]].window < horizon
        ]:
            track = self._tracks.pop(key)
            if track.level >= 0:
                out = out or []
                out.append(
                    self._emit(self._runtimes[key[0]], track, END, key[1], end_reason="quiet")
                )
        return out

    def advance(self, ts: float) -> list[Detection]:
        """Move event time to `ts` without a record: live mode calls this when its inputs
        have been idle, so episodes of a sensor that went quiet still end."""
        if ts <= self.max_ts:
            return []
        self.max_ts = ts
        return self._sweep() or []

    def finish(self) -> list[Detection]:
        """The input is over (end of a replay): end every open episode with its totals."""
        out = []
        for key, track in list(self._tracks.items()):
            if track.level >= 0:
                out.append(
                    self._emit(self._runtimes[key[0]], track, END, key[1], end_reason="input_end")
                )
        self._tracks.clear()
        return out

    # -- snapshot / restore (live mode restarts) -------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """JSON-able window state, so a scan straddling a restart alerts once."""
        return {
            "version": 1,
            "max_ts": self.max_ts if self.max_ts != float("-inf") else None,
            # when the next sweep is due: restoring it makes a restart invisible in the alerts
            "next_sweep": self._next_sweep if self._next_sweep != float("-inf") else None,
            "tracks": [[k[0], k[1], t.to_dict()] for k, t in self._tracks.items()],
        }

    def restore(self, data: dict[str, Any]) -> None:
        if not isinstance(data, dict) or data.get("version") != 1:
            raise ValueError("unsupported detector snapshot")
        max_ts = data.get("max_ts")
        self.max_ts = float("-inf") if max_ts is None else float(max_ts)
        next_sweep = data.get("next_sweep")
        self._next_sweep = self.max_ts if next_sweep is None else float(next_sweep)
        self._tracks.clear()
        for model_name, src, tdata in data.get("tracks", []):
            if model_name in self._runtimes:
                track = _Track.from_dict(tdata)
                # JSON turned lists of entries into lists: keep the mutable list form
                track.dsts = {
                    d: [*e[:5], Transport(e[5]), e[6] if len(e) > 6 else e[0]]
                    for d, e in track.dsts.items()
                }
                self._tracks[(model_name, src)] = track


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)
