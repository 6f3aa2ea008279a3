"""How a followed file is recognised: by identity (device, inode) and by a fingerprint of
its first bytes, never by its name.

Names move during rotation, inodes are reused after a deletion, and a copy (logrotate's
copytruncate) has a new inode but the old content; so the key callers store is
`"dev:inode"`, and content is compared through the first `FINGERPRINT_BYTES`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

from zeekndm.live.follow.positions import FINGERPRINT_BYTES, EndedFile

__all__ = [
    "FINGERPRINT_BYTES",
    "Snapshot",
    "current_path",
    "file_key",
    "is_copy",
    "open_identified",
    "sha",
    "starts_like",
]

log = logging.getLogger(__name__)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_key(dev: int, ino: int) -> str:
    return f"{dev}:{ino}"


def current_path(fd: int, fallback: str) -> str:
    """The file's name now (Linux /proc knows renames); `fallback` where it cannot tell."""
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return fallback
    if name.endswith(" (deleted)") or not name.startswith("/"):
        return fallback
    return name


def starts_like(head: bytes, fd: int, size: int) -> bool:
    """The file at `fd` is still shorter than `head` and equal to its start: it may yet
    become a copy of the file `head` belongs to (wait and see)."""
    if not head or size >= len(head):
        return False
    return head.startswith(os.pread(fd, size, 0))


def is_copy(head: bytes, fd: int, size: int) -> bool:
    """The file at `fd` begins with all of `head`: the same content."""
    if not head or size < len(head):
        return False
    return os.pread(fd, len(head), 0) == head


def open_identified(path: str, ident: tuple[int, int]) -> int:
    """A read descriptor of `path` if it is still the file `ident`; raises OSError, or
    returns -1 when the path now names another file (replaced since it was scanned)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != ident:
        os.close(fd)
        return -1
    return fd


@dataclass
class Snapshot:
    """What is known of a file that ended or was truncated: enough to recognise its copy."""

    fp_len: int
    fp_hex: str
    head: bytes | None
    offset: int
    line: int
    skipping: bool = False
    path: str = ""
    lost_bytes: int = 0  # for entries from a previous run's state: unread bytes known then
    from_state: bool = False
    key: str = ""  # for entries from a previous run's state: the key callers know it by
    origin: str = ""

    def matches(self, fd: int, size: int) -> bool:
        if self.fp_len == 0 or size < self.fp_len:
            return False
        return sha(os.pread(fd, self.fp_len, 0)) == self.fp_hex

    def ambiguous(self, fd: int, size: int) -> bool:
        """A candidate still shorter than our head and equal to its start: wait and see."""
        if self.head is None or size >= self.fp_len:
            return False
        return self.head.startswith(os.pread(fd, size, 0))

    def ended(self) -> EndedFile:
        return EndedFile(self.fp_hex, self.fp_len, self.offset, self.line, self.path)

    @classmethod
    def of_ended(cls, e: EndedFile) -> Snapshot:
        return cls(e.fp_len, e.fp, None, e.offset, e.line, path=e.path)
