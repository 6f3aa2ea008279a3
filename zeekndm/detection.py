"""The record a detection model produces: one step in the life of one scan episode.

It sits in its own module because two stages make detections: the Python detector
(`zeekndm.detect`) and the Zeek notice reader (notices raised by `zeek_scripts/`). The
enricher turns either into the same ECS alert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from zeekndm.models import Model

# Lifecycle of an episode (a source scanning under one model), as Netography's
# start/ongoing/end and Zeek's notice suppression do it.
START = "start"  # a severity threshold was crossed for the first time in this episode
ESCALATED = "escalated"  # a higher severity threshold was crossed
ONGOING = "ongoing"  # periodic update (at most one per update_interval) with cumulative evidence
END = "end"  # the source was quiet for a whole window (or the input ended): totals
STATES = (START, ESCALATED, ONGOING, END)


@dataclass(frozen=True, slots=True)
class Detection:
    """Evidence that `source` scanned under `model`, at one point in the episode.

    Counts are cumulative over the episode; `distinct_destinations` is the number of
    distinct external destinations inside the window when the threshold was evaluated
    (for END: over the whole episode). When per-source state hit its cap the count is a
    lower bound and `distinct_is_lower_bound` says so.
    """

    model: "Model"
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

    @property
    def episode_id(self) -> str:
        """Stable identity of the episode: model, source and when it began."""
        raw = f"{self.model.id}|{self.source}|{self.first_seen:.6f}"
        return hashlib.sha256(raw.encode()).hexdigest()[:24]

    @property
    def alert_id(self) -> str:
        """Deterministic alert id: the same evidence re-sent is the same document."""
        raw = f"{self.episode_id}|{self.state}|{self.severity}|{self.sequence}"
        return hashlib.sha256(raw.encode()).hexdigest()[:32]
