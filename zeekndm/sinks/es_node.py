"""The HTTP node the Elasticsearch client uses: an overall deadline per request, and a stop.

See `zeekndm.sinks.deadline` for why: a request fails as a `ConnectionTimeout` ("no
complete answer within N s") when its deadline passes, whatever the server drips, and
`interrupt()` ends every request under way at once.
"""

from __future__ import annotations

from typing import Any

from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout, Urllib3HttpNode
from elastic_transport._models import DEFAULT

from zeekndm.sinks.deadline import INTERRUPTED, RequestDeadline, expired_message


class DeadlineHttpNode(Urllib3HttpNode):
    """`Urllib3HttpNode` whose request timeout bounds the whole request."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._deadline = RequestDeadline()
        self._deadline.track(self.pool)

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Any = None,
        request_timeout: Any = DEFAULT,
    ) -> Any:
        timeout = self.config.request_timeout if request_timeout is DEFAULT else request_timeout
        return self._deadline.call(
            timeout,
            lambda: super(DeadlineHttpNode, self).perform_request(
                method, target, body=body, headers=headers, request_timeout=request_timeout
            ),
            (TransportConnectionError, ConnectionTimeout),
            lambda: TransportConnectionError(INTERRUPTED),
            lambda t: ConnectionTimeout(expired_message(t)),
        )

    def interrupt(self) -> None:
        """Fail the request under way (and later ones) at once; safe in a signal handler."""
        self._deadline.interrupt()

    def resume(self) -> None:
        self._deadline.resume()
