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

import codecs
import math
from operator import itemgetter

from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.readers.base import ZEEK_OUTCOME, ZEEK_TRANSPORT, AddressCache, BadLine, Skip

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
_isfinite = math.isfinite


class ZeekTSVParser:
    """Parses one Zeek TSV stream; keeps the current header block's state between lines."""

    format = "zeek_tsv"

    def __init__(self, addresses: AddressCache | None = None) -> None:
        self.addresses = addresses or AddressCache()
        self._reset_block()

    # -- header ------------------------------------------------------------------------
    def _reset_block(self) -> None:
        self.separator = "\t"
        self.set_separator = ","
        self.empty_field = "(empty)"
        self.unset_field = "-"
        self.path: str | None = None
        self.fields: list[str] | None = None
        self._ncols = 0
        self._getter = None
        self._missing: str | None = None  # first required column #fields lacks
        self._skip: str | None = None  # Skip reason when #path is not conn

    def _header(self, s: str) -> None:
        if s.startswith("#separator"):
            # `#separator \x09`: a space, then the separator as an escape sequence.
            self._reset_block()
            raw = s[len("#separator") :].strip().encode("ascii", "backslashreplace")
            sep = codecs.escape_decode(raw)[0].decode("latin-1") if raw else ""
            self.separator = sep or "\t"
            return
        key, sep, value = s.partition(self.separator)
        if not sep:  # btest baselines write `#open XXXX` with a space
            key, _, value = s.partition(" ")
        if key == "#fields":
            self._set_fields(value.split(self.separator))
        elif key == "#path":
            self.path = value
            self._skip = None if value in ("conn", "") else f"path={value}"
        elif key == "#unset_field":
            self.unset_field = value
        elif key == "#empty_field":
            self.empty_field = value
        elif key == "#set_separator":
            self.set_separator = value
        # #open, #close, #types and free comments (`### BTest baseline ...`) carry
        # nothing a connection record needs.

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

    # -- data --------------------------------------------------------------------------
    def parse(self, line: bytes) -> Flow | None:
        if not line:
            return None
        try:
            s = line.decode()
        except UnicodeDecodeError:
            raise BadLine("invalid utf-8") from None
        first = s[0]
        if first == "#" or ((first == " " or first == "\t") and s.lstrip().startswith("#")):
            self._header(s.lstrip())
            return None
        if "\x00" in s:
            raise BadLine("nul byte")
        if self._skip is not None:
            raise Skip(self._skip)
        getter = self._getter
        if getter is None:
            if s.isspace():
                return None
            raise BadLine("data before #fields header")
        if self._missing is not None:
            raise BadLine(f"#fields lacks {self._missing}")
        cols = s.split(self.separator)
        if len(cols) != self._ncols:
            if s.isspace():
                return None
            raise BadLine("wrong column count", f"{len(cols)} columns, header has {self._ncols}")
        unset = self.unset_field
        cols.append(unset)
        ts, src, sport, dst, dport, proto, state, uid, cid, sensor, lo, lr = getter(cols)
        try:
            t = float(ts)
        except ValueError:
            raise BadLine("bad ts", ts[:40]) from None
        if not _isfinite(t):
            raise BadLine("bad ts", ts[:40])
        try:
            sp = int(sport)
            dp = int(dport)
        except ValueError:
            raise BadLine("bad port", f"{sport[:20]} / {dport[:20]}") from None
        if not (0 <= sp <= 65535 and 0 <= dp <= 65535):
            raise BadLine("bad port", f"{sp} / {dp}")
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
