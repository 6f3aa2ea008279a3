from __future__ import annotations

import json
from pathlib import Path

import pytest
from es_standin import ElasticsearchStandin, KibanaStandin, _flat_mapping
from test_sink_elasticsearch import real_alerts

from zeekndm.errors import ConfigError, SinkError
from zeekndm.setup import (
    DASHBOARD_ID,
    DATA_VIEW_ID,
    dashboard_objects,
    export_asset,
    ilm_policy_body,
    run_setup,
    template_body,
)
from zeekndm.sinks.elasticsearch import ElasticsearchSettings

REPO = Path(__file__).resolve().parent.parent
DS = "logs-zeekndm.alert-default"


def settings(server, **kw) -> ElasticsearchSettings:
    return ElasticsearchSettings.from_dict({"hosts": [server.url], **kw})


def leaves(doc: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for k, v in doc.items():
        if isinstance(v, dict):
            out.update(leaves(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out.update(leaves(item, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_setup_installs_policy_template_data_stream_and_dashboards(es, kibana):
    lines = run_setup(settings(es), kibana.url, {"template", "dashboards"})
    assert lines == [
        f"elasticsearch {es.url} OK (version 8.15.0, cluster standin)",
        "ilm policy zeekndm-alerts: installed",
        f"index template {DS}: installed (version 1)",
        f"data stream {DS}: created",
        f"kibana {kibana.url}: 3 saved objects imported "
        "(dashboard '[zeekndm] Scan detection alerts')",
    ]
    assert es.ilm["zeekndm-alerts"]["policy"] == ilm_policy_body()["policy"]
    assert es.templates[DS] == template_body("default")
    assert DS in es.data_streams
    assert {k[1] for k in kibana.objects} == {DATA_VIEW_ID, "zeekndm-alerts-table", DASHBOARD_ID}


def test_setup_twice_gives_the_same_result(es, kibana):
    first = run_setup(settings(es), kibana.url, {"template", "dashboards"})
    state = (json.dumps(es.templates), json.dumps(es.ilm["zeekndm-alerts"]["policy"]),
             dict(kibana.objects))  # fmt: skip
    second = run_setup(settings(es), kibana.url, {"template", "dashboards"})
    assert second[3] == f"data stream {DS}: already exists"
    assert first[:3] + first[4:] == second[:3] + second[4:]
    assert state == (json.dumps(es.templates), json.dumps(es.ilm["zeekndm-alerts"]["policy"]),
                     dict(kibana.objects))  # fmt: skip
    assert len(es.data_streams) == 1 and kibana.imports == 2


def test_setup_only_the_template_does_not_touch_kibana(es, kibana):
    lines = run_setup(settings(es), kibana.url, {"template"})
    assert len(lines) == 4 and not kibana.requests


def test_template_maps_every_field_of_a_real_alert():
    mapping = _flat_mapping(template_body())
    for alert in real_alerts():
        for path in leaves(alert.doc):
            assert path in mapping, f"{path} is not mapped"
    expected = {
        "@timestamp": "date", "message": "text", "rule.description": "text",
        "source.ip": "ip", "destination.ip": "ip", "related.ip": "ip",
        "zeekndm.sample_destinations": "ip", "destination.port": "long",
        "event.severity": "long", "event.risk_score": "float", "event.start": "date",
        "rule.name": "keyword", "threat.technique.id": "keyword",
        "zeekndm.distinct_destinations": "long", "zeekndm.window_seconds": "float",
        "zeekndm.distinct_is_lower_bound": "boolean", "zeekndm.episode_id": "keyword",
    }  # fmt: skip
    assert {p: mapping[p] for p in expected} == expected
    assert template_body()["data_stream"] == {}
    assert template_body()["index_patterns"] == [DS]
    assert template_body("prod")["index_patterns"] == ["logs-zeekndm.alert-prod"]


def test_dashboard_has_the_promised_panels_and_resolvable_references():
    objects = {o["id"]: o for o in dashboard_objects()}
    view = objects[DATA_VIEW_ID]["attributes"]
    assert view["title"] == "logs-zeekndm.alert-*" and view["timeFieldName"] == "@timestamp"
    dash = objects[DASHBOARD_ID]
    panels = json.loads(dash["attributes"]["panelsJSON"])
    titles = [p["title"] for p in panels]
    assert titles == [
        "Alerts over time by model", "Alerts over time by severity", "Top scanning sources",
        "Top destination ports", "MITRE ATT&CK techniques", "Alerts",
    ]  # fmt: skip
    for ref in dash["references"]:
        assert ref["id"] in objects, ref
        assert ref["name"].split(":")[0] in {p["panelIndex"] for p in panels}
    fields = {
        c["sourceField"]
        for p in panels
        if p["type"] == "lens"
        for c in p["embeddableConfig"]["attributes"]["state"]["datasourceStates"]["formBased"][
            "layers"
        ]["l1"]["columns"].values()
    }
    mapped = _flat_mapping(template_body())
    assert fields - {"___records___"} <= set(mapped)


def test_kibana_without_the_xsrf_header_fails_clearly(es):
    kibana = KibanaStandin(strips_xsrf=True).start()
    try:
        with pytest.raises(SinkError) as err:
            run_setup(settings(es), kibana.url, {"dashboards"})
    finally:
        kibana.stop()
    assert "kbn-xsrf" in str(err.value) and "\n" not in str(err.value)


def test_kibana_credentials_default_to_the_elasticsearch_ones(es, monkeypatch):
    kibana = KibanaStandin(basic_auth=("elastic", "pw")).start()
    monkeypatch.setenv("ZEEKNDM_TEST_PW", "pw")
    try:
        s = settings(es, username="elastic", password_env="ZEEKNDM_TEST_PW")
        assert "3 saved objects imported" in run_setup(s, kibana.url, {"dashboards"})[0]
        with pytest.raises(SinkError) as err:
            run_setup(s, kibana.url, {"dashboards"}, kibana_auth=("elastic", "wrong"))
    finally:
        kibana.stop()
    assert "refused the credentials (401)" in str(err.value)


def test_a_url_that_is_not_kibana_is_refused(es):
    with pytest.raises(SinkError) as err:
        run_setup(settings(es), es.url, {"dashboards"})
    assert "did not answer as Kibana" in str(err.value)


def test_setup_against_an_unsupported_server_fails_in_one_line():
    server = ElasticsearchStandin(version="7.17.0").start()
    try:
        with pytest.raises(SinkError) as err:
            run_setup(settings(server), None, {"template"})
    finally:
        server.stop()
    assert "Elasticsearch 8.x or 9.x" in str(err.value)
    assert not server.templates


def test_exported_assets_match_the_files_shipped_in_config():
    assert json.loads(export_asset("template")) == template_body()
    assert (
        export_asset("template") == (REPO / "config/elasticsearch/index-template.json").read_text()
    )
    assert export_asset("ilm-policy") == (REPO / "config/elasticsearch/ilm-policy.json").read_text()
    dashboards = export_asset("dashboards")
    assert dashboards == (REPO / "config/kibana/zeekndm-dashboards.ndjson").read_text()
    assert [json.loads(line)["type"] for line in dashboards.splitlines()] == [
        "index-pattern", "search", "dashboard",
    ]  # fmt: skip


def test_detection_rule_promotes_only_new_and_escalated_zeekndm_alerts():
    rule = json.loads(export_asset("detection-rule"))
    assert rule == json.loads((REPO / "config/kibana/zeekndm-detection-rule.ndjson").read_text())
    assert rule["index"] == ["logs-zeekndm.alert-*"] and rule["enabled"] is False
    assert "zeekndm.alert_state:(start or escalated)" in rule["query"]
    mapped = _flat_mapping(template_body())
    for field in ("zeekndm.severity_name", "event.risk_score", "rule.name"):
        assert field in mapped
    assert [t["technique"][0]["id"] for t in rule["threat"]] == ["T1046", "T1595"]


def test_exporting_an_unknown_asset_is_a_config_error():
    with pytest.raises(ConfigError, match="template, ilm-policy, dashboards, detection-rule"):
        export_asset("pipelines")
