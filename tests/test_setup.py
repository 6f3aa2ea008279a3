from __future__ import annotations

import json
from pathlib import Path

import pytest
from es_standin import ElasticsearchStandin, _flat_mapping
from kibana_standin import KibanaStandin
from test_sink_elasticsearch import real_alerts

from zeekndm.errors import ConfigError, SinkError
from zeekndm.setup import (
    DASHBOARD_ID,
    DATA_VIEW_ID,
    dashboard_objects,
    export_asset,
    ilm_policy_body,
    ingest_pipeline_body,
    run_setup,
    template_body,
)
from zeekndm.sinks.elasticsearch import TEMPLATE_VERSION, ElasticsearchSettings

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


def test_setup_installs_policy_pipeline_template_data_stream_and_kibana_objects(es, kibana):
    lines = run_setup(settings(es), kibana.url, {"template", "dashboards", "detection-rule"})
    assert lines == [
        f"elasticsearch {es.url} OK (version 8.15.0, cluster standin)",
        "ilm policy zeekndm-alerts: installed",
        "ingest pipeline zeekndm-alerts: installed (sets event.ingested)",
        f"index template {DS}: installed (version {TEMPLATE_VERSION})",
        f"data stream {DS}: created",
        f"kibana {kibana.url} OK (version 8.15.0, space default)",
        "kibana: 3 saved objects imported into space default (data view, saved search, "
        "dashboard '[zeekndm] Scan detection alerts')",
        "kibana: Security rule 'zeekndm scan alert' installed (enabled)",
    ]
    assert es.ilm["zeekndm-alerts"]["policy"] == ilm_policy_body()["policy"]
    assert es.templates[DS] == template_body("default")
    assert es.pipelines["zeekndm-alerts"] == ingest_pipeline_body()
    assert DS in es.data_streams
    assert {k[1] for k in kibana.objects} == {DATA_VIEW_ID, "zeekndm-alerts-table", DASHBOARD_ID}
    assert kibana.rules["zeekndm-promote-scan-alerts"]["enabled"] is True


def test_setup_twice_gives_the_same_result(es, kibana):
    parts = {"template", "dashboards", "detection-rule"}
    first = run_setup(settings(es), kibana.url, parts)
    state = (json.dumps(es.templates), json.dumps(es.ilm["zeekndm-alerts"]["policy"]),
             dict(kibana.objects), json.dumps(kibana.rules))  # fmt: skip
    second = run_setup(settings(es), kibana.url, parts)
    assert second[4] == f"data stream {DS}: already exists"
    assert first[:4] + first[5:] == second[:4] + second[5:]
    rules = {k: {**v, "id": None} for k, v in kibana.rules.items()}
    assert state[:3] == (json.dumps(es.templates), json.dumps(es.ilm["zeekndm-alerts"]["policy"]),
                         dict(kibana.objects))  # fmt: skip
    assert rules == {k: {**v, "id": None} for k, v in json.loads(state[3]).items()}
    assert len(es.data_streams) == 1 and len(es.data_streams[DS]["indices"]) == 1
    assert kibana.imports == 2


def test_setup_only_the_template_does_not_touch_kibana(es, kibana):
    lines = run_setup(settings(es), kibana.url, {"template"})
    assert len(lines) == 5 and not kibana.requests


def test_template_maps_every_field_of_a_real_alert():
    mapping = _flat_mapping(template_body())
    for alert in real_alerts():
        for path in leaves(alert.doc):
            assert path in mapping, f"{path} is not mapped"
    expected = {
        "@timestamp": "date", "message": "text", "rule.description": "keyword",
        "event.created": "date", "event.ingested": "date", "zeekndm.transports": "keyword",
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
        assert "3 saved objects imported" in run_setup(s, kibana.url, {"dashboards"})[1]
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
    assert (
        export_asset("ingest-pipeline")
        == (REPO / "config/elasticsearch/ingest-pipeline.json").read_text()
    )
    dashboards = export_asset("dashboards")
    assert dashboards == (REPO / "config/kibana/zeekndm-dashboards.ndjson").read_text()
    assert [json.loads(line)["type"] for line in dashboards.splitlines()] == [
        "index-pattern", "search", "dashboard",
    ]  # fmt: skip


def test_detection_rule_promotes_start_and_escalated_alerts_on_their_ingest_time():
    rule = json.loads(export_asset("detection-rule"))
    assert rule == json.loads((REPO / "config/kibana/zeekndm-detection-rule.ndjson").read_text())
    assert rule["index"] == ["logs-zeekndm.alert-*"] and rule["enabled"] is False
    assert "event.kind:alert" in rule["query"]
    assert "zeekndm.alert_state:(start or escalated)" in rule["query"]
    assert rule["timestamp_override"] == "event.ingested"
    mapped = _flat_mapping(template_body())
    for field in ("zeekndm.severity_name", "event.risk_score", "rule.name", "event.ingested"):
        assert field in mapped
    assert [t["technique"][0]["id"] for t in rule["threat"]] == ["T1046", "T1595"]


def test_exporting_an_unknown_asset_is_a_config_error():
    with pytest.raises(
        ConfigError, match="template, ilm-policy, ingest-pipeline, dashboards, detection-rule"
    ):
        export_asset("pipelines")


# -- serverless and data streams that exist (issue 10 points 1, 7) -----------------------------
def test_setup_on_serverless_skips_ilm_and_keeps_the_retention_as_a_lifecycle():
    server = ElasticsearchStandin(flavor="serverless").start()
    try:
        lines = run_setup(settings(server, retention="90d"), None, {"template"})
        tpl = server.templates[DS]
    finally:
        server.stop()
    assert lines[1] == (
        "ilm policy zeekndm-alerts: skipped (serverless: retention 90d is set as the data "
        "stream lifecycle)"
    )
    assert lines[-1] == f"data stream {DS}: created" and not server.ilm
    assert tpl["template"]["lifecycle"] == {"data_retention": "90d"}
    assert "lifecycle" not in tpl["template"]["settings"]["index"]


def test_the_serverless_standin_answers_ilm_as_a_project_does(es):
    server = ElasticsearchStandin(flavor="serverless").start()
    try:
        from elasticsearch import BadRequestError, Elasticsearch

        with pytest.raises(BadRequestError) as err:
            Elasticsearch(server.url).ilm.put_lifecycle(name="x", policy={"phases": {}})
        with pytest.raises(BadRequestError, match="not available when running in serverless"):
            Elasticsearch(server.url).indices.put_index_template(
                name="t", body=template_body(ilm=True)
            )
    finally:
        server.stop()
    assert err.value.body == {"error": "no handler found for uri [/_ilm/policy/x] and method [PUT]"}
    assert "api_not_available" not in str(err.value.body)


def test_setup_rolls_over_a_data_stream_created_by_the_builtin_logs_template(es, tmp_path):
    from test_sink_elasticsearch import many

    from zeekndm.sinks.elasticsearch import ElasticsearchSink

    ElasticsearchSink(settings(es), tmp_path).send(many(3))  # `replay` before `setup`
    old = es.write_index(DS)
    assert es.mapping_of(old)["zeekndm.sample_destinations"] == "keyword"  # ecs@mappings
    lines = run_setup(settings(es), None, {"template"})
    new = es.write_index(DS)
    assert lines[-1] == (
        f"data stream {DS}: rolled over to {new} (its write index {old} had mappings from "
        "another template (Elasticsearch's built-in logs template?); new alerts get zeekndm's)"
    )
    assert es.mapping_of(new)["zeekndm.sample_destinations"] == "ip"
    again = run_setup(settings(es), None, {"template"})
    assert again[-1] == f"data stream {DS}: already exists" and es.write_index(DS) == new


def test_setup_rolls_over_a_data_stream_of_an_older_template_version(es):
    run_setup(settings(es), None, {"template"})
    es.index_meta[es.write_index(DS)]["mappings"]["_meta"]["template_version"] = 1  # upgrade
    lines = run_setup(settings(es), None, {"template"})
    assert "had mappings from template version 1" in lines[-1]
    assert len(es.data_streams[DS]["indices"]) == 2


def test_the_template_version_changes_with_the_template():
    """Bump TEMPLATE_VERSION (sinks/elasticsearch.py) when the template changes, and pin
    its new digest here: `setup` then rolls existing data streams over and `run` notices
    a write index created from an older template."""
    import hashlib

    digest = hashlib.sha256(json.dumps(template_body(), sort_keys=True).encode()).hexdigest()
    assert (TEMPLATE_VERSION, digest[:16]) == (3, "0693449b3b33235b")


# -- Kibana (issue 10 points 2, 8; issue 9: 15) ---------------------------------------------
@pytest.mark.parametrize("version", ["8.9.0", "8.19.2", "9.1.0"])
def test_supported_kibana_versions_are_accepted(version, es):
    kibana = KibanaStandin(version=version, es=es).start()
    try:
        lines = run_setup(settings(es), kibana.url, {"dashboards"})
    finally:
        kibana.stop()
    assert lines[0] == f"kibana {kibana.url} OK (version {version}, space default)"


@pytest.mark.parametrize("version", ["8.8.2", "7.17.0", "10.0.0"])
def test_an_unsupported_kibana_is_refused_in_one_line_before_importing(version, es):
    kibana = KibanaStandin(version=version, es=es).start()
    try:
        with pytest.raises(SinkError) as err:
            run_setup(settings(es), kibana.url, {"dashboards", "detection-rule"})
    finally:
        kibana.stop()
    assert str(err.value) == (
        f"Kibana {version} at {kibana.url} is not supported: zeekndm's saved objects need "
        "Kibana 8.9 to 9.x"
    )
    assert kibana.imports == 0 and not kibana.rules


def test_the_standin_like_kibana_8_8_refuses_objects_from_8_9(es):
    """Why the gate: without it, the import fails object by object with this message."""
    from zeekndm.setup import KibanaClient

    kibana = KibanaStandin(version="8.8.2", es=es).start()
    try:
        client = KibanaClient.connect(kibana.url, None, None, None, 5.0)
        with pytest.raises(SinkError) as err:
            client.import_saved_objects()
    finally:
        kibana.stop()
    assert 'Document "zeekndm-alerts-overview" belongs to a more recent version of Kibana ' in (
        str(err.value)
    )


def test_a_serverless_kibana_is_accepted(es):
    kibana = KibanaStandin(build_flavor="serverless", es=es).start()
    try:
        assert "OK (serverless" in run_setup(settings(es), kibana.url, {"dashboards"})[0]
    finally:
        kibana.stop()


def test_a_kibana_403_says_a_privilege_is_missing(es, monkeypatch):
    kibana = KibanaStandin(basic_auth=("admin", "a"), readonly_users={"viewer": "v"}, es=es)
    kibana.start()
    try:
        with pytest.raises(SinkError) as err:
            run_setup(settings(es), kibana.url, {"dashboards"}, kibana_auth=("viewer", "v"))
    finally:
        kibana.stop()
    assert "lacks a privilege (403)" in str(err.value)
    assert "Unable to bulk_create" in str(err.value) and "credentials" not in str(err.value)


def test_a_kibana_redirect_is_not_followed_with_the_credentials(es, monkeypatch):
    elsewhere = KibanaStandin(es=es).start()
    kibana = KibanaStandin(redirect_to=elsewhere.url, es=es).start()
    monkeypatch.setenv("ZEEKNDM_TEST_PW", "s3cret")
    try:
        s = settings(es, username="elastic", password_env="ZEEKNDM_TEST_PW")
        with pytest.raises(SinkError) as err:
            run_setup(s, kibana.url, {"dashboards"})
    finally:
        kibana.stop()
        elsewhere.stop()
    assert not elsewhere.requests  # nothing, and no credentials, went to the other origin
    assert f"a redirect to {elsewhere.url}/api/status" in str(err.value)
    assert "does not follow redirects" in str(err.value) and "s3cret" not in str(err.value)


def test_a_kibana_url_with_credentials_is_refused(es):
    with pytest.raises(ConfigError) as err:
        run_setup(settings(es), "http://elastic:hunter2@127.0.0.1:5601", {"dashboards"})
    assert "hunter2" not in str(err.value) and "password_env" in str(err.value)


def test_kibana_space_puts_the_objects_and_the_rule_in_that_space(es):
    kibana = KibanaStandin(spaces=("default", "soc"), es=es).start()
    try:
        lines = run_setup(
            settings(es), kibana.url, {"dashboards", "detection-rule"}, kibana_space="soc"
        )
        in_url = run_setup(settings(es), kibana.url + "/s/soc", {"dashboards"})
        with pytest.raises(SinkError) as err:
            run_setup(settings(es), kibana.url, {"dashboards"}, kibana_space="nope")
    finally:
        kibana.stop()
    assert lines[0].endswith("space soc)") and "into space soc" in lines[1]
    assert "into space soc" in in_url[1]
    assert len(kibana.space_objects["soc"]) == 3 and not kibana.objects
    assert all(p.startswith("/s/soc/") for m, p in kibana.requests[:4] if p != "/api/status")
    assert str(err.value) == f"Kibana {kibana.url}: space 'nope' does not exist"


def test_lens_columns_carry_the_fields_real_types_and_panels_a_version():
    mapped = _flat_mapping(template_body())
    kinds = {"ip": "ip", "long": "number", "float": "number", "keyword": "string",
             "date": "date"}  # fmt: skip
    dash = next(o for o in dashboard_objects() if o["type"] == "dashboard")
    panels = json.loads(dash["attributes"]["panelsJSON"])
    assert all(p.get("version") == "8.9.0" for p in panels)
    seen = {}
    for p in panels:
        if p["type"] != "lens":
            continue
        layer = p["embeddableConfig"]["attributes"]["state"]["datasourceStates"]["formBased"]
        for col in layer["layers"]["l1"]["columns"].values():
            if col["sourceField"] != "___records___":
                assert col["dataType"] == kinds[mapped[col["sourceField"]]], col
                seen[col["sourceField"]] = col["dataType"]
    assert seen["source.ip"] == "ip" and seen["zeekndm.ports"] == "number"


def test_readme_lists_every_imported_object():
    readme = (REPO / "README.md").read_text()
    for obj in dashboard_objects():
        title = obj["attributes"]["title"]
        assert f"`{title}`" in readme or title in readme, title
        assert obj["id"] in readme, obj["id"]
