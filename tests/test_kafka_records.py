"""Kafka messages to records (`live.kafka.records`) and the per-partition state encoding
(`live.kafka.state`), without a broker."""

from __future__ import annotations

import io
import json

import orjson
import pytest

from zeekndm.detection import Detection
from zeekndm.flow import Flow
from zeekndm.live.kafka.records import CONN_FIELDS, PartitionReader
from zeekndm.live.kafka.state import CHUNK_BYTES, PartitionState
from zeekndm.synth import demo_traffic, write_eve, write_zeek_json, write_zeek_tsv


def reader(fmt: str = "auto", **kw) -> PartitionReader:
    return PartitionReader("zeek[3]", fmt, clock=lambda: 0.0, **kw)


def lines_of(writer) -> list[bytes]:
    buf = io.StringIO()
    writer(demo_traffic().in_write_order()[:50], buf)
    return [ln.encode() for ln in buf.getvalue().splitlines()]


def test_auto_finds_zeek_json_and_eve_per_partition():
    zeek, eve = reader(), reader()
    zeek_records = [
        r for i, ln in enumerate(lines_of(write_zeek_json)) for r in zeek.records(ln, i)
    ]
    eve_records = [r for i, ln in enumerate(lines_of(write_eve)) for r in eve.records(ln, i)]
    assert zeek.format == "zeek_json" and eve.format == "suricata_eve"
    assert len(zeek_records) == 50 and len(eve_records) == 50
    assert all(type(r) is Flow for r in zeek_records + eve_records)
    assert eve.stats.skipped_by_reason  # its dns events are skipped, and counted


@pytest.mark.parametrize("writer", [write_zeek_json, write_eve], ids=["zeek_json", "eve"])
def test_records_on_unwatched_ports_are_counted_not_parsed_as_replay_does(writer):
    lines = lines_of(writer)
    everything = [r for i, ln in enumerate(lines) for r in reader().records(ln, i)]
    watched = {f.dport for f in everything if type(f) is Flow} - {443}
    filtering = reader(dports=watched)
    kept = [r for i, ln in enumerate(lines) for r in filtering.records(ln, i)]
    on_443 = sum(1 for f in everything if f.dport == 443)
    assert on_443 > 0 and filtering.filtered == on_443
    assert kept == [f for f in everything if f.dport != 443]
    filtering.set_dports(None)  # a reload enabling a model on every port: all parsed again
    again = [r for i, ln in enumerate(lines) for r in filtering.records(ln, i)]
    assert again == everything and filtering.filtered == on_443


@pytest.mark.parametrize("writer", [write_zeek_json, write_eve], ids=["zeek_json", "eve"])
def test_a_batch_of_messages_reads_as_each_message_alone_on_both_cores(writer, core_path):
    """A consumed batch goes through the block scan (compiled core) or line by line: the
    same records at the same offsets, the same filtered, bad and skipped counts, with odd
    messages (several lines, too long, empty, not JSON, zeek-kafka's tagged form) between
    runs of plain ones."""
    lines = lines_of(writer) * 2
    tagged = b'{"conn": ' + lines_of(write_zeek_json)[3] + b"}"
    odd = [b"not json", b"", lines[0] + b"\n" + lines[1], b"{" + b" " * 5000 + b"}", tagged]
    messages: list[tuple[int, bytes | None]] = []
    for i, line in enumerate(lines):
        messages.append((len(messages), line))
        if i % 17 == 5:
            messages.append((len(messages), odd[(i // 17) % len(odd)]))
    watched = {27017, 389, 53}

    def fresh() -> PartitionReader:
        r = reader(dports=watched, max_message_bytes=4096)
        r.records(lines[0], -1)  # the format is found on a first message
        return r

    one, together = fresh(), fresh()
    want = [(o, r) for o, v in messages for r in one.records(v, o)]
    got = list(together.batch(messages[:40])) + list(together.batch(messages[40:]))
    assert got == want and len(want) > 0
    assert together.filtered == one.filtered > 0
    for name in ("lines", "bad_lines"):
        assert getattr(together.stats, name) == getattr(one.stats, name)
    assert together.stats.bad_by_reason == one.stats.bad_by_reason
    assert together.stats.skipped_by_reason == one.stats.skipped_by_reason


def test_zeek_kafka_tagged_json_is_unwrapped_by_log_name():
    r = reader()
    line = lines_of(write_zeek_json)[0]
    conn = r.records(b'{"conn": ' + line + b', "sensor": "edge-1"}', 0)
    assert len(conn) == 1 and type(conn[0]) is Flow
    dns = r.records(b'{"dns": {"ts": 1700000000.0, "query": "example.com"}}', 1)
    assert dns == [] and r.stats.skipped_by_reason["path=dns"] == 1
    notice = {
        "ts": 1700000000.0,
        "note": "ZeekNDM::MongoDB_Scan_Internal_External",
        "src": "10.1.7.23",
        "msg": "10.1.7.23 scanned at least 30 unique hosts on port 27017/tcp in 5m0s",
        "sub": "distinct=30 window=300 severity=medium",
    }
    detections = r.records(orjson.dumps({"notice": notice}), 2)
    assert len(detections) == 1 and isinstance(detections[0], Detection)


def test_zeek_tsv_lines_without_a_header_use_conn_logs_columns():
    data = [ln for ln in lines_of(write_zeek_tsv) if not ln.startswith(b"#")]
    r = reader("zeek_tsv_lines")
    records = [x for i, ln in enumerate(data) for x in r.records(ln, i)]
    assert len(records) == 50 and r.stats.bad_lines == 0
    assert tuple(r.header[-1].split(b"\t")[1:]) == tuple(f.encode() for f in CONN_FIELDS)


def test_a_fields_header_message_replaces_the_columns_and_travels_with_the_state():
    tsv = lines_of(lambda c, out: write_zeek_tsv(c, out, local_columns=False))
    header = [ln for ln in tsv if ln.startswith(b"#fields")]
    data = [ln for ln in tsv if not ln.startswith(b"#")]
    r = reader("zeek_tsv_lines")
    assert r.records(header[0], 0) == []
    assert len([x for i, ln in enumerate(data) for x in r.records(ln, i + 1)]) == 50
    taker = reader("zeek_tsv_lines")
    taker.restore(json.loads(json.dumps(r.to_dict())))
    assert len(taker.records(data[0], 99)) == 1 and taker.stats.bad_lines == 0


def test_a_message_of_several_lines_is_several_records():
    r = reader()
    value = b"\n".join(lines_of(write_zeek_json)[:5]) + b"\n"
    assert len(r.records(value, 0)) == 5


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"this is not JSON", "unrecognised format"),
        (b"x" * 2000, "message too long"),
    ],
)
def test_bad_first_messages_are_counted_and_reading_goes_on(value, reason):
    r = reader(max_message_bytes=1000)
    assert r.records(value, 7) == []
    assert r.stats.bad_by_reason[reason] == 1
    assert len(r.records(lines_of(write_zeek_json)[0], 8)) == 1  # the next one is read


def test_a_wrong_schema_after_the_format_is_known_is_a_bad_record():
    r = reader()
    r.records(lines_of(write_zeek_json)[0], 0)
    assert r.records(b'{"schema": "wrong"}', 1) == []
    assert r.stats.bad_by_reason == {"missing id.orig_h": 1}
    assert r.records(None, 2) == [] and r.stats.skipped_by_reason["empty message"] == 1


# -- state encoding ---------------------------------------------------------------------
def test_partition_state_round_trips_through_its_records():
    state = PartitionState(
        "zeek", 3, 1234, {"version": 2, "tracks": [[1, 2, 3]]}, {"format": "zeek_json"},
        {"records": 10}, 1.5, "m",
    )  # fmt: skip
    records = state.encode("g")
    assert [k for k, _ in records] == [b"g/zeek/3#0", b"g/zeek/3"]
    back = PartitionState.decode(records[-1][1], {0: records[0][1]})
    assert back == state


def test_a_large_state_is_cut_into_chunks_below_the_message_limit():
    import os

    noise = os.urandom(3 * CHUNK_BYTES).hex()  # does not compress
    state = PartitionState("zeek", 0, 5, {"blob": noise})
    records = state.encode("g")
    assert len(records) > 4 and all(len(v) <= CHUNK_BYTES + 12 for _, v in records[:-1])
    chunks = {int(k.split(b"#")[1]): v for k, v in records[:-1]}
    assert PartitionState.decode(records[-1][1], chunks).detector == {"blob": noise}
    del chunks[1]
    with pytest.raises(ValueError, match="chunk 1 of"):
        PartitionState.decode(records[-1][1], chunks)


def test_chunks_of_another_commit_are_refused():
    a = PartitionState("zeek", 0, 5, {"n": 1}).encode("g", seq=1)
    b = PartitionState("zeek", 0, 9, {"n": 2}).encode("g", seq=2)
    with pytest.raises(ValueError, match="missing"):
        PartitionState.decode(b[-1][1], {0: a[0][1]})
    damaged = b[0][1][:-3] + b"xyz"
    with pytest.raises(ValueError, match="CRC"):
        PartitionState.decode(b[-1][1], {0: damaged})
