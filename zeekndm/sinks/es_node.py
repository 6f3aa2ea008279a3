"""The HTTP node the Elasticsearch client uses: an overall deadline per request, and a stop.

Why: urllib3's timeouts (and so the client's `request_timeout`) apply to each socket
operation, not to the request. A server (or a proxy) that sends one byte every two
seconds never trips a 30 s read timeout and holds `replay` forever, and `run` with it.
This node starts a timer with every request; when the deadline passes it shuts the
node's sockets down, which ends the blocked read at once, and the request fails as a
`ConnectionTimeout` ("no complete answer within N s") that the sink retries or spools.

`interrupt()` does the same on demand (from a signal handler, say): every request under
way fails at once and new ones fail until `resume()`. A shut-down socket is simply
replaced by a new connection on the next request.
"""

from __future__ import annotations

import socket
import threading
import weakref
from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, Urllib3HttpNode
from elastic_transport._models import DEFAULT


class DeadlineHttpNode(Urllib3HttpNode):
    """`Urllib3HttpNode` whose request timeout bounds the whole request."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._interrupted = threading.Event()
        node = self
        base = self.pool.ConnectionCls

        class _Tracked(base):  # type: ignore[misc, valid-type]
            def connect(self) -> None:
                super().connect()
                sock = getattr(self, "sock", None)
                if sock is not None:
                    node._sockets.add(sock)

        self.pool.ConnectionCls = _Tracked

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Any = None,
        request_timeout: Any = DEFAULT,
    ) -> Any:
        if self._interrupted.is_set():
            raise TransportConnectionError("interrupted: zeekndm is stopping")
        timeout = self.config.request_timeout if request_timeout is DEFAULT else request_timeout
        expired = threading.Event()
        timer = None
        if timeout:
            timer = threading.Timer(timeout, self._expire, args=(expired,))
            timer.daemon = True
            timer.start()
        try:
            return super().perform_request(
                method, target, body=body, headers=headers, request_timeout=request_timeout
            )
        except (TransportConnectionError, ConnectionTimeout) as exc:
            if self._interrupted.is_set():
                raise TransportConnectionError("interrupted: zeekndm is stopping") from exc
            if expired.is_set():
                raise ConnectionTimeout(
                    f"no complete answer within {timeout:g} s (request deadline)"
                ) from exc
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, expired: threading.Event) -> None:
        expired.set()
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
