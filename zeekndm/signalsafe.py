"""An event flag that a signal handler may set: `threading.Event` without its lock.

Why: Python runs a signal handler in the main thread, between two bytecodes of whatever
the main thread was doing. `threading.Event.set()` takes the event's lock; if the handler
interrupts the main thread while the main thread itself holds that lock (inside `clear()`,
or in `wait()` just before or after it sleeps), the handler waits for a lock its own thread
will never release, and the process hangs for good, deaf to every later SIGTERM. The live
loop calls `clear()` and `wait()` many times a second, so a SIGTERM now and then landed
there (seen as `zeekndm run` not stopping).

`SignalSafeEvent` keeps the flag in a plain attribute (assignments are atomic under the
GIL) and wakes waiters through a non-blocking pipe: `set()` writes one byte, `wait()`
selects on the read end, `clear()` drains it. `set()` takes no lock and never blocks (a
full pipe already means a wake-up is pending), so it is safe from a signal handler and
from any thread. Same methods as `threading.Event`: `set`, `clear`, `is_set`, `wait`.
"""

from __future__ import annotations

import os
import select
import time

__all__ = ["SignalSafeEvent"]


class SignalSafeEvent:
    """A `threading.Event` that signal handlers may `set()` (see the module docstring)."""

    def __init__(self) -> None:
        self._flag = False
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        self._flag = True
        try:
            os.write(self._w, b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def clear(self) -> None:
        # The flag first: a set() racing with the drain below leaves the flag True, and
        # wait() looks at the flag before it sleeps, so no wake-up is lost.
        self._flag = False
        self._drain()

    def _drain(self) -> None:
        try:
            os.read(self._r, 65536)  # one read empties a pipe of default size
        except OSError:  # empty (EAGAIN) or closed
            pass

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until `set()` or `timeout` s; return the flag (as `threading.Event`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._flag:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                # select() retries after a signal handler (PEP 475) with the time left; a
                # handler that called set() has made the pipe readable, so it returns at
                # once.
                ready, _, _ = select.select([self._r], [], [], left)
            except (OSError, ValueError):  # closed under us: behave like a timeout
                return self._flag
            if ready and not self._flag:
                # A byte from a set() that a clear() has since undone (set() raised the
                # flag, clear() reset it and drained before set() wrote): drop it, or
                # every later wait() would return at once.
                self._drain()
        return True

    def close(self) -> None:
        """Release the pipe (later calls act as on a never-set event that times out)."""
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._r = self._w = -1

    def __del__(self) -> None:
        if getattr(self, "_r", -1) >= 0:
            self.close()
