"""The follower: one ordered stream of line batches from every followed file.

A sensor writes its logs in place and rotates them in one of a few ways: Zeek renames the
file (possibly into another directory) and starts a fresh one with a new header; logrotate's
`copytruncate` copies it away and truncates it in place; a file may also be truncated,
deleted, or appear only after we started. `Follower` turns all of that into `Chunk`s of
complete lines, each tagged with a stable key for its file, and drives the other modules:
`scan` (which files the targets name), `identity` (is this file one we know, or a copy),
`harvester` (reading one open file), `positions` (what is saved), `resume` (continuing
from a saved state) and `watch` (notification).

Invariants:

* The descriptor of a followed file stays open, so after a rename or a deletion the rest of
  the file is still readable: the old file is read to its end and reported `closed` before
  any line of the file that replaced it at its name, so lines written just before a
  rotation are never lost and never reordered.
* Only complete lines are returned and the offset in `state()` is always just after the last
  returned line, so a caller that persists `state()` after handling a batch resumes with no
  line skipped and none repeated.
* New files are opened the moment they appear (see `watch.CreateWatch`); a file not decided
  yet (it may still become a copy) keeps its descriptor, so a rotation meanwhile cannot
  take it out of reach.
* At most `max_open` descriptors are held: past it, the file at its end and unchanged the
  longest (at least `park_after` seconds) is parked, its descriptor closed, its position
  kept, and reopened when it changes.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from zeekndm.live.follow import resume
from zeekndm.live.follow.harvester import Harvester
from zeekndm.live.follow.identity import (
    Snapshot,
    current_path,
    file_key,
    is_copy,
    open_identified,
    sha,
    starts_like,
)
from zeekndm.live.follow.positions import FINGERPRINT_BYTES, FilePosition, FollowState
from zeekndm.live.follow.scan import FollowTarget, Ident, scan, still_at
from zeekndm.live.follow.watch import Watch
from zeekndm.signalsafe import SignalSafeEvent

log = logging.getLogger(__name__)

MAX_OPEN_FILES = 64
"""Default cap on descriptors held open at once."""

PARK_AFTER = 5.0
"""With more files than descriptors allowed, a file at its end and unchanged for this many
seconds may be closed ("parked") to make room; it is reopened when it changes."""

HISTORY = 64  # how many ended/truncated files are remembered to recognise their copies
MAX_PENDING = 64  # descriptors held for files opened early or not decided yet


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
    block: bytes | None = None  # `lines` as one block, when read so (see `Batch.block`)


@dataclass
class FileLag:
    """How far reading is behind the end of one file."""

    path: str
    bytes_behind: int
    seconds_behind: float


@dataclass
class Parked:
    """A followed file whose descriptor was closed to make room (see `PARK_AFTER`)."""

    key: str
    path: str
    origin: str
    offset: int
    line: int
    head: bytes
    size: int
    mtime: int

    def position(self, ident: Ident) -> FilePosition:
        return FilePosition(
            key=self.key,
            dev=ident[0],
            ino=ident[1],
            fp=sha(self.head),
            fp_len=len(self.head),
            path=self.path,
            origin=self.origin,
            offset=self.offset,
            line=self.line,
            size=self.size,
        )


class Follower:
    """Follows files and directories of logs through rotation, truncation and restarts.

    `read()` returns complete lines in file-write order per file; `state()` says exactly how
    far those went, and a new `Follower` given that state continues from there.
    """

    def __init__(
        self,
        targets: Sequence[FollowTarget],
        state: FollowState | dict | None = None,
        *,
        poll_interval: float = 1.0,
        use_watchdog: bool = True,
        read_bytes: int = 1 << 20,
        start_at_end: bool = False,
        max_open: int = MAX_OPEN_FILES,
        park_after: float = PARK_AFTER,
        wall: Callable[[], float] = time.time,
        spill_dir: str | None = None,
    ) -> None:
        self._targets = list(targets)
        self._wall = wall
        self._spill_dir = spill_dir  # where an archived file is decompressed to be read
        self._poll_interval = max(0.01, float(poll_interval))
        self._read_bytes = max(1, int(read_bytes))
        self._start_at_end = start_at_end
        self._max_open = max(1, int(max_open))
        self._park_after = float(park_after)
        self._files: dict[str, Harvester] = {}  # insertion order = order of discovery
        self._shadowed: dict[Ident, Harvester] = {}
        self._parked: dict[Ident, Parked] = {}
        # Descriptors of files not followed yet: opened by the notification thread the
        # moment they appeared (so a file renamed away before the next scan is still
        # read), or found by a scan but not decided yet (could still become a copy).
        self._pending: dict[Ident, tuple[int, str]] = {}
        self._pending_lock = threading.Lock()
        self._early_rules: dict[str, tuple[str, ...]] = {}
        self._sizes: dict[Ident, Ident] = {}
        self._history: deque[Snapshot] = deque(maxlen=HISTORY)
        self._to_close: list[int] = []
        self._closed_heads: dict[str, bytes] = {}
        self._warned: set[tuple[str, str]] = set()
        self._first_tick = True
        saved = state if isinstance(state, FollowState) else FollowState.from_dict(state)
        self._resume: list[FilePosition] = list(saved.files)
        self._resume_ended: list[Snapshot] = [Snapshot.of_ended(e) for e in saved.ended]
        self._saved_at: float | None = saved.saved_at
        # set() from the SIGTERM/SIGHUP handlers: threading.Event could deadlock there
        self._wake = SignalSafeEvent()
        self._next_tick = 0.0
        self._watch: Watch | None = None
        if use_watchdog:
            self._watch = Watch(
                self._wake, self._early_open, len(self._targets), self._poll_interval
            )
            if not self._watch.active:
                self._watch = None
        if self._watch is None:
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
        """JSON-serialisable positions of everything read() has returned so far (a
        `FollowState`): per file its identity, path, byte offset after the last returned
        complete line, and line number. Passing it to a new Follower resumes exactly there
        (no line skipped, none repeated)."""
        return self.follow_state().to_dict()

    def follow_state(self) -> FollowState:
        files = [f.position() for f in self._files.values()]
        files += [p.position(ident) for ident, p in self._parked.items()]
        # Files not yet resumed (read() never called) keep their old positions.
        files += self._resume
        # Files read to their end: a file rotated away while we are stopped is recognised by
        # these (already read) or read whole (written after this state).
        ended = [
            s.ended()
            for s in list(self._history) + self._resume_ended
            if s.fp_len and not s.from_state
        ]
        return FollowState(tuple(files), tuple(ended[-HISTORY:]), self._wall())

    def lag(self) -> list[FileLag]:
        """Bytes (and seconds, by mtime) between what was returned and each file's end."""
        now = self._wall()
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
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        for f in list(self._files.values()) + list(self._shadowed.values()):
            self._close_fd(f.fd)
        self._files.clear()
        self._shadowed.clear()
        for fd in self._to_close:
            self._close_fd(fd)
        self._to_close.clear()
        with self._pending_lock:
            for fd, _ in self._pending.values():
                self._close_fd(fd)
            self._pending.clear()
        self._wake.close()
        self._parked.clear()

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ notification

    def _early_open(self, path: str | bytes) -> None:
        """In the notification thread: open a watched file the moment it appears, so that a
        rotation that renames it away before the next scan cannot hide it from us."""
        path = os.fsdecode(path)
        patterns = self._early_rules.get(os.path.dirname(path))
        name = os.path.basename(path)
        if patterns is None or not any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return  # gone already, or not readable: the scan says so
        try:
            st = os.fstat(fd)
        except OSError:
            os.close(fd)
            return
        ident = (st.st_dev, st.st_ino)
        with self._pending_lock:
            if (
                not stat.S_ISREG(st.st_mode)
                or ident in self._pending
                or len(self._pending) >= MAX_PENDING
            ):
                os.close(fd)
                return
            self._pending[ident] = (fd, path)

    def _take_pending(self, ident: Ident) -> tuple[int, str] | None:
        with self._pending_lock:
            return self._pending.pop(ident, None)

    def _hold_pending(self, ident: Ident, fd: int, path: str) -> bool:
        """Keep `fd` for a file not decided yet; False (caller closes it) when full."""
        with self._pending_lock:
            if ident in self._pending or len(self._pending) >= MAX_PENDING:
                return False
            self._pending[ident] = (fd, path)
            return True

    def _tick(self) -> list[Chunk]:
        for fd in self._to_close:
            self._close_fd(fd)
        self._to_close.clear()
        self._closed_heads.clear()

        scanned = scan(self._targets, self._warn_once, self._clear_warning)
        found, dirs = scanned.found, scanned.dirs
        self._early_rules = scanned.rules  # one assignment: the notification thread reads it
        self._sizes = scanned.sizes
        if self._watch is not None:
            self._watch.watch_dirs(dirs)
        if self._first_tick:
            if self._resume or self._saved_at is not None:
                resume.resume_from_state(self, found, dirs)
            else:
                resume.note_preexisting_rotated(self, found)

        # Which followed files are still at a watched path, and under which name.
        for f in self._files.values():
            hit = found.get((f.dev, f.ino))
            if hit is not None:
                f.path, f.detached = hit, False
            else:
                if not f.detached:
                    now = current_path(f.fd, f.path)
                    log.info(
                        "%s was rotated away%s; reading it to its end",
                        f.path,
                        f" (now {now})" if now != f.path else " (or deleted)",
                    )
                f.detached = True
                f.path = current_path(f.fd, f.path)
        for ident in list(self._shadowed):
            if ident not in found:
                self._close_fd(self._shadowed.pop(ident).fd)
                self._forget_shadow(ident)

        self._adopt_pending_gone(found)
        self._unpark(found)
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

    def _discover(self, found: dict[Ident, str]) -> None:
        """Start following files seen for the first time (or recognise them as copies)."""
        for ident, path in found.items():
            key = file_key(*ident)
            if key in self._files or ident in self._shadowed or ident in self._parked:
                continue
            if self._open_count() >= self._max_open and not self._park_one():
                self._warn_once(
                    "max_open",
                    "",
                    "more than %d files to follow (max_open_files); %s and any "
                    "further ones wait for a free descriptor (an idle file is closed for "
                    "them after %.0f s unchanged)",
                    self._max_open,
                    path,
                    self._park_after,
                )
                self._release_pending(found)
                return
            held = self._take_pending(ident)
            fd = held[0] if held is not None else self._open(path, ident)
            if fd is None:
                continue
            size = os.fstat(fd).st_size
            if any(s.ambiguous(fd, size) for s in self._history) or any(
                starts_like(g.head, fd, size) for g in self._files.values()
            ):
                # Could still become a copy of a file we know: wait and see, holding the
                # descriptor, so a rotation meanwhile does not take the file out of reach.
                if not self._hold_pending(ident, fd, path):
                    self._close_fd(fd)
                continue
            f = Harvester.opened(ident, fd, path, path)
            owner = next(
                (g for g in self._files.values() if (not g.detached and is_copy(g.head, fd, size))),
                None,
            )
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
                f.check_not_beyond_end(size)
            elif self._first_tick and self._start_at_end:
                f.seek_to_end(size)
            else:
                f.new_file = True
            f.head = os.pread(fd, FINGERPRINT_BYTES, 0)
            self._files[key] = f
        if not self._first_tick:
            return
        for snap in [s for s in self._history if s.from_state]:
            self._history.remove(snap)
            searched = resume.archive_dirs(self)
            # Only what was unread at the last commit is known; what was written after
            # it went with the file, so the loss is stated as a lower bound or unknown.
            if snap.lost_bytes:
                amount = (
                    f"{snap.lost_bytes:,} unread bytes at the last commit (line {snap.line}) "
                    "are lost, and whatever was written to it after that commit"
                )
            else:
                amount = (
                    f"whatever was written to it after the last commit (line {snap.line}) "
                    "is lost; how much is not known, as it was all read at that commit"
                )
            log.warning(
                "%s was replaced while zeekndm was stopped and the old file is gone (not "
                "beside it%s): %s; if the file was archived elsewhere, `zeekndm replay` it "
                "(its lines after line %d are unread)",
                snap.path,
                f", nor in {', '.join(searched)}" if searched else "",
                amount,
                snap.line,
            )

    def _release_pending(self, found: dict[Ident, str]) -> None:
        """Close held descriptors of files still at a watched path (the scan finds them
        again): over the descriptor cap only files already gone keep theirs."""
        with self._pending_lock:
            for ident in [i for i in self._pending if i in found]:
                self._close_fd(self._pending.pop(ident)[0])

    def _adopt_pending_gone(self, found: dict[Ident, str]) -> None:
        """Files opened early (or held undecided) that are no longer at a watched path: a
        rotation renamed them away (or deleted them) before a scan took them up. Read them
        like the rotated files they are, before anything newer at the same name."""
        with self._pending_lock:
            gone = []
            for ident, held in list(self._pending.items()):
                if (
                    file_key(*ident) in self._files
                    or ident in self._shadowed
                    or ident in self._parked
                ):
                    del self._pending[ident]
                    self._close_fd(held[0])  # followed already (renamed within our paths)
                elif ident not in found and not still_at(held[1], ident):
                    # (a file created after this tick's scan is still at its path: it is
                    # left for the next scan)
                    del self._pending[ident]
                    gone.append((ident, held))
        for ident, (fd, origin) in gone:
            key = file_key(*ident)
            try:
                size = os.fstat(fd).st_size
            except OSError:
                self._close_fd(fd)
                continue
            if (
                size == 0
                or any(s.ambiguous(fd, size) for s in self._history)
                or any(starts_like(g.head, fd, size) for g in self._files.values())
                or any((not g.detached and is_copy(g.head, fd, size)) for g in self._files.values())
            ):
                # empty, or nothing but a prefix (or a copy) of content read through
                # another file: nothing of its own to read
                self._close_fd(fd)
                continue
            f = Harvester.opened(ident, fd, current_path(fd, origin), origin, detached=True)
            snap = next((s for s in self._history if s.matches(fd, size)), None)
            if snap is not None:
                self._history.remove(snap)
                f.offset, f.line, f.skipping = snap.offset, snap.line, snap.skipping
                f.check_not_beyond_end(size)
            else:
                f.new_file = True
            f.head = os.pread(fd, FINGERPRINT_BYTES, 0)
            log.info(
                "%s was rotated away from %s before it was scanned; reading it", f.path, origin
            )
            self._files[key] = f

    def _park_one(self) -> bool:
        """Close the longest-unchanged idle file to free a descriptor; False if none is."""
        now_ns = time.time_ns()
        best: Harvester | None = None
        for f in self._files.values():
            if (
                f.detached
                or f.new_file
                or f.reset
                or f.skipping
                or f.shadows
                or f.last_size != f.offset
                or now_ns - f.last_mtime < self._park_after * 1e9
            ):
                continue
            if best is None or f.last_mtime < best.last_mtime:
                best = f
        if best is None:
            return False
        del self._files[best.key]
        self._parked[(best.dev, best.ino)] = Parked(
            best.key,
            best.path,
            best.origin,
            best.offset,
            best.line,
            best.refresh_head(),
            best.last_size,
            best.last_mtime,
        )
        self._close_fd(best.fd)
        log.debug("%s is idle: its descriptor is closed until it changes", best.path)
        return True

    def _unpark(self, found: dict[Ident, str]) -> None:
        """Reopen parked files that changed; forget those that left the watched paths."""
        for ident, p in list(self._parked.items()):
            if ident not in found:
                del self._parked[ident]
                log.info(
                    "%s, closed while idle, left the watched paths; anything written to it "
                    "after %d bytes is not read",
                    p.path,
                    p.offset,
                )
                continue
            if self._sizes.get(ident) == (p.size, p.mtime):
                continue
            if self._open_count() >= self._max_open and not self._park_one():
                continue
            del self._parked[ident]
            path = found[ident]
            fd = self._open(path, ident)
            if fd is None:
                continue
            f = Harvester.opened(
                ident, fd, path, p.origin, offset=p.offset, line=p.line, head=p.head
            )
            f.last_size, f.last_mtime = p.size, p.mtime
            self._files[f.key] = f

    def _service(self, f: Harvester, chunks: list[Chunk]) -> bool:
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
            if f.truncated(size):
                self._on_truncate(f, chunks)
            f.last_size, f.last_mtime = size, st.st_mtime_ns
        batch = f.read_lines(size, self._read_bytes)
        if batch.lines and f.rewritten():
            # Truncated (and rewritten) while we were reading: what we read is not trustworthy.
            f.undo(batch)
            self._on_truncate(f, chunks)
            batch = f.read_lines(f.size(), self._read_bytes)
        lines = batch.lines
        f.refresh_head()
        at_end = f.offset >= f.size() or f.only_partial_left()
        closed = f.detached and at_end
        # A closed file never announced (no line returned) is not worth a chunk.
        if lines or f.reset or (closed and not f.new_file):
            chunks.append(Chunk(f.key, f.path, lines, f.new_file, f.reset, closed, batch.block))
            f.new_file = False
            f.reset = False
        if closed:
            self._end(f, chunks)
        return at_end

    def _on_truncate(self, f: Harvester, chunks: list[Chunk]) -> None:
        """Restart `f` from 0; remember what was read so a copy can take over from there."""
        log.info("%s was truncated at line %d; reading it again from the start", f.path, f.line)
        snap = f.snapshot()
        self._hand_over(f, snap, chunks)
        if f.head:
            self._history.append(snap)
        f.offset, f.line, f.skipping, f.head = 0, 0, False, b""
        f.reset = True
        f.new_file = False

    def _end(self, f: Harvester, chunks: list[Chunk]) -> None:
        """`f` is read to its end and gone from the watched paths: forget it."""
        try:
            rest = os.fstat(f.fd).st_size - f.offset
        except OSError:
            rest = 0
        if rest > 0:
            log.warning(
                "%s ended with an incomplete last line (%d bytes) that is dropped", f.path, rest
            )
        snap = f.snapshot()
        self._hand_over(f, snap, chunks)
        if f.head:
            self._history.append(snap)
        log.info("finished %s at line %d", f.path, f.line)
        del self._files[f.key]
        self._closed_heads[f.key] = os.pread(f.fd, 65536, 0)
        self._to_close.append(f.fd)

    def _hand_over(self, f: Harvester, snap: Snapshot, chunks: list[Chunk]) -> None:
        """Copies of `f` waiting for it to end continue where `f` stopped, before `f` goes on."""
        for copy in f.shadows:
            self._shadowed.pop((copy.dev, copy.ino), None)
            copy.offset, copy.line, copy.skipping = snap.offset, snap.line, snap.skipping
            copy.head = os.pread(copy.fd, FINGERPRINT_BYTES, 0)
            self._files[copy.key] = copy
            self._service(copy, chunks)
        f.shadows = []

    def _forget_shadow(self, ident: Ident) -> None:
        for g in self._files.values():
            g.shadows = [c for c in g.shadows if (c.dev, c.ino) != ident]

    # ------------------------------------------------------------------ descriptors

    def _open(self, path: str, ident: Ident) -> int | None:
        try:
            fd = open_identified(path, ident)
        except OSError as exc:
            self._warn_once("open", path, "cannot open %s: %s", path, exc)
            return None
        self._warned.discard(("open", path))
        return None if fd < 0 else fd  # replaced between the scan and the open: next tick

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

    def _clear_warning(self, kind: str, what: str) -> None:
        self._warned.discard((kind, what))
