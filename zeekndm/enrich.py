"""Turns a Detection into an ECS alert document: a pure function, no I/O.

The document carries the model's ATT&CK mapping (copied to `threat.*` without
reshaping), its explanation (`rule.description`) and what to look for, the evidence
under `zeekndm.*`, and a deterministic id, so re-sending the same evidence never makes
a second alert in Elasticsearch. Field choices follow ECS and what Kibana Security's
external-alerts view reads (`event.kind: alert`, `event.severity`, `event.risk_score`,
`source.ip`, `destination.ip`, `rule.name`).
"""

from __future__ import annotations

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


def isotime(ts: float) -> str:
    """Epoch seconds to the ISO-8601 UTC form Elasticsearch's date type parses."""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


def _on(d: Detection) -> str:
    if d.counted == "ports" and len(d.ports) > 5:
        return ""
    ports = ", ".join(str(p) for p in d.ports) or "the model's ports"
    transports = "/".join(d.transports) or "tcp"
    return f" on {ports}/{transports}"


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
    who = d.source or "hosts"
    model = f"{d.model.name}, {d.severity}"
    episode = (
        f"Since the episode began at {isotime(d.first_seen)}: {d.attempts} attempts, "
        f"{d.failures} failed, {d.successes} answered."
    )
    if d.state == END:
        return (
            f"{who} stopped scanning ({model}). Over the whole episode "
            f"({_span(d.last_seen - d.first_seen)}, {isotime(d.first_seen)} to "
            f"{isotime(d.last_seen)}): {_what(d, d.distinct_destinations)}{_on(d)}, "
            f"{d.attempts} attempts, {d.failures} failed, {d.successes} answered."
        )
    window = f"{d.model.threshold.window:.0f} s"
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


def enrich(
    detection: Detection, observer: Observer | None = None, created: float | None = None
) -> Alert:
    """The ECS alert for a detection. `created` (epoch seconds) is when zeekndm raised it:
    `event.created`, beside `@timestamp`, the traffic time. The id never depends on it."""
    d = detection
    m = d.model
    observer = observer or Observer()
    score = SEVERITY_SCORE[d.severity]
    event: dict[str, Any] = {
        "kind": event_kind(d.state),
        "category": ["network", "intrusion_detection"],
        "type": ["info"],
        "action": f"scan-{d.state}",
        "severity": score,
        "risk_score": float(score),
        "start": isotime(d.first_seen),
        "dataset": DATASET,
        "module": "zeekndm",
        "provider": d.detector,
        "id": d.alert_id,
    }
    if created is not None:
        event["created"] = isotime(created)
    if d.state == END:
        event["end"] = isotime(d.last_seen)
        event["duration"] = int(max(0.0, d.last_seen - d.first_seen) * 1e9)
    techniques, tactics = _threat_fields(m.threat)
    sensor_type = d.sensor_type or observer.sensor_type
    observer_doc: dict[str, Any] = {"type": "ids"}
    if sensor_type in _VENDORS:
        observer_doc["vendor"], observer_doc["product"] = _VENDORS[sensor_type]
    hostname = d.sensor or observer.hostname
    if hostname:
        observer_doc["hostname"] = hostname
    ports = list(d.ports)
    # ECS destination.* and network.transport describe one destination: set them only
    # where they hold; a scan's many destinations, ports and transports stay in
    # related.ip and zeekndm.*.
    destination: dict[str, Any] = {}
    if len(ports) == 1:
        destination["port"] = ports[0]
    if d.target:  # a vertical scan or an exposure model: one host, by construction
        destination["ip"] = d.target
    elif (
        d.counted == "destinations"
        and d.distinct_destinations == 1
        and (len(set(d.sample_destinations)) == 1)
    ):
        destination["ip"] = d.sample_destinations[0]
    doc: dict[str, Any] = {
        "@timestamp": isotime(d.last_seen),
        "event": event,
        "rule": {
            "id": m.id,
            "uuid": m.id,
            "name": m.name,
            "description": m.description,
            "category": techniques[0]["name"] if techniques else "Network Scan",
            "ruleset": "zeekndm",
            "version": str(m.version),
            "author": ["zeekndm"],
        },
        "threat": {"framework": "MITRE ATT&CK", "technique": techniques, "tactic": tactics},
        "source": {"ip": d.source} if d.source else {},
        "destination": destination,
        "network": {},
        "observer": observer_doc,
        "related": {"ip": [ip for ip in (d.source, *d.sample_destinations) if ip]},
        "message": d.message or describe(d),
        "ecs": {"version": "8.11.0"},
        "agent": {"type": "zeekndm", "version": __version__},
        "zeekndm": {
            "alert_state": d.state,
            "severity_name": d.severity,
            "title": m.title,
            "episode_id": d.episode_id,
            "sequence": d.sequence,
            "distinct_destinations": d.distinct_destinations,
            "distinct_is_lower_bound": d.distinct_is_lower_bound,
            "total_distinct_destinations": d.total_distinct_destinations,
            "attempts": d.attempts,
            "failures": d.failures,
            "successes": d.successes,
            "failure_ratio": round(d.failures / d.attempts, 4) if d.attempts else 0.0,
            "sample_destinations": list(d.sample_destinations),
            "ports": ports,
            "transports": list(d.transports),
            "window_seconds": float(m.threshold.window),
            "threshold": d.threshold,
            "what_to_look_for": m.what_to_look_for,
            "false_positives": list(m.false_positives),
            "model_version": m.version,
            "detector": d.detector,
            "first_seen": isotime(d.first_seen),
            "last_seen": isotime(d.last_seen),
            "counted": d.counted,
            "distinct_count": d.distinct_destinations,
            "decided_by": d.decided_by,
            "answered": list(d.answered),
            "unanswered": list(d.unanswered),
            "sample_uids": list(d.sample_uids),
            "sample_community_ids": list(d.sample_community_ids),
        },
    }
    if d.window_distinct is not None:
        doc["zeekndm"]["window_distinct"] = d.window_distinct
    if d.new_distinct is not None:
        doc["zeekndm"]["new_distinct_since_previous"] = d.new_distinct
    if d.target:
        doc["zeekndm"]["target"] = d.target
    if not doc["source"]:
        del doc["source"]
    if len(d.transports) == 1:
        doc["network"]["transport"] = d.transports[0]
    if d.direction:
        doc["network"]["direction"] = d.direction
    if d.end_reason:
        doc["zeekndm"]["end_reason"] = d.end_reason
    if not destination:
        del doc["destination"]
    if not doc["network"]:
        del doc["network"]
    return Alert(d.alert_id, doc)


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
