"""Replays of the real captures in ../shared/data/real (see its SOURCES.md).

None of them contains an outbound MongoDB or LDAP scan, so with the shipped models they
are negative cases (inbound scans, internal sweeps, busy benign clients); custom models
of the same shape, added through the config, find the real outbound fan-outs they do
contain.
"""

from __future__ import annotations

import io
import json
import uuid

import pytest

from zeekndm.cli import Environment, ExitStatus, main

ALL_CONN = [
    "zeek/zat/conn.log",
    "zeek/zat/json/conn.log",
    "zeek/rita/proxy_rolling/conn.16_00_00-17_00_00.log.gz",
    "zeek/rita/json_with_all_fields/conn.log",
    "zeek/slips/port-scans/horizontal/conn.log",
    "zeek/slips/port-scans/vertical/conn.log",
    "zeek/slips/test9-mixed-zeek-dir/conn.log",
    "zeek/slips/test10-mixed-zeek-dir/conn.log",
    "zeek/slips/test18-malicious-ctu-sme-11-win/zeek-labeled/conn.log.labeled",
    "zeek/stratosphere-sdt/002-zeek-scenario-port-scanning/conn.log",
    "zeek/stratosphere-sdt/011-zeek-mixed/data/conn.log.labeled",
    "zeek/brimdata-zed/conn.log",
    "suricata/slips/test6-malicious.suricata.json",
    "suricata/suricatalog/eve-2.json",
    "suricata/suricatalog/eve_udp_flow.json",
]


def replay(files, config_text: str | None = None, tmp_path=None):
    argv = ["replay", *map(str, files)]
    if config_text is not None:
        cfg = tmp_path / "zeekndm.yaml"
        cfg.write_text(config_text)
        argv += ["--config", str(cfg)]
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
    status = main(argv, env)
    assert status == ExitStatus.OK, env.stderr.getvalue()
    alerts = [json.loads(line) for line in env.stdout.getvalue().splitlines()]
    return alerts, env.stderr.getvalue()


def starts(alerts):
    return [
        (
            a["rule"]["name"],
            a["source"]["ip"],
            a["zeekndm"]["severity_name"],
            a["zeekndm"]["distinct_destinations"],
        )
        for a in alerts
        if a["zeekndm"]["alert_state"] in ("start", "escalated")
    ]


def custom_model(name: str, ports: str, low: int = 25, extra: str = "") -> str:
    return f"""
models:
  {name}:
    id: {uuid.uuid5(uuid.NAMESPACE_DNS, name)}
    name: {name}
    ports: [{ports}]
    threshold:
      distinct_destinations: {{low: {low}, medium: 100, high: 500}}
      window: 300
{extra}
    description: Fan-out to many external hosts on one service port.
    what_to_look_for: Which process on the source makes these connections.
    threat:
      - tactic: {{id: TA0007, name: Discovery}}
        techniques: [{{id: T1046, name: Network Service Discovery}}]
"""


@pytest.mark.parametrize("relative", ALL_CONN)
def test_real_capture_raises_no_seed_model_alert(real, relative):
    """Inbound scans, internal sweeps and busy clients are not outbound scans."""
    alerts, _ = replay([real(relative)])
    assert alerts == []


def test_rita_day_of_inbound_scanning_raises_no_alert(real):
    folder = real("zeek/rita/missing_host_2024-04-19")
    files = sorted(folder.glob("conn.*.log.gz"))
    assert len(files) == 24
    alerts, summary = replay(files)
    assert alerts == []
    assert "31,367 records" in summary


def test_custom_model_finds_zeroaccess_udp_16464_fanout_in_zat(real, tmp_path):
    alerts, _ = replay(
        [real("zeek/zat/conn.log")], custom_model("zeroaccess_p2p_fanout", "16464/udp"), tmp_path
    )
    assert starts(alerts) == [
        ("zeroaccess_p2p_fanout", "192.168.33.10", "low", 25),
        ("zeroaccess_p2p_fanout", "192.168.33.10", "medium", 100),
    ]
    end = [a for a in alerts if a["zeekndm"]["alert_state"] == "end"]
    assert end[0]["zeekndm"]["distinct_destinations"] == 202
    assert end[0]["zeekndm"]["failures"] == 140


def test_custom_model_finds_spambot_smtp_fanout_in_suricata_eve(real, tmp_path):
    alerts, _ = replay(
        [real("suricata/suricatalog/eve-2.json")],
        custom_model("smtp_submission_fanout", "587/tcp"),
        tmp_path,
    )
    # 114 distinct relays over 19 minutes, at most 55 of them in any 5-minute window:
    # a low alert, never medium, and an end record with the whole episode.
    assert starts(alerts) == [("smtp_submission_fanout", "10.2.8.102", "low", 25)]
    end = [a for a in alerts if a["zeekndm"]["alert_state"] == "end"][0]
    assert end["zeekndm"]["distinct_destinations"] == 114
    assert end["observer"]["product"] == "suricata"


def test_custom_model_finds_horizontal_http_scan_with_relative_timestamps(real, tmp_path):
    alerts, _ = replay(
        [real("zeek/slips/port-scans/horizontal/conn.log")],
        custom_model("http_fanout", "80/tcp"),
        tmp_path,
    )
    assert starts(alerts) == [("http_fanout", "10.0.2.112", "low", 25)]


def test_internal_networks_decide_direction_on_real_internal_sweep(real, tmp_path):
    """002: 172.16.1.11 sweeps 389 across three RFC 1918 subnets. With the default
    networks that is internal-to-internal (no alert, see above); declaring only
    172.16.1.0/24 internal makes the other subnets external."""
    config = (
        "internal_networks: [172.16.1.0/24]\nmodels:\n"
        "  ldap_scanning_inside_to_outside:\n    threshold:\n"
        "      distinct_destinations: {low: 10, medium: 100, high: 500}\n"
    )
    alerts, _ = replay(
        [real("zeek/stratosphere-sdt/002-zeek-scenario-port-scanning/conn.log")], config, tmp_path
    )
    found = starts(alerts)
    assert [f[:3] for f in found] == [("ldap_scanning_inside_to_outside", "172.16.1.11", "low")]


def test_failure_ratio_separates_benign_https_fanout_from_a_scan(real, tmp_path):
    """proxy_rolling: 10.0.0.238 reaches 365 public hosts on 443, nearly all answered."""
    path = real("zeek/rita/proxy_rolling/conn.16_00_00-17_00_00.log.gz")
    noisy, _ = replay([path], custom_model("https_fanout", "443/tcp"), tmp_path)
    assert any(a["source"]["ip"] == "10.0.0.238" for a in noisy)
    quiet, _ = replay(
        [path],
        custom_model("https_fanout", "443/tcp", extra="      min_failure_ratio: 0.5"),
        tmp_path,
    )
    assert quiet == []
