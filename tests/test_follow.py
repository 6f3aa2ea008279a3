"""Following log files through rotation, truncation, deletion and restarts."""

from __future__ import annotations

import json
import os
import time

import pytest

from zeekndm.follow import Chunk, Follower, FollowTarget

MODES = [pytest.param(True, id="watchdog"), pytest.param(False, id="polling")]


def write(path, text: str | bytes, mode: str = "a") -> None:
    data = text.encode() if isinstance(text, str) else text
    with open(path, mode + "b") as fh:
        fh.write(data)


def header(tag: str) -> str:
    """A Zeek-like header; `tag` makes it unique like Zeek's #open timestamp does."""
    return f"#separator \\x09\n#path\tconn\n#open\t{tag}\n#fields\tts\tuid\n"


def collect(follower: Follower, until, timeout: float = 3.0) -> list[Chunk]:
    """read() until `until(chunks)` holds (or fail after `timeout` seconds)."""
    chunks: list[Chunk] = []
    deadline = time.monotonic() + timeout
    while not until(chunks):
        assert time.monotonic() < deadline, f"timed out; got {chunks}"
        chunks.extend(follower.read(0.05))
    return chunks


def texts(chunks: list[Chunk], key: str | None = None) -> list[bytes]:
    return [line for c in chunks if key in (None, c.key) for _, line in c.lines]


def n_lines(n: int):
    return lambda chunks: len(texts(chunks)) >= n


def make(targets, **kw) -> Follower:
    kw.setdefault("poll_interval", 0.05)
    return Follower(targets, **kw)


@pytest.fixture
def follow(request):
    made: list[Follower] = []

    def factory(targets, **kw):
        f = make(targets, **kw)
        made.append(f)
        return f

    yield factory
    for f in made:
        f.close()


@pytest.mark.parametrize("watch", MODES)
def test_returns_appended_lines_with_line_numbers(tmp_path, follow, watch):
    log = tmp_path / "conn.log"
    write(log, "a\nb\n")
    f = follow([FollowTarget(str(log))], use_watchdog=watch)
    first = collect(f, n_lines(2))
    assert first[0].new_file and not first[0].reset and not first[0].closed
    assert first[0].lines == [(1, b"a"), (2, b"b")]
    write(log, "c\r\n")
    more = collect(f, n_lines(1))
    assert more[0].lines == [(3, b"c")] and not more[0].new_file


@pytest.mark.parametrize("watch", MODES)
def test_partial_line_waits_for_its_newline(tmp_path, follow, watch):
    log = tmp_path / "conn.log"
    write(log, "a\npart")
    f = follow([FollowTarget(str(log))], use_watchdog=watch)
    assert texts(collect(f, n_lines(1))) == [b"a"]
    assert f.read(0.15) == []
    write(log, "ial\n")
    assert texts(collect(f, n_lines(1))) == [b"partial"]


def test_read_returns_empty_list_on_timeout(tmp_path, follow):
    log = tmp_path / "conn.log"
    write(log, "")
    f = follow([FollowTarget(str(log))])
    started = time.monotonic()
    assert f.read(0.2) == []
    assert 0.15 <= time.monotonic() - started < 1.0


@pytest.mark.parametrize("watch", MODES)
def test_zeek_rename_rotation_finishes_old_file_before_new_one(tmp_path, follow, watch):
    d = tmp_path / "current"
    d.mkdir()
    log = d / "conn.log"
    write(log, header("1") + "old1\n")
    f = follow([FollowTarget(str(d))], use_watchdog=watch)
    first = collect(f, n_lines(5))
    old_key = first[0].key
    write(log, "old2\n")  # written just before the rename: must not be lost
    archive = tmp_path / "archive"
    archive.mkdir()
    os.rename(log, archive / "conn.09:00:00-10:00:00.log")
    write(log, header("2") + "new1\n")
    chunks = collect(f, lambda cs: b"new1" in texts(cs))
    assert texts(chunks, old_key) == [b"old2"]
    old_end = next(i for i, c in enumerate(chunks) if c.key == old_key and c.closed)
    new_start = next(i for i, c in enumerate(chunks) if c.key != old_key)
    assert old_end < new_start
    assert chunks[old_end].path.endswith("conn.09:00:00-10:00:00.log")
    new = chunks[new_start]
    assert new.new_file and new.lines[0] == (1, b"#separator \\x09")
    assert texts(chunks, new.key)[-1] == b"new1"


def test_state_round_trips_through_json_and_resumes_mid_file(tmp_path, follow):
    log = tmp_path / "conn.log"
    write(log, "1\n2\n3\n")
    f = follow([FollowTarget(str(log))])
    collect(f, n_lines(3))
    saved = json.loads(json.dumps(f.state()))
    f.close()
    write(log, "4\n5\n")
    g = follow([FollowTarget(str(log))], state=saved)
    chunks = collect(g, n_lines(2))
    assert [ln for c in chunks for ln in c.lines] == [(4, b"4"), (5, b"5")]
    assert not chunks[0].new_file and not chunks[0].reset
    assert g.head(chunks[0].key).startswith(b"1\n2\n")
