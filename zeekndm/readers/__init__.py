"""Input readers: turn Zeek and Suricata log files into `Flow` records.

One registry (`PARSERS`) maps a format name to its line-parser class; `read_flows` opens
a file (plain or gzip, decided by content), sniffs its format from the first lines, and
parses every line. A malformed line is counted in `ReadStats` per reason and reading
goes on; only a file that cannot be read at all raises `ReaderError`.

Sniffing design: a sniffer is `sniff(head: bytes) -> bool`, where `head` is the first
few non-blank lines of the file (up to `SNIFF_LINES`, joined with b"\\n", each without
its newline). Sniffers registered with `register_parser` are asked first, most recent
first, then the built-in ones; so a later parser for a narrower case (a Zeek TSV whose
`#path` is `notice`, a JSON line with a `note` key) wins over the generic one it
resembles. A sniffer should return False, not raise, on input it does not understand.

Lines are read with a cap (`iter_lines`): a line longer than `max_line_bytes` is
discarded in chunks and reported as "line too long", so a corrupt file cannot make the
reader hold gigabytes in memory.

Every line ends up in exactly one count of `ReadStats`: a record, a bad line, a skipped
line, a line filtered by port, or an ignored one (header, comment, blank). A gzip file
that is truncated or damaged yields every record decoded before the damage; the
unreadable tail is reported with its byte offset in `ReadStats.unreadable`.
"""

from __future__ import annotations

import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from zeekndm import core
from zeekndm.errors import ReaderError
from zeekndm.flow import Flow
from zeekndm.readers.base import BOM, AddressCache, BadLine, LineParser, Skip
from zeekndm.readers.gzipstream import MAGIC as _GZIP_MAGIC
from zeekndm.readers.gzipstream import GzipStream
from zeekndm.readers.suricata_eve import SuricataEveParser
from zeekndm.readers.zeek_json import ZeekJSONParser
from zeekndm.readers.zeek_notice import ZeekNoticeParser
from zeekndm.readers.zeek_notice import sniff as _sniff_zeek_notice
from zeekndm.readers.zeek_tsv import ZeekTSVParser

__all__ = [
    "BadLine",
    "EmptyInput",
    "LINE_TOO_LONG",
    "LineParser",
    "PARSERS",
    "ReadStats",
    "Skip",
    "AddressCache",
    "find_logs",
    "iter_lines",
    "make_parser",
    "sniff_head",
    "parse_line",
    "parse_chunk",
    "open_binary",
    "read_flows",
    "register_parser",
    "sensor_type",
    "sniff_format",
]

log = logging.getLogger(__name__)

#: How many non-blank lines `read_flows` hands to the sniffers.
SNIFF_LINES = 10
#: How many bad lines per file are kept in `ReadStats.samples` and logged.
SAMPLE_CAP = 5
DEFAULT_MAX_LINE_BYTES = 1 << 20
_DISCARD_CHUNK = 1 << 16
_BLOCK = 1 << 20


class _TooLongLine(bytes):
    """Type of the `LINE_TOO_LONG` marker: an empty bytes object compared by identity."""


#: Yielded by `iter_lines` in place of a line longer than the cap (test with `is`).
LINE_TOO_LONG: bytes = _TooLongLine(b"")


@dataclass
class ReadStats:
    """What happened while reading one input file; mutable counters."""

    path: str
    format: str | None = None
    lines: int = 0
    records: int = 0
    bad_lines: int = 0
    bad_by_reason: Counter[str] = field(default_factory=Counter)
    skipped_by_reason: Counter[str] = field(default_factory=Counter)
    samples: list[tuple[int, str]] = field(default_factory=list)
    #: Lines not parsed because their destination port is not watched (`dports=`).
    filtered: int = 0
    #: Header, comment and blank lines.
    ignored: int = 0
    #: Why the rest of the file could not be read (a damaged gzip stream), with where.
    unreadable: str | None = None
    #: Set when the whole file was passed over: "not a connection log (path=dns)".
    passed_over: str | None = None
    #: While `Pipeline.push_many` consumes this file's records straight from
    #: `read_flows`: its `FusedScan`, which the compiled TSV block path yields instead of
    #: the records it can observe natively (see `_native_block`).
    fuse: Any = field(default=None, repr=False, compare=False)

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    def add_bad(self, lineno: int, reason: str, detail: str = "") -> None:
        """Count one bad line and report it (`_report`)."""
        self.bad_lines += 1
        self.bad_by_reason[reason] += 1
        self._report(lineno, reason, detail)

    def _report(self, lineno: int, reason: str, detail: str) -> None:
        """Keep and log the first `SAMPLE_CAP` bad lines as `file:line: reason`."""
        if len(self.samples) < SAMPLE_CAP:
            self.samples.append((lineno, reason))
            if detail:
                log.warning("%s:%d: %s (%s)", self.path, lineno, reason, detail)
            else:
                log.warning("%s:%d: %s", self.path, lineno, reason)


class FusedScan:
    """One step of the fused block path (compiled core, Zeek TSV, replay): the reader
    yields it with the scanner and where to scan; its consumer (`Pipeline.push_many`)
    runs `scanner.scan_observe` with the event clock and the detector's dispatch and
    puts what it returned in `result` before asking for the next record."""

    __slots__ = ("scanner", "block", "at", "max_line_bytes", "result")

    def __init__(self) -> None:
        self.scanner: Any = None
        self.block = b""
        self.at = 0
        self.max_line_bytes = 0
        self.result: Any = None


class EmptyInput(ReaderError):
    """The input holds no log lines at all (replay warns and goes on)."""


# -- registry ----------------------------------------------------------------------------
Sniffer = Callable[[bytes], bool]

PARSERS: dict[str, type] = {}
_REGISTERED_SNIFFERS: list[tuple[str, Sniffer]] = []  # most recent first; asked first
_BUILTIN_SNIFFERS: list[tuple[str, Sniffer]] = []


def register_parser(name: str, cls: type, sniff: Callable[[bytes], bool]) -> None:
    """Add (or replace) a line parser and the sniffer that recognises its files.

    `cls()` must build a `LineParser`; `sniff(head)` gets the first non-blank lines of a
    file (see the module docstring) and is consulted before every built-in sniffer.
    """
    PARSERS[name] = cls
    _REGISTERED_SNIFFERS[:] = [(n, s) for n, s in _REGISTERED_SNIFFERS if n != name]
    _REGISTERED_SNIFFERS.insert(0, (name, sniff))


def _first_json_object(head: bytes) -> dict | None:
    for line in head.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"{"):
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def _sniff_zeek_tsv(head: bytes) -> bool:
    return head.lstrip().startswith(b"#")


def _sniff_suricata_eve(head: bytes) -> bool:
    obj = _first_json_object(head) if head.lstrip().startswith(b"{") else None
    return obj is not None and "event_type" in obj


_ZEEK_JSON_KEYS = ("id.orig_h", "id_orig_h", "id", "uid", "ts")


def _sniff_zeek_json(head: bytes) -> bool:
    obj = _first_json_object(head) if head.lstrip().startswith(b"{") else None
    return obj is not None and any(k in obj for k in _ZEEK_JSON_KEYS)


for _name, _cls, _sniff in (
    # notice.log first: it is a narrower case of Zeek TSV / Zeek JSON
    ("zeek_notice", ZeekNoticeParser, _sniff_zeek_notice),
    ("zeek_tsv", ZeekTSVParser, _sniff_zeek_tsv),
    ("suricata_eve", SuricataEveParser, _sniff_suricata_eve),
    ("zeek_json", ZeekJSONParser, _sniff_zeek_json),
):
    PARSERS[_name] = _cls
    _BUILTIN_SNIFFERS.append((_name, _sniff))


def sniff_format(head: bytes, *, file: str | None = None) -> str:
    """The format name of a file from its first non-blank line(s).

    `head` may be a single line or the first few lines joined with b"\\n". Raises
    ReaderError saying what was seen when no sniffer recognises it.
    """
    for name, sniff in _REGISTERED_SNIFFERS:
        try:
            if sniff(head):
                return name
        except Exception as exc:  # a plug-in's bug must not hide the built-in formats
            log.warning("sniffer for %s failed on %s: %s", name, file or "input", exc)
    for name, sniff in _BUILTIN_SNIFFERS:
        if sniff(head):
            return name
    if head.startswith(BOM):
        return sniff_format(head[len(BOM) :], file=file)
    start = head.lstrip()
    if not start:
        raise EmptyInput("empty: no log lines to read", file=file)
    if start.startswith(b"["):
        raise ReaderError(
            "a JSON array, not one eve event per line (NDJSON); "
            "convert it first, e.g. `jq -c '.[]' file > file.ndjson`",
            file=file,
        )
    seen = start.split(b"\n", 1)[0][:40].decode("utf-8", "replace")
    if start.startswith(b"{"):
        raise ReaderError(
            f"JSON, but neither a Zeek conn record nor a Suricata eve event: {seen!r}",
            file=file,
        )
    raise ReaderError(
        f"unrecognised log format (expected a Zeek TSV header, Zeek JSON or Suricata eve); "
        f"first line starts {seen!r}",
        file=file,
    )


def sensor_type(fmt: str | None) -> str | None:
    """Which sensor writes a format: "suricata" or "zeek" (None when not known yet)."""
    if fmt is None:
        return None
    return "suricata" if fmt.startswith("suricata") else "zeek"


def sniff_head(lines: Iterable[bytes]) -> bytes:
    """What the sniffers get: the first `SNIFF_LINES` non-blank lines, joined with b"\\n".

    `replay` and live mode both build the head of a file here, so a file is recognised
    the same way whichever reads it."""
    nonblank: list[bytes] = []
    for line in lines:
        if line is not LINE_TOO_LONG and line.strip():
            nonblank.append(line)
            if len(nonblank) >= SNIFF_LINES:
                break
    return b"\n".join(nonblank)


def make_parser(
    fmt: str,
    *,
    models: Mapping[str, Any] | None = None,
    dports: Collection[int] | None = None,
    notices: Mapping[str, Any] | None = None,
) -> LineParser:
    """A fresh parser for `fmt`; an unknown name raises ReaderError listing the valid ones.

    `models` (the configured ones, by name) and `notices` (the configured notice
    mappings, by name) reach parsers that turn records into detections themselves (Zeek
    notices); `dports` the parsers that can pass over lines on ports no model watches
    (see `read_flows`)."""
    cls = PARSERS.get(fmt)
    if cls is None:
        raise ReaderError(f"unknown input format {fmt!r}; valid: {', '.join(sorted(PARSERS))}")
    parser = cls()
    if dports is not None:
        set_filter = getattr(parser, "set_dport_filter", None)
        if set_filter is not None:
            set_filter(dports)
    if models is not None or notices is not None:
        set_models = getattr(parser, "set_models", None)
        if set_models is not None:
            set_models(models, notices)
    return parser


# -- files and lines ---------------------------------------------------------------------
class _Prepended(io.RawIOBase):
    """`head` followed by the rest of `raw`: for a pipe whose first bytes were read to
    look for the gzip magic (a pipe cannot seek back)."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        super().__init__()
        self._head = head
        self._raw = raw

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    def readinto(self, b) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)


def open_binary(path: str | os.PathLike | None, stream: BinaryIO | None = None) -> BinaryIO:
    """A buffered binary reader over `path` (or over `stream`, e.g. standard input),
    decompressing when the content starts with the gzip magic.

    The file is opened once and the magic is peeked at, never read and re-opened, so a
    pipe, a FIFO or `/dev/stdin` loses none of its first bytes to the probe. A gzip
    stream is decoded by `GzipStream` (which keeps everything before damage); its
    `error` is reachable as the returned reader's `gzip` attribute."""
    if stream is None:
        assert path is not None
        stream = open(path, "rb", buffering=1 << 17)
    elif not isinstance(stream, io.BufferedReader):
        stream = io.BufferedReader(_Prepended(b"", stream), buffer_size=1 << 17)  # type: ignore[arg-type]
    magic = stream.peek(2)[:2]
    if len(magic) == 1 and magic == _GZIP_MAGIC[:1]:  # a pipe delivered a single byte
        magic = stream.read(2)
        stream = io.BufferedReader(_Prepended(magic, stream), buffer_size=1 << 17)  # type: ignore[arg-type]
    if magic != _GZIP_MAGIC:
        return stream
    gz = GzipStream(stream)
    # A BufferedReader on top reads large decompressed blocks and splits lines in C.
    reader = io.BufferedReader(gz, buffer_size=1 << 17)  # type: ignore[arg-type]
    reader.gzip = gz  # type: ignore[attr-defined]
    return reader


def iter_lines(
    fileobj: BinaryIO, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line without its newline) for each line of `fileobj`.

    A line longer than `max_line_bytes` is yielded as `LINE_TOO_LONG` (an empty bytes
    object, test it with `is`); the rest of it is read in chunks and thrown away, so
    memory stays bounded by the cap whatever the input. A last line without a newline
    is yielded like any other.
    """
    readline = fileobj.readline
    limit = max_line_bytes + 1
    lineno = 0
    while True:
        line = readline(limit)
        if not line:
            return
        lineno += 1
        if line[-1] != 10 and len(line) >= limit:
            _discard_rest_of_line(readline)
            yield lineno, LINE_TOO_LONG
            continue
        yield lineno, line.rstrip(b"\r\n")


def _discard_rest_of_line(readline: Callable[[int], bytes]) -> None:
    """Read and drop the rest of an over-long line in bounded chunks."""
    while True:
        rest = readline(_DISCARD_CHUNK)
        if not rest or rest[-1] == 10:
            return


def _head(lines: Iterator[tuple[int, bytes]]) -> tuple[list[tuple[int, bytes]], bytes]:
    """Read ahead the first `SNIFF_LINES` non-blank lines; return (all lines read, head).

    The rest of the file is then read straight from the file object by `_parse_rest`
    (the `iter_lines` generator is only used for this read-ahead).
    """
    buffered: list[tuple[int, bytes]] = []
    nonblank = 0
    for item in lines:
        buffered.append(item)
        line = item[1]
        if line is not LINE_TOO_LONG and line.strip():
            nonblank += 1
            if nonblank >= SNIFF_LINES:
                break
    return buffered, sniff_head(line for _, line in buffered)


def read_flows(
    path: str | os.PathLike,
    stats: ReadStats | None = None,
    fmt: str | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    dports: Collection[int] | None = None,
    models: Mapping[str, Any] | None = None,
    stream: BinaryIO | None = None,
    notices: Mapping[str, Any] | None = None,
) -> Iterator[Flow]:
    """Every connection record of the file at `path`, in file order.

    Opens the file (gzip or plain) and sniffs its format at call time, so a missing,
    unreadable or unrecognisable file raises ReaderError (naming the file) right away,
    and one without a single log line raises EmptyInput (a ReaderError); the records
    then come lazily. Bad lines never raise: they are counted in `stats` (a fresh
    ReadStats if none is given) and the first few are logged at WARNING. A Zeek log that
    is not a connection log (dns.log, http.log, ...) yields nothing and says so in
    `stats.passed_over`.

    `stream` (optional) is read instead of opening `path` (standard input); `path` then
    only names it in messages.

    `dports` (optional) is the set of responder ports anything downstream cares about,
    e.g. every port of the enabled models. Lines for other ports are then dropped before
    full parsing, counted in `stats.filtered`, and not validated. That makes a replay of
    a busy sensor's log several times faster, at a price the caller must accept: time
    seen downstream only advances with records on watched ports.

    `models` (name -> Model, the configured ones) and `notices` (name -> NoticeMapping)
    reach parsers that turn records into detections themselves (Zeek notices), so user
    overrides apply to them too.
    """
    name = str(path)
    if stats is None:
        stats = ReadStats(name)
    if fmt is not None and fmt not in PARSERS:
        make_parser(fmt)  # raises with the list of valid names
    try:
        fileobj = open_binary(path, stream)
    except FileNotFoundError:
        raise ReaderError("no such file", file=name) from None
    except IsADirectoryError:
        raise ReaderError("is a directory, not a log file", file=name) from None
    except OSError as exc:
        raise ReaderError(f"cannot open: {exc.strerror or exc}", file=name) from None
    try:
        lines = iter_lines(fileobj, max_line_bytes)
        buffered, head = _head(lines)
        if buffered and buffered[0][1].startswith(BOM):  # a UTF-8 byte order mark
            buffered[0] = (buffered[0][0], buffered[0][1][len(BOM) :])
            head = head[len(BOM) :]
        if fmt is None:
            try:
                fmt = sniff_format(head, file=name)
            except EmptyInput:
                gz = getattr(fileobj, "gzip", None)
                if gz is not None and gz.error:  # a damaged gzip file, not an empty one
                    raise ReaderError(_gzip_damage(gz), file=name) from None
                raise
        parser = make_parser(fmt, models=models, dports=dports, notices=notices)
    except ReaderError:
        fileobj.close()
        raise
    except OSError as exc:
        fileobj.close()
        raise ReaderError(f"cannot read: {exc.strerror or exc}", file=name) from None
    stats.format = fmt
    other = not_a_connection_log(fmt, head)
    if other is not None:
        fileobj.close()
        stats.passed_over = f"not a connection log ({other})"
        log.warning("%s: %s; passed over", name, stats.passed_over)
        return iter(())
    return _read(fileobj, parser, buffered, stats, max_line_bytes)


def not_a_connection_log(fmt: str, head: bytes) -> str | None:
    """What a Zeek log is when its head shows it is not conn.log ("path=dns"), else None.

    TSV: the `#path` of the first header block. JSON: the first record's `_path`, or,
    without one, a record lacking `conn_state` but holding fields of another log."""
    if fmt == "zeek_tsv":
        for line in head.split(b"\n"):
            line = line.strip()
            if not line.startswith(b"#"):
                return None
            if line.startswith(b"#path"):
                value = line[5:].strip().decode("utf-8", "replace")
                return None if value in ("conn", "") else f"path={value[:40]}"
        return None
    if fmt == "zeek_json":
        from zeekndm.readers.zeek_json import OTHER_LOG_FIELDS

        obj = _first_json_object(head)
        if obj is None:
            return None
        path = obj.get("_path")
        if path is not None:
            return None if path == "conn" else f"path={str(path)[:40]}"
        if "conn_state" not in obj:
            fields = [k for k in OTHER_LOG_FIELDS if k in obj]
            if fields:
                return f"no conn_state, has {fields[0]}"
    return None


def find_logs(directory: str | os.PathLike) -> list[Path]:
    """The logs `replay DIR` reads: regular files in `directory` (not below it) whose name
    starts with `conn`, `eve` or `notice`, plain or gzip, oldest first by modification
    time (rotated logs before the current one), ties by name. Hidden files are left out."""
    found = []
    for entry in os.scandir(directory):
        name = entry.name
        if name.startswith(LOG_PREFIXES) and entry.is_file():
            found.append((entry.stat().st_mtime_ns, name, Path(entry.path)))
    return [p for _, _, p in sorted(found)]


#: Name prefixes of the files `find_logs` picks from a directory.
LOG_PREFIXES = ("conn", "eve", "notice")


def _gzip_damage(gz: GzipStream) -> str:
    return f"gzip: {gz.error} at byte {gz.error_offset:,} of the compressed file"


def _read(
    fileobj: BinaryIO,
    parser: LineParser,
    buffered: list[tuple[int, bytes]],
    stats: ReadStats,
    max_line_bytes: int,
) -> Iterator[Flow]:
    with fileobj:
        try:
            yield from _parse_lines(parser, buffered, stats)
            yield from _parse_rest(parser, fileobj, stats, max_line_bytes)
        except OSError as exc:
            # An I/O error under the file (EIO, a vanished network share): the records
            # read so far stand; the rest is unreadable.
            stats.unreadable = f"read error after line {stats.lines:,}: {exc.strerror or exc}"
        gz = getattr(fileobj, "gzip", None)
        if gz is not None and gz.error and stats.unreadable is None:
            stats.unreadable = f"{_gzip_damage(gz)} (after line {stats.lines:,})"
    if stats.unreadable:
        log.warning(
            "%s: the rest of the file is unreadable: %s; the %s record%s before it were read",
            stats.path,
            stats.unreadable,
            f"{stats.records:,}",
            "" if stats.records == 1 else "s",
        )
    if stats.bad_lines > SAMPLE_CAP:
        log.warning(
            "%s: %d bad lines in total (%s)",
            stats.path,
            stats.bad_lines,
            ", ".join(f"{r}: {n}" for r, n in stats.bad_by_reason.most_common()),
        )


def parse_line(parser: LineParser, lineno: int, line: bytes, stats: ReadStats) -> Flow | None:
    """Parse one line, turning every per-line failure into a count in `stats` (live mode
    feeds lines one at a time; replay uses this on its slow path)."""
    try:
        return parser.parse(line)
    except BadLine as exc:
        stats.add_bad(lineno, exc.reason, exc.detail)
    except Skip as exc:
        stats.skipped_by_reason[exc.reason] += 1
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
        # A value of an unexpected type deep in a JSON record: still one bad line.
        stats.add_bad(lineno, "malformed record", f"{type(exc).__name__}: {exc}")
    return None


def parse_chunk(
    parser: LineParser, lines: list[tuple[int, bytes]], stats: Any, block: bytes | None = None
) -> Iterator[tuple[int, Any]]:
    """(line number, record) of lines already split, as live mode gets them from its
    follower: through the compiled scanner when it is there (the chunk joined into one
    block, the same prefilter and parse as replay's blocks), else `parse_line` per line.
    Filtered lines are counted in the parser's `filtered`; every other line's outcome
    in `stats` as `parse_line` counts it. `block`, when the caller has it, is the chunk
    already joined (exactly `b"\n".join(lines) + b"\n"`: the caller vouches for it)."""
    native = core.native
    if native is None or len(lines) < 16 or not hasattr(parser, "native_scanner"):
        for lineno, line in lines:
            item = parse_line(parser, lineno, line, stats)
            if item is not None:
                yield lineno, item
        return
    if block is None:
        block = b"\n".join([line for _, line in lines]) + b"\n"
    skipped = stats.skipped_by_reason
    flow_type = Flow
    at = first = 0
    end = len(block)
    while at < end:
        scanner = parser.native_scanner(native)  # type: ignore[attr-defined]
        if scanner is None:
            for lineno, line in lines[first:]:
                item = parse_line(parser, lineno, line, stats)
                if item is not None:
                    yield lineno, item
            return
        items, indexes, consumed, filtered, stop, skips = scanner.scan(block, at, end + 1)
        parser.filtered += filtered  # type: ignore[attr-defined]
        for value, count in skips:
            skipped[parser._skip_reason(value)] += count  # type: ignore[attr-defined]
        for item, index in zip(items, indexes):
            lineno, line = lines[first + index]
            if type(item) is not flow_type:
                item = parse_line(parser, lineno, line, stats)
                if item is None:
                    continue
            yield lineno, item
        first += consumed
        at = stop
        if at < end:  # a line that may be a header: the Python parser reads it
            lineno, line = lines[first]
            item = parse_line(parser, lineno, line, stats)
            if item is not None:
                yield lineno, item
            first += 1
            at = block.index(b"\n", at) + 1


def _parse_lines(
    parser: LineParser, lines: Iterable[tuple[int, bytes]], stats: ReadStats
) -> Iterator[Flow]:
    """Parse already-read lines (the sniffing read-ahead)."""
    for lineno, line in lines:
        stats.lines = lineno
        if line is LINE_TOO_LONG:
            stats.add_bad(lineno, "line too long")
            continue
        filtered = getattr(parser, "filtered", 0)
        accounted = stats.bad_lines + stats.skipped
        record = parse_line(parser, lineno, line, stats)
        if record is not None:
            stats.records += 1
            yield record
        elif (
            stats.bad_lines + stats.skipped == accounted
            and getattr(parser, "filtered", 0) == filtered
        ):
            stats.ignored += 1


def _parse_rest(
    parser: LineParser, fileobj: BinaryIO, stats: ReadStats, max_line_bytes: int
) -> Iterator[Flow]:
    """The rest of the file after the sniffing read-ahead: a block at a time through the
    compiled core when it is there; else a block at a time when the parser can pick the
    lines worth parsing out of a block; else line by line."""
    native = core.native
    if native is not None and hasattr(parser, "native_scanner"):
        return _parse_blocks(parser, fileobj, stats, max_line_bytes, native)
    if getattr(parser, "_dports", None) is not None and hasattr(parser, "pick_lines"):
        return _parse_blocks(parser, fileobj, stats, max_line_bytes)
    return _parse_line_by_line(parser, fileobj, stats, max_line_bytes)


def _parse_blocks(
    parser: LineParser,
    fileobj: BinaryIO,
    stats: ReadStats,
    max_line_bytes: int,
    native: Any = None,
) -> Iterator[Flow]:
    """Read 1 MiB blocks of whole lines; parse only the lines worth parsing.

    With the compiled core (`native`), its scanner walks each block: see
    `_native_block`. Without it, `pick_lines(block)` returns the sorted start offsets of
    the lines that may concern a watched port (after checking, in C-speed scans over the
    whole block, that every other line is well-formed), or None when the block needs the
    careful path (a header inside, a line of the wrong shape or too long): that block
    is then read line by line. The lines it passes over are counted as filtered,
    exactly as the per-line filter would.
    """
    read = fileobj.read
    pending = b""
    try:
        while True:
            data = read(_BLOCK)
            if not data:
                break
            if pending:
                data = pending + data
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                if len(data) <= max_line_bytes:
                    pending = data
                    continue
                stats.lines += 1
                stats.add_bad(stats.lines, "line too long")
                pending = _skip_to_next_line(read)
                continue
            block, pending = data[:cut], data[cut:]
            if native is not None:
                yield from _native_block(parser, block, stats, max_line_bytes, native)
            else:
                yield from _picked_block(parser, block, stats, max_line_bytes)
        if pending:
            yield from _parse_line_by_line(parser, io.BytesIO(pending), stats, max_line_bytes)
    finally:
        stats.filtered = getattr(parser, "filtered", 0)


def _picked_block(
    parser: LineParser, block: bytes, stats: ReadStats, max_line_bytes: int
) -> Iterator[Flow]:
    """One block through `pick_lines` (see `_parse_blocks`)."""
    if len(block) > max_line_bytes and max(map(len, block.split(b"\n"))) > max_line_bytes:
        starts = None  # a line too long: the careful path reports it as such
    else:
        starts = parser.pick_lines(block)  # type: ignore[attr-defined]
    if starts is None:
        yield from _parse_line_by_line(parser, io.BytesIO(block), stats, max_line_bytes)
        return
    parse = parser.parse
    skipped = stats.skipped_by_reason
    base = stats.lines
    at = 0  # stats.lines is the line of each record yielded: counted incrementally
    at_line = base
    for start in starts:
        line = block[start : block.index(b"\n", start)].rstrip(b"\r")
        try:
            record = parse(line)
        except Skip as exc:
            skipped[exc.reason] += 1
            continue
        except BadLine as exc:  # the line number is only worked out when needed
            stats.add_bad(base + 1 + block.count(b"\n", 0, start), exc.reason, exc.detail)
            continue
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
            stats.add_bad(
                base + 1 + block.count(b"\n", 0, start),
                "malformed record",
                f"{type(exc).__name__}: {exc}",
            )
            continue
        if record is not None:
            stats.records += 1
            at_line += block.count(b"\n", at, start)
            at = start
            stats.lines = at_line + 1
            yield record
        else:
            stats.ignored += 1
    nlines = block.count(b"\n")
    parser.filtered += nlines - len(starts)  # type: ignore[attr-defined]
    stats.lines = base + nlines


def _native_block(
    parser: Any, block: bytes, stats: ReadStats, max_line_bytes: int, native: Any
) -> Iterator[Flow]:
    """One block through the compiled scanner.

    The scanner returns, in file order, the records it parsed and the offsets of the
    lines it left to the Python parser (anything not plainly well-formed; a negative
    offset marks a line longer than `max_line_bytes`), with each one's line index in the
    block; the lines it filtered (and, for eve, skipped per event type) are only counted.
    It stops at a line that may be a Zeek header, which the Python parser then reads
    (the header may change the columns), and goes on after it. The lines it hands back
    have been through the parser's own prefilter already: `parse_scanned`, when the
    parser has it, parses them without running that prefilter a second time.
    """
    parse = getattr(parser, "parse_scanned", parser.parse)
    skipped = stats.skipped_by_reason
    skip_reason = getattr(parser, "_skip_reason", None)
    at = 0
    end = len(block)
    flow_type = Flow
    while at < end:
        fuse = stats.fuse
        scanner = parser.native_scanner(native)
        if scanner is None:  # no usable header yet: the Python parser reads the rest
            yield from _parse_line_by_line(parser, io.BytesIO(block[at:]), stats, max_line_bytes)
            return
        fused = fuse is not None and hasattr(scanner, "scan_observe")
        if fused:
            # the fused path: the consumer observes the plain records (see FusedScan);
            # at most one item comes back, for the steps below
            fuse.scanner, fuse.block, fuse.at, fuse.max_line_bytes = (
                scanner,
                block,
                at,
                max_line_bytes,
            )
            fuse.result = None
            yield fuse
            result, fuse.result, fuse.block, fuse.scanner = fuse.result, None, b"", None
            if result is None:  # not run (its consumer stopped): scan again, unfused
                continue
            item, index, consumed, filtered, stop, records, _ = result
            stats.records += records
            items = () if item is None else (item,)
            lines: Any = (index,)
            skips: Any = ()
        else:
            items, lines, consumed, filtered, stop, skips = scanner.scan(block, at, max_line_bytes)
        base = stats.lines
        parser.filtered += filtered
        for value, count in skips:
            skipped[skip_reason(value)] += count
        for item, index in zip(items, lines):
            if type(item) is not flow_type:
                lineno = base + index + 1
                if item < 0:
                    stats.add_bad(lineno, "line too long")
                    continue
                line = block[item : block.index(b"\n", item)].rstrip(b"\r")
                before = parser.filtered
                try:
                    item = parse(line)
                except Skip as exc:
                    skipped[exc.reason] += 1
                    continue
                except BadLine as exc:
                    stats.add_bad(lineno, exc.reason, exc.detail)
                    continue
                except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
                    stats.add_bad(lineno, "malformed record", f"{type(exc).__name__}: {exc}")
                    continue
                if item is None:
                    if parser.filtered == before:
                        stats.ignored += 1
                    continue
            stats.records += 1
            stats.lines = base + index + 1
            yield item
        stats.lines = base + consumed
        at = stop
        if at < end and not (fused and items):
            # a line that may be a header (the scan stopped before it): the Python
            # parser reads it
            nl = block.index(b"\n", at)
            yield from _parse_line_by_line(
                parser, io.BytesIO(block[at : nl + 1]), stats, max_line_bytes
            )
            at = nl + 1


def _skip_to_next_line(read: Callable[[int], bytes]) -> bytes:
    """Drop the rest of an over-long line; return what follows its newline."""
    while True:
        chunk = read(_BLOCK)
        if not chunk:
            return b""
        at = chunk.find(b"\n")
        if at >= 0:
            return chunk[at + 1 :]


def _parse_line_by_line(
    parser: LineParser, fileobj: BinaryIO, stats: ReadStats, max_line_bytes: int
) -> Iterator[Flow]:
    """The hot loop: `iter_lines` and the parse call inlined, counters kept in locals."""
    parse = parser.parse
    skipped = stats.skipped_by_reason
    readline = fileobj.readline
    limit = max_line_bytes + 1
    n_lines = stats.lines
    n_records = stats.records
    n_none = 0  # headers, comments, blank lines and port-filtered lines
    filtered_before = getattr(parser, "filtered", 0)
    try:
        while True:
            line = readline(limit)
            if not line:
                break
            n_lines += 1
            if line[-1] != 10 and len(line) >= limit:
                _discard_rest_of_line(readline)
                stats.add_bad(n_lines, "line too long")
                continue
            line = line.rstrip(b"\r\n")
            try:
                record = parse(line)
            except Skip as exc:
                skipped[exc.reason] += 1
                continue
            except BadLine as exc:
                stats.add_bad(n_lines, exc.reason, exc.detail)
                continue
            except (TypeError, ValueError, AttributeError, KeyError, IndexError) as exc:
                stats.add_bad(n_lines, "malformed record", f"{type(exc).__name__}: {exc}")
                continue
            if record is None:
                n_none += 1
                continue
            n_records += 1
            stats.lines = n_lines
            stats.records = n_records
            yield record
    finally:
        stats.lines = n_lines
        stats.records = n_records
        stats.filtered = getattr(parser, "filtered", 0)
        stats.ignored += n_none - (stats.filtered - filtered_before)
