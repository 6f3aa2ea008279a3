"""Change notification: watchdog (inotify) to wake the follower, and a small inotify thread
of our own that hands new files over the moment they appear.

Notification only wakes the follower early; the poll (`poll_interval`) backs it up,
because notification silently fails on some file systems (NFS, some container mounts)
and does not follow symlinks such as Zeek's `logs/current`. If watchdog cannot start,
the follower polls and says so.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zeekndm.signalsafe import SignalSafeEvent

log = logging.getLogger(__name__)


class CreateWatch(threading.Thread):
    """Hands new files in the watched directories over the moment they appear (inotify
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


class Watch:
    """watchdog's observer over the watched directories (`watch_dirs`), waking `wake`, plus
    a `CreateWatch` calling `on_create(path)` for every file created or moved in."""

    def __init__(
        self,
        wake: SignalSafeEvent,
        on_create: Callable[[str], None],
        targets: int,
        poll_interval: float,
    ) -> None:
        self._observer = None
        self._create_watch: CreateWatch | None = None
        self._watches: dict[str, object] = {}
        self._warned: set[str] = set()
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

        def created(path: str) -> None:
            on_create(path)
            wake.set()

        try:
            self._create_watch = CreateWatch(created)
            self._create_watch.start()
        except (OSError, AttributeError) as exc:  # not Linux, or no inotify left
            log.debug("no early opening of new files: %s", exc)
            self._create_watch = None
        log.info(
            "following %d target(s) with %s notification, polling every %.2fs as backup",
            targets,
            type(observer).__name__,
            poll_interval,
        )

    @property
    def active(self) -> bool:
        return self._observer is not None

    @property
    def opens_early(self) -> bool:
        return self._create_watch is not None

    def watch_dirs(self, dirs: set[str]) -> None:
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
                if d not in self._warned:
                    self._warned.add(d)
                    log.warning("cannot watch %s (%s); polling it", d, exc)

    def stop(self) -> None:
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
