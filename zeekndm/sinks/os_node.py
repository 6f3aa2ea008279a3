"""The HTTP connection the OpenSearch client uses: an overall deadline per request, and a stop.

See `zeekndm.sinks.deadline` for why: a request fails as a `ConnectionTimeout` ("no
complete answer within N s") when its deadline passes, whatever the server drips, and
`interrupt()` ends every request under way at once. urllib3 underneath, as for the
Elasticsearch client, so basic auth and AWS SigV4 signing (opensearch-py's
`Urllib3AWSV4SignerAuth`, which signs each request as it is sent) share it.
"""

from __future__ import annotations

from typing import Any

from opensearchpy import ConnectionError as OpenSearchConnectionError
from opensearchpy import ConnectionTimeout, Urllib3HttpConnection

from zeekndm.sinks.deadline import INTERRUPTED, RequestDeadline, expired_message


class DeadlineConnection(Urllib3HttpConnection):
    """`Urllib3HttpConnection` whose timeout bounds the whole request."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._deadline = RequestDeadline()  # before the pool is made in super().__init__
        super().__init__(*args, **kwargs)

    def _create_urllib3_pool(self) -> None:
        super()._create_urllib3_pool()  # also after close(): a new pool, tracked again
        self._deadline.track(self.pool)

    def perform_request(
        self,
        method: str,
        url: str,
        params: Any = None,
        body: Any = None,
        timeout: Any = None,
        ignore: Any = (),
        headers: Any = None,
    ) -> Any:
        return self._deadline.call(
            timeout or self.timeout,
            lambda: super(DeadlineConnection, self).perform_request(
                method, url, params, body, timeout=timeout, ignore=ignore, headers=headers
            ),
            (OpenSearchConnectionError,),
            lambda: OpenSearchConnectionError("N/A", INTERRUPTED, None),
            lambda t: ConnectionTimeout("TIMEOUT", expired_message(t), None),
        )

    def interrupt(self) -> None:
        """Fail the request under way (and later ones) at once; safe in a signal handler."""
        self._deadline.interrupt()

    def resume(self) -> None:
        self._deadline.resume()
