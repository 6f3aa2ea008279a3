"""Read a small file that must be a regular file: never block on a FIFO, never read a
device, never take more memory than the caller allows.

`open()` on a FIFO blocks until a writer appears (start-up hangs forever), and a path
that is a symlink to `/dev/zero` reads gigabytes. `read_regular_file` opens without
blocking, checks with `fstat` on the opened descriptor (no race with a rename between a
check and the open) that it is a regular file, and reads at most `max_bytes`. Config
files and state files (the registry) use it.
"""

from __future__ import annotations

import errno
import os
import stat

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of the regular file at `path` (symlinks followed), at most `max_bytes`.

    Raises OSError with a readable `strerror`: FileNotFoundError and the like as `open`
    does, EINVAL for anything that is not a regular file ("not a regular file (a
    FIFO)"), EFBIG for a file larger than `max_bytes`."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a file")
            raise OSError(errno.EINVAL, f"not a regular file ({kind})", str(path))
        if st.st_size > max_bytes:
            raise OSError(errno.EFBIG, _too_big(st.st_size, max_bytes), str(path))
        chunks = []
        left = max_bytes + 1  # one byte more shows a file that grew past the limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise OSError(errno.EFBIG, _too_big(len(data), max_bytes), str(path))
        return data
    finally:
        os.close(fd)


def _too_big(size: int, limit: int) -> str:
    return f"too large ({size:,} bytes or more; the limit is {limit:,})"
