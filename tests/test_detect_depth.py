"""Detection depth (issue 11): model shapes, the sequential and slow paths, counting that
cannot be gamed, benign look-alikes, internal-network parity, the alert economy and the
evidence an analyst gets. Inputs are generated here; real captures are in
test_integration_real.py.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import re
import time
import uuid

import pytest
from helpers import T0, Run, flow, public, scan

from zeekndm.config import load_config
from zeekndm.detect import Detector, DetectorSettings
from zeekndm.detection import END, ESCALATED, ONGOING, START
from zeekndm.enrich import enrich
from zeekndm.errors import ConfigError, ModelError
from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.models import Model, builtin_model_dicts, load_builtin_models, merge_model
from zeekndm.networks import NetworkClassifier

MODELS = load_builtin_models()
MONGO = "mongodb_scan_internal_external"
NA, REJ, EST, UNK = Outcome.NO_ANSWER, Outcome.REJECTED, Outcome.ESTABLISHED, Outcome.UNKNOWN


def default_detector(**settings) -> Detector:
    return Detector(MODELS.values(), settings=DetectorSettings(**settings))


def only(*names, classifier=None, **settings) -> Detector:
    models = [
        m
        if m.enabled
        else Model.from_dict(merge_model(builtin_model_dicts()[n], {"enabled": True}))
        for n in names
        for m in [MODELS[n]]
    ]
    return Detector(models, classifier, DetectorSettings(**settings))


def run(det: Detector, flows) -> list:
    out = []
    for f in flows:
        out.extend(det.observe(f))
    return out


def model_with(name: str, **override) -> Model:
    return Model.from_dict(merge_model(builtin_model_dicts()[name], override))


def custom(**fields) -> Model:
    base = {
        "id": str(uuid.uuid4()),
        "name": "custom_model",
        "threshold": {"levels": {"low": 20, "medium": 50}, "window": 300},
        "description": "test model",
        "what_to_look_for": "test",
        "threat": [
            {"tactic": {"id": "TA0007"}, "techniques": [{"id": "T1046"}]},
        ],
    }
    base.update(fields)
    return Model.from_dict(base)


# -- models as data ------------------------------------------------------------------
def test_match_direction_track_by_and_count_are_validated_with_their_key():
    with pytest.raises(ModelError, match=r"match.*outcomes.*'sometimes'"):
        custom(match={"ports": ["22/tcp"], "outcomes": "sometimes"})
    with pytest.raises(ModelError, match="must be one of outbound, inbound, internal, any"):
        custom(match={"ports": ["22/tcp"]}, direction="sideways")
    with pytest.raises(ModelError, match="track_by destination counts sources, not ports"):
        custom(match={"ports": ["22/tcp"]}, track_by="destination", count="ports")
    with pytest.raises(ModelError, match="icmp_types.*0-255"):
        custom(match={"icmp_types": [300]})
    with pytest.raises(ModelError, match="source_ports.*0-65535"):
        custom(match={"ports": ["22/tcp"]}, discards={"source_ports": [-1]})
    with pytest.raises(ModelError, match="list the ports"):
        custom(match={"outcomes": "failed"})


def test_models_json_shows_every_field_of_the_model_shape():
    data = {m["name"]: m for m in json.loads(Run(["models", "--json"]).out)}
    vertical = data["portscan_internal_external"]
    assert vertical["track_by"] == "source_destination" and vertical["count"] == "ports"
    assert vertical["match"]["ports"] == ["1-65535/tcp"] and not vertical["enabled"]
    ping = data["ping_scan_ext-int"]
    assert ping["match"]["icmp_types"] == [8, 13, 17, 128] and ping["direction"] == "inbound"
    syn = data["synscan_internal_external"]
    assert syn["match"]["outcomes"] == ["failed", "aborted"]
    mongo = data[MONGO]
    assert mongo["thresholds"] == {"low": 25, "medium": 100, "high": 500}
    assert mongo["early"] == {"enabled": True, "distinct": 10, "failure_ratio": 0.8}
    assert mongo["idle_timeout"] == 900 and mongo["update_interval"] == 300
    assert set(mongo["discards"]) == {"sources", "destinations", "source_ports"}
    assert mongo["description"] and mongo["what_to_look_for"] and mongo["false_positives"]
    assert mongo["threat"][0] == {"tactic": "TA0007", "techniques": ["T1046"]}


def test_every_shipped_model_can_be_enabled_and_disabled_in_config(tmp_path):
    lines = ["models:"]
    for name, model in MODELS.items():
        lines.append(f"  {name}:\n    enabled: {'false' if model.enabled else 'true'}")
    path = tmp_path / "z.yaml"
    path.write_text("\n".join(lines) + "\n")
    config = load_config(path)
    assert all(config.models[n].enabled != m.enabled for n, m in MODELS.items())


def test_models_option_runs_only_the_named_models_or_all(tmp_path):
    log = tmp_path / "conn.log"
    from zeekndm.synth import Traffic, write_zeek_tsv

    t = Traffic(seed=3)
    t.scan("10.0.0.5", 27017, targets=30, start_offset=0, duration=30)
    t.scan("10.0.0.6", 23, targets=30, start_offset=0, duration=30)
    with open(log, "w") as fh:
        write_zeek_tsv(t.in_write_order(), fh)
    names = {a["rule"]["name"] for a in Run(["replay", log, "--models", MONGO]).alerts}
    assert names == {MONGO}
    every = Run(["replay", log, "--models", "all"])
    assert "models: 44 enabled" in every.err
    bad = Run(["replay", log, "--models", "mongodb_scan_internal_extrenal"])
    assert bad.status == 2 and "did you mean 'mongodb_scan_internal_external'" in bad.err


def test_old_spellings_of_ports_and_thresholds_still_override_a_shipped_model(tmp_path):
    path = tmp_path / "z.yaml"
    path.write_text(
        f"models:\n  {MONGO}:\n    ports: [27017/tcp, 27018/tcp]\n"
        "    threshold:\n      distinct_destinations: {low: 30}\n"
    )
    model = load_config(path).models[MONGO]
    assert [str(p) for p in model.ports] == ["27017/tcp", "27018/tcp"]
    assert model.threshold.levels == (("low", 30), ("medium", 100), ("high", 500))


# -- the sequential (early) path -----------------------------------------------------
def test_mostly_failing_first_contacts_raise_low_after_ten_whatever_the_rate():
    detections = run(only(MONGO), scan("10.0.0.5", 27017, 10, spacing=20.0))
    assert [(d.state, d.severity, d.decided_by) for d in detections] == [
        (START, "low", "sequential")
    ]
    assert detections[0].distinct_destinations == 10 and detections[0].threshold == 10


def test_nine_failing_first_contacts_stay_below_the_floor():
    assert run(only(MONGO), scan("10.0.0.5", 27017, 9)) == []


def test_interleaved_successes_do_not_reset_the_evidence():
    # every fifth first contact answers: 80 % fail, as a scan of a few live hosts does
    outcomes = [EST if i % 5 == 4 else NA for i in range(12)]
    flows = [
        flow("10.0.0.5", public(i + 1), 27017, T0 + i, outcome=o) for i, o in enumerate(outcomes)
    ]
    detections = run(only(MONGO), flows)
    assert [d.state for d in detections] == [START]
    assert detections[0].decided_by == "sequential" and detections[0].successes >= 1


def test_a_client_that_fails_half_the_time_is_not_decided_early():
    flows = [
        flow("10.0.0.5", public(i + 1), 27017, T0 + i * 10, outcome=NA if i % 2 else EST)
        for i in range(24)
    ]
    assert run(only(MONGO), flows) == []


# -- the slow path (idle expiry) -----------------------------------------------------
@pytest.mark.parametrize(
    ("spacing", "within"),
    [(15.0, 300.0), (60.0, 900.0), (300.0, 7200.0)],
    ids=["one-per-15s-within-5min", "one-per-minute-within-15min", "one-per-5min-within-2h"],
)
def test_slow_sweeps_alert_in_event_time(spacing, within):
    flows = scan("10.0.0.5", 27017, int(within // spacing) + 5, spacing=spacing)
    detections = run(only(MONGO), flows)
    assert detections and detections[0].state == START
    assert detections[0].last_seen - T0 <= within


def test_state_of_a_quiet_source_expires_after_the_idle_timeout():
    det = only(MONGO, allowed_lateness=0)
    run(det, scan("10.0.0.5", 27017, 5, spacing=60.0))
    run(det, [flow("10.9.9.9", "10.0.0.1", 443, T0 + 240 + 901)])
    assert det.tracked_sources == 0
    # 5 + 5 first contacts separated by more than 15 minutes never add up to 10
    later = scan("10.0.0.5", 27017, 5, start=T0 + 2000, spacing=60.0)
    assert run(det, later) == []


# -- counting that cannot be gamed ---------------------------------------------------
def test_a_scan_spread_over_a_models_ports_is_one_scan():
    flows = [
        flow("10.0.0.5", public(i + 1), (389, 636, 3268, 3269)[i % 4], T0 + i, outcome=UNK)
        for i in range(25)
    ]
    detections = run(only("ldap_scanning_inside_to_outside"), flows)
    assert [(d.state, d.distinct_destinations) for d in detections] == [(START, 25)]
    assert detections[0].ports == (389, 636, 3268, 3269)


def test_ipv6_counts_like_ipv4_and_expanded_forms_are_one_destination():
    v4 = run(only(MONGO), scan("10.0.0.5", 27017, 30, outcome=UNK))
    v6_flows = [
        flow("fd00::5", f"2a00:1450:4001::{i + 1:x}", 27017, T0 + i, outcome=UNK) for i in range(30)
    ]
    v6 = run(only(MONGO), v6_flows)
    assert [(d.state, d.distinct_destinations) for d in v4] == [
        (d.state, d.distinct_destinations) for d in v6
    ]


def test_a_success_on_a_scanned_port_raises_severity_one_step():
    flows = scan("10.0.0.5", 27017, 30, outcome=UNK)
    flows[27] = flows[27]._replace(outcome=EST)
    detections = run(only(MONGO), flows)
    assert [(d.state, d.severity) for d in detections] == [(START, "low"), (ESCALATED, "medium")]
    assert detections[1].answered == (flows[27].dst,)


def test_outcome_filter_counts_only_failed_attempts():
    model = custom(match={"ports": ["1-65535/tcp"], "outcomes": "failed"})
    det = Detector([model])
    ok = [flow("10.0.0.5", public(i + 1), 8000 + i, T0 + i, outcome=EST) for i in range(30)]
    assert run(det, ok) == []
    assert det.stats.funnel["custom_model"].other_outcome == 30


def test_excluded_source_ports_never_count_replies():
    model = custom(match={"ports": ["1024-65535/udp"]}, discards={"source_ports": [53]})
    flows = [
        flow("10.0.0.5", public(i + 1), 40000 + i, T0 + i, transport=Transport.UDP, sport=53)
        for i in range(40)
    ]
    det = Detector([model])
    assert run(det, flows) == [] and det.stats.funnel["custom_model"].discarded == 40


# -- other model shapes ----------------------------------------------------------------
def test_vertical_port_scan_counts_ports_of_one_host():
    flows = [
        flow("10.0.0.5", "45.33.32.156", 1000 + i, T0 + i * 0.1, outcome=REJ) for i in range(44)
    ]
    det = only("portscan_internal_external")
    detections = run(det, flows)
    assert detections[0].counted == "ports" and detections[0].target == "45.33.32.156"
    assert [d.state for d in detections] == [START]
    (end,) = det.finish()
    assert end.distinct_destinations == 44 and end.source == "10.0.0.5"
    doc = enrich(detections[0]).doc
    assert "distinct ports of 45.33.32.156" in doc["message"]
    assert doc["zeekndm"]["unanswered"][0] == "1000/tcp"


def test_exposure_model_counts_sources_reaching_one_server():
    model = custom(
        match={"ports": ["3389/tcp"]}, direction="inbound", track_by="destination", count="sources"
    )
    flows = [flow(public(i + 1), "10.0.0.9", 3389, T0 + i) for i in range(25)]
    detections = run(Detector([model]), flows)
    assert [(d.state, d.target, d.source) for d in detections] == [(START, "10.0.0.9", "")]
    doc = enrich(detections[0]).doc
    assert "source" not in doc and "distinct sources reaching 10.0.0.9" in doc["message"]


def test_udp_fanout_is_counted_per_destination_port():
    det = only("udp_fanout_internal_external")
    one_port = [
        flow("10.0.0.5", public(i + 1), 16464, T0 + i, transport=Transport.UDP) for i in range(60)
    ]
    assert [d.state for d in run(det, one_port)] == [START]
    rng = random.Random(5)
    p2p = [
        flow("10.0.0.6", public(i + 1), rng.randint(1024, 65535), T0 + i, transport=Transport.UDP)
        for i in range(3000)
    ]
    assert run(only("udp_fanout_internal_external"), p2p) == []


def test_ping_sweep_counts_icmp_echo_requests_by_type():
    flows = [
        flow(
            public(7),
            f"10.0.{i // 200}.{i % 200 + 1}",
            0,
            T0 + i,
            transport=Transport.ICMP,
            sport=8,
        )
        for i in range(30)
    ]
    replies = [
        flow(public(7), f"10.1.0.{i + 1}", 0, T0 + i, transport=Transport.ICMP, sport=0)
        for i in range(30)
    ]
    assert run(only("ping_scan_ext-int"), replies) == []
    detections = run(only("ping_scan_ext-int"), flows)
    assert [(d.state, d.model.name) for d in detections] == [(START, "ping_scan_ext-int")]
    assert "T1018" in detections[0].model.technique_ids


def test_inbound_model_escalates_when_an_internal_service_answers():
    flows = [flow(public(9), f"10.0.0.{i + 1}", 3389, T0 + i, outcome=UNK) for i in range(30)]
    flows[28] = flows[28]._replace(outcome=Outcome.ABORTED)
    detections = run(only("rdp_scanning_outside_to_inside"), flows)
    assert [(d.state, d.severity) for d in detections] == [(START, "low"), (ESCALATED, "medium")]


# -- benign look-alikes: zero alerts with the default models --------------------------
def test_client_retrying_a_small_dead_cluster_all_day_stays_quiet():
    flows = [flow("10.0.0.7", public(i % 5 + 1), 27017, T0 + i * 30.0) for i in range(24 * 120)]
    assert run(default_detector(), flows) == []


def test_client_of_a_cloud_database_whose_addresses_rotate_stays_quiet():
    # a new address every 5 minutes (short DNS TTL) for a day, every connection answered
    flows = [
        flow("10.0.0.7", public(1000 + i // 10), 5432, T0 + i * 30.0, outcome=EST)
        for i in range(24 * 120)
    ]
    assert run(default_detector(), flows) == []


def test_busy_client_of_a_three_host_cluster_stays_quiet():
    flows = [
        flow(
            "10.0.0.7", f"10.2.0.{i % 3 + 1}", (3306, 27017, 445)[i % 3], T0 + i * 0.2, outcome=EST
        )
        for i in range(20_000)
    ]
    assert run(default_detector(), flows) == []


def test_p2p_client_contacting_thousands_of_peers_on_random_ports_stays_quiet():
    rng = random.Random(11)
    flows = []
    for i in range(5000):
        port = rng.randint(1024, 65535)
        transport = Transport.UDP if rng.random() < 0.6 else Transport.TCP
        outcome = NA if rng.random() < 0.7 else EST
        flows.append(
            flow(
                "10.0.0.8", public(i + 1), port, T0 + i * 0.5, transport=transport, outcome=outcome
            )
        )
    assert run(default_detector(), flows) == []


def test_monitor_polling_a_dozen_external_endpoints_stays_quiet():
    # SMTP and SSH checks every minute for a day; two endpoints are down all day
    flows = [
        flow(
            "10.0.0.9",
            public(200 + j),
            (25, 587, 22)[j % 3],
            T0 + m * 60.0 + j,
            outcome=NA if j in (3, 7) else EST,
        )
        for m in range(24 * 60)
        for j in range(12)
    ]
    assert run(default_detector(), flows) == []


def test_health_checker_of_an_internal_pool_stays_quiet():
    # a load balancer checks 8 backends every 5 s on 445 and 3389; two are down
    flows = [
        flow(
            "10.0.5.1",
            f"10.0.6.{j + 1}",
            (445, 3389)[j % 2],
            T0 + k * 5.0,
            outcome=REJ if j < 2 else EST,
        )
        for k in range(3 * 720)
        for j in range(8)
    ]
    assert run(default_detector(), flows) == []


def test_git_over_ssh_to_a_few_forge_addresses_stays_quiet():
    flows = [
        flow("10.0.0.10", public(300 + i % 6), 22, T0 + i * 90.0, outcome=EST) for i in range(960)
    ]
    assert run(default_detector(), flows) == []


# -- internal networks at Netography/Vectra parity -------------------------------------
def _config(tmp_path, text):
    path = tmp_path / "z.yaml"
    path.write_text(text)
    return load_config(path)


def test_a_dmz_inside_10_8_counts_as_external(tmp_path):
    config = _config(tmp_path, "internal_networks:\n  external: [10.99.0.0/16]\n")
    c = config.classifier()
    assert c.is_internal("10.1.2.3") and not c.is_internal("10.99.0.5")
    assert c.is_external_target("10.99.0.5")
    flows = [flow("10.0.0.5", f"10.99.0.{i + 1}", 27017, T0 + i) for i in range(30)]
    det = Detector(config.enabled_models, c, config.detector)
    assert {d.model.name for d in run(det, flows)} == {MONGO}


def test_private_ranges_switch_and_own_public_space(tmp_path):
    config = _config(
        tmp_path, "internal_networks:\n  networks: [147.32.0.0/16]\n  private_is_internal: false\n"
    )
    c = config.classifier()
    assert c.is_internal("147.32.83.165") and not c.is_internal("10.0.0.5")
    both = _config(tmp_path, "internal_networks:\n  networks: [147.32.0.0/16]\n").classifier()
    assert both.is_internal("147.32.83.165") and both.is_internal("10.0.0.5")
    with pytest.raises(ConfigError, match="no internal network left"):
        _config(tmp_path, "internal_networks:\n  private_is_internal: false\n")
    with pytest.raises(ConfigError, match=r"z.yaml:2.*internal_networks.drop"):
        _config(tmp_path, "internal_networks:\n  drop: [not-a-net]\n")


def test_dropped_ranges_and_proxy_sources_never_alert(tmp_path):
    config = _config(
        tmp_path,
        "internal_networks:\n  drop: [10.50.0.0/16]\n  proxies: [10.0.0.3/32]\n",
    )
    det = Detector(config.enabled_models, config.classifier(), config.detector)
    assert run(det, scan("10.50.0.5", 27017, 40)) == []
    assert run(det, scan("10.0.0.3", 27017, 40)) == []
    assert det.stats.dropped == 40
    assert det.stats.funnel[MONGO].discarded == 40
    assert len(run(det, scan("10.0.0.4", 27017, 40))) == 1


def test_ipv4_mapped_ipv6_is_classified_as_its_ipv4_address():
    c = NetworkClassifier()
    assert c.is_internal("::ffff:10.0.0.5") and c.is_special("::ffff:127.0.0.1")
    assert c.is_external_target("::ffff:45.0.0.1")


def test_prefix_table_agrees_with_ipaddress_and_does_not_slow_with_20000_networks():
    rng = random.Random(3)
    nets = {ipaddress.ip_network((rng.getrandbits(32) >> 8 << 8, 24)) for _ in range(20_000)}
    big = NetworkClassifier([str(n) for n in nets])
    small = NetworkClassifier(("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
    # the prefix table against itself: the by-octet shortcut (which the 20,000 /24s,
    # spread over every octet, never take) is switched off for the comparison
    small._octets = [None] * 256
    addrs = [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(20_000)]
    addrs += [str(next(iter(n.hosts()))) for n in list(nets)[:2000]]
    sample = [ipaddress.ip_network(f"{a}/24", strict=False) for a in addrs[-2000:] + addrs[:3000]]
    for a, net in zip(addrs[-2000:] + addrs[:3000], sample):
        assert big.is_internal(a) == (net in nets), a  # every configured network is a /24

    def cost(c):
        c._cache.clear()
        start = time.perf_counter()
        for a in addrs:
            c._classify(a)
        return time.perf_counter() - start

    assert min(cost(big) for _ in range(3)) < 3 * min(cost(small) for _ in range(3))


def test_local_field_disagreement_is_said_once_in_the_log_and_the_summary(tmp_path, caplog):
    flows = [
        flow("10.0.0.5", f"10.1.0.{i + 1}", 389, T0 + i, local_orig=True, local_resp=False)
        for i in range(30)
    ]
    det = only("ldap_scanning_internal", "ldap_scanning_inside_to_outside")
    with caplog.at_level(logging.WARNING, logger="zeekndm.detect"):
        detections = run(det, flows)
    warnings = [r for r in caplog.records if "disagree with internal_networks" in r.getMessage()]
    assert len(warnings) == 1 and det.stats.local_disagreements == 30
    # internal_networks says internal; Zeek's F does not make it external
    assert {d.model.name for d in detections} == {"ldap_scanning_internal"}
    from zeekndm.synth import Traffic, write_zeek_tsv

    t = Traffic(seed=1)
    t.scan("147.32.83.165", 27017, targets=30, start_offset=0, duration=30)
    log = tmp_path / "conn.log"
    with open(log, "w") as fh:
        write_zeek_tsv(t.in_write_order(), fh)
    text = log.read_text().replace("\tF\tF\t", "\tT\tF\t")
    log.write_text(text)
    summary = Run(["replay", log]).err
    assert summary.count("disagree with internal_networks on 30 records") == 1


# -- alert economy ---------------------------------------------------------------------
def test_flapping_scanner_gets_at_most_one_start_two_escalations_one_end_per_hour():
    flows = []
    n = 0
    for burst in range(9):  # 5 minutes of scanning every 20 minutes, for 3 hours
        base = T0 + burst * 1200.0
        for i in range(150 if burst % 3 == 2 else 40):
            flows.append(flow("10.0.0.5", public(n + 1), 27017, base + i * 2.0))
            n += 1
    det = only(MONGO, allowed_lateness=60)
    detections = run(det, flows) + det.finish()
    for hour in range(3):
        lo, hi = T0 + hour * 3600, T0 + (hour + 1) * 3600
        in_hour = [d for d in detections if lo <= d.last_seen < hi]
        states = [d.state for d in in_hour]
        assert states.count(START) <= 1 and states.count(END) <= 1, states
        assert states.count(ESCALATED) <= 2, states
    assert len({d.episode_id for d in detections}) == 1


def test_ongoing_only_while_above_threshold_and_the_episode_ends_after_the_window():
    det = only(MONGO, allowed_lateness=60)
    flows = scan("10.0.0.5", 27017, 100, spacing=1.0, outcome=UNK)
    # then one destination, again and again, for an hour
    flows += [
        flow("10.0.0.5", public(1), 27017, T0 + 100 + i * 10.0, outcome=UNK) for i in range(360)
    ]
    detections = run(det, flows)
    states = [d.state for d in detections]
    assert states[:2] == [START, ESCALATED]
    assert ONGOING not in states
    # below 25 from about T0+375 on: the end comes a window (and the lateness) later
    (end,) = [d for d in detections if d.state == END]
    assert T0 + 375 + 300 <= end.last_seen <= T0 + 375 + 300 + 60 + 10


def test_a_long_sweep_gets_an_ongoing_update_every_update_interval():
    det = only(MONGO)
    detections = run(det, scan("10.0.0.5", 27017, 1800, spacing=1.0, outcome=UNK))
    ongoing = [d for d in detections if d.state == ONGOING]
    assert 4 <= len(ongoing) <= 6
    assert all(b.last_seen - a.last_seen >= 300 for a, b in zip(ongoing, ongoing[1:]))


def test_realert_after_an_hour_of_silence_is_a_new_episode():
    det = only(MONGO, allowed_lateness=60)
    first = run(det, scan("10.0.0.5", 27017, 30, outcome=UNK))
    second = run(det, scan("10.0.0.5", 27017, 30, start=T0 + 2 * 3600, outcome=UNK))
    starts = [d for d in first + second if d.state == START]
    assert len(starts) == 2 and starts[0].episode_id != starts[1].episode_id


# -- evidence and message ----------------------------------------------------------------
def test_evidence_names_who_answered_who_did_not_and_sample_uids():
    flows = [
        Flow(T0 + i, "10.0.0.5", 40000, public(i + 1), 27017, Transport.TCP,
             EST if i % 5 == 0 else NA, f"C{i:04d}", f"1:cid{i}=")
        for i in range(30)
    ]  # fmt: skip
    det = only(MONGO)
    doc = enrich(run(det, flows)[0]).doc["zeekndm"]
    assert doc["answered"][0] == public(1) and public(2) in doc["unanswered"]
    assert doc["sample_uids"][:2] == ["C0000", "C0001"]
    assert doc["sample_community_ids"][0] == "1:cid0="
    assert doc["first_seen"] == "2023-11-14T22:13:20.000000Z" and doc["ports"] == [27017]
    assert doc["decided_by"] == "sequential" and doc["counted"] == "destinations"


def test_message_has_one_time_scope_per_sentence():
    det = only(MONGO, allowed_lateness=60)
    detections = run(det, scan("10.0.0.5", 27017, 1200, spacing=1.0)) + det.finish()
    scopes = ("within", "since the episode began", "over the whole episode", "since the previous")
    states = set()
    for d in detections:
        states.add(d.state)
        for sentence in re.split(r"(?<=\.) ", enrich(d).doc["message"]):
            assert sum(s in sentence.lower() for s in scopes) <= 1, sentence
    assert states == {START, ESCALATED, ONGOING, END}


def test_replay_summary_shows_the_funnel_per_model(tmp_path):
    from zeekndm.synth import Traffic, write_zeek_tsv

    t = Traffic(seed=2)
    t.background(500)
    log = tmp_path / "conn.log"
    with open(log, "w") as fh:
        write_zeek_tsv(t.in_write_order(), fh)
    err = Run(["replay", log]).err
    line = next(x for x in err.splitlines() if x.strip().startswith(MONGO))
    assert re.search(
        r"\d+ on its ports, \d+ outbound, \d+ discarded, \d+ counted, \d+ alerts", line
    )
    assert "saw no record on their ports" in err


def test_a_fast_sweeper_keeps_memory_within_the_destination_cap():
    det = only(MONGO, max_destinations_per_source=1000)
    flows = (
        flow("10.0.0.5", f"46.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 27017, T0 + i / 2000)
        for i in range(100_000)
    )
    detections = run(det, flows)
    assert [d.severity for d in detections if d.state != ONGOING] == ["low", "medium", "high"]
    (track,) = det._tracks.values()
    assert len(track.items) <= 1000 and len(track.win) <= 1000
    assert len(track.win.order) - track.win.head <= 2 * 1000 + 1
    assert det.finish()[0].distinct_is_lower_bound


# -- snapshot ----------------------------------------------------------------------------
def test_snapshot_of_an_older_version_is_refused_with_a_clear_error():
    det = only(MONGO)
    with pytest.raises(ValueError, match="snapshot version 1 is not 2"):
        det.restore({"version": 1, "tracks": []})


def test_snapshot_restore_keeps_vertical_tracks_and_the_economy():
    det = only("portscan_internal_external", MONGO, allowed_lateness=60)
    flows = [flow("10.0.0.5", "45.33.32.156", 1000 + i, T0 + i, outcome=UNK) for i in range(10)]
    run(det, flows + scan("10.0.0.6", 27017, 30, outcome=UNK))
    state = json.loads(json.dumps(det.snapshot()))
    again = only("portscan_internal_external", MONGO, allowed_lateness=60)
    again.restore(state)
    more = [flow("10.0.0.5", "45.33.32.156", 2000 + i, T0 + 10 + i, outcome=UNK) for i in range(10)]
    assert [d.state for d in run(again, more)] == [START]
    assert json.loads(json.dumps(again.snapshot()))["version"] == 2
