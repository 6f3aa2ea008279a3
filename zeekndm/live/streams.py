"""Per-file parsing in live mode: a parser per followed file (or socket), found from the
file's content the way `replay` finds it, fed line by line, with rate-limited bad-line
accounting.

A file resumed in the middle (after a restart) gets its format from its first lines and
its Zeek TSV parser the header block in force at the commit (a later block of a
concatenated log), which the registry keeps. A line that breaks a later stage is one bad
line, counted and logged; it never stops the service.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zeekndm.enrich import Observer
from zeekndm.errors import ZeekNDMError
from zeekndm.live.registry import HEADER_MAX_LINES, SavedHeader, Totals
from zeekndm.readers import (
    ReadStats,
    make_parser,
    parse_chunk,
    parse_line,
    sensor_type,
    sniff_format,
    sniff_head,
)
from zeekndm.readers.base import LineParser

log = logging.getLogger(__name__)

BAD_LINE_LOGS_PER_MINUTE = 10
"""Per input file: more malformed lines than this in a minute are counted, not logged."""


class LiveReadStats(ReadStats):
    """ReadStats whose bad-line log is rate-limited, for files that grow for months.

    `on_bad(path, reason)` hears of every bad line, also of one counted long after its
    line was fed: the event clock rejects a held record when later records, maybe of
    another file, refute its time."""

    def __init__(
        self,
        path: str,
        clock: Callable[[], float],
        on_bad: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(path)
        self._clock = clock
        self._on_bad = on_bad
        self._window_start = float("-inf")
        self._logged = 0
        self.suppressed = 0

    def add_bad(self, lineno: int, reason: str, detail: str = "") -> None:
        super().add_bad(lineno, reason, detail)
        if self._on_bad is not None:
            self._on_bad(self.path, reason)

    def _report(self, lineno: int, reason: str, detail: str) -> None:
        now = self._clock()
        if now - self._window_start >= 60.0:
            if self.suppressed:
                log.warning(
                    "%s: %d more bad lines in the last minute were not logged",
                    self.path,
                    self.suppressed,
                )
            self._window_start, self._logged, self.suppressed = now, 0, 0
        if self._logged >= BAD_LINE_LOGS_PER_MINUTE:
            self.suppressed += 1
            return
        self._logged += 1
        log.warning("%s:%d: %s%s", self.path, lineno, reason, f" ({detail})" if detail else "")


@dataclass
class Stream:
    """One file being read (or one socket): its parser and counters.

    `header` is the Zeek TSV header block in force at the last line fed: a file can hold
    several blocks (logs concatenated, or appended to after a restart of Zeek), and a
    resume in the middle of a later block must prime the parser with that block, not with
    the file's first one. It is committed with the file's offset.
    """

    parser: LineParser
    stats: LiveReadStats
    observer: Observer
    header: list[bytes] = field(default_factory=list)
    in_header: bool = False

    def note_header(self, line: bytes) -> None:
        """Keep track of the header block a `#` line belongs to."""
        if not self.in_header:
            self.header = []
            self.in_header = True
        if len(self.header) < HEADER_MAX_LINES:
            self.header.append(line)

    def saved_header(self) -> SavedHeader | None:
        return SavedHeader(tuple(self.header), self.in_header) if self.header else None


class Streams:
    """The streams of live mode by key (a follower's file key, or `socket:PATH`)."""

    def __init__(
        self,
        sensor_name: str | None,
        models: Any,
        clock: Callable[[], float],
        forced_format: Callable[[str], str | None],
        saved_headers: dict[str, SavedHeader] | None = None,
        notices: Any = None,
    ) -> None:
        self.sensor_name = sensor_name
        self.models = models
        self.notices = notices
        self._clock = clock
        self._forced_format = forced_format
        self._saved = dict(saved_headers or {})
        self._by_key: dict[str, Stream] = {}
        self._unrecognised: set[str] = set()
        self.closed_records: Counter = Counter()
        self._bad: Counter = Counter()  # (path, reason) -> bad lines, closed files too
        self.bad_lines = 0  # over every stream, whenever counted
        #: Responder ports the enabled models watch: replay's prefilter (None: parse all).
        self.dports: set[int] | None = None

    def set_dports(self, dports: set[int] | None) -> None:
        """The prefilter of every stream, now and to come: lines on other ports are only
        counted (as records, not parsed), exactly as `replay` does."""
        self.dports = dports
        for stream in self._by_key.values():
            _set_filter(stream.parser, dports)

    def remember(self, saved_headers: dict[str, SavedHeader]) -> None:
        """The header blocks committed per file (used when those files are resumed)."""
        self._saved = dict(saved_headers)

    def get(self, key: str) -> Stream | None:
        return self._by_key.get(key)

    def values(self):
        return self._by_key.values()

    def close(self, key: str) -> None:
        stream = self._by_key.pop(key, None)
        self._unrecognised.discard(key)
        if stream is not None:  # its counts stay in the totals by path
            self.closed_records[stream.stats.path] += stream.stats.records

    def records_by_path(self) -> Counter:
        """Records read per file (or socket) path in this run, closed files included."""
        out = Counter(self.closed_records)
        for stream in self._by_key.values():
            out[stream.stats.path] += stream.stats.records
        return out

    def bad_lines_by_path_and_reason(self) -> Counter:
        return Counter(self._bad)

    def _count_bad(self, path: str, reason: str) -> None:
        self._bad[(path, reason)] += 1
        self.bad_lines += 1

    def _stats(self, path: str) -> LiveReadStats:
        return LiveReadStats(path, self._clock, self._count_bad)

    def add_socket(self, path: str) -> Stream:
        stats = self._stats(path)
        stats.format = "suricata_eve"
        stream = Stream(make_parser("suricata_eve"), stats, Observer(self.sensor_name, "suricata"))
        _set_filter(stream.parser, self.dports)
        self._by_key[f"socket:{path}"] = stream
        return stream

    def open(self, key: str, path: str, first_lines: list[bytes], resumed: bool) -> Stream | None:
        """A parser for a file first seen, truncated or resumed mid-file: its format from
        `first_lines` (the file's first lines), and for a resumed Zeek TSV file the header
        block in force at the commit. None when the format is not recognised (logged
        once per file; its lines are counted as bad)."""
        fmt = self._forced_format(path)
        stats = self._stats(path)
        if fmt is None:
            try:
                fmt = sniff_format(sniff_head(first_lines), file=path)
            except ZeekNDMError as exc:
                if key not in self._unrecognised:
                    log.error("%s; its lines are not read", exc)
                    self._unrecognised.add(key)
                self._by_key.pop(key, None)
                return None
        parser = make_parser(fmt, models=self.models, notices=self.notices)
        _set_filter(parser, self.dports)
        stream = Stream(parser, stats, Observer(self.sensor_name, sensor_type(fmt)))
        if resumed:
            saved = self._saved.pop(key, None)
            if saved is not None:
                header, still_open = list(saved.lines), saved.open
            else:
                header, still_open = [], False
                for line in first_lines:
                    if line.startswith(b"#"):
                        header.append(line)
                    elif line.strip():
                        break
            for line in header:
                stream.note_header(line)
                parse_line(parser, 0, line, stats)
            stream.in_header = still_open
        stats.format = fmt
        self._by_key[key] = stream
        if not resumed:
            log.info("reading %s (%s)", path, fmt)
        return stream

    def feed(
        self,
        stream: Stream,
        lines: list[tuple[int, bytes]],
        pipeline: Any,
        totals: Totals,
        block: bytes | None = None,
    ) -> int:
        """Parse and detect; returns the number of records (lines on unwatched ports
        included: they are records, only not parsed, as replay counts them).
        `totals.bad_lines` counts every bad line found meanwhile, in any stream (a held
        record of another file that these records refute is one).

        The lines go through `parse_chunk`: the compiled core's block scan when it is
        built, replay's prefilter in any case. `block`, when given, is the same lines as
        one bytes object (`b"\n".join(lines) + b"\n"`, as the follower read them)."""
        pipeline.observer = stream.observer
        stats = stream.stats
        parser = stream.parser
        records = 0
        bad_before = self.bad_lines
        filtered_before = getattr(parser, "filtered", 0)
        if block is not None and block.count(b"\n") != len(lines):
            block = None  # not these lines' bytes
        if block is not None:
            has_header = block[:1] == b"#" or b"\n#" in block
        else:
            has_header = any(line[:1] == b"#" for _, line in lines)
        if stream.in_header or has_header:
            for _, line in lines:
                if line[:1] == b"#":
                    stream.note_header(line)
                elif stream.in_header and line.strip():
                    stream.in_header = False
        push = pipeline.push
        for lineno, item in parse_chunk(parser, lines, stats, block):
            try:
                push(item, stats, lineno)
            except Exception as exc:  # noqa: BLE001 - one line must never stop the service
                # A record that breaks a later stage (a bug, or a value nobody validated):
                # it is one bad line, counted and logged, and reading goes on.
                stats.add_bad(lineno, "record not processed", f"{type(exc).__name__}: {exc}")
                log.debug("%s:%d: record not processed", stats.path, lineno, exc_info=True)
                continue
            records += 1
        records += getattr(parser, "filtered", 0) - filtered_before
        stats.records += records
        totals.records += records
        totals.bad_lines += self.bad_lines - bad_before
        return records

    def set_models(self, models: Any, notices: Any = None) -> None:
        """A reloaded config: parsers that build detections (notices) get the new models
        and notice mappings (None keeps the ones in use)."""
        self.models = models
        if notices is not None:
            self.notices = notices
        for stream in self._by_key.values():
            set_models = getattr(stream.parser, "set_models", None)
            if set_models is not None:
                set_models(models, notices)

    def saved_headers(self, keys: set[str]) -> dict[str, SavedHeader]:
        """The header block in force per file among `keys` (files still followed)."""
        out = {k: h for k, h in self._saved.items() if k in keys}
        for key, stream in self._by_key.items():
            saved = stream.saved_header()
            if key in keys and saved is not None:
                out[key] = saved
        return out


def forced_formats(specs: list[Any]) -> Callable[[str], str | None]:
    """path -> the `format:` an input forces on it (None: detect from the content)."""

    def forced(path: str) -> str | None:
        real = os.path.realpath(path)
        for spec in specs:
            if spec.format is None or spec.is_socket:
                continue
            base = os.path.realpath(spec.path)
            if real == base or os.path.dirname(real) == base:
                return spec.format
        return None

    return forced


def _set_filter(parser: Any, dports: set[int] | None) -> None:
    set_filter = getattr(parser, "set_dport_filter", None)
    if set_filter is not None:
        set_filter(dports)
