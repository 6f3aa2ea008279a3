"""SocketListener: the server end of Suricata's unix_dgram / unix_stream eve outputs."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from zeekndm.errors import ZeekNDMError
from zeekndm.live.listen import READ_BUDGET, STREAM_CHUNK, SocketListener
from zeekndm.readers import Skip, make_parser, read_flows


@pytest.fixture
def sockdir():
    """A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path is long."""
    path = tempfile.mkdtemp(prefix="zndm-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


def _read_until(listener: SocketListener, count: int, limit: float = 5.0) -> list[bytes]:
    """Read until `count` lines arrived or `limit` seconds passed."""
    lines: list[bytes] = []
    deadline = time.monotonic() + limit
    while len(lines) < count and time.monotonic() < deadline:
        lines += listener.read(0.2)
    return lines


def _dgram_sender(path: Path) -> socket.socket:
    sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sender.connect(str(path))
    return sender


def _stream_client(path: Path) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect(str(path))
    return client


# -- datagrams ---------------------------------------------------------------------------
def test_dgram_datagram_without_newline_is_one_line(sockdir):
    with SocketListener(str(sockdir / "eve.sock")) as listener:
        sender = _dgram_sender(sockdir / "eve.sock")
        sender.send(b'{"event_type":"flow"}')
        assert listener.read(2.0) == [b'{"event_type":"flow"}']
        assert listener.received == 1
        sender.close()


def test_dgram_datagram_with_several_events_gives_each_line(sockdir):
    with SocketListener(str(sockdir / "eve.sock")) as listener:
        sender = _dgram_sender(sockdir / "eve.sock")
        sender.send(b'{"a":1}\n{"b":2}\n\n{"c":3}\n')
        assert listener.read(2.0) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']
        sender.close()


def test_dgram_ten_thousand_datagrams_sent_fast_all_arrive(sockdir):
    # Linux blocks a unix datagram sender when the receiver's queue is full instead of
    # dropping, so every datagram must arrive, in order.
    path = sockdir / "eve.sock"
    total = 10_000
    with SocketListener(str(path)) as listener:

        def send_all() -> None:
            sender = _dgram_sender(path)
            for i in range(total):
                sender.send(b'{"n":%d}\n' % i)
            sender.close()

        writer = threading.Thread(target=send_all, daemon=True)
        writer.start()
        lines = _read_until(listener, total, limit=20.0)
        writer.join(5)
        assert len(lines) == total
        assert lines[0] == b'{"n":0}' and lines[-1] == b'{"n":9999}'
        assert listener.dropped == 0


def test_dgram_over_long_line_is_dropped_counted_and_later_lines_still_arrive(sockdir, caplog):
    with SocketListener(str(sockdir / "eve.sock"), max_line_bytes=100) as listener:
        sender = _dgram_sender(sockdir / "eve.sock")
        sender.send(b"x" * 101)
        sender.send(b'{"short":1}\n' + b"y" * 200 + b"\n" + b'{"short":2}\n')
        sender.send(b'{"short":3}')
        with caplog.at_level(logging.WARNING, logger="zeekndm.live.listen"):
            lines = _read_until(listener, 3)
        assert lines == [b'{"short":1}', b'{"short":2}', b'{"short":3}']
        assert listener.dropped == 2
        assert "dropped 2" in caplog.text and "eve.sock" in caplog.text
        sender.close()


def test_drop_warning_is_logged_at_most_once_a_minute(sockdir, caplog):
    with SocketListener(str(sockdir / "eve.sock"), max_line_bytes=10) as listener:
        sender = _dgram_sender(sockdir / "eve.sock")
        with caplog.at_level(logging.WARNING, logger="zeekndm.live.listen"):
            for _ in range(5):
                sender.send(b"z" * 50)
                sender.send(b"ok")
                assert listener.read(2.0) == [b"ok"]
        assert listener.dropped == 5
        assert len([r for r in caplog.records if "dropped" in r.getMessage()]) == 1
        sender.close()


# -- streams -----------------------------------------------------------------------------
def test_stream_two_clients_interleaving_each_get_their_own_lines(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path), "unix_stream") as listener:
        a = _stream_client(path)
        b = _stream_client(path)
        a.sendall(b'{"from":"a1"')
        b.sendall(b'{"from":"b1"}\n{"from":')
        assert _read_until(listener, 1) == [b'{"from":"b1"}']
        assert listener.clients == 2
        a.sendall(b"}\n")
        b.sendall(b'"b2"}\n')
        got = _read_until(listener, 2)
        assert sorted(got) == [b'{"from":"a1"}', b'{"from":"b2"}']
        a.close()
        b.close()


def test_stream_line_split_across_many_sends_is_reassembled(sockdir):
    path = sockdir / "eve.sock"
    event = b'{"event_type":"flow","src_ip":"10.0.0.1","dest_port":27017}'
    with SocketListener(str(path), "unix_stream") as listener:
        client = _stream_client(path)
        for i in range(0, len(event), 7):
            client.sendall(event[i : i + 7])
            assert listener.read(0.05) == []
        client.sendall(b"\n")
        assert _read_until(listener, 1) == [event]
        client.close()


def test_stream_disconnect_with_partial_line_returns_it(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path), "unix_stream") as listener:
        client = _stream_client(path)
        client.sendall(b'{"n":1}\n{"n":2}')
        assert _read_until(listener, 1) == [b'{"n":1}']
        client.close()
        assert _read_until(listener, 1) == [b'{"n":2}']
        deadline = time.monotonic() + 2
        while listener.clients and time.monotonic() < deadline:
            listener.read(0.05)
        assert listener.clients == 0


def test_stream_over_long_line_is_dropped_without_buffering_and_next_line_arrives(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path), "unix_stream", max_line_bytes=1000) as listener:
        client = _stream_client(path)
        for _ in range(50):  # 50 KB of one line, sent in pieces, far past the cap
            client.sendall(b"q" * 1000)
            listener.read(0.01)
            assert all(len(c.partial) <= 1000 for c in listener._clients.values())
        client.sendall(b"tail of the long line\n" + b'{"after":1}\n')
        assert _read_until(listener, 1) == [b'{"after":1}']
        assert listener.dropped == 1
        client.close()


def test_stream_client_reset_does_not_raise(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path), "unix_stream") as listener:
        bad = _stream_client(path)
        bad.sendall(b"\xff\xfe garbage without newline")
        bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        bad.close()
        good = _stream_client(path)
        good.sendall(b'{"ok":1}\n')
        got = _read_until(listener, 2)
        assert b'{"ok":1}' in got
        good.close()


@pytest.mark.parametrize("kind", ["unix_dgram", "unix_stream"])
def test_fileno_polls_readable_when_data_waits(sockdir, kind):
    import selectors

    path = sockdir / "eve.sock"
    with SocketListener(str(path), kind) as listener, selectors.DefaultSelector() as sel:
        sel.register(listener.fileno(), selectors.EVENT_READ)
        assert sel.select(0.05) == []
        if kind == "unix_dgram":
            sender = _dgram_sender(path)
            sender.send(b"x")
        else:
            sender = _stream_client(path)
            assert len(sel.select(2.0)) == 1  # the connection itself
            assert listener.read(0.05) == []
            assert sel.select(0.05) == []  # accepted: nothing more to do
            sender.sendall(b"x\n")  # data on the accepted connection, not the listener
        assert len(sel.select(2.0)) == 1
        assert listener.read(0) == [b"x"]
        assert sel.select(0.05) == []
        sender.close()


# -- the socket file ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["unix_dgram", "unix_stream"])
def test_stale_socket_from_a_crash_is_replaced(sockdir, kind):
    path = sockdir / "eve.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crashed process leaves
    assert path.is_socket()
    with SocketListener(str(path), kind) as listener:
        assert path.is_socket()
        if kind == "unix_dgram":
            _dgram_sender(path).send(b"hello")
        else:
            _stream_client(path).sendall(b"hello\n")
        assert _read_until(listener, 1) == [b"hello"]


def test_socket_still_in_use_by_another_listener_is_refused(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path), "unix_stream"):
        with pytest.raises(ZeekNDMError, match="in use") as info:
            SocketListener(str(path), "unix_stream")
        assert str(path) in str(info.value)
        assert path.is_socket()


def test_regular_file_at_path_is_an_error_naming_the_path(sockdir):
    path = sockdir / "eve.json"
    path.write_text("precious data\n")
    with pytest.raises(ZeekNDMError, match="is not a socket") as info:
        SocketListener(str(path))
    assert str(path) in str(info.value)
    assert path.read_text() == "precious data\n"


def test_path_too_long_is_an_error_naming_the_path(sockdir):
    path = sockdir / ("d" * 60) / ("e" * 60 + ".sock")
    with pytest.raises(ZeekNDMError, match="longer than the 107") as info:
        SocketListener(str(path))
    assert str(path) in str(info.value)


def _error_as_unprivileged_user(path: Path) -> str:
    """str() of the ZeekNDMError SocketListener(path) raises, as a user without privileges.

    Root ignores directory permissions, so under root the attempt runs in a forked child
    that drops to nobody first.
    """

    def attempt() -> str:
        try:
            SocketListener(str(path)).close()
        except ZeekNDMError as exc:
            return str(exc)
        return "no error"

    if os.geteuid() != 0:
        return attempt()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, attempt().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unwritable_directory_is_an_error_naming_the_path(sockdir):
    locked = sockdir / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    sockdir.chmod(0o755)
    message = _error_as_unprivileged_user(locked / "eve.sock")
    assert "cannot bind" in message and "Permission denied" in message
    assert str(locked / "eve.sock") in message


def test_parent_that_is_a_file_is_an_error_naming_it(sockdir):
    (sockdir / "run").write_text("")
    with pytest.raises(ZeekNDMError, match="is not a directory") as info:
        SocketListener(str(sockdir / "run" / "eve.sock"))
    assert str(sockdir / "run" / "eve.sock") in str(info.value)


def test_unknown_kind_lists_the_valid_ones(sockdir):
    with pytest.raises(ZeekNDMError, match="unix_dgram, unix_stream"):
        SocketListener(str(sockdir / "eve.sock"), "udp")


def test_missing_parent_directory_is_created_and_mode_applied(sockdir):
    path = sockdir / "run" / "zeekndm" / "eve.sock"
    with SocketListener(str(path), mode=0o600):
        assert path.is_socket()
        assert path.stat().st_mode & 0o777 == 0o600


def test_close_removes_the_socket_file(sockdir):
    path = sockdir / "eve.sock"
    listener = SocketListener(str(path), "unix_stream")
    client = _stream_client(path)
    _read_until(listener, 0, limit=0.1)
    listener.close()
    assert not path.exists()
    listener.close()  # twice is harmless
    client.close()


def test_close_leaves_a_socket_file_that_is_no_longer_ours(sockdir):
    path = sockdir / "eve.sock"
    listener = SocketListener(str(path))
    os.unlink(path)
    newer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    newer.bind(str(path))  # another process took the path over
    listener.close()
    assert path.is_socket()
    newer.close()


@pytest.mark.parametrize("kind", ["unix_dgram", "unix_stream"])
def test_read_times_out_with_nothing_after_about_the_timeout(sockdir, kind):
    with SocketListener(str(sockdir / "eve.sock"), kind) as listener:
        start = time.monotonic()
        assert listener.read(0.3) == []
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 1.0


@pytest.mark.parametrize("kind", ["unix_dgram", "unix_stream"])
def test_a_large_backlog_comes_back_in_budget_sized_reads(sockdir, kind):
    path = sockdir / "eve.sock"
    total = 4 * READ_BUDGET
    with SocketListener(str(path), kind) as listener:

        def send_all() -> None:
            if kind == "unix_dgram":
                sender = _dgram_sender(path)
                for i in range(0, total, 100):  # 100 events per datagram
                    sender.send(b"".join(b"%08d\n" % n for n in range(i, i + 100)))
            else:
                sender = _stream_client(path)
                sender.sendall(b"".join(b"%08d\n" % n for n in range(total)))
            sender.close()

        writer = threading.Thread(target=send_all, daemon=True)
        writer.start()
        time.sleep(0.2)  # let a backlog build up in the kernel
        batches = []
        deadline = time.monotonic() + 10
        while sum(map(len, batches)) < total and time.monotonic() < deadline:
            batches.append(listener.read(0.5))
        writer.join(5)
    lines = [line for batch in batches for line in batch]
    assert lines == [b"%08d" % n for n in range(total)]
    # a stream chunk already read is returned whole: at most one chunk's lines over budget
    assert max(map(len, batches)) <= READ_BUDGET + STREAM_CHUNK // 9
    assert len(batches) >= 3


# -- how Suricata writes ---------------------------------------------------------------
def _suricata_style_writer(path: Path, kind: str):
    """A write(event) function that sends like Suricata's eve-log socket output.

    Suricata connects, wraps the socket in a stdio FILE (fdopen) and does fwrite + fflush
    per event, newline included. glibc then splits an event over 4 KiB into several
    datagrams; this reproduces that through the real libc.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fdopen.restype = ctypes.c_void_p
    libc.fdopen.argtypes = [ctypes.c_int, ctypes.c_char_p]
    libc.fwrite.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_void_p]
    libc.fflush.argtypes = [ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    sock_type = socket.SOCK_DGRAM if kind == "unix_dgram" else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_UNIX, sock_type)
    sock.connect(str(path))
    fp = libc.fdopen(sock.detach(), b"w")
    assert fp, "fdopen failed"

    def write(event: bytes) -> None:
        data = event + b"\n"
        assert libc.fwrite(data, len(data), 1, fp) == 1
        assert libc.fflush(fp) == 0

    def close() -> None:
        libc.fclose(fp)

    return write, close


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "fdopen"), reason="needs a C library")
@pytest.mark.parametrize("kind", ["unix_dgram", "unix_stream"])
def test_events_larger_than_stdio_buffer_arrive_whole_as_suricata_writes_them(sockdir, kind):
    path = sockdir / "eve.sock"
    events = [b'{"n":%d,"pad":"%s"}' % (size, b"p" * size) for size in (10, 4070, 4100, 9000)]
    events.append(b'{"tail":' + b"t" * 12_300 + b"}")
    with SocketListener(str(path), kind) as listener:
        write, close = _suricata_style_writer(path, kind)
        for event in events:
            write(event)
        close()
        start = time.monotonic()
        assert _read_until(listener, len(events)) == events
        assert time.monotonic() - start < 0.5  # no waiting for fragments that completed
        assert listener.dropped == 0


def test_dgram_block_sized_datagram_without_continuation_is_one_line_after_a_pause(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path)) as listener:
        sender = _dgram_sender(path)
        sender.send(b"b" * 4096)  # looks like the first piece of a split event
        start = time.monotonic()
        lines = _read_until(listener, 1)
        assert lines == [b"b" * 4096]
        assert 0.8 < time.monotonic() - start < 3.0
        sender.close()


def test_dgram_split_event_over_the_cap_is_dropped_and_next_event_arrives(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path), max_line_bytes=6000) as listener:
        write, close = _suricata_style_writer(path, "unix_dgram")
        write(b"x" * 20_000)
        write(b'{"next":1}')
        close()
        assert _read_until(listener, 1) == [b'{"next":1}']
        assert listener.dropped == 1


# -- real eve lines ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "writer"),
    [
        ("unix_dgram", "datagram per event"),
        ("unix_dgram", "suricata stdio"),
        ("unix_stream", "arbitrary chunks"),
        ("unix_stream", "suricata stdio"),
    ],
)
def test_real_eve_lines_through_the_socket_parse_into_the_same_flows_as_the_file(
    sockdir, real, kind, writer
):
    # eve-2.json has 13 events longer than 4 KiB (up to 7.7 KB), which Suricata's stdio
    # writes split over several datagrams.
    eve = real("suricata/suricatalog/eve-2.json")
    raw = eve.read_bytes().splitlines()
    path = sockdir / "eve.sock"
    with SocketListener(str(path), kind) as listener:

        def send_all() -> None:
            if writer == "suricata stdio":
                write, close = _suricata_style_writer(path, kind)
                for line in raw:
                    write(line)
                close()
                return
            if kind == "unix_dgram":
                sender = _dgram_sender(path)
                for line in raw:
                    sender.send(line + b"\n")
            else:
                sender = _stream_client(path)
                blob = b"".join(line + b"\n" for line in raw)
                for i in range(0, len(blob), 4093):  # cut lines at arbitrary places
                    sender.sendall(blob[i : i + 4093])
            sender.close()

        sending = threading.Thread(target=send_all, daemon=True)
        sending.start()
        lines = _read_until(listener, len(raw), limit=10.0)
        sending.join(5)
    assert lines == raw

    parser = make_parser("suricata_eve")
    flows = []
    for line in lines:
        try:
            flow = parser.parse(line)
        except Skip:
            continue
        if flow is not None:
            flows.append(flow)
    head = sockdir / "head.json"
    head.write_bytes(b"".join(line + b"\n" for line in raw))
    expected = list(read_flows(head, fmt="suricata_eve"))
    assert len(flows) > 900
    assert flows == expected


# -- issue 9 items 18, 20, 21: clients, senders, permissions ----------------------------
def test_stream_clients_beyond_max_clients_are_closed_with_a_warning(sockdir, caplog):
    path = sockdir / "eve.sock"
    caplog.set_level(logging.WARNING, logger="zeekndm.live.listen")
    with SocketListener(str(path), "unix_stream", max_clients=3) as listener:
        kept = [_stream_client(path) for _ in range(3)]
        listener.read(0.1)
        extra = _stream_client(path)
        listener.read(0.1)
        assert extra.recv(10) == b""  # closed at once: nothing of it is buffered
        assert listener.clients == 3 and listener.refused == 1
        assert any("max_clients" in r.getMessage() for r in caplog.records)
        kept[0].sendall(b'{"a":1}\n')
        assert _read_until(listener, 1) == [b'{"a":1}']
        for c in kept + [extra]:
            c.close()


def test_stream_client_silent_for_idle_timeout_is_disconnected(sockdir):
    path = sockdir / "eve.sock"
    with SocketListener(str(path), "unix_stream", idle_timeout=0.3) as listener:
        idle = _stream_client(path)
        idle.sendall(b'{"half":')  # and then nothing
        busy = _stream_client(path)
        started = time.monotonic()
        while time.monotonic() - started < 0.6:
            busy.sendall(b'{"b":1}\n')
            listener.read(0.02)
            time.sleep(0.02)
        assert listener.clients == 1 and listener.evicted == 1  # busy one stays
        assert listener.dropped == 1  # the half line is counted
        assert idle.recv(10) == b""
        deadline = time.monotonic() + 3
        while listener.clients and time.monotonic() < deadline:
            listener.read(0.1)
        assert listener.evicted == 2
        idle.close()
        busy.close()


def test_stream_unfinished_lines_over_all_clients_are_bounded(sockdir):
    """600 clients each holding a partial line once took 610 MB: now the sum is capped."""
    path = sockdir / "eve.sock"
    cap = 200_000
    with SocketListener(
        str(path), "unix_stream", max_clients=50, max_buffered_bytes=cap
    ) as listener:
        clients = [_stream_client(path) for _ in range(50)]
        listener.read(0.1)
        for c in clients:
            c.sendall(b"x" * 9000)  # a partial line each: 450 KB in all
        for _ in range(10):
            listener.read(0.05)
        assert listener._buffered <= cap
        assert listener.evicted >= 25
        good = _stream_client(path)
        good.sendall(b'{"ok":1}\n')
        assert _read_until(listener, 1) == [b'{"ok":1}']
        for c in clients + [good]:
            c.close()


def test_stream_connections_are_refused_before_descriptors_run_out(sockdir, monkeypatch):
    import zeekndm.live.listen as listen

    path = sockdir / "eve.sock"
    with SocketListener(str(path), "unix_stream") as listener:
        monkeypatch.setattr(listen, "free_descriptors", lambda: listen.FD_RESERVE - 1)
        c = _stream_client(path)
        listener.read(0.1)
        assert c.recv(10) == b"" and listener.refused == 1 and listener.clients == 0
        c.close()


def test_dgram_split_piece_joins_only_the_same_senders_next_datagram(sockdir):
    """Junk of 4096 bytes without a newline from another local process, between Suricata's
    datagrams, neither glues itself to them nor splits them."""
    import subprocess
    import sys

    path = sockdir / "eve.sock"
    events = [b'{"event_type":"flow","n":%d}' % i for i in range(20)]
    big = b'{"event_type":"flow","big":"' + b"b" * 6000 + b'"}'
    with SocketListener(str(path)) as listener:
        junk = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import socket,sys,time\n"
                "s=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM);s.connect(sys.argv[1])\n"
                "for _ in range(40):\n s.send(b'J'*4096); time.sleep(0.005)\n",
                str(path),
            ]
        )
        sender = _dgram_sender(path)

        def send() -> None:
            for i, ev in enumerate(events):
                sender.send(ev + b"\n")
                if i == 10:  # a split event as stdio sends it: 4096 bytes, then the rest
                    sender.send(big[:4096])
                    time.sleep(0.01)
                    sender.send(big[4096:] + b"\n")
                time.sleep(0.01)

        thread = threading.Thread(target=send)
        thread.start()
        lines: list[bytes] = []  # read while both send (a full queue blocks the senders)
        deadline = time.monotonic() + 10
        while thread.is_alive() or junk.poll() is None:
            assert time.monotonic() < deadline, lines
            lines += listener.read(0.05)
        lines += _read_until(listener, 10**6, limit=1.5)  # the rest, and held fragments
        thread.join(5)
        sender.close()
    good = [ln for ln in lines if not ln.startswith(b"J")]
    assert good == events[:11] + [big] + events[11:]
    # the junk sender's own pieces may join each other; never anything of Suricata's
    assert all(set(ln) == {ord("J")} for ln in lines if ln.startswith(b"J"))


def test_socket_directory_is_owner_only_and_socket_never_wider_than_its_mode(sockdir):
    os.umask(old := os.umask(0))  # read the umask
    try:
        os.umask(0)  # the widest umask: nothing may depend on it
        path = sockdir / "new" / "eve.sock"
        with SocketListener(str(path), mode=0o600):
            assert (sockdir / "new").stat().st_mode & 0o777 == 0o700
            assert path.stat().st_mode & 0o777 == 0o600
        group = sockdir / "grp" / "eve.sock"
        with SocketListener(str(group), mode=0o660):
            assert (sockdir / "grp").stat().st_mode & 0o777 == 0o710  # group may reach it
            assert group.stat().st_mode & 0o777 == 0o660
    finally:
        os.umask(old)


def test_socket_is_bound_under_a_private_umask(sockdir, monkeypatch):
    seen = []
    real_bind = socket.socket.bind

    def spy(self, address):
        real_bind(self, address)
        seen.append(os.stat(address).st_mode & 0o777)

    monkeypatch.setattr(socket.socket, "bind", spy)
    old = os.umask(0)
    try:
        with SocketListener(str(sockdir / "eve.sock"), mode=0o660):
            pass
    finally:
        os.umask(old)
    assert seen == [0o600]  # owner-only between bind() and chmod()
