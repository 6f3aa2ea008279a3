"""The registry of live mode: where reading stopped, and the detector state at that point.

Like Filebeat's registry, one JSON file in the state directory holds, for every followed
file, its identity and the offset after the last record whose alerts every sink has
acknowledged or spooled. It holds the detector's window state at the same point and the
size of the NDJSON output, so after a restart (or a SIGKILL) the records after the commit
are read again, the detector picks up exactly where those records found it, and the
alerts they cause again carry the same ids (which the sinks recognise as delivered).

A commit is atomic: the new registry is written to a temporary file, fsynced and renamed
over the old one, and the directory is fsynced, so a crash leaves the old registry or the
new one, never a torn file. A lock file keeps two `zeekndm run` from sharing a state
directory, which would make each skip the other's records.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import orjson

from zeekndm.errors import ZeekNDMError
from zeekndm.regularfile import read_regular_file

log = logging.getLogger(__name__)

REGISTRY_VERSION = 1
REGISTRY_NAME = "registry.json"
LOCK_NAME = "zeekndm.lock"
REGISTRY_MAX_BYTES = 512 << 20
"""A registry larger than this is refused (it holds offsets and window state: megabytes)."""


def make_private_dirs(path: str | os.PathLike, mode: int = 0o700) -> None:
    """Create `path` and any missing parent with `mode` (default 0700, owner only), whatever
    the umask: the state directory holds alerts (the spool) and what was read of the
    sensor's logs. Directories that exist are left as they are."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            continue
        os.chmod(p, mode)  # exactly `mode`: mkdir's is masked by the umask


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
