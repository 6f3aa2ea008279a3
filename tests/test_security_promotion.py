"""Kibana Security promotes zeekndm alerts once per episode start and per escalation.

The Kibana stand-in runs the two rules a user may enable - zeekndm's own and Elastic's
prebuilt External Alerts (elastic/detection-rules rules/promotions/external_alerts.toml) -
the way the detection engine does: each run looks back from now on the rule's
timestamp_override, evaluates the KQL query and the rule's exceptions, and promotes a
source document once per rule.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import Run
from kibana_standin import EXTERNAL_ALERTS_RULE_ID, KibanaStandin

from zeekndm.setup import RULE_ID, detection_rule, run_setup
from zeekndm.sinks.elasticsearch import ElasticsearchSettings

REPO = Path(__file__).resolve().parent.parent
DS = "logs-zeekndm.alert-default"
DEMO = REPO / "demo" / "conn.log"  # traffic of November 2023: indexed years later


def replay_demo(es, tmp_path) -> list[dict]:
    run = Run(["replay", DEMO, "--elasticsearch", es.url, "--state-dir", tmp_path / "state"])
    assert run.status == 0, run.err
    return run.alerts


def promotable(alerts: list[dict]) -> int:
    return sum(a["zeekndm"]["alert_state"] in ("start", "escalated") for a in alerts)


def by_rule(kibana: KibanaStandin) -> dict[str, int]:
    out: dict[str, int] = {}
    for alert in kibana.security_alerts.values():
        out[alert["rule_id"]] = out.get(alert["rule_id"], 0) + 1
    return out


@pytest.fixture
def es_settings(es):
    return ElasticsearchSettings.from_dict({"hosts": [es.url]})


def test_the_demo_has_updates_and_ends_that_must_not_be_promoted(es, tmp_path):
    alerts = replay_demo(es, tmp_path)
    states = {a["zeekndm"]["alert_state"] for a in alerts}
    assert {"start", "end"} <= states and promotable(alerts) < len(alerts)
    kinds = {(a["zeekndm"]["alert_state"], a["event"]["kind"]) for a in alerts}
    assert kinds <= {("start", "alert"), ("escalated", "alert"), ("ongoing", "event"),
                     ("end", "event")}  # fmt: skip


def test_with_the_zeekndm_rule_each_start_and_escalation_is_promoted_once(
    es, kibana, es_settings, tmp_path
):
    run_setup(es_settings, kibana.url, {"template", "detection-rule"})
    alerts = replay_demo(es, tmp_path)
    now = time.time()
    kibana.run_rules(now)
    kibana.run_rules(now + 60)  # overlapping look-backs promote nothing twice
    assert by_rule(kibana) == {RULE_ID: promotable(alerts)}
    states = {a["alert_state"] for a in kibana.security_alerts.values()}
    assert states <= {"start", "escalated"}


def test_with_only_external_alerts_each_start_and_escalation_is_promoted_once(
    es, kibana, es_settings, tmp_path
):
    kibana.install_external_alerts(enabled=True)
    run_setup(es_settings, kibana.url, {"template", "dashboards"})  # not our rule
    alerts = replay_demo(es, tmp_path)
    kibana.run_rules(time.time())
    assert by_rule(kibana) == {EXTERNAL_ALERTS_RULE_ID: promotable(alerts)}


def test_with_both_rules_enabled_each_alert_is_promoted_once(es, kibana, es_settings, tmp_path):
    kibana.install_external_alerts(enabled=True)
    lines = run_setup(es_settings, kibana.url, {"template", "detection-rule"})
    assert lines[-1] == (
        "kibana: Elastic's External Alerts rule: exception added (zeekndm alerts are promoted "
        "once, by the zeekndm rule)"
    )
    alerts = replay_demo(es, tmp_path)
    kibana.run_rules(time.time())
    assert by_rule(kibana) == {RULE_ID: promotable(alerts)}
    again = run_setup(es_settings, kibana.url, {"detection-rule"})
    assert again[-1] == "kibana: Elastic's External Alerts rule: exception already in place"


def test_disabling_the_zeekndm_rule_hands_promotion_back_to_external_alerts(
    es, kibana, es_settings, tmp_path
):
    kibana.install_external_alerts(enabled=True)
    run_setup(es_settings, kibana.url, {"template", "detection-rule"})
    kibana.rules[RULE_ID]["enabled"] = False  # the analyst turns ours off in Kibana
    lines = run_setup(es_settings, kibana.url, {"detection-rule"})
    assert (
        lines[-2]
        == "kibana: Security rule 'zeekndm scan alert' installed (disabled, as you left it)"
    )
    assert "exception removed" in lines[-1]
    alerts = replay_demo(es, tmp_path)
    kibana.run_rules(time.time())
    assert by_rule(kibana) == {EXTERNAL_ALERTS_RULE_ID: promotable(alerts)}


def test_without_the_exception_both_rules_would_promote_every_alert_twice(
    es, kibana, es_settings, tmp_path
):
    """What the exception prevents: the stand-in really runs both queries."""
    kibana.install_external_alerts(enabled=True)
    run_setup(es_settings, kibana.url, {"template", "detection-rule"})
    kibana.exception_items.clear()
    alerts = replay_demo(es, tmp_path)
    kibana.run_rules(time.time())
    assert by_rule(kibana) == {RULE_ID: promotable(alerts),
                               EXTERNAL_ALERTS_RULE_ID: promotable(alerts)}  # fmt: skip


def test_alerts_indexed_long_after_their_traffic_are_promoted(es, kibana, es_settings, tmp_path):
    """The demo's traffic is from 2023: only event.ingested, stamped by the ingest
    pipeline, falls in the rule's six-minute look-back."""
    run_setup(es_settings, kibana.url, {"template", "detection-rule"})
    alerts = replay_demo(es, tmp_path)
    stored = es.docs(DS)
    assert all(doc["event"]["ingested"] > doc["@timestamp"] for doc in stored.values())
    assert all("created" in doc["event"] for doc in stored.values())
    kibana.run_rules(time.time())
    assert by_rule(kibana) == {RULE_ID: promotable(alerts)} and promotable(alerts) > 0


def test_on_timestamp_alone_the_late_alerts_would_never_be_promoted(
    es, kibana, es_settings, tmp_path
):
    run_setup(es_settings, kibana.url, {"template"})
    rule = detection_rule(enabled=True)
    del rule["timestamp_override"]  # the rule as it was shipped before
    kibana._store_rule(rule)
    replay_demo(es, tmp_path)
    assert kibana.run_rules(time.time()) == 0


def test_documents_without_event_ingested_fall_back_to_their_timestamp(es, kibana, es_settings):
    """An alert shipped by other means (the NDJSON file through Filebeat) has no
    event.ingested: the rule then reads @timestamp, as Kibana does."""
    from elasticsearch import Elasticsearch

    run_setup(es_settings, kibana.url, {"template", "detection-rule"})
    es.pipelines["zeekndm-alerts"]["processors"].pop()  # as if no pipeline stamped it
    now = time.time()
    doc = {"@timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
           "event": {"kind": "alert", "dataset": "zeekndm.alert"},
           "zeekndm": {"alert_state": "start", "severity_name": "low"},
           "rule": {"name": "x"}}  # fmt: skip
    Elasticsearch(es.url).bulk(operations=[{"create": {"_index": DS, "_id": "f1"}}, doc])
    assert kibana.run_rules(now) == 1
