"""Readers against hostile input (issue 9): every value is validated at the parser, so a
record that reaches the detector is a valid Flow and an alert built from it encodes."""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import threading
import zlib

import orjson
import pytest
from test_readers import CONN_JSON, compact, eve_flow, header, read, row, write

from zeekndm.readers import PARSERS, ReadStats, make_parser, parse_line, read_flows
from zeekndm.readers.base import REASON_CAP, AddressCache, BadLine


def bad_reasons(stats: ReadStats) -> dict[str, int]:
    return dict(stats.bad_by_reason)


# -- item 9: out-of-range timestamps -------------------------------------------------------
@pytest.mark.parametrize(
    ("ts", "hint"),
    [
        ("1713484795943", "milliseconds"),  # epoch ms
        ("1713484795943211", "microseconds"),
        ("1e13", "milliseconds"),
        ("253402300800", "milliseconds"),  # one second past 9999-12-31T23:59:59Z
        ("-62135596801", "outside"),  # before year 1
        ("-1", "outside"),
        ("inf", ""),
        ("nan", ""),
    ],
)
def test_tsv_out_of_range_ts_is_a_bad_ts_with_a_unit_hint(tmp_path, ts, hint):
    flows, stats = read(write(tmp_path, header() + row(ts=ts) + row()))
    assert len(flows) == 1
    assert bad_reasons(stats) == {"bad ts": 1}


def test_bad_ts_detail_says_milliseconds(tmp_path, caplog):
    read(write(tmp_path, header() + row(ts="1713484795943")))
    assert any("epoch milliseconds?" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("ts", [1713484795943, 1e13, -5, 10**30, "9999999999999"])
def test_zeek_json_out_of_range_ts_is_a_bad_ts(tmp_path, ts):
    flows, stats = read(write(tmp_path, compact(dict(CONN_JSON, ts=ts)) + compact(CONN_JSON)))
    assert len(flows) == 1 and bad_reasons(stats) == {"bad ts": 1}


@pytest.mark.parametrize(
    "start",
    ["9999-12-31T23:59:59.000000-1400", "0001-01-01T00:00:00.000000+0100", "9999-12-31T23:59:59Z"],
)
def test_eve_timestamp_beyond_year_9999_or_before_year_1_is_a_bad_ts(tmp_path, start):
    text = compact(eve_flow(flow={"start": start})) + compact(eve_flow())
    flows, stats = read(write(tmp_path, text, "eve.json"))
    if start.endswith("Z"):  # 9999-12-31T23:59:59Z itself is the last valid second
        assert len(flows) == 2
    else:
        assert len(flows) == 1 and bad_reasons(stats) == {"bad ts": 1}


# -- item 10: values that cannot be described or encoded ------------------------------------
def test_deeply_nested_values_do_not_break_bad_line_details(tmp_path):
    deep = "[" * 200 + "]" * 200  # orjson's limit is 1024; repr() fails far below that
    lines = [
        compact(dict(CONN_JSON, **{field: "DEEP"})).replace('"DEEP"', deep)
        for field in ("proto", "id.orig_h", "ts", "id.resp_p", "uid", "_path")
    ]
    lines += [
        compact(dict(eve_flow(), **{field: "DEEP"})).replace('"DEEP"', deep)
        for field in ("proto", "src_ip", "dest_port", "host", "event_type")
    ]
    for i, line in enumerate(lines):
        name = "eve.json" if "event_type" in line else f"conn{i}.log"
        good = compact(eve_flow()) if "event_type" in line else compact(CONN_JSON)
        flows, stats = read(write(tmp_path, good + line + good, name))
        assert len(flows) == 2 and stats.bad_lines == 1, line[:60]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("_node_name", {"a": [1]}, "bad _node_name"),
        ("uid", 5, "bad uid"),
        ("community_id", ["x"], "bad community_id"),
        ("local_orig", {"T": 1}, "bad local_orig"),
        ("conn_state", ["S0"], "bad conn_state"),
        ("proto", {"name": "tcp"}, "bad proto"),
        ("id.resp_p", 2**63 - 1, "bad port"),
        ("id.resp_p", True, "bad port"),
        ("id.resp_p", "027017", "bad port"),
    ],
)
def test_zeek_json_wrong_typed_values_never_reach_a_flow(tmp_path, field, value, reason):
    text = compact(dict(CONN_JSON, **{field: value})) + compact(CONN_JSON)
    flows, stats = read(write(tmp_path, text))
    assert len(flows) == 1 and bad_reasons(stats) == {reason: 1}


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"host": {"name": "sensor"}}, "bad host"),
        ({"community_id": 7}, "bad community_id"),
        ({"flow_id": [1]}, "bad flow_id"),
        ({"proto": {"p": 6}}, "bad proto"),
        ({"proto": True}, "bad proto"),
        ({"event_type": ["flow"]}, "bad event_type"),
        ({"dest_port": 2**63 - 1}, "bad port"),
    ],
)
def test_eve_wrong_typed_values_never_reach_a_flow(tmp_path, over, reason):
    text = compact(dict(eve_flow(), **over)) + compact(eve_flow())
    flows, stats = read(write(tmp_path, text, "eve.json"))
    assert len(flows) == 1 and bad_reasons(stats) == {reason: 1}


@pytest.mark.parametrize(("number", "name"), [(6, "tcp"), (17, "udp"), (1, "icmp"), (58, "icmp")])
def test_eve_proto_given_as_a_number_is_mapped(tmp_path, number, name):
    flows, _ = read(write(tmp_path, compact(dict(eve_flow(), proto=number)), "eve.json"))
    assert [f.transport.value for f in flows] == [name]


# -- item 22: what a port is ----------------------------------------------------------------
@pytest.mark.parametrize("port", ["027017", "27_017", "+27017", "\u0662\u0667\u0660\u0661\u0667"])
def test_tsv_port_must_be_canonical_digits_in_both_read_paths(tmp_path, port):
    text = header() + row(**{"id__resp_p": port}) + row()
    p = write(tmp_path, text)
    filtered, fstats = read(p, dports={27017})
    parsed, pstats = read(p)
    assert [f for f in filtered if f.dport == 27017] == parsed and len(parsed) == 1
    assert bad_reasons(pstats) == {"bad port": 1}


@pytest.mark.parametrize(
    ("name", "make", "key"),
    [
        ("eve.json", lambda: compact(eve_flow()), "dest_port"),
        ("conn.log", lambda: compact(CONN_JSON), "id.resp_p"),
    ],
)
def test_duplicate_port_key_gives_the_same_records_with_and_without_the_prefilter(
    tmp_path, name, make, key
):
    base = make()
    value = orjson.loads(base)[key]
    lines = [
        base.replace(f'"{key}":{value},', f'"{key}":{first},"{key}":{last},', 1)
        for first, last in ((80, 27017), (27017, 80), (80, 443))
    ]
    assert all(line != base for line in lines)
    p = write(tmp_path, "".join(lines), name)
    filtered, _ = read(p, dports={27017})
    parsed, _ = read(p)
    assert [f.dport for f in parsed] == [27017, 80, 443]  # orjson keeps the last value
    # the prefilter only drops lines; what either path yields on a watched port is the same
    assert [f for f in filtered if f.dport == 27017] == [f for f in parsed if f.dport == 27017]


# -- item 23: address normalisation ---------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("::ffff:10.0.0.5", "10.0.0.5"),
        ("::FFFF:127.0.0.1", "127.0.0.1"),
        ("0:0:0:0:0:ffff:0a00:0005", "10.0.0.5"),
        ("fd00::5%eth0", "fd00::5"),
        ("fe80::1%2", "fe80::1"),
        ("FD00:0:0:0:0:0:0:5", "fd00::5"),
    ],
)
def test_mapped_ipv4_and_zone_ids_normalise_to_one_address(raw, norm):
    assert AddressCache().normalise(raw) == norm


def test_mapped_and_zoned_destinations_are_not_distinct_in_a_log(tmp_path):
    text = header() + "".join(
        row(**{"id__resp_h": h}) for h in ("fd00::5", "fd00::5%eth0", "fd00::5%eth1")
    )
    flows, _ = read(write(tmp_path, text))
    assert {f.dst for f in flows} == {"fd00::5"}
    text = header() + row(**{"id__orig_h": "::ffff:10.0.0.5"})
    assert read(write(tmp_path, text))[0][0].src == "10.0.0.5"


@pytest.mark.parametrize("raw", ["10.0.0.5%eth0", "::ffff:10.0.0.256", "1.2.3.04", "fd00::5::1%x"])
def test_malformed_addresses_are_bad_ips(raw):
    with pytest.raises(BadLine, match="bad ip"):
        AddressCache().normalise(raw)


# -- item 19: bounded reason tables ---------------------------------------------------------
def test_made_up_event_types_share_one_other_reason_past_the_cap(tmp_path):
    n = REASON_CAP * 5
    text = "".join(compact({"event_type": f"t{i}", "x": 1}) for i in range(n))
    _, stats = read(write(tmp_path, compact(eve_flow()) + text, "eve.json"))
    reasons = stats.skipped_by_reason
    assert len(reasons) == REASON_CAP + 1 and sum(reasons.values()) == n
    assert reasons["event_type=other"] == n - REASON_CAP


@pytest.mark.parametrize("fmt", ["zeek_json", "zeek_notice"])
def test_made_up_paths_share_one_other_reason_past_the_cap(fmt):
    parser = make_parser(fmt)
    stats = ReadStats("x")
    for i in range(REASON_CAP * 3):
        line = compact({"_path": f"p{i}", "note": "x", "ts": 1.0}).encode()
        parse_line(parser, i + 1, line, stats)
    assert len(stats.skipped_by_reason) == REASON_CAP + 1


def test_made_up_tsv_paths_share_one_other_reason_past_the_cap():
    parser = make_parser("zeek_tsv")
    stats = ReadStats("x")
    lines = []
    for i in range(REASON_CAP * 3):
        lines += header(path=f"p{i}").splitlines() + [row().rstrip("\n")]
    for n, line in enumerate(lines, 1):
        parse_line(parser, n, line.encode(), stats)
    assert len(stats.skipped_by_reason) == REASON_CAP + 1


# -- the notice reader ----------------------------------------------------------------------
NOTICE = {
    "ts": 1713484795.5,
    "note": "ZeekNDM::MongoDB_Scan_Internal_External",
    "msg": "10.0.0.5 scanned 30 distinct external hosts",
    "src": "10.0.0.5",
    "zeekndm_distinct": 30,
}


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"ts": 1e13}, "bad ts"),
        ({"zeekndm_distinct": 1e300}, "bad distinct"),
        ({"zeekndm_distinct": 2**64 + 1}, "bad distinct"),
        ({"zeekndm_attempts": "184467440737095516160"}, "bad attempts"),
        ({"_node_name": {"a": {"b": "c"}}}, "bad _node_name"),
        ({"zeekndm_sample": [{"ip": "1.2.3.4"}]}, "bad address list"),
        ({"zeekndm_model": ["x"]}, "bad zeekndm_model"),
    ],
)
def test_notice_values_are_validated_before_they_reach_an_alert(over, reason):
    parser = make_parser("zeek_notice")
    stats = ReadStats("notice.log")
    assert parse_line(parser, 1, compact(dict(NOTICE, **over)).encode(), stats) is None
    assert bad_reasons(stats) == {reason: 1}


def test_scan_notice_port_and_proto_are_validated():
    parser = make_parser("zeek_notice")
    stats = ReadStats("notice.log")
    msg = "10.0.0.5 scanned at least 30 unique hosts on port 27017/tcp in 5m0s"
    base = {"ts": 1713484795.5, "note": "Scan::Address_Scan", "msg": msg, "src": "10.0.0.5"}
    for over in ({"p": 2**63 - 1}, {"p": 80, "proto": {"x": 1}}, {"msg": {"m": msg}}):
        assert parse_line(parser, 1, compact(dict(base, **over)).encode(), stats) is None
    assert bad_reasons(stats) == {"bad port": 1, "bad proto": 1, "bad msg": 1}
    good = parse_line(parser, 2, compact(base).encode(), stats)
    assert good is not None and good.ports == (27017,)


def test_every_built_in_format_is_covered_here():
    assert set(PARSERS) == {"zeek_tsv", "zeek_json", "suricata_eve", "zeek_notice"}


# -- alerts from validated records always encode --------------------------------------------
def test_an_alert_from_a_notice_with_extreme_valid_values_encodes():
    from zeekndm.enrich import enrich

    parser = make_parser("zeek_notice")
    stats = ReadStats("notice.log")
    rec = dict(NOTICE, ts=253402300799.0, zeekndm_distinct=2**53 - 1, _node_name="s" * 256)
    detection = parse_line(parser, 1, compact(rec).encode(), stats)
    assert detection is not None, stats.bad_by_reason
    doc = enrich(detection).doc
    assert json.loads(orjson.dumps(doc))["@timestamp"].startswith("9999-12-31T23:59:59")


# -- item 4: damaged gzip keeps what `gzip -dc` would give -----------------------------------
def gzip_dc(data: bytes) -> bytes:
    """What `gzip -dc` writes before it stops at damage: fed one byte at a time."""
    d = zlib.decompressobj(31)
    out = []
    for i in range(len(data)):
        try:
            out.append(d.decompress(data[i : i + 1]))
        except zlib.error:
            break
    return b"".join(out)


def complete_rows(decoded: bytes) -> int:
    return sum(1 for line in decoded.split(b"\n")[:-1] if line and not line.startswith(b"#"))


def random_rows(n: int) -> str:
    rng = random.Random(7)  # incompressible enough that damage lands mid-stream
    return "".join(
        row(ts=f"17134{rng.randrange(10**5):05d}.{rng.randrange(10**6):06d}",
            uid=f"C{rng.getrandbits(64):x}")
        for _ in range(n)
    )  # fmt: skip


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.999])
def test_truncated_gzip_keeps_every_record_gzip_dc_decodes(tmp_path, cut):
    data = gzip.compress((header() + random_rows(3000)).encode())
    damaged = data[: int(len(data) * cut)]
    flows, stats = read(write(tmp_path, damaged, "conn.log.gz"))
    assert len(flows) == complete_rows(gzip_dc(damaged))
    assert f"at byte {len(damaged):,} of the compressed file" in stats.unreadable
    assert stats.bad_lines <= 1  # the row the cut went through


def test_bad_crc_keeps_every_record_and_says_so(tmp_path):
    data = bytearray(gzip.compress((header() + random_rows(500)).encode()))
    data[-6] ^= 0xFF  # inside the CRC32 of the trailer
    flows, stats = read(write(tmp_path, bytes(data), "conn.log.gz"))
    assert len(flows) == 500 and stats.bad_lines == 0
    assert "CRC check failed" in stats.unreadable


def test_corrupt_deflate_data_keeps_the_records_before_the_damage(tmp_path):
    data = bytearray(gzip.compress((header() + random_rows(3000)).encode()))
    for at in range(len(data) // 2, len(data) // 2 + 4):
        data[at] ^= 0x55
    expected = complete_rows(gzip_dc(bytes(data)))
    flows, stats = read(write(tmp_path, bytes(data), "conn.log.gz"))
    assert stats.unreadable is not None
    assert len(flows) + stats.bad_lines >= expected > 0


def test_small_truncated_gzip_is_read_not_refused(tmp_path):
    data = gzip.compress((header() + row() * 3).encode())
    flows, stats = read(write(tmp_path, data[:-8], "conn.log.gz"))  # trailer cut off
    assert len(flows) == 3 and "trailer" in stats.unreadable


def test_concatenated_gzip_members_are_all_read(tmp_path):
    data = gzip.compress((header() + row() * 2).encode()) + gzip.compress(row().encode())
    flows, stats = read(write(tmp_path, data + b"\0" * 16, "conn.log.gz"))
    assert len(flows) == 3 and stats.unreadable is None


# -- item 25: standard input, FIFOs, BOM, other Zeek logs ------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_stream_input_loses_none_of_its_first_bytes(gz):
    text = (header() + row() * 5).encode()
    data = gzip.compress(text) if gz else text
    stats = ReadStats("-")
    flows = list(read_flows("-", stats, stream=io.BytesIO(data)))
    assert len(flows) == 5 and stats.format == "zeek_tsv" and stats.bad_lines == 0


@pytest.mark.parametrize("gz", [False, True])
def test_fifo_is_read_from_its_first_byte(tmp_path, gz):
    fifo = tmp_path / "conn.fifo"
    os.mkfifo(fifo)
    text = (header() + row() * 50).encode()
    data = gzip.compress(text) if gz else text

    def writer():
        with open(fifo, "wb") as fh:
            for i in range(0, len(data), 7):  # small writes: the reader sees short reads
                fh.write(data[i : i + 7])
                fh.flush()

    thread = threading.Thread(target=writer)
    thread.start()
    flows, stats = read(fifo)
    thread.join(10)
    assert len(flows) == 50 and stats.bad_lines == 0


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("conn.log", header() + row()),
        ("conn.json", compact(CONN_JSON)),
        ("eve.json", compact(eve_flow())),
    ],
)
def test_utf8_byte_order_mark_is_accepted(tmp_path, name, text):
    flows, stats = read(write(tmp_path, b"\xef\xbb\xbf" + text.encode(), name))
    assert len(flows) == 1 and stats.bad_lines == 0


@pytest.mark.parametrize(
    "record",
    [
        {"ts": 1.0, "uid": "C1", "id.orig_h": "10.0.0.5", "id.orig_p": 5353,
         "id.resp_h": "8.8.8.8", "id.resp_p": 27017, "proto": "udp", "query": "example.com"},
        {"ts": 1.0, "uid": "C1", "id.orig_h": "10.0.0.5", "id.orig_p": 5353,
         "id.resp_h": "8.8.8.8", "id.resp_p": 389, "method": "GET", "uri": "/"},
        dict(CONN_JSON, _path="ssl"),
    ],
)  # fmt: skip
def test_json_log_that_is_not_conn_is_never_read_as_connections(tmp_path, record):
    flows, stats = read(write(tmp_path, compact(record) * 3, "log.json"))
    assert flows == [] and stats.passed_over.startswith("not a connection log")
    # line by line (live mode) the same records are skipped, never connections
    parser = make_parser("zeek_json")
    assert parse_line(parser, 1, compact(record).encode(), stats) is None
    assert stats.records == 0 and stats.skipped == 1


def test_every_line_is_a_record_bad_skipped_filtered_or_ignored(tmp_path):
    text = (
        header() + row() + "\n" + "#comment\n" + row(**{"id__resp_p": "80"})
        + row(ts="x") + header(path="dns") + row()
    )  # fmt: skip
    p = write(tmp_path, text)
    for dports in (None, {27017}):
        _, s = read(p, dports=dports)
        assert s.lines == s.records + s.bad_lines + s.skipped + s.filtered + s.ignored
