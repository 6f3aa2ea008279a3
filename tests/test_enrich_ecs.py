"""The ECS top-level fields of an alert: event.kind per state, event.created, and the
single-valued destination.* / network.* fields (issue 10, points 3, 4 and 9)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from helpers import scan

from zeekndm.detect import Detector
from zeekndm.detection import Detection
from zeekndm.enrich import enrich
from zeekndm.models import load_builtin_models

MODELS = load_builtin_models()


def alerts_for(flows, created=None):
    det = Detector(MODELS.values())
    detections = [d for f in flows for d in det.observe(f)] + det.finish()
    return [enrich(d, None, created) for d in detections]


def detection(**kw) -> Detection:
    base = dict(
        model=MODELS["mongodb_scan_internal_external"], source="10.0.0.5", state="start",
        severity="low", threshold=25, first_seen=1_700_000_000.0, last_seen=1_700_000_060.0,
        distinct_destinations=30, attempts=30, failures=30, successes=0,
        sample_destinations=("45.0.0.1", "45.0.0.2"), ports=(27017,), transports=("tcp",),
    )  # fmt: skip
    return Detection(**{**base, **kw})


def test_only_starts_and_escalations_are_alerts_in_ecs_terms():
    kinds = {
        (a.doc["zeekndm"]["alert_state"], a.doc["event"]["kind"])
        for a in alerts_for(scan("10.0.0.5", 27017, 600, spacing=1.0))
    }
    assert kinds == {("start", "alert"), ("escalated", "alert"), ("ongoing", "event"),
                     ("end", "event")}  # fmt: skip


def test_event_created_is_when_zeekndm_raised_the_alert_and_does_not_change_the_id():
    one = alerts_for(scan("10.0.0.5", 27017, 30), created=1_800_000_000.0)
    two = alerts_for(scan("10.0.0.5", 27017, 30), created=1_800_000_999.0)
    assert one[0].doc["event"]["created"] == "2027-01-15T08:00:00.000000Z"
    assert one[0].doc["@timestamp"].startswith("2023-11-14")  # still the traffic's time
    assert [a.id for a in one] == [a.id for a in two]
    assert "created" not in alerts_for(scan("10.0.0.5", 27017, 30))[0].doc["event"]


def test_a_scan_of_many_hosts_has_no_single_destination_ip():
    doc = enrich(detection()).doc
    assert "ip" not in doc["destination"] and doc["destination"]["port"] == 27017
    assert doc["related"]["ip"] == ["10.0.0.5", "45.0.0.1", "45.0.0.2"]
    assert doc["zeekndm"]["sample_destinations"] == ["45.0.0.1", "45.0.0.2"]


def test_a_model_with_several_ports_and_transports_keeps_them_under_zeekndm():
    ldap = detection(model=MODELS["ldap_scanning_inside_to_outside"],
                     ports=(389, 636), transports=("tcp", "udp"))  # fmt: skip
    doc = enrich(ldap).doc
    assert "destination" not in doc and "transport" not in doc["network"]
    assert doc["zeekndm"]["ports"] == [389, 636]
    assert doc["zeekndm"]["transports"] == ["tcp", "udp"]


def test_a_scan_of_one_host_names_it_as_the_destination():
    vertical = detection(distinct_destinations=1, sample_destinations=("45.0.0.9",),
                         ports=(22, 23, 80, 443))  # fmt: skip
    doc = enrich(vertical).doc
    assert doc["destination"] == {"ip": "45.0.0.9"}  # one host, many ports: no single port
    assert doc["network"]["transport"] == "tcp"


def test_a_vertical_scan_names_its_target_as_the_destination():
    vertical = detection(counted="ports", target="45.0.0.7", distinct_destinations=40,
                         sample_destinations=(), ports=tuple(range(20, 60)))  # fmt: skip
    doc = enrich(vertical).doc
    assert doc["destination"] == {"ip": "45.0.0.7"} and doc["zeekndm"]["target"] == "45.0.0.7"


@pytest.mark.parametrize("direction", ["outbound", "inbound", "internal"])
def test_network_direction_comes_from_the_detection(direction):
    doc = enrich(detection(direction=direction)).doc
    assert doc["network"]["direction"] == direction


def test_no_direction_known_leaves_the_field_out():
    doc = enrich(replace(detection(), direction=None, transports=())).doc
    assert "network" not in doc
