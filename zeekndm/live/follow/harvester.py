"""One open followed file: reading its complete lines, and noticing truncation.

The descriptor stays open, so after a rename or a deletion the rest of the file is still
readable. Only complete lines are returned, and the offset is always just after the last
line returned; `read_lines` also says where it started (the rollback point), so a caller
that finds the file was rewritten meanwhile can discard the batch and start again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from zeekndm.live.follow.identity import Snapshot, file_key, sha
from zeekndm.live.follow.positions import FINGERPRINT_BYTES, FilePosition

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20
"""Longer lines are skipped with a warning, so one runaway line cannot exhaust memory."""


@dataclass
class Batch:
    """Lines read in one go, and the (offset, line) the file stood at before them.

    `block` is the same lines as one bytes object, `b"\n".join(lines) + b"\n"`, when
    that is the bytes as read (no CR to strip, no line skipped as too long), else None:
    the compiled scanner then reads the block without it being split and joined again."""

    lines: list[tuple[int, bytes]]
    rollback: tuple[int, int]
    block: bytes | None = None


@dataclass
class Harvester:
    """One followed file with an open descriptor."""

    key: str
    dev: int
    ino: int
    fd: int
    path: str
    origin: str  # the watched path where it was found; a new file there waits for this one
    offset: int = 0
    line: int = 0
    head: bytes = b""
    new_file: bool = False  # emit new_file on the next chunk
    reset: bool = False  # emit reset on the next chunk
    skipping: bool = False  # inside an over-long line, discarding up to its newline
    detached: bool = False  # no longer at any watched path (renamed away or deleted)
    last_size: int = -1
    last_mtime: int = -1
    shadows: list[Harvester] = field(default_factory=list)  # copies waiting for it to end

    @classmethod
    def opened(
        cls, ident: tuple[int, int], fd: int, path: str, origin: str, **state: object
    ) -> Harvester:
        """A harvester for the descriptor `fd` of the file `ident` found at `path`."""
        return cls(
            key=file_key(*ident),
            dev=ident[0],
            ino=ident[1],
            fd=fd,
            path=path,
            origin=origin,
            **state,
        )

    @property
    def ident(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    # -- reading -----------------------------------------------------------------------
    def read_lines(self, size: int, budget: int) -> Batch:
        """Complete lines from `offset`, at most `budget` bytes (one whole line may exceed
        it, up to MAX_LINE_BYTES)."""
        batch = Batch([], (self.offset, self.line))
        lines = batch.lines
        # the bytes of `lines` exactly as read; None once a line was changed or dropped
        pieces: list[bytes] | None = []
        while budget > 0 and self.offset < size:
            data = os.pread(self.fd, min(budget, size - self.offset), self.offset)
            if not data:
                break
            if self.skipping:
                nl = data.find(b"\n")
                if nl < 0:
                    self.offset += len(data)
                    budget -= len(data)
                    continue
                self.offset += nl + 1
                budget -= nl + 1
                self.skipping = False
                continue
            end = data.rfind(b"\n")
            if end < 0:
                # No newline within the budget: read this one line whole, up to the cap.
                data = os.pread(self.fd, MAX_LINE_BYTES + 1, self.offset)
                nl = data.find(b"\n")
                if 0 <= nl:
                    self.line += 1
                    lines.append((self.line, _strip_cr(data[:nl])))
                    self.offset += nl + 1
                    pieces = None
                elif len(data) > MAX_LINE_BYTES:
                    self.line += 1
                    log.warning(
                        "%s:%d: line longer than %d bytes skipped",
                        self.path,
                        self.line,
                        MAX_LINE_BYTES,
                    )
                    self.offset += len(data)
                    self.skipping = True
                break
            whole = data[: end + 1]
            raws = whole[:-1].split(b"\n")
            if b"\r" in whole or (end > MAX_LINE_BYTES and max(map(len, raws)) > MAX_LINE_BYTES):
                pieces = None
                for raw in raws:
                    self.line += 1
                    if len(raw) > MAX_LINE_BYTES:
                        log.warning(
                            "%s:%d: line longer than %d bytes skipped",
                            self.path,
                            self.line,
                            MAX_LINE_BYTES,
                        )
                        continue
                    lines.append((self.line, _strip_cr(raw)))
            else:  # the usual case: numbered in one pass, no per-line Python
                first = self.line + 1
                self.line += len(raws)
                lines.extend(zip(range(first, self.line + 1), raws))
                if pieces is not None:
                    pieces.append(whole)
            self.offset += end + 1
            budget -= end + 1
        if pieces and lines:
            batch.block = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        return batch

    def undo(self, batch: Batch) -> None:
        """Forget `batch`: back to where the file stood before it."""
        self.offset, self.line = batch.rollback

    def only_partial_left(self) -> bool:
        """At the end but for a partial line (no newline): nothing more to return for now."""
        size = self.size()
        if self.skipping or size - self.offset > MAX_LINE_BYTES:
            return False
        return b"\n" not in os.pread(self.fd, size - self.offset, self.offset)

    # -- truncation and positions --------------------------------------------------------
    def truncated(self, size: int) -> bool:
        if size < self.offset:
            return True
        if self.head and size >= len(self.head):
            return os.pread(self.fd, len(self.head), 0) != self.head
        return bool(self.head) and size < len(self.head)

    def rewritten(self) -> bool:
        """The first bytes are no longer those we saw: truncated and written again."""
        return bool(self.head) and os.pread(self.fd, len(self.head), 0) != self.head

    def seek_to_end(self, size: int) -> None:
        """Like `tail -n0`: start after the last complete line, knowing its line number."""
        lines = 0
        end = 0
        pos = 0
        while pos < size:
            data = os.pread(self.fd, min(1 << 20, size - pos), pos)
            if not data:
                break
            n = data.count(b"\n")
            if n:
                lines += n
                end = pos + data.rfind(b"\n") + 1
            pos += len(data)
        self.offset, self.line = end, lines

    def check_not_beyond_end(self, size: int) -> None:
        if self.offset > size:
            log.warning(
                "%s is shorter than the saved offset %d; reading it from the start",
                self.path,
                self.offset,
            )
            self.offset, self.line, self.skipping = 0, 0, False
            self.reset = True

    def refresh_head(self) -> bytes:
        if len(self.head) < FINGERPRINT_BYTES:
            try:
                self.head = os.pread(self.fd, FINGERPRINT_BYTES, 0)
            except OSError:
                pass
        return self.head

    def snapshot(self) -> Snapshot:
        """What must be remembered of this file once it ended or was truncated."""
        return Snapshot(
            len(self.head),
            sha(self.head),
            self.head,
            self.offset,
            self.line,
            self.skipping,
            self.path,
        )

    def position(self) -> FilePosition:
        head = self.refresh_head()
        try:
            size = self.size()
        except OSError:
            size = self.offset
        return FilePosition(
            key=self.key,
            dev=self.dev,
            ino=self.ino,
            fp=sha(head),
            fp_len=len(head),
            path=self.path,
            origin=self.origin,
            offset=self.offset,
            line=self.line,
            size=size,
            skipping=self.skipping,
        )


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line
