"""Zeek notice.log parser (TSV and JSON): notices become Detections, not Flows.

Sites that run the models inside Zeek (`zeek_scripts/`, SumStats on a cluster) get
notices instead of connection records; this parser turns each mapped notice into the
same `Detection` the Python detector makes, so the enricher builds the same ECS alert
with the model's ATT&CK mapping and texts, and `observer`/`zeekndm.detector` name Zeek.

Mapped notices:

- `ZeekNDM::<Model_Name>` (raised by zeek_scripts/): the model is the notice name in
  lower case (equal to the built-in model's name). Evidence comes from the typed
  `zeekndm_*` columns the package adds to notice.log, falling back to the
  `key=value` words of `sub`, then to `n`, so a log whose extra columns were dropped
  by a shipper still works.
- `Scan::Address_Scan` / `Scan::Port_Scan` (Zeek's policy/misc/scan.zeek): each has a
  notice mapping (`zeekndm.notices`, shipped in `zeekndm/notice_mappings/`, overridable
  under `notices:` in the config) giving its rule identity, ATT&CK mapping, texts and
  severities; the count and port come from the message, whose format scan.zeek fixes
  ("%s scanned at least %d unique hosts on port %s in %s").

Every other notice type is skipped (counted, not an error). Timestamps: a notice is
one event, so first and last seen are both its `ts`; that keeps the alert id
deterministic, so replaying the same notice.log twice gives the same ids.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import orjson

from zeekndm.detection import ESCALATED, START, Detection
from zeekndm.models import Model, load_builtin_models
from zeekndm.notices import (
    ADDRESS_SCAN,
    NoticeMapping,
    by_notice,
    load_notice_mappings,
)
from zeekndm.readers.base import (
    ZEEK_MARKERS,
    AddressCache,
    BadLine,
    ReasonTable,
    Skip,
    brief,
    classify_json_error,
    port_table,
    split_zeek_header,
    strip_bom,
)
from zeekndm.readers.zeek_json import json_ts

FORMAT = "zeek_notice"
ZEEKNDM_PREFIX = "ZeekNDM::"

# scan.zeek's messages; the duration is duration_to_mins_secs ("5m0s").
_ADDRESS_SCAN_MSG = re.compile(
    r"^(?P<src>\S+) scanned at least (?P<n>\d+) unique hosts on port (?P<port>\d+/\w+) "
    r"in (?P<dur>\d+m\d+s)$"
)
_PORT_SCAN_MSG = re.compile(
    r"^(?P<src>\S+) scanned at least (?P<n>\d+) unique ports of host (?P<dst>\S+) "
    r"in (?P<dur>\d+m\d+s)$"
)
_PORT_TEXT = re.compile(r"^([0-9]{1,5})/(tcp|udp)$")
_TRUE = {"T", "true", "True", True}
_TRANSPORTS = ("tcp", "udp", "icmp")
#: Counts in a notice (distinct destinations, attempts ...) above this are damage, not
#: evidence; it is also the largest integer every JSON consumer reads exactly.
MAX_COUNT = 2**53 - 1
#: Longest sensor or model name taken from a notice.
MAX_NAME = 256


@functools.lru_cache(maxsize=1)
def _default_models() -> dict[str, Model]:
    return load_builtin_models()


def sniff(head: bytes) -> bool:
    """True for a Zeek notice.log: a TSV header with `#path notice`, or JSON with `note`."""
    for line in head.split(b"\n"):
        line = line.strip()
        if line.startswith(b"#path"):
            return line[len(b"#path") :].strip() == b"notice"
        if line.startswith(b"{"):
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            return isinstance(obj, dict) and "note" in obj
        if line and not line.startswith(b"#"):
            return False
    return False


def parse_sub(sub: str | None) -> dict[str, str]:
    """The `key=value` words of a ZeekNDM notice's `sub` (other words are ignored)."""
    out: dict[str, str] = {}
    for word in (sub or "").split():
        key, eq, value = word.partition("=")
        if eq and key:
            out[key] = value
    return out


class ZeekNoticeParser:
    """Parses one notice.log stream, TSV (header-driven) or JSON lines.

    `models` (name -> Model) is where `ZeekNDM::` notices find their model, by default
    the built-in models; `notices` (name -> NoticeMapping) maps Zeek's own scan notices,
    by default the shipped mappings. Pass the configured ones so user overrides (texts,
    severities) apply to notices too.
    """

    format = FORMAT

    def __init__(
        self,
        models: Mapping[str, Model] | None = None,
        addresses: AddressCache | None = None,
        notices: Mapping[str, NoticeMapping] | None = None,
    ) -> None:
        self.models: dict[str, Model] = {}
        self.notices: dict[str, NoticeMapping] = {}
        self.set_models(
            _default_models() if models is None else models,
            load_notice_mappings() if notices is None else notices,
        )
        self.addresses = addresses or AddressCache()
        self._path_reason = ReasonTable("path=")
        self._model_reason = ReasonTable("no model ")
        self._reset_block()

    def set_models(
        self,
        models: Mapping[str, Model] | None,
        notices: Mapping[str, NoticeMapping] | None = None,
    ) -> None:
        """Look notices up in the configured models and notice mappings (None keeps
        what is in use), so user overrides apply to notices."""
        if models is not None:
            self.models = dict(models)
        if notices is not None:
            self.notices = by_notice(notices)

    # -- TSV header --------------------------------------------------------------------
    def _reset_block(self) -> None:
        self.separator = "\t"
        self.set_separator = ","
        self.empty_field = "(empty)"
        self.unset_field = "-"
        self.fields: list[str] | None = None
        self._skip: str | None = None

    def _header(self, s: str) -> None:
        key, value = split_zeek_header(s, self.separator)
        if key == "#separator":
            self._reset_block()
            self.separator = value
            return
        if key == "#fields":
            self.fields = value.split(self.separator)
        elif key == "#path":
            self._skip = None if value in ("notice", "") else self._path_reason(value)
        elif key in ZEEK_MARKERS:
            setattr(self, ZEEK_MARKERS[key], value)

    def _tsv_record(self, line: bytes) -> dict[str, Any]:
        try:
            s = line.decode()
        except UnicodeDecodeError:
            raise BadLine("invalid utf-8") from None
        if "\x00" in s:
            raise BadLine("nul byte")
        if self._skip is not None:
            raise Skip(self._skip)
        if self.fields is None:
            raise BadLine("data before #fields header")
        cols = s.split(self.separator)
        if len(cols) != len(self.fields):
            raise BadLine(
                "wrong column count", f"{len(cols)} columns, header has {len(self.fields)}"
            )
        unset = self.unset_field
        return {k: v for k, v in zip(self.fields, cols) if v != unset}

    def _list(self, value: Any) -> list[str]:
        """A Zeek set/vector value from either format, as a list of strings."""
        if value is None:
            return []
        if isinstance(value, list):
            if not all(type(v) is str for v in value):
                raise BadLine("bad address list", brief(value, 20))
            return value
        if type(value) is not str:
            raise BadLine("bad address list", brief(value, 20))
        text = value
        if text == self.empty_field or not text:
            return []
        return text.split(self.set_separator)

    # -- lines ---------------------------------------------------------------------------
    def parse(self, line: bytes) -> Detection | None:
        if not line or line.isspace():
            return None
        line = strip_bom(line) or line
        start = line.lstrip()[:1]
        if start == b"#":
            try:
                self._header(line.decode().lstrip())
            except UnicodeDecodeError:
                raise BadLine("invalid utf-8") from None
            return None
        if start == b"{":
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise classify_json_error(line) from None
            if type(record) is not dict:
                raise BadLine("not a JSON object")
            path = record.get("_path")
            if path is not None and path != "notice":
                if type(path) is not str:
                    raise BadLine("bad _path", brief(path, 20))
                raise Skip(self._path_reason(path))
        else:
            record = self._tsv_record(line)
        return self.detection(record)

    def detection(self, rec: Mapping[str, Any]) -> Detection:
        """The Detection for one notice record (field name -> value, unset fields absent)."""
        note = rec.get("note")
        if not isinstance(note, str) or not note:
            raise BadLine("missing note")
        ts = json_ts(rec.get("ts"))
        sensor = _name(rec.get("_node_name") or rec.get("_system_name"), "_node_name")
        if note.startswith(ZEEKNDM_PREFIX):
            return self._zeekndm(note, ts, rec, sensor)
        mapping = self.notices.get(note)
        if mapping is None:
            raise Skip("notice type not mapped")
        if not mapping.enabled:
            raise Skip("notice mapping disabled")
        if note == ADDRESS_SCAN:
            return self._address_scan(mapping, ts, rec, sensor)
        return self._port_scan(mapping, ts, rec, sensor)

    def _model(self, name: str) -> Model:
        model = self.models.get(name)
        if model is None:
            raise Skip(self._model_reason(name))
        return model

    def _address(self, value: Any, what: str) -> str:
        if not isinstance(value, str) or not value:
            raise BadLine(f"missing {what}")
        return self.addresses.normalise(value)

    def _zeekndm(self, note: str, ts: float, rec: Mapping[str, Any], sensor: Any) -> Detection:
        sub = parse_sub(rec.get("sub") if isinstance(rec.get("sub"), str) else None)
        name = rec.get("zeekndm_model") or sub.get("model") or note[len(ZEEKNDM_PREFIX) :].lower()
        model = self._model(_name(name, "zeekndm_model") or "")
        source = self._address(rec.get("src"), "src")

        def number(field: str, key: str, default: int | None = None) -> int | None:
            value = rec.get(field, sub.get(key))
            if value is None:
                return default
            return _count(value, key)

        distinct = number("zeekndm_distinct", "distinct", _int_or_none(rec.get("n"), "n"))
        if distinct is None:
            raise BadLine("missing distinct count")
        severity, threshold = _severity(
            model, rec.get("zeekndm_severity") or sub.get("severity"), distinct
        )
        threshold = number("zeekndm_threshold", "threshold", threshold) or threshold
        attempts = number("zeekndm_attempts", "attempts", distinct) or distinct
        failures = min(number("zeekndm_failures", "failures", 0) or 0, attempts)
        sample = self._list(rec.get("zeekndm_sample")) or self._list(sub.get("sample") or None)
        lower = rec.get("zeekndm_lower_bound", sub.get("lower_bound"))
        if not (type(lower) is str or type(lower) is bool):
            lower = None
        ports, transports = _ports(sub.get("ports"), model)
        # The SumStats epoch's start is the same for every notice of one scan (low, then
        # medium...), so they share one episode; without the column, the notice time.
        begin = rec.get("zeekndm_begin", sub.get("begin"))
        first_seen = ts if begin is None else json_ts(begin)
        return _zeek_detection(
            model,
            severity,
            source=source,
            threshold=threshold,
            first_seen=first_seen,
            last_seen=ts,
            distinct_destinations=distinct,
            attempts=attempts,
            failures=failures,
            successes=attempts - failures,
            sample_destinations=tuple(self.addresses.normalise(a) for a in sample),
            ports=ports,
            transports=transports,
            distinct_is_lower_bound=lower in _TRUE,
            total_distinct_destinations=distinct,
            sensor=sensor,
        )

    def _address_scan(
        self, mapping: NoticeMapping, ts: float, rec: Mapping[str, Any], sensor: Any
    ) -> Detection:
        msg = _msg(rec)
        m = _ADDRESS_SCAN_MSG.match(msg)
        if m is None:
            raise BadLine("unparseable Scan::Address_Scan msg", brief(msg))
        source = self._address(rec.get("src") or m["src"], "src")
        distinct = _count(m["n"], "n")
        number, transport = _port_text(m["port"])
        p = rec.get("p")
        if p is not None:
            number = _port(p)
            proto = rec.get("proto") or transport
            if proto not in _TRANSPORTS:
                raise BadLine("bad proto", brief(proto, 20))
            transport = proto
        return self._scan_detection(
            mapping, source, ts, distinct, distinct, (), (number,), (transport,), sensor, rec
        )

    def _port_scan(
        self, mapping: NoticeMapping, ts: float, rec: Mapping[str, Any], sensor: Any
    ) -> Detection:
        msg = _msg(rec)
        m = _PORT_SCAN_MSG.match(msg)
        if m is None:
            raise BadLine("unparseable Scan::Port_Scan msg", brief(msg))
        source = self._address(rec.get("src") or m["src"], "src")
        victim = self._address(rec.get("dst") or m["dst"], "dst")
        # One victim, many ports: the count Zeek measured is of ports, so it sets the
        # severity and the attempts, while there is one distinct destination.
        return self._scan_detection(
            mapping, source, ts, 1, _count(m["n"], "n"), (victim,), (), ("tcp",), sensor, rec
        )

    @staticmethod
    def _scan_detection(
        mapping: NoticeMapping,
        source: str,
        ts: float,
        distinct: int,
        counted: int,
        sample: tuple[str, ...],
        ports: tuple[int, ...],
        transports: tuple[str, ...],
        sensor: Any,
        rec: Mapping[str, Any],
    ) -> Detection:
        """A Detection for a scan.zeek notice, which counts failed attempts only.

        scan.zeek writes whether the scanner is local or remote in `sub`: a remote
        scanner is inbound; a local one may sweep inside or out, so no direction. The
        message is Zeek's own sentence (it says "ports" for a port scan)."""
        severity, threshold = _severity(mapping, None, counted)
        return _zeek_detection(
            mapping,
            severity,
            source=source,
            threshold=threshold,
            first_seen=ts,
            last_seen=ts,
            distinct_destinations=distinct,
            attempts=counted,
            failures=counted,
            successes=0,
            sample_destinations=sample,
            ports=ports,
            transports=transports,
            distinct_is_lower_bound=True,  # scan.zeek: "at least N"
            total_distinct_destinations=distinct,
            sensor=sensor,
            direction="inbound" if rec.get("sub") == "remote" else None,
            message=_msg(rec),
        )


def _zeek_detection(model: Model | NoticeMapping, severity: str, **evidence: Any) -> Detection:
    """A Detection Zeek raised: a notice at the model's first level starts an episode,
    one at a higher level escalates it."""
    first_level = model.threshold.levels[0][0]
    return Detection(
        model=model,
        severity=severity,
        state=START if severity == first_level else ESCALATED,
        detector="zeek",
        sensor_type="zeek",
        **evidence,
    )


def _int_or_none(value: Any, what: str) -> int | None:
    """A count that may be absent or unusable (`n` is optional evidence)."""
    try:
        return None if value is None else _count(value, what)
    except BadLine:
        return None


def _count(value: Any, what: str) -> int:
    """A non-negative count from a JSON number or TSV digits, at most MAX_COUNT.

    An alert carries it as a JSON integer, so 1e300 or 2**64 (which no encoder writes as
    an integer) is a bad line here rather than an alert no output can send."""
    if type(value) is int:
        n = value
    elif type(value) is float and value.is_integer():
        n = int(value) if abs(value) <= MAX_COUNT else -1
    elif type(value) is str and value.isascii() and value.isdigit() and len(value) <= 16:
        n = int(value)
    else:
        raise BadLine(f"bad {what}", brief(value, 40))
    if not 0 <= n <= MAX_COUNT:
        raise BadLine(f"bad {what}", brief(value, 40))
    return n


def _port(value: Any) -> int:
    port = port_table().get(value) if type(value) is str else value
    if type(port) is not int or not 0 <= port <= 65535:
        raise BadLine("bad port", brief(value, 20))
    return port


def _name(value: Any, what: str) -> str | None:
    """An optional name (sensor, model): a non-empty string of sane length, else None;
    any other type is a bad line (it would reach the alert as an object)."""
    if value is None or value == "":
        return None
    if type(value) is not str or len(value) > MAX_NAME:
        raise BadLine(f"bad {what}", brief(value, 20))
    return value


def _msg(rec: Mapping[str, Any]) -> str:
    msg = rec.get("msg")
    if msg is None:
        return ""
    if type(msg) is not str:
        raise BadLine("bad msg", brief(msg, 20))
    return msg


def _severity(model: Model | NoticeMapping, named: Any, count: int) -> tuple[str, int]:
    """(severity, its threshold): the one Zeek named if the model has it, else by count.

    A count below the lowest level (a site that lowered the threshold in Zeek) still
    gets the lowest severity: Zeek decided it was a detection.
    """
    levels = dict(model.threshold.levels)
    if isinstance(named, str) and named in levels:
        return named, levels[named]
    return model.threshold.severity_for(count) or model.threshold.levels[0]


def _port_text(text: str) -> tuple[int, str]:
    m = _PORT_TEXT.match(text)
    port = None if m is None else port_table().get(m[1])
    if port is None:
        raise BadLine("bad port", brief(text, 20))
    return port, m[2]  # type: ignore[index]


def _ports(text: str | None, model: Model) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Ports and transports from `sub`'s `ports=` list, else the model's own."""
    if text:
        pairs = [_port_text(p) for p in text.split(",") if p]
    else:
        pairs = [(p, t) for t, p in model.port_keys()]
    ports = tuple(sorted({p for p, _ in pairs}))
    transports = tuple(sorted({t for _, t in pairs}))
    return ports, transports
