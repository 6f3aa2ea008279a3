"""Which partition a source address belongs to, and the check that a topic is keyed so.

Per-source detection is only right when every record of a source reaches the same
consumer, i.e. the same partition: the topic must be keyed by the originator address
(`id.orig_h`, `src_ip`). Which partition a key lands on is decided by the *producer's*
partitioner, and producers differ:

* `murmur2`: the Java client's default partitioner (`Utils.toPositive(Utils.murmur2(key))
  % partitions`): Logstash's Kafka output, Kafka Streams, Kafka Connect, MirrorMaker,
  librdkafka's `murmur2_random`, and `zeekndm rekey`.
* `crc32`: librdkafka's default (`consistent_random`: CRC-32 of the key, modulo the
  partitions): Vector's Kafka sink unless told otherwise, kcat, anything on librdkafka.
* `fnv1a`: Filebeat's Kafka output (`hash` partitioner, the default: FNV-1a 32 of the key,
  `(int32(h) & 0x7fffffff) % partitions`).

Any of them keeps a source on one partition, which is all detection needs; the check only
has to know which one the producer used (`partitioner:` of the input). `KeyCheck` counts,
per partition, the records whose source belongs to another partition's key space and
warns about them at most once a minute per partition, with what it saw (no key, a key
that is not the source address, or a key hashed by another partitioner), so a pipeline
that is not keyed by source is visible instead of silently missing scans.
"""

from __future__ import annotations

import ipaddress
import logging
import zlib
from collections import Counter
from collections.abc import Callable

log = logging.getLogger(__name__)

PARTITIONERS = ("murmur2", "crc32", "fnv1a")
_M32 = 0xFFFFFFFF
WARN_EVERY = 60.0
"""Seconds between two warnings about misplaced records of one partition."""
_CACHE_MAX = 200_000


def murmur2(data: bytes) -> int:
    """The Java client's `Utils.murmur2` (seed 0x9747b28c) as an unsigned 32-bit value."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & _M32
    n4 = length & ~3
    for i in range(0, n4, 4):
        k = data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        k = (k * m) & _M32
        k ^= k >> 24
        k = (k * m) & _M32
        h = ((h * m) & _M32) ^ k
    rest = length & 3
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * m) & _M32
    h ^= h >> 13
    h = (h * m) & _M32
    h ^= h >> 15
    return h


def fnv1a_32(data: bytes) -> int:
    """FNV-1a, 32 bits (Go's `hash/fnv.New32a`, which Filebeat's partitioner uses)."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & _M32
    return h


def _murmur2_partition(key: bytes, partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def _crc32_partition(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def _fnv1a_partition(key: bytes, partitions: int) -> int:
    return (fnv1a_32(key) & 0x7FFFFFFF) % partitions


_BY_NAME: dict[str, Callable[[bytes, int], int]] = {
    "murmur2": _murmur2_partition,
    "crc32": _crc32_partition,
    "fnv1a": _fnv1a_partition,
}


def partition_for(key: bytes, partitions: int, partitioner: str = "murmur2") -> int:
    """The partition a producer using `partitioner` puts a record keyed `key` on."""
    return _BY_NAME[partitioner](key, partitions)


def _normalised(key: bytes) -> str | None:
    """A message key read as an IP address, in the form the readers give `Flow.src`."""
    try:
        addr = ipaddress.ip_address(key.decode("ascii").split("%", 1)[0])
    except (UnicodeDecodeError, ValueError):
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


class KeyCheck:
    """Counts records whose source belongs to another partition (see the module docstring).

    `check(src, partition, partitions, key)` is called once per record; the expected
    partition of each source is cached, so a record costs one dict look-up. `misplaced`
    counts per (topic, partition); `warn` logs at most once per `WARN_EVERY` seconds per
    partition, saying how many were seen since the last warning.
    """

    def __init__(self, partitioner: str, clock: Callable[[], float]) -> None:
        self.partitioner = partitioner
        self._partition = _BY_NAME[partitioner]
        self._clock = clock
        self._cache: dict[tuple[str, int], int] = {}
        self.misplaced: Counter = Counter()  # (topic, partition) -> records
        self._since_warning: Counter = Counter()
        self._last_warning: dict[tuple[str, int], float] = {}

    def expected(self, src: str, partitions: int) -> int:
        cache = self._cache
        hit = cache.get((src, partitions))
        if hit is None:
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            hit = cache[(src, partitions)] = self._partition(src.encode(), partitions)
        return hit

    def check(
        self, topic: str, src: str, partition: int, partitions: int, key: bytes | None, where: str
    ) -> bool:
        """True when the record is on its source's partition; else counted (and warned)."""
        if self.expected(src, partitions) == partition:
            return True
        if key is not None and _normalised(key) == src:
            # keyed by the source as the sensor wrote it (an IPv6 address in another
            # spelling, an IPv4-mapped one): placed by that key, which is consistent
            if self._partition(key, partitions) == partition:
                return True
        tp = (topic, partition)
        self.misplaced[tp] += 1
        self._since_warning[tp] += 1
        now = self._clock()
        last = self._last_warning.get(tp)
        if last is None or now - last >= WARN_EVERY:
            self._warn(tp, src, partitions, key, where, last is None)
            self._last_warning[tp] = now
            self._since_warning[tp] = 0
        return False

    def _warn(
        self, tp: tuple[str, int], src: str, partitions: int, key: bytes | None, where: str,
        first: bool,
    ) -> None:  # fmt: skip
        expected = self.expected(src, partitions)
        if key is None:
            seen = "the message has no key"
        elif _normalised(key) == src:
            seen = (
                f"the message is keyed by the source but not placed by {self.partitioner} "
                f"(the producer uses another partitioner: set partitioner: to the producer's)"
            )
        else:
            shown = key[:40].decode("utf-8", "replace")
            seen = f"the message key is {shown!r}, not the source address"
        count = "" if first else f" ({self._since_warning[tp]} such records since the last warning)"
        log.warning(
            "%s: a record from %s is on partition %d but its source belongs to partition %d "
            "of %d (%s of the source address): %s%s. Its source's records may be split "
            "between consumers, so scans can be missed: key the topic by the source address "
            "(README: Scale-out with Kafka) or run zeekndm rekey",
            where,
            src,
            tp[1],
            expected,
            partitions,
            self.partitioner,
            seen,
            count,
        )
