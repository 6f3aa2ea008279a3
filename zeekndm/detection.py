"""The record a detection model produces: one step in the life of one scan episode.

It sits in its own module because two stages make detections: the Python detector
(`zeekndm.detect`) and the Zeek notice reader (notices raised by `zeek_scripts/`). The
enricher turns either into the same ECS alert.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import sha256
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from zeekndm.models import Model
    from zeekndm.notices import NoticeMapping

# Lifecycle of an episode (a source scanning under one model), as Netography's
# start/ongoing/end and Zeek's notice suppression do it.
START = "start"  # a severity threshold was crossed for the first time in this episode
ESCALATED = "escalated"  # a higher severity was reached (count, or a service answered)
ONGOING = "ongoing"  # still above threshold: at most one per update_interval, cumulative
END = "end"  # below threshold for a whole window (or the input ended): totals
STATES = (START, ESCALATED, ONGOING, END)


@dataclass(frozen=True, slots=True)
class Detection:
    """Evidence that `source` scanned under `model`, at one point in the episode.

    Counts are cumulative over the episode; `distinct_destinations` is the number of
    distinct items the model counts (`counted`: destination hosts, ports of one host, or
    sources of one host) when the threshold was evaluated: inside the window, or, when
    the sequential path decided (`decided_by` "sequential"), the first contacts since
    the evidence began; for END over the whole episode. When per-source state hit its
    cap the count is a lower bound and `distinct_is_lower_bound` says so. `source` is
    "" for exposure models (per destination), whose tracked host is `target`.
    """

    model: "Model | NoticeMapping"  # a NoticeMapping for Zeek's own scan notices
    source: str
    state: str
    severity: str
    threshold: int
    first_seen: float
    last_seen: float
    distinct_destinations: int
    attempts: int
    failures: int
    successes: int
    sample_destinations: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    transports: tuple[str, ...] = ()
    sequence: int = 0
    distinct_is_lower_bound: bool = False
    total_distinct_destinations: int = 0
    end_reason: str | None = None
    sensor: str | None = None
    detector: str = "zeekndm"  # "zeek" when the detection came from a Zeek notice
    sensor_type: str | None = None  # "zeek" / "suricata": what produced the records
    direction: str | None = "outbound"  # ECS network.direction; None when not known
    message: str | None = None  # the detector's own sentence (a Zeek notice's msg)
    counted: str = "destinations"  # what distinct_destinations counts (Model.count)
    target: str | None = None  # the host a vertical / exposure model tracks
    decided_by: str = "window"  # "window" (thresholds) or "sequential" (early path)
    answered: tuple[str, ...] = ()  # sample of counted items whose service answered
    unanswered: tuple[str, ...] = ()  # sample of those that never answered
    sample_uids: tuple[str, ...] = ()  # Zeek uids / Suricata flow ids, for pivoting
    sample_community_ids: tuple[str, ...] = ()
    window_distinct: int | None = None  # distinct items inside the window at this record
    new_distinct: int | None = None  # new distinct items since the episode's previous alert

    @property
    def tracked(self) -> str:
        """What the episode is about: the source, source>target, or >target."""
        if self.target is None:
            return self.source
        return f"{self.source}>{self.target}"

    @property
    def episode_id(self) -> str:
        """Stable identity of the episode: model, source and when it began."""
        return episode_id(self)

    @property
    def alert_id(self) -> str:
        """Deterministic alert id: the same evidence re-sent is the same document."""
        return _alert_id(episode_id(self), self)

    @property
    def ids(self) -> tuple[str, str]:
        """`(episode_id, alert_id)`, the episode hashed once."""
        episode = episode_id(self)
        return episode, _alert_id(episode, self)


# (model id, source, target, first_seen) -> episode id: an episode's alerts share it.
# Emptied whole past its bound.
_EPISODES: dict[tuple, str] = {}
_EPISODES_MAX = 1 << 14


def episode_id(d: Detection) -> str:
    """`Detection.episode_id`: sha256 of model id, what is tracked and when it began."""
    key = (d.model.id, d.source, d.target, d.first_seen)
    episode = _EPISODES.get(key)
    if episode is None:
        tracked = d.source if d.target is None else f"{d.source}>{d.target}"
        raw = f"{d.model.id}|{tracked}|{d.first_seen:.6f}"
        episode = sha256(raw.encode()).hexdigest()[:24]
        if len(_EPISODES) >= _EPISODES_MAX:
            _EPISODES.clear()
        _EPISODES[key] = episode
    return episode


def _alert_id(episode: str, d: Detection) -> str:
    raw = f"{episode}|{d.state}|{d.severity}|{d.sequence}"
    return sha256(raw.encode()).hexdigest()[:32]
