"""Zeek JSON conn.log parser (`LogAscii::use_json=T`): one flat object per line.

Keys are the dotted field names (`"id.orig_h"`); logs written with a field-name map use
`id_orig_h`, and some shippers nest them (`{"id": {"orig_h": ...}}`), so all three are
accepted. Unset fields are simply absent. `ts` is an epoch float unless Zeek was told to
write ISO-8601 (`JSON::TS_ISO8601`, e.g. `"2021-06-09T20:55:13.160328Z"`).
"""

from __future__ import annotations

import orjson

from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.readers.base import (
    MAX_TS,
    MIN_TS,
    ZEEK_OUTCOME,
    ZEEK_TRANSPORT,
    AddressCache,
    BadLine,
    JSONPortFilter,
    ReasonTable,
    Skip,
    bad_ts,
    brief,
    check_port,
    classify_json_error,
    parse_iso_ts,
    strip_bom,
)

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_new_flow = tuple.__new__
_BOOL = {True: True, False: False, "T": True, "F": False}
#: Fields of Zeek logs other than conn.log that also carry `id.*` (dns, http, ssl, ...).
#: A record without `_path` and without `conn_state` (which conn.log always writes) but
#: with one of these is not a connection: a JSON dns.log must never be read as one.
OTHER_LOG_FIELDS = (
    "query",  # dns
    "trans_id",  # dns
    "method",  # http
    "uri",  # http
    "server_name",  # ssl
    "cipher",  # ssl
    "fuid",  # files
    "note",  # notice
    "name",  # weird
    "auth_success",  # ssh
)
NOT_CONN = "not a connection log"


def json_ts(value: object) -> float:
    """Epoch seconds from a Zeek JSON `ts`: a number, or an ISO-8601 / numeric string,
    between 1970 and 9999 (a value in milliseconds is a bad ts, with a hint)."""
    if type(value) is float or type(value) is int:
        try:
            t = float(value)
        except OverflowError:  # an integer beyond any float
            raise bad_ts(value) from None
    elif type(value) is str:
        try:
            t = float(value)
        except ValueError:
            return parse_iso_ts(value)
    elif value is None:
        raise BadLine("missing ts")
    else:
        raise bad_ts(value)
    if not MIN_TS <= t <= MAX_TS:  # also false for NaN and infinities
        raise bad_ts(value, t)
    return t


def _text(value: object, what: str) -> str | None:
    """An optional string field (uid, community_id, _node_name): None or a str."""
    if value is None or type(value) is str:
        return value  # type: ignore[return-value]
    raise BadLine(f"bad {what}", brief(value, 20))


def _flag(value: object, what: str) -> bool | None:
    if value is None:
        return None
    if type(value) is bool or type(value) is str:
        return _BOOL.get(value)
    raise BadLine(f"bad {what}", brief(value, 20))


class ZeekJSONParser(JSONPortFilter):
    """Parses Zeek JSON conn.log lines; lines of another `_path` are skipped."""

    DPORT_KEY = b'"id.resp_p":'

    format = "zeek_json"

    def __init__(self, addresses: AddressCache | None = None) -> None:
        self.addresses = addresses or AddressCache()
        self._path_reason = ReasonTable("path=")
        #: Records dropped by the destination-port filter (see `set_dport_filter`).
        self.filtered = 0
        self._dports = None

    def parse(self, line: bytes) -> Flow | None:
        if not line:
            return None
        dports = self._dports
        if dports is not None and self._filtered_out(line, dports):
            return None
        return self.parse_scanned(line)

    def parse_scanned(self, line: bytes) -> Flow | None:
        """`parse` without the port filter, for the lines the compiled scanner has
        already passed through the same filter and handed back (same result)."""
        if not line:
            return None
        try:
            d = _loads(line)
        except _JSONDecodeError:
            if line.isspace():
                return None
            unmarked = strip_bom(line)
            if unmarked is not None:  # a UTF-8 byte order mark at the start of the file
                return self.parse(unmarked)
            raise classify_json_error(line) from None
        if type(d) is not dict:
            raise BadLine("not a JSON object")
        get = d.get
        path = get("_path")
        if path is not None:
            if path != "conn":
                if type(path) is not str:
                    raise BadLine("bad _path", brief(path, 20))
                raise Skip(self._path_reason(path))
        elif "conn_state" not in d and any(k in d for k in OTHER_LOG_FIELDS):
            raise Skip(NOT_CONN)
        src = get("id.orig_h")
        if src is not None:
            sport = get("id.orig_p")
            dst = get("id.resp_h")
            dport = get("id.resp_p")
        else:
            src = get("id_orig_h")
            if src is not None:
                sport = get("id_orig_p")
                dst = get("id_resp_h")
                dport = get("id_resp_p")
            else:
                ids = get("id")
                if type(ids) is not dict:
                    raise BadLine("missing id.orig_h")
                src = ids.get("orig_h")
                sport = ids.get("orig_p")
                dst = ids.get("resp_h")
                dport = ids.get("resp_p")
        if type(src) is not str:
            raise BadLine("missing id.orig_h" if src is None else "bad ip", brief(src, 40))
        if type(dst) is not str:
            raise BadLine("missing id.resp_h" if dst is None else "bad ip", brief(dst, 40))
        t = json_ts(get("ts"))
        sp = sport if type(sport) is int and 0 <= sport <= 65535 else check_port(sport, "id.orig_p")
        dp = dport if type(dport) is int and 0 <= dport <= 65535 else check_port(dport, "id.resp_p")
        proto = get("proto")
        if type(proto) is not str:
            raise BadLine("missing proto" if proto is None else "bad proto", brief(proto, 20))
        state = get("conn_state")
        if state is not None and type(state) is not str:
            raise BadLine("bad conn_state", brief(state, 20))
        known = self.addresses.known
        normalise = self.addresses.normalise
        return _new_flow(
            Flow,
            (
                t,
                known.get(src) or normalise(src),
                sp,
                known.get(dst) or normalise(dst),
                dp,
                ZEEK_TRANSPORT.get(proto, Transport.OTHER),
                ZEEK_OUTCOME.get(state, Outcome.UNKNOWN),  # type: ignore[arg-type]
                _text(get("uid"), "uid"),
                _text(get("community_id"), "community_id"),
                _text(get("_node_name") or get("_system_name"), "_node_name"),
                _flag(get("local_orig"), "local_orig"),
                _flag(get("local_resp"), "local_resp"),
            ),
        )
