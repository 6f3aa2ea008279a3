"""The default output: one ECS alert per line as JSON, to a file or to stdout.

Appends and flushes every batch; with a file path, also fsyncs, so an acknowledged
batch is on disk before input offsets move.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO, Sequence

import orjson

from zeekndm.enrich import Alert
from zeekndm.errors import SinkError
from zeekndm.sinks.base import SendResult

log = logging.getLogger(__name__)


class NDJSONSink:
    name = "ndjson"

    def __init__(self, path: str | Path | None = None, stream: IO[bytes] | None = None) -> None:
        """Write to `stream` (binary) or append to `path`; `-` means the given stream."""
        self._own = False
        self._fsync = False
        self.path = None if path in (None, "-") else Path(path)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._stream: IO[bytes] = open(self.path, "ab")
            except OSError as exc:
                raise SinkError(
                    f"cannot open NDJSON output: {exc.strerror}", file=str(path)
                ) from None
            self._own = True
            # fsync only means something for a regular file (not /dev/null, a FIFO, a tty)
            self._fsync = self.path.is_file()
        elif stream is not None:
            self._stream = stream
        else:
            raise SinkError("NDJSONSink needs a path or a stream")

    def send(self, batch: Sequence[Alert]) -> SendResult:
        if not batch:
            return SendResult()
        data = b"".join(orjson.dumps(a.doc) + b"\n" for a in batch)
        try:
            self._stream.write(data)
            self._stream.flush()
            if self._fsync:
                os.fsync(self._stream.fileno())
        except BrokenPipeError:
            raise
        except OSError as exc:
            # disk full or similar: nothing was acknowledged, so keep everything for retry
            log.warning("cannot write alerts to %s: %s", self.path or "stream", exc)
            return SendResult(retry=tuple(batch))
        return SendResult(acked=len(batch))

    def flush(self) -> SendResult:
        return SendResult()

    def close(self) -> None:
        if self._own:
            self._stream.close()
