"""Suricata eve.json parser: `flow` and `netflow` events become Flows, the rest are skipped.

Time is `flow.start` (`netflow.start`), never the top-level `timestamp`: that is when the
event was *written*, which for a flow is its end or timeout, and in replayed captures it
can even precede the start (see SOURCES.md, eve-2.json and slips test6).

Outcome of a `flow` event, from what the responder sent:
- nothing (`pkts_toclient` 0): the attempt was not answered -> NO_ANSWER;
- TCP, responder flags with RST but no SYN: refused -> REJECTED;
- TCP, responder sent a SYN (SYN-ACK) and either side then sent a RST: ABORTED;
- TCP, responder sent a SYN (SYN-ACK), or state established/closed with packets both
  ways: ESTABLISHED; anything else (midstream pick-ups, no `tcp` block) -> UNKNOWN;
- UDP: any packet back -> ESTABLISHED; ICMP and other transports -> UNKNOWN.
`netflow` events describe one direction each and carry no state -> UNKNOWN.
"""

from __future__ import annotations

from datetime import datetime

import orjson

from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.readers.base import (
    MAX_TS,
    MIN_TS,
    OFFSET_EPOCHS,
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
_fromisoformat = datetime.fromisoformat
_OFFSET_EPOCHS = OFFSET_EPOCHS

_TRANSPORT = {
    "TCP": Transport.TCP,
    "UDP": Transport.UDP,
    "ICMP": Transport.ICMP,
    "IPv6-ICMP": Transport.ICMP,
    "tcp": Transport.TCP,
    "udp": Transport.UDP,
    "icmp": Transport.ICMP,
    "ipv6-icmp": Transport.ICMP,
    # Some eve writers (and converters) give the IP protocol number instead of its name.
    6: Transport.TCP,
    17: Transport.UDP,
    1: Transport.ICMP,
    58: Transport.ICMP,
}
_TCP = Transport.TCP
_UDP = Transport.UDP
_ICMP = Transport.ICMP
_NO_ANSWER = Outcome.NO_ANSWER
_REJECTED = Outcome.REJECTED
_ESTABLISHED = Outcome.ESTABLISHED
_ABORTED = Outcome.ABORTED
_UNKNOWN = Outcome.UNKNOWN
_OTHER = Transport.OTHER
_ANSWERED_STATES = frozenset(("established", "closed"))
# Every two-digit hex flag string Suricata writes ("1a", "14", "00"), pre-decoded.
_FLAGS = {f"{i:02x}": i for i in range(256)}
_TCP_SYN = 0x02
_TCP_RST = 0x04
_EVENT_TYPE_KEY = b'"event_type":"'


class SuricataEveParser(JSONPortFilter):
    """Parses eve.json lines (NDJSON) into Flows from `flow` and `netflow` events."""

    DPORT_KEY = b'"dest_port":'
    SKIPS_EVENT_TYPES = True

    format = "suricata_eve"

    def __init__(self, addresses: AddressCache | None = None) -> None:
        self.addresses = addresses or AddressCache()
        #: Per event type, bounded: the fast path names it by its raw bytes.
        self._skip_reason = ReasonTable("event_type=")
        #: Records dropped by the destination-port filter (see `set_dport_filter`).
        self.filtered = 0
        self._dports = None

    def parse(self, line: bytes) -> Flow | None:
        if not line:
            return None
        # Most eve lines are alerts, dns, tls ... which we only count. Suricata writes
        # `"event_type":"<type>"` near the start of every event, and that literal (with
        # its unescaped quotes) cannot occur inside a JSON string, so the first match is
        # the event's own type: a non-flow event is skipped without parsing its JSON (it
        # is counted, not validated). Lines written with spaces after the colons are
        # parsed in full and decided below.
        at = line.find(_EVENT_TYPE_KEY, 0, 400)
        if at >= 0:
            at += 14
            if not (line.startswith(b'flow"', at) or line.startswith(b'netflow"', at)):
                end = line.find(b'"', at, at + 40)
                if end > at:
                    raise Skip(self._skip_reason(line[at:end]))
        dports = self._dports
        if dports is not None and self._filtered_out(line, dports):
            return None
        return self.parse_scanned(line)

    def native_scanner(self, core):
        """The compiled scanner of `JSONPortFilter`, which also parses the ordinary
        `flow` events itself (into the Flows `parse_scanned` returns for them)."""
        cached = self._native
        if cached is not None and cached[0] is core:
            return cached[1]
        scanner = super().native_scanner(core)
        scanner.parse_flows(
            _new_flow,
            Flow,
            _TCP,
            _UDP,
            [_NO_ANSWER, _REJECTED, _ESTABLISHED, _ABORTED, _UNKNOWN],
        )
        return scanner

    def parse_scanned(self, line: bytes) -> Flow | None:
        """`parse` without the prefilter (the event-type skip and the port filter), for
        the lines the compiled scanner has already passed through the same prefilter,
        byte for byte, and handed back: the same result as `parse` on those lines."""
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
        # Fast path for the usual flow event: subscripts instead of checked look-ups and
        # Suricata's fixed timestamp layout. Anything unusual (a missing key, ICMP, an odd
        # value) raises inside the `try` and the event is re-read by `_parse_event`, which
        # checks every field and names what is wrong.
        try:
            event_type = d["event_type"]
            if event_type == "flow":
                block = d["flow"]
            elif event_type == "netflow":
                block = d["netflow"]
            else:
                raise KeyError(event_type)
            start = block["start"]
            if len(start) != 31:
                raise KeyError(start)
            t = (_fromisoformat(start[:26]) - _OFFSET_EPOCHS[start[26:]]).total_seconds()
            if not MIN_TS <= t <= MAX_TS:
                raise KeyError(start)
            src = d["src_ip"]
            dst = d["dest_ip"]
            if type(src) is not str or type(dst) is not str:
                raise KeyError(src)
            known = self.addresses.known
            src = known.get(src) or self.addresses.normalise(src)
            dst = known.get(dst) or self.addresses.normalise(dst)
            transport = _TRANSPORT[d["proto"]]
            sport = d["src_port"]
            dport = d["dest_port"]
            if (
                transport is _ICMP
                or type(sport) is not int
                or type(dport) is not int
                or not 0 <= sport <= 65535
                or not 0 <= dport <= 65535
            ):
                raise KeyError(sport)
            if event_type == "netflow":
                outcome = _UNKNOWN
            elif transport is _TCP:
                to_client = block["pkts_toclient"]
                if to_client is None:
                    raise KeyError(to_client)
                if not to_client:
                    outcome = _NO_ANSWER
                else:
                    tcp = d["tcp"]
                    flags = _FLAGS[tcp["tcp_flags_tc"]]
                    if flags & _TCP_RST and not flags & _TCP_SYN:
                        outcome = _REJECTED
                    elif flags & _TCP_SYN:
                        outcome = (
                            _ABORTED
                            if (flags | _FLAGS.get(tcp.get("tcp_flags_ts"), 0)) & _TCP_RST
                            else _ESTABLISHED
                        )
                    elif block.get("state") in _ANSWERED_STATES and block.get("pkts_toserver"):
                        outcome = _ESTABLISHED
                    else:
                        outcome = _UNKNOWN
            else:  # UDP
                to_client = block["pkts_toclient"]
                if to_client is None:
                    raise KeyError(to_client)
                outcome = _ESTABLISHED if to_client else _NO_ANSWER
            get = d.get
            flow_id = get("flow_id")
            cid = get("community_id")
            host = get("host")
            if (
                not (type(flow_id) is int or flow_id is None)
                or not (type(cid) is str or cid is None)
                or not (type(host) is str or host is None)
            ):
                raise KeyError(host)
            return _new_flow(
                Flow,
                (
                    t,
                    src,
                    sport,
                    dst,
                    dport,
                    transport,
                    outcome,
                    None if flow_id is None else str(flow_id),
                    cid,
                    host,
                    None,
                    None,
                ),
            )
        except (KeyError, TypeError, ValueError, IndexError):
            return self._parse_event(d)

    def _parse_event(self, d: dict) -> Flow:
        """Every field checked; raises BadLine naming the problem, or Skip."""
        get = d.get
        event_type = get("event_type")
        if event_type == "flow":
            block = get("flow")
            netflow = False
        elif event_type == "netflow":
            block = get("netflow")
            netflow = True
        elif event_type is None:
            raise BadLine("no event_type (not an eve event)")
        elif type(event_type) is str:
            raise Skip(self._skip_reason(event_type.encode("utf-8", "replace")))
        else:
            raise BadLine("bad event_type", brief(event_type, 20))
        if type(block) is not dict:
            raise BadLine(f"missing {event_type} object")
        start = block.get("start")
        if type(start) is not str:
            raise BadLine(f"missing {event_type}.start")
        epoch = _OFFSET_EPOCHS.get(start[26:]) if len(start) == 31 else None
        if epoch is not None:
            try:
                t = (_fromisoformat(start[:26]) - epoch).total_seconds()
            except ValueError:
                raise bad_ts(start) from None
            if not MIN_TS <= t <= MAX_TS:  # 9999-12-31T23:59:59-1400 is in year 10000
                raise bad_ts(start)
        else:
            t = parse_iso_ts(start)
        src = get("src_ip")
        dst = get("dest_ip")
        if type(src) is not str:
            raise BadLine("missing src_ip" if src is None else "bad ip", brief(src, 20))
        if type(dst) is not str:
            raise BadLine("missing dest_ip" if dst is None else "bad ip", brief(dst, 20))
        proto = get("proto")
        if type(proto) is str or type(proto) is int:  # never a bool: True == 1 (ICMP)
            transport = _TRANSPORT.get(proto, _OTHER)
        elif proto is None:
            transport = _OTHER
        else:
            raise BadLine("bad proto", brief(proto, 20))
        if transport is _ICMP:
            # As in Zeek, ICMP "ports" are the type and code.
            sport = get("icmp_type", 0)
            dport = get("icmp_code", 0)
        else:
            sport = get("src_port", 0)
            dport = get("dest_port", 0)
        if type(sport) is not int or not 0 <= sport <= 65535:
            sport = check_port(sport, "src_port")
        if type(dport) is not int or not 0 <= dport <= 65535:
            dport = check_port(dport, "dest_port")

        if netflow:
            outcome = _UNKNOWN
        elif transport is _TCP:
            to_client = block.get("pkts_toclient")
            if to_client is None:
                outcome = _UNKNOWN
            elif not to_client:
                outcome = _NO_ANSWER
            else:
                tcp = get("tcp")
                flags = _FLAGS.get(tcp.get("tcp_flags_tc")) if type(tcp) is dict else None
                if flags is None:
                    flags = _hex_flags(tcp)
                if flags & _TCP_RST and not flags & _TCP_SYN:
                    outcome = _REJECTED
                elif flags & _TCP_SYN:
                    ts_flags = _FLAGS.get(tcp.get("tcp_flags_ts"), 0) if type(tcp) is dict else 0
                    outcome = _ABORTED if (flags | ts_flags) & _TCP_RST else _ESTABLISHED
                elif block.get("state") in _ANSWERED_STATES and block.get("pkts_toserver"):
                    outcome = _ESTABLISHED
                else:
                    outcome = _UNKNOWN
        elif transport is _UDP:
            to_client = block.get("pkts_toclient")
            outcome = _UNKNOWN if to_client is None else (_ESTABLISHED if to_client else _NO_ANSWER)
        else:
            outcome = _UNKNOWN

        flow_id = get("flow_id")
        if not (flow_id is None or type(flow_id) is int or type(flow_id) is str):
            raise BadLine("bad flow_id", brief(flow_id, 20))
        cid = get("community_id")
        if not (cid is None or type(cid) is str):
            raise BadLine("bad community_id", brief(cid, 20))
        host = get("host")
        if not (host is None or type(host) is str):
            raise BadLine("bad host", brief(host, 20))
        known = self.addresses.known
        return _new_flow(
            Flow,
            (
                t,
                known.get(src) or self.addresses.normalise(src),
                sport,
                known.get(dst) or self.addresses.normalise(dst),
                dport,
                transport,
                outcome,
                None if flow_id is None else str(flow_id),
                cid,
                host,
                None,
                None,
            ),
        )


def _hex_flags(tcp: object) -> int:
    """The responder's TCP flags from an unusual `tcp_flags_tc` value (0 if unknown)."""
    value = tcp.get("tcp_flags_tc") if type(tcp) is dict else None
    if type(value) is str:
        try:
            return int(value, 16)
        except ValueError:
            return 0
    return 0
