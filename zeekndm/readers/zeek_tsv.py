"""Zeek ASCII (TSV) conn.log parser, driven by the log's own header.

Columns are found by name from `#fields`, never by position: clusters prepend
`_node_name`, log extensions add `_write_ts`/`_system_name`, field-name maps rename the
id columns (`id_orig_h`, `src`), labelled datasets append `label` columns, and old Bro
logs lack `local_resp`. A new `#separator` or `#fields` line (concatenated or rotated logs)
resets the column map, so one parser follows a stream across header blocks.

Per data line the work is one decode, one split, one `itemgetter` call and a handful
of dict look-ups; header lines are rare and may be slow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from operator import itemgetter

from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.readers.base import (
    MAX_TS,
    MIN_TS,
    ZEEK_MARKERS,
    ZEEK_OUTCOME,
    ZEEK_TRANSPORT,
    AddressCache,
    BadLine,
    ReasonTable,
    Skip,
    bad_ts,
    brief,
    port_table,
    split_zeek_header,
    strip_bom,
)

# Accepted names per logical column, in order of preference.
_COLUMNS: dict[str, tuple[str, ...]] = {
    "ts": ("ts",),
    "src": ("id.orig_h", "id_orig_h", "src"),
    "sport": ("id.orig_p", "id_orig_p", "src_port"),
    "dst": ("id.resp_h", "id_resp_h", "dst"),
    "dport": ("id.resp_p", "id_resp_p", "dst_port"),
    "proto": ("proto",),
    "conn_state": ("conn_state",),
    "uid": ("uid",),
    "community_id": ("community_id",),
    "sensor": ("_node_name", "_system_name"),
    "local_orig": ("local_orig",),
    "local_resp": ("local_resp",),
}
_REQUIRED = ("ts", "src", "sport", "dst", "dport", "proto")
_BOOL = {"T": True, "F": False}
_new_flow = tuple.__new__  # Flow(...) without the NamedTuple __new__ wrapper: same tuple


class _PortsOnFirstUse:
    """Stands for the port table until the Python parser reads its first line (a replay
    the compiled core parses may never): builds it then and puts it in its place, so
    every later look-up is the plain dict's."""

    __slots__ = ()

    def get(self, key: str) -> int | None:
        global _PORTS
        _PORTS = port_table()
        return _PORTS.get(key)


_PORTS: dict[str, int] | _PortsOnFirstUse = _PortsOnFirstUse()


class ZeekTSVParser:
    """Parses one Zeek TSV stream; keeps the current header block's state between lines."""

    format = "zeek_tsv"

    def __init__(self, addresses: AddressCache | None = None) -> None:
        self.addresses = addresses or AddressCache()
        #: Lines dropped by the destination-port filter (see `set_dport_filter`).
        self.filtered = 0
        self._dports: frozenset[bytes] | None = None
        self._pick_key: tuple | None = None
        self._pick_re: re.Pattern[bytes] | None = None
        self._path_reason = ReasonTable("path=")
        self._generation = 0  # counts header changes, so a compiled scanner follows them
        self._native: tuple | None = None  # (core module, generation, scanner)
        self._reset_block()

    def set_dport_filter(self, dports: Iterable[int] | None) -> None:
        """Only parse lines whose responder port is in `dports` (None: every line).

        Scan models watch a handful of ports, and on a busy sensor almost every line is
        for some other port. Such a line costs one partial split and a set look-up
        instead of a full parse; it is counted in `filtered` and returns None. Its shape
        is still checked (column count, NUL bytes, encoding) so truncated or corrupt
        lines are counted as bad; its values (a bad timestamp or address on a port no
        model watches) are not validated.
        """
        self._dports = None if dports is None else frozenset(str(p).encode() for p in dports)
        self._generation += 1

    def native_scanner(self, core):
        """The compiled core's scanner for the current header block (configured with its
        separator, columns, unset marker and watched ports), or None when the block must
        be read line by line (no usable header yet, a separator of several bytes)."""
        if not self._ready or len(self._bseparator) != 1:
            return None
        cached = self._native
        if cached is not None and cached[0] is core and cached[1] == self._generation:
            return cached[2]
        scanner = cached[2] if cached is not None and cached[0] is core else None
        if scanner is None:
            scanner = core.TsvScanner(
                tuple.__new__,
                Flow,
                Transport.TCP,
                Transport.UDP,
                Transport.ICMP,
                Transport.OTHER,
                [(k.encode(), v) for k, v in ZEEK_OUTCOME.items()],
                Outcome.UNKNOWN,
            )
        scanner.configure(
            self._bseparator[0],
            self._ncols,
            self._indexes,
            self.unset_field.encode("utf-8", "surrogateescape"),
            None if self._dports is None else sorted(int(p) for p in self._dports),
        )
        self._native = (core, self._generation, scanner)
        return scanner

    # -- header ------------------------------------------------------------------------
    def _reset_block(self) -> None:
        self.separator = "\t"
        self._bseparator = b"\t"
        self.set_separator = ","
        self.empty_field = "(empty)"
        self.unset_field = "-"
        self.path: str | None = None
        self.fields: list[str] | None = None
        self._ncols = 0
        self._getter = None
        self._dport_split = -1  # maxsplit that isolates the responder-port column
        self._missing: str | None = None  # first required column #fields lacks
        self._skip: str | None = None  # Skip reason when #path is not conn
        self._ready = False  # a usable #fields, no missing column, #path is conn

    def _update_ready(self) -> None:
        self._ready = (
            self._getter is not None
            and self._missing is None
            and self._skip is None
            and self._dport_split > 0
        )

    def _not_ready(self, line: bytes) -> Flow | None:
        """Why a data line cannot be parsed in the current header state (the slow path)."""
        if line.isspace():
            return None
        unmarked = strip_bom(line)
        if unmarked is not None:  # a UTF-8 byte order mark before the first header
            return self.parse(unmarked)
        if b"\x00" in line:
            raise BadLine("nul byte")
        if self._skip is not None:
            raise Skip(self._skip)
        if self._getter is None:
            raise BadLine("data before #fields header")
        raise BadLine(f"#fields lacks {self._missing}")

    def _header(self, s: str) -> None:
        self._generation += 1
        key, value = split_zeek_header(s, self.separator)
        if key == "#separator":
            self._reset_block()
            self.separator = value
            self._bseparator = value.encode("latin-1")
            self._update_ready()
            return
        if key == "#fields":
            self._set_fields(value.split(self.separator))
        elif key == "#path":
            self.path = value
            self._skip = None if value in ("conn", "") else self._path_reason(value)
        elif key in ZEEK_MARKERS:
            setattr(self, ZEEK_MARKERS[key], value)
        # #open, #close, #types and free comments (`### BTest baseline ...`) carry
        # nothing a connection record needs.
        self._update_ready()

    def _set_fields(self, fields: list[str]) -> None:
        self.fields = fields
        self._ncols = n = len(fields)
        position = {name: i for i, name in reversed(list(enumerate(fields)))}
        indexes = []
        self._missing = None
        for logical, names in _COLUMNS.items():
            idx = next((position[name] for name in names if name in position), n)
            if idx == n and logical in _REQUIRED and self._missing is None:
                self._missing = names[0]
            indexes.append(idx)
        # Index n points at the unset value appended to each split line, so an absent
        # optional column reads as unset without a branch per column.
        self._getter = itemgetter(*indexes)
        self._indexes = indexes
        dport = indexes[4]
        self._dport_split = dport + 1 if dport < n else -1

    def pick_lines(self, block: bytes) -> list[int] | None:
        """Start offsets of the lines of `block` (whole lines) that may be on a watched
        port, or None when the block must be read line by line.

        The block is only trusted when scans over all of it show that every line is a
        data line of the current header's shape: no header line, one separator fewer per
        line than there are columns, ASCII only (Zeek escapes other bytes), no NUL.
        Candidates are found with one regular expression that reaches the responder-port
        column of each line and tests it against the watched ports.
        """
        dports = self._dports
        if not self._ready or dports is None or not 0 < self._dport_split - 1 < self._ncols - 1:
            return None
        sep = self._bseparator
        nlines = block.count(b"\n")
        if (
            block[:1] == b"#"
            or b"\n#" in block
            or block.count(sep) != nlines * (self._ncols - 1)
            or not block.isascii()
            or b"\x00" in block
        ):
            return None
        key = (sep, self._dport_split, dports)
        if self._pick_key != key:
            self._pick_key = key
            esc = re.escape(sep)
            # possessive: a column never gives characters back, so a line whose port does
            # not match fails at once instead of backtracking through every column
            column = rb"[^" + esc + rb"\n]*+" + esc
            ports = b"|".join(re.escape(p) for p in sorted(dports))
            # a newline, the columns before the responder port, a watched port, a separator
            self._pick_re = re.compile(
                rb"\n(?:" + column + rb"){%d}(?:" % (self._dport_split - 1) + ports + rb")" + esc
            )
        # Prefixing a newline lets the first line match too; a match then starts at the
        # offset its line has in `block`.
        return [m.start() for m in self._pick_re.finditer(b"\n" + block)]

    # -- data --------------------------------------------------------------------------
    def parse(self, line: bytes) -> Flow | None:
        if not line:
            return None
        first = line[0]
        # "#", TAB and space are all below 36; data lines start with a digit (ts) or a
        # letter (_node_name), so one comparison keeps header handling off the hot path.
        if first <= 35 and (first == 35 or line.lstrip()[:1] == b"#"):
            try:
                self._header(line.decode().lstrip())
            except UnicodeDecodeError:
                raise BadLine("invalid utf-8") from None
            return None
        if not self._ready:
            return self._not_ready(line)
        dports = self._dports
        if dports is not None:
            sep = self._bseparator
            head = line.split(sep, self._dport_split)
            if (
                len(head) > self._dport_split
                and head[-2] not in dports
                # Still check the line's shape (cheap scans in C): a wrong column count,
                # a NUL byte or non-ASCII bytes (Zeek escapes those) go to the full
                # parse below, which counts the line as bad with its reason.
                and line.count(sep) == self._ncols - 1
                and line.isascii()
                and b"\x00" not in line
            ):
                self.filtered += 1
                return None
        try:
            s = line.decode()
        except UnicodeDecodeError:
            raise BadLine("invalid utf-8") from None
        if "\x00" in s:
            raise BadLine("nul byte")
        cols = s.split(self.separator)
        if len(cols) != self._ncols:
            if s.isspace():
                return None
            raise BadLine("wrong column count", f"{len(cols)} columns, header has {self._ncols}")
        unset = self.unset_field
        cols.append(unset)
        ts, src, sport, dst, dport, proto, state, uid, cid, sensor, lo, lr = self._getter(cols)
        try:
            t = float(ts)
        except ValueError:
            raise bad_ts(ts) from None
        if not MIN_TS <= t <= MAX_TS:  # also false for NaN
            raise bad_ts(ts, t)
        sp = _PORTS.get(sport)
        dp = _PORTS.get(dport)
        if sp is None or dp is None:
            raise BadLine("bad port", f"{brief(sport, 20)} / {brief(dport, 20)}")
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
                ZEEK_OUTCOME.get(state, Outcome.UNKNOWN),
                None if uid == unset else uid,
                None if cid == unset else cid,
                None if sensor == unset else sensor,
                _BOOL.get(lo),
                _BOOL.get(lr),
            ),
        )
