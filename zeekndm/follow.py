"""Rotation-safe following of growing log files (the input side of live mode).

A sensor writes its logs in place and rotates them in one of a few ways: Zeek renames the
file (possibly into another directory) and starts a fresh one with a new header; logrotate's
`copytruncate` copies it away and truncates it in place; a file may also be truncated,
deleted, or appear only after we started. `Follower` turns all of that into one ordered
stream of `Chunk`s of complete lines, each tagged with a stable key for its file.

Why it is built this way:

* A file is known by its identity (device, inode) and by a fingerprint of its first bytes,
  never by its name: names move during rotation, inodes get reused after deletion, and a
  copy has a new inode but the old content. The key `"dev:inode"` is what callers store.
* The descriptor of a followed file stays open, so after a rename or a deletion the rest of
  the file is still readable: the old file is read to its end and reported `closed` before
  any line of the file that replaced it, so lines written just before a rotation are never
  lost and never reordered.
* Only complete lines are returned and the offset in `state()` is always just after the last
  returned line, so a caller that persists `state()` after handling a batch resumes with no
  line skipped and none repeated.
* Change notification comes from watchdog (inotify) when available; a poll every
  `poll_interval` backs it up, because notification silently fails on some file systems
  (NFS, some container mounts) and does not follow symlinks such as Zeek's `logs/current`,
  which is therefore re-resolved on each tick.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import re
import stat
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1024
"""How many leading bytes identify a file's content (hashed with sha256)."""

MAX_LINE_BYTES = 1 << 20
"""Longer lines are skipped with a warning, so one runaway line cannot exhaust memory."""

MAX_OPEN_FILES = 64
"""Default cap on descriptors held open at once."""

STATE_VERSION = 1

_HISTORY = 64  # how many ended/truncated files are remembered to recognise their copies
_ADOPT_MARGIN = 60.0  # s before a saved state within which a rotated file may be unread


@dataclass(frozen=True)
class FollowTarget:
    """What to follow: one file, or the files matching `patterns` in a directory.

    `path` may be a symlink (Zeek's `logs/current`); it is re-resolved on every tick.
    For a file target, `patterns` are ignored.
    """

    path: str
    patterns: tuple[str, ...] = ("conn.log",)


@dataclass
class Chunk:
    """Complete lines newly read from one file, with what the caller must do first.

    A key the caller has never seen arriving with `new_file=False` starts mid-file (resumed
    from `state()`, or a copy recognised as already partly read): prime its parser from
    `Follower.head(key)`.
    """

    key: str
    path: str
    lines: list[tuple[int, bytes]]
    new_file: bool
    reset: bool
    closed: bool


@dataclass
class FileLag:
    """How far reading is behind the end of one file."""

    path: str
    bytes_behind: int
    seconds_behind: float


@dataclass
class _Snapshot:
    """What is known of a file that ended or was truncated: enough to recognise its copy."""

    fp_len: int
    fp_hex: str
    head: bytes | None
    offset: int
    line: int
    skipping: bool = False
    path: str = ""
    lost_bytes: int = 0  # for entries from a previous run's state: unread bytes known then
    from_state: bool = False

    def matches(self, fd: int, size: int) -> bool:
        if self.fp_len == 0 or size < self.fp_len:
            return False
        return _sha(os.pread(fd, self.fp_len, 0)) == self.fp_hex

    def ambiguous(self, fd: int, size: int) -> bool:
        """A candidate still shorter than our head and equal to its start: wait and see."""
        if self.head is None or size >= self.fp_len:
            return False
        return self.head.startswith(os.pread(fd, size, 0))


@dataclass
class _File:
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
    shadows: list[_File] = field(default_factory=list)  # copies waiting for this file to end
    partial_warned: bool = False


def _opened(ident: tuple[int, int], fd: int, path: str, origin: str, **state: object) -> _File:
    """A `_File` for the descriptor `fd` of the file `ident` found at `path`."""
    return _File(
        key=_key(*ident), dev=ident[0], ino=ident[1], fd=fd, path=path, origin=origin, **state
    )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key(dev: int, ino: int) -> str:
    return f"{dev}:{ino}"


def _current_path(fd: int, fallback: str) -> str:
    """The file's name now (Linux /proc knows renames); `fallback` where it cannot tell."""
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return fallback
    if name.endswith(" (deleted)") or not name.startswith("/"):
        return fallback
    return name


class Follower:
    """Follows files and directories of logs through rotation, truncation and restarts.

    `read()` returns complete lines in file-write order per file; `state()` says exactly how
    far those went, and a new `Follower` given that state continues from there.
    """

    def __init__(
        self,
        targets: Sequence[FollowTarget],
        state: dict | None = None,
        *,
        poll_interval: float = 1.0,
        use_watchdog: bool = True,
        read_bytes: int = 1 << 20,
        start_at_end: bool = False,
        max_open: int = MAX_OPEN_FILES,
    ) -> None:
        self._targets = list(targets)
        self._poll_interval = max(0.01, float(poll_interval))
        self._read_bytes = max(1, int(read_bytes))
        self._start_at_end = start_at_end
        self._max_open = max(1, int(max_open))
        self._files: dict[str, _File] = {}  # insertion order = order of discovery
        self._shadowed: dict[tuple[int, int], _File] = {}
        self._history: deque[_Snapshot] = deque(maxlen=_HISTORY)
        self._to_close: list[int] = []
        self._closed_heads: dict[str, bytes] = {}
        self._warned: set[tuple[str, str]] = set()
        self._first_tick = True
        self._resume_ended: list[_Snapshot] = []
        self._saved_at: float | None = None
        self._resume: list[dict] = self._parse_state(state)
        self._wake = threading.Event()
        self._next_tick = 0.0
        self._observer = None
        self._watches: dict[str, object] = {}
        if use_watchdog:
            self._start_observer()
        if self._observer is None:
            log.info(
                "following %d target(s) by polling every %.2fs",
                len(self._targets),
                self._poll_interval,
            )

    # ------------------------------------------------------------------ public API

    def read(self, timeout: float) -> list[Chunk]:
        """Wait up to `timeout` s for new data (a watchdog event, or the poll tick) and return
        the complete lines available now, at most `read_bytes` per file per call (so one huge
        file cannot starve the loop). Returns [] on timeout. Never raises for a
        vanished/unreadable file (log a warning once, keep going)."""
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            self._wake.clear()
            self._next_tick = time.monotonic() + self._poll_interval
            chunks = self._tick()
            if chunks:
                return chunks
            now = time.monotonic()
            if now >= deadline:
                return []
            self._wake.wait(min(deadline, self._next_tick) - now)

    def wake(self) -> None:
        """Make a waiting `read()` return early (from a signal handler or another thread)."""
        self._wake.set()

    def state(self) -> dict:
        """JSON-serialisable positions of everything read() has returned so far: per file its
        identity (dev, inode, fingerprint of the first bytes + fingerprint length), path, byte
        offset after the last returned complete line, and line number. Passing it to a new
        Follower resumes exactly there (no line skipped, none repeated)."""
        files = []
        for f in self._files.values():
            head = self._refresh_head(f)
            try:
                size = os.fstat(f.fd).st_size
            except OSError:
                size = f.offset
            files.append(
                {
                    "key": f.key,
                    "dev": f.dev,
                    "ino": f.ino,
                    "fp": _sha(head),
                    "fp_len": len(head),
                    "path": f.path,
                    "origin": f.origin,
                    "offset": f.offset,
                    "line": f.line,
                    "size": size,
                    "skipping": f.skipping,
                }
            )
        # Files not yet resumed (read() never called) keep their old positions.
        files.extend(self._resume)
        # Files read to their end: a file rotated away while we are stopped is recognised by
        # these (already read) or read whole (written after this state).
        ended = [
            {"fp": s.fp_hex, "fp_len": s.fp_len, "offset": s.offset, "line": s.line, "path": s.path}
            for s in list(self._history) + self._resume_ended
            if s.fp_len and not s.from_state
        ]
        return {
            "version": STATE_VERSION,
            "files": files,
            "ended": ended[-_HISTORY:],
            "saved_at": time.time(),
        }

    def lag(self) -> list[FileLag]:
        """Bytes (and seconds, by mtime) between what was returned and each file's end."""
        now = time.time()
        out = []
        for f in self._files.values():
            try:
                st = os.fstat(f.fd)
            except OSError:
                continue
            behind = max(0, st.st_size - f.offset)
            seconds = max(0.0, now - st.st_mtime) if behind else 0.0
            out.append(FileLag(f.path, behind, seconds))
        return out

    def head(self, key: str, max_bytes: int = 65536) -> bytes:
        """The first bytes of the file `key` (read from its still-open descriptor with
        os.pread, so it works after a rename). The live loop uses it to re-prime a Zeek TSV
        parser (header lines) when resuming mid-file. Raises KeyError for an unknown key;
        a key reported closed by the last read() is still answered."""
        f = self._files.get(key)
        if f is None:
            if key in self._closed_heads:
                return self._closed_heads[key][:max_bytes]
            raise KeyError(key)
        return os.pread(f.fd, max_bytes, 0)

    def close(self) -> None:
        """Stop the observer and close every descriptor."""
        if self._observer is not None:
            try:
                self._observer.stop()
                self._observer.join(timeout=5)
            except Exception:  # noqa: BLE001 - shutting down; nothing useful to do
                log.debug("stopping watchdog observer failed", exc_info=True)
            self._observer = None
        for f in list(self._files.values()) + list(self._shadowed.values()):
            self._close_fd(f.fd)
        self._files.clear()
        self._shadowed.clear()
        for fd in self._to_close:
            self._close_fd(fd)
        self._to_close.clear()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ notification

    def _start_observer(self) -> None:
        try:
            from watchdog.events import (
                FileClosedEvent,
                FileCreatedEvent,
                FileDeletedEvent,
                FileModifiedEvent,
                FileMovedEvent,
                FileSystemEventHandler,
            )
            from watchdog.observers import Observer
        except ImportError:
            log.warning("watchdog is not installed; falling back to polling")
            return
        wake = self._wake

        class _Wake(FileSystemEventHandler):
            def on_any_event(self, event: object) -> None:
                wake.set()

        self._handler = _Wake()
        # Opened/closed-without-write events are left out: our own scans would wake us.
        self._event_filter = [
            FileModifiedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileMovedEvent,
            FileClosedEvent,
        ]
        try:
            observer = Observer()
            observer.daemon = True
            observer.start()
        except Exception as exc:  # noqa: BLE001 - any failure means: poll instead
            log.warning("file notification unavailable (%s); falling back to polling", exc)
            return
        self._observer = observer
        log.info(
            "following %d target(s) with %s notification, polling every %.2fs as backup",
            len(self._targets),
            type(observer).__name__,
            self._poll_interval,
        )

    def _watch_dirs(self, dirs: set[str]) -> None:
        if self._observer is None:
            return
        for d in list(self._watches):
            if d not in dirs:
                try:
                    self._observer.unschedule(self._watches.pop(d))
                except Exception:  # noqa: BLE001 - the directory may be gone already
                    log.debug("unschedule %s failed", d, exc_info=True)
        for d in dirs:
            if d in self._watches:
                continue
            try:
                self._watches[d] = self._observer.schedule(
                    self._handler, d, recursive=False, event_filter=self._event_filter
                )
            except Exception as exc:  # noqa: BLE001 - e.g. inotify watch limit reached
                self._warn_once("watch", d, "cannot watch %s (%s); polling it", d, exc)

    # ------------------------------------------------------------------ one tick

    def _tick(self) -> list[Chunk]:
        for fd in self._to_close:
            self._close_fd(fd)
        self._to_close.clear()
        self._closed_heads.clear()

        found, dirs = self._scan()
        self._watch_dirs(dirs)
        if self._first_tick:
            self._resume_from_state(found, dirs)

        # Which followed files are still at a watched path, and under which name.
        for f in self._files.values():
            hit = found.get((f.dev, f.ino))
            if hit is not None:
                f.path, f.detached = hit, False
            else:
                f.detached = True
                f.path = _current_path(f.fd, f.path)
        for ident in list(self._shadowed):
            if ident not in found:
                self._close_fd(self._shadowed.pop(ident).fd)
                self._forget_shadow(ident)

        self._discover(found)
        self._first_tick = False

        chunks: list[Chunk] = []
        unfinished: set[str] = set()  # origins whose old file still has unread data
        for f in list(self._files.values()):
            if f.key not in self._files:
                continue
            if f.origin in unfinished and not f.detached and f.path == f.origin:
                continue  # an older file of the same name is not finished yet
            done = self._service(f, chunks)
            if not done and f.path != f.origin:
                unfinished.add(f.origin)
        return chunks

    def _scan(self) -> tuple[dict[tuple[int, int], str], set[str]]:
        """Every watched file that exists now, by identity, and the directories to watch."""
        found: dict[tuple[int, int], str] = {}
        dirs: set[str] = set()
        for t in self._targets:
            real = os.path.realpath(t.path)
            if os.path.isdir(real):
                dirs.add(real)
                try:
                    entries = list(os.scandir(real))
                except OSError as exc:
                    self._warn_once("scan", real, "cannot list %s: %s", real, exc)
                    continue
                for e in sorted(entries, key=lambda e: e.name):
                    if not any(fnmatch.fnmatchcase(e.name, p) for p in t.patterns):
                        continue
                    try:
                        st = e.stat()
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        found.setdefault((st.st_dev, st.st_ino), e.path)
                continue
            parent = os.path.dirname(real) or "."
            if os.path.isdir(parent):
                dirs.add(parent)
            link_parent = os.path.dirname(os.path.abspath(t.path))
            if os.path.isdir(link_parent):
                dirs.add(link_parent)
            try:
                st = os.stat(real)
            except OSError:
                self._warn_once("wait", t.path, "waiting for %s", t.path)
                continue
            self._warned.discard(("wait", t.path))
            if stat.S_ISREG(st.st_mode):
                found.setdefault((st.st_dev, st.st_ino), t.path)
        return found, dirs

    def _discover(self, found: dict[tuple[int, int], str]) -> None:
        """Start following files seen for the first time (or recognise them as copies)."""
        for ident, path in found.items():
            key = _key(*ident)
            if key in self._files or ident in self._shadowed:
                continue
            if self._open_count() >= self._max_open:
                self._warn_once(
                    "max_open",
                    "",
                    "more than %d files to follow; %s and any "
                    "further ones wait for a free descriptor",
                    self._max_open,
                    path,
                )
                return
            fd = self._open(path, ident)
            if fd is None:
                continue
            size = os.fstat(fd).st_size
            if any(s.ambiguous(fd, size) for s in self._history) or any(
                self._ambiguous_with(g, fd, size) for g in self._files.values()
            ):
                self._close_fd(fd)  # could still become a copy of a file we know: wait
                continue
            f = _opened(ident, fd, path, path)
            owner = next((g for g in self._files.values() if self._is_copy_of(g, fd, size)), None)
            if owner is not None:
                # A copy of a file we still follow: its content is read through the original
                # for now; the copy takes over from the original's offset when it ends.
                log.info("%s is a copy of %s; waiting for the original to end", path, owner.path)
                owner.shadows.append(f)
                self._shadowed[ident] = f
                continue
            snap = next((s for s in self._history if s.matches(fd, size)), None)
            if snap is not None:
                self._history.remove(snap)
                log.info(
                    "%s is a copy of already-read %s; continuing at line %d",
                    path,
                    snap.path or "a rotated file",
                    snap.line,
                )
                f.offset, f.line, f.skipping = snap.offset, snap.line, snap.skipping
                self._check_not_beyond_end(f, size)
            elif self._first_tick and self._start_at_end:
                self._seek_to_end(f, size)
            else:
                f.new_file = True
            f.head = os.pread(fd, FINGERPRINT_BYTES, 0)
            self._files[key] = f
        if not self._first_tick:
            return
        for snap in [s for s in self._history if s.from_state]:
            self._history.remove(snap)
            log.warning(
                "%s was replaced while zeekndm was stopped and the old file is gone: "
                "at least %d unread bytes are lost",
                snap.path,
                snap.lost_bytes,
            )

    def _ambiguous_with(self, g: _File, fd: int, size: int) -> bool:
        if not g.head or size >= len(g.head):
            return False
        return g.head.startswith(os.pread(fd, size, 0))

    def _is_copy_of(self, g: _File, fd: int, size: int) -> bool:
        if not g.head or size < len(g.head) or g.detached:
            return False
        return os.pread(fd, len(g.head), 0) == g.head

    def _service(self, f: _File, chunks: list[Chunk]) -> bool:
        """Read what `f` has now into `chunks`; True when it is at its end (or closed)."""
        try:
            st = os.fstat(f.fd)
        except OSError as exc:
            self._warn_once("fstat", f.path, "cannot stat %s: %s", f.path, exc)
            return True
        if st.st_nlink == 0:
            f.detached = True
        size = st.st_size
        if (size, st.st_mtime_ns) != (f.last_size, f.last_mtime):
            if self._truncated(f, size):
                self._on_truncate(f, chunks)
            f.last_size, f.last_mtime = size, st.st_mtime_ns
        lines = self._read_lines(f, size)
        if lines and f.head and os.pread(f.fd, len(f.head), 0) != f.head:
            # Truncated (and rewritten) while we were reading: what we read is not trustworthy.
            f.offset, f.line = self._undo
            lines = []
            self._on_truncate(f, chunks)
            lines = self._read_lines(f, os.fstat(f.fd).st_size)
        self._refresh_head(f)
        at_end = f.offset >= os.fstat(f.fd).st_size or self._only_partial_left(f)
        closed = f.detached and at_end
        # A closed file never announced (no line returned) is not worth a chunk.
        if lines or f.reset or (closed and not f.new_file):
            chunks.append(Chunk(f.key, f.path, lines, f.new_file, f.reset, closed))
            f.new_file = False
            f.reset = False
        if closed:
            self._end(f, chunks)
        return at_end

    # ------------------------------------------------------------------ reading

    def _read_lines(self, f: _File, size: int) -> list[tuple[int, bytes]]:
        """Complete lines from f.offset, at most read_bytes (one whole line may exceed it)."""
        self._undo = (f.offset, f.line)
        lines: list[tuple[int, bytes]] = []
        budget = self._read_bytes
        while budget > 0 and f.offset < size:
            data = os.pread(f.fd, min(budget, size - f.offset), f.offset)
            if not data:
                break
            if f.skipping:
                nl = data.find(b"\n")
                if nl < 0:
                    f.offset += len(data)
                    budget -= len(data)
                    continue
                f.offset += nl + 1
                budget -= nl + 1
                f.skipping = False
                continue
            end = data.rfind(b"\n")
            if end < 0:
                # No newline within the budget: read this one line whole, up to the cap.
                data = os.pread(f.fd, MAX_LINE_BYTES + 1, f.offset)
                nl = data.find(b"\n")
                if 0 <= nl:
                    f.line += 1
                    lines.append((f.line, _strip_cr(data[:nl])))
                    f.offset += nl + 1
                elif len(data) > MAX_LINE_BYTES:
                    f.line += 1
                    log.warning(
                        "%s:%d: line longer than %d bytes skipped", f.path, f.line, MAX_LINE_BYTES
                    )
                    f.offset += len(data)
                    f.skipping = True
                break
            for raw in data[:end].split(b"\n"):
                f.line += 1
                if len(raw) > MAX_LINE_BYTES:
                    log.warning(
                        "%s:%d: line longer than %d bytes skipped", f.path, f.line, MAX_LINE_BYTES
                    )
                    continue
                lines.append((f.line, _strip_cr(raw)))
            f.offset += end + 1
            budget -= end + 1
        return lines

    def _only_partial_left(self, f: _File) -> bool:
        """At the end but for a partial line (no newline): nothing more to return for now."""
        size = os.fstat(f.fd).st_size
        if f.skipping or size - f.offset > MAX_LINE_BYTES:
            return False
        return b"\n" not in os.pread(f.fd, size - f.offset, f.offset)

    def _truncated(self, f: _File, size: int) -> bool:
        if size < f.offset:
            return True
        if f.head and size >= len(f.head):
            return os.pread(f.fd, len(f.head), 0) != f.head
        return bool(f.head) and size < len(f.head)

    def _on_truncate(self, f: _File, chunks: list[Chunk]) -> None:
        """Restart `f` from 0; remember what was read so a copy can take over from there."""
        log.info("%s was truncated at line %d; reading it again from the start", f.path, f.line)
        snap = _Snapshot(len(f.head), _sha(f.head), f.head, f.offset, f.line, f.skipping, f.path)
        self._hand_over(f, snap, chunks)
        if f.head:
            self._history.append(snap)
        f.offset, f.line, f.skipping, f.head = 0, 0, False, b""
        f.reset = True
        f.new_file = False

    def _end(self, f: _File, chunks: list[Chunk]) -> None:
        """`f` is read to its end and gone from the watched paths: forget it."""
        try:
            rest = os.fstat(f.fd).st_size - f.offset
        except OSError:
            rest = 0
        if rest > 0:
            log.warning(
                "%s ended with an incomplete last line (%d bytes) that is dropped", f.path, rest
            )
        snap = _Snapshot(len(f.head), _sha(f.head), f.head, f.offset, f.line, f.skipping, f.path)
        self._hand_over(f, snap, chunks)
        if f.head:
            self._history.append(snap)
        del self._files[f.key]
        self._closed_heads[f.key] = os.pread(f.fd, 65536, 0)
        self._to_close.append(f.fd)

    def _hand_over(self, f: _File, snap: _Snapshot, chunks: list[Chunk]) -> None:
        """Copies of `f` waiting for it to end continue where `f` stopped, before `f` goes on."""
        for copy in f.shadows:
            self._shadowed.pop((copy.dev, copy.ino), None)
            copy.offset, copy.line, copy.skipping = snap.offset, snap.line, snap.skipping
            copy.head = os.pread(copy.fd, FINGERPRINT_BYTES, 0)
            self._files[copy.key] = copy
            self._service(copy, chunks)
        f.shadows = []

    def _forget_shadow(self, ident: tuple[int, int]) -> None:
        for g in self._files.values():
            g.shadows = [c for c in g.shadows if (c.dev, c.ino) != ident]

    def _seek_to_end(self, f: _File, size: int) -> None:
        """Like `tail -n0`: start after the last complete line, knowing its line number."""
        lines = 0
        end = 0
        pos = 0
        while pos < size:
            data = os.pread(f.fd, min(1 << 20, size - pos), pos)
            if not data:
                break
            n = data.count(b"\n")
            if n:
                lines += n
                end = pos + data.rfind(b"\n") + 1
            pos += len(data)
        f.offset, f.line = end, lines

    def _check_not_beyond_end(self, f: _File, size: int) -> None:
        if f.offset > size:
            log.warning(
                "%s is shorter than the saved offset %d; reading it from the start",
                f.path,
                f.offset,
            )
            f.offset, f.line, f.skipping = 0, 0, False
            f.reset = True

    def _refresh_head(self, f: _File) -> bytes:
        if len(f.head) < FINGERPRINT_BYTES:
            try:
                f.head = os.pread(f.fd, FINGERPRINT_BYTES, 0)
            except OSError:
                pass
        return f.head

    # ------------------------------------------------------------------ resume

    def _parse_state(self, state: dict | None) -> list[dict]:
        if not state:
            return []
        entries = state.get("files") if isinstance(state, dict) else None
        if state.get("version") != STATE_VERSION or not isinstance(entries, list):
            log.warning(
                "ignoring follow state of unknown shape (version %r)",
                state.get("version") if isinstance(state, dict) else None,
            )
            return []
        good = []
        for e in entries:
            try:
                good.append(
                    {
                        "key": str(e["key"]),
                        "dev": int(e["dev"]),
                        "ino": int(e["ino"]),
                        "fp": str(e["fp"]),
                        "fp_len": int(e["fp_len"]),
                        "path": str(e["path"]),
                        "origin": str(e.get("origin", e["path"])),
                        "offset": int(e["offset"]),
                        "line": int(e["line"]),
                        "size": int(e.get("size", e["offset"])),
                        "skipping": bool(e.get("skipping", False)),
                    }
                )
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring malformed follow state entry %r", e)
        saved_at = state.get("saved_at")
        self._saved_at = float(saved_at) if isinstance(saved_at, (int, float)) else None
        for e in state.get("ended") or []:
            try:
                self._resume_ended.append(
                    _Snapshot(
                        int(e["fp_len"]),
                        str(e["fp"]),
                        None,
                        int(e["offset"]),
                        int(e["line"]),
                        False,
                        str(e.get("path", "")),
                    )
                )
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring malformed follow state entry %r", e)
        return good

    def _resume_from_state(self, found: dict[tuple[int, int], str], dirs: set[str]) -> None:
        """Pick up each file of the saved state where it was, or say what was lost."""
        entries, self._resume = self._resume, []
        self._history.extend(self._resume_ended)
        self._resume_ended = []
        everywhere: dict[tuple[int, int], str] | None = None
        for e in entries:
            ident = (e["dev"], e["ino"])
            snap = _Snapshot(
                e["fp_len"],
                e["fp"],
                None,
                e["offset"],
                e["line"],
                e["skipping"],
                e["path"],
                max(0, e["size"] - e["offset"]),
                from_state=True,
            )
            path = found.get(ident)
            if path is None:
                path = self._find_renamed(e, ident)
                if path is None:
                    if everywhere is None:
                        everywhere = self._list_dirs(dirs)
                    path = everywhere.get(ident)
            if path is None:
                self._history.append(snap)
                continue
            fd = self._open(path, ident)
            if fd is None:
                self._history.append(snap)
                continue
            size = os.fstat(fd).st_size
            if not (snap.matches(fd, size) or (snap.fp_len == 0 and e["offset"] == 0)):
                self._close_fd(fd)
                self._history.append(snap)  # same inode, other content: a new file
                continue
            f = _opened(
                ident,
                fd,
                path,
                e["origin"],
                offset=e["offset"],
                line=e["line"],
                skipping=e["skipping"],
                new_file=e["offset"] == 0,
            )
            f.head = os.pread(fd, FINGERPRINT_BYTES, 0)
            self._check_not_beyond_end(f, size)
            self._files[f.key] = f
        if entries:
            self._adopt_rotated_while_stopped(found)
        # Old files found renamed must be finished before new files at their old names.
        order = sorted(self._files.values(), key=lambda f: found.get((f.dev, f.ino)) is not None)
        self._files = {f.key: f for f in order}

    def _adopt_rotated_while_stopped(self, found: dict[tuple[int, int], str]) -> None:
        """Files that appeared and were renamed away from the watched names while we were
        stopped (Zeek rotates to `conn.<time>.log` beside `conn.log`): files next to a
        watched one, named like it, not known, are read too, oldest first, before the
        current file. One already read to its end is recognised by its fingerprint.
        Archives compressed by then (zeekctl gzips into a dated folder) are out of reach."""
        if self._saved_at is None:
            return
        since_ns = int((self._saved_at - _ADOPT_MARGIN) * 1e9)
        known = set(found) | {(f.dev, f.ino) for f in self._files.values()}
        candidates = []
        for directory, stem, origin in self._rotation_stems():
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if not entry.name.startswith(stem):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                ident = (st.st_dev, st.st_ino)
                if stat.S_ISREG(st.st_mode) and ident not in known and st.st_mtime_ns >= since_ns:
                    known.add(ident)
                    candidates.append((st.st_mtime_ns, entry.path, ident, origin))
        for _, path, ident, origin in sorted(candidates):
            fd = self._open(path, ident)
            if fd is None:
                continue
            size = os.fstat(fd).st_size
            head = os.pread(fd, FINGERPRINT_BYTES, 0)
            snap = next((s for s in self._history if s.matches(fd, size)), None)
            if head.startswith(b"\x1f\x8b") or (snap is not None and snap.offset >= size):
                self._close_fd(fd)  # compressed, or already read to its end (kept in history)
                continue
            f = _opened(
                ident,
                fd,
                path,
                origin,
                detached=True,
            )
            if snap is not None:
                self._history.remove(snap)
                f.offset, f.line, f.skipping = snap.offset, snap.line, snap.skipping
            else:
                f.new_file = True
                log.info("%s was rotated while zeekndm was stopped; reading it", path)
            f.head = head
            self._files[f.key] = f

    def _rotation_stems(self) -> list[tuple[str, str, str]]:
        """(directory, name prefix of its rotated files, watched path) per watched name."""
        out = []
        for t in self._targets:
            real = os.path.realpath(t.path)
            if os.path.isdir(real):
                names = [(real, p) for p in t.patterns]
            else:
                names = [(os.path.dirname(real) or ".", os.path.basename(real))]
            for directory, name in names:
                base = re.split(r"[.*?\[]", name, maxsplit=1)[0]
                if base and not any(c in name.split(".")[0] for c in "*?["):
                    out.append((directory, base + ".", os.path.join(directory, name)))
        return out

    def _find_renamed(self, e: dict, ident: tuple[int, int]) -> str | None:
        try:
            st = os.stat(e["path"])
        except OSError:
            return None
        return e["path"] if (st.st_dev, st.st_ino) == ident else None

    def _list_dirs(self, dirs: set[str]) -> dict[tuple[int, int], str]:
        out: dict[tuple[int, int], str] = {}
        for d in sorted(dirs):
            try:
                for entry in os.scandir(d):
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        out.setdefault((st.st_dev, st.st_ino), entry.path)
            except OSError:
                continue
        return out

    # ------------------------------------------------------------------ descriptors

    def _open(self, path: str, ident: tuple[int, int]) -> int | None:
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            self._warn_once("open", path, "cannot open %s: %s", path, exc)
            return None
        self._warned.discard(("open", path))
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != ident:
            os.close(fd)  # replaced between the scan and the open; the next tick sees it
            return None
        return fd

    def _open_count(self) -> int:
        return len(self._files) + len(self._shadowed)

    @staticmethod
    def _close_fd(fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass

    def _warn_once(self, kind: str, what: str, msg: str, *args: object) -> None:
        if (kind, what) in self._warned:
            return
        self._warned.add((kind, what))
        log.warning(msg, *args)


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line
