"""Readers: small generated logs for each behaviour, bad inputs counted and survived."""

from __future__ import annotations

import gzip
import json
import logging
import tracemalloc
from pathlib import Path

import pytest

from zeekndm import readers
from zeekndm.errors import ReaderError
from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.readers import (
    LINE_TOO_LONG,
    PARSERS,
    AddressCache,
    BadLine,
    ReadStats,
    Skip,
    iter_lines,
    make_parser,
    read_flows,
    register_parser,
    sniff_format,
)

BAD = Path(__file__).parent / "data" / "bad"

STD_FIELDS = (
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes "
    "resp_bytes conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes "
    "resp_pkts resp_ip_bytes tunnel_parents"
).split()


def header(fields=STD_FIELDS, path="conn", types=None) -> str:
    lines = [
        "#separator \\x09",
        "#set_separator\t,",
        "#empty_field\t(empty)",
        "#unset_field\t-",
    ]
    if path is not None:
        lines.append(f"#path\t{path}")
    lines.append("#open\t2024-04-19-00-00-01")
    lines.append("#fields\t" + "\t".join(fields))
    lines.append("#types\t" + "\t".join(types or ["string"] * len(fields)))
    return "\n".join(lines) + "\n"


def row(fields=STD_FIELDS, **values) -> str:
    """A data line for `fields`; unspecified columns get a plausible default."""
    defaults = {
        "ts": "1713484795.943239",
        "uid": "CYl7H53iN6mY9NyXJ8",
        "id.orig_h": "10.0.0.5",
        "id.orig_p": "51000",
        "id.resp_h": "203.0.113.7",
        "id.resp_p": "27017",
        "proto": "tcp",
        "conn_state": "S0",
        "local_orig": "T",
        "local_resp": "F",
        "tunnel_parents": "(empty)",
    }
    values = {k.replace("__", "."): v for k, v in values.items()}
    return "\t".join(values.get(f, defaults.get(f, "-")) for f in fields) + "\n"


def write(tmp_path: Path, text: str | bytes, name: str = "conn.log") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def read(path: Path, **kw) -> tuple[list[Flow], ReadStats]:
    stats = ReadStats(str(path))
    flows = list(read_flows(path, stats, **kw))
    return flows, stats


def jline(obj) -> str:
    return json.dumps(obj) + "\n"


def compact(obj) -> str:
    """As Zeek and Suricata write it: no spaces after separators."""
    return json.dumps(obj, separators=(",", ":")) + "\n"


# -- Zeek TSV ------------------------------------------------------------------------------
def test_tsv_record_fields_are_mapped_to_a_flow(tmp_path):
    p = write(tmp_path, header() + row() + "#close\t2024-04-19-01-00-00\n")
    flows, stats = read(p)
    assert flows == [
        Flow(
            ts=1713484795.943239,
            src="10.0.0.5",
            sport=51000,
            dst="203.0.113.7",
            dport=27017,
            transport=Transport.TCP,
            outcome=Outcome.NO_ANSWER,
            uid="CYl7H53iN6mY9NyXJ8",
            community_id=None,
            sensor=None,
            local_orig=True,
            local_resp=False,
        )
    ]
    assert (stats.format, stats.lines, stats.records, stats.bad_lines) == ("zeek_tsv", 10, 1, 0)


def test_tsv_columns_are_found_by_name_with_extra_and_missing_columns(tmp_path):
    fields = ["_node_name", "ts", "id.resp_p", "id.resp_h", "uid", "id.orig_p", "id.orig_h"]
    fields += ["proto", "conn_state", "community_id", "ip_proto", "label", "detailedlabel"]
    line = row(
        fields,
        _node_name="worker-eth0-1",
        community_id="1:abc=",
        ip_proto="6",
        label="Malicious",
        detailedlabel="scan",
        conn_state="REJ",
    )
    flows, stats = read(write(tmp_path, header(fields) + line))
    (f,) = flows
    assert (f.src, f.sport, f.dst, f.dport) == ("10.0.0.5", 51000, "203.0.113.7", 27017)
    assert f.sensor == "worker-eth0-1"
    assert f.community_id == "1:abc="
    assert f.outcome is Outcome.REJECTED
    # No local_orig/local_resp columns at all: unknown, not False.
    assert (f.local_orig, f.local_resp) == (None, None)


@pytest.mark.parametrize(
    "names",
    [
        ("id_orig_h", "id_orig_p", "id_resp_h", "id_resp_p"),
        ("src", "src_port", "dst", "dst_port"),
    ],
)
def test_tsv_accepts_renamed_id_columns(tmp_path, names):
    fields = ["ts", "uid", *names, "proto", "conn_state"]
    line = "\t".join(["1.5", "C1", "10.0.0.5", "1234", "198.51.100.9", "389", "udp", "SF"])
    flows, stats = read(write(tmp_path, header(fields) + line + "\n"))
    assert [(f.src, f.sport, f.dst, f.dport, f.transport) for f in flows] == [
        ("10.0.0.5", 1234, "198.51.100.9", 389, Transport.UDP)
    ]


def test_tsv_system_name_extension_is_the_sensor(tmp_path):
    fields = ["_write_ts", "_stream", "_system_name", *STD_FIELDS]
    line = row(fields, _write_ts="1.0", _stream="conn", _system_name="zeek-1")
    (f,), _ = read(write(tmp_path, header(fields) + line))
    assert f.sensor == "zeek-1"


def test_tsv_new_header_block_mid_stream_resets_the_column_map(tmp_path):
    first = header() + row(id__orig_h="10.0.0.1") + "#close\t2024-04-19-01-00-00\n"
    fields2 = ["_node_name", *STD_FIELDS]
    second = header(fields2) + row(fields2, _node_name="w2", id__orig_h="10.0.0.2")
    flows, stats = read(write(tmp_path, first + second))
    assert [(f.src, f.sensor) for f in flows] == [("10.0.0.1", None), ("10.0.0.2", "w2")]
    assert stats.bad_lines == 0


def test_tsv_btest_comment_leading_tab_and_missing_close_are_accepted(tmp_path):
    text = "### BTest baseline data generated by btest-diff.\n\t" + header() + row() + row()
    flows, stats = read(write(tmp_path, text))
    assert len(flows) == 2 and stats.bad_lines == 0


def test_tsv_other_path_lines_are_skipped_and_counted(tmp_path):
    text = header() + row() + header(path="dns") + row() + row()
    flows, stats = read(write(tmp_path, text))
    assert len(flows) == 1
    assert stats.skipped_by_reason == {"path=dns": 2}
    assert stats.bad_lines == 0


def test_tsv_log_of_another_path_is_passed_over_as_not_a_connection_log(tmp_path):
    flows, stats = read(write(tmp_path, header(path="dns") + row() + row(), "dns.log"))
    assert flows == [] and stats.lines == 0
    assert stats.passed_over == "not a connection log (path=dns)"


def test_tsv_without_path_line_is_read_as_conn(tmp_path):
    flows, _ = read(write(tmp_path, header(path=None) + row()))
    assert len(flows) == 1


def test_tsv_data_before_fields_header_is_a_bad_line(tmp_path):
    text = "#separator \\x09\n" + row() + header() + row()
    flows, stats = read(write(tmp_path, text))
    assert len(flows) == 1
    assert stats.samples == [(2, "data before #fields header")]


def test_tsv_fields_lacking_a_required_column_make_each_line_bad(tmp_path):
    fields = [f for f in STD_FIELDS if f != "id.resp_p"]
    flows, stats = read(write(tmp_path, header(fields) + row(fields)))
    assert flows == []
    assert stats.bad_by_reason == {"#fields lacks id.resp_p": 1}


@pytest.mark.parametrize(
    ("state", "outcome"),
    [
        ("S0", Outcome.NO_ANSWER),
        ("SH", Outcome.NO_ANSWER),
        ("RSTOS0", Outcome.NO_ANSWER),
        ("REJ", Outcome.REJECTED),
        ("SF", Outcome.ESTABLISHED),
        ("S1", Outcome.ESTABLISHED),
        ("S2", Outcome.ESTABLISHED),
        ("S3", Outcome.ESTABLISHED),
        ("RSTO", Outcome.ABORTED),
        ("RSTR", Outcome.ABORTED),
        ("OTH", Outcome.UNKNOWN),
        ("RSTRH", Outcome.UNKNOWN),
        ("SHR", Outcome.NO_ANSWER),
        ("-", Outcome.UNKNOWN),
        ("XYZ", Outcome.UNKNOWN),
    ],
)
def test_tsv_conn_state_maps_to_outcome(tmp_path, state, outcome):
    (f,), _ = read(write(tmp_path, header() + row(conn_state=state)))
    assert f.outcome is outcome


@pytest.mark.parametrize(
    ("state", "outcome"), [("S0", Outcome.NO_ANSWER), ("SF", Outcome.ESTABLISHED)]
)
def test_tsv_udp_without_reply_is_no_answer_and_with_reply_established(tmp_path, state, outcome):
    (f,), _ = read(write(tmp_path, header() + row(proto="udp", conn_state=state)))
    assert (f.transport, f.outcome) == (Transport.UDP, outcome)


@pytest.mark.parametrize(
    ("proto", "transport"),
    [("icmp", Transport.ICMP), ("unknown_transport", Transport.OTHER), ("sctp", Transport.OTHER)],
)
def test_tsv_proto_maps_to_transport(tmp_path, proto, transport):
    (f,), _ = read(write(tmp_path, header() + row(proto=proto, id__orig_p="3", id__resp_p="3")))
    assert f.transport is transport
    assert (f.sport, f.dport) == (3, 3)


@pytest.mark.parametrize(("value", "expected"), [("T", True), ("F", False), ("-", None)])
def test_tsv_local_orig_flag(tmp_path, value, expected):
    (f,), _ = read(write(tmp_path, header() + row(local_orig=value, local_resp=value)))
    assert f.local_orig is expected and f.local_resp is expected


def test_tsv_ipv6_addresses_are_normalised(tmp_path):
    line = row(id__orig_h="2001:0DB8:0000:0000:0000:0000:0000:0001", id__resp_h="fe80::1")
    (f,), _ = read(write(tmp_path, header() + line))
    assert (f.src, f.dst) == ("2001:db8::1", "fe80::1")


def test_tsv_crlf_line_endings_are_accepted(tmp_path):
    text = (header() + row()).replace("\n", "\r\n")
    flows, stats = read(write(tmp_path, text))
    assert len(flows) == 1 and stats.bad_lines == 0


# -- bad TSV lines: counted with reason and line number, reading continues ----------------
@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (row().replace("\t-\t", "\t", 1), "wrong column count"),
        (row(id__resp_p="http"), "bad port"),
        (row(id__resp_p="70000"), "bad port"),
        (row(id__resp_h="10.0.0.300"), "bad ip"),
        (row(id__orig_h="not-an-ip"), "bad ip"),
        (row(ts="XXXXXXXXXX.XXXXXX"), "bad ts"),
        (row(ts="nan"), "bad ts"),
        (row(uid="C\xff\xfe").encode("latin-1"), "invalid utf-8"),
        (row(uid="C\x00x"), "nul byte"),
    ],
)
def test_tsv_bad_line_is_counted_and_reading_continues(tmp_path, bad, reason):
    bad = bad if isinstance(bad, bytes) else bad.encode()
    text = (
        (header() + row(id__orig_h="10.0.0.1")).encode() + bad + row(id__orig_h="10.0.0.2").encode()
    )
    flows, stats = read(write(tmp_path, text))
    assert [f.src for f in flows] == ["10.0.0.1", "10.0.0.2"]
    assert stats.bad_by_reason == {reason: 1}
    assert stats.samples == [(10, reason)]
    assert (stats.lines, stats.records, stats.bad_lines) == (11, 2, 1)


def test_bad_lines_are_logged_as_file_and_line_and_samples_capped(tmp_path, caplog):
    text = header() + row(id__resp_p="x") * 8 + row()
    p = write(tmp_path, text)
    with caplog.at_level(logging.WARNING, logger="zeekndm.readers"):
        flows, stats = read(p)
    assert len(flows) == 1 and stats.bad_lines == 8
    assert [n for n, _ in stats.samples] == [9, 10, 11, 12, 13]
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"{p}:9: bad port") for m in messages)
    assert not any(f"{p}:14:" in m for m in messages)  # only the first five lines
    assert any("8 bad lines in total" in m for m in messages)


# -- gzip, files, sniffing ----------------------------------------------------------------
def test_gzip_is_decided_by_content_not_name(tmp_path):
    text = (header() + row()).encode()
    gz_named_log = write(tmp_path, gzip.compress(text), "conn.log")
    plain_named_gz = write(tmp_path, text, "conn.log.gz")
    assert len(read(gz_named_log)[0]) == 1
    assert len(read(plain_named_gz)[0]) == 1


def test_truncated_gzip_keeps_records_read_before_the_damage(tmp_path):
    text = (header() + row() * 20000).encode()
    data = gzip.compress(text)
    p = write(tmp_path, data[: len(data) // 2], "conn.log.gz")
    flows, stats = read(p)
    assert 0 < len(flows) < 20000
    assert stats.bad_lines <= 1  # the line cut in half by the truncation
    assert "truncated" in stats.unreadable and "byte" in stats.unreadable


def test_missing_file_raises_reader_error_naming_it(tmp_path):
    p = tmp_path / "nope.log"
    with pytest.raises(ReaderError, match="no such file") as err:
        read_flows(p)
    assert str(p) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"\n\n   \n"])
def test_empty_file_raises_reader_error(tmp_path, content):
    p = write(tmp_path, content)
    with pytest.raises(ReaderError, match="empty") as err:
        read_flows(p)
    assert str(p) in str(err.value)


def test_directory_raises_reader_error(tmp_path):
    with pytest.raises(ReaderError, match="directory"):
        read_flows(tmp_path)


def test_unrecognised_content_names_what_was_seen(tmp_path):
    p = write(tmp_path, "Hello, this is not a log file at all, but prose.\n")
    with pytest.raises(ReaderError, match="Hello, this is not a log") as err:
        read_flows(p)
    assert str(p) in str(err.value)


def test_json_array_is_rejected_with_a_clear_message(tmp_path):
    p = write(tmp_path, '[\n  {\n    "event_type": "alert"\n  }\n]\n', "eve.json")
    with pytest.raises(ReaderError, match="a JSON array, not one eve event per line"):
        read_flows(p)


@pytest.mark.parametrize(
    ("first", "fmt"),
    [
        (b"#separator \\x09", "zeek_tsv"),
        (b"   #separator \\x09", "zeek_tsv"),
        (b'{"ts":1.5,"uid":"C1","id.orig_h":"10.0.0.1"}', "zeek_json"),
        (b'{"id":{"orig_h":"10.0.0.1"}}', "zeek_json"),
        (b'{"timestamp":"2022-01-01T00:00:00.0+0000","event_type":"dns"}', "suricata_eve"),
    ],
)
def test_sniff_format_from_first_line(first, fmt):
    assert sniff_format(first) == fmt


def test_sniff_json_object_of_unknown_shape_is_an_error():
    with pytest.raises(ReaderError, match="neither a Zeek conn record nor a Suricata"):
        sniff_format(b'{"hello": "world"}')


def test_make_parser_unknown_name_lists_valid_names():
    with pytest.raises(ReaderError, match="suricata_eve, zeek_json, zeek_notice, zeek_tsv"):
        make_parser("zeek_csv")


def test_explicit_format_overrides_sniffing(tmp_path):
    p = write(tmp_path, header() + row())
    flows, stats = read(p, fmt="zeek_json")
    assert flows == [] and stats.format == "zeek_json"
    assert stats.bad_by_reason["invalid JSON"] >= 1


def test_registered_sniffer_is_asked_before_the_builtin_ones(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_REGISTERED_SNIFFERS", [])
    monkeypatch.setitem(PARSERS, "zeek_notice", PARSERS["zeek_tsv"])

    class NoticeParser:
        format = "zeek_notice"

        def parse(self, line: bytes):
            if line.startswith(b"#") or not line:
                return None
            raise Skip("notice")

    register_parser("zeek_notice", NoticeParser, lambda head: b"#path\tnotice" in head)
    notice = write(tmp_path, header(path="notice") + row(), "notice.log")
    conn = write(tmp_path, header() + row())
    flows, stats = read(notice)
    assert stats.format == "zeek_notice" and stats.skipped_by_reason == {"notice": 1}
    assert read(conn)[1].format == "zeek_tsv"


# -- line reading -------------------------------------------------------------------------
def test_iter_lines_numbers_lines_and_flags_overlong_ones(tmp_path):
    p = write(tmp_path, b"a\n" + b"x" * 5000 + b"\nb\r\nlast-without-newline")
    with open(p, "rb") as f:
        got = list(iter_lines(f, max_line_bytes=100))
    assert got == [(1, b"a"), (2, LINE_TOO_LONG), (3, b"b"), (4, b"last-without-newline")]
    assert got[1][1] is LINE_TOO_LONG


def test_absurdly_long_line_is_counted_with_memory_bounded(tmp_path):
    p = tmp_path / "conn.log"
    with open(p, "wb") as f:
        f.write((header() + row(id__orig_h="10.0.0.1")).encode())
        f.write(b"9" * (20 << 20) + b"\n")  # 20 MB without a newline
        f.write(row(id__orig_h="10.0.0.2").encode())
    tracemalloc.start()
    try:
        flows, stats = read(p)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f.src for f in flows] == ["10.0.0.1", "10.0.0.2"]
    assert stats.samples == [(10, "line too long")]
    assert peak < 6 << 20  # the 1 MiB cap plus buffers, never the 20 MB line


# -- Zeek JSON ----------------------------------------------------------------------------
CONN_JSON = {
    "ts": 1575386400.123456,
    "uid": "CkQ4pu3UHYbZAzmjWh",
    "id.orig_h": "10.18.20.97",
    "id.orig_p": 50000,
    "id.resp_h": "10.18.20.8",
    "id.resp_p": 389,
    "proto": "tcp",
    "conn_state": "RSTR",
    "local_orig": True,
    "local_resp": True,
}


def test_json_record_with_epoch_ts(tmp_path):
    (f,), stats = read(write(tmp_path, jline(CONN_JSON)))
    assert stats.format == "zeek_json"
    assert f == Flow(
        1575386400.123456, "10.18.20.97", 50000, "10.18.20.8", 389, Transport.TCP,
        Outcome.ABORTED, "CkQ4pu3UHYbZAzmjWh", None, None, True, True,
    )  # fmt: skip


def test_json_iso8601_ts_with_z(tmp_path):
    rec = dict(CONN_JSON, ts="2021-06-09T20:55:13.160328Z")
    (f,), _ = read(write(tmp_path, jline(rec)))
    assert f.ts == 1623272113.160328


def test_json_unset_fields_are_absent(tmp_path):
    rec = {
        k: v for k, v in CONN_JSON.items() if k not in ("local_orig", "local_resp", "conn_state")
    }
    (f,), _ = read(write(tmp_path, jline(rec)))
    assert (f.local_orig, f.local_resp, f.outcome) == (None, None, Outcome.UNKNOWN)


def test_json_accepts_underscore_and_nested_id_keys(tmp_path):
    underscored = {k.replace(".", "_"): v for k, v in CONN_JSON.items()}
    nested = {k: v for k, v in CONN_JSON.items() if not k.startswith("id.")}
    nested["id"] = {"orig_h": "10.18.20.97", "orig_p": 50000, "resp_h": "10.18.20.8", "resp_p": 389}
    flows, stats = read(write(tmp_path, jline(underscored) + jline(nested)))
    assert [(f.src, f.dport) for f in flows] == [("10.18.20.97", 389)] * 2


def test_json_other_path_is_skipped(tmp_path):
    text = (
        jline(CONN_JSON)
        + jline(dict(CONN_JSON, _path="dns"))
        + jline(dict(CONN_JSON, _path="conn"))
    )
    flows, stats = read(write(tmp_path, text))
    assert len(flows) == 2 and stats.skipped_by_reason == {"path=dns": 1}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (jline(CONN_JSON)[:40] + "\n", "invalid JSON"),
        ("[1, 2, 3]\n", "not a JSON object"),
        (jline(dict(CONN_JSON, ts="yesterday")), "bad ts"),
        (jline(dict(CONN_JSON, **{"id.resp_p": "ldap"})), "bad port"),
        (jline(dict(CONN_JSON, **{"id.resp_h": "300.1.1.1"})), "bad ip"),
        (jline({k: v for k, v in CONN_JSON.items() if k != "id.orig_h"}), "missing id.orig_h"),
        (jline(dict(CONN_JSON, proto=["tcp"])), "bad proto"),
        (b'{"ts": 1.0, "uid": "\xff"}\n', "invalid utf-8"),
        (b'{"ts": 1.0,\x00 "uid": "C"}\n', "nul byte"),
    ],
)
def test_json_bad_line_is_counted_and_reading_continues(tmp_path, bad, reason):
    bad = bad if isinstance(bad, bytes) else bad.encode()
    text = jline(CONN_JSON).encode() + bad + jline(CONN_JSON).encode()
    flows, stats = read(write(tmp_path, text))
    assert len(flows) == 2
    assert stats.samples == [(2, reason)]


# -- Suricata eve -------------------------------------------------------------------------
def eve_flow(**over):
    ev = {
        "timestamp": "2022-02-08T09:40:28.279682-0500",
        "flow_id": 319006269572893,
        "event_type": "flow",
        "src_ip": "10.2.8.102",
        "src_port": 49747,
        "dest_ip": "13.64.180.106",
        "dest_port": 587,
        "proto": "TCP",
        "flow": {
            "pkts_toserver": 11,
            "pkts_toclient": 14,
            "start": "2022-02-08T09:43:37.139810-0500",
            "end": "2022-02-08T09:43:38.249754-0500",
            "state": "established",
        },
        "tcp": {"tcp_flags": "1b", "tcp_flags_ts": "1b", "tcp_flags_tc": "1a"},
        "community_id": "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
        "host": "sensor-1",
    }
    for key, value in over.items():
        if key in ("flow", "tcp") and isinstance(value, dict):
            ev[key] = {**ev[key], **value}
        elif value is None:
            ev.pop(key, None)
        else:
            ev[key] = value
    return ev


def test_eve_flow_uses_flow_start_not_the_event_timestamp(tmp_path):
    (f,), stats = read(write(tmp_path, jline(eve_flow()), "eve.json"))
    assert stats.format == "suricata_eve"
    assert f == Flow(
        1644331417.13981, "10.2.8.102", 49747, "13.64.180.106", 587, Transport.TCP,
        Outcome.ESTABLISHED, "319006269572893", "1:LQU9qZlK+B5F3KDmev6m5PMibrg=", "sensor-1",
        None, None,
    )  # fmt: skip


def test_eve_netflow_records_have_unknown_outcome(tmp_path):
    ev = eve_flow(event_type="netflow", flow=None, tcp=None, proto="UDP")
    ev["netflow"] = {"pkts": 6, "bytes": 1149, "start": "2022-04-25T00:02:08.938341+0000"}
    (f,), _ = read(write(tmp_path, jline(ev), "eve.json"))
    assert (f.ts, f.transport, f.outcome) == (1650844928.938341, Transport.UDP, Outcome.UNKNOWN)


def test_eve_non_flow_events_are_skipped_and_counted_by_type(tmp_path):
    text = "".join(
        jline(
            {"timestamp": "2022-02-08T09:40:28.279682-0500", "event_type": t, "src_ip": "10.0.0.1"}
        )
        for t in ["alert", "dns", "dns", "stats"]
    )
    text += '{ "timestamp": "2018-03-02T16:20:26.274662+0100", "event_type": "quic" }\n'
    flows, stats = read(write(tmp_path, jline(eve_flow()) + text, "eve.json"))
    assert len(flows) == 1
    assert stats.skipped_by_reason == {
        "event_type=alert": 1,
        "event_type=dns": 2,
        "event_type=stats": 1,
        "event_type=quic": 1,
    }
    assert stats.bad_lines == 0


def test_eve_written_with_spaces_after_colons_is_parsed(tmp_path):
    text = json.dumps(eve_flow(), separators=(", ", ": ")) + "\n"
    (f,), _ = read(write(tmp_path, text, "eve.json"))
    assert f.dport == 587


@pytest.mark.parametrize(
    ("over", "outcome"),
    [
        (
            {"flow": {"pkts_toclient": 0, "state": "new"}, "tcp": {"tcp_flags_tc": "00"}},
            Outcome.NO_ANSWER,
        ),
        (
            {"flow": {"pkts_toclient": 1, "state": "closed"}, "tcp": {"tcp_flags_tc": "14"}},
            Outcome.REJECTED,
        ),
        ({"flow": {"state": "closed"}, "tcp": {"tcp_flags_tc": "12"}}, Outcome.ESTABLISHED),
        ({"flow": {"state": "established"}, "tcp": {"tcp_flags_tc": "18"}}, Outcome.ESTABLISHED),
        (  # SYN-ACK, then the client resets: aborted after the handshake (a SYN scan)
            {"flow": {"state": "closed"}, "tcp": {"tcp_flags_tc": "12", "tcp_flags_ts": "06"}},
            Outcome.ABORTED,
        ),
        (
            {"flow": {"pkts_toclient": 2, "state": "new"}, "tcp": {"tcp_flags_tc": "00"}},
            Outcome.UNKNOWN,
        ),
        ({"flow": {"state": "new"}, "tcp": None}, Outcome.UNKNOWN),
        ({"proto": "UDP", "flow": {"pkts_toclient": 0}, "tcp": None}, Outcome.NO_ANSWER),
        ({"proto": "UDP", "tcp": None}, Outcome.ESTABLISHED),
        ({"proto": "ICMP", "tcp": None}, Outcome.UNKNOWN),
    ],
)
def test_eve_flow_outcome(tmp_path, over, outcome):
    (f,), _ = read(write(tmp_path, jline(eve_flow(**over)), "eve.json"))
    assert f.outcome is outcome


@pytest.mark.parametrize(
    ("proto", "transport"),
    [("TCP", Transport.TCP), ("UDP", Transport.UDP), ("ICMP", Transport.ICMP),
     ("IPv6-ICMP", Transport.ICMP), ("SCTP", Transport.OTHER)],
)  # fmt: skip
def test_eve_proto_maps_to_transport(tmp_path, proto, transport):
    (f,), _ = read(write(tmp_path, jline(eve_flow(proto=proto, tcp=None)), "eve.json"))
    assert f.transport is transport


def test_eve_icmp_type_and_code_take_the_port_places(tmp_path):
    ev = eve_flow(proto="ICMP", src_port=None, dest_port=None, icmp_type=3, icmp_code=3, tcp=None)
    (f,), _ = read(write(tmp_path, jline(ev), "eve.json"))
    assert (f.sport, f.dport) == (3, 3)


def test_eve_fully_expanded_ipv6_is_normalised(tmp_path):
    ev = eve_flow(
        src_ip="fe80:0000:0000:0000:fada:0cff:fedc:87f1",
        dest_ip="ff02:0000:0000:0000:0000:0000:0001:0002",
    )
    (f,), _ = read(write(tmp_path, jline(ev), "eve.json"))
    assert (f.src, f.dst) == ("fe80::fada:cff:fedc:87f1", "ff02::1:2")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (jline({"ts": 1.0, "uid": "C1"}), "no event_type (not an eve event)"),
        (jline(eve_flow())[:100] + "\n", "invalid JSON"),
        (jline(eve_flow(flow=None)), "missing flow object"),
        (jline(eve_flow(flow={"start": None})), "missing flow.start"),
        (jline(eve_flow(flow={"start": "yesterday"})), "bad ts"),
        (jline(eve_flow(dest_ip="::g")), "bad ip"),
        (jline(eve_flow(src_ip=None)), "missing src_ip"),
        (jline(eve_flow(dest_port=-1)), "bad port"),
    ],
)
def test_eve_bad_line_is_counted_and_reading_continues(tmp_path, bad, reason):
    text = jline(eve_flow()) + bad + jline(eve_flow())
    flows, stats = read(write(tmp_path, text, "eve.json"))
    assert len(flows) == 2
    assert stats.samples == [(2, reason)]


# -- parsers used directly (as the follower does) -----------------------------------------
def test_parser_returns_none_for_headers_and_raises_for_bad_lines():
    parser = make_parser("zeek_tsv")
    assert parser.parse(b"#separator \\x09") is None
    assert parser.parse(header().splitlines()[-2].encode()) is None
    with pytest.raises(BadLine) as err:
        parser.parse(b"only\tthree\tcolumns")
    assert err.value.reason == "wrong column count"
    with pytest.raises(Skip) as skip:
        make_parser("suricata_eve").parse(b'{"event_type":"alert"}')
    assert skip.value.reason == "event_type=alert"


def test_address_cache_stays_bounded():
    cache = AddressCache(max_entries=10)
    for i in range(25):
        assert cache.normalise(f"10.0.0.{i}") == f"10.0.0.{i}"
    assert len(cache) <= 10


# -- committed bad fixtures ---------------------------------------------------------------
def test_fixture_mixed_bad_tsv_counts_each_reason():
    flows, stats = read(BAD / "mixed_bad.conn.log")
    assert len(flows) == 3
    assert stats.bad_by_reason == {
        "data before #fields header": 1,
        "wrong column count": 1,
        "bad port": 1,
        "bad ip": 1,
        "bad ts": 1,
        "invalid utf-8": 1,
        "nul byte": 1,
    }


def test_fixture_truncated_eve_counts_the_broken_lines():
    flows, stats = read(BAD / "truncated.eve.json")
    assert len(flows) == 2
    assert stats.bad_by_reason == {"invalid JSON": 2}
    assert stats.skipped_by_reason == {"event_type=alert": 1}


def test_fixture_binary_garbage_is_not_a_log():
    with pytest.raises(ReaderError, match="unrecognised log format"):
        read_flows(BAD / "garbage.bin")


@pytest.mark.parametrize(
    ("text", "epoch"),
    [
        ("2022-02-08T09:43:37.139810-0500", 1644331417.13981),
        ("2021-06-09T20:55:13.160328Z", 1623272113.160328),
        ("2019-01-02T03:50:11.315110", 1546401011.31511),
    ],
)
def test_iso_timestamps_parse_without_python_311_fromisoformat(text, epoch):
    from zeekndm.readers.base import _fromisoformat_py310, parse_iso_ts

    assert parse_iso_ts(text) == epoch
    if not text[-1].isdigit() or text[-5] in "+-":
        # The Python 3.10 fallback gives the same instant.
        assert _fromisoformat_py310(text).timestamp() == epoch


# -- destination-port filter --------------------------------------------------------------
def test_dport_filter_drops_unwatched_tsv_lines_before_parsing_and_counts_them(tmp_path):
    text = header() + row(id__resp_p="443") + row(id__resp_p="389") + row(id__resp_p="http")
    text += row(id__resp_p="27017", id__resp_h="bad-ip")
    flows, stats = read(write(tmp_path, text), dports={389, 27017})
    assert [f.dport for f in flows] == [389]
    # Unwatched lines are not validated (the "http" port is filtered, not bad); a watched
    # line is still fully checked.
    assert (stats.filtered, stats.bad_by_reason) == (2, {"bad ip": 1})


def test_dport_filter_on_eve_and_zeek_json(tmp_path):
    eve = compact(eve_flow(dest_port=443)) + compact(eve_flow(dest_port=587))
    eve += json.dumps(eve_flow(dest_port=443), separators=(", ", ": ")) + "\n"
    flows, stats = read(write(tmp_path, eve, "eve.json"), dports={587})
    # The spaced line cannot be filtered by the byte search, so it is parsed in full.
    assert [f.dport for f in flows] == [587, 443]
    assert stats.filtered == 1
    zj = compact(CONN_JSON) + compact(dict(CONN_JSON, **{"id.resp_p": 53}))
    flows, stats = read(write(tmp_path, zj), dports={389})
    assert [f.dport for f in flows] == [389] and stats.filtered == 1


def test_corrupt_gzip_raises_reader_error_naming_the_file(tmp_path):
    p = write(tmp_path, b"\x1f\x8b" + b"this is not deflate data" * 10, "conn.log.gz")
    with pytest.raises(ReaderError, match="gzip: .* at byte 0") as err:
        read_flows(p)
    assert str(p) in str(err.value)


def test_read_flows_with_unknown_format_name_lists_valid_ones(tmp_path):
    p = write(tmp_path, header() + row())
    with pytest.raises(ReaderError, match="valid: suricata_eve, zeek_json, zeek_notice, zeek_tsv"):
        read_flows(p, fmt="netflow_v9")
