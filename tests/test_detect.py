from __future__ import annotations

import json

import pytest
from helpers import T0, flow, public, scan

from zeekndm.detect import Detector, DetectorSettings
from zeekndm.detection import END, ESCALATED, ONGOING, START
from zeekndm.flow import Outcome, Transport
from zeekndm.models import Model, builtin_model_dicts, load_builtin_models, merge_model
from zeekndm.networks import NetworkClassifier

MONGO = "mongodb_scan_internal_external"
LDAP = "ldap_scanning_inside_to_outside"


def detector(**settings) -> Detector:
    return Detector(load_builtin_models().values(), settings=DetectorSettings(**settings))


def run(det: Detector, flows) -> list:
    out = []
    for f in flows:
        out.extend(det.observe(f))
    return out


def model_with(name: str, **override) -> Model:
    return Model.from_dict(merge_model(builtin_model_dicts()[name], override))


# Outcome UNKNOWN (midstream, netflow) says nothing about failure, so these scans are
# decided by the window thresholds alone; mostly failing ones meet the sequential path.
UNK = Outcome.UNKNOWN


def test_fires_when_internal_host_reaches_distinct_external_threshold():
    det = detector()
    detections = run(det, scan("10.0.0.5", 27017, 25, outcome=UNK))
    assert [(d.state, d.severity, d.model.name) for d in detections] == [(START, "low", MONGO)]
    d = detections[0]
    assert d.distinct_destinations == 25 and d.threshold == 25 and d.source == "10.0.0.5"
    assert d.attempts == 25 and d.failures == 0 and d.successes == 0
    assert d.first_seen == T0 and len(d.sample_destinations) == 10
    assert d.decided_by == "window"


def test_does_not_fire_one_below_threshold():
    assert run(detector(), scan("10.0.0.5", 27017, 24, outcome=UNK)) == []


def test_retries_of_one_destination_count_once():
    flows = [flow("10.0.0.5", public(i % 20 + 1), 27017, T0 + i, outcome=UNK) for i in range(200)]
    assert run(detector(), flows) == []


def test_escalates_immediately_when_higher_severity_reached():
    detections = run(detector(), scan("10.0.0.5", 27017, 100, spacing=0.5))
    assert [(d.state, d.severity) for d in detections] == [(START, "low"), (ESCALATED, "medium")]
    assert detections[1].distinct_destinations == 100


def test_ongoing_updates_at_most_once_per_update_interval():
    # 60 destinations at 1/s then the same ones again: 300 s update interval
    flows = scan("10.0.0.5", 27017, 60, spacing=10.0)  # 600 s of scanning
    detections = run(detector(), flows)
    states = [d.state for d in detections]
    assert states[0] == START
    ongoing = [d for d in detections if d.state == ONGOING]
    assert 1 <= len(ongoing) <= 2
    gaps = [b.last_seen - a.last_seen for a, b in zip(detections, detections[1:])]
    assert all(g >= 300 for g in gaps)
    assert ongoing[-1].attempts > detections[0].attempts  # cumulative evidence


def test_end_record_after_source_quiet_for_window_carries_totals():
    det = detector(allowed_lateness=60)
    run(det, scan("10.0.0.5", 27017, 30))
    later = run(det, [flow("10.0.0.99", "10.0.0.1", 443, T0 + 1000)])
    ends = [d for d in later if d.state == END]
    assert len(ends) == 1
    assert ends[0].distinct_destinations == 30 and ends[0].attempts == 30
    assert ends[0].end_reason == "quiet"
    assert det.tracked_sources == 0


def test_finish_ends_open_episodes():
    det = detector()
    run(det, scan("10.0.0.5", 27017, 30))
    ends = det.finish()
    assert [(d.state, d.end_reason, d.distinct_destinations) for d in ends] == [
        (END, "input_end", 30)
    ]


def test_internal_destinations_do_not_count_for_outbound_models():
    flows = [flow("10.0.0.5", f"10.1.{i // 250}.{i % 250 + 1}", 389, T0 + i) for i in range(300)]
    internal = model_with("ldap_scanning_internal", enabled=True)
    detections = run(Detector([*load_builtin_models().values(), internal]), flows)
    assert [d for d in detections if d.model.direction == "outbound"] == []
    assert {d.model.name for d in detections} == {"ldap_scanning_internal"}


def test_inbound_scan_of_our_hosts_does_not_fire_outbound_model():
    flows = [flow(public(i + 1), "10.0.0.5", 27017, T0 + i) for i in range(300)]
    flows += [flow(public(i + 1), f"10.0.1.{i + 1}", 389, T0 + i) for i in range(200)]
    assert run(detector(), flows) == []


def test_legitimate_client_to_three_external_mongodb_hosts_does_not_fire():
    flows = [
        flow("10.0.0.7", public(i % 3 + 1), 27017, T0 + i, outcome=Outcome.ESTABLISHED)
        for i in range(5000)
    ]
    assert run(detector(), flows) == []


def test_slow_probe_below_threshold_per_window_does_not_fire():
    # one new destination every 20 s: at most 15 in any 300 s window, 200 in total
    assert run(detector(), scan("10.0.0.5", 27017, 200, spacing=20.0, outcome=UNK)) == []


def test_ldap_scan_over_389_636_and_udp_counts_together():
    flows = (
        scan("10.0.0.5", 389, 10, outcome=UNK)
        + [flow("10.0.0.5", public(100 + i), 636, T0 + 20 + i, outcome=UNK) for i in range(10)]
        + [
            flow(
                "10.0.0.5", public(200 + i), 389, T0 + 40 + i, transport=Transport.UDP, outcome=UNK
            )
            for i in range(10)
        ]
    )
    detections = run(detector(), flows)
    assert [(d.model.name, d.state) for d in detections] == [(LDAP, START)]
    assert detections[0].transports == ("tcp", "udp")
    assert detections[0].ports == (389, 636)


def test_udp_only_ldap_scan_fires():
    flows = scan("10.0.0.5", 389, 30, transport=Transport.UDP)
    assert [d.model.name for d in run(detector(), flows)] == [LDAP]


def test_udp_mongodb_is_not_the_mongodb_model():
    assert run(detector(), scan("10.0.0.5", 27017, 30, transport=Transport.UDP)) == []


def test_icmp_never_matches_port_models():
    flows = [
        flow("10.0.0.5", public(i + 1), 389, T0 + i, transport=Transport.ICMP) for i in range(100)
    ]
    assert run(detector(), flows) == []


def test_ipv6_scan_from_ula_host_fires():
    flows = [flow("fd00::5", f"2a00:1450:4001::{i + 1:x}", 27017, T0 + i) for i in range(30)]
    detections = run(detector(), flows)
    assert [(d.source, d.state) for d in detections] == [("fd00::5", START)]


def test_special_destinations_never_count_as_external():
    flows = [
        flow("10.0.0.5", f"224.0.{i // 200}.{i % 200 + 1}", 389, T0 + i, transport=Transport.UDP)
        for i in range(50)
    ]
    flows += [flow("10.0.0.5", f"169.254.1.{i + 1}", 389, T0 + i) for i in range(50)]
    flows += [flow("10.0.0.5", f"0.0.0.{i + 1}", 389, T0 + i) for i in range(50)]
    assert run(detector(), flows) == []


def test_allowlisted_scanner_does_not_fire():
    model = model_with(MONGO, discards={"sources": ["10.0.0.0/28"]})
    det = Detector([model])
    assert run(det, scan("10.0.0.5", 27017, 200)) == []
    assert det.stats.discarded == 200
    assert len(run(det, scan("10.0.0.50", 27017, 30))) == 1  # outside the allowlist


def test_allowlisted_destinations_are_not_counted():
    model = model_with(MONGO, discards={"destinations": ["45.0.0.0/16"]})
    assert run(Detector([model]), scan("10.0.0.5", 27017, 100)) == []


def test_local_orig_local_resp_trusted_for_public_internal_space():
    flows = scan("147.32.83.165", 27017, 30, local_orig=True, local_resp=False)
    assert len(run(detector(), flows)) == 1


def test_local_fields_ignored_when_config_says_not_to():
    flows = scan("147.32.83.165", 27017, 30, local_orig=True, local_resp=False)
    assert run(detector(trust_local_fields=False), flows) == []


def test_public_internal_networks_configurable():
    det = Detector(load_builtin_models().values(), NetworkClassifier(["147.32.0.0/16"]))
    assert len(run(det, scan("147.32.83.165", 27017, 30))) == 1
    assert run(det, scan("10.0.0.5", 27017, 30)) == []  # not internal any more


def test_min_failure_ratio_suppresses_successful_fanout():
    model = model_with(MONGO, threshold={"min_failure_ratio": 0.5})
    flows = scan("10.0.0.5", 27017, 50, outcome=Outcome.ESTABLISHED)
    assert run(Detector([model]), flows) == []
    assert len(run(Detector([model]), scan("10.0.0.6", 27017, 50))) == 1


def test_out_of_order_records_within_lateness_are_counted():
    flows = scan("10.0.0.5", 27017, 30, outcome=UNK)
    flows = flows[10:] + flows[:10]  # the first ones arrive late
    flows.insert(0, flow("10.9.9.9", "10.0.0.1", 443, T0 + 400))
    detections = run(detector(), flows)
    assert [d.state for d in detections] == [START]
    assert detections[0].first_seen == T0


def test_scan_arriving_newest_first_alerts_as_in_time_order():
    # Suricata writes a flow when it times out, so a scan can arrive in any order.
    flows = scan("10.0.0.5", 27017, 30)
    in_order = run(detector(), flows)
    reverse = run(detector(), list(reversed(flows)))
    assert [(d.state, d.severity) for d in reverse] == [(START, "low")]
    det = detector()
    run(det, list(reversed(flows)))
    (end,) = det.finish()
    assert end.distinct_destinations == 30 and end.first_seen == T0
    assert in_order[0].severity == reverse[0].severity


def test_late_records_spread_wider_than_the_window_do_not_add_up():
    # 40 destinations, one every 25 s (12 per 5 minutes), delivered shuffled.
    import random

    flows = scan("10.0.0.5", 27017, 40, spacing=25.0, outcome=UNK)
    random.Random(7).shuffle(flows)
    assert run(detector(), flows) == []


def test_late_records_that_fill_a_past_window_alert_once():
    # 20 destinations now, then 10 more that happened 10 minutes earlier (late), then
    # 20 more that belong with those 10 in one past 5-minute window.
    det = detector()
    now = scan("10.0.0.5", 27017, 20, start=T0 + 900, outcome=UNK)
    past = [flow("10.0.0.5", public(100 + i), 27017, T0 + i, outcome=UNK) for i in range(30)]
    detections = run(det, now + past)
    assert [(d.state, d.distinct_destinations) for d in detections] == [(START, 25)]
    assert detections[0].first_seen == T0


def test_records_later_than_allowed_lateness_are_counted_not_silent():
    det = detector(allowed_lateness=60)
    run(det, [flow("10.9.9.9", "10.0.0.1", 27017, T0 + 10_000)])
    assert run(det, scan("10.0.0.5", 27017, 30)) == []
    assert det.stats.late_records == 30


def test_tracked_sources_are_capped_under_many_distinct_sources():
    det = Detector(
        [load_builtin_models()[MONGO]], settings=DetectorSettings(max_tracked_sources=1000)
    )
    for i in range(50_000):
        det.observe(flow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", public(1), 27017, T0))
    assert det.tracked_sources == 1000
    assert det.stats.evicted_sources == 49_000


def test_destinations_per_source_are_capped_and_count_is_a_lower_bound():
    det = detector(max_destinations_per_source=600)
    detections = run(det, scan("10.0.0.5", 27017, 5000, spacing=0.01))
    assert [d.severity for d in detections] == ["low", "medium", "high"]
    assert max(len(t.items) for t in det._tracks.values()) <= 600
    ends = det.finish()
    assert ends[0].distinct_is_lower_bound


def test_destination_cap_never_hides_the_highest_severity():
    det = detector(max_destinations_per_source=50)
    detections = run(det, scan("10.0.0.5", 27017, 600, spacing=0.01))
    assert detections[-1].severity == "high"


def test_snapshot_restore_mid_scan_alerts_exactly_once():
    flows = scan("10.0.0.5", 27017, 40, outcome=UNK)
    det = detector()
    first = run(det, flows[:20])
    state = json.loads(json.dumps(det.snapshot()))
    det2 = detector()
    det2.restore(state)
    second = run(det2, flows[20:])
    assert first == [] and [d.state for d in second] == [START]
    assert second[0].alert_id == run(detector(), flows)[0].alert_id


def test_same_input_gives_same_alert_ids():
    flows = scan("10.0.0.5", 27017, 120)
    ids = [d.alert_id for d in run(detector(), flows) + []]
    assert ids == [d.alert_id for d in run(detector(), flows)]
    assert len(set(ids)) == len(ids)


def test_reload_keeps_window_state():
    det = detector()
    run(det, scan("10.0.0.5", 27017, 20, outcome=UNK))
    det.set_models(load_builtin_models().values())
    assert [d.state for d in run(det, scan("10.0.0.5", 27017, 30, outcome=UNK)[20:])] == [START]


def test_disabled_model_does_not_fire():
    model = model_with(MONGO, enabled=False)
    assert run(Detector([model]), scan("10.0.0.5", 27017, 100)) == []


@pytest.mark.parametrize("port", [3268, 3269, 636])
def test_ldap_secondary_ports_fire(port):
    assert [d.model.name for d in run(detector(), scan("10.0.0.5", port, 25))] == [LDAP]
