"""Every real capture in ../shared/data/real parses, with pinned counts (see its SOURCES.md).

The record, bad-line and skip counts below were computed by the readers and checked
against SOURCES.md wherever it states a count (zat 360, rita 31,367 and 7,260, slips
horizontal 41, stratosphere 002 4,504 and 011 9,048, brimdata 92, eve-2 923 flow events,
slips test6 3,512, eve_udp_flow 16 flow + 16 netflow). Outcome counts follow the
conn_state tallies in SOURCES.md (e.g. zat: S0 156 + RSTOS0 2 = 158 no-answer; RSTO 63
aborted after the handshake). SHR is no-answer; RSTO/RSTR are aborted (issue 11).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from zeekndm.errors import ReaderError
from zeekndm.flow import Outcome, Transport
from zeekndm.readers import ReadStats, read_flows

NA, REJ, EST, UNK, ABT = "NO_ANSWER", "REJECTED", "ESTABLISHED", "UNKNOWN", "ABORTED"

# path: (format, records, bad_by_reason, skipped_by_reason, outcomes)
EXPECTED: dict[str, tuple[str, int, dict, dict, dict]] = {
    "zeek/zat/conn.log": ("zeek_tsv", 360, {}, {}, {ABT: 63, EST: 119, NA: 158, UNK: 20}),
    "zeek/zat/conn_date_issue.log": ("zeek_tsv", 3, {}, {}, {NA: 2, EST: 1}),
    "zeek/zat/json/conn.log": ("zeek_json", 50, {}, {}, {ABT: 15, UNK: 2, EST: 33}),
    "zeek/rita/proxy_rolling/conn.16_00_00-17_00_00.log.gz": (
        "zeek_tsv", 7260, {}, {}, {NA: 240, EST: 6127, ABT: 139, UNK: 754},
    ),
    "zeek/rita/json_with_all_fields/conn.log": ("zeek_json", 29, {}, {}, {EST: 28, ABT: 1}),
    "zeek/slips/port-scans/horizontal/conn.log": (
        "zeek_tsv", 41, {}, {}, {EST: 26, ABT: 4, NA: 11},
    ),
    "zeek/slips/port-scans/vertical/conn.log": ("zeek_json", 50, {}, {}, {REJ: 43, ABT: 3, EST: 4}),
    "zeek/slips/test9-mixed-zeek-dir/conn.log": (
        "zeek_json", 576, {}, {}, {NA: 39, EST: 374, UNK: 6, ABT: 157},
    ),
    "zeek/slips/test10-mixed-zeek-dir/conn.log": (
        "zeek_tsv", 141, {}, {}, {EST: 81, NA: 48, UNK: 12},
    ),
    "zeek/slips/test18-malicious-ctu-sme-11-win/zeek-labeled/conn.log.labeled": (
        "zeek_tsv", 766, {}, {}, {REJ: 718, NA: 34, UNK: 11, EST: 3},
    ),
    "zeek/stratosphere-sdt/002-zeek-scenario-port-scanning/conn.log": (
        "zeek_json", 4504, {}, {}, {NA: 2452, UNK: 684, ABT: 95, REJ: 1273},
    ),
    "zeek/stratosphere-sdt/011-zeek-mixed/data/conn.log.labeled": (
        "zeek_tsv", 9048, {}, {}, {NA: 4289, UNK: 531, REJ: 46, EST: 3836, ABT: 346},
    ),
    "zeek/brimdata-zed/conn.log": ("zeek_tsv", 92, {}, {}, {ABT: 24, REJ: 5, NA: 62, UNK: 1}),
    "zeek/elastic-beats/conn.log": ("zeek_json", 2, {}, {}, {EST: 1, NA: 1}),
    "zeek/elastic-beats/connection-json.log": ("zeek_json", 5, {}, {}, {EST: 3, UNK: 2}),
    # btest baselines mask every ts as XXXXXXXXXX.XXXXXX: each record is a "bad ts" line.
    "zeek/zeek-btest/core.cisco-fabric-path/conn.log": ("zeek_tsv", 0, {"bad ts": 64}, {}, {}),
    "zeek/zeek-btest/core.tunnels.teredo/conn.log": ("zeek_tsv", 0, {"bad ts": 21}, {}, {}),
    "zeek/zeek-btest/scripts.base.frameworks.logging.field-extension/conn.log": (
        "zeek_tsv", 0, {"bad ts": 34}, {}, {},
    ),
    "zeek/zeek-btest/scripts.base.frameworks.logging.field-name-map/conn.log": (
        "zeek_tsv", 0, {"bad ts": 34}, {}, {},
    ),
    "zeek/zeek-btest/scripts.base.frameworks.logging.scope_sep/conn.log": (
        "zeek_tsv", 0, {"bad ts": 34}, {}, {},
    ),
    "zeek/zeek-btest/scripts.base.protocols.ldap.basic/conn.log": (
        "zeek_tsv", 0, {"bad ts": 1}, {}, {},
    ),
    "zeek/zeek-btest/scripts.base.protocols.ldap.sasl-signed-clear/conn.log": (
        "zeek_tsv", 0, {"bad ts": 3}, {}, {},
    ),
    "suricata/slips/test6-malicious.suricata.json": (
        "suricata_eve", 3512, {},
        {"event_type=alert": 745, "event_type=dns": 680, "event_type=http": 56,
         "event_type=fileinfo": 3, "event_type=anomaly": 3, "event_type=tls": 1},
        {NA: 977, REJ: 1939, EST: 548, UNK: 15, ABT: 33},
    ),
    "suricata/suricatalog/eve-2.json": (
        "suricata_eve", 923, {},
        {"event_type=dns": 936, "event_type=tls": 224, "event_type=alert": 118,
         "event_type=anomaly": 106, "event_type=smtp": 84, "event_type=http": 5,
         "event_type=fileinfo": 4, "event_type=stats": 1},
        {EST: 514, UNK: 6, NA: 179, ABT: 192, REJ: 32},
    ),
    # 16 flow (no reply: no-answer) + 16 netflow (no state: unknown).
    "suricata/suricatalog/eve_udp_flow.json": ("suricata_eve", 32, {}, {}, {NA: 16, UNK: 16}),
    "suricata/elastic-beats/eve-small.log": (
        "suricata_eve", 1, {},
        {f"event_type={t}": 1 for t in ("ssh", "alert", "http", "fileinfo", "dns", "stats", "tls")},
        {NA: 1},
    ),
    "suricata/tenzir/eve.json": (
        "suricata_eve", 2, {},
        {f"event_type={t}": 1 for t in ("alert", "dns", "fileinfo", "http", "quic")},
        {NA: 1, UNK: 1},
    ),
}  # fmt: skip

RITA_DAY = "zeek/rita/missing_host_2024-04-19"
JSON_ARRAY = "suricata/frankhassanabad/honeypot-2018-alerts-only.json"
BTEST = "zeek/zeek-btest"


def read(path: Path):
    stats = ReadStats(str(path))
    return list(read_flows(path, stats)), stats


@pytest.mark.parametrize("relative", sorted(EXPECTED))
def test_real_capture_parses_with_pinned_counts(real, relative):
    fmt, records, bad, skipped, outcomes = EXPECTED[relative]
    flows, stats = read(real(relative))
    assert stats.format == fmt
    assert stats.records == len(flows) == records
    assert dict(stats.bad_by_reason) == bad
    assert stats.bad_lines == sum(bad.values())
    assert dict(stats.skipped_by_reason) == skipped
    assert dict(Counter(f.outcome.name for f in flows)) == outcomes


def test_every_real_capture_is_covered(real):
    root = real("zeek").parent
    on_disk = {
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".md"
    }
    rita = {p for p in on_disk if p.startswith(RITA_DAY + "/")}
    assert len(rita) == 24
    assert on_disk == set(EXPECTED) | rita | {JSON_ARRAY}


def test_rita_cluster_day_has_31367_records_in_24_gzip_files(real):
    files = sorted(real(RITA_DAY).glob("*.log.gz"))
    assert len(files) == 24
    outcomes: Counter[str] = Counter()
    sensors: set = set()
    records = 0
    for path in files:
        flows, stats = read(path)
        assert stats.bad_lines == 0 and stats.skipped_by_reason == {}
        records += stats.records
        outcomes.update(f.outcome.name for f in flows)
        sensors.update(f.sensor for f in flows)
    assert records == 31367
    # SOURCES.md: REJ 17,637, S0 593.
    assert outcomes == {REJ: 17637, EST: 11312, ABT: 678, UNK: 1123, NA: 617}
    assert sensors == {"worker-eth0-1"}  # the _node_name prefix column


def test_rita_local_flags_are_read(real):
    flows, _ = read(real(f"{RITA_DAY}/conn.00_00_00-01_00_00.log.gz"))
    to_server = [f for f in flows if f.dst == "64.225.56.201"]
    assert to_server and all(f.local_resp is True for f in to_server)


def test_old_bro_schema_without_local_resp_reads_it_as_unknown(real):
    flows, _ = read(real("zeek/zat/conn.log"))
    assert {(f.local_orig, f.local_resp) for f in flows} == {(None, None)}
    fanout = {f.dst for f in flows if f.src == "192.168.33.10" and f.dport == 16464}
    assert len(fanout) >= 202  # the ZeroAccess UDP/16464 fan-out SOURCES.md describes


def test_json_array_file_is_rejected_cleanly(real):
    path = real(JSON_ARRAY)
    with pytest.raises(ReaderError, match="a JSON array, not one eve event per line") as err:
        read_flows(path)
    assert str(path) in str(err.value)


def test_eve_flow_time_is_flow_start_not_event_timestamp(real):
    path = real("suricata/suricatalog/eve-2.json")
    from datetime import datetime

    starts = []
    with open(path, "rb") as f:
        for line in f:
            ev = json.loads(line)
            if ev["event_type"] == "flow":
                starts.append(datetime.fromisoformat(ev["flow"]["start"]).timestamp())
    flows, _ = read(path)
    assert [f.ts for f in flows] == starts
    # All 923 events share one top-level timestamp; 922 of them started later.
    written = datetime.fromisoformat("2022-02-08T09:40:28.279682-0500").timestamp()
    assert sum(f.ts > written for f in flows) == 922


def test_eve_fully_expanded_ipv6_is_normalised(real):
    (flow,), _ = read(real("suricata/elastic-beats/eve-small.log"))
    assert (flow.src, flow.dst) == ("fe80::fada:cff:fedc:87f1", "ff02::1:2")


def test_eve_host_is_the_sensor(real):
    flows, _ = read(real("suricata/slips/test6-malicious.suricata.json"))
    assert {f.sensor for f in flows} == {"stratosphere.org"}


def test_zeek_json_iso8601_ts(real):
    flows, _ = read(real("zeek/elastic-beats/connection-json.log"))
    assert flows[-1].ts == 1623272113.160328
    assert flows[-1].uid == "C2KP1V3alRLoxl4JB9"


def btest_unmasked(real, tmp_path: Path, name: str):
    """The btest baseline with its masked ts replaced by a number, so its rows parse."""
    text = real(f"{BTEST}/{name}/conn.log").read_text()
    path = tmp_path / "conn.log"
    path.write_text(text.replace("XXXXXXXXXX.XXXXXX", "1700000000.000001"))
    return read(path)


@pytest.mark.parametrize(
    ("name", "records"),
    [
        ("core.cisco-fabric-path", 64),
        ("core.tunnels.teredo", 21),
        ("scripts.base.frameworks.logging.field-extension", 34),
        ("scripts.base.frameworks.logging.field-name-map", 34),
        ("scripts.base.frameworks.logging.scope_sep", 34),
        ("scripts.base.protocols.ldap.basic", 1),
        ("scripts.base.protocols.ldap.sasl-signed-clear", 3),
    ],
)
def test_btest_rows_parse_once_ts_is_unmasked(real, tmp_path, name, records):
    flows, stats = btest_unmasked(real, tmp_path, name)
    assert stats.bad_lines == 0
    assert len(flows) == records


def test_btest_renamed_id_columns_give_the_same_flows(real, tmp_path):
    name_map, _ = btest_unmasked(real, tmp_path, "scripts.base.frameworks.logging.field-name-map")
    scope_sep, _ = btest_unmasked(real, tmp_path, "scripts.base.frameworks.logging.scope_sep")
    assert name_map == scope_sep
    assert name_map[0][1:5] == ("173.192.163.128", 80, "141.142.220.235", 6705)


def test_btest_unknown_transport_and_extension_sensor(real, tmp_path):
    fabric, _ = btest_unmasked(real, tmp_path, "core.cisco-fabric-path")
    assert Counter(f.transport for f in fabric)[Transport.OTHER] == 32
    extension, _ = btest_unmasked(real, tmp_path, "scripts.base.frameworks.logging.field-extension")
    assert {f.sensor for f in extension} == {"zeek"}  # the _system_name column
    ldap, _ = btest_unmasked(real, tmp_path, "scripts.base.protocols.ldap.basic")
    assert [(f.dport, f.local_orig, f.local_resp) for f in ldap] == [(3268, None, None)]
    sasl, _ = btest_unmasked(real, tmp_path, "scripts.base.protocols.ldap.sasl-signed-clear")
    assert [f.dport for f in sasl] == [389, 389, 389]
    # conn_state OTH (picked up midstream): whether the attempt was answered is unknown.
    assert {f.outcome for f in sasl} == {Outcome.UNKNOWN}


@pytest.mark.parametrize(
    "relative",
    [
        "suricata/slips/test6-malicious.suricata.json",
        "suricata/suricatalog/eve-2.json",
        "suricata/suricatalog/eve_udp_flow.json",
        "suricata/elastic-beats/eve-small.log",
        "suricata/tenzir/eve.json",
    ],
)
def test_eve_fast_path_agrees_with_the_checked_path(real, relative):
    """The subscript fast path and the field-by-field path give the same Flow."""
    import orjson

    from zeekndm.readers import make_parser

    parser = make_parser("suricata_eve")
    checked = make_parser("suricata_eve")
    compared = 0
    with open(real(relative), "rb") as f:
        for line in f:
            event = orjson.loads(line)
            if event.get("event_type") not in ("flow", "netflow"):
                continue
            parser.parse(line)  # first time: fills the address cache
            assert parser.parse(line) == checked._parse_event(event)
            compared += 1
    assert compared > 0
