"""What a line parser is, and the small pieces every parser shares.

Kept apart from `zeekndm.readers` (the package front door) so the per-format modules can
import it without importing their caller. Everything here sits on the per-line hot path,
so it is written for speed first: dict look-ups instead of regexes, caches instead of
re-parsing the same address thousands of times.
"""

from __future__ import annotations

import codecs
import ipaddress
import math
import socket
import warnings
from collections.abc import Hashable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Protocol

from zeekndm.flow import Flow, Outcome, Transport

#: Above this many distinct raw addresses the cache is simply emptied: a scan touching
#: millions of addresses must not grow memory, and refilling is cheap.
IP_CACHE_MAX = 200_000
_AF_INET = socket.AF_INET
_pton = socket.inet_pton
_ntop = socket.inet_ntop

#: Record times must fall between the epoch and 9999-12-31T23:59:59Z: what the ECS date
#: fields (and Python's datetime, which formats them) can hold. Network logs from before
#: 1970 do not exist; a value beyond the end is a unit mistake (milliseconds) or damage.
MIN_TS = 0.0
MAX_TS = 253402300799.0
#: Distinct skip reasons one parser names; past this, new values share one "other"
#: reason, so a stream of made-up event types cannot grow the counters without bound.
REASON_CAP = 32
#: A port as sensors write it: canonical decimal digits, 0-65535 ("80", never "080",
#: "+80", "8_0" or non-ASCII digits, all of which `int()` would take). One table look-up
#: replaces `int()` plus the range check on the hot path, and is stricter. Built on first
#: use (`port_table()`; `PORTS` is still importable): its 65,536 strings cost ~10-15 ms of
#: start-up that a replay whose lines the compiled core parses never needs.
_PORT_TABLE: dict[str, int] | None = None


def port_table() -> dict[str, int]:
    """The port table (`PORTS`), built the first time it is asked for."""
    global _PORT_TABLE
    table = _PORT_TABLE
    if table is None:
        table = _PORT_TABLE = {str(i): i for i in range(65536)}
    return table


def __getattr__(name: str) -> object:
    if name == "PORTS":
        return port_table()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class BadLine(Exception):
    """One malformed input line. Counted per `reason` by the reader, never fatal.

    `reason` is a short, fixed category ("bad port", "wrong column count") so counts
    group well; `detail` carries the specifics for the logged sample.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class Skip(Exception):
    """A well-formed line that is deliberately not a connection record.

    Examples: a Suricata `alert` event, a line of a Zeek log whose `#path` is not `conn`.
    Counted per `reason` (e.g. "event_type=alert"), which is not an error.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def brief(value: object, limit: int = 60) -> str:
    """A short, safe description of a value for a bad-line detail.

    Never `repr()` of a container (a JSON array nested 1,000 deep makes repr() raise
    RecursionError) nor of a huge integer (repr() of a 5,000-digit int raises
    ValueError): those are named by their type instead."""
    if type(value) is str or type(value) is bytes:
        return repr(value[:limit])
    if type(value) is int:
        return repr(value) if value.bit_length() <= 64 else f"<{value.bit_length()}-bit integer>"
    if value is None or type(value) is bool or type(value) is float:
        return repr(value)
    return {"list": "<JSON array>", "dict": "<JSON object>"}.get(
        type(value).__name__, f"<{type(value).__name__}>"
    )


def bad_ts(raw: object, t: float | None = None) -> BadLine:
    """BadLine("bad ts") for `raw`, with a hint when it looks like milli- or microseconds."""
    detail = brief(raw, 40)
    if t is not None and t > MAX_TS and math.isfinite(t):
        if t / 1e3 <= MAX_TS:
            detail += ": epoch milliseconds? ts must be seconds"
        elif t / 1e6 <= MAX_TS:
            detail += ": epoch microseconds? ts must be seconds"
    elif t is not None and not math.isnan(t):
        detail += ": outside 1970-01-01 .. 9999-12-31"
    return BadLine("bad ts", detail)


def check_ts(t: float, raw: object) -> float:
    """`t` if it is a usable record time (see MIN_TS/MAX_TS), else raise BadLine("bad ts")."""
    if MIN_TS <= t <= MAX_TS:  # False for NaN too
        return t
    raise bad_ts(raw, t)


class ReasonTable:
    """Skip reasons such as "event_type=dns", made once per value and bounded.

    Each distinct value gets its own reason up to `cap` values; later new values are
    all counted as `<prefix>other`. Values must be hashable (str or bytes)."""

    __slots__ = ("prefix", "cap", "_known", "_other")

    def __init__(self, prefix: str, cap: int = REASON_CAP) -> None:
        self.prefix = prefix
        self.cap = cap
        self._known: dict[Hashable, str] = {}
        self._other = f"{prefix}other"

    def __call__(self, value: str | bytes) -> str:
        reason = self._known.get(value)
        if reason is None:
            if len(self._known) >= self.cap:
                return self._other
            name = value.decode("utf-8", "replace") if type(value) is bytes else str(value)
            reason = self._known[value] = f"{self.prefix}{name[:40]}"
        return reason


BOM = b"\xef\xbb\xbf"


def strip_bom(line: bytes) -> bytes | None:
    """`line` without a leading UTF-8 byte order mark, or None when it has none."""
    return line[3:] if line.startswith(BOM) else None


class LineParser(Protocol):
    """Turns one input line (without its newline) into a `Flow`.

    Returns None for header, comment and blank lines; raises `BadLine` or `Skip`.
    A parser may keep state between lines (the Zeek TSV header), so use one instance
    per input stream.
    """

    format: str

    def parse(self, line: bytes) -> Flow | None: ...


#: Header lines that set how values are written, and the parser attribute each one sets.
ZEEK_MARKERS = {
    "#unset_field": "unset_field",
    "#empty_field": "empty_field",
    "#set_separator": "set_separator",
}


def split_zeek_header(line: str, separator: str) -> tuple[str, str]:
    """(key, value) of one Zeek TSV header line, such as ("#fields", "ts<TAB>uid...").

    `#separator \\x09` gives the separator decoded from its escape ("\\t" when empty);
    other lines split at the current separator, or at a space (btest baselines write
    `#open XXXX`)."""
    if line.startswith("#separator"):
        raw = line[len("#separator") :].strip().encode("ascii", "backslashreplace")
        try:
            with warnings.catch_warnings():  # "\#" is a DeprecationWarning, not data
                warnings.simplefilter("ignore")
                sep = codecs.escape_decode(raw)[0].decode("latin-1") if raw else ""
        except ValueError:  # "\x" without two hex digits
            raise BadLine("bad #separator", brief(line, 30)) from None
        return "#separator", sep or "\t"
    key, sep, value = line.partition(separator)
    if not sep:
        key, _, value = line.partition(" ")
    return key, value


class AddressCache:
    """Normalises IP address strings (`ipaddress` compressed form), remembering results.

    Sensors repeat the same few thousand addresses millions of times; parsing each with
    `ipaddress` would dominate the cost of a line. The cache is bounded by emptying it
    when it passes `IP_CACHE_MAX` entries.
    """

    __slots__ = ("known", "_max")

    def __init__(self, max_entries: int = IP_CACHE_MAX) -> None:
        #: raw -> normalised. Parsers read it directly (`known.get(raw) or normalise(raw)`)
        #: to save a method call per address on the hit path.
        self.known: dict[str, str] = {}
        self._max = max_entries

    def __len__(self) -> int:
        return len(self.known)

    def normalise(self, raw: str) -> str:
        """The compressed form of `raw`; raises BadLine("bad ip") if it is not an address."""
        hit = self.known.get(raw)
        if hit is not None:
            return hit
        try:
            if ":" in raw:
                norm = _normalise_v6(raw)
            else:
                # IPv4 through the C socket functions: ~8x faster than ipaddress on the
                # miss path (a scan hits a new address per line), same dotted-quad result.
                norm = _ntop(_AF_INET, _pton(_AF_INET, raw))
        except (ValueError, OSError, TypeError):
            raise BadLine("bad ip", brief(raw)) from None
        if norm == raw:
            norm = raw  # share one string object: the usual case, half the memory
        known = self.known
        if len(known) >= self._max:
            known.clear()
        known[raw] = norm
        return norm


def _normalise_v6(raw: str) -> str:
    """The compressed form of an IPv6 address; an IPv4-mapped one (`::ffff:10.0.0.5`) is
    its IPv4 address, and a zone id (`fe80::1%eth0`, which names the sensor's interface,
    not another host) is dropped, so neither makes a second name for one destination."""
    addr = ipaddress.IPv6Address(raw.partition("%")[0])
    mapped = addr.ipv4_mapped
    return str(mapped) if mapped is not None else addr.compressed


# Zeek `proto` values. Anything else (unknown_transport, sctp ...) is OTHER.
ZEEK_TRANSPORT: dict[str, Transport] = {
    "tcp": Transport.TCP,
    "udp": Transport.UDP,
    "icmp": Transport.ICMP,
}

# Zeek conn_state -> what happened to the attempt. S0/SH/SHR/RSTOS0: no handshake was
# seen; REJ: the responder answered with a RST; RSTO/RSTR: "connection established,
# originator (responder) aborted" in Zeek's own words, so ABORTED; the states where the
# exchange went on are established. OTH (midstream) and RSTRH tell us nothing about
# whether the originator's attempt was answered, so they stay UNKNOWN.
# The same table holds for UDP: S0 = no reply, SF = a reply.
ZEEK_OUTCOME: dict[str, Outcome] = {
    "S0": Outcome.NO_ANSWER,
    "SH": Outcome.NO_ANSWER,
    "RSTOS0": Outcome.NO_ANSWER,
    "REJ": Outcome.REJECTED,
    "SF": Outcome.ESTABLISHED,
    "S1": Outcome.ESTABLISHED,
    "S2": Outcome.ESTABLISHED,
    "S3": Outcome.ESTABLISHED,
    "RSTO": Outcome.ABORTED,
    "RSTR": Outcome.ABORTED,
    "OTH": Outcome.UNKNOWN,
    "RSTRH": Outcome.UNKNOWN,
    "SHR": Outcome.NO_ANSWER,
}

_UTC = timezone.utc
_EPOCH_NAIVE = datetime(1970, 1, 1)


def _offset_epochs() -> dict[str, datetime]:
    """`"-0500"` -> the naive local time of the epoch at that offset, every quarter hour.

    Local time minus this is the time since the epoch in one exact timedelta
    subtraction: about twice as fast as an aware `datetime.timestamp()`.
    """
    table = {}
    for minutes in range(-14 * 60, 14 * 60 + 1, 15):
        sign = "-" if minutes < 0 else "+"
        hh, mm = divmod(abs(minutes), 60)
        table[f"{sign}{hh:02d}{mm:02d}"] = _EPOCH_NAIVE + timedelta(minutes=minutes)
    table["-0000"] = _EPOCH_NAIVE
    return table


#: For Suricata's fixed timestamp layout `2022-02-08T09:43:37.139810-0500` (31 chars).
OFFSET_EPOCHS = _offset_epochs()


def parse_iso_ts(text: str) -> float:
    """Epoch seconds from an ISO-8601 timestamp; a value without an offset is taken as UTC.

    `datetime.fromisoformat` (3.11+) accepts `Z`, `+00:00` and Suricata's `-0500`.
    Raises BadLine("bad ts").
    """
    try:
        dt = datetime.fromisoformat(text)
    except (ValueError, TypeError):
        dt = _fromisoformat_py310(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=_UTC)
    try:
        t = dt.timestamp()
    except (OverflowError, ValueError, OSError):  # year 1 at +01:00 is before year 1 UTC
        raise bad_ts(text) from None
    return check_ts(t, text)


def _fromisoformat_py310(text: object) -> datetime:
    """Retry for Python 3.10, whose fromisoformat knows neither `Z` nor `-0500`."""
    if type(text) is str and len(text) > 19:
        fixed = text[:-1] + "+00:00" if text[-1] in "zZ" else text
        if fixed[-5] in "+-" and fixed[-4:].isdigit():
            fixed = f"{fixed[:-2]}:{fixed[-2:]}"
        if fixed != text:
            try:
                return datetime.fromisoformat(fixed)
            except ValueError:
                pass
    raise bad_ts(text)


def check_port(value: object, what: str) -> int:
    """An int port 0-65535 from a JSON value: an integer, or a string of canonical digits
    (see PORTS); a bool, a float, "080" or "8_0" is a bad port."""
    if type(value) is int:
        if 0 <= value <= 65535:
            return value
    elif type(value) is str:
        port = port_table().get(value)
        if port is not None:
            return port
    elif value is None:
        raise BadLine(f"missing {what}")
    raise BadLine("bad port", f"{what}={brief(value, 20)}")


def classify_json_error(line: bytes) -> BadLine:
    """The most useful BadLine for a line orjson refused (called only on failure)."""
    if b"\x00" in line:
        return BadLine("nul byte")
    if not line.isascii():
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            return BadLine("invalid utf-8")
    return BadLine("invalid JSON", line[:40].decode("utf-8", "replace"))


class JSONPortFilter:
    """Destination-port prefilter for JSON-lines parsers (a mixin).

    The port is found with a byte search for the compact `"<key>":` form
    (`DPORT_KEY`, set by the parser class), so most lines for unwatched ports cost no
    JSON parsing; they are counted in `filtered` and return None. A line that is cut
    short or holds a NUL byte is parsed in full (and counted as bad); other values of
    unwatched records are not validated. A line where the key is written differently
    (spaces) is parsed in full, so nothing watched is ever dropped.

    A line holding the key twice (`"dest_port":80,"dest_port":27017`) is parsed in full
    too: the JSON parser keeps the last value, and the filter must never decide on a
    different one than the parser would (the same holds for a nested object that repeats
    the key). Only the canonical digits the parser accepts as a port are compared.
    """

    DPORT_KEY: bytes = b""
    filtered: int = 0
    _dports: frozenset[bytes] | None = None

    def set_dport_filter(self, dports: Iterable[int] | None) -> None:
        """Only parse records whose responder port is in `dports` (None: every record)."""
        self._dports = None if dports is None else frozenset(str(p).encode() for p in dports)
        self._native = None

    _native: tuple | None = None

    def native_scanner(self, core):
        """The compiled core's scanner doing this prefilter (and, for eve, the skip of
        other event types) over a whole block; the lines it cannot decide are parsed by
        `parse`, so the accounting is the same on both paths."""
        cached = self._native
        if cached is not None and cached[0] is core:
            return cached[1]
        ports = None if self._dports is None else sorted(int(p) for p in self._dports)
        scanner = core.JsonScanner(self.SKIPS_EVENT_TYPES, self.DPORT_KEY, ports)
        self._native = (core, scanner)
        return scanner

    #: Suricata eve: non-flow events are skipped by their type before any parsing.
    SKIPS_EVENT_TYPES = False

    def _filtered_out(self, line: bytes, dports: frozenset[bytes]) -> bool:
        key = self.DPORT_KEY
        at = line.find(key)
        if at < 0:
            return False
        at += len(key)
        end = line.find(b",", at, at + 8)
        if end <= at:
            return False
        value = line[at:end]
        if value in dports or not value.isdigit() or line.find(key, end) >= 0:
            return False
        # A truncated line or one with a NUL byte is parsed in full and counted as bad.
        if not line.endswith(b"}") or b"\x00" in line:
            return False
        self.filtered += 1
        return True
