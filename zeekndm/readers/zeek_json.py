"""Zeek JSON conn.log parser (`LogAscii::use_json=T`): one flat object per line.

Keys are the dotted field names (`"id.orig_h"`); logs written with a field-name map use
`id_orig_h`, and some shippers nest them (`{"id": {"orig_h": ...}}`), so all three are
accepted. Unset fields are simply absent. `ts` is an epoch float unless Zeek was told to
write ISO-8601 (`JSON::TS_ISO8601`, e.g. `"2021-06-09T20:55:13.160328Z"`).
"""

from __future__ import annotations

import math

import orjson

from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.readers.base import (
    ZEEK_OUTCOME,
    ZEEK_TRANSPORT,
    AddressCache,
    BadLine,
    JSONPortFilter,
    Skip,
    check_port,
    classify_json_error,
    parse_iso_ts,
)

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_new_flow = tuple.__new__
_isfinite = math.isfinite
_BOOL = {True: True, False: False, "T": True, "F": False}


def json_ts(value: object) -> float:
    """Epoch seconds from a Zeek JSON `ts`: a number, or an ISO-8601 / numeric string."""
    if type(value) is float or type(value) is int:
        t = float(value)
    elif type(value) is str:
        try:
            t = float(value)
        except ValueError:
            return parse_iso_ts(value)
    elif value is None:
        raise BadLine("missing ts")
    else:
        raise BadLine("bad ts", repr(value)[:40])
    if not _isfinite(t):
        raise BadLine("bad ts", repr(value)[:40])
    return t


class ZeekJSONParser(JSONPortFilter):
    """Parses Zeek JSON conn.log lines; lines of another `_path` are skipped."""

    DPORT_KEY = b'"id.resp_p":'

    format = "zeek_json"

    def __init__(self, addresses: AddressCache | None = None) -> None:
        self.addresses = addresses or AddressCache()
        self._skip_reasons: dict[object, str] = {}
        #: Records dropped by the destination-port filter (see `set_dport_filter`).
        self.filtered = 0
        self._dports = None

    def parse(self, line: bytes) -> Flow | None:
        if not line:
            return None
        dports = self._dports
        if dports is not None and self._filtered_out(line, dports):
            return None
        try:
            d = _loads(line)
        except _JSONDecodeError:
            if line.isspace():
                return None
            raise classify_json_error(line) from None
        if type(d) is not dict:
            raise BadLine("not a JSON object")
        path = d.get("_path")
        if path is not None and path != "conn":
            reason = self._skip_reasons.get(path)
            if reason is None:
                reason = self._skip_reasons.setdefault(path, f"path={path}")
            raise Skip(reason)
        get = d.get
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
            raise BadLine("missing id.orig_h" if src is None else "bad ip", repr(src)[:40])
        if type(dst) is not str:
            raise BadLine("missing id.resp_h" if dst is None else "bad ip", repr(dst)[:40])
        t = json_ts(get("ts"))
        sp = sport if type(sport) is int and 0 <= sport <= 65535 else check_port(sport, "id.orig_p")
        dp = dport if type(dport) is int and 0 <= dport <= 65535 else check_port(dport, "id.resp_p")
        proto = get("proto")
        if proto is None:
            raise BadLine("missing proto")
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
                ZEEK_OUTCOME.get(get("conn_state"), Outcome.UNKNOWN),
                get("uid"),
                get("community_id"),
                get("_node_name") or get("_system_name"),
                _BOOL.get(get("local_orig")),
                _BOOL.get(get("local_resp")),
            ),
        )
