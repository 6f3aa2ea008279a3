"""Zeek notice.log (TSV and JSON) replayed into the same ECS alerts the detector makes."""

from __future__ import annotations

import json

import pytest
from conftest import REPO
from helpers import Run

from zeekndm import readers
from zeekndm.cli import ExitStatus
from zeekndm.notices import load_notice_mappings
from zeekndm.readers import ReadStats, read_flows, sniff_format, zeek_notice
from zeekndm.readers.zeek_notice import ZeekNoticeParser, parse_sub

DATA = REPO / "tests" / "data" / "notice"
EXAMPLES = REPO / "zeek_scripts" / "examples"
MONGO = "mongodb_scan_internal_external"
LDAP = "ldap_scanning_inside_to_outside"

EXPECTED = [
    (MONGO, "10.1.7.23", "low", "start"),
    (MONGO, "10.1.7.23", "medium", "escalated"),
    (LDAP, "10.3.4.5", "low", "start"),
    ("zeek_scan_address_scan", "10.9.8.7", "low", "start"),
    ("zeek_scan_port_scan", "203.0.113.9", "low", "start"),
]


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """The reader registry as it is, restored after each test (zeek_notice is one of the
    built-in formats of zeekndm.readers)."""
    monkeypatch.setattr(readers, "PARSERS", dict(readers.PARSERS))
    monkeypatch.setattr(readers, "_REGISTERED_SNIFFERS", list(readers._REGISTERED_SNIFFERS))
    assert readers.PARSERS["zeek_notice"] is zeek_notice.ZeekNoticeParser


def replay(*paths):
    run = Run(["replay", *paths])
    assert run.status == ExitStatus.OK, run.err
    return run


def summary(alerts):
    return [
        (
            a["rule"]["name"],
            a["source"]["ip"],
            a["zeekndm"]["severity_name"],
            a["zeekndm"]["alert_state"],
        )
        for a in alerts
    ]


def by_rule(alerts, name):
    return [a for a in alerts if a["rule"]["name"] == name]


def detections(path, **kw):
    stats = ReadStats(str(path))
    return list(read_flows(path, stats, **kw)), stats


def test_notice_log_tsv_and_json_are_sniffed_as_notices():
    tsv_head = b"#separator \\x09\n#set_separator\t,\n#path\tnotice\n#fields\tts\tnote"
    assert sniff_format(tsv_head) == "zeek_notice"
    assert sniff_format(b'{"ts":1700000000.0,"note":"Scan::Port_Scan","msg":"x"}') == "zeek_notice"


def test_conn_logs_are_not_taken_for_notices():
    assert sniff_format(b"#separator \\x09\n#path\tconn\n#fields\tts\tuid") == "zeek_tsv"
    conn = b'{"ts":1700000000.0,"uid":"C1","id.orig_h":"10.0.0.1","proto":"tcp"}'
    assert sniff_format(conn) == "zeek_json"


def test_replayed_tsv_notices_become_alerts_for_each_mapped_notice():
    run = replay(DATA / "notice.log")
    assert summary(run.alerts) == EXPECTED
    assert f"{DATA / 'notice.log'}: zeek_notice, 5 records, 0 bad lines, 1 skipped" in run.err


def test_tsv_and_json_notices_give_the_same_alert_ids():
    tsv = replay(DATA / "notice.log").alerts
    js = replay(DATA / "notice.json").alerts
    assert [a["event"]["id"] for a in tsv] == [a["event"]["id"] for a in js]
    assert len({a["event"]["id"] for a in tsv}) == len(EXPECTED)


def test_replaying_the_same_file_twice_gives_the_same_ids():
    first = [a["event"]["id"] for a in replay(DATA / "notice.log").alerts]
    second = [a["event"]["id"] for a in replay(DATA / "notice.log").alerts]
    assert first == second


def test_alerts_name_zeek_as_detector_and_observer():
    for alert in replay(DATA / "notice.json").alerts:
        assert alert["observer"]["vendor"] == "Zeek"
        assert alert["observer"]["product"] == "zeek"
        assert alert["event"]["provider"] == "zeek"
        assert alert["zeekndm"]["detector"] == "zeek"


def test_zeekndm_notices_carry_the_model_attack_mapping_and_texts():
    alerts = replay(DATA / "notice.log").alerts
    mongo = by_rule(alerts, MONGO)[0]
    assert [t["id"] for t in mongo["threat"]["technique"]] == ["T1046", "T1595"]
    assert [t["id"] for t in mongo["threat"]["tactic"]] == ["TA0007", "TA0043"]
    assert mongo["rule"]["id"] == "3fdf7a82-872b-42e5-82e8-c26acb0928ff"
    assert "MongoDB" in mongo["rule"]["description"]
    assert mongo["zeekndm"]["what_to_look_for"]


def test_zeekndm_notice_evidence_comes_through():
    mongo = by_rule(replay(DATA / "notice.log").alerts, MONGO)
    medium = mongo[1]["zeekndm"]
    assert (medium["distinct_destinations"], medium["threshold"]) == (100, 100)
    assert (medium["attempts"], medium["failures"], medium["successes"]) == (117, 109, 8)
    assert medium["sample_destinations"][:2] == ["45.0.0.1", "45.0.0.2"]
    assert mongo[1]["destination"]["port"] == 27017
    assert mongo[1]["@timestamp"] == "2023-11-14T22:17:42.870021Z"


def test_ldap_notice_lists_every_ldap_port_and_both_transports():
    ldap = by_rule(replay(DATA / "notice.log").alerts, LDAP)[0]
    assert ldap["zeekndm"]["ports"] == [389, 636, 3268, 3269]
    # ECS network.transport and destination.ip hold one value: the lists are under zeekndm
    assert ldap["zeekndm"]["transports"] == ["tcp", "udp"] and "transport" not in ldap["network"]
    assert "2001:db8::389" in ldap["related"]["ip"] and "destination" not in ldap


def test_evidence_is_read_from_sub_when_the_extra_columns_are_missing(tmp_path):
    stripped = tmp_path / "notice.json"
    with open(stripped, "w") as out:
        for line in (DATA / "notice.json").read_text().splitlines():
            record = {k: v for k, v in json.loads(line).items() if not k.startswith("zeekndm_")}
            out.write(json.dumps(record) + "\n")
    full, _ = detections(DATA / "notice.json")
    from_sub, stats = detections(stripped)
    assert stats.bad_lines == 0
    assert from_sub == full


def test_scan_address_scan_maps_to_t1046_and_scanning_ip_blocks():
    alert = by_rule(replay(DATA / "notice.log").alerts, "zeek_scan_address_scan")[0]
    techniques = alert["threat"]["technique"]
    assert [t["id"] for t in techniques] == ["T1046", "T1595"]  # the sub-technique's parent
    assert [s["id"] for s in techniques[1]["subtechnique"]] == ["T1595.001"]
    evidence = alert["zeekndm"]
    assert evidence["distinct_destinations"] == 27 and evidence["distinct_is_lower_bound"]
    assert alert["destination"]["port"] == 445


def test_scan_address_scan_source_and_port_are_read_from_the_message(tmp_path):
    log = tmp_path / "notice.json"
    msg = "10.4.4.4 scanned at least 26 unique hosts on port 3389/tcp in 2m5s"
    log.write_text(json.dumps({"ts": 1700000000.5, "note": "Scan::Address_Scan", "msg": msg}))
    [d], _ = detections(log)
    assert (d.source, d.ports, d.transports, d.distinct_destinations) == (
        "10.4.4.4",
        (3389,),
        ("tcp",),
        26,
    )


def test_scan_port_scan_names_the_victim_and_counts_ports_as_attempts():
    alert = by_rule(replay(DATA / "notice.log").alerts, "zeek_scan_port_scan")[0]
    assert alert["destination"]["ip"] == "10.1.1.5"  # one victim: ECS's single value
    assert alert["zeekndm"]["attempts"] == 17
    assert alert["zeekndm"]["distinct_destinations"] == 1


def test_bad_notice_lines_are_counted_and_good_ones_still_alert():
    run = replay(DATA / "bad_notice.log")
    assert [a["rule"]["name"] for a in run.alerts] == [MONGO, "zeek_scan_address_scan"]
    assert f"{DATA / 'bad_notice.log'}: zeek_notice, 2 records, 4 bad lines" in run.err
    _, stats = detections(DATA / "bad_notice.log")
    assert stats.bad_by_reason == {
        "wrong column count": 1,
        "bad ip": 1,
        "unparseable Scan::Address_Scan msg": 1,
        "bad ts": 1,
    }


def test_bad_json_notice_lines_are_counted():
    found, stats = detections(DATA / "bad_notice.json")
    assert len(found) == 2
    assert stats.bad_by_reason == {"invalid JSON": 1, "missing src": 1}


def test_unmapped_notice_types_are_skipped_not_bad():
    _, stats = detections(DATA / "notice.log")
    assert stats.skipped_by_reason == {"notice type not mapped": 1}
    assert stats.bad_lines == 0


def test_notice_of_an_unknown_zeekndm_model_is_skipped():
    parser = ZeekNoticeParser()
    record = {"ts": 1.0, "note": "ZeekNDM::Redis_Scan", "src": "10.0.0.1", "n": 40}
    with pytest.raises(zeek_notice.Skip, match="no model redis_scan"):
        parser.detection(record)


def test_count_below_the_lowest_threshold_still_gets_the_lowest_severity():
    parser = ZeekNoticeParser()
    record = {"ts": 1.0, "note": "ZeekNDM::MongoDB_Scan_Internal_External", "src": "10.0.0.1"}
    d = parser.detection({**record, "n": 10})
    assert (d.severity, d.threshold, d.state) == ("low", 25, "start")


def test_severity_follows_the_count_when_zeek_did_not_name_it():
    parser = ZeekNoticeParser()
    record = {"ts": 1.0, "note": "ZeekNDM::MongoDB_Scan_Internal_External", "src": "10.0.0.1"}
    d = parser.detection({**record, "n": 600})
    assert (d.severity, d.threshold, d.state) == ("high", 500, "escalated")


def test_other_zeek_logs_in_json_are_skipped():
    parser = ZeekNoticeParser()
    with pytest.raises(zeek_notice.Skip, match="path=conn"):
        parser.parse(b'{"_path":"conn","ts":1.0,"note":"x"}')


def test_configured_models_replace_the_builtin_ones():
    builtin = ZeekNoticeParser().models[MONGO]
    custom = ZeekNoticeParser(models={MONGO: builtin})
    assert set(custom.models) == {MONGO}
    # Zeek's own scan notices keep their (separate) mappings
    assert {m.name for m in custom.notices.values()} == set(load_notice_mappings())


def test_sub_words_are_parsed_as_key_value_pairs():
    assert parse_sub("model=m severity=low sample=1.2.3.4,5.6.7.8 free text") == {
        "model": "m",
        "severity": "low",
        "sample": "1.2.3.4,5.6.7.8",
    }


@pytest.mark.parametrize("name", ["notice.log", "notice.json"])
def test_package_examples_replay_into_alerts_for_both_models(name):
    alerts = replay(EXAMPLES / name).alerts
    assert summary(alerts) == EXPECTED[:3]


def test_low_then_medium_notice_of_one_scan_share_one_episode():
    alerts = by_rule(replay(DATA / "notice.log").alerts, "mongodb_scan_internal_external")
    assert [a["zeekndm"]["severity_name"] for a in alerts] == ["low", "medium"]
    assert len({a["zeekndm"]["episode_id"] for a in alerts}) == 1
    assert len({a["event"]["id"] for a in alerts}) == 2


def test_remote_port_scanner_is_inbound_and_keeps_zeeks_message():
    alert = by_rule(replay(DATA / "notice.log").alerts, "zeek_scan_port_scan")[0]
    assert alert["network"]["direction"] == "inbound"
    assert (
        alert["message"] == "203.0.113.9 scanned at least 17 unique ports of host 10.1.1.5 in 1m3s"
    )
    local = by_rule(replay(DATA / "notice.log").alerts, "zeek_scan_address_scan")[0]
    assert "direction" not in local["network"]  # a local sweeper may go in or out


def test_config_overrides_reach_notice_alerts(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "models:\n  mongodb_scan_internal_external:\n"
        "    what_to_look_for: Ask the DBA team first.\n"
    )
    run = Run(["replay", DATA / "notice.log", "--config", cfg])
    assert run.status == ExitStatus.OK, run.err
    mongo = by_rule(run.alerts, "mongodb_scan_internal_external")
    assert mongo and {a["zeekndm"]["what_to_look_for"] for a in mongo} == {
        "Ask the DBA team first."
    }
