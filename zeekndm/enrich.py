"""Turns a Detection into an ECS alert document: a pure function, no I/O.

The document carries the model's ATT&CK mapping (copied to `threat.*` without
reshaping), its explanation (`rule.description`) and what to look for, the evidence
under `zeekndm.*`, and a deterministic id, so re-sending the same evidence never makes
a second alert in Elasticsearch. Field choices follow ECS and what Kibana Security's
external-alerts view reads (`event.kind: alert`, `event.severity`, `event.risk_score`,
`source.ip`, `destination.ip`, `rule.name`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from zeekndm import __version__, attack
from zeekndm.detection import END, ESCALATED, ONGOING, START, Detection
from zeekndm.models import SEVERITY_SCORE

DATASET = "zeekndm.alert"

_VENDORS = {
    "zeek": ("Zeek", "zeek"),
    "suricata": ("OISF", "suricata"),
}


class Alert(NamedTuple):
    """An enriched alert: its deterministic id and its ECS document."""

    id: str
    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Observer:
    """Who saw the traffic: the sensor name from config, its type when known."""

    hostname: str | None = None
    sensor_type: str | None = None  # "zeek" | "suricata"


def _isotime(ts: float) -> str:
    """The reference form: what `isotime` returns, computed from scratch."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Formatted times, cached: an episode's alerts repeat its first_seen, a batch repeats its
# `event.created`, and distinct times within one second share the text up to the
# fraction. Both caches are emptied whole when they grow past their bound.
_ISO: dict[float, str] = {}
_ISO_MAX = 1 << 14
_SECOND: dict[int, str] = {}
_SECOND_MAX = 1 << 12


def isotime(ts: float) -> str:
    """Epoch seconds to the ISO-8601 UTC form Elasticsearch's date type parses.

    The same text as `datetime.fromtimestamp(ts, tz=timezone.utc).strftime(...%fZ)`:
    the microseconds rounded half-to-even from the fraction as CPython does it (modf,
    scale, round, carry into the second), the second formatted once per distinct value.
    Anything but a plain float (or anything that fails) takes the reference path."""
    text = _ISO.get(ts)
    if text is not None:
        return text
    if type(ts) is not float:
        return _isotime(ts)
    try:
        frac, whole = math.modf(ts)
        us = round(frac * 1e6)
        if us >= 1000000:
            us -= 1000000
            whole += 1.0
        elif us < 0:
            us += 1000000
            whole -= 1.0
        second = int(whole)
        prefix = _SECOND.get(second)
        if prefix is None:
            prefix = datetime.fromtimestamp(second, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
            if len(_SECOND) >= _SECOND_MAX:
                _SECOND.clear()
            _SECOND[second] = prefix
    except (ValueError, OverflowError, OSError):
        return _isotime(ts)  # raises what the reference raises
    text = f"{prefix}{us:06d}Z"
    if len(_ISO) >= _ISO_MAX:
        _ISO.clear()
    _ISO[ts] = text
    return text


_WHERE = {"outbound": "external ", "inbound": "internal ", "internal": "internal "}


def _what(d: Detection, n: int) -> str:
    """What was counted, e.g. "25 distinct external hosts" or "44 distinct ports of X"."""
    at_least = "at least " if d.distinct_is_lower_bound else ""
    if d.counted == "ports":
        of = f" of {d.target}" if d.target else ""
        return f"{at_least}{n} distinct ports{of}"
    if d.counted == "sources":
        return f"{at_least}{n} distinct sources reaching {d.target}"
    where = _WHERE.get(d.model.direction, "") if d.detector == "zeekndm" else "external "
    return f"{at_least}{n} distinct {where}hosts"


_ON: dict[tuple, str] = {}  # (ports, transports) -> the words `_on` makes of them
_ON_MAX = 1 << 12


def _on(d: Detection) -> str:
    if d.counted == "ports" and len(d.ports) > 5:
        return ""
    key = (d.ports, d.transports)
    text = _ON.get(key)
    if text is None:
        ports = ", ".join(str(p) for p in d.ports) or "the model's ports"
        transports = "/".join(d.transports) or "tcp"
        text = f" on {ports}/{transports}"
        if len(_ON) >= _ON_MAX:
            _ON.clear()
        _ON[key] = text
    return text


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(detection: Detection) -> str:
    """The `message`: short sentences, each with one time scope (the window, the
    sequential decision, or the episode since it began)."""
    d = detection
    return _describe(
        d, isotime(d.first_seen), isotime(d.last_seen), f"{d.model.threshold.window:.0f} s"
    )


def _describe(d: Detection, first_seen: str, last_seen: str, window: str) -> str:
    """`describe` with the episode's times and the model's window already formatted."""
    who = d.source or "hosts"
    model = f"{d.model.name}, {d.severity}"
    episode = (
        f"Since the episode began at {first_seen}: {d.attempts} attempts, "
        f"{d.failures} failed, {d.successes} answered."
    )
    if d.state == END:
        return (
            f"{who} stopped scanning ({model}). Over the whole episode "
            f"({_span(d.last_seen - d.first_seen)}, {first_seen} to "
            f"{last_seen}): {_what(d, d.distinct_destinations)}{_on(d)}, "
            f"{d.attempts} attempts, {d.failures} failed, {d.successes} answered."
        )
    if d.state == ONGOING:
        now = d.window_distinct if d.window_distinct is not None else d.distinct_destinations
        first = (
            f"{who} is still scanning ({model}). Within the last {window}: {_what(d, now)}{_on(d)}."
        )
        if d.new_distinct is not None:
            first += f" Since the previous alert: {d.new_distinct} more."
    elif d.decided_by == "sequential":
        first = (
            f"{who} made first contact with {_what(d, d.distinct_destinations)}{_on(d)} and "
            f"most failed: decided early, before the window threshold ({model})."
        )
    else:
        first = (
            f"{who} attempted connections to {_what(d, d.distinct_destinations)}{_on(d)} "
            f"within {window} ({model})."
        )
    raised = (
        " A scanned service answered, which raises the severity one step."
        if d.detector == "zeekndm" and d.successes and d.model.raise_on_answer
        else ""
    )
    return f"{first} {episode}{raised}"


def event_kind(state: str) -> str:
    """ECS `event.kind` for a lifecycle state.

    `alert` only where the detection raises something an analyst should act on (an
    episode starts, or escalates); periodic updates and ends are `event`. Why: Kibana
    Security lists `event.kind: alert` documents in logs-* as external alerts, and
    Elastic's prebuilt External Alerts rule promotes every one of them, so an alert per
    update would flood the Alerts page with copies of the same episode."""
    return "alert" if state in (START, ESCALATED) else "event"


_NO_OBSERVER = Observer()
_ECS = "8.11.0"


class _ModelFields(NamedTuple):
    """What an alert takes from its model alone, worked out once per model object."""

    id: str
    name: str
    description: str
    category: str
    version_text: str
    techniques: list[dict]
    tactics: list[dict]
    title: str
    what_to_look_for: str
    false_positives: tuple[str, ...]
    version: int
    window_seconds: float
    window_text: str


# id(model) -> (model, fields): the model is held so that its id is never reused while
# cached; a reloaded config brings new model objects, so new entries.
_MODELS: dict[int, tuple[Any, _ModelFields]] = {}
_MODELS_MAX = 1024


def _model_fields(m: Any) -> _ModelFields:
    entry = _MODELS.get(id(m))
    if entry is not None and entry[0] is m:
        return entry[1]
    techniques, tactics = _threat_fields(m.threat)
    fields = _ModelFields(
        m.id,
        m.name,
        m.description,
        techniques[0]["name"] if techniques else "Network Scan",
        str(m.version),
        techniques,
        tactics,
        m.title,
        m.what_to_look_for,
        tuple(m.false_positives),
        m.version,
        float(m.threshold.window),
        f"{m.threshold.window:.0f} s",
    )
    if len(_MODELS) >= _MODELS_MAX:
        _MODELS.clear()
    _MODELS[id(m)] = (m, fields)
    return fields


def _copy_techniques(techniques: list[dict]) -> list[dict]:
    """A fresh copy of a cached `threat.technique` list (each alert owns its document)."""
    return [
        {**t, "subtechnique": [s.copy() for s in t["subtechnique"]]}
        if "subtechnique" in t
        else t.copy()
        for t in techniques
    ]


def enrich(
    detection: Detection, observer: Observer | None = None, created: float | None = None
) -> Alert:
    """The ECS alert for a detection. `created` (epoch seconds) is when zeekndm raised it:
    `event.created`, beside `@timestamp`, the traffic time. The id never depends on it."""
    d = detection
    f = _model_fields(d.model)
    observer = observer or _NO_OBSERVER
    state = d.state
    score = SEVERITY_SCORE[d.severity]
    episode_id, alert_id = d.ids
    first_seen = isotime(d.first_seen)
    last_seen = isotime(d.last_seen)
    event: dict[str, Any] = {
        "kind": "alert" if state in (START, ESCALATED) else "event",
        "category": ["network", "intrusion_detection"],
        "type": ["info"],
        "action": f"scan-{state}",
        "severity": score,
        "risk_score": float(score),
        "start": first_seen,
        "dataset": DATASET,
        "module": "zeekndm",
        "provider": d.detector,
        "id": alert_id,
    }
    if created is not None:
        event["created"] = isotime(created)
    if state == END:
        event["end"] = last_seen
        event["duration"] = int(max(0.0, d.last_seen - d.first_seen) * 1e9)
    techniques = f.techniques
    doc: dict[str, Any] = {
        "@timestamp": last_seen,
        "event": event,
        "rule": {
            "id": f.id,
            "uuid": f.id,
            "name": f.name,
            "description": f.description,
            "category": f.category,
            "ruleset": "zeekndm",
            "version": f.version_text,
            "author": ["zeekndm"],
        },
        "threat": {
            "framework": "MITRE ATT&CK",
            "technique": _copy_techniques(techniques) if techniques else [],
            "tactic": [t.copy() for t in f.tactics],
        },
    }
    source = d.source
    if source:
        doc["source"] = {"ip": source}
    ports = list(d.ports)
    # ECS destination.* and network.transport describe one destination: set them only
    # where they hold; a scan's many destinations, ports and transports stay in
    # related.ip and zeekndm.*.
    target = d.target
    samples = d.sample_destinations
    if len(ports) == 1:
        destination: dict[str, Any] = {"port": ports[0]}
        if target:  # a vertical scan or an exposure model: one host, by construction
            destination["ip"] = target
        elif (
            d.counted == "destinations" and d.distinct_destinations == 1 and len(set(samples)) == 1
        ):
            destination["ip"] = samples[0]
        doc["destination"] = destination
    elif target:
        doc["destination"] = {"ip": target}
    elif d.counted == "destinations" and d.distinct_destinations == 1 and len(set(samples)) == 1:
        doc["destination"] = {"ip": samples[0]}
    transports = d.transports
    if len(transports) == 1:
        network: dict[str, Any] = {"transport": transports[0]}
        if d.direction:
            network["direction"] = d.direction
        doc["network"] = network
    elif d.direction:
        doc["network"] = {"direction": d.direction}
    sensor_type = d.sensor_type or observer.sensor_type
    observer_doc: dict[str, Any] = {"type": "ids"}
    if sensor_type in _VENDORS:
        observer_doc["vendor"], observer_doc["product"] = _VENDORS[sensor_type]
    hostname = d.sensor or observer.hostname
    if hostname:
        observer_doc["hostname"] = hostname
    doc["observer"] = observer_doc
    doc["related"] = {"ip": [ip for ip in (source, *samples) if ip]}
    doc["message"] = d.message or _describe(d, first_seen, last_seen, f.window_text)
    doc["ecs"] = {"version": _ECS}
    doc["agent"] = {"type": "zeekndm", "version": __version__}
    attempts = d.attempts
    zeekndm: dict[str, Any] = {
        "alert_state": state,
        "severity_name": d.severity,
        "title": f.title,
        "episode_id": episode_id,
        "sequence": d.sequence,
        "distinct_destinations": d.distinct_destinations,
        "distinct_is_lower_bound": d.distinct_is_lower_bound,
        "total_distinct_destinations": d.total_distinct_destinations,
        "attempts": attempts,
        "failures": d.failures,
        "successes": d.successes,
        "failure_ratio": round(d.failures / attempts, 4) if attempts else 0.0,
        "sample_destinations": list(samples),
        "ports": ports,
        "transports": list(transports),
        "window_seconds": f.window_seconds,
        "threshold": d.threshold,
        "what_to_look_for": f.what_to_look_for,
        "false_positives": list(f.false_positives),
        "model_version": f.version,
        "detector": d.detector,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "counted": d.counted,
        "distinct_count": d.distinct_destinations,
        "decided_by": d.decided_by,
        "answered": list(d.answered),
        "unanswered": list(d.unanswered),
        "sample_uids": list(d.sample_uids),
        "sample_community_ids": list(d.sample_community_ids),
    }
    if d.window_distinct is not None:
        zeekndm["window_distinct"] = d.window_distinct
    if d.new_distinct is not None:
        zeekndm["new_distinct_since_previous"] = d.new_distinct
    if target:
        zeekndm["target"] = target
    if d.end_reason:
        zeekndm["end_reason"] = d.end_reason
    doc["zeekndm"] = zeekndm
    return Alert(alert_id, doc)


def _threat_fields(threat: tuple) -> tuple[list[dict], list[dict]]:
    """ECS `threat.technique` and `threat.tactic` for a model's ATT&CK mapping.

    ECS (and Kibana Security's rule `threat` field) keeps a sub-technique under its parent:
    `threat.technique.subtechnique.*`, with the parent technique in `threat.technique.*`. So
    T1595.001 becomes technique T1595 Active Scanning with subtechnique T1595.001, and a
    technique listed both alone and through its sub-techniques appears once.
    """
    techniques: dict[str, dict] = {}
    for entry in threat:
        for t in entry.techniques:
            parent_id = t.id.split(".", 1)[0] if "." in t.id else None
            if parent_id is None:
                techniques.setdefault(t.id, {"id": t.id, "name": t.name, "reference": t.reference})
                continue
            parent = attack.technique(parent_id)
            doc = techniques.setdefault(
                parent_id,
                {
                    "id": parent_id,
                    "name": parent.name if parent else parent_id,
                    "reference": attack.technique_reference(parent_id),
                },
            )
            subs = doc.setdefault("subtechnique", [])
            if all(sub["id"] != t.id for sub in subs):
                subs.append({"id": t.id, "name": t.name, "reference": t.reference})
    tactics = [
        {"id": e.tactic.id, "name": e.tactic.name, "reference": e.tactic.reference} for e in threat
    ]
    return list(techniques.values()), tactics
