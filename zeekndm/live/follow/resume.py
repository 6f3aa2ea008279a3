"""Continuing from a saved state: each saved file picked up where it was, files rotated
while zeekndm was stopped found and read, and what cannot be found reported as lost.

Zeek renames a rotated file beside the old name (standalone Zeek's `conn.<time>.log`) or
moves it into zeekctl's dated archive (`logs/YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log.gz`,
compressed); both are searched. These functions work on a `Follower`'s collections (they
are its resume step, kept apart because they run once, at the first tick).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import stat
import tempfile
import time
from typing import TYPE_CHECKING

from zeekndm.live.follow.harvester import Harvester
from zeekndm.live.follow.identity import Snapshot, sha
from zeekndm.live.follow.positions import FINGERPRINT_BYTES
from zeekndm.live.follow.scan import Ident, list_dirs, rotation_stems, still_at
from zeekndm.readers.gzipstream import MAGIC, GzipStream

if TYPE_CHECKING:
    from zeekndm.live.follow.follower import Follower

log = logging.getLogger(__name__)

ADOPT_MARGIN = 60.0  # s before a saved state within which a rotated file may be unread


def resume_from_state(fw: Follower, found: dict[Ident, str], dirs: set[str]) -> None:
    """Pick up each file of the saved state where it was, or say what was lost."""
    entries, fw._resume = fw._resume, []
    fw._history.extend(fw._resume_ended)
    fw._resume_ended = []
    everywhere: dict[Ident, str] | None = None
    for e in entries:
        ident = e.ident
        snap = Snapshot(
            e.fp_len,
            e.fp,
            None,
            e.offset,
            e.line,
            e.skipping,
            e.path,
            max(0, e.size - e.offset),
            from_state=True,
            key=e.key,
            origin=e.origin,
        )
        path = found.get(ident)
        if path is None:
            path = e.path if still_at(e.path, ident) else None
            if path is None:
                if everywhere is None:
                    everywhere = list_dirs(dirs)
                path = everywhere.get(ident)
        if path is None:
            archived = read_archived(fw, snap)
            if archived is not None:
                fw._files[archived.key] = archived
            else:
                fw._history.append(snap)
            continue
        fd = fw._open(path, ident)
        if fd is None:
            fw._history.append(snap)
            continue
        size = os.fstat(fd).st_size
        if not (snap.matches(fd, size) or (snap.fp_len == 0 and e.offset == 0)):
            fw._close_fd(fd)  # same inode, other content: a new file (the inode was reused)
            archived = read_archived(fw, snap)
            if archived is not None:
                fw._files[archived.key] = archived
            else:
                fw._history.append(snap)
            continue
        f = Harvester.opened(
            ident,
            fd,
            path,
            e.origin,
            offset=e.offset,
            line=e.line,
            skipping=e.skipping,
            new_file=e.offset == 0,
        )
        f.head = os.pread(fd, FINGERPRINT_BYTES, 0)
        f.check_not_beyond_end(size)
        fw._files[f.key] = f
    if entries:
        adopt_rotated_while_stopped(fw, found)
    # Old files found renamed must be finished before new files at their old names.
    order = sorted(fw._files.values(), key=lambda f: found.get((f.dev, f.ino)) is not None)
    fw._files = {f.key: f for f in order}


def adopt_rotated_while_stopped(fw: Follower, found: dict[Ident, str]) -> None:
    """Files that appeared and were renamed away from the watched names while we were
    stopped (Zeek rotates to `conn.<time>.log` beside `conn.log`): files next to a
    watched one, named like it, not known, are read too, oldest first, before the
    current file. One already read to its end is recognised by its fingerprint.
    Archives compressed by then (zeekctl gzips into a dated folder) are out of reach."""
    if fw._saved_at is None:
        return
    since_ns = int((fw._saved_at - ADOPT_MARGIN) * 1e9)
    known = set(found) | {(f.dev, f.ino) for f in fw._files.values()} | set(fw._parked)
    candidates = []
    for directory, stem, origin in rotation_stems(fw._targets):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(stem):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode) and ident not in known and st.st_mtime_ns >= since_ns:
                known.add(ident)
                candidates.append((st.st_mtime_ns, entry.path, ident, origin))
    for _, path, ident, origin in sorted(candidates):
        fd = fw._open(path, ident)
        if fd is None:
            continue
        size = os.fstat(fd).st_size
        head = os.pread(fd, FINGERPRINT_BYTES, 0)
        snap = next((s for s in fw._history if s.matches(fd, size)), None)
        if head.startswith(b"\x1f\x8b") or (snap is not None and snap.offset >= size):
            fw._close_fd(fd)  # compressed, or already read to its end (kept in history)
            continue
        f = Harvester.opened(
            ident,
            fd,
            path,
            origin,
            detached=True,
        )
        if snap is not None:
            fw._history.remove(snap)
            f.offset, f.line, f.skipping = snap.offset, snap.line, snap.skipping
        else:
            f.new_file = True
            log.info("%s was rotated while zeekndm was stopped; reading it", path)
        f.head = head
        fw._files[f.key] = f


def note_preexisting_rotated(fw: Follower, found: dict[Ident, str]) -> None:
    """First start: rotated files already beside a watched one predate zeekndm. They
    are not read (the current file is where following starts), and they are
    remembered as read, so a later restart never takes them up late, out of order."""
    since_ns = int((time.time() - 2 * ADOPT_MARGIN) * 1e9)
    counts: dict[str, int] = {}
    patterns = [p for t in fw._targets for p in t.patterns] + [
        os.path.basename(t.path) for t in fw._targets
    ]

    def watched(name: str) -> bool:  # a file the targets follow is not a rotated one
        return any(fnmatch.fnmatchcase(name, p) for p in patterns)

    for directory, stem, origin in rotation_stems(fw._targets):
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith(stem) or watched(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if not stat.S_ISREG(st.st_mode) or ident in found:
                continue
            counts[origin] = counts.get(origin, 0) + 1
            if st.st_mtime_ns < since_ns:
                continue  # too old to ever look rotated-while-stopped
            try:
                with open(entry.path, "rb") as fh:
                    head = fh.read(FINGERPRINT_BYTES)
            except OSError:
                continue
            if head:
                fw._history.append(
                    Snapshot(len(head), sha(head), None, st.st_size, 0, False, entry.path)
                )
    for origin, n in counts.items():
        log.info(
            "%d rotated file(s) beside %s predate this first start and are not read "
            "(zeekndm replay reads them if needed)",
            n,
            origin,
        )


ARCHIVE_DAYS = 7
"""How many days of zeekctl's dated archive are searched for a file rotated while stopped."""


def archive_dirs(fw: Follower) -> list[str]:
    """zeekctl's dated archive directories (`<logs>/YYYY-MM-DD/`) beside each target that
    is a `logs/current`-style directory, from the day before the saved state to today."""
    since = (fw._saved_at if fw._saved_at is not None else fw._wall()) - 86400
    days = []
    t = fw._wall()
    while t >= since and len(days) <= ARCHIVE_DAYS:
        days.append(time.strftime("%Y-%m-%d", time.localtime(t)))
        t -= 86400
    days.append(time.strftime("%Y-%m-%d", time.localtime(since)))
    out = []
    for target in fw._targets:
        root = os.path.dirname(os.path.abspath(target.path))
        for day in dict.fromkeys(days):
            d = os.path.join(root, day)
            if os.path.isdir(d) and d not in out:
                out.append(d)
    return out


def read_archived(fw: Follower, snap: Snapshot) -> Harvester | None:
    """The file of `snap`, rotated into zeekctl's dated archive while zeekndm was stopped
    (`logs/YYYY-MM-DD/conn.HH:MM:SS-HH:MM:SS.log.gz`, or `.log` when zeekctl does not
    compress): found by the fingerprint of its first bytes and continued at the saved
    offset under the saved key, so nothing written before the rotation is lost. A gzip
    archive is decompressed into an unlinked temporary file first. None when it is not
    there."""
    if not snap.fp_len:
        return None
    stem = os.path.basename(snap.path).split(".", 1)[0] + "."
    for directory in archive_dirs(fw):
        try:
            names = sorted(e.name for e in os.scandir(directory))
        except OSError:
            continue
        for name in names:
            if not name.startswith(stem):
                continue
            path = os.path.join(directory, name)
            head = _archived_head(path, snap.fp_len)
            if head is not None and len(head) == snap.fp_len and sha(head) == snap.fp_hex:
                return _unpack(fw, snap, path)
    return None


def _archived_head(path: str, n: int) -> bytes | None:
    """The first `n` bytes of an archived log (decompressed if it is gzip), or None."""
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None
            magic = fh.read(2)
            fh.seek(0)
            if magic != MAGIC:
                return fh.read(n)
            with GzipStream(fh) as g:
                head = b""
                while len(head) < n and (piece := g.read(n - len(head))):
                    head += piece
                return head
    except OSError:
        return None


def _unpack(fw: Follower, snap: Snapshot, path: str) -> Harvester | None:
    """A harvester for the archived file at `path`, at the saved position; the log says
    how many lines and bytes after the last commit it holds, and, for a damaged gzip
    archive, where the damage starts and that what follows it is lost."""
    damage = ""
    try:
        fh = open(path, "rb")
    except OSError:
        return None
    with fh:
        if fh.read(2) != MAGIC:
            fd = os.dup(fh.fileno())  # an uncompressed archive: read in place
        else:
            fh.seek(0)
            tmp = tempfile.TemporaryFile(dir=fw._spill_dir)
            try:
                with GzipStream(fh) as g:
                    shutil.copyfileobj(g, tmp, 1 << 20)
                    if g.error is not None:
                        damage = f"{g.error}, at byte {g.error_offset:,} of the compressed file"
                tmp.flush()
                fd = os.dup(tmp.fileno())
            finally:
                tmp.close()
    st = os.fstat(fd)
    if st.st_size < snap.offset:
        os.close(fd)
        return None
    unread = st.st_size - snap.offset
    lines = _count_lines(fd, snap.offset, st.st_size)
    log.info(
        "%s was archived while zeekndm was stopped; reading its %s (%s) after the last "
        "commit (line %d) from %s",
        snap.path,
        _counted(lines, "line"),
        _counted(unread, "byte"),
        snap.line,
        path,
    )
    if damage:
        log.warning(
            "the archive %s is damaged (%s): the %s after the last commit decoded before "
            "the damage are read; whatever followed them in %s is lost",
            path,
            damage,
            _counted(lines, "line"),
            snap.path,
        )
    f = Harvester.opened(
        (st.st_dev, st.st_ino),
        fd,
        path,
        snap.origin or snap.path,
        offset=snap.offset,
        line=snap.line,
        skipping=snap.skipping,
        detached=True,
    )
    if snap.key:
        f.key = snap.key  # the stream (and its saved header block) keeps its identity
    f.head = os.pread(fd, FINGERPRINT_BYTES, 0)
    return f


def _count_lines(fd: int, start: int, end: int) -> int:
    """Complete lines between two offsets of a file."""
    n = 0
    pos = start
    while pos < end:
        data = os.pread(fd, min(1 << 20, end - pos), pos)
        if not data:
            break
        n += data.count(b"\n")
        pos += len(data)
    return n


def _counted(n: int, word: str) -> str:
    return f"{n:,} {word if n == 1 else word + 's'}"
