"""Unix socket listener: the server end of Suricata's `eve-log` socket outputs.

Suricata can write eve events straight to a unix socket instead of a file
(`eve-log: filetype: unix_dgram` or `unix_stream`). It is always the client: it connects
to a socket that must already exist, so zeekndm binds it and reads.

- `unix_dgram`: each datagram carries one event (Suricata) or several newline-separated
  ones (other writers); a datagram without a trailing newline is still one complete line,
  because datagram boundaries are message boundaries. One exception: Suricata writes
  through stdio, which splits an event over 4 KiB into 4096-byte-multiple datagrams; those
  are joined back (see `SocketListener._receive_datagrams`).
  A held piece is joined only with the next datagram *from the same sender* (told apart
  by the credentials the kernel attaches, SO_PASSCRED) and only if that one follows
  within `FRAGMENT_WAIT`: another local process sending junk between Suricata's
  datagrams cannot glue itself to, or split, Suricata's events.
- `unix_stream`: newline-delimited events over up to `max_clients` connections. Each
  client's unfinished last line is buffered until its newline arrives; a client that
  disconnects mid-line has its remainder returned as a line (Suricata ends every event with
  a newline, so a remainder is a whole event whose newline was simply the last byte not
  sent). A client silent for `idle_timeout` is disconnected.

Invariants: memory per client is bounded by `max_line_bytes` (an over-long line is dropped,
counted and its rest discarded as it arrives, never buffered) and memory over all clients
by `max_buffered_bytes` (past it, the client holding the longest unfinished line is
disconnected); connections beyond `max_clients`, or that would leave fewer than
`FD_RESERVE` free descriptors for the registry, the followed files and the outputs, are
closed at once with a warning; one `read` call returns at most about `READ_BUDGET` lines so
a busy socket cannot starve the caller's other work; nothing a client does (garbage,
resets, half lines, floods, idling) makes `read` raise.

The socket's directory, when zeekndm has to create it, is owner-only (plus group search
when the socket's mode lets the group connect), and the socket is bound under a umask that
keeps it private until it gets its mode: it is never reachable by others, not even briefly.

There is no offset to checkpoint here: what the kernel delivered is gone from it, so socket
input is at-most-once across a crash, unlike file inputs.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import selectors
import socket
import stat
import struct
import time
from dataclasses import dataclass, field

from zeekndm.errors import ZeekNDMError
from zeekndm.statedir import make_private_dirs

__all__ = ["KINDS", "READ_BUDGET", "SocketListener"]

log = logging.getLogger(__name__)

#: The `filetype` values of Suricata's eve-log that this module serves.
KINDS = ("unix_dgram", "unix_stream")
#: Reading stops once a `read` call holds this many lines; the rest waits in the kernel
#: for the next call. A stream chunk already received is split whole, so a call can return
#: up to one chunk's worth of lines more than this.
READ_BUDGET = 10_000
#: Largest datagram received whole. Unix datagrams are limited by the sender's SO_SNDBUF
#: (about 208 KiB by default on Linux); anything larger arrives truncated and is dropped.
DGRAM_BUFFER = 256 * 1024
#: Receive queue asked for on the datagram socket: bursts of events wait here rather than
#: blocking (or, for a non-blocking writer, losing) Suricata. The kernel caps it at
#: net.core.rmem_max without telling us, which is fine.
DGRAM_RCVBUF = 8 * 1024 * 1024
#: glibc's stdio buffer for a socket: Suricata's events longer than this arrive as several
#: datagrams, all but the last a multiple of this size (see `_receive_datagrams`).
STDIO_BLOCK = 4096
#: How long a held datagram fragment waits for its continuation before it counts as whole.
FRAGMENT_WAIT = 1.0
#: Bytes read from one stream client per recv call (also bounds the budget overshoot).
STREAM_CHUNK = 64 * 1024
#: Longest AF_UNIX path: sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_PATH_BYTES = 107
#: At most one warning about dropped lines per this many seconds.
WARN_INTERVAL = 60.0
#: Default most stream clients at once (Suricata opens one connection).
MAX_CLIENTS = 64
#: Default most bytes of unfinished lines held over all stream clients.
MAX_BUFFERED_BYTES = 64 << 20
#: Default seconds a stream client may stay silent before it is disconnected.
IDLE_TIMEOUT = 900.0
#: Descriptors kept free for the registry commit, the followed files and the outputs: a
#: connection that would eat into them is refused.
FD_RESERVE = 64
#: At most this many senders' split datagrams are held at once (the oldest is ended).
MAX_HELD_FRAGMENTS = 64
_BACKLOG = 64
_CREDS = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(eq=False)
class _Client:
    """One stream connection (or one datagram sender): its unfinished last line."""

    sock: socket.socket | None
    partial: bytearray = field(default_factory=bytearray)
    #: True while the rest of an over-long line is being thrown away up to its newline.
    discarding: bool = False
    #: monotonic time of the last data (stream: idle timeout; dgram: when the piece came)
    last_active: float = 0.0


def free_descriptors() -> int:
    """How many more descriptors this process may open (a large number when unknown)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return 1 << 30
    return soft - used


class SocketListener:
    """Binds a unix socket at `path` and yields the eve lines clients send.

    Use `fileno()` with a selector, or just call `read(timeout)` in a loop; `close()` (or
    leaving a `with` block) closes every connection and removes the socket file, but only
    if the file is still the one this listener bound, so a newer process that took the
    path over keeps its socket.
    """

    def __init__(
        self,
        path: str,
        kind: str = "unix_dgram",
        *,
        max_line_bytes: int = 1 << 20,
        mode: int = 0o660,
        max_clients: int = MAX_CLIENTS,
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        if kind not in KINDS:
            raise ZeekNDMError(
                f"unknown socket kind {kind!r}; valid: {', '.join(KINDS)}", file=str(path)
            )
        if max_line_bytes < 1:
            raise ZeekNDMError(f"max_line_bytes must be positive, got {max_line_bytes}")
        self.path = str(path)
        self.kind = kind
        self.max_line_bytes = max_line_bytes
        self.max_clients = max(1, int(max_clients))
        self.max_buffered_bytes = max(1, int(max_buffered_bytes))
        self.idle_timeout = float(idle_timeout)
        self.received = 0
        self.dropped = 0
        self.clients = 0
        #: connections closed at once (over max_clients, or short of descriptors)
        self.refused = 0
        #: stream clients disconnected for idling or for holding too much unfinished data
        self.evicted = 0
        self._clients: dict[int, _Client] = {}
        self._buffered = 0  # bytes in every stream client's partial line
        self._last_warning = float("-inf")
        self._dropped_since_warning = 0
        self._refused_since_warning = 0
        self._last_refusal_warning = float("-inf")
        self._next_idle_check = 0.0
        self._closed = False
        self._buffer = bytearray(DGRAM_BUFFER) if kind == "unix_dgram" else bytearray()
        #: split datagrams waiting for their continuation, per sender (pid, uid, gid)
        self._fragments: dict[tuple, _Client] = {}
        self._fragment_since: float | None = None
        if len(os.fsencode(self.path)) > MAX_PATH_BYTES:
            raise ZeekNDMError(
                f"socket path is {len(os.fsencode(self.path))} bytes, longer than the "
                f"{MAX_PATH_BYTES} a unix socket address can hold; choose a shorter path",
                file=self.path,
            )
        self._prepare_path(mode)
        self._sock = self._bind(mode)
        st = os.stat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._sock, selectors.EVENT_READ, None)
        log.info("listening for %s eve events on %s", kind, self.path)

    # -- setup ----------------------------------------------------------------------------
    def _prepare_path(self, mode: int) -> None:
        """Create the parent directory (owner-only); clear a stale socket left by a crash.

        A regular file (or anything not a socket) at the path is refused rather than
        deleted: it is someone's data and the path is most likely a configuration mistake.
        A socket that something still listens on is refused too: replacing it would
        silently steal the sensor's events from another running zeekndm.
        """
        parent = os.path.dirname(self.path)
        if parent:
            try:
                # Search permission for the group only when the group may connect (Suricata
                # running as another user in zeekndm's group); nothing for others.
                make_private_dirs(parent, 0o710 if mode & 0o060 else 0o700)
                if not os.path.isdir(parent):
                    raise FileExistsError(errno.EEXIST, "not a directory", parent)
            except FileExistsError as exc:
                raise ZeekNDMError(
                    f"{exc.filename or parent} exists and is not a directory", file=self.path
                ) from exc
            except OSError as exc:
                raise ZeekNDMError(
                    f"cannot create the socket's directory {parent}: {exc.strerror}",
                    file=self.path,
                ) from exc
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise ZeekNDMError(
                f"cannot inspect socket path: {exc.strerror}", file=self.path
            ) from exc
        if not stat.S_ISSOCK(st.st_mode):
            raise ZeekNDMError(
                "exists and is not a socket; refusing to replace it (remove it or choose "
                "another socket path)",
                file=self.path,
            )
        if _socket_is_live(self.path):
            raise ZeekNDMError(
                "socket is in use: another process is listening on it", file=self.path
            )
        log.info("replacing stale socket %s", self.path)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise ZeekNDMError(
                f"cannot remove stale socket: {exc.strerror}", file=self.path
            ) from exc

    def _bind(self, mode: int) -> socket.socket:
        sock_type = socket.SOCK_DGRAM if self.kind == "unix_dgram" else socket.SOCK_STREAM
        sock = socket.socket(socket.AF_UNIX, sock_type)
        # bind() creates the socket file with 0777 & ~umask: under 0177 it is owner-only
        # from the start, and chmod below only ever opens it to the configured mode.
        old_umask = os.umask(0o177)
        try:
            sock.bind(self.path)
        except OSError as exc:
            os.umask(old_umask)
            sock.close()
            reason = exc.strerror or str(exc)
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                reason += " (the zeekndm user needs write access to the socket's directory)"
            raise ZeekNDMError(f"cannot bind {self.kind} socket: {reason}", file=self.path) from exc
        os.umask(old_umask)
        try:
            # Suricata often runs as another user; the group (e.g. suricata) gets access.
            os.chmod(self.path, mode)
            if self.kind == "unix_dgram":
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, DGRAM_RCVBUF)
                except OSError:
                    log.debug("could not raise SO_RCVBUF on %s", self.path)
                # every datagram then carries its sender's pid/uid/gid (see _sender)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            else:
                sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            _unlink_quietly(self.path)
            raise ZeekNDMError(
                f"cannot set up {self.kind} socket: {exc.strerror or exc}", file=self.path
            ) from exc
        return sock

    # -- reading --------------------------------------------------------------------------
    def fileno(self) -> int:
        """A descriptor that polls readable when `read` has something to do.

        For dgram that is the socket itself. For stream, data arrives on the accepted
        connections, not on the listening socket, so this is the internal epoll descriptor
        (readable whenever any connection or the listening socket is); on platforms
        without one it falls back to the listening socket, and the caller must then call
        `read` with a short timeout regularly rather than rely on the selector alone.
        """
        if self.kind == "unix_stream":
            selector_fileno = getattr(self._selector, "fileno", None)
            if selector_fileno is not None:
                return selector_fileno()
        return self._sock.fileno()

    def read(self, timeout: float) -> list[bytes]:
        """Wait up to `timeout` s and return the complete lines available now.

        Lines come without their newline; empty lines are dropped; [] means nothing
        arrived in time. About `READ_BUDGET` lines at most per call (see there), so the
        caller regains control under any load. Never raises for anything a client does.
        """
        if self._closed:
            raise ZeekNDMError("read() on a closed socket listener", file=self.path)
        lines: list[bytes] = []
        now = time.monotonic()
        deadline = now + max(0.0, timeout)
        while True:
            if self._clients and now >= self._next_idle_check:
                self._evict_idle(now, lines)
            remaining = deadline - now
            wait = remaining
            if self._fragment_since is not None:
                wait = min(wait, self._fragment_since + FRAGMENT_WAIT - now)
            try:
                events = self._selector.select(max(0.0, wait))
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                events = []
            for key, _ in events:
                if len(lines) >= READ_BUDGET:
                    break
                if key.data is None:
                    if self.kind == "unix_dgram":
                        self._receive_datagrams(lines)
                    else:
                        self._accept_clients()
                else:
                    self._receive_stream(key.data, lines)
            now = time.monotonic()
            if self._fragment_since is not None and now - self._fragment_since >= FRAGMENT_WAIT:
                self._flush_fragments(lines, now)
            if lines or remaining <= 0:
                break
        self.received += len(lines)
        self._warn_about_drops()
        return lines

    @staticmethod
    def _sender(ancdata: list) -> tuple:
        """Who sent a datagram: the (pid, uid, gid) of SCM_CREDENTIALS (SO_PASSCRED)."""
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                if len(data) >= _CREDS.size:
                    return _CREDS.unpack_from(data)
        return ()

    def _receive_datagrams(self, lines: list[bytes]) -> None:
        """Drain queued datagrams into `lines`.

        Suricata writes a socket through stdio (fwrite + fflush), so glibc sends an event
        larger than its 4 KiB buffer as several datagrams: every one but the last is a
        multiple of 4096 bytes long and does not end with a newline. Such a datagram is
        held for its sender and joined with that sender's next datagram if it comes within
        `FRAGMENT_WAIT`, up to the line cap. Any other datagram ends a line, with or
        without its trailing newline; other senders' datagrams in between are their own.
        """
        fragments = self._fragments
        try:
            self._receive_queued(lines)
        finally:
            self._fragment_since = (
                min(f.last_active for f in fragments.values()) if fragments else None
            )

    def _receive_queued(self, lines: list[bytes]) -> None:
        view = memoryview(self._buffer)
        recvmsg_into = self._sock.recvmsg_into
        ancsize = socket.CMSG_SPACE(_CREDS.size)
        trunc = getattr(socket, "MSG_TRUNC", 0)
        fragments = self._fragments
        while len(lines) < READ_BUDGET:
            try:
                n, ancdata, flags, _ = recvmsg_into([view], ancsize)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # nothing a sender does should stop us
                log.debug("recv on %s failed: %s", self.path, exc)
                return
            if not n:
                continue
            sender = self._sender(ancdata)
            now = time.monotonic()
            held = fragments.get(sender)
            if held is not None and now - held.last_active > FRAGMENT_WAIT:
                self._end_fragment(sender, lines)  # too late to be its continuation
                held = None
            data = bytes(view[:n])
            if flags & trunc:
                # The kernel cut the tail off: lines complete before the cut are kept,
                # the cut one (and any fragment it continued) is dropped.
                self._drop(1)
                cut = data.rfind(b"\n")
                if cut < 0:
                    fragments.pop(sender, None)
                    continue
                data = data[: cut + 1]
            if data[-1:] != b"\n" and len(data) % STDIO_BLOCK == 0:
                if held is None:
                    if len(fragments) >= MAX_HELD_FRAGMENTS:
                        oldest = min(fragments, key=lambda k: fragments[k].last_active)
                        self._end_fragment(oldest, lines)
                    held = fragments[sender] = _Client(None)
                self._split(held, data, lines)
                held.last_active = now
            else:
                if data[-1:] != b"\n":
                    data += b"\n"
                if held is None:
                    self._split(_Client(None), data, lines)
                else:
                    del fragments[sender]
                    self._split(held, data, lines)

    def _end_fragment(self, sender: tuple, lines: list[bytes]) -> None:
        """A held datagram got no continuation in time: it was a whole event after all."""
        held = self._fragments.pop(sender, None)
        if held is not None:
            self._split(held, b"\n", lines)

    def _flush_fragments(self, lines: list[bytes], now: float) -> None:
        for sender, held in list(self._fragments.items()):
            if now - held.last_active >= FRAGMENT_WAIT:
                self._end_fragment(sender, lines)
        self._fragment_since = (
            min(f.last_active for f in self._fragments.values()) if self._fragments else None
        )

    def _accept_clients(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next read
                log.warning("cannot accept a connection on %s: %s", self.path, exc)
                return
            why = None
            if len(self._clients) >= self.max_clients:
                why = f"{self.max_clients} clients are connected (max_clients)"
            elif free_descriptors() < FD_RESERVE:
                why = f"fewer than {FD_RESERVE} file descriptors are left"
            if why is not None:
                conn.close()  # the client sees the connection closed; nothing is buffered
                self.refused += 1
                self._warn_refused(why)
                continue
            conn.setblocking(False)
            client = _Client(conn, last_active=time.monotonic())
            self._clients[conn.fileno()] = client
            self._selector.register(conn, selectors.EVENT_READ, client)
            self.clients = len(self._clients)
            log.debug("client connected to %s (%d now)", self.path, self.clients)

    def _warn_refused(self, why: str) -> None:
        self._refused_since_warning += 1
        now = time.monotonic()
        if now - self._last_refusal_warning < WARN_INTERVAL:
            return
        log.warning(
            "%s: refused %d connection(s): %s (%d refused in total)",
            self.path,
            self._refused_since_warning,
            why,
            self.refused,
        )
        self._last_refusal_warning = now
        self._refused_since_warning = 0

    def _evict_idle(self, now: float, lines: list[bytes]) -> None:
        """Disconnect stream clients silent for `idle_timeout` (their half line is dropped)."""
        self._next_idle_check = now + min(1.0, self.idle_timeout / 4)
        for client in list(self._clients.values()):
            if now - client.last_active >= self.idle_timeout:
                log.info(
                    "%s: disconnecting a client silent for %.0f s (idle_timeout)",
                    self.path,
                    now - client.last_active,
                )
                self._evict(client)

    def _evict(self, client: _Client) -> None:
        if client.partial and not client.partial.isspace():
            self._drop(1)
        self.evicted += 1
        self._forget(client)

    def _receive_stream(self, client: _Client, lines: list[bytes]) -> None:
        sock = client.sock
        assert sock is not None
        while len(lines) < READ_BUDGET:
            try:
                chunk = sock.recv(STREAM_CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # reset by peer and similar: same as a disconnect
                log.debug("client of %s failed: %s", self.path, exc)
                chunk = b""
            if not chunk:
                self._disconnect(client, lines)
                return
            client.last_active = time.monotonic()
            before = len(client.partial)
            self._split(client, chunk, lines)
            self._buffered += len(client.partial) - before
            if self._buffered > self.max_buffered_bytes:
                self._shed_buffered()
                if client.sock is None:
                    return

    def _shed_buffered(self) -> None:
        """Over `max_buffered_bytes`: disconnect the clients holding the longest half lines."""
        by_size = sorted(self._clients.values(), key=lambda c: len(c.partial), reverse=True)
        for client in by_size:
            if self._buffered <= self.max_buffered_bytes:
                break
            log.warning(
                "%s: disconnecting a client holding %d bytes of an unfinished line "
                "(max_buffered_bytes %d over all clients)",
                self.path,
                len(client.partial),
                self.max_buffered_bytes,
            )
            self._evict(client)

    def _split(self, client: _Client, chunk: bytes, lines: list[bytes]) -> None:
        """Append the lines `chunk` completes to `lines`; keep its unfinished tail."""
        max_len = self.max_line_bytes
        if client.discarding:
            end = chunk.find(b"\n")
            if end < 0:
                return
            client.discarding = False
            chunk = chunk[end + 1 :]
        last = chunk.rfind(b"\n")
        if last < 0:
            if len(client.partial) + len(chunk) > max_len:
                self._drop(1)
                client.partial.clear()
                client.discarding = True
            else:
                client.partial += chunk
            return
        if client.partial:
            head = bytes(client.partial) + chunk[:last]
            client.partial.clear()
        else:
            head = chunk[:last]
        for line in head.split(b"\n"):
            if len(line) > max_len:
                self._drop(1)
            elif line and not line.isspace():
                lines.append(line)
        rest = chunk[last + 1 :]
        if len(rest) > max_len:
            self._drop(1)
            client.discarding = True
        else:
            client.partial += rest

    def _disconnect(self, client: _Client, lines: list[bytes]) -> None:
        if client.partial and not client.discarding and not client.partial.isspace():
            lines.append(bytes(client.partial))
        self._forget(client)
        log.debug("client disconnected from %s (%d left)", self.path, self.clients)

    def _forget(self, client: _Client) -> None:
        sock = client.sock
        if sock is None:
            return
        try:
            self._selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        self._clients.pop(sock.fileno(), None)
        sock.close()
        client.sock = None
        self._buffered -= len(client.partial)
        client.partial.clear()
        self.clients = len(self._clients)

    # -- accounting -----------------------------------------------------------------------
    def _drop(self, count: int) -> None:
        self.dropped += count
        self._dropped_since_warning += count

    def _warn_about_drops(self) -> None:
        if not self._dropped_since_warning:
            return
        now = time.monotonic()
        if now - self._last_warning < WARN_INTERVAL:
            return
        log.warning(
            "%s: dropped %d over-long, truncated or unfinished event(s) (limit %d bytes; %d in "
            "total)",
            self.path,
            self._dropped_since_warning,
            self.max_line_bytes,
            self.dropped,
        )
        self._last_warning = now
        self._dropped_since_warning = 0

    # -- shutdown -------------------------------------------------------------------------
    def close(self) -> None:
        """Close every socket; unlink the socket file if it is still the one we bound.

        Partial lines of connected stream clients are discarded: a client still connected
        at shutdown will resend nothing, so there is nothing better to do with them.
        """
        if self._closed:
            return
        self._closed = True
        for client in list(self._clients.values()):
            self._forget(client)
        self._selector.close()
        self._sock.close()
        try:
            st = os.lstat(self.path)
        except OSError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            _unlink_quietly(self.path)

    def __enter__(self) -> SocketListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SocketListener({self.path!r}, {self.kind!r})"


def _socket_is_live(path: str) -> bool:
    """True if a process still listens on the unix socket at `path` (of either type)."""
    for sock_type in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        probe = socket.socket(socket.AF_UNIX, sock_type)
        probe.settimeout(0.5)
        try:
            probe.connect(path)
        except OSError:
            continue
        else:
            return True
        finally:
            probe.close()
    return False


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
