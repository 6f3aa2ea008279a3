"""Kafka messages to records: one partition's parsers, with the shapes shippers send.

A message is one log line as its sensor wrote it (or several, newline-separated), read by
the same readers `replay` uses (`readers.sniff_head()` / `make_parser()`), in one of:

* `zeek_json`: Zeek's JSON conn.log records; also zeek-kafka's `tag_json` form, where
  each record is wrapped in its log's name (`{"conn": {...}}`, plus any
  `additional_message_values`): `conn` records are read, `notice` records go to the
  notice reader, other logs are skipped and counted as such.
* `suricata_eve`: eve.json events (flow and netflow; other event types are skipped).
* `zeek_tsv_lines`: Zeek TSV data lines without their header (a shipper that sends the
  lines of conn.log one by one): the columns are `fields:` (default: Zeek's conn.log
  columns); a `#fields` line arriving in the partition replaces them.
* `auto` (default): the format of each partition from its first messages, as a file's is
  found from its first lines.

Every message ends up in a count of the partition's `LiveReadStats`, named
`TOPIC[PARTITION]` with the offset as line number: a record, a bad record (not JSON,
the wrong schema, a message longer than `max_message_bytes`, which is not even parsed),
or a skipped one. A bad message never stops the consumer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from zeekndm.detection import Detection
from zeekndm.errors import ZeekNDMError
from zeekndm.flow import Flow
from zeekndm.live.streams import LiveReadStats
from zeekndm.readers import make_parser, parse_chunk, parse_line, sniff_format, sniff_head
from zeekndm.readers.base import LineParser

log = logging.getLogger(__name__)

# Zeek's conn.log columns (Zeek 6/7 defaults, without the optional ones), for TSV lines
# sent without their header.
CONN_FIELDS = (
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes "
    "resp_bytes conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes "
    "resp_pkts resp_ip_bytes tunnel_parents"
).split()
# zeek-kafka's TaggedJSON writes `{"<path>": {` at the very start of each message.
_TAGGED = re.compile(rb'^\{"([A-Za-z0-9_.-]{1,64})": ?\{')
_JSON_FORMATS = ("zeek_json", "suricata_eve", "zeek_notice")


def tsv_header(columns: tuple[str, ...] | list[str]) -> list[bytes]:
    """The header block that makes Zeek's TSV parser read lines with these columns."""
    return [
        b"#separator \\x09",
        b"#set_separator\t,",
        b"#empty_field\t(empty)",
        b"#unset_field\t-",
        b"#path\tconn",
        b"#fields\t" + "\t".join(columns).encode(),
    ]


class PartitionReader:
    """The parsers of one partition (`where` = `TOPIC[PARTITION]`), fed one message at a time.

    `records(value, offset)` returns the records in a message (Flows, and Detections from
    Zeek notices). `to_dict()`/`from_dict()` carry what a process taking the partition over
    needs to read it the same way: the format found, and the TSV header in force.
    """

    def __init__(
        self,
        where: str,
        fmt: str,
        *,
        clock: Callable[[], float],
        models: Any = None,
        notices: Any = None,
        fields: tuple[str, ...] | None = None,
        max_message_bytes: int = 1 << 20,
        dports: set[int] | None = None,
    ) -> None:
        self.where = where
        self.stats = LiveReadStats(where, clock)
        self.requested = fmt
        self.format: str | None = None if fmt == "auto" else fmt
        self.models = models
        self.notices = notices
        self.max_message_bytes = max_message_bytes
        self._parsers: dict[str, LineParser] = {}
        self.header: list[bytes] = []
        if fmt == "zeek_tsv_lines":
            self.header = tsv_header(fields or CONN_FIELDS)
        self._unrecognised_logged = False
        #: Responder ports the enabled models watch: replay's prefilter (None: parse all).
        self.dports = dports

    # -- state carried with the partition ---------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "header": [h.decode("latin-1") for h in self.header] if self.header else None,
        }

    def restore(self, data: Any) -> None:
        if not isinstance(data, dict):
            return
        fmt = data.get("format")
        if self.requested == "auto" and fmt in (*_JSON_FORMATS, "zeek_tsv_lines"):
            self.format = fmt
        header = data.get("header")
        if (
            self.format == "zeek_tsv_lines"
            and isinstance(header, list)
            and header
            and all(isinstance(h, str) for h in header)
        ):
            self.header = [h.encode("latin-1") for h in header[:64]]
            self._parsers.pop("zeek_tsv_lines", None)

    def set_dports(self, dports: set[int] | None) -> None:
        """Records on other responder ports are only counted, not parsed, as `replay`
        and live mode's files do (`filtered`)."""
        self.dports = dports
        for parser in self._parsers.values():
            _set_filter(parser, dports)

    @property
    def filtered(self) -> int:
        """Records passed over by the prefilter so far (they are records, not parsed)."""
        return sum(getattr(p, "filtered", 0) for p in self._parsers.values())

    def set_models(self, models: Any, notices: Any = None) -> None:
        """A reloaded config: the notice parser gets the new models and notice mappings
        (None keeps the ones in use)."""
        self.models = models
        if notices is not None:
            self.notices = notices
        notice = self._parsers.get("zeek_notice")
        if notice is not None and hasattr(notice, "set_models"):
            notice.set_models(models, notices)

    # -- reading --------------------------------------------------------------------------
    def _parser(self, fmt: str) -> LineParser:
        parser = self._parsers.get(fmt)
        if parser is None:
            if fmt == "zeek_tsv_lines":
                parser = make_parser("zeek_tsv")
                for line in self.header:
                    parse_line(parser, 0, line, self.stats)
            else:
                parser = make_parser(fmt, models=self.models, notices=self.notices)
            _set_filter(parser, self.dports)
            self._parsers[fmt] = parser
        return parser

    def records(self, value: bytes | None, offset: int) -> list[Flow | Detection]:
        stats = self.stats
        stats.lines += 1
        if not value:
            stats.skipped_by_reason["empty message"] += 1
            return []
        if len(value) > self.max_message_bytes:
            stats.add_bad(offset, "message too long", f"{len(value):,} bytes")
            return []
        if b"\n" in value:
            out: list[Flow | Detection] = []
            for line in value.split(b"\n"):
                line = line.rstrip(b"\r")
                if line.strip():
                    out.extend(self.line_records(line, offset))
            return out
        return self.line_records(value, offset)

    def batch(
        self, messages: list[tuple[int, bytes | None]]
    ) -> Iterator[tuple[int, Flow | Detection]]:
        """(offset, record) of consecutive messages of this partition, in order: what
        `records` gives for each, but once the format is known to be Zeek JSON or eve,
        runs of plain one-line messages go through `readers.parse_chunk` together (the
        compiled core's block scan and prefilter when it is built, as for a file)."""
        fmt = self.format
        if fmt not in ("zeek_json", "suricata_eve"):
            for offset, value in messages:
                for item in self.records(value, offset):
                    yield offset, item
            return
        stats = self.stats
        limit = self.max_message_bytes
        tagged = _TAGGED.match if fmt == "zeek_json" else None
        run: list[tuple[int, bytes]] = []
        for offset, value in messages:
            if (
                value
                and len(value) <= limit
                and b"\n" not in value
                and (tagged is None or tagged(value) is None)
            ):
                stats.lines += 1
                run.append((offset, value))
                continue
            if run:
                yield from parse_chunk(self._parser(fmt), run, stats)
                run = []
            for item in self.records(value, offset):
                yield offset, item
        if run:
            yield from parse_chunk(self._parser(fmt), run, stats)

    def line_records(self, line: bytes, offset: int) -> list[Flow | Detection]:
        """The records of one line of a message (`rekey` forwards line by line)."""
        fmt = self.format
        if fmt == "zeek_tsv_lines":
            if line[:1] == b"#":
                self._note_header(line)
            item = parse_line(self._parser("zeek_tsv_lines"), offset, line, self.stats)
            return [item] if item is not None else []
        if fmt is None or fmt == "zeek_json":
            tagged = _TAGGED.match(line)
            if tagged is not None and tagged.group(1) != b"id":
                return self._tagged(line, tagged.group(1).decode(), offset)
        if fmt is None:
            try:
                fmt = sniff_format(sniff_head([line]), file=self.where)
            except ZeekNDMError as exc:
                self.stats.add_bad(offset, "unrecognised format", _brief(exc))
                if not self._unrecognised_logged:
                    self._unrecognised_logged = True
                    log.warning(
                        "%s: its first message is not Zeek JSON, Suricata eve or a Zeek notice "
                        "(for Zeek TSV lines set format: zeek_tsv_lines); each message is "
                        "tried again",
                        self.where,
                    )
                return []
            if fmt == "zeek_tsv":  # a header line first: the shipper sends TSV lines
                fmt = "zeek_tsv_lines"
                self.header = []
                self._note_header(line)
            self.format = fmt
            log.info("reading %s (%s)", self.where, fmt)
        item = parse_line(self._parser(fmt), offset, line, self.stats)
        return [item] if item is not None else []

    def _note_header(self, line: bytes) -> None:
        if line.startswith(b"#separator"):
            self.header = []
        if len(self.header) < 64:
            self.header.append(line)

    def _tagged(self, line: bytes, path: str, offset: int) -> list[Flow | Detection]:
        """zeek-kafka's `{"conn": {...}}`: the record inside, by its log's name."""
        try:
            wrapper = orjson.loads(line)
        except orjson.JSONDecodeError:
            item = parse_line(self._parser("zeek_json"), offset, line, self.stats)
            return [item] if item is not None else []
        inner = wrapper.get(path) if isinstance(wrapper, dict) else None
        if not isinstance(inner, dict) or "ts" in wrapper:
            item = parse_line(self._parser(self.format or "zeek_json"), offset, line, self.stats)
            return [item] if item is not None else []
        if path == "conn":
            fmt = "zeek_json"
        elif path == "notice":
            fmt = "zeek_notice"
        else:
            self.stats.skipped_by_reason[f"path={path[:40]}"] += 1
            return []
        if self.format is None:
            self.format = "zeek_json"
            log.info("reading %s (zeek_json, zeek-kafka tagged)", self.where)
        item = parse_line(self._parser(fmt), offset, orjson.dumps(inner), self.stats)
        return [item] if item is not None else []


def _set_filter(parser: Any, dports: set[int] | None) -> None:
    set_filter = getattr(parser, "set_dport_filter", None)
    if set_filter is not None:
        set_filter(dports)


def _brief(exc: ZeekNDMError) -> str:
    text = exc.message if hasattr(exc, "message") else str(exc)
    return text[:120]
