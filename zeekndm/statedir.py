"""The state directory: where live mode keeps its registry, the Elasticsearch spool and
the dead-letter file.

One default, `/var/lib/zeekndm` (what the systemd unit's `StateDirectory=` creates and
the config file names), used by `run`, `replay` and `status` alike. It holds alerts not
yet delivered and what was read of the sensor's logs, so it is created owner-only, and
`run` refuses a directory that anyone may write to: another local user could replace the
registry (skipping or replaying input) or the spool (injecting alerts).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from zeekndm.errors import ZeekNDMError

DEFAULT_STATE_DIR = "/var/lib/zeekndm"


def make_private_dirs(path: str | os.PathLike, mode: int = 0o700) -> None:
    """Create `path` and any missing parent with `mode` (default 0700, owner only), whatever
    the umask. Directories that exist are left as they are."""
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


def refuse_world_writable(path: str | os.PathLike) -> None:
    """Raise if `path` (an existing state directory) may be written by anyone: a shared
    directory such as /tmp is only safe with the sticky bit, and not even then for state
    that decides what is read and sent."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ZeekNDMError(
            f"cannot use the state directory: {exc.strerror}", file=str(path)
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise ZeekNDMError("the state directory is not a directory", file=str(path))
    if st.st_mode & stat.S_IWOTH:
        raise ZeekNDMError(
            f"the state directory is writable by every user (mode {stat.S_IMODE(st.st_mode):04o}); "
            "another user could rewrite the registry or the spool: use a directory of "
            f"zeekndm's own (the default is {DEFAULT_STATE_DIR}) or chmod o-w it",
            file=str(path),
        )
