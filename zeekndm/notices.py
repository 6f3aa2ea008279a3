"""Notice mappings: how Zeek's own scan notices become alerts, as typed data.

Zeek's policy/misc/scan.zeek does its own counting and raises `Scan::Address_Scan` and
`Scan::Port_Scan` notices; the notice reader (`zeekndm.readers.zeek_notice`) turns them
into the same ECS alerts the detector makes. What it needs for that is small: which
notice type, a stable rule identity, the ATT&CK mapping and the analyst texts, and the
severity scale of the count Zeek measured (with the interval Zeek counts over). A
mapping has no ports, no direction and no window state, so it is not a `Model`: the
detector never runs it, and a notice from an internal or an external scanner alike
maps to it (the reader takes the direction from the notice itself).

The shipped mappings live in `zeekndm/notice_mappings/`, one file per mapping named
after it; `notices.<name>` in the config overrides fields of one (nested mappings merge
key by key, as for models). `zeekndm schema --notice` prints the JSON Schema
(committed as `config/notice.schema.json`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from zeekndm.errors import ModelError
from zeekndm.models import (
    MODEL_NAME,
    ModelErrors,
    ThreatEntry,
    Threshold,
    check_name,
    check_uuid,
    levels_json_schema,
    read_levels,
    read_threat,
    threat_json_schema,
)
from zeekndm.packagefiles import shipped_yaml
from zeekndm.yamlfile import FieldReader, LocatedDict, load_trusted_yaml_text

ADDRESS_SCAN = "Scan::Address_Scan"
PORT_SCAN = "Scan::Port_Scan"
#: Notice types the reader knows how to read evidence from (their messages' formats).
NOTICE_TYPES = (ADDRESS_SCAN, PORT_SCAN)
FOLDER = "notice_mappings"


@dataclass(frozen=True, slots=True)
class NoticeMapping:
    """One Zeek notice type as an alert: identity, ATT&CK mapping, texts, severities.

    `threshold.levels` turn the count in the notice into a severity; `threshold.window`
    is the interval Zeek counted over (scan.zeek's `*_scan_interval`), reported as the
    alert's window. `enabled: false` skips these notices (counted as skipped)."""

    id: str
    name: str
    notice: str
    title: str
    version: int
    enabled: bool
    threshold: Threshold
    description: str
    what_to_look_for: str
    false_positives: tuple[str, ...]
    threat: tuple[ThreatEntry, ...]
    source: str | None = field(default=None, compare=False)

    @property
    def technique_ids(self) -> tuple[str, ...]:
        return tuple(t.id for entry in self.threat for t in entry.techniques)

    @classmethod
    def from_dict(cls, data: Any, *, source: str | None = None, path: str = "") -> "NoticeMapping":
        errors: list[ModelError] = []
        mapping = cls.collect(data, errors, source=source, path=path)
        if errors:
            raise errors[0] if len(errors) == 1 else ModelErrors(errors)
        assert mapping is not None
        return mapping

    @classmethod
    def collect(
        cls, data: Any, errors: list, *, source: str | None = None, path: str = ""
    ) -> "NoticeMapping | None":
        """Validate `data`, appending every problem to `errors`; None if any was found."""
        before = len(errors)
        r = FieldReader(data, path, errors, file=source, error_cls=ModelError)
        if not r.ok:
            return None
        mapping_id = r.take("id", str, check=check_uuid)
        name = r.take(
            "name",
            str,
            check=check_name,
        )
        notice = r.take(
            "notice",
            str,
            check=lambda v: (
                None
                if v in NOTICE_TYPES
                else f"zeekndm reads the evidence of {', '.join(NOTICE_TYPES)} only"
            ),
        )
        title = r.take("title", str, default=name or "")
        version = r.take(
            "version", int, default=1, check=lambda v: None if v >= 1 else "must be >= 1"
        )
        enabled = r.take("enabled", bool, default=True)
        threshold = _threshold(r, errors)
        description = r.take("description", str, check=_nonblank)
        what_to_look_for = r.take("what_to_look_for", str, check=_nonblank)
        false_positives = r.take("false_positives", list, default=[])
        threat = read_threat(r, errors)
        r.finish()
        if len(errors) > before:
            return None
        return cls(
            id=mapping_id,
            name=name,
            notice=notice,
            title=title,
            version=version,
            enabled=enabled,
            threshold=threshold,
            description=" ".join(description.split()),
            what_to_look_for=" ".join(what_to_look_for.split()),
            false_positives=tuple(str(x) for x in false_positives),
            threat=threat,
            source=source,
        )


def _nonblank(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _threshold(r: FieldReader, errors: list) -> Threshold | None:
    """`threshold`: `levels` (the notice's count per severity) and `window` (seconds)."""
    data = r.take("threshold", dict)
    if data is None:
        return None
    t = FieldReader(data, r.key("threshold"), errors, file=r.file, error_cls=ModelError)
    raw = t.take("levels", dict)
    window = t.take("window", float, check=lambda v: None if v > 0 else "must be > 0")
    t.finish()
    levels = [] if raw is None else read_levels(raw, t.key("levels"), errors, r.file)
    if window is None or not levels:
        return None
    return Threshold(tuple(levels), float(window))


def notice_mapping_dicts() -> dict[str, LocatedDict]:
    """Raw definitions of the shipped notice mappings, by name (read from the package)."""
    return shipped_yaml(FOLDER, load_trusted_yaml_text)


@functools.lru_cache(maxsize=1)
def load_notice_mappings() -> Mapping[str, NoticeMapping]:
    """The shipped notice mappings, validated, by name. A broken one is a bug: it raises."""
    mappings: dict[str, NoticeMapping] = {}
    for stem, data in notice_mapping_dicts().items():
        mapping = NoticeMapping.from_dict(data, source=getattr(data, "file", stem))
        if mapping.name != stem:
            raise ModelError(
                f"file must be named after the mapping ({mapping.name}.yaml)", file=data.file
            )
        mappings[mapping.name] = mapping
    check_one_per_notice(mappings)
    return mappings


def check_one_per_notice(mappings: Mapping[str, NoticeMapping]) -> None:
    """Each notice type has at most one mapping (else which one applies is a guess)."""
    seen: dict[str, str] = {}
    for mapping in mappings.values():
        if mapping.notice in seen:
            raise ModelError(
                f"{mapping.notice} is already mapped by {seen[mapping.notice]!r}",
                file=mapping.source,
            )
        seen[mapping.notice] = mapping.name


def by_notice(mappings: Mapping[str, NoticeMapping]) -> dict[str, NoticeMapping]:
    """notice type -> its mapping."""
    return {m.notice: m for m in mappings.values()}


def notice_json_schema() -> dict[str, Any]:
    """JSON Schema of a notice mapping (committed as config/notice.schema.json)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "zeekndm notice mapping (a Zeek notice type as an alert)",
        "type": "object",
        "additionalProperties": False,
        "required": [
            "id",
            "name",
            "notice",
            "threshold",
            "description",
            "what_to_look_for",
            "threat",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string", "pattern": MODEL_NAME.pattern},
            "notice": {
                "enum": list(NOTICE_TYPES),
                "description": "the Zeek notice type mapped (policy/misc/scan.zeek)",
            },
            "title": {"type": "string"},
            "version": {"type": "integer", "minimum": 1},
            "enabled": {
                "type": "boolean",
                "description": "false: these notices are skipped (counted), no alert",
            },
            "threshold": {
                "type": "object",
                "additionalProperties": False,
                "required": ["levels", "window"],
                "properties": {
                    "levels": {
                        **levels_json_schema(),
                        "description": "the notice's count at which each severity starts",
                    },
                    "window": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "description": "seconds Zeek counts over (scan.zeek's *_scan_interval)",
                    },
                },
            },
            "description": {"type": "string", "minLength": 1},
            "what_to_look_for": {"type": "string", "minLength": 1},
            "false_positives": {"type": "array", "items": {"type": "string"}},
            "threat": threat_json_schema(),
        },
    }
