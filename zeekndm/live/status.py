"""`zeekndm status --state-dir DIR`: what a stopped or running instance has done, read
from its state directory (the registry, the spool, the dead-letter file, the lock).

The registry is committed about once a second while `run` is active, so for a running
instance the figures are at most a commit old; `lag` compares each file's committed
offset with its size now. Nothing is written: reading is safe while `run` holds the lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeekndm.live.registry import LOCK_NAME, Registry, RegistryState


@dataclass
class FileStatus:
    path: str
    offset: int
    line: int
    size_now: int | None  # None: the file is not at its saved path any more

    @property
    def lag_bytes(self) -> int | None:
        return None if self.size_now is None else max(0, self.size_now - self.offset)


@dataclass
class Status:
    state_dir: str
    running_pid: int | None
    committed_at: float | None
    records: int
    bad_lines: int
    notices: int
    alerts: dict[str, int]
    tracked_sources: int
    files: list[FileStatus] = field(default_factory=list)
    spool_alerts: int = 0
    spool_bytes: int = 0
    dead_letters: int = 0
    kafka: dict[str, Any] | None = None  # a Kafka input's group, partitions and lag

    def to_dict(self) -> dict[str, Any]:
        return {
            "state_dir": self.state_dir,
            "running_pid": self.running_pid,
            "committed_at": self.committed_at,
            "records": self.records,
            "bad_lines": self.bad_lines,
            "notices": self.notices,
            "alerts": dict(sorted(self.alerts.items())),
            "tracked_sources": self.tracked_sources,
            "files": [
                {
                    "path": f.path,
                    "offset": f.offset,
                    "line": f.line,
                    "size_now": f.size_now,
                    "lag_bytes": f.lag_bytes,
                }
                for f in self.files
            ],
            "spool_alerts": self.spool_alerts,
            "spool_bytes": self.spool_bytes,
            "dead_letters": self.dead_letters,
            **({"kafka": self.kafka} if self.kafka is not None else {}),
        }

    def lines(self, now: float | None = None) -> list[str]:
        now = time.time() if now is None else now
        state = (
            f"running (pid {self.running_pid})" if self.running_pid is not None else "not running"
        )
        committed = (
            "never"
            if self.committed_at is None
            else f"{time.strftime('%Y-%m-%dT%H:%M:%S%z', time.localtime(self.committed_at))} "
            f"({max(0.0, now - self.committed_at):.0f} s ago)"
        )
        out = [
            f"state directory: {self.state_dir}: {state}",
            f"last commit: {committed}",
            f"records={self.records} bad_lines={self.bad_lines} notices={self.notices} "
            f"tracked_sources={self.tracked_sources}",
            "alerts={" + ", ".join(f"{m}: {n}" for m, n in sorted(self.alerts.items())) + "}",
        ]
        for f in self.files:
            lag = "gone from its path" if f.lag_bytes is None else f"{f.lag_bytes}B behind"
            out.append(f"file {f.path}: line {f.line}, offset {f.offset}, {lag}")
        out.extend(kafka_lines(self.kafka))
        out.append(
            f"spool: {self.spool_alerts} alerts ({self.spool_bytes} bytes); "
            f"dead letters: {self.dead_letters}"
        )
        return out


def read_status(state_dir: str | os.PathLike) -> Status:
    """The status of the instance whose state directory is `state_dir` (ZeekNDMError for a
    registry that cannot be read, as `run` would refuse it)."""
    directory = Path(state_dir)
    raw = Registry(directory).load()
    state = RegistryState.from_dict(raw)
    tracks = (state.detector or {}).get("tracks")
    kafka_parts = (state.kafka or {}).get("partitions") if isinstance(state.kafka, dict) else None
    files = []
    for f in state.follow.files:
        try:
            st = os.stat(f.path)
            size = st.st_size if (st.st_dev, st.st_ino) == f.ident else None
        except OSError:
            size = None
        files.append(FileStatus(f.path, f.offset, f.line, size))
    spool_alerts = spool_bytes = 0
    for spool in sorted(directory.glob("es-spool-*")):
        if not spool.is_dir():
            continue
        for seg in spool.glob("seg-*.ndjson"):
            try:
                data = seg.read_bytes()
            except OSError:
                continue
            spool_bytes += len(data)
            spool_alerts += data.count(b"\n")
    dead = 0
    try:
        dead = (directory / "dead-letter.ndjson").read_bytes().count(b"\n")
    except OSError:
        pass
    return Status(
        state_dir=str(directory),
        running_pid=_lock_holder(directory),
        committed_at=state.committed_at,
        records=state.totals.records,
        bad_lines=state.totals.bad_lines,
        notices=state.totals.notices,
        alerts=dict(state.totals.alerts),
        tracked_sources=len({(t[0], t[1]) for t in tracks})
        if isinstance(tracks, list)
        else sum(
            p.get("tracked_sources", 0)
            for p in kafka_parts or []
            if isinstance(p, dict) and isinstance(p.get("tracked_sources", 0), int)
        ),
        files=files,
        spool_alerts=spool_alerts,
        spool_bytes=spool_bytes,
        dead_letters=dead,
        kafka=state.kafka,
    )


def kafka_lines(kafka: dict[str, Any] | None) -> list[str]:
    """A Kafka input's part of the status: the group, and each partition owned at the last
    commit with its committed offset, lag and counters."""
    if not isinstance(kafka, dict):
        return []
    rebalances = kafka.get("rebalances") or {}
    out = [
        f"kafka group {kafka.get('group')} as {kafka.get('member')}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(rebalances.items()))
        + (" partitions in rebalances" if rebalances else "no rebalance yet")
    ]
    for p in kafka.get("partitions") or []:
        if not isinstance(p, dict):
            continue
        bad = p.get("bad_lines", 0)
        out.append(
            f"partition {p.get('topic')}[{p.get('partition')}]: offset {p.get('offset')}, "
            f"lag {p.get('lag_messages', 0)} messages / {p.get('lag_seconds', 0):.0f} s, "
            f"records {p.get('records', 0)}, bad {bad}, misplaced {p.get('misplaced', 0)}"
        )
    return out


def _lock_holder(directory: Path) -> int | None:
    """The pid of the `run` holding the state directory, or None."""
    try:
        fd = os.open(directory / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
