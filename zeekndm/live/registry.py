"""The registry of live mode: where reading stopped, and the live state at that point.

Like Filebeat's registry, one JSON file in the state directory holds, for every followed
file, its identity and the offset after the last record whose alerts every sink has
acknowledged or spooled. It holds the detector's window state at the same point, the Zeek
header block in force in each file, the counters and the size of the NDJSON output, so
after a restart (or a SIGKILL) the records after the commit are read again, the detector
picks up exactly where those records found it, and the alerts they cause again carry the
same ids (which the sinks recognise as delivered).

`Registry` is the file: a commit is atomic (written to a temporary file, fsynced, renamed
over the old one, the directory fsynced), so a crash leaves the old registry or the new
one, never a torn file; a lock file keeps two `zeekndm run` from sharing a state
directory. `RegistryState` is what it holds, versioned, with one `to_dict`/`from_dict`
pair; a value of the wrong type inside is a warning and that part starts afresh.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from zeekndm.errors import ZeekNDMError
from zeekndm.live.follow.positions import FollowState
from zeekndm.regularfile import read_regular_file
from zeekndm.statedir import make_private_dirs

log = logging.getLogger(__name__)

REGISTRY_VERSION = 1
REGISTRY_NAME = "registry.json"
LOCK_NAME = "zeekndm.lock"
REGISTRY_MAX_BYTES = 512 << 20
"""A registry larger than this is refused (it holds offsets and window state: megabytes)."""


class Registry:
    """`load()` the last committed state and `commit(state)` a new one, atomically."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / REGISTRY_NAME
        self._lock_fd: int | None = None
        self.commits = 0

    def lock(self) -> None:
        """Take the state directory for this process; fail clearly if another one has it."""
        try:
            make_private_dirs(self.dir)
            fd = os.open(self.dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ZeekNDMError(
                f"cannot use the state directory: {exc.strerror}", file=str(self.dir)
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ZeekNDMError(
                "another zeekndm run is using this state directory (its lock file is held); "
                "give each instance its own --state-dir",
                file=str(self.dir),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def load(self) -> dict[str, Any] | None:
        """The last committed state, or None on a first start.

        A registry that cannot be read is an error, not a fresh start: starting over
        would re-read (or skip) whole files without anyone noticing.
        """
        try:
            data = read_regular_file(self.path, REGISTRY_MAX_BYTES)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ZeekNDMError(
                f"cannot read the registry: {exc.strerror}; move it away to start reading "
                "from scratch",
                file=str(self.path),
            ) from None
        try:
            state = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ZeekNDMError(
                f"the registry is not valid JSON ({exc}); move it away to start reading "
                "from scratch",
                file=str(self.path),
            ) from None
        version = state.get("version") if isinstance(state, dict) else None
        if version != REGISTRY_VERSION:
            raise ZeekNDMError(
                f"unsupported registry version {version!r} (this zeekndm writes "
                f"{REGISTRY_VERSION})",
                file=str(self.path),
            )
        return state

    def commit(self, state: dict[str, Any]) -> None:
        """Replace the registry with `state` (JSON-able), atomically and durably."""
        data = orjson.dumps({**state, "version": REGISTRY_VERSION})
        tmp = self.path.with_name(f".{REGISTRY_NAME}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.commits += 1


@dataclass
class Totals:
    """Counters that survive restarts (they are committed with the offsets)."""

    records: int = 0
    bad_lines: int = 0
    notices: int = 0
    alerts: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "bad_lines": self.bad_lines,
            "notices": self.notices,
            "alerts": dict(self.alerts),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Totals:
        """The saved counters; a value of the wrong type is a warning and counts from 0
        (counters are for operators, never a reason not to start)."""
        if data is None:
            return cls()
        if not isinstance(data, dict):
            log.warning("registry: totals is %s, not a mapping; counting from 0", _kind(data))
            return cls()

        def count(name: str) -> int:
            value = data.get(name, 0)
            if type(value) is int and value >= 0:
                return value
            log.warning("registry: totals.%s is %r, not a count; counting from 0", name, value)
            return 0

        alerts: Counter = Counter()
        raw = data.get("alerts", {})
        if isinstance(raw, dict):
            for k, v in raw.items():
                if type(v) is int and v >= 0:
                    alerts[str(k)] = v
                else:
                    log.warning("registry: totals.alerts.%s is %r, not a count; ignored", k, v)
        else:
            log.warning("registry: totals.alerts is %s, not a mapping; ignored", _kind(raw))
        return cls(count("records"), count("bad_lines"), count("notices"), alerts)


HEADER_MAX_LINES = 64
"""A Zeek header block longer than this is not remembered whole (Zeek's own has 8 lines)."""


@dataclass(frozen=True)
class SavedHeader:
    """The Zeek TSV header block in force in a file at the commit, and whether the commit
    fell inside it (more of its lines follow)."""

    lines: tuple[bytes, ...]
    open: bool = False

    def to_dict(self) -> dict[str, Any]:
        # latin-1 maps every byte to one character: lossless through JSON
        return {"header": [ln.decode("latin-1") for ln in self.lines], "open": self.open}

    @classmethod
    def from_dict(cls, entry: Any) -> SavedHeader:
        header = entry.get("header") if isinstance(entry, dict) else None
        if not isinstance(header, list) or not all(isinstance(h, str) for h in header):
            raise ValueError("not a header block")
        lines = tuple(h.encode("latin-1") for h in header[:HEADER_MAX_LINES])
        return cls(lines, entry.get("open") is True)


@dataclass
class RegistryState:
    """Everything a commit saves, at one point of the input."""

    follow: FollowState = field(default_factory=FollowState)
    detector: dict[str, Any] | None = None
    streams: dict[str, SavedHeader] = field(default_factory=dict)
    totals: Totals = field(default_factory=Totals)
    ndjson: dict[str, int] = field(default_factory=dict)
    committed_at: float | None = None
    #: A Kafka input's view at the commit (group, member, per-partition offsets, lag and
    #: counters), for `zeekndm status`; its state and offsets live in Kafka itself.
    kafka: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            "follow": self.follow.to_dict(),
            "detector": self.detector,
            "streams": {k: h.to_dict() for k, h in self.streams.items()},
            "totals": self.totals.to_dict(),
            "ndjson": dict(self.ndjson),
            "committed_at": self.committed_at,
            "version": REGISTRY_VERSION,
        }
        if self.kafka is not None:
            out["kafka"] = self.kafka
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RegistryState:
        """The state of a loaded registry (see `Registry.load`); None is a first start."""
        if not data:
            return cls()
        detector = data.get("detector")
        if detector is not None and not isinstance(detector, dict):
            log.warning("registry: detector is %s, not a mapping; ignored", _kind(detector))
            detector = None
        committed_at = data.get("committed_at")
        kafka = data.get("kafka")
        if kafka is not None and not isinstance(kafka, dict):
            log.warning("registry: kafka is %s, not a mapping; ignored", _kind(kafka))
            kafka = None
        return cls(
            follow=FollowState.from_dict(data.get("follow")),
            detector=detector,
            streams=_streams(data.get("streams")),
            totals=Totals.from_dict(data.get("totals")),
            ndjson=_positions(data.get("ndjson")),
            committed_at=float(committed_at)
            if isinstance(committed_at, (int, float)) and not isinstance(committed_at, bool)
            else None,
            kafka=kafka,
        )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _streams(data: Any) -> dict[str, SavedHeader]:
    out: dict[str, SavedHeader] = {}
    if data is None:
        return out
    if not isinstance(data, dict):
        log.warning("registry: streams is %s, not a mapping; ignored", _kind(data))
        return out
    for key, entry in data.items():
        try:
            out[str(key)] = SavedHeader.from_dict(entry)
        except (ValueError, UnicodeEncodeError):
            log.warning("registry: streams.%s is malformed; ignored", key)
    return out


def _positions(data: Any) -> dict[str, int]:
    """`ndjson`: output path -> its size at the commit."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        log.warning("registry: ndjson is %s, not a mapping; ignored", _kind(data))
        return {}
    out = {}
    for path, offset in data.items():
        if type(offset) is int and offset >= 0:
            out[str(path)] = offset
        else:
            log.warning("registry: ndjson position of %s is %r; ignored", path, offset)
    return out
