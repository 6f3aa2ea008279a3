"""Detection models as typed data.

A model is a declarative description of one scan detection (which ports, which
direction, how many distinct external destinations in what window make which severity,
who is allowlisted, and the ATT&CK mapping and analyst texts that travel into every
alert). The detector is generic: a new service scan is a YAML entry, not code. The
shipped models live in `zeekndm/builtin_models/`, one file per model named after it.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zeekndm import attack
from zeekndm.errors import ModelError
from zeekndm.packagefiles import shipped_yaml
from zeekndm.yamlfile import FieldReader, LocatedDict, load_trusted_yaml_text

# Constrained types, named once (config and models both use them).
SEVERITIES = ("low", "medium", "high", "critical")
SEVERITY_SCORE = {"low": 21, "medium": 47, "high": 73, "critical": 99}  # Kibana Security's mapping
TRANSPORTS = ("tcp", "udp")
#: internal -> external, external -> internal, internal -> internal, or any of them
DIRECTIONS = ("outbound", "inbound", "internal", "any")
#: what one counter is kept per, and what it counts (horizontal, vertical, exposure)
TRACK_BY = ("source", "source_destination", "source_port", "destination")
COUNTS = ("destinations", "ports", "sources")
VALID_COUNTS = {
    "source": ("destinations", "ports"),  # hosts swept by one source (or ports over all hosts)
    "source_destination": ("ports",),  # ports of one host probed by one source (vertical)
    "source_port": ("destinations",),  # hosts one source reached on one port (UDP fan-out)
    "destination": ("sources",),  # sources that reached one host (exposure of a server)
}
DEFAULT_COUNT = {
    "source": "destinations",
    "source_destination": "ports",
    "source_port": "destinations",
    "destination": "sources",
}
#: which connection outcomes a model counts (see zeekndm.flow.Outcome)
OUTCOME_CLASSES = {
    "failed": ("NO_ANSWER", "REJECTED"),  # no handshake: S0, REJ, RSTOS0, SH, SHR; eve SYN only
    "aborted": ("ABORTED",),  # handshake, then reset (Zeek RSTO/RSTR)
    "established": ("ESTABLISHED",),
    "unknown": ("UNKNOWN",),
}
OUTCOME_CHOICES = ("any", *OUTCOME_CLASSES)
MODEL_NAME = re.compile(r"^[a-z][a-z0-9_-]{2,63}$")


def check_name(value: str) -> str | None:
    """The rule for a model's or a notice mapping's name (None when it holds)."""
    if MODEL_NAME.match(value):
        return None
    return "must be lowercase letters, digits, '_' and '-' (3-64 chars)"


TECHNIQUE_ID = attack.TECHNIQUE_ID  # T + 4 digits, optional .NNN (sub-technique)
TACTIC_ID = attack.TACTIC_ID
PORT_SPEC = re.compile(r"^(\d{1,5})(?:-(\d{1,5}))?/(tcp|udp)$")
#: Port ranges wider than this are matched by range, not looked up port by port.
WIDE_RANGE = 1024
DEFAULT_IDLE_TIMEOUT = 900.0  # 15 minutes, as bro-simple-scan and CESNET NEMEA expire state
EARLY_DISTINCT = 10
EARLY_FAILURE_RATIO = 0.8


@dataclass(frozen=True, slots=True)
class PortRange:
    low: int
    high: int
    transport: str

    def __str__(self) -> str:
        ports = str(self.low) if self.low == self.high else f"{self.low}-{self.high}"
        return f"{ports}/{self.transport}"

    @property
    def wide(self) -> bool:
        return self.high - self.low + 1 > WIDE_RANGE


@dataclass(frozen=True, slots=True)
class EarlyDecision:
    """The sequential path (Threshold Random Walk style): `distinct` first contacts of
    which at least `failure_ratio` failed raise `low` whatever the rate."""

    enabled: bool = True
    distinct: int = EARLY_DISTINCT
    failure_ratio: float = EARLY_FAILURE_RATIO


@dataclass(frozen=True, slots=True)
class Threshold:
    """Distinct counted items per severity (ascending), within `window` seconds."""

    levels: tuple[tuple[str, int], ...]
    window: float
    min_failure_ratio: float = 0.0
    early: EarlyDecision = EarlyDecision()
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT

    @property
    def lowest(self) -> int:
        return self.levels[0][1]

    @property
    def highest(self) -> int:
        return self.levels[-1][1]

    def severity_for(self, distinct: int) -> tuple[str, int] | None:
        """The highest (severity, threshold) reached by `distinct`, or None."""
        reached = None
        for severity, count in self.levels:
            if distinct >= count:
                reached = (severity, count)
        return reached


@dataclass(frozen=True, slots=True)
class Technique:
    id: str
    name: str
    reference: str


@dataclass(frozen=True, slots=True)
class Tactic:
    id: str
    name: str
    reference: str


@dataclass(frozen=True, slots=True)
class ThreatEntry:
    """One ATT&CK tactic with the techniques filed under it."""

    tactic: Tactic
    techniques: tuple[Technique, ...]


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    name: str
    title: str
    version: int
    enabled: bool
    ports: tuple[PortRange, ...]
    direction: str
    track_by: str
    threshold: Threshold
    update_interval: float
    discard_sources: tuple[Network, ...]
    discard_destinations: tuple[Network, ...]
    description: str
    what_to_look_for: str
    false_positives: tuple[str, ...]
    threat: tuple[ThreatEntry, ...]
    source: str | None = field(default=None, compare=False)
    count: str = "destinations"
    exclude_ports: tuple[PortRange, ...] = ()
    icmp_types: tuple[int, ...] = ()
    #: Outcome member names counted; empty = any outcome
    outcomes: frozenset[str] = frozenset()
    discard_source_ports: frozenset[int] = frozenset()
    raise_on_answer: bool = True
    python_only: bool = False

    @property
    def technique_ids(self) -> tuple[str, ...]:
        return tuple(t.id for entry in self.threat for t in entry.techniques)

    @property
    def outcome_names(self) -> list[str]:
        """The `match.outcomes` classes as written (["any"] when every outcome counts)."""
        if not self.outcomes:
            return ["any"]
        return [c for c, members in OUTCOME_CLASSES.items() if set(members) <= self.outcomes]

    def port_keys(self) -> list[tuple[str, int]]:
        """Every (transport, port) this model watches (ranges expanded, exclusions taken out)."""
        excluded = {(r.transport, p) for r in self.exclude_ports for p in range(r.low, r.high + 1)}
        return [
            (r.transport, p)
            for r in self.ports
            for p in range(r.low, r.high + 1)
            if (r.transport, p) not in excluded
        ]

    def watched_dports(self) -> set[int]:
        """Responder-port values of the records this model can count, for the replay
        prefilter (Zeek writes an ICMP message's code there: 0 for echo requests)."""
        ports = {p for _, p in self.port_keys()}
        if self.icmp_types:
            ports.add(0)  # the code of echo, timestamp and address-mask requests
        return ports

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None, path: str = "") -> "Model":
        errors: list[ModelError] = []
        model = cls.collect(data, errors, source=source, path=path)
        if errors:
            raise errors[0] if len(errors) == 1 else ModelErrors(errors)
        assert model is not None
        return model

    @classmethod
    def collect(
        cls, data: Any, errors: list, *, source: str | None = None, path: str = ""
    ) -> "Model | None":
        """Validate `data`, appending every problem to `errors`; None if any was found."""
        before = len(errors)
        r = FieldReader(data, path, errors, file=source, error_cls=ModelError)
        if not r.ok:
            return None
        model_id = r.take("id", str, check=check_uuid)
        name = r.take(
            "name",
            str,
            check=check_name,
        )
        title = r.take("title", str, default=name or "")
        version = r.take(
            "version", int, default=1, check=lambda v: None if v >= 1 else "must be >= 1"
        )
        enabled = r.take("enabled", bool, default=True)
        python_only = r.take("python_only", bool, default=False)
        ports, exclude_ports, icmp_types, outcomes = _match(r, errors)
        direction = r.take("direction", str, default="outbound", check=_one_of(DIRECTIONS))
        track_by = r.take("track_by", str, default="source", check=_one_of(TRACK_BY))
        count = r.take(
            "count", str, default=DEFAULT_COUNT.get(track_by or "source"), check=_one_of(COUNTS)
        )
        if track_by in VALID_COUNTS and count in COUNTS and count not in VALID_COUNTS[track_by]:
            r.fail(
                f"track_by {track_by} counts {' or '.join(VALID_COUNTS[track_by])}, not {count}",
                name="count",
            )
        threshold = _threshold(r, errors, count or "destinations")
        update_interval = r.take("update_interval", float, default=300.0, check=_positive)
        raise_on_answer = r.take("raise_on_answer", bool, default=True)
        discard_sources, discard_destinations, discard_sports = _discards(r, errors)
        description = r.take("description", str, check=_nonblank)
        what_to_look_for = r.take("what_to_look_for", str, check=_nonblank)
        false_positives = r.take("false_positives", list, default=[])
        threat = read_threat(r, errors)
        r.finish()
        if len(errors) > before:
            return None
        return cls(
            id=model_id,
            name=name,
            title=title,
            version=version,
            enabled=enabled,
            ports=ports,
            direction=direction,
            track_by=track_by,
            threshold=threshold,
            update_interval=float(update_interval),
            discard_sources=discard_sources,
            discard_destinations=discard_destinations,
            description=" ".join(description.split()),
            what_to_look_for=" ".join(what_to_look_for.split()),
            false_positives=tuple(str(x) for x in false_positives),
            threat=threat,
            source=source,
            count=count,
            exclude_ports=exclude_ports,
            icmp_types=icmp_types,
            outcomes=outcomes,
            discard_source_ports=discard_sports,
            raise_on_answer=raise_on_answer,
            python_only=python_only,
        )


class ModelErrors(ModelError):
    """Several problems found in one pass over a model or model set."""

    def __init__(self, errors: list) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(str(e) for e in errors))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def check_uuid(value: str) -> str | None:
    try:
        uuid.UUID(value)
    except ValueError:
        return "must be a UUID (generate one with: python -c 'import uuid; print(uuid.uuid4())')"
    return None


def _one_of(options: tuple[str, ...]):
    return lambda v: None if v in options else f"must be one of {', '.join(options)}"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _nonblank(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _port_specs(specs: Any, r: FieldReader, name: str, *, required: bool) -> tuple[PortRange, ...]:
    if specs is None:
        return ()
    if not isinstance(specs, list):
        r.fail("must be a list like [27017/tcp, 3268-3269/tcp]", name=name)
        return ()
    if not specs and required:
        r.fail("must list at least one port like 27017/tcp", name=name)
        return ()
    out = []
    for i, spec in enumerate(specs):
        m = PORT_SPEC.match(str(spec).strip().lower()) if isinstance(spec, (str, int)) else None
        if m is None:
            r.fail(f"{name}[{i}] {spec!r}: expected PORT/tcp, PORT/udp or LOW-HIGH/tcp", name=name)
            continue
        low = int(m.group(1))
        high = int(m.group(2) or low)
        if not (1 <= low <= high <= 65535):
            r.fail(f"{name}[{i}] {spec!r}: ports must be 1-65535 and LOW <= HIGH", name=name)
            continue
        out.append(PortRange(low, high, m.group(3)))
    return tuple(out)


def _match(r: FieldReader, errors: list) -> tuple[tuple, tuple, tuple[int, ...], frozenset[str]]:
    """`match:` (ports, exclude_ports, icmp_types, outcomes). A top-level `ports:` is the
    older spelling of `match.ports` and, when present, replaces it (so an override of
    `ports:` in zeekndm.yaml still works on a shipped model)."""
    legacy = r.take("ports", list, default=None) if r.has("ports") else None
    data = r.take("match", dict, default=None)
    if data is None and legacy is None:
        if not r.has("match") and not r.has("ports"):
            r.fail("required key is missing (match.ports or match.icmp_types)")
            errors[-1].key = r.key("match")
        return (), (), (), frozenset()
    m = FieldReader(data or {}, r.key("match"), errors, file=r.file, error_cls=ModelError)
    raw_ports = m.take("ports", list, default=None)
    raw_exclude = m.take("exclude_ports", list, default=None)
    raw_icmp = m.take("icmp_types", list, default=None)
    raw_outcomes = m.take("outcomes", (str, list), default="any")
    m.finish()
    if legacy is not None:
        ports = _port_specs(legacy, r, "ports", required=True)
    else:
        ports = _port_specs(raw_ports, m, "ports", required=not raw_icmp)
    exclude = _port_specs(raw_exclude, m, "exclude_ports", required=False)
    icmp: list[int] = []
    for i, value in enumerate(raw_icmp or []):
        if type(value) is not int or not 0 <= value <= 255:
            m.fail(
                f"icmp_types[{i}] {value!r}: an ICMP type is an integer 0-255", name="icmp_types"
            )
        else:
            icmp.append(value)
    if not ports and not icmp and not any(e.key and "ports" in e.key for e in errors):
        m.fail("list the ports (or icmp_types) the model watches", name="ports")
    names = [raw_outcomes] if isinstance(raw_outcomes, str) else list(raw_outcomes or [])
    outcomes: set[str] = set()
    for value in names:
        if value == "any":
            outcomes = set()
            break
        if value not in OUTCOME_CLASSES:
            m.fail(
                f"{value!r} is not an outcome class: use {', '.join(OUTCOME_CHOICES)}",
                name="outcomes",
            )
            continue
        outcomes.update(OUTCOME_CLASSES[value])
    return ports, exclude, tuple(icmp), frozenset(outcomes)


def _threshold(r: FieldReader, errors: list, count: str = "destinations") -> Threshold | None:
    data = r.take("threshold", dict, default=None)
    if data is None:
        if not r.has("threshold"):
            r.fail("required key is missing")
            errors[-1].key = r.key("threshold")
        return None
    t = FieldReader(data, r.key("threshold"), errors, file=r.file, error_cls=ModelError)
    # `distinct_destinations` is the older name of `levels` (kept for existing configs);
    # when both are present (a user override merged onto a shipped model) it wins.
    # An override written with the old name merges onto the shipped `levels` key by key.
    levels_key = "distinct_destinations" if t.has("distinct_destinations") else "levels"
    levels_raw = t.take(levels_key, dict)
    if levels_key == "distinct_destinations" and t.has("levels"):
        base_levels = t.take("levels", dict, default=None)
        if isinstance(base_levels, dict) and isinstance(levels_raw, dict):
            merged = merge_model(base_levels, levels_raw)
            merged.file, merged.line = (
                getattr(levels_raw, "file", None),
                getattr(levels_raw, "line", None),
            )
            levels_raw = merged
    window = t.take("window", float, check=_positive)
    ratio = t.take(
        "min_failure_ratio",
        float,
        default=0.0,
        check=lambda v: None if 0.0 <= v <= 1.0 else "must be between 0 and 1",
    )
    idle = t.take(
        "idle_timeout",
        float,
        default=DEFAULT_IDLE_TIMEOUT,
        check=lambda v: None if v >= 60 else "must be >= 60 seconds",
    )
    early = _early(t, errors, count)
    t.finish()
    levels = (
        [] if levels_raw is None else read_levels(levels_raw, t.key(levels_key), errors, r.file)
    )
    if window is None or not levels or early is None:
        return None
    return Threshold(
        tuple(levels),
        float(window),
        float(ratio or 0.0),
        early,
        float(idle or DEFAULT_IDLE_TIMEOUT),
    )


def read_levels(data: Any, path: str, errors: list, file: str | None) -> list[tuple[str, int]]:
    """`levels`: a count per severity, each >= 2, increasing strictly with severity
    (models and notice mappings share it)."""
    levels: list[tuple[str, int]] = []
    lv = FieldReader(data, path, errors, file=file, error_cls=ModelError)
    for severity in SEVERITIES:
        n = lv.take(
            severity,
            int,
            default=None,
            check=lambda v: None if v >= 2 else "must be an integer >= 2",
        )
        if n is not None:
            levels.append((severity, n))
    lv.finish()
    if not levels:
        lv.fail("set at least one of low, medium, high, critical")
    counts = [c for _, c in levels]
    if counts != sorted(set(counts)):
        lv.fail("thresholds must increase strictly with severity (low < medium < high < critical)")
    return levels


def _early(t: FieldReader, errors: list, count: str) -> EarlyDecision | None:
    """`threshold.early`: the sequential path. Off for exposure models (many clients
    failing against one server is an outage, not a scan)."""
    default_on = count != "sources"
    raw = t.take("early", (dict, bool), default=default_on)
    if isinstance(raw, bool):
        return EarlyDecision(enabled=raw)
    e = FieldReader(raw, t.key("early"), errors, file=t.file, error_cls=ModelError)
    enabled = e.take("enabled", bool, default=default_on)
    distinct = e.take(
        "distinct",
        int,
        default=EARLY_DISTINCT,
        check=lambda v: None if v >= 3 else "must be an integer >= 3",
    )
    ratio = e.take(
        "failure_ratio",
        float,
        default=EARLY_FAILURE_RATIO,
        check=lambda v: None if 0.5 <= v <= 1.0 else "must be between 0.5 and 1",
    )
    e.finish()
    if distinct is None or ratio is None:
        return None
    return EarlyDecision(bool(enabled), int(distinct), float(ratio))


def _networks(values: Any, reader: FieldReader, name: str) -> tuple[Network, ...]:
    out = []
    for i, value in enumerate(values or []):
        try:
            out.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError:
            reader.fail(f"{name}[{i}] {value!r} is not an IP address or CIDR network", name=name)
    return tuple(out)


def _discards(
    r: FieldReader, errors: list
) -> tuple[tuple[Network, ...], tuple[Network, ...], frozenset[int]]:
    data = r.take("discards", dict, default={})
    d = FieldReader(data, r.key("discards"), errors, file=r.file, error_cls=ModelError)
    sources = d.take("sources", list, default=[])
    destinations = d.take("destinations", list, default=[])
    sports = d.take("source_ports", list, default=[])
    d.finish()
    checked: set[int] = set()
    for i, value in enumerate(sports or []):
        if type(value) is not int or not 0 <= value <= 65535:
            d.fail(
                f"source_ports[{i}] {value!r}: a port is an integer 0-65535", name="source_ports"
            )
        else:
            checked.add(value)
    return (
        _networks(sources, d, "sources"),
        _networks(destinations, d, "destinations"),
        frozenset(checked),
    )


def read_threat(r: FieldReader, errors: list) -> tuple[ThreatEntry, ...]:
    entries = r.take("threat", list, default=None)
    if entries is None:
        if not r.has("threat"):
            r.fail("required key is missing (at least one ATT&CK tactic with its techniques)")
            errors[-1].key = r.key("threat")
        return ()
    out = []
    for i, entry in enumerate(entries):
        e = FieldReader(entry, r.key(f"threat[{i}]"), errors, file=r.file, error_cls=ModelError)
        if not e.ok:
            continue
        tactic_data = e.take("tactic", dict)
        techniques_data = e.take("techniques", list, default=[])
        e.finish()
        if tactic_data is None:
            continue
        ta = FieldReader(tactic_data, e.key("tactic"), errors, file=r.file, error_cls=ModelError)
        tactic_id = ta.take(
            "id", str, check=lambda v: None if TACTIC_ID.match(v) else "must look like TA0007"
        )
        tactic_name = ta.take("name", str, default=None)
        ta.finish()
        if tactic_id is None:
            continue
        known_tactic = attack.tactic(tactic_id)
        if known_tactic is None:
            ta.fail(
                f"unknown ATT&CK tactic {tactic_id} (not in MITRE ATT&CK Enterprise "
                f"v{attack.ATTACK_VERSION}, which zeekndm vendors)",
                name="id",
            )
            continue
        if known_tactic.deprecated:
            ta.fail(f"ATT&CK tactic {tactic_id} is deprecated", name="id")
        if tactic_name is not None and tactic_name != known_tactic.name:
            ta.fail(f"{tactic_id} is named {known_tactic.name!r}, not {tactic_name!r}", name="name")
        techniques = []
        for j, tech in enumerate(techniques_data):
            te = FieldReader(
                tech, e.key(f"techniques[{j}]"), errors, file=r.file, error_cls=ModelError
            )
            tech_id = te.take(
                "id",
                str,
                check=lambda v: (
                    None if TECHNIQUE_ID.match(v) else "must look like T1046 or T1595.001"
                ),
            )
            tech_name = te.take("name", str, default=None)
            te.finish()
            if tech_id is None:
                continue
            known = attack.technique(tech_id)
            if known is None:
                te.fail(
                    f"unknown ATT&CK technique {tech_id} (not in MITRE ATT&CK Enterprise "
                    f"v{attack.ATTACK_VERSION}, which zeekndm vendors)",
                    name="id",
                )
                continue
            if known.retired:
                # An error, not a warning: every alert would carry the stale id into
                # Kibana, and the note names the technique to use instead.
                te.fail(str(attack.retirement_note(tech_id)), name="id")
                continue
            if tech_name is not None and tech_name != known.name:
                te.fail(f"{tech_id} is named {known.name!r}, not {tech_name!r}", name="name")
            if tactic_id not in known.tactics:
                te.fail(
                    f"{tech_id} does not belong to tactic {tactic_id} {known_tactic.name}: "
                    f"it is {attack.describe(tech_id)}",
                    name="id",
                )
            techniques.append(Technique(tech_id, known.name, attack.technique_reference(tech_id)))
        if not techniques_data:  # (rejected techniques already have their own error)
            e.fail("list at least one technique under the tactic")
        out.append(
            ThreatEntry(
                Tactic(tactic_id, known_tactic.name, attack.tactic_reference(tactic_id)),
                tuple(techniques),
            )
        )
    if not out and entries == []:
        r.fail("must list at least one ATT&CK tactic", name="threat")
    return tuple(out)


def watched_ports(models: "Iterable[Model]") -> set[int] | None:
    """Responder ports the enabled models watch, for the replay prefilter; None (parse
    every line) when a model watches port ranges so wide the filter would pass them all."""
    ports = {port for m in models for port in m.watched_dports()}
    return None if len(ports) > 4096 else ports


def builtin_model_dicts() -> dict[str, LocatedDict]:
    """Raw definitions of the shipped models, by name (read from the package)."""
    return shipped_yaml("builtin_models", load_trusted_yaml_text)


def load_builtin_models() -> dict[str, Model]:
    """The shipped models, validated. A broken shipped model is a bug: it raises."""
    models = {}
    for stem, data in builtin_model_dicts().items():
        model = Model.from_dict(data, source=getattr(data, "file", stem))
        if model.name != stem:
            raise ModelError(
                f"file must be named after the model ({model.name}.yaml)", file=data.file
            )
        models[model.name] = model
    return models


def merge_model(base: Mapping[str, Any], override: Mapping[str, Any]) -> LocatedDict:
    """`base` with `override` applied: nested mappings merge key by key, other values replace.

    The override keeps its own line numbers, so errors in user-set fields point at the
    user's file, not at the shipped definition.
    """
    merged = LocatedDict()
    merged.file = getattr(override, "file", None) or getattr(base, "file", None)
    merged.line = getattr(override, "line", None)
    for key, value in base.items():
        merged[key] = value
        merged.key_lines[key] = getattr(base, "key_lines", {}).get(key)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = merge_model(merged[key], value)
        merged[key] = value
        merged.key_lines[key] = getattr(override, "key_lines", {}).get(key)
    return merged


def levels_json_schema() -> dict[str, Any]:
    """JSON Schema of `levels` (a count per severity; see `read_levels`)."""
    return {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {s: {"type": "integer", "minimum": 2} for s in SEVERITIES},
    }


def threat_json_schema() -> dict[str, Any]:
    """JSON Schema of `threat` (ATT&CK tactics with their techniques; see `read_threat`)."""
    return {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["tactic", "techniques"],
            "properties": {
                "tactic": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "pattern": TACTIC_ID.pattern},
                        "name": {"type": "string"},
                    },
                    "required": ["id"],
                },
                "techniques": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string", "pattern": TECHNIQUE_ID.pattern},
                            "name": {"type": "string"},
                        },
                        "required": ["id"],
                    },
                },
            },
        },
    }


def model_json_schema() -> dict[str, Any]:
    """JSON Schema of a model definition (committed as config/model.schema.json)."""
    port = {"type": "string", "pattern": PORT_SPEC.pattern}
    ports = {"type": "array", "items": port}
    levels = levels_json_schema()
    outcome = {"enum": list(OUTCOME_CHOICES)}
    nets = {"type": "array", "items": {"type": "string"}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "zeekndm detection model",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "name", "threshold", "description", "what_to_look_for", "threat"],
        "anyOf": [{"required": ["match"]}, {"required": ["ports"]}],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string", "pattern": MODEL_NAME.pattern},
            "title": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "enabled": {"type": "boolean"},
            "python_only": {
                "type": "boolean",
                "description": "true: the Zeek package (zeek_scripts/) has no script for it",
            },
            "match": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "ports": ports,
                    "exclude_ports": ports,
                    "icmp_types": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0, "maximum": 255},
                    },
                    "outcomes": {
                        "oneOf": [outcome, {"type": "array", "minItems": 1, "items": outcome}],
                        "description": "failed: no handshake (S0, REJ, RSTOS0, SH, SHR; eve "
                        "SYN only); aborted: reset after the handshake (RSTO, RSTR)",
                    },
                },
            },
            "ports": {**ports, "minItems": 1, "deprecated": True, "description": "match.ports"},
            "direction": {"enum": list(DIRECTIONS)},
            "track_by": {"enum": list(TRACK_BY)},
            "count": {"enum": list(COUNTS)},
            "threshold": {
                "type": "object",
                "additionalProperties": False,
                "required": ["window"],
                "anyOf": [{"required": ["levels"]}, {"required": ["distinct_destinations"]}],
                "properties": {
                    "levels": levels,
                    "distinct_destinations": {
                        **levels,
                        "deprecated": True,
                        "description": "older name of levels",
                    },
                    "window": {"type": "number", "exclusiveMinimum": 0},
                    "min_failure_ratio": {"type": "number", "minimum": 0, "maximum": 1},
                    "idle_timeout": {"type": "number", "minimum": 60},
                    "early": {
                        "oneOf": [
                            {"type": "boolean"},
                            {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "enabled": {"type": "boolean"},
                                    "distinct": {"type": "integer", "minimum": 3},
                                    "failure_ratio": {
                                        "type": "number",
                                        "minimum": 0.5,
                                        "maximum": 1,
                                    },
                                },
                            },
                        ]
                    },
                },
            },
            "update_interval": {"type": "number", "exclusiveMinimum": 0},
            "raise_on_answer": {"type": "boolean"},
            "discards": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "sources": nets,
                    "destinations": nets,
                    "source_ports": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0, "maximum": 65535},
                    },
                },
            },
            "description": {"type": "string", "minLength": 1},
            "what_to_look_for": {"type": "string", "minLength": 1},
            "false_positives": {"type": "array", "items": {"type": "string"}},
            "threat": threat_json_schema(),
        },
    }
