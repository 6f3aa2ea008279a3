"""Where reading stands in each followed file: the one definition of a file position and
of the registry's `follow` section.

A position is saved after the lines before it were handled, and a new follower given the
saved state continues exactly there: no line skipped, none repeated. The records are tiny
and typed (Filebeat keeps `{Offset}` per file, Vector `{fingerprint, position}`); every
value read back is checked, because a registry is a file anyone can edit: a wrong type in
one entry drops that entry with a warning, never the start-up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

STATE_VERSION = 1
FINGERPRINT_BYTES = 1024
"""How many leading bytes identify a file's content (hashed with sha256)."""

_MAX_OFFSET = 1 << 62  # beyond any file; keeps os.pread away from an OverflowError


def count(value: object, limit: int = _MAX_OFFSET) -> int:
    """A saved non-negative integer (offset, inode, length), or ValueError."""
    if type(value) is not int or not 0 <= value <= limit:
        raise ValueError(f"not a count: {value!r}")
    return value


def text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class FilePosition:
    """A followed file: its identity (device, inode, fingerprint of the first `fp_len`
    bytes), where it was found (`origin`) and is now (`path`), and the byte offset and
    line number just after the last line returned."""

    key: str
    dev: int
    ino: int
    fp: str
    fp_len: int
    path: str
    origin: str
    offset: int
    line: int
    size: int
    skipping: bool = False

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "dev": self.dev,
            "ino": self.ino,
            "fp": self.fp,
            "fp_len": self.fp_len,
            "path": self.path,
            "origin": self.origin,
            "offset": self.offset,
            "line": self.line,
            "size": self.size,
            "skipping": self.skipping,
        }

    @classmethod
    def from_dict(cls, e: Any) -> FilePosition:
        """Raises KeyError, TypeError or ValueError for an entry of the wrong shape."""
        return cls(
            key=text(e["key"]),
            dev=count(e["dev"]),
            ino=count(e["ino"]),
            fp=text(e["fp"]),
            fp_len=count(e["fp_len"], FINGERPRINT_BYTES),
            path=text(e["path"]),
            origin=text(e.get("origin", e["path"])),
            offset=count(e["offset"]),
            line=count(e["line"]),
            size=count(e.get("size", e["offset"])),
            skipping=e.get("skipping", False) is True,
        )


@dataclass(frozen=True, slots=True)
class EndedFile:
    """A file read to its end (or truncated): its fingerprint and where it stopped, so that
    a copy of it (logrotate) or the same file found again is not read twice."""

    fp: str
    fp_len: int
    offset: int
    line: int
    path: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "fp": self.fp,
            "fp_len": self.fp_len,
            "offset": self.offset,
            "line": self.line,
            "path": self.path,
        }

    @classmethod
    def from_dict(cls, e: Any) -> EndedFile:
        return cls(
            fp=text(e["fp"]),
            fp_len=count(e["fp_len"], FINGERPRINT_BYTES),
            offset=count(e["offset"]),
            line=count(e["line"]),
            path=text(e.get("path", "")),
        )


@dataclass(frozen=True)
class FollowState:
    """The registry's `follow` section: every followed file, the recently ended ones, and
    when it was saved (files rotated while zeekndm was stopped are looked for from then)."""

    files: tuple[FilePosition, ...] = ()
    ended: tuple[EndedFile, ...] = ()
    saved_at: float | None = None
    version: int = STATE_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "files": [f.to_dict() for f in self.files],
            "ended": [e.to_dict() for e in self.ended],
            "saved_at": self.saved_at,
        }

    @classmethod
    def from_dict(cls, state: Any) -> FollowState:
        """The saved state; of an unknown shape it is ignored with a warning, and each
        malformed entry is dropped with one."""
        if not state:
            return cls()
        entries = state.get("files") if isinstance(state, dict) else None
        if (
            not isinstance(state, dict)
            or state.get("version") != STATE_VERSION
            or not isinstance(entries, list)
        ):
            log.warning(
                "ignoring follow state of unknown shape (version %r)",
                state.get("version") if isinstance(state, dict) else None,
            )
            return cls()
        files = []
        for e in entries:
            try:
                files.append(FilePosition.from_dict(e))
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("ignoring malformed follow state entry %.200r", e)
        saved_at = state.get("saved_at")
        ended_raw = state.get("ended")
        ended = []
        for e in ended_raw if isinstance(ended_raw, list) else []:
            try:
                ended.append(EndedFile.from_dict(e))
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("ignoring malformed follow state entry %.200r", e)
        return cls(
            tuple(files),
            tuple(ended),
            float(saved_at)
            if isinstance(saved_at, (int, float)) and not isinstance(saved_at, bool)
            else None,
        )
