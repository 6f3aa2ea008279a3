"""An on-disk queue of alerts the Elasticsearch output could not deliver yet.

Why: when the cluster is down for minutes, the pipeline must keep reading (input offsets
move only after the output acknowledged), so alerts are appended here, fsynced, and only
then acknowledged; they are sent again, oldest first, once the cluster answers. Alerts
carry deterministic ids, so sending a spooled alert twice (after a crash in the middle of
a drain) leaves one copy in Elasticsearch.

Layout: NDJSON segments `seg-<n>.ndjson` under one directory, one `{"id", "doc"}` object
per line. The newest segment takes appends until it reaches `segment_bytes`; draining
reads whole segments in order and deletes each one after every alert in it is settled.
The total size is bounded; when full, `append` refuses and the caller keeps the batch
for retry rather than dropping it.

One process at a time: a `zeekndm replay` pointed at the service's config would otherwise
drain (and delete) the service's segments while the service appends to them. The spool
takes a POSIX lock on `<directory>.lock` beside it for as long as the process lives (per
process, so one process may open the same spool again, as a restart within tests does);
another process finds it held and is refused with the holder's pid, rather than given a
private spool that nothing would ever drain once it exits.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import orjson

from zeekndm.enrich import Alert
from zeekndm.errors import SinkError
from zeekndm.statedir import make_private_dirs

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"^seg-(\d{12})\.ndjson$")
LOCK_SUFFIX = ".lock"  # beside the directory: <state_dir>/es-spool-<namespace>.lock


class Spool:
    """Append-only, size-bounded NDJSON segments; read back in order."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        segment_bytes: int = 8 << 20,
        product: str = "Elasticsearch",  # whose spool, in messages
    ) -> None:
        self.product = product
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        make_private_dirs(self.directory)
        self._lock_fd: int | None = None
        self._lock()
        self._full_warned = False

    def _lock(self) -> None:
        path = self.directory.with_name(self.directory.name + LOCK_SUFFIX)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise SinkError(
                f"the {self.product} spool is in use by another zeekndm process (pid {holder}), "
                "most likely the `zeekndm run` service; sharing it would send or delete its "
                "alerts behind its back: give this command its own --state-dir",
                file=str(self.directory),
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Release the lock (also released when the process exits)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- inspection ---------------------------------------------------------------------
    def segments(self) -> list[Path]:
        """Segment files, oldest first."""
        found = []
        for entry in self.directory.iterdir():
            m = _SEGMENT.match(entry.name)
            if m:
                found.append((int(m.group(1)), entry))
        return [p for _, p in sorted(found)]

    @property
    def size(self) -> int:
        total = 0
        for p in self.segments():
            try:
                total += p.stat().st_size
            except FileNotFoundError:  # pragma: no cover - removed concurrently
                pass
        return total

    def __bool__(self) -> bool:
        return bool(self.segments())

    def count(self) -> int:
        """Number of spooled alerts (reads the files; for stats and tests)."""
        return sum(len(self.read(p)) for p in self.segments())

    # -- writing ------------------------------------------------------------------------
    def append(self, alerts: Sequence[Alert]) -> bool:
        """Append and fsync; False (nothing written) when the spool would exceed max_bytes."""
        if not alerts:
            return True
        data = b"".join(orjson.dumps({"id": a.id, "doc": a.doc}) + b"\n" for a in alerts)
        if self.size + len(data) > self.max_bytes:
            if not self._full_warned:
                log.warning(
                    "%s spool %s is full (%d bytes max): alerts stay queued in "
                    "memory and input reading will stall until the cluster answers again",
                    self.product,
                    self.directory,
                    self.max_bytes,
                )
                self._full_warned = True
            return False
        self._full_warned = False
        segs = self.segments()
        if segs and segs[-1].stat().st_size + len(data) <= self.segment_bytes:
            target = segs[-1]
        else:
            target = self._next_segment(segs)
        self._write(target, data)
        return True

    def _next_segment(self, segs: list[Path]) -> Path:
        n = int(_SEGMENT.match(segs[-1].name).group(1)) + 1 if segs else 1  # type: ignore[union-attr]
        return self.directory / f"seg-{n:012d}.ndjson"

    def _write(self, path: Path, data: bytes) -> None:
        new = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            self._fsync_dir()

    def _fsync_dir(self) -> None:
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(fd)
        except OSError:  # pragma: no cover
            pass
        finally:
            os.close(fd)

    # -- reading ------------------------------------------------------------------------
    def read(self, path: Path) -> list[Alert]:
        """The alerts of one segment; a torn last line (crash mid-append) is skipped."""
        alerts = []
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                    alerts.append(Alert(str(obj["id"]), obj["doc"]))
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    # never acknowledged: the append was not complete, the pipeline resends it
                    log.warning("%s:%d: skipping a torn spool line", path, lineno)
        return alerts

    def remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        self._fsync_dir()
