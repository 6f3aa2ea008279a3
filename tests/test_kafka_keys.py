"""The partitioners the key check and `rekey` use, and the check itself (no broker)."""

from __future__ import annotations

import logging

import pytest

from zeekndm.live.kafka.keys import KeyCheck, fnv1a_32, murmur2, partition_for


def signed(h: int) -> int:
    return h - (1 << 32) if h >= 1 << 31 else h


# Kafka's own test vectors for Utils.murmur2 (clients/src/test/.../UtilsTest.java)
@pytest.mark.parametrize(
    "key, java",
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_the_java_client(key, java):
    assert signed(murmur2(key)) == java


def test_fnv1a_is_the_32_bit_fnv_1a_filebeat_hashes_keys_with():
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968
    # Filebeat: int32(hash) & 0x7fffffff, modulo the partitions
    assert partition_for(b"foobar", 7, "fnv1a") == (0xBF9CF968 & 0x7FFFFFFF) % 7


def test_crc32_partitioner_is_librdkafkas_consistent_hash():
    import zlib

    assert partition_for(b"10.1.2.3", 12, "crc32") == zlib.crc32(b"10.1.2.3") % 12


def test_a_record_on_its_sources_partition_passes_silently(caplog):
    check = KeyCheck("murmur2", clock=lambda: 0.0)
    p = partition_for(b"10.1.7.23", 4)
    with caplog.at_level(logging.WARNING):
        assert check.check("zeek", "10.1.7.23", p, 4, b"10.1.7.23", "zeek[0]:5")
    assert not check.misplaced and not caplog.records


def test_misplaced_records_are_counted_and_warned_about_once_a_minute_per_partition(caplog):
    now = [0.0]
    check = KeyCheck("murmur2", clock=lambda: now[0])
    src = "10.1.7.23"
    wrong = (partition_for(src.encode(), 4) + 1) % 4
    with caplog.at_level(logging.WARNING):
        for i in range(50):
            check.check("zeek", src, wrong, 4, None, f"zeek[{wrong}]:{i}")
        now[0] = 61.0
        check.check("zeek", src, wrong, 4, None, f"zeek[{wrong}]:50")
    assert check.misplaced[("zeek", wrong)] == 51
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2
    assert warnings[0].startswith(f"zeek[{wrong}]:0: a record from 10.1.7.23 is on partition")
    assert "the message has no key" in warnings[0] and "zeekndm rekey" in warnings[0]
    assert "(50 such records since the last warning)" in warnings[1]


def test_the_warning_says_when_the_key_is_not_the_source(caplog):
    check = KeyCheck("murmur2", clock=lambda: 0.0)
    src = "10.1.7.23"
    wrong = (partition_for(src.encode(), 4) + 1) % 4
    with caplog.at_level(logging.WARNING):
        check.check("zeek", src, wrong, 4, b"CHhAvVGS1DHFjwGM9", "zeek[1]:0")
    assert "the message key is 'CHhAvVGS1DHFjwGM9', not the source address" in caplog.text


def test_keyed_by_source_with_another_partitioner_is_named(caplog):
    """Filebeat hashes keys with FNV-1a: the topic is keyed by source, only the check was
    told the wrong partitioner."""
    src = next(
        f"10.0.0.{i}"
        for i in range(1, 255)
        if partition_for(f"10.0.0.{i}".encode(), 8, "fnv1a")
        != partition_for(f"10.0.0.{i}".encode(), 8)
    )
    placed = partition_for(src.encode(), 8, "fnv1a")
    with caplog.at_level(logging.WARNING):
        assert not KeyCheck("murmur2", lambda: 0.0).check("z", src, placed, 8, src.encode(), "w")
    assert "keyed by the source but not placed by murmur2" in caplog.text
    assert KeyCheck("fnv1a", lambda: 0.0).check("z", src, placed, 8, src.encode(), "w")


def test_a_key_spelling_the_source_differently_is_consistent():
    """The sensor wrote ::ffff:10.0.0.N (the readers make it 10.0.0.N) and the producer
    keyed by what it saw: placed by that key, consistently, so not misplaced."""
    i = next(
        i
        for i in range(1, 255)
        if partition_for(f"::ffff:10.0.0.{i}".encode(), 16)
        != partition_for(f"10.0.0.{i}".encode(), 16)
    )
    key = f"::ffff:10.0.0.{i}".encode()
    check = KeyCheck("murmur2", lambda: 0.0)
    assert check.check("z", f"10.0.0.{i}", partition_for(key, 16), 16, key, "w")
    assert not check.misplaced
