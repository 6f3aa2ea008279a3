"""The generic detector: distinct counted items per (model, tracked key) in record time,
with a window path, a sequential (early) path, idle expiry, an alert lifecycle with an
alert economy, and bounded state.

What is tracked and counted comes from the model: per source the distinct destination
hosts (horizontal), per (source, destination) the distinct ports (vertical), per
(source, port) the distinct hosts (fan-out on one port), per destination the distinct
sources (exposure).

Invariants:
- Time is the records' own time (`Flow.ts`, the connection start), never the wall
  clock, so a replay and a live run over the same lines give the same alerts.
- Records may arrive out of order by up to `allowed_lateness` seconds behind the newest
  record seen (sensors write a connection when it ends or times out). Records later
  than that are counted in `stats.late_records`, never silently dropped.
- Per-record cost does not grow with what a track remembers: a track keeps its items in
  an OrderedDict in recency order and its window as a second OrderedDict pruned from the
  front, so the window count is `len()`; nothing rescans a track per new item. Only an
  episode's start walks the track once (to gather the evidence that led up to it).
- Memory is bounded: each track keeps at most `max_destinations_per_source` items
  (beyond that the count is a lower bound and the evidence says so), at most
  `max_tracked_sources` tracks exist (the stalest is evicted), and tracks expire after
  `idle_timeout` of silence (at least the window).

Two decisions raise an episode:
- the window: the count inside `threshold.window` reaches a severity's threshold;
- the sequential path (Threshold Random Walk, Jung et al. 2004, decides in 4-5 first
  contacts; here with a floor): at least `early.distinct` distinct first contacts since
  the track's evidence began, `early.failure_ratio` of them failed. Evidence is kept
  until the source is idle for `idle_timeout`, so a slow scan adds up; a success
  between failures lowers the ratio but never resets the count.

Alert economy, per (model, tracked key): at most one `start` and one `end` an hour and
two escalations an hour; `ongoing` at most once per update interval and only while the
source stays above its threshold. An episode ends once below threshold for the window
(the sequential path: no new first contact for `idle_timeout`). A scan that resumes
within an hour of its end continues the same episode, silently unless it escalates.

Two implementations of the counting, one behaviour: with the compiled core
(`zeekndm.core`), a model whose counted item is an address (every horizontal scan, the
default models; fan-out on one port) keeps its tracks in native memory
(`zeekndm._core.Track`, `Episode`) and `zeekndm._core.Counting.update` does `_update`,
`_episode_add` and `_decide` step for step, without Python work per record on the
common path (the tracks are a `zeekndm._core.TrackMap`, the budget's count is the
counting's own); the models counting ports keep `_Track` and this module's `_update`.
The lifecycle (`_start`, `_emit`, `_end`, `_sweep`, `finish`) and snapshots are this
module's code for both kinds of track, which answer the same attributes and methods
(`size`, `window_count`, `evidence`, `new_episode`, `to_dict`); a snapshot has one
form, so it restores on either core. `tests/test_counting.py` holds the two to the same
detections, recorder calls, statistics and snapshots, record for record.

Recorder hook (part of the contract, on every implementation of the detector): when
`Detector.recorder` is set, the detector calls
`recorder.counted(model, key, ts, outcome, window, distinct)` once for every record a
model counts (after its ports, direction, discards and outcomes), in the order the
records are observed, with the model's name, the tracked key (a source address, or the
(source, destination), (source, port) tuple, or the destination of an exposure model),
the record's time and `Outcome`, the distinct items in the window after this record
(the number the thresholds compare) and the distinct items the track holds since it
began (its idle-bounded run: what the sequential/slow path sees; capped like the
track). `zeekndm tune` builds its per-source statistics from it. With no recorder
installed (the default) the hook costs one attribute test per counted record; a
recorder must not raise or touch the detector.
"""

from __future__ import annotations

import ipaddress
import logging
from bisect import bisect_left, bisect_right, insort
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from zeekndm import core
from zeekndm.detection import END, ESCALATED, ONGOING, START, Detection
from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.models import SEVERITIES, Model
from zeekndm.networks import DROP, EXCLUDED, INTERNAL, PROXY, SPECIAL, VALID, NetworkClassifier

log = logging.getLogger(__name__)

SNAPSHOT_VERSION = 2
REALERT_AFTER = 3600.0  # seconds of silence before an ended episode may start anew
ESCALATIONS_PER_HOUR = 2
MAX_PORTS_KEPT = 64  # distinct ports listed in an episode's evidence

_BY_NAME = {"tcp": Transport.TCP, "udp": Transport.UDP, "icmp": Transport.ICMP}
_NO_DETECTIONS: list[Detection] = []
_NA = Outcome.NO_ANSWER
_REJ = Outcome.REJECTED
_EST = Outcome.ESTABLISHED
_ABT = Outcome.ABORTED
_ICMP = Transport.ICMP
_TCP = Transport.TCP
_UDP = Transport.UDP
_SEV_INDEX = {s: i for i, s in enumerate(SEVERITIES)}
_TOP_SEVERITY = len(SEVERITIES) - 1

# a record's direction as an index: bit 0 source internal, bit 1 destination internal;
# a model counts the directions whose bits it holds (external -> external: none)
_BIT = (1, 2, 4, 8)
_DIRECTION_BITS = {
    "outbound": 1 << 1,  # source internal, destination external: index 1
    "inbound": 1 << 2,  # index 2
    "internal": 1 << 3,  # index 3
    "any": (1 << 1) | (1 << 2) | (1 << 3),
}


class CountRecorder(Protocol):
    """What `Detector.recorder` receives (see the module docstring: the recorder hook)."""

    def counted(
        self, model: str, key: Any, ts: float, outcome: Outcome, window: int, distinct: int
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    allowed_lateness: float = 3600.0
    max_tracked_sources: int = 50_000
    max_destinations_per_source: int = 1_000
    #: items kept over all tracks (destinations, ports or sources): the memory budget
    #: that holds in a storm of many sweepers (each item costs about 0.5 KB)
    max_destinations_total: int = 100_000
    sample_size: int = 10
    trust_local_fields: bool = True


@dataclass(slots=True)
class ModelFunnel:
    """Why a model did or did not count records: the replay summary prints it."""

    on_ports: int = 0  # records on the model's ports / ICMP types
    in_direction: int = 0  # ... in its direction (and not to a special address)
    discarded: int = 0  # ... dropped by its discards, or from a NAT/proxy source
    other_outcome: int = 0  # ... whose outcome the model does not count
    counted: int = 0  # ... counted

    def as_dict(self) -> dict[str, int]:
        return {
            "on_ports": self.on_ports,
            "in_direction": self.in_direction,
            "discarded": self.discarded,
            "other_outcome": self.other_outcome,
            "counted": self.counted,
        }


@dataclass
class DetectorStats:
    records: int = 0
    matched: int = 0  # on some model's port/transport
    outbound: int = 0  # ... and in the direction of at least one of those models
    discarded: int = 0  # allowlisted by a model's discards (or a proxy source)
    dropped: int = 0  # source or destination in internal_networks.drop
    late_records: int = 0
    evicted_sources: int = 0
    #: new items that made room for themselves because max_destinations_total was full
    budget_evictions: int = 0
    #: records whose Zeek local_orig / local_resp contradict internal_networks
    local_disagreements: int = 0
    local_disagreement_example: str | None = None
    detections: Counter = field(default_factory=Counter)  # model name -> count
    funnel: dict[str, ModelFunnel] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "matched": self.matched,
            "outbound": self.outbound,
            "discarded": self.discarded,
            "dropped": self.dropped,
            "late_records": self.late_records,
            "evicted_sources": self.evicted_sources,
            "budget_evictions": self.budget_evictions,
            "local_disagreements": self.local_disagreements,
            "detections": dict(self.detections),
            "funnel": {name: f.as_dict() for name, f in self.funnel.items()},
        }


class _Pane:
    """Distinct items whose latest contact lies in a sliding window, counted by len(),
    and the contacts of the recent past, for late records.

    `latest` maps item -> its latest contact inside the window; `order` holds (time,
    item) ascending. Entries from `head` on are the window; entries from `keep` to
    `head` are the past (contacts that left the window, kept back to the allowed
    lateness), so a late record's window is counted from what was really seen, not
    only from other late records. A record in time order appends; a late one is
    inserted with bisect. Pruning walks the head past times older than the window and
    forgets an item only when the entry is its latest contact. A retry within `grain`
    seconds of the item's latest contact refreshes nothing, so a client hammering one
    host does not grow the list; the past is kept to at most the track's items
    plus 16 entries (`past_from` says from when it is complete).
    """

    __slots__ = ("latest", "order", "head", "keep", "past_from")

    def __init__(self) -> None:
        self.latest: dict[Any, float] = {}
        self.order: list[tuple[float, Any]] = []
        self.head = 0
        self.keep = 0
        self.past_from = float("-inf")  # contacts before this may have been forgotten

    def __len__(self) -> int:
        return len(self.latest)

    def __contains__(self, item: Any) -> bool:
        return item in self.latest

    def __iter__(self):
        return iter(self.latest)

    def prune(self, horizon: float, keep_horizon: float, past_cap: int) -> None:
        order = self.order
        head = self.head
        n = len(order)
        latest = self.latest
        while head < n:
            t, item = order[head]
            if t >= horizon:
                break
            if latest.get(item) == t:
                del latest[item]
            head += 1
        keep = self.keep
        while keep < head and order[keep][0] < keep_horizon:
            keep += 1
        if head - keep > past_cap:
            keep = head - past_cap
            self.past_from = order[keep][0]
        if keep > 64 and keep * 2 > n:
            del order[:keep]
            head -= keep
            keep = 0
        self.head = head
        self.keep = keep

    def discard(self, item: Any) -> None:
        self.latest.pop(item, None)

    def compact(self) -> None:
        """Drop the window's entries of items forgotten or contacted again since
        (amortised: runs once the window list holds twice what the track's item cap
        allows); the past before the window stays."""
        past = self.order[self.keep : self.head]
        self.order = past + sorted(((t, k) for k, t in self.latest.items()), key=_first)
        self.keep = 0
        self.head = len(past)

    def past_window(self, ts: float, window: float, need: int) -> tuple[int, list | None]:
        """(distinct items, those items) of the busiest window of `window` seconds that
        holds time `ts`, over every contact kept; exact, since the contacts are sorted.

        The number of contacts in [ts - window, ts + window] (two bisects) bounds it from
        above: when that is below `need`, (that bound, None) is returned at no further
        cost. Otherwise a two-pointer walk over those contacts finds the busiest window.
        """
        order = self.order
        lo = bisect_left(order, ts - window, self.keep, key=_first)
        hi = bisect_right(order, ts + window, lo, key=_first)
        if hi - lo < need:
            return hi - lo, None
        counts: dict[Any, int] = {}
        best = 0
        best_at = lo
        r = lo
        for left in range(lo, hi):
            t_left = order[left][0]
            if t_left > ts:
                break
            end = t_left + window
            while r < hi and order[r][0] <= end:
                item = order[r][1]
                counts[item] = counts.get(item, 0) + 1
                r += 1
            if len(counts) > best:
                best = len(counts)
                best_at = left
            item = order[left][1]
            left_count = counts[item] - 1
            if left_count:
                counts[item] = left_count
            else:
                del counts[item]
        t_best = order[best_at][0]
        items = list(dict.fromkeys(k for t, k in order[best_at:hi] if t <= t_best + window))
        return best, items

    def to_list(self) -> list:
        return [[k, v] for k, v in self.latest.items()]

    def past_list(self) -> list:
        return [[k, t] for t, k in self.order[self.keep : self.head]]

    @classmethod
    def from_list(cls, pairs: list, past: list | None = None) -> "_Pane":
        pane = cls()
        for k, t in past or ():
            pane.order.append((float(t), _key(k)))
        pane.head = len(pane.order)
        for k, v in sorted(pairs, key=lambda kv: kv[1]):
            item = _key(k)
            pane.latest[item] = float(v)
            pane.order.append((float(v), item))
        return pane


def _first(pair: tuple[float, Any]) -> float:
    return pair[0]


class _Episode:
    """The open episode of a track: what its alerts report."""

    __slots__ = (
        "level",
        "sev",
        "early",
        "threshold",
        "episode_start",
        "last_emit",
        "last_above",
        "seq",
        "ep_attempts",
        "ep_failures",
        "ep_successes",
        "ep_distinct",
        "ep_new",
        "sample",
        "answered",
        "unanswered",
        "uids",
        "cids",
        "ports",
        "transports",
        "silent",
    )

    def __init__(self) -> None:
        self.level = -1  # index into the model's threshold levels
        self.sev = -1  # index into SEVERITIES last alerted
        self.early = False  # raised by the sequential path (and not yet by the window)
        self.threshold = 0
        self.episode_start = 0.0
        self.last_emit = 0.0
        self.last_above = float("-inf")
        self.seq = 0
        self.ep_attempts = self.ep_failures = self.ep_successes = self.ep_distinct = 0
        self.ep_new = 0  # new distinct items since the previous alert
        self.sample: list[str] = []
        self.answered: list[str] = []
        self.unanswered: list[str] = []
        self.uids: list[str] = []
        self.cids: list[str] = []
        self.ports: set[int] = set()
        self.transports: set[str] = set()
        self.silent = False  # a resumed episode: no start/end alerts of its own

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, set):
                value = sorted(value)
            elif isinstance(value, float) and value == float("-inf"):
                value = None
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "_Episode":
        ep = cls()
        for name in cls.__slots__:
            if name in data:
                value = data[name]
                if name in ("ports", "transports"):
                    value = set(value)
                elif value is None and name == "last_above":
                    value = float("-inf")
                setattr(ep, name, value)
        return ep


class _Track:
    """Counting state of one (model, tracked key); `ep` is its open episode, or None.

    Kept small: most tracks are ordinary clients that never open an episode.
    """

    __slots__ = (
        "items",
        "win",
        "last_ts",
        "capped",
        "epoch",
        "n_first",
        "n_failed_first",
        "n_attempts",
        "n_failures",
        "n_answered",
        "sensor",
        "esc_times",
        "last_end",
        "ep",
    )

    def __init__(self) -> None:
        # item -> [first seen, last seen, attempts, failures, answers, port, transport name,
        #          uid, community_id, peer address, epoch]; order = recency of contact
        self.items: OrderedDict[Any, list] = OrderedDict()
        # items in the window ending at the track's newest record, and the recent past
        self.win = _Pane()
        self.last_ts = float("-inf")
        self.capped = False
        self.epoch = 0  # counts ENDs: first contacts of the current evidence carry it
        self.n_first = self.n_failed_first = 0
        self.n_attempts = self.n_failures = self.n_answered = 0
        self.sensor: str | None = None
        self.esc_times: list[float] | None = None  # escalation alerts in the last hour
        self.last_end = float("-inf")
        self.ep: _Episode | None = None

    def size(self) -> int:
        """Items kept (what the budget counts)."""
        return len(self.items)

    def window_count(self) -> int:
        """Distinct items in the window."""
        return len(self.win)

    @staticmethod
    def new_episode() -> "_Episode":
        return _Episode()

    def evidence(self, early: bool, late: list | None, window: float, ts: float) -> list:
        """The items an episode's start reports, by first contact: for the sequential
        path those of the current evidence; else those seen since the window that
        crossed (the current one, or for a late record, `late`: the busiest past
        window holding it) began."""
        items = self.items
        if early:
            epoch = self.epoch
            held = [e for e in items.values() if e[10] == epoch]
        else:
            crossing = self.win if late is None else late
            firsts = [items[k][0] for k in crossing if k in items]
            since = (min(firsts) if firsts else ts) - window
            held = [e for e in items.values() if e[1] >= since]
        held.sort(key=_first)
        return held

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, OrderedDict):
                value = [[k, v] for k, v in value.items()]
            elif isinstance(value, _Pane):
                out["past"] = value.past_list()
                value = value.to_list()
            elif isinstance(value, _Episode):
                value = value.to_dict()
            elif isinstance(value, float) and value == float("-inf"):
                value = None
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "_Track":
        track = cls()
        for name in cls.__slots__:
            if name not in data:
                continue
            value = data[name]
            if name == "items":
                value = OrderedDict((_key(k), v) for k, v in value)
            elif name == "win":
                value = _Pane.from_list(value or [], data.get("past"))
            elif name == "ep":
                value = None if value is None else _Episode.from_dict(value)
            elif value is None and name in ("last_ts", "last_end"):
                value = float("-inf")
            setattr(track, name, value)
        return track


def _key(value: Any) -> Any:
    """JSON turned tuple keys into lists: back to hashable."""
    return tuple(value) if isinstance(value, list) else value


class _ItemCount:
    """The budget's count of items over all tracks, on the pure-Python core."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _ModelRuntime:
    """A model prepared for the hot path, with its funnel counters."""

    __slots__ = (
        "model",
        "name",
        "levels",
        "sev_of_level",
        "window",
        "ratio",
        "update",
        "dsrc",
        "ddst",
        "dsports",
        "_dcache",
        "cap",
        "floor",
        "direction",
        "track_by",
        "count",
        "outcomes",
        "early",
        "early_n",
        "early_ratio",
        "idle",
        "raise_on_answer",
        "funnel",
        "grain",
        "dirs",
        "any_discards",
        "horizontal",
        "low",
        "fast",
    )

    def __init__(self, model: Model, cap: int, funnel: ModelFunnel) -> None:
        self.model = model
        self.name = model.name
        t = model.threshold
        # a cap below the highest threshold would make that severity unreachable
        self.cap = max(cap, t.highest + 1)
        # what a track keeps, at least, when the global budget is full
        self.floor = t.highest + 1
        self.levels = t.levels
        self.sev_of_level = tuple(_SEV_INDEX[s] for s, _ in t.levels)
        self.window = t.window
        self.ratio = t.min_failure_ratio
        self.update = model.update_interval
        self.dsrc = model.discard_sources
        self.ddst = model.discard_destinations
        self.dsports = model.discard_source_ports
        self._dcache: dict[str, bool] = {}
        self.direction = model.direction
        self.track_by = model.track_by
        self.count = model.count
        self.outcomes = tuple(Outcome[n] for n in sorted(model.outcomes))
        self.early = t.early.enabled and t.early.distinct < t.lowest
        self.early_n = t.early.distinct
        self.early_ratio = t.early.failure_ratio
        self.idle = max(t.idle_timeout, t.window)
        self.raise_on_answer = model.raise_on_answer
        self.funnel = funnel
        # how finely a retry refreshes an item's time in the window (~3 % of the window)
        self.grain = t.window / 32
        # directions counted, as bits of (source internal) | (destination internal) << 1
        self.dirs = _DIRECTION_BITS[model.direction]
        self.any_discards = bool(self.dsrc or self.ddst or self.dsports)
        self.horizontal = model.track_by == "source" and model.count == "destinations"
        self.low = t.lowest
        if not self.early:
            self.early_n = 1 << 62  # never: keeps the hot path's test to one comparison
        self.fast: Any = None  # the model's constants for the compiled counting, if in use

    def compile(self, native: Any) -> None:
        """Prepare the model for the compiled counting (`zeekndm._core.ModelFast`); a
        model it cannot take stays on the Python path (`fast` None)."""
        try:
            self.fast = native.ModelFast(
                self.name,
                self.track_by,
                self.count,
                self.window,
                self.grain,
                self.cap,
                self.floor,
                self.low,
                self.early,
                self.early_n,
                self.early_ratio,
                self.ratio or 0.0,
                self.update,
                self.raise_on_answer,
                [n for _, n in self.levels],
                list(self.sev_of_level),
            )
        except (TypeError, ValueError, OverflowError):
            self.fast = None

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

    def keys(self, flow: Flow) -> tuple[Any, Any]:
        """(track key, counted item) of one record."""
        tb = self.track_by
        if tb == "source":
            return flow.src, (flow.dst if self.count == "destinations" else flow.dport)
        if tb == "source_destination":
            return (flow.src, flow.dst), flow.dport
        if tb == "source_port":
            return (flow.src, flow.dport), flow.dst
        return flow.dst, flow.src


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
        self._stats = DetectorStats()
        native = core.native
        compiled = native is not None and hasattr(native, "Counting")
        # (model name, track key) -> track; order = recency of update (with the compiled
        # counting a native map with the same operations, which it reads natively)
        self._tracks: OrderedDict[tuple[str, Any], _Track] = (
            native.TrackMap() if compiled else OrderedDict()
        )
        # (model name, track key) -> [quiet until, episode start, seq, sev, attempts,
        #   failures, successes, distinct, last end]: ended episodes that may resume
        self._quiet: OrderedDict[tuple[str, Any], list] = OrderedDict()
        self._open: dict[tuple[str, Any], None] = {}  # tracks with an open episode, in order
        self.max_ts = float("-inf")
        self._next_sweep = float("-inf")
        self._warned_local = False
        self._lateness = self.settings.allowed_lateness
        self._trust = self.settings.trust_local_fields
        # the recorder hook (module docstring, `recorder`)
        self._recorder: CountRecorder | None = None
        self._budget = self.settings.max_destinations_total
        self._sample_size = self.settings.sample_size
        self._late_items: list | None = None  # the crossing past window's items
        # the per-record counting: compiled (zeekndm._core.Counting, the same steps on
        # the same objects) when the compiled core is in use, else `_update`
        self._engine: Any = None
        if compiled:
            self._engine = native.Counting(
                Detector._update,
                _NA,
                _REJ,
                _EST,
                _ABT,
                ESCALATED,
                ONGOING,
                self.settings.max_tracked_sources,
                self._budget,
                self._lateness,
                self._sample_size,
                _TOP_SEVERITY,
                self._tracks,  # held by the compiled counting: never rebound
                (_TCP, _UDP, _ICMP, Transport.OTHER),
            )
        # items over all tracks (the budget's count): `n` of the compiled counting, which
        # keeps it natively, or of a Python cell
        self._items: Any = _ItemCount() if self._engine is None else self._engine
        self._count = Detector._update if self._engine is None else self._engine.update
        # the record dispatch: compiled (zeekndm._core.Dispatch: `observe` step for step,
        # with the port tables and the statistics native) with the compiled counting
        self._dispatch: Any = None
        self._dispatch_rts: list[_ModelRuntime] = []
        if self._engine is not None and hasattr(native, "Dispatch"):
            self._dispatch = native.Dispatch(
                self,
                self._engine,
                _TCP,
                _UDP,
                _ICMP,
                _NO_DETECTIONS,
                self._lateness,
                self._trust,
            )
            self.observe = self._dispatch.observe  # type: ignore[method-assign]
        self.set_models(models)

    @property
    def _n_items(self) -> int:
        """Items kept over all tracks (what `max_destinations_total` bounds)."""
        return self._items.n

    @property
    def recorder(self) -> CountRecorder | None:
        """The recorder hook (module docstring): None, or a CountRecorder told of every
        counted record."""
        return self._recorder

    @recorder.setter
    def recorder(self, recorder: CountRecorder | None) -> None:
        self._recorder = recorder
        if self._engine is not None:
            self._engine.set_recorder(recorder is not None)

    @property
    def stats(self) -> DetectorStats:
        """The detector's statistics (with the compiled dispatch and counting, their
        counters are added in when read)."""
        if self._dispatch is not None:
            self._take_counts()
        elif self._engine is not None:
            self._stats.budget_evictions += self._engine.take_budget_evictions()
        return self._stats

    def _take_counts(self) -> None:
        counts, funnels = self._dispatch.take_counts()
        stats = self._stats
        stats.budget_evictions += self._engine.take_budget_evictions()
        records, matched, outbound, discarded, dropped, late = counts
        stats.records += records
        stats.matched += matched
        stats.outbound += outbound
        stats.discarded += discarded
        stats.dropped += dropped
        stats.late_records += late
        for rt, (on_ports, in_direction, disc, other, counted) in zip(self._dispatch_rts, funnels):
            f = rt.funnel
            f.on_ports += on_ports
            f.in_direction += in_direction
            f.discarded += disc
            f.other_outcome += other
            f.counted += counted

    # -- configuration ---------------------------------------------------------------
    def set_models(
        self, models: Iterable[Model], classifier: NetworkClassifier | None = None
    ) -> None:
        """Install (or reload) models, keeping the window state of models that remain."""
        if classifier is not None:
            self.classifier = classifier
        cap = self.settings.max_destinations_per_source
        runtimes: dict[str, _ModelRuntime] = {}
        for m in models:
            if m.enabled:
                funnel = self._stats.funnel.setdefault(m.name, ModelFunnel())
                rt = runtimes[m.name] = _ModelRuntime(m, cap, funnel)
                if self._engine is not None:
                    rt.compile(core.native)
        # per transport: port -> models, and the wide port ranges (looked up once per
        # port, then cached in the port table); chosen by identity on the hot path, so
        # no record hashes an Enum
        index: dict[Transport, dict[int, list[_ModelRuntime]]] = {t: {} for t in Transport}
        wide: dict[Transport, list] = {t: [] for t in Transport}
        for rt in runtimes.values():
            excluded = {
                (_BY_NAME[r.transport], p)
                for r in rt.model.exclude_ports
                for p in range(r.low, r.high + 1)
            }
            for r in rt.model.ports:
                transport = _BY_NAME[r.transport]
                if r.wide:
                    ports_out = {port for t, port in excluded if t is transport}
                    wide[transport].append((r.low, r.high, rt, ports_out))
                    continue
                for port in range(r.low, r.high + 1):
                    if (transport, port) not in excluded:
                        models_here = index[transport].setdefault(port, [])
                        if rt not in models_here:
                            models_here.append(rt)
            for icmp_type in rt.model.icmp_types:
                index[_ICMP].setdefault(icmp_type, []).append(rt)
        for transport, ports in index.items():
            for port, here in ports.items():
                for low, high, rt, ports_out in wide[transport]:
                    if low <= port <= high and port not in ports_out and rt not in here:
                        here.append(rt)
        self._runtimes = runtimes
        self._index = index
        self._wide = wide
        self._tables = {t: (index[t], wide[t] or None) for t in Transport}
        self._tcp = self._tables[Transport.TCP]
        self._udp = self._tables[Transport.UDP]
        self._icmp = self._tables[_ICMP]
        for key in [k for k in self._tracks if k[0] not in runtimes]:
            self._items.n -= self._tracks.pop(key).size()
            self._open.pop(key, None)
        for key in [k for k in self._quiet if k[0] not in runtimes]:
            del self._quiet[key]
        self._min_window = min((rt.window for rt in runtimes.values()), default=300.0)
        self._sync_track_forms()
        if self._dispatch is not None:
            self._set_dispatch()

    def _set_dispatch(self) -> None:
        """Hand the models and port tables to the compiled dispatch (its counters of
        the models before are taken first)."""
        self._take_counts()
        rts = list(self._runtimes.values())
        at = {id(rt): i for i, rt in enumerate(rts)}
        tables = []
        for transport in (_TCP, _UDP, _ICMP, Transport.OTHER):
            ports = {
                port: [at[id(rt)] for rt in here] for port, here in self._index[transport].items()
            }
            wide = [
                (low, high, at[id(rt)], sorted(out)) for low, high, rt, out in self._wide[transport]
            ]
            tables.append((ports, wide))
        self._dispatch.set_models(
            [(rt, rt.dirs, rt.any_discards, list(rt.outcomes)) for rt in rts], tables
        )
        self._dispatch_rts = rts

    def _sync_track_forms(self) -> None:
        """Give every track the form its model's runtime counts with (a reloaded model
        may have changed what it counts): native for the compiled counting, `_Track`
        for the Python one. The snapshot form is the same for both."""
        if self._engine is None:
            return
        runtimes = self._runtimes
        for key, track in self._tracks.items():
            rt = runtimes[key[0]]
            native_track = type(track) is not _Track
            if native_track != (rt.fast is not None):
                data = track.to_dict()
                self._tracks[key] = (
                    _Track.from_dict(data) if native_track else self._track_from_dict_for(rt, data)
                )

    @property
    def models(self) -> list[Model]:
        return [rt.model for rt in self._runtimes.values()]

    @property
    def tracked_sources(self) -> int:
        return len(self._tracks)

    def _models_for(self, table: dict, wide: list, port: int) -> list[_ModelRuntime]:
        """Models whose wide port ranges hold `port` (cached in the port table)."""
        found = [rt for low, high, rt, out in wide if low <= port <= high and port not in out]
        table[port] = found
        return found

    # -- the hot path --------------------------------------------------------------
    def observe(self, flow: Flow) -> list[Detection]:
        stats = self._stats
        stats.records += 1
        ts = flow.ts
        transport = flow.transport
        if transport is _TCP:
            table, wide = self._tcp
            port = flow.dport
        elif transport is _UDP:
            table, wide = self._udp
            port = flow.dport
        elif transport is _ICMP:
            table, wide = self._icmp
            port = flow.sport
        else:
            table, wide = self._tables[transport]
            port = flow.dport
        out: list[Detection] | None = None
        if ts > self.max_ts:
            self.max_ts = ts
            if ts >= self._next_sweep:
                out = self._sweep()
        elif ts < self.max_ts - self._lateness:
            if table.get(port) or (wide and self._models_for(table, wide, port)):
                stats.late_records += 1
            return _NO_DETECTIONS
        runtimes = table.get(port)
        if runtimes is None:
            if wide is None:
                return out or _NO_DETECTIONS
            runtimes = self._models_for(table, wide, port)
        if not runtimes:
            return out or _NO_DETECTIONS
        stats.matched += 1
        # direction, once per record: cached address flags, Zeek's local fields
        c = self.classifier
        cache = c._cache
        src = flow.src
        fs = cache.get(src)
        if fs is None:
            fs = c._classify(src)
        fd = cache.get(flow.dst)
        if fd is None:
            fd = c._classify(flow.dst)
        if (fs | fd) & DROP or fd & SPECIAL or not fd & VALID:
            if (fs | fd) & DROP:
                stats.dropped += 1
            for rt in runtimes:
                rt.funnel.on_ports += 1
            return out or _NO_DETECTIONS
        si = fs & INTERNAL
        di = fd & INTERNAL
        if self._trust:
            lo = flow.local_orig
            lr = flow.local_resp
            if (lo is not None and lo is not (si == 1)) or (lr is not None and lr is not (di == 1)):
                si, di = self._local(flow, fs, fd, si, di)
        bit = _BIT[si | di << 1]  # bit 0 of the index: source internal, bit 1: destination
        proxy = fs & PROXY
        in_direction = False
        count = self._count
        for rt in runtimes:
            funnel = rt.funnel
            funnel.on_ports += 1
            if not rt.dirs & bit:
                continue
            funnel.in_direction += 1
            in_direction = True
            if proxy or (rt.any_discards and self._discarded(rt, flow)):
                funnel.discarded += 1
                stats.discarded += 1
                continue
            if rt.outcomes and flow.outcome not in rt.outcomes:
                funnel.other_outcome += 1
                continue
            funnel.counted += 1
            detection = count(self, rt, flow)
            if detection is not None:
                out = (out or []) + detection
        if in_direction:
            stats.outbound += 1
        return out or _NO_DETECTIONS

    @staticmethod
    def _discarded(rt: _ModelRuntime, flow: Flow) -> bool:
        return flow.sport in rt.dsports or rt.discarded(flow.src, flow.dst)

    def _local(self, flow: Flow, fs: int, fd: int, si: int, di: int) -> tuple[int, int]:
        """Zeek's local_orig/local_resp disagree with internal_networks: Site::local_nets
        adds to internal_networks (public space Zeek knows is local); it never makes
        external what internal_networks calls internal, nor internal what an `external`
        sub-range excludes. Disagreements are counted and said once."""
        self._disagree(flow, si == 1, di == 1)
        if flow.local_orig and not fs & EXCLUDED:
            si = 1
        if flow.local_resp and not fd & EXCLUDED:
            di = 1
        return si, di

    def _disagree(self, flow: Flow, src_int: bool, dst_int: bool) -> None:
        stats = self._stats
        stats.local_disagreements += 1
        if stats.local_disagreement_example is None:
            which = []
            if flow.local_orig is not None and flow.local_orig is not src_int:
                which.append(
                    f"local_orig={'T' if flow.local_orig else 'F'} for {flow.src}, which "
                    f"internal_networks calls {'internal' if src_int else 'external'}"
                )
            if flow.local_resp is not None and flow.local_resp is not dst_int:
                which.append(
                    f"local_resp={'T' if flow.local_resp else 'F'} for {flow.dst}, which "
                    f"internal_networks calls {'internal' if dst_int else 'external'}"
                )
            stats.local_disagreement_example = "; ".join(which)
        if not self._warned_local:
            self._warned_local = True
            log.warning(
                "Zeek's local_orig/local_resp disagree with internal_networks (%s): an "
                "address is internal when either says so (trust_local_fields: true). Fix "
                "Site::local_nets or internal_networks, or set trust_local_fields: false",
                stats.local_disagreement_example,
            )

    def _update(self, rt: _ModelRuntime, flow: Flow) -> list[Detection] | None:
        if rt.horizontal:
            tkey = flow.src
            item = flow.dst
        else:
            tkey, item = rt.keys(flow)
        key = (rt.name, tkey)
        tracks = self._tracks
        track = tracks.get(key)
        ts = flow.ts
        if track is None:
            if len(tracks) >= self.settings.max_tracked_sources:
                self._evict_stalest()
            track = tracks[key] = _Track()
        else:
            tracks.move_to_end(key)
        if ts > track.last_ts:
            track.last_ts = ts
        if track.sensor is None and flow.sensor:
            track.sensor = flow.sensor
        outcome = flow.outcome
        failed = outcome is _NA or outcome is _REJ
        ok = outcome is _EST or outcome is _ABT
        items = track.items
        entry = items.get(item)
        new = entry is None
        if new:
            if len(items) >= rt.cap or (
                self._items.n >= self._budget and not self._room_for(track, rt)
            ):
                # the per-source cap, or the global budget: the oldest item makes room
                old_item, old = items.popitem(last=False)
                if old[1] >= track.last_ts - rt.window:
                    track.capped = True  # an item still inside the window is lost
                track.win.discard(old_item)
            else:
                self._items.n += 1
            entry = [
                ts,
                ts,
                0,
                0,
                0,
                flow.dport,
                flow.transport._value_,
                flow.uid,
                flow.community_id,
                flow.src if rt.count == "sources" else flow.dst,
                track.epoch,
            ]
            items[item] = entry
            track.n_first += 1
            if failed:
                track.n_failed_first += 1
        else:
            items.move_to_end(item)
            if ts > entry[1]:
                entry[1] = ts
            elif ts < entry[0]:
                entry[0] = ts
        entry[2] += 1
        track.n_attempts += 1
        if failed:
            entry[3] += 1
            track.n_failures += 1
        elif ok:
            if not entry[4]:
                track.n_answered += 1
            entry[4] += 1
        # the window: the track's clock is its newest record
        window = rt.window
        horizon = track.last_ts - window
        pane = track.win
        latest = pane.latest
        order = pane.order
        if ts < horizon:
            # a late record, older than the current window: the busiest window holding
            # it, counted over the contacts kept from the recent past (exact)
            insort(order, (ts, item), pane.keep, pane.head, key=_first)
            pane.head += 1
            if pane.head - pane.keep > len(items) + 16:
                pane.prune(horizon, self.max_ts - self._lateness - window, len(items) + 16)
            ep = track.ep
            recorder = self._recorder
            # the exact count when something reads it: an episode, or the recorder hook
            need = rt.low if ep is None and recorder is None else 0
            count, self._late_items = pane.past_window(ts, window, need)
            if recorder is not None:
                recorder.counted(rt.name, tkey, ts, outcome, count, len(items))
            if ep is None:
                if count < rt.low and (not new or track.n_first < rt.early_n):
                    return None
                if self._late_items is not None and ts - window < pane.past_from:
                    track.capped = True  # the oldest contacts of that window were let go
            else:
                self._episode_add(rt, track, flow, entry, new, failed, ok)
            return self._decide(rt, track, tkey, ts, count, new, failed)
        seen = latest.get(item)
        if seen is None or ts >= seen + rt.grain:
            latest[item] = ts
            if not order or ts >= order[-1][0]:
                order.append((ts, item))
            else:
                insort(order, (ts, item), lo=pane.head, key=_first)
        if pane.head < len(order) and order[pane.head][0] < horizon:
            pane.prune(horizon, self.max_ts - self._lateness - window, len(items) + 16)
        elif len(order) - pane.head > rt.cap * 2:
            pane.compact()  # a fast sweeper: keep the list to what the cap holds
        count = len(latest)
        recorder = self._recorder
        if recorder is not None:
            recorder.counted(rt.name, tkey, ts, outcome, count, len(items))
        if track.ep is not None:
            self._episode_add(rt, track, flow, entry, new, failed, ok)
        elif count < rt.low and (not new or track.n_first < rt.early_n):
            return None  # nothing to decide: below every threshold, no new first contact
        return self._decide(rt, track, tkey, ts, count, new, failed)

    def _episode_add(
        self,
        rt: _ModelRuntime,
        track: _Track,
        flow: Flow,
        entry: list,
        new: bool,
        failed: bool,
        ok: bool,
    ) -> None:
        ep = track.ep
        ep.ep_attempts += 1
        if failed:
            ep.ep_failures += 1
        elif ok:
            ep.ep_successes += 1
        ports = ep.ports
        if len(ports) < MAX_PORTS_KEPT:
            ports.add(flow.dport)
        ep.transports.add(entry[6])
        ts = flow.ts
        if ts < ep.episode_start:
            ep.episode_start = ts
        size = self._sample_size
        if new:
            ep.ep_distinct += 1
            ep.ep_new += 1
            sample = ep.sample
            if len(sample) < size and entry[9] not in sample:
                sample.append(entry[9])
            uid = flow.uid
            if uid and len(ep.uids) < size:
                ep.uids.append(uid)
            cid = flow.community_id
            if cid and len(ep.cids) < size:
                ep.cids.append(cid)
        if ok and entry[4] == 1 and len(ep.answered) < size:
            ep.answered.append(_label(entry, rt.count == "ports"))
        elif new and failed and len(ep.unanswered) < size:
            ep.unanswered.append(_label(entry, rt.count == "ports"))

    def _decide(
        self,
        rt: _ModelRuntime,
        track: _Track,
        tkey: Any,
        ts: float,
        count: int,
        new: bool,
        failed: bool,
    ) -> list[Detection] | None:
        levels = rt.levels
        level = -1
        if count >= rt.low and (not rt.ratio or track.n_failures >= rt.ratio * track.n_attempts):
            level = 0
            n = len(levels)
            while level + 1 < n and count >= levels[level + 1][1]:
                level += 1
        ep = track.ep
        # above threshold: by the window, or (an episode the sequential path raised)
        # by one more failing first contact
        if ep is None:
            if level >= 0:
                return self._start(rt, track, tkey, ts, level, False, count)
            if (
                rt.early
                and new
                and track.n_first >= rt.early_n
                and track.n_failed_first >= rt.early_ratio * track.n_first
            ):
                return self._start(rt, track, tkey, ts, 0, True, count)
            return None
        above = level >= 0 or (ep.early and new and failed)
        if above:
            ep.last_above = ts
        if level > ep.level or (level >= 0 and ep.early):
            if level > ep.level:
                ep.level = level
            ep.threshold = levels[ep.level][1]
            ep.early = False  # the window now carries the episode
        sev = rt.sev_of_level[ep.level]
        if rt.raise_on_answer and track.n_answered and ep.ep_successes:
            sev = min(sev + 1, _TOP_SEVERITY)
        if sev > ep.sev and self._may_escalate(track, ts):
            ep.sev = sev
            return [self._emit(rt, track, ESCALATED, tkey, count)]
        if above and ts - ep.last_emit >= rt.update:
            return [self._emit(rt, track, ONGOING, tkey, count)]
        return None

    @staticmethod
    def _severity(rt: _ModelRuntime, track: _Track) -> int:
        """The level's severity, one step higher once a scanned service answered."""
        sev = rt.sev_of_level[track.ep.level]
        if rt.raise_on_answer and track.n_answered and track.ep.ep_successes:
            sev = min(sev + 1, len(SEVERITIES) - 1)
        return sev

    @staticmethod
    def _may_escalate(track: _Track, ts: float) -> bool:
        recent = [t for t in track.esc_times or () if t > ts - REALERT_AFTER]
        if len(recent) >= ESCALATIONS_PER_HOUR:
            track.esc_times = recent
            return False
        recent.append(ts)
        track.esc_times = recent
        return True

    def _start(
        self,
        rt: _ModelRuntime,
        track: _Track,
        tkey: Any,
        ts: float,
        level: int,
        early: bool,
        count: int,
    ) -> list[Detection] | None:
        """A new episode: gather the evidence that led up to it (one walk of the track)."""
        late = None if early or ts >= track.last_ts - rt.window else self._late_items
        held = track.evidence(early, late, rt.window, ts)
        size = self.settings.sample_size
        track.ep = track.new_episode()
        track.ep.level = level
        track.ep.early = early
        track.ep.threshold = rt.early_n if early else rt.levels[level][1]
        track.ep.episode_start = held[0][0] if held else ts
        track.ep.ep_attempts = sum(e[2] for e in held)
        track.ep.ep_failures = sum(e[3] for e in held)
        track.ep.ep_successes = sum(e[4] for e in held)
        track.ep.ep_distinct = len(held)
        ports = rt.count == "ports"
        track.ep.sample = list(dict.fromkeys(e[9] for e in held))[:size]
        track.ep.answered = [_label(e, ports) for e in held if e[4]][:size]
        track.ep.unanswered = [_label(e, ports) for e in held if not e[4] and e[3]][:size]
        track.ep.uids = [e[7] for e in held if e[7]][:size]
        track.ep.cids = [e[8] for e in held if e[8]][:size]
        track.ep.ports = set(sorted({e[5] for e in held})[:MAX_PORTS_KEPT])
        track.ep.transports = {e[6] for e in held}
        track.ep.last_above = ts
        track.ep.seq = 0
        track.ep.silent = False
        self._open[(rt.name, tkey)] = None
        quiet = self._quiet.pop((rt.name, tkey), None)
        if quiet is not None and ts < quiet[0]:
            # the same scan resumed within an hour of its end: one episode, no new start
            (_, start, seq, sev, attempts, failures, successes, distinct, last_end) = quiet
            track.ep.episode_start = min(start, track.ep.episode_start)
            track.ep.seq = seq
            track.ep.ep_attempts += attempts
            track.ep.ep_failures += failures
            track.ep.ep_successes += successes
            track.ep.ep_distinct += distinct
            track.last_end = float("-inf") if last_end is None else last_end
            track.ep.silent = True
            track.ep.sev = sev
            new_sev = self._severity(rt, track)
            if new_sev > sev and self._may_escalate(track, ts):
                track.ep.sev = new_sev
                return [self._emit(rt, track, ESCALATED, tkey, count)]
            track.ep.last_emit = ts
            return None
        track.ep.sev = self._severity(rt, track)
        return [self._emit(rt, track, START, tkey, count)]

    def _emit(
        self,
        rt: _ModelRuntime,
        track: _Track,
        state: str,
        tkey: Any,
        count: int | None = None,
        end_reason: str | None = None,
    ) -> Detection:
        window_count = track.window_count()
        if count is None:
            count = window_count
        if state != START:
            track.ep.seq += 1
        track.ep.last_emit = track.last_ts
        new_since = track.ep.ep_new
        track.ep.ep_new = 0
        self._stats.detections[rt.name] += 1
        severity = SEVERITIES[max(track.ep.sev, 0)]
        if rt.track_by == "source":
            source, target = tkey, None
        elif rt.track_by == "destination":
            source, target = "", tkey
        elif rt.track_by == "source_destination":
            source, target = tkey
        else:  # source_port: the port is in `ports`
            source, target = tkey[0], None
        if state == END:
            distinct = track.ep.ep_distinct
        elif track.ep.early and state != ONGOING:
            distinct = max(count, track.n_first)  # the first contacts that decided
        else:
            distinct = count
        return Detection(
            model=rt.model,
            source=source,
            state=state,
            severity=severity,
            threshold=track.ep.threshold,
            first_seen=track.ep.episode_start,
            last_seen=track.last_ts,
            distinct_destinations=distinct,
            attempts=track.ep.ep_attempts,
            failures=track.ep.ep_failures,
            successes=track.ep.ep_successes,
            sample_destinations=tuple(track.ep.sample),
            ports=tuple(sorted(track.ep.ports)),
            transports=tuple(sorted(track.ep.transports)),
            sequence=track.ep.seq,
            distinct_is_lower_bound=track.capped,
            total_distinct_destinations=track.ep.ep_distinct,
            end_reason=end_reason,
            sensor=track.sensor,
            direction=_ECS_DIRECTION.get(rt.direction),
            counted=rt.count,
            target=target,
            decided_by="sequential" if track.ep.early else "window",
            answered=tuple(track.ep.answered),
            unanswered=tuple(track.ep.unanswered),
            sample_uids=tuple(track.ep.uids),
            sample_community_ids=tuple(track.ep.cids),
            window_distinct=window_count,
            new_distinct=new_since if state in (ONGOING, END) else None,
        )

    # -- housekeeping ----------------------------------------------------------------
    def _evict_stalest(self) -> None:
        key, track = self._tracks.popitem(last=False)
        self._items.n -= track.size()
        self._open.pop(key, None)
        self._stats.evicted_sources += 1

    def _room_for(self, track: _Track, rt: _ModelRuntime) -> bool:
        """The budget of items is full: may `track` grow by one? A track holding enough
        items to reach every threshold of its model makes room itself (its count is then
        a lower bound, as with SumStats' unique_max); a smaller one takes the room of
        the stalest tracks, as long as those have been quiet for a window. When every
        track is active (a storm of sweepers) a track above the lowest threshold makes
        room itself too, so the storm cannot make the detector forget whole sources."""
        self._stats.budget_evictions += 1
        if track.size() >= rt.floor:
            return False
        tracks = self._tracks
        active_since = self.max_ts - rt.window
        while self._items.n >= self._budget and len(tracks) > 1:
            stalest = next(iter(tracks.values()))
            if stalest is track:
                break
            if stalest.last_ts >= active_since and track.size() >= rt.low:
                return False
            self._evict_stalest()
        return self._items.n < self._budget

    def _end(self, rt: _ModelRuntime, track: _Track, tkey: Any, reason: str) -> Detection | None:
        """Close the track's episode; the END alert unless the economy holds it back."""
        now = track.last_ts
        emit = not track.ep.silent or now - track.last_end >= REALERT_AFTER
        detection = self._emit(rt, track, END, tkey, end_reason=reason) if emit else None
        if emit:
            track.last_end = now
        quiet = self._quiet
        key = (rt.name, tkey)
        self._open.pop(key, None)
        quiet[key] = [
            now + REALERT_AFTER,
            track.ep.episode_start,
            track.ep.seq,
            track.ep.sev,
            track.ep.ep_attempts,
            track.ep.ep_failures,
            track.ep.ep_successes,
            track.ep.ep_distinct,
            track.last_end if track.last_end != float("-inf") else None,
        ]
        quiet.move_to_end(key)
        if len(quiet) > self.settings.max_tracked_sources:
            quiet.popitem(last=False)
        # the evidence starts afresh: a new episode needs new first contacts
        track.ep = None
        track.epoch += 1
        track.n_first = track.n_failed_first = 0
        track.n_attempts = track.n_failures = track.n_answered = 0
        return detection

    def _sweep(self) -> list[Detection] | None:
        """End episodes that stayed below threshold, and drop idle tracks.

        Nothing is decided while a record may still land in the time it covers: the
        newest record time minus the allowed lateness must be past it. An episode ends
        once its source was below threshold for the window (the sequential path: no new
        failing first contact for idle_timeout); a track is forgotten after idle_timeout
        of silence.
        """
        self._next_sweep = self.max_ts + max(1.0, self._min_window / 10)
        horizon = self.max_ts - self.settings.allowed_lateness
        out: list[Detection] | None = None
        runtimes = self._runtimes
        tracks = self._tracks
        # open episodes are few: each is checked; the idle tracks are found from the
        # front of the recency order, so a sweep costs what it ends or expires
        for key in list(self._open):
            t = tracks[key]
            rt = runtimes[key[0]]
            hold = rt.idle if t.ep.early else rt.window
            if t.ep.last_above + hold < horizon:
                detection = self._end(rt, t, key[1], "quiet")
                if detection is not None:
                    out = out or []
                    out.append(detection)
        while tracks:
            key, t = next(iter(tracks.items()))
            if t.ep is not None or t.last_ts + runtimes[key[0]].idle >= horizon:
                break
            self._items.n -= tracks.popitem(last=False)[1].size()
        quiet = self._quiet
        while quiet:
            key, value = next(iter(quiet.items()))
            if value[0] >= horizon:
                break
            quiet.popitem(last=False)
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
            if track.ep is not None:
                detection = self._end(self._runtimes[key[0]], track, key[1], "input_end")
                if detection is not None:
                    out.append(detection)
        self._tracks.clear()
        self._quiet.clear()
        self._open.clear()
        self._items.n = 0
        return out

    # -- snapshot / restore (live mode restarts) -------------------------------------
    def _track_from_dict(self, model_name: str, data: dict[str, Any]) -> Any:
        """A track from its snapshot form: a native one for a model the compiled
        counting takes, else `_Track` (the form is the same for both)."""
        return self._track_from_dict_for(self._runtimes[model_name], data)

    @staticmethod
    def _track_from_dict_for(rt: _ModelRuntime, data: dict[str, Any]) -> Any:
        if rt.fast is not None:
            try:
                return core.native.Track.from_dict(data)
            except (TypeError, ValueError):
                pass  # an item that is not an address string: the Python track takes it
        return _Track.from_dict(data)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able window state, so a scan straddling a restart alerts once."""
        return {
            "version": SNAPSHOT_VERSION,
            "max_ts": self.max_ts if self.max_ts != float("-inf") else None,
            # when the next sweep is due: restoring it makes a restart invisible in the alerts
            "next_sweep": self._next_sweep if self._next_sweep != float("-inf") else None,
            "tracks": [[k[0], k[1], t.to_dict()] for k, t in self._tracks.items()],
            "quiet": [[k[0], k[1], v] for k, v in self._quiet.items()],
        }

    def restore(self, data: dict[str, Any]) -> None:
        """Restore a snapshot. One from an older zeekndm (version 1) is refused with a
        ValueError naming the versions: its window state has another shape."""
        if not isinstance(data, dict):
            raise ValueError("unsupported detector snapshot (not a mapping)")
        version = data.get("version")
        if version != SNAPSHOT_VERSION:
            raise ValueError(
                f"detector snapshot version {version!r} is not {SNAPSHOT_VERSION} "
                "(written by another zeekndm version); window state starts empty"
            )
        max_ts = data.get("max_ts")
        self.max_ts = float("-inf") if max_ts is None else float(max_ts)
        next_sweep = data.get("next_sweep")
        self._next_sweep = self.max_ts if next_sweep is None else float(next_sweep)
        self._tracks.clear()
        self._quiet.clear()
        self._open.clear()
        self._items.n = 0
        for model_name, tkey, tdata in data.get("tracks", []):
            if model_name in self._runtimes:
                key = (model_name, _key(tkey))
                track = self._tracks[key] = self._track_from_dict(model_name, tdata)
                self._items.n += track.size()
                if track.ep is not None:
                    self._open[key] = None
        for model_name, tkey, value in data.get("quiet", []):
            if model_name in self._runtimes:
                self._quiet[(model_name, _key(tkey))] = list(value)


_ECS_DIRECTION = {
    "outbound": "outbound",
    "inbound": "inbound",
    "internal": "internal",
    "any": None,
}


def _label(entry: list, ports: bool) -> str:
    """How an item appears in the answered / unanswered samples: the peer address, or
    for a model counting ports, the port (`445/tcp`)."""
    return f"{entry[5]}/{entry[6]}" if ports else entry[9]


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)
