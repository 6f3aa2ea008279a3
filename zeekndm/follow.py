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
import struct
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

PARK_AFTER = 5.0
"""With more files than descriptors allowed, a file at its end and unchanged for this many
seconds may be closed ("parked") to make room; it is reopened when it changes."""

_HISTORY = 64  # how many ended/truncated files are remembered to recognise their copies
_ADOPT_MARGIN = 60.0  # s before a saved state within which a rotated file may be unread
_MAX_PENDING = 64  # descriptors held for files opened early or not decided yet


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


@dataclass
class _Parked:
    """A followed file whose descriptor was closed to make room (see `PARK_AFTER`)."""

    key: str
    path: str
    origin: str
    offset: int
    line: int
    head: bytes
    size: int
    mtime: int


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


class _CreateWatch(threading.Thread):
    """Opens new files in the watched directories the moment they appear (inotify
    IN_CREATE / IN_MOVED_TO, straight from the kernel, Linux only).

    watchdog delivers a create event only after any rename before it has been paired up
    (half a second), and a rotation renames the old file just before it creates the new
    one: by then a file that is rotated away quickly is out of reach. This thread has one
    job, calling `on_create(path)` as early as possible, which holds a descriptor to it.
    """

    IN_MOVED_TO = 0x80
    IN_CREATE = 0x100
    IN_ONLYDIR = 0x01000000
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000
    _EVENT = struct.Struct("iIII")

    def __init__(self, on_create) -> None:
        super().__init__(daemon=True, name="zeekndm-create-watch")
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        self._fd = libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._on_create = on_create
        self._dirs: dict[int, bytes] = {}  # watch descriptor -> directory
        self._by_dir: dict[str, int] = {}
        self._stop_r, self._stop_w = os.pipe()
        self._lock = threading.Lock()

    def set_dirs(self, dirs: set[str]) -> None:
        with self._lock:
            for d in [d for d in self._by_dir if d not in dirs]:
                wd = self._by_dir.pop(d)
                self._dirs.pop(wd, None)
                self._rm(self._fd, wd)
            for d in dirs - set(self._by_dir):
                wd = self._add(
                    self._fd, os.fsencode(d), self.IN_CREATE | self.IN_MOVED_TO | self.IN_ONLYDIR
                )
                if wd >= 0:
                    self._by_dir[d] = wd
                    self._dirs[wd] = os.fsencode(d)

    def run(self) -> None:
        import select

        size = self._EVENT.size
        while True:
            ready, _, _ = select.select([self._fd, self._stop_r], [], [])
            if self._stop_r in ready:
                return
            try:
                data = os.read(self._fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                return
            pos = 0
            while pos + size <= len(data):
                wd, _mask, _cookie, length = self._EVENT.unpack_from(data, pos)
                name = data[pos + size : pos + size + length].rstrip(b"\0")
                pos += size + length
                with self._lock:
                    directory = self._dirs.get(wd)
                if directory is not None and name:
                    try:
                        self._on_create(os.fsdecode(os.path.join(directory, name)))
                    except Exception:  # noqa: BLE001 - never let this thread die
                        log.debug("early open of %r failed", name, exc_info=True)

    def stop(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        self.join(timeout=2)
        for fd in (self._fd, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass


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
        park_after: float = PARK_AFTER,
    ) -> None:
        self._targets = list(targets)
        self._poll_interval = max(0.01, float(poll_interval))
        self._read_bytes = max(1, int(read_bytes))
        self._start_at_end = start_at_end
        self._max_open = max(1, int(max_open))
        self._park_after = float(park_after)
        self._files: dict[str, _File] = {}  # insertion order = order of discovery
        self._shadowed: dict[tuple[int, int], _File] = {}
        self._parked: dict[tuple[int, int], _Parked] = {}
        # Descriptors of files not followed yet: opened by the notification thread the
        # moment they appeared (so a file renamed away before the next scan is still
        # read), or found by a scan but not decided yet (could still become a copy).
        self._pending: dict[tuple[int, int], tuple[int, str]] = {}
        self._pending_lock = threading.Lock()
        self._early_rules: dict[str, tuple[str, ...]] = {}
        self._sizes: dict[tuple[int, int], tuple[int, int]] = {}
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
        self._create_watch: _CreateWatch | None = None
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
        for (dev, ino), p in self._parked.items():
            files.append(
                {
                    "key": p.key,
                    "dev": dev,
                    "ino": ino,
                    "fp": _sha(p.head),
                    "fp_len": len(p.head),
                    "path": p.path,
                    "origin": p.origin,
                    "offset": p.offset,
                    "line": p.line,
                    "size": p.size,
                    "skipping": False,
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
        if self._create_watch is not None:
            self._create_watch.stop()
            self._create_watch = None
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
        self._parked.clear()

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
        try:
            self._create_watch = _CreateWatch(self._early_open_and_wake)
            self._create_watch.start()
        except (OSError, AttributeError) as exc:  # not Linux, or no inotify left
            log.debug("no early opening of new files: %s", exc)
            self._create_watch = None
        log.info(
            "following %d target(s) with %s notification, polling every %.2fs as backup",
            len(self._targets),
            type(observer).__name__,
            self._poll_interval,
        )

    def _early_open_and_wake(self, path: str) -> None:
        self._early_open(path)
        self._wake.set()

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
                or len(self._pending) >= _MAX_PENDING
            ):
                os.close(fd)
                return
            self._pending[ident] = (fd, path)

    def _take_pending(self, ident: tuple[int, int]) -> tuple[int, str] | None:
        with self._pending_lock:
            return self._pending.pop(ident, None)

    def _hold_pending(self, ident: tuple[int, int], fd: int, path: str) -> bool:
        """Keep `fd` for a file not decided yet; False (caller closes it) when full."""
        with self._pending_lock:
            if ident in self._pending or len(self._pending) >= _MAX_PENDING:
                return False
            self._pending[ident] = (fd, path)
            return True

    def _watch_dirs(self, dirs: set[str]) -> None:
        if self._create_watch is not None:
            self._create_watch.set_dirs(dirs)
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
            if self._resume or self._saved_at is not None:
                self._resume_from_state(found, dirs)
            else:
                self._note_preexisting_rotated(found)

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

    def _scan(self) -> tuple[dict[tuple[int, int], str], set[str]]:
        """Every watched file that exists now, by identity, and the directories to watch."""
        found: dict[tuple[int, int], str] = {}
        dirs: set[str] = set()
        rules: dict[str, tuple[str, ...]] = {}
        sizes: dict[tuple[int, int], tuple[int, int]] = {}
        for t in self._targets:
            real = os.path.realpath(t.path)
            if os.path.isdir(real):
                dirs.add(real)
                rules[real] = rules.get(real, ()) + tuple(t.patterns)
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
                        sizes[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns)
                continue
            parent = os.path.dirname(real) or "."
            if os.path.isdir(parent):
                dirs.add(parent)
                rules[parent] = rules.get(parent, ()) + (os.path.basename(real),)
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
                sizes[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns)
        self._early_rules = rules  # one assignment: the notification thread reads it
        self._sizes = sizes
        return found, dirs

    def _discover(self, found: dict[tuple[int, int], str]) -> None:
        """Start following files seen for the first time (or recognise them as copies)."""
        for ident, path in found.items():
            key = _key(*ident)
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
                self._ambiguous_with(g, fd, size) for g in self._files.values()
            ):
                # Could still become a copy of a file we know: wait and see, holding the
                # descriptor, so a rotation meanwhile does not take the file out of reach.
                if not self._hold_pending(ident, fd, path):
                    self._close_fd(fd)
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

    def _release_pending(self, found: dict[tuple[int, int], str]) -> None:
        """Close held descriptors of files still at a watched path (the scan finds them
        again): over the descriptor cap only files already gone keep theirs."""
        with self._pending_lock:
            for ident in [i for i in self._pending if i in found]:
                self._close_fd(self._pending.pop(ident)[0])

    def _adopt_pending_gone(self, found: dict[tuple[int, int], str]) -> None:
        """Files opened early (or held undecided) that are no longer at a watched path: a
        rotation renamed them away (or deleted them) before a scan took them up. Read them
        like the rotated files they are, before anything newer at the same name."""
        with self._pending_lock:
            gone = []
            for ident, held in list(self._pending.items()):
                if _key(*ident) in self._files or ident in self._shadowed or ident in self._parked:
                    del self._pending[ident]
                    self._close_fd(held[0])  # followed already (renamed within our paths)
                elif ident not in found:
                    del self._pending[ident]
                    gone.append((ident, held))
        for ident, (fd, origin) in gone:
            key = _key(*ident)
            try:
                size = os.fstat(fd).st_size
            except OSError:
                self._close_fd(fd)
                continue
            if (
                size == 0
                or any(s.ambiguous(fd, size) for s in self._history)
                or any(self._ambiguous_with(g, fd, size) for g in self._files.values())
                or any(self._is_copy_of(g, fd, size) for g in self._files.values())
            ):
                # empty, or nothing but a prefix (or a copy) of content read through
                # another file: nothing of its own to read
                self._close_fd(fd)
                continue
            f = _opened(ident, fd, _current_path(fd, origin), origin, detached=True)
            snap = next((s for s in self._history if s.matches(fd, size)), None)
            if snap is not None:
                self._history.remove(snap)
                f.offset, f.line, f.skipping = snap.offset, snap.line, snap.skipping
                self._check_not_beyond_end(f, size)
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
        best: _File | None = None
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
        self._parked[(best.dev, best.ino)] = _Parked(
            best.key,
            best.path,
            best.origin,
            best.offset,
            best.line,
            self._refresh_head(best),
            best.last_size,
            best.last_mtime,
        )
        self._close_fd(best.fd)
        log.debug("%s is idle: its descriptor is closed until it changes", best.path)
        return True

    def _unpark(self, found: dict[tuple[int, int], str]) -> None:
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
            f = _opened(ident, fd, path, p.origin, offset=p.offset, line=p.line, head=p.head)
            f.last_size, f.last_mtime = p.size, p.mtime
            self._files[f.key] = f

    def _note_preexisting_rotated(self, found: dict[tuple[int, int], str]) -> None:
        """First start: rotated files already beside a watched one predate zeekndm. They
        are not read (the current file is where following starts), and they are
        remembered as read, so a later restart never takes them up late, out of order."""
        since_ns = int((time.time() - 2 * _ADOPT_MARGIN) * 1e9)
        counts: dict[str, int] = {}
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
                if not stat.S_ISREG(st.st_mode) or ident in found:
                    continue
                counts[origin] = counts.get(origin, 0) + 1
                if st.st_mtime_ns < since_ns:
                    continue  # too old to ever look rotated-while-stopped
                try:
                    with open(entry.path, "rb") as fh:
                        head = fh.read(FINGERPRINT_BYTES)
                except OSError:
                    continue
                if head:
                    self._history.append(
                        _Snapshot(len(head), _sha(head), None, st.st_size, 0, False, entry.path)
                    )
        for origin, n in counts.items():
            log.info(
                "%d rotated file(s) beside %s predate this first start and are not read "
                "(zeekndm replay reads them if needed)",
                n,
                origin,
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
        if (
            not isinstance(state, dict)
            or state.get("version") != STATE_VERSION
            or not isinstance(entries, list)
        ):
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
                        "key": _text(e["key"]),
                        "dev": _count(e["dev"]),
                        "ino": _count(e["ino"]),
                        "fp": _text(e["fp"]),
                        "fp_len": _count(e["fp_len"], FINGERPRINT_BYTES),
                        "path": _text(e["path"]),
                        "origin": _text(e.get("origin", e["path"])),
                        "offset": _count(e["offset"]),
                        "line": _count(e["line"]),
                        "size": _count(e.get("size", e["offset"])),
                        "skipping": e.get("skipping", False) is True,
                    }
                )
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring malformed follow state entry %.200r", e)
        saved_at = state.get("saved_at")
        self._saved_at = (
            float(saved_at)
            if isinstance(saved_at, (int, float)) and not isinstance(saved_at, bool)
            else None
        )
        ended = state.get("ended")
        for e in ended if isinstance(ended, list) else []:
            try:
                self._resume_ended.append(
                    _Snapshot(
                        _count(e["fp_len"], FINGERPRINT_BYTES),
                        _text(e["fp"]),
                        None,
                        _count(e["offset"]),
                        _count(e["line"]),
                        False,
                        _text(e.get("path", "")),
                    )
                )
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring malformed follow state entry %.200r", e)
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
        known = set(found) | {(f.dev, f.ino) for f in self._files.values()} | set(self._parked)
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


_MAX_OFFSET = 1 << 62  # beyond any file; keeps os.pread away from an OverflowError


def _count(value: object, limit: int = _MAX_OFFSET) -> int:
    """A saved non-negative integer (offset, inode, length), or ValueError."""
    if type(value) is not int or not 0 <= value <= limit:
        raise ValueError(f"not a count: {value!r}")
    return value


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r}")
    return value


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line
