"""Which files the targets name now: the scan that backs up (and re-resolves) notification.

A target is a file or a directory with name patterns; a directory may be a symlink that
moves (zeekctl's `logs/current`), so it is resolved again on every scan. The scan also
names, per watched name, the prefix its rotated files carry (`conn.` for `conn.log`), which
is where files rotated while zeekndm was stopped are looked for.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Ident = tuple[int, int]


@dataclass(frozen=True)
class FollowTarget:
    """What to follow: one file, or the files matching `patterns` in a directory.

    `path` may be a symlink (Zeek's `logs/current`); it is re-resolved on every tick.
    For a file target, `patterns` are ignored.
    """

    path: str
    patterns: tuple[str, ...] = ("conn.log",)


@dataclass
class ScanResult:
    """Every watched file that exists now, by identity, and what to watch."""

    found: dict[Ident, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    #: directory -> name patterns watched in it (for opening new files early)
    rules: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: identity -> (size, mtime_ns) at the scan
    sizes: dict[Ident, tuple[int, int]] = field(default_factory=dict)


def scan(
    targets: Sequence[FollowTarget],
    warn_once: Callable[..., None],
    clear_warning: Callable[[str, str], None],
) -> ScanResult:
    out = ScanResult()
    for t in targets:
        real = os.path.realpath(t.path)
        if os.path.isdir(real):
            out.dirs.add(real)
            out.rules[real] = out.rules.get(real, ()) + tuple(t.patterns)
            try:
                entries = list(os.scandir(real))
            except OSError as exc:
                warn_once("scan", real, "cannot list %s: %s", real, exc)
                continue
            for e in sorted(entries, key=lambda e: e.name):
                if not any(fnmatch.fnmatchcase(e.name, p) for p in t.patterns):
                    continue
                try:
                    st = e.stat()
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.found.setdefault((st.st_dev, st.st_ino), e.path)
                    out.sizes[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns)
            continue
        parent = os.path.dirname(real) or "."
        if os.path.isdir(parent):
            out.dirs.add(parent)
            out.rules[parent] = out.rules.get(parent, ()) + (os.path.basename(real),)
        link_parent = os.path.dirname(os.path.abspath(t.path))
        if os.path.isdir(link_parent):
            out.dirs.add(link_parent)
        try:
            st = os.stat(real)
        except OSError:
            warn_once("wait", t.path, "waiting for %s", t.path)
            continue
        clear_warning("wait", t.path)
        if stat.S_ISREG(st.st_mode):
            out.found.setdefault((st.st_dev, st.st_ino), t.path)
            out.sizes[(st.st_dev, st.st_ino)] = (st.st_size, st.st_mtime_ns)
    return out


def rotation_stems(targets: Sequence[FollowTarget]) -> list[tuple[str, str, str]]:
    """(directory, name prefix of its rotated files, watched path) per watched name."""
    out = []
    for t in targets:
        real = os.path.realpath(t.path)
        if os.path.isdir(real):
            names = [(real, p) for p in t.patterns]
        else:
            names = [(os.path.dirname(real) or ".", os.path.basename(real))]
        for directory, name in names:
            base = re.split(r"[.*?\[]", name, maxsplit=1)[0]
            if base and not any(c in name.split(".")[0] for c in "*?["):
                out.append((directory, base + ".", os.path.join(directory, name)))
    return out


def list_dirs(dirs: set[str]) -> dict[Ident, str]:
    """Every regular file in `dirs`, by identity."""
    out: dict[Ident, str] = {}
    for d in sorted(dirs):
        try:
            for entry in os.scandir(d):
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    out.setdefault((st.st_dev, st.st_ino), entry.path)
        except OSError:
            continue
    return out


def still_at(path: str, ident: Ident) -> bool:
    """`path` still names the file `ident`."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident
