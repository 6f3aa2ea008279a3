"""Suggested thresholds from per-source statistics, and the what-if runs that show what
each candidate would do.

The suggestion, per model (`suggest`), only ever raises the window thresholds, never
below the shipped model's levels (the floor):

- the sources that matter are those that alert today (their peak reaches the current
  `low`);
- among them, the largest peak of a *benign-looking* source (mostly answered, few
  failures, steady over the history: `tune_stats.character`) times `MARGIN` is what
  `low` must reach for them to go quiet;
- `low` never rises above the smallest peak of a source that alerts today and does not
  look benign (a scanner-like or unexplained source keeps alerting: tuning never
  silently allowlists a source that behaves like a scanner); when the two collide, low
  stops just at that source's peak, or stays where it is when no threshold separates
  them;
- `medium`, `high` and `critical` keep their ratios to `low`.

Chronic sources (steady sources that still alert under the suggestion: a monitoring host,
an authorised scanner) are listed for a per-source discard that the overlay writes
**commented out**, for the user to review.

What-if (`run_what_if`): the real detector, once per candidate set of levels, over the
records the first run counted (held in memory), with every record that no model counted
replaced by a clock tick at its time: such a record changes nothing in the detector but
its clock (`zeekndm.detect`, recorder hook), so each candidate's alerts are exactly those
`replay` would write with those levels.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zeekndm.detect import Detector, DetectorSettings
from zeekndm.detection import ESCALATED, START, STATES, Detection
from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.models import SEVERITIES, Model
from zeekndm.networks import NetworkClassifier
from zeekndm.tune_stats import (
    BENIGN,
    SCANNER,
    ModelStats,
    SourceStats,
    character,
    key_label,
    key_source,
    steady,
)

#: benign peak x MARGIN is where `low` goes
MARGIN = 1.5
#: the candidate sets of every what-if table besides the current levels (suggested x f)
FACTORS = (("suggested", 1.0), ("x0.5", 0.5), ("x2", 2.0), ("x4", 4.0))

Levels = tuple[tuple[str, int], ...]


@dataclass
class Chronic:
    """A steady source that still alerts under the suggestion: a discard to review."""

    key: Any
    label: str
    character: str
    peak: int
    reason: str
    #: which discards list would take it ("sources" or "destinations") and the network
    discard: str
    network: str


@dataclass
class Suggestion:
    model: str
    current: Levels
    levels: Levels
    reasons: list[str] = field(default_factory=list)
    chronic: list[Chronic] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.levels != self.current


def levels_text(levels: Levels) -> str:
    return " / ".join(str(n) for _, n in levels)


def scale_levels(levels: Levels, factor: float) -> Levels:
    """`levels` times `factor`, each at least 2 and strictly increasing."""
    out = []
    previous = 1
    for severity, n in levels:
        value = max(2, previous + 1, int(round(n * factor)))
        out.append((severity, value))
        previous = value
    return tuple(out)


def _with_low(current: Levels, floor: Levels, low: int) -> Levels:
    """Levels whose low is `low`, the others keeping their ratio to the current low,
    none below the floor's level of the same severity."""
    base = current[0][1]
    floors = dict(floor)
    out = []
    previous = 1
    for i, (severity, n) in enumerate(current):
        value = low if i == 0 else int(math.ceil(n * low / base))
        value = max(value, floors.get(severity, 2), previous + 1)
        out.append((severity, value))
        previous = value
    return tuple(out)


def _network(address: str) -> str:
    return f"{address}/128" if ":" in address else f"{address}/32"


def _describe(s: SourceStats, span) -> str:
    days = (
        f"{len(s.days)} of {span.day_count} days" if span.last - span.first >= 2 * 86400 else None
    )
    hours = f"{len(s.hours)} of {span.hour_count} hours"
    return (
        f"peak {s.peak}, {s.failure_share:.0%} of {s.attempts:,} attempts failed, "
        f"{s.answer_share:.0%} answered, active on {days or hours}"
    )


def suggest(model: Model, floor: Levels | None, stats: ModelStats) -> Suggestion:
    """The suggested levels of `model` with the reasoning (module docstring). `floor` is
    the shipped model's levels (None for a user's own model: its current levels)."""
    current = model.threshold.levels
    floor = floor or current
    span = stats.span
    low0 = current[0][1]
    out = Suggestion(model.name, current, current)
    chars = {k: character(s, span) for k, s in stats.sources.items()}
    loud = [(k, s) for k, s in stats.sources.items() if s.peak >= low0]
    loud_benign = [(k, s) for k, s in loud if chars[k] == BENIGN]
    guard = [(k, s) for k, s in loud if chars[k] != BENIGN]
    lbl = stats.track_by
    if not stats.sources:
        out.reasons.append("no record was counted: nothing to tune on; levels kept")
        return out
    if not loud:
        top_k, top_s = stats.ranked()[0]
        out.reasons.append(
            f"no source reaches low {low0} in a window (highest peak {top_s.peak}, "
            f"{key_label(top_k, lbl)}): levels kept"
        )
        low = low0
    elif not loud_benign:
        out.reasons.append(
            f"{len(loud)} source(s) reach low {low0} and none looks benign (mostly "
            "answered, steady over the history): levels kept, so they keep alerting"
        )
        low = low0
    else:
        top_k, top_s = max(loud_benign, key=lambda kv: (kv[1].peak, str(kv[0])))
        want = max(int(math.ceil(top_s.peak * MARGIN)), top_s.peak + 1)
        out.reasons.append(
            f"the largest peak among benign-looking sources is {top_s.peak} "
            f"({key_label(top_k, lbl)}: {_describe(top_s, span)}); x{MARGIN:g} = {want}"
        )
        if guard:
            cap_k, cap_s = min(guard, key=lambda kv: (kv[1].peak, str(kv[0])))
            cap = cap_s.peak
            who = f"{key_label(cap_k, lbl)} ({_describe(cap_s, span)}, looks {chars[cap_k]})"
        else:
            cap, who = None, ""
        if cap is None or want <= cap:
            low = want
            if cap is not None:
                out.reasons.append(
                    f"the smallest peak among sources that alert today and do not look "
                    f"benign is {cap}, {who}: it keeps alerting"
                )
        elif top_s.peak < cap:
            low = cap
            out.reasons.append(
                f"but {want} would silence {who}; low stops at {cap}, just above the "
                f"benign peak (margin x{cap / top_s.peak:.2f} instead of x{MARGIN:g})"
            )
        else:
            low = low0
            out.reasons.append(
                f"but {who} peaks at {cap}, not above the benign one: no threshold "
                f"separates them; low kept at {low0} (see the chronic sources)"
            )
    levels = _with_low(current, floor, max(low, low0))
    if levels[0][1] > max(low, low0):
        out.reasons.append(f"never below the shipped floor ({levels_text(floor)})")
    if levels != current and len(levels) > 1:
        ratios = ", ".join(f"x{n / current[0][1]:g}" for _, n in current[1:])
        out.reasons.append(
            f"{', '.join(s for s, _ in levels[1:])} keep their ratio to low ({ratios})"
        )
    out.levels = levels
    new_low = levels[0][1]
    for k, s in stats.ranked():
        if s.peak < new_low:
            break
        c = chars[k]
        if not steady(s, span) or c not in (BENIGN, SCANNER):
            continue
        source = key_source(k, lbl)
        discard, address = ("sources", source) if source is not None else ("destinations", k)
        if c == BENIGN:
            reason = (
                f"looks benign and steady ({_describe(s, span)}) and still reaches low "
                f"{new_low}: a monitoring host or a service's client? discard it if so"
            )
        else:
            reason = (
                f"behaves like a scanner ({_describe(s, span)}) every day: an authorised "
                "scanner? allowlist it only if you know it is one"
            )
        out.chronic.append(
            Chronic(k, key_label(k, lbl), c, s.peak, reason, discard, _network(str(address)))
        )
    return out


def candidates(suggestion: Suggestion) -> dict[str, Levels]:
    """Candidate sets of levels of one model, by label, besides the current ones."""
    return {
        label: suggestion.levels if f == 1.0 else scale_levels(suggestion.levels, f)
        for label, f in FACTORS
    }


# -- what-if ---------------------------------------------------------------------------
@dataclass
class Tally:
    """The alerts of one model under one set of levels.

    An episode is what a `start` alert opens, per tracked subject (source and target);
    an `escalated` alert raises the highest severity of the subject's latest episode
    (a scan resuming within the hour escalates its old episode without a new start).
    `episodes[s]` counts the episodes whose highest severity reached `s` or above."""

    levels: Levels
    alerts: Counter = field(default_factory=Counter)  # state -> alerts
    _latest: dict = field(default_factory=dict, repr=False)  # subject -> index in _highest
    _highest: list = field(default_factory=list, repr=False)

    def add(self, d: Detection) -> None:
        self.alerts[d.state] += 1
        subject = (d.source, d.target)
        rank = _RANK.get(d.severity, 0)
        if d.state == START or (d.state == ESCALATED and subject not in self._latest):
            self._latest[subject] = len(self._highest)
            self._highest.append(rank)
        elif d.state == ESCALATED:
            i = self._latest[subject]
            self._highest[i] = max(self._highest[i], rank)

    @property
    def episodes(self) -> Counter:
        out: Counter = Counter()
        for rank in self._highest:
            for severity in SEVERITIES[: rank + 1]:
                out[severity] += 1
        return out

    @property
    def total(self) -> int:
        return sum(self.alerts.values())

    def as_dict(self, days: float) -> dict[str, Any]:
        episodes = self.episodes
        return {
            "levels": dict(self.levels),
            "alerts": {s: self.alerts.get(s, 0) for s in STATES},
            "alerts_total": self.total,
            "episodes": {s: episodes.get(s, 0) for s in SEVERITIES},
            "episodes_per_day": {s: round(episodes.get(s, 0) / days, 3) for s in SEVERITIES},
        }


_RANK = {s: i for i, s in enumerate(SEVERITIES)}


def tally(detections: Iterable[Detection], into: dict[str, Tally]) -> None:
    for d in detections:
        t = into.get(d.model.name)
        if t is not None:
            t.add(d)


_CLOCK_SRC = ""


def clock_tick(ts: float) -> Flow:
    """A record no model can count: it only moves the detector's clock to `ts`."""
    return Flow(ts, _CLOCK_SRC, 0, _CLOCK_SRC, 0, Transport.OTHER, Outcome.UNKNOWN)


def with_levels(model: Model, levels: Levels) -> Model:
    return dataclasses.replace(
        model, threshold=dataclasses.replace(model.threshold, levels=tuple(levels))
    )


def run_what_if(
    stream: Sequence[Flow],
    models: Sequence[Model],
    candidate_sets: dict[str, dict[str, Levels]],
    classifier: NetworkClassifier,
    settings: DetectorSettings,
) -> dict[str, dict[str, Tally]]:
    """label -> model name -> Tally: one detector run over `stream` per candidate set
    (`candidate_sets[label][model name]`; a model without an entry keeps its levels)."""
    out: dict[str, dict[str, Tally]] = {}
    for label, chosen in candidate_sets.items():
        run_models = [with_levels(m, chosen.get(m.name, m.threshold.levels)) for m in models]
        tallies = {m.name: Tally(m.threshold.levels) for m in run_models}
        detector = Detector(run_models, classifier, settings)
        observe = detector.observe
        for flow in stream:
            found = observe(flow)
            if found:
                tally(found, tallies)
        tally(detector.finish(), tallies)
        out[label] = tallies
    return out


def severities(levels: Levels) -> list[str]:
    return [s for s in SEVERITIES if s in dict(levels)]
