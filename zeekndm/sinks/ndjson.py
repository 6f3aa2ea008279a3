"""The default output: one ECS alert per line as JSON, to a file or to stdout.

Appends and flushes every batch; with a file path, also fsyncs, so an acknowledged
batch is on disk before input offsets move.

Live mode resumes from its last committed input offsets after a crash and re-detects the
alerts of the records read since; those alerts are already in the file. `position()` is
recorded with each commit, and `skip_written_since(offset)` makes the sink drop exactly
the ids found in the file after that offset, so a file output gets each alert once, as
Elasticsearch does through its 409 on a known `_id`.
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
        self._skip: set[str] = set()  # ids already written (see skip_written_since)
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

    def position(self) -> int | None:
        """Bytes in the output file now (None for a stream)."""
        if self.path is None:
            return None
        return self._stream.tell()

    def skip_written_since(self, offset: int) -> int:
        """Remember the ids of the alerts written after `offset`, and do not write them
        again. A partial last line (the process died inside a write) is cut off first.
        Returns how many ids will be skipped."""
        if self.path is None:
            return 0
        self._stream.flush()
        with open(self.path, "rb") as f:
            f.seek(max(0, offset))
            tail = f.read()
        if tail and not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            log.warning(
                "%s ends with a partial alert line (%d bytes, from an interrupted write); "
                "removing it",
                self.path,
                len(tail) - cut,
            )
            os.truncate(self.path, max(0, offset) + cut)
            self._stream.seek(0, os.SEEK_END)
            tail = tail[:cut]
        for line in tail.splitlines():
            try:
                self._skip.add(orjson.loads(line)["event"]["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
        return len(self._skip)

    def send(self, batch: Sequence[Alert]) -> SendResult:
        if self._skip:
            kept = [a for a in batch if a.id not in self._skip]
            self._skip.difference_update(a.id for a in batch)
            skipped = len(batch) - len(kept)
            batch = kept
            if not batch:
                return SendResult(acked=skipped)
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
