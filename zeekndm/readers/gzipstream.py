"""A gzip decoder that keeps every byte it could decode, as `gzip -dc` does.

`gzip.GzipFile` raises on a truncated stream, a bad CRC or corrupt deflate data, and the
bytes it had decompressed in that call are gone with the exception (a `BufferedReader`
on top loses its whole block): a truncated log lost a quarter of its readable records,
and a small one failed outright. `GzipStream` never raises for damage. It returns every
byte decoded before the damage, then reports end of file, and says what was wrong and
at which byte of the compressed input in `error` / `error_offset`, so the reader can
count the records and report the unreadable tail.

Multi-member files (`cat a.gz b.gz`, rotation appending) are read member after member;
zero padding after the last member is ignored (as gzip does). Output is produced in
bounded pieces, so a gzip bomb is streamed, never held.
"""

from __future__ import annotations

import io
import zlib
from typing import BinaryIO

MAGIC = b"\x1f\x8b"
_IN_CHUNK = 1 << 14  # compressed bytes per step: bounds what one corrupt step can cost
_OUT_MAX = 1 << 20  # decompressed bytes per step (gzip bombs are streamed)
_HEADER_MAX = 1 << 20  # a gzip header (name, comment, extra field) longer than this is junk
_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2


def header_length(buf: bytes) -> int | None:
    """Length of the gzip member header at the start of `buf`; None if `buf` is too short
    to tell; ValueError if it is not a gzip header."""
    if len(buf) < 10:
        if not MAGIC.startswith(buf[:2]):
            raise ValueError("not a gzip member")
        return None
    if buf[:2] != MAGIC:
        raise ValueError("not a gzip member")
    if buf[2] != 8:
        raise ValueError(f"unknown compression method {buf[2]}")
    flags = buf[3]
    pos = 10
    if flags & _FEXTRA:
        if len(buf) < pos + 2:
            return None
        pos += 2 + int.from_bytes(buf[pos : pos + 2], "little")
    for flag in (_FNAME, _FCOMMENT):
        if flags & flag:
            end = buf.find(b"\0", pos)
            if end < 0:
                return None
            pos = end + 1
    if flags & _FHCRC:
        pos += 2
    return pos if len(buf) >= pos else None


class GzipStream(io.RawIOBase):
    """Decompressed bytes of the gzip data read from `raw`; see the module docstring."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._buf = b""  # compressed input read but not yet consumed
        self._pos = 0  # offset in the compressed input of self._buf[0]
        self._out = b""  # decompressed, not yet returned
        self._d: zlib._Decompress | None = None  # None between members
        self._crc = 0
        self._size = 0
        self._members = 0
        self._eof = False  # raw is exhausted
        self._done = False
        #: What made the rest unreadable ("truncated", "CRC mismatch", ...), or None.
        self.error: str | None = None
        #: Byte offset in the compressed input where the unreadable part starts.
        self.error_offset: int | None = None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    def readinto(self, b) -> int:  # type: ignore[override]
        while not self._out:
            if self._done:
                return 0
            self._step()
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    # -- the decoder ---------------------------------------------------------------
    def _fill(self) -> bool:
        """Read more compressed input into the buffer; False at the end of the input."""
        if self._eof:
            return False
        data = self._raw.read(_IN_CHUNK)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def _fail(self, reason: str, offset: int) -> None:
        self.error, self.error_offset, self._done = reason, offset, True

    def _consume(self, n: int) -> None:
        self._buf = self._buf[n:]
        self._pos += n

    def _step(self) -> None:
        if self._d is None:
            self._start_member()
        else:
            self._inflate()

    def _start_member(self) -> None:
        while True:
            if not self._buf and not self._fill():
                if self._members == 0:
                    self._fail("empty gzip stream", self._pos)
                else:
                    self._done = True
                return
            try:
                length = header_length(self._buf)
            except ValueError as exc:
                if self._members and not self._buf.strip(b"\0"):
                    self._consume(len(self._buf))  # zero padding after the last member
                    continue
                self._fail(
                    "trailing garbage after the last gzip member" if self._members else str(exc),
                    self._pos,
                )
                return
            if length is not None:
                break
            if len(self._buf) > _HEADER_MAX or not self._fill():
                self._fail("truncated gzip header", self._pos)
                return
        self._consume(length)
        self._d = zlib.decompressobj(-zlib.MAX_WBITS)
        self._crc = self._size = 0
        self._members += 1

    def _inflate(self) -> None:
        d = self._d
        assert d is not None
        if not self._buf and not self._fill():
            self._fail("truncated: the compressed data ends inside a gzip member", self._pos)
            return
        data = self._buf
        snapshot = d.copy()
        try:
            out = d.decompress(data, _OUT_MAX)
        except zlib.error as exc:
            out, good = _salvage(snapshot, data)
            self._emit(out)
            self._fail(f"corrupt deflate data ({exc})", self._pos + good)
            return
        if d.eof:
            used = len(data) - len(d.unused_data)
        else:
            used = len(data) - len(d.unconsumed_tail)
        self._consume(used)
        self._emit(out)
        if d.eof:
            self._end_member()

    def _emit(self, out: bytes) -> None:
        if out:
            self._crc = zlib.crc32(out, self._crc)
            self._size += len(out)
            self._out += out

    def _end_member(self) -> None:
        while len(self._buf) < 8:
            if not self._fill():
                self._fail("truncated: the gzip trailer (CRC and length) is cut off", self._pos)
                return
        crc = int.from_bytes(self._buf[:4], "little")
        size = int.from_bytes(self._buf[4:8], "little")
        if crc != self._crc or size != self._size & 0xFFFFFFFF:
            what = "CRC" if crc != self._crc else "length"
            self._fail(f"{what} check failed: the decoded data may be damaged", self._pos)
            return
        self._consume(8)
        self._d = None


def _salvage(d: zlib._Decompress, data: bytes) -> tuple[bytes, int]:
    """Everything `d` decodes from `data` before the byte that breaks it, and how many
    input bytes were accepted (fed in small pieces, then one byte at a time)."""
    out = []
    good = 0
    for step in (512, 1):
        while good < len(data):
            piece = data[good : good + step]
            trial = d.copy()
            try:
                out.append(trial.decompress(piece))
            except zlib.error:
                break
            d = trial
            good += len(piece)
            if d.eof:
                return b"".join(out), good
    return b"".join(out), good
