"""The default output: one ECS alert per line as JSON, to a file or to stdout.

Appends and flushes every batch; with a file path, also fsyncs, so an acknowledged
batch is on disk before input offsets move. A batch is written whole or not at all: when
a write fails part-way (a full disk), the file is cut back to where the batch began
before the batch is offered for retry, so a retry never leaves a torn line or a
duplicate alert. An alert that cannot be encoded as JSON (an integer beyond 64 bits,
nesting past the encoder's limit) is rejected with the reason and dead-lettered, and
the rest of the batch is written.

The file must be in an existing directory: a mistyped `--output` directory is an error,
not a new directory.

Live mode resumes from its last committed input offsets after a crash and re-detects the
alerts of the records read since; those alerts are already in the file. `position()` is
recorded with each commit, and `skip_written_since(offset)` makes the sink drop exactly
the ids found in the file after that offset, so a file output gets each alert once, as
Elasticsearch does through its 409 on a known `_id`.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Sequence

import orjson

from zeekndm.enrich import Alert
from zeekndm.errors import SinkError
from zeekndm.sinks.base import SendResult

log = logging.getLogger(__name__)


class NDJSONSink:
    name = "ndjson"

    def __init__(
        self,
        path: str | Path | None = None,
        stream: IO[bytes] | None = None,
        *,
        dead_letter_path: str | Path | None = None,
    ) -> None:
        """Write to `stream` (binary) or append to `path`; `-` means the given stream.

        `dead_letter_path`: where alerts that cannot be encoded go (with the reason);
        None only logs them."""
        self._own = False
        self._fsync = False
        self._skip: set[str] = set()  # ids already written (see skip_written_since)
        self.path = None if path in (None, "-") else Path(path)
        self.dead_letter_path = None if dead_letter_path is None else Path(dead_letter_path)
        self.dead_lettered = 0
        if self.path is not None:
            parent = self.path.parent
            if not parent.is_dir():
                raise SinkError(
                    f"cannot open NDJSON output: directory {parent} does not exist",
                    file=str(path),
                )
            try:
                # Unbuffered: a failed write leaves nothing behind in a buffer that a
                # later flush would add after the file was cut back.
                self._stream: IO[bytes] = open(self.path, "ab", buffering=0)
            except OSError as exc:
                raise SinkError(
                    f"cannot open NDJSON output: {exc.strerror}", file=str(path)
                ) from None
            self._own = True
            # fsync (and cutting back) only mean something for a regular file (not
            # /dev/null, a FIFO, a tty)
            self._fsync = self.path.is_file()
        elif stream is not None:
            self._stream = stream
        else:
            raise SinkError("NDJSONSink needs a path or a stream")

    def reopen(self) -> None:
        """Open `path` again (after logrotate renamed the file away): later alerts go to a
        new file at the path. The caller commits right before, so nothing written to the
        old file is left to be skipped or written again."""
        if self.path is None or not self._own:
            return
        try:
            stream: IO[bytes] = open(self.path, "ab", buffering=0)
        except OSError as exc:
            log.warning("cannot reopen %s (%s); still writing to the old file", self.path, exc)
            return
        self._stream.close()
        self._stream = stream
        self._fsync = self.path.is_file()
        log.info("reopened %s", self.path)

    def truncate(self) -> None:
        """Empty the output file (replay starts a fresh file unless told to append)."""
        if self.path is not None and self._fsync:
            os.ftruncate(self._stream.fileno(), 0)

    def position(self) -> int | None:
        """Bytes in the output file now (None for a stream)."""
        if self.path is None:
            return None
        return os.fstat(self._stream.fileno()).st_size

    def skip_written_since(self, offset: int) -> int:
        """Remember the ids of the alerts written after `offset`, and do not write them
        again. A partial last line (the process died inside a write) is cut off first.
        Returns how many ids will be skipped."""
        if self.path is None:
            return 0
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
            tail = tail[:cut]
        for line in tail.splitlines():
            try:
                self._skip.add(orjson.loads(line)["event"]["id"])
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
        return len(self._skip)

    def send(self, batch: Sequence[Alert]) -> SendResult:
        skipped = 0
        if self._skip:
            kept = [a for a in batch if a.id not in self._skip]
            self._skip.difference_update(a.id for a in batch)
            skipped = len(batch) - len(kept)
            batch = kept
            if not batch:
                return SendResult(acked=skipped)
        if not batch:
            return SendResult()
        lines = []
        written = []
        rejected = []
        for alert in batch:
            try:
                lines.append(orjson.dumps(alert.doc) + b"\n")
            except (TypeError, ValueError, RecursionError) as exc:  # JSONEncodeError
                reason = f"cannot be encoded as JSON: {exc}"
                self._dead_letter(alert, reason)
                rejected.append((alert.id, reason))
                continue
            written.append(alert)
        data = b"".join(lines)
        try:
            self._write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            # disk full or similar: nothing was acknowledged, so keep everything for retry
            log.warning("cannot write alerts to %s: %s", self.path or "stream", exc)
            return SendResult(rejected=tuple(rejected), retry=tuple(written))
        return SendResult(acked=len(written) + skipped, rejected=tuple(rejected))

    def _write(self, data: bytes) -> None:
        """Write `data` whole, or cut the file back to where it was and raise."""
        if not data:
            return
        if self.path is None:
            self._stream.write(data)
            self._stream.flush()
            return
        fd = self._stream.fileno()
        start = os.fstat(fd).st_size if self._fsync else None
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            if self._fsync:
                os.fsync(fd)
        except OSError:
            if start is not None:
                try:
                    os.ftruncate(fd, start)
                except OSError as exc:  # pragma: no cover - nothing more can be done
                    log.error("cannot cut %s back to %d bytes: %s", self.path, start, exc)
            raise

    def _dead_letter(self, alert: Alert, reason: str) -> None:
        """Record an alert that cannot be encoded: its id, rule and the reason (its
        document cannot be written, that is the problem)."""
        self.dead_lettered += 1
        log.error("alert %s cannot be written to %s: %s", alert.id, self.path or "stream", reason)
        if self.dead_letter_path is None:
            return
        rule = alert.doc.get("rule") if isinstance(alert.doc, dict) else None
        name = rule.get("name") if isinstance(rule, dict) else None
        record = {
            "@timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "output": str(self.path or "stream"),
            "id": alert.id,
            "rule": name if isinstance(name, str) else None,
            "reason": reason,
        }
        try:
            fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, orjson.dumps(record) + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
        except (OSError, TypeError) as exc:
            log.warning("cannot write %s: %s", self.dead_letter_path, exc)

    def flush(self) -> SendResult:
        return SendResult()

    def close(self) -> None:
        if self._own:
            self._stream.close()
