"""An overall deadline per HTTP request, and a stop, for the search clients' connections.

Why: urllib3's timeouts (and so the clients' `request_timeout`) apply to each socket
operation, not to the request. A server (or a proxy) that sends one byte every two
seconds never trips a 30 s read timeout and holds `replay` forever, and `run` with it.
`RequestDeadline` starts a timer with every request; when the deadline passes it shuts
the connection's sockets down, which ends the blocked read at once, and the request fails
as a timeout ("no complete answer within N s") that the sink retries or spools.

`interrupt()` does the same on demand (from a signal handler, say): every request under
way fails at once and new ones fail until `resume()`. A shut-down socket is simply
replaced by a new connection on the next request. The Elasticsearch node
(`zeekndm.sinks.es_node`) and the OpenSearch connection (`zeekndm.sinks.os_node`) each
wrap their client's urllib3 request in `RequestDeadline.call`.
"""

from __future__ import annotations

import socket
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from zeekndm.signalsafe import SignalSafeEvent

T = TypeVar("T")
INTERRUPTED = "interrupted: zeekndm is stopping"


class RequestDeadline:
    """Tracks the sockets of one urllib3 pool; bounds calls by a deadline; interrupts them."""

    def __init__(self) -> None:
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._interrupted = SignalSafeEvent()  # set() from a signal handler

    def track(self, pool: Any) -> None:
        """Remember every socket `pool` connects from now on."""
        sockets = self._sockets
        base = pool.ConnectionCls

        class _Tracked(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                super().connect()
                sock = getattr(self, "sock", None)
                if sock is not None:
                    sockets.add(sock)

        pool.ConnectionCls = _Tracked

    def call(
        self,
        timeout: float | None,
        request: Callable[[], T],
        failures: tuple[type[BaseException], ...],
        interrupted: Callable[[], BaseException],
        expired: Callable[[float], BaseException],
    ) -> T:
        """`request()`, ended after `timeout` seconds. A failure of `failures` while
        interrupted becomes `interrupted()`, one after the deadline `expired(timeout)`."""
        if self._interrupted.is_set():
            raise interrupted()
        passed = threading.Event()
        timer = None
        if timeout:
            timer = threading.Timer(timeout, self._expire, args=(passed,))
            timer.daemon = True
            timer.start()
        try:
            return request()
        except failures as exc:
            if self._interrupted.is_set():
                raise interrupted() from exc
            if passed.is_set():
                raise expired(timeout or 0.0) from exc
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, passed: threading.Event) -> None:
        passed.set()
        self._shutdown_sockets()

    def _shutdown_sockets(self) -> None:
        for sock in list(self._sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def interrupt(self) -> None:
        """Fail the request under way (and later ones) at once; safe in a signal handler."""
        self._interrupted.set()
        self._shutdown_sockets()

    def resume(self) -> None:
        self._interrupted.clear()


def expired_message(timeout: float) -> str:
    return f"no complete answer within {timeout:g} s (request deadline)"
