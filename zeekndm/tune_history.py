"""Which history `zeekndm tune` reads, in what order, and the time bounds it keeps.

A history is a list of connection logs: files (Zeek conn.log as TSV or JSON, plain or
gzipped; Suricata eve.json) and directories. A directory is read the way zeekctl lays
out its archive: the logs directly in it (`find_logs`: conn*/eve*, oldest first by
modification time, as `replay DIR`), and then its day directories (`YYYY-MM-DD`,
oldest day first), each day's logs ordered by the start time in their names
(`conn.00:00:00-01:00:00.log.gz`), by modification time when a name carries none. So
`tune /opt/zeek/logs` reads the archive day by day, hour by hour, in time order, as a
replay of the same files in the same order would.

Times for `--since` / `--until` are ISO 8601 dates or date-times (UTC unless an offset
is given) or epoch seconds; a record is kept when `since <= ts < until`. Day
directories and zeekctl hour files entirely outside the bounds are not opened.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from zeekndm.errors import ZeekNDMError

_DAY_DIR = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# zeekctl's archived names: conn.00:00:00-01:00:00.log.gz (some setups use '_' or '-')
_HOURS = re.compile(r"\.(\d{2})[:_-]?(\d{2})[:_-]?(\d{2})-(\d{2})[:_-]?(\d{2})[:_-]?(\d{2})\.")
#: Name prefixes of the logs tune reads from a directory (no notice.log: tune is about
#: connection records).
TUNE_PREFIXES = ("conn", "eve")


@dataclass(frozen=True, slots=True)
class HistoryFile:
    """One log of the history, with the time span its zeekctl name promises (if any)."""

    path: Path
    #: [start, end) from a zeekctl day directory and hour name, else None
    span: tuple[float, float] | None = None


def parse_time(text: str, what: str = "--since") -> float:
    """Epoch seconds of `text`: epoch seconds, an ISO date (`2024-05-01`) or date-time
    (`2024-05-01T13:00`, `2024-05-01 13:00:00+02:00`); UTC unless an offset is given."""
    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ZeekNDMError(
            f"{what} {text!r}: expected epoch seconds or an ISO date/time like "
            "2024-05-01 or 2024-05-01T13:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _day_start(name: str) -> float | None:
    m = _DAY_DIR.match(name)
    if m is None:
        return None
    try:
        day = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=timezone.utc)
    except ValueError:
        return None
    return day.timestamp()


def _hour_span(name: str, day: float) -> tuple[float, float] | None:
    m = _HOURS.search(name)
    if m is None:
        return None
    h1, m1, s1, h2, m2, s2 = (int(x) for x in m.groups())
    start = day + h1 * 3600 + m1 * 60 + s1
    end = day + h2 * 3600 + m2 * 60 + s2
    if end <= start:  # the last file of a day: 23:00:00-00:00:00
        end += 86400
    return start, end


def _logs_in(directory: Path) -> list[os.DirEntry]:
    out = []
    for entry in os.scandir(directory):
        if entry.name.startswith(TUNE_PREFIXES) and entry.is_file():
            out.append(entry)
    return out


def history_files(
    paths: list[str], since: float | None = None, until: float | None = None
) -> list[HistoryFile]:
    """The files of the history in reading order (module docstring). Raises
    ZeekNDMError naming a path that does not exist or a directory with no logs."""
    out: list[HistoryFile] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = _directory(path, since, until)
            if not found:
                raise ZeekNDMError(
                    "directory holds no conn*/eve* logs (nor YYYY-MM-DD day directories with them)",
                    file=name,
                )
            out.extend(found)
        elif path.exists():
            out.append(HistoryFile(path))
        else:
            raise ZeekNDMError("no such file", file=name)
    return out


def _directory(path: Path, since: float | None, until: float | None) -> list[HistoryFile]:
    flat = sorted(_logs_in(path), key=lambda e: (e.stat().st_mtime_ns, e.name))
    days = []
    for entry in os.scandir(path):
        start = _day_start(entry.name)
        if start is not None and entry.is_dir():
            days.append((start, Path(entry.path)))
    out: list[HistoryFile] = []
    for start, day in sorted(days):
        if (until is not None and start >= until) or (since is not None and start + 86400 <= since):
            continue  # the whole day lies outside the bounds
        files = []
        for entry in _logs_in(day):
            span = _hour_span(entry.name, start)
            if span is not None and (
                (until is not None and span[0] >= until) or (since is not None and span[1] <= since)
            ):
                continue
            order = span[0] if span is not None else float("inf")
            files.append((order, entry.stat().st_mtime_ns, entry.name, Path(entry.path), span))
        out.extend(HistoryFile(p, span) for _, _, _, p, span in sorted(files))
    out.extend(HistoryFile(Path(e.path)) for e in flat)
    return out
