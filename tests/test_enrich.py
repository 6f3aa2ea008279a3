from __future__ import annotations

from helpers import scan

from zeekndm.detect import Detector
from zeekndm.enrich import Observer, enrich
from zeekndm.flow import Outcome
from zeekndm.models import load_builtin_models


def alerts_for(flows, observer=None):
    det = Detector(load_builtin_models().values())
    detections = [d for f in flows for d in det.observe(f)] + det.finish()
    return [enrich(d, observer) for d in detections]


def test_alert_is_ecs_with_mitre_mapping():
    alert = alerts_for(scan("10.0.0.5", 27017, 30), Observer("sensor-1", "zeek"))[0]
    doc = alert.doc
    assert doc["event"]["kind"] == "alert"
    assert doc["event"]["category"] == ["network", "intrusion_detection"]
    assert doc["event"]["severity"] == 21 and doc["event"]["risk_score"] == 21.0
    assert doc["rule"]["name"] == "mongodb_scan_internal_external"
    assert doc["threat"]["framework"] == "MITRE ATT&CK"
    assert [t["id"] for t in doc["threat"]["technique"]] == ["T1046", "T1595"]
    assert [t["id"] for t in doc["threat"]["tactic"]] == ["TA0007", "TA0043"]
    assert doc["threat"]["tactic"][0]["reference"] == "https://attack.mitre.org/tactics/TA0007/"
    assert doc["source"]["ip"] == "10.0.0.5" and doc["destination"]["port"] == 27017
    assert doc["network"] == {"transport": "tcp", "direction": "outbound"}
    assert doc["observer"] == {
        "type": "ids",
        "vendor": "Zeek",
        "product": "zeek",
        "hostname": "sensor-1",
    }
    assert doc["related"]["ip"][0] == "10.0.0.5"
    assert doc["event"]["id"] == alert.id


UNK = Outcome.UNKNOWN  # no failure evidence: the window thresholds decide


def test_alert_carries_explanation_and_what_to_look_for():
    doc = alerts_for(scan("10.0.0.5", 389, 30, outcome=UNK))[0].doc
    assert "pivot outside the network" in doc["rule"]["description"]
    assert "internal_networks" in doc["zeekndm"]["what_to_look_for"]
    assert doc["zeekndm"]["window_seconds"] == 300.0 and doc["zeekndm"]["threshold"] == 25


def test_message_is_one_readable_sentence_with_evidence():
    doc = alerts_for(scan("10.0.0.5", 27017, 30, outcome=UNK))[0].doc
    assert doc["message"].startswith("10.0.0.5 attempted connections to 25 distinct external")
    assert "\n" not in doc["message"]


def test_end_alert_has_duration_and_totals():
    end = alerts_for(scan("10.0.0.5", 27017, 30))[-1].doc
    assert end["zeekndm"]["alert_state"] == "end"
    assert end["zeekndm"]["distinct_destinations"] == 30
    assert end["event"]["duration"] == 29 * 10**9
    assert end["event"]["end"] > end["event"]["start"]


def test_timestamps_are_record_time_in_utc_iso():
    doc = alerts_for(scan("10.0.0.5", 27017, 30, outcome=UNK))[0].doc
    assert doc["event"]["start"] == "2023-11-14T22:13:20.000000Z"
    assert doc["@timestamp"] == "2023-11-14T22:13:44.000000Z"


def test_every_alert_of_an_episode_has_a_distinct_deterministic_id():
    first = [a.id for a in alerts_for(scan("10.0.0.5", 27017, 120))]
    again = [a.id for a in alerts_for(scan("10.0.0.5", 27017, 120))]
    assert first == again and len(set(first)) == len(first) == 3


def test_subtechniques_sit_under_their_parent_technique_as_ecs_has_them():
    """ECS `threat.technique.subtechnique.*`: T1595.002 is filed under T1595 Active Scanning,
    never listed as a technique of its own, and a parent listed too appears once."""
    from zeekndm.enrich import _threat_fields
    from zeekndm.models import Tactic, Technique, ThreatEntry

    recon = Tactic("TA0043", "Reconnaissance", "https://attack.mitre.org/tactics/TA0043/")
    ref = "https://attack.mitre.org/techniques/"
    threat = (
        ThreatEntry(
            recon,
            (
                Technique("T1595.002", "Vulnerability Scanning", ref + "T1595/002/"),
                Technique("T1595", "Active Scanning", ref + "T1595/"),
                Technique("T1595.001", "Scanning IP Blocks", ref + "T1595/001/"),
            ),
        ),
    )
    techniques, tactics = _threat_fields(threat)
    assert [t["id"] for t in techniques] == ["T1595"]
    assert techniques[0]["name"] == "Active Scanning"
    assert techniques[0]["reference"] == ref + "T1595/"
    assert [s["id"] for s in techniques[0]["subtechnique"]] == ["T1595.002", "T1595.001"]
    assert tactics == [{"id": "TA0043", "name": "Reconnaissance", "reference": recon.reference}]


def test_a_shipped_model_with_a_subtechnique_alerts_with_it_under_the_parent():
    models = load_builtin_models()
    model = next(m for m in models.values() if any("." in t for t in m.technique_ids))
    sub = next(t for t in model.technique_ids if "." in t)
    from zeekndm.enrich import _threat_fields

    techniques, _ = _threat_fields(model.threat)
    assert sub not in [t["id"] for t in techniques]
    parent = next(t for t in techniques if t["id"] == sub.split(".")[0])
    assert sub in [s["id"] for s in parent["subtechnique"]]
