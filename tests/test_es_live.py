"""The stand-in's round trips, against a real cluster (and Kibana) when one is given.

ZEEKNDM_TEST_ES_URL=https://localhost:9200 (with ZEEKNDM_TEST_ES_USER and
ZEEKNDM_TEST_ES_PASSWORD, or ZEEKNDM_TEST_ES_API_KEY, and ZEEKNDM_TEST_ES_CA or
ZEEKNDM_TEST_ES_INSECURE=1) runs these; ZEEKNDM_TEST_KIBANA_URL adds the Kibana part.
deploy/docker-compose.yml starts a matching Elasticsearch + Kibana. Skipped otherwise.

Each run uses a namespace of its own and deletes its data stream, template and ingest
pipeline afterwards (the ILM policy `zeekndm-alerts` is shared and left in place).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from helpers import Run

from zeekndm.setup import INGEST_PIPELINE, run_setup
from zeekndm.sinks.elasticsearch import ElasticsearchSettings, make_client

ES_URL = os.environ.get("ZEEKNDM_TEST_ES_URL")
KIBANA_URL = os.environ.get("ZEEKNDM_TEST_KIBANA_URL")
REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not ES_URL, reason="ZEEKNDM_TEST_ES_URL not set")


def _output_section() -> dict:
    data: dict = {"hosts": [ES_URL], "namespace": f"zeekndmtest{uuid.uuid4().hex[:8]}"}
    if os.environ.get("ZEEKNDM_TEST_ES_API_KEY"):
        data["api_key_env"] = "ZEEKNDM_TEST_ES_API_KEY"
    elif os.environ.get("ZEEKNDM_TEST_ES_USER"):
        data["username"] = os.environ["ZEEKNDM_TEST_ES_USER"]
        data["password_env"] = "ZEEKNDM_TEST_ES_PASSWORD"
    if os.environ.get("ZEEKNDM_TEST_ES_CA"):
        data["ca_file"] = os.environ["ZEEKNDM_TEST_ES_CA"]
    if os.environ.get("ZEEKNDM_TEST_ES_INSECURE") == "1":
        data["verify_certs"] = False
    return data


@pytest.fixture
def live(tmp_path):
    """(settings, config file) for a fresh namespace; cleaned up afterwards."""
    import yaml

    section = _output_section()
    settings = ElasticsearchSettings.from_dict(section)
    cfg = tmp_path / "live.yaml"
    cfg.write_text(yaml.safe_dump({"output": {"elasticsearch": section}}))  # NDJSON: stdout
    yield settings, cfg
    client = make_client(settings)
    try:
        client.indices.delete_data_stream(name=settings.data_stream, ignore_unavailable=True)
        client.indices.delete_index_template(name=settings.data_stream)
    except Exception:  # noqa: BLE001 - best-effort cleanup
        pass
    finally:
        client.close()


def _count(client, name: str) -> int:
    client.indices.refresh(index=name)
    return client.count(index=name)["count"]


def test_live_setup_replay_rollover_replay_leaves_one_copy(live, tmp_path):
    settings, cfg = live
    ds = settings.data_stream
    lines = run_setup(settings, None, {"template"})
    assert lines[-1] == f"data stream {ds}: created", lines
    demo = REPO / "demo" / "conn.log"
    first = Run(["replay", demo, "-c", cfg, "--state-dir", tmp_path / "state"])
    assert first.status == 0, first.err
    client = make_client(settings)
    try:
        assert _count(client, ds) == len(first.alerts) > 0
        client.indices.rollover(alias=ds)  # what ILM does at rollover_max_age
        second = Run(["replay", demo, "-c", cfg, "--state-dir", tmp_path / "state"])
        assert second.status == 0, second.err
        assert _count(client, ds) == len(first.alerts)  # nothing stored twice
        stream = client.indices.get_data_stream(name=ds)["data_streams"][0]
        write_index = stream["indices"][-1]["index_name"]
        assert len(stream["indices"]) == 2 and stream["template"] == ds
        mapping = client.indices.get_mapping(index=write_index)[write_index]["mappings"]
        props = mapping["properties"]
        assert props["zeekndm"]["properties"]["sample_destinations"]["type"] == "ip"
        assert props["rule"]["properties"]["description"]["type"] == "keyword"
        assert mapping["_meta"]["managed_by"] == "zeekndm"
        hit = client.search(index=ds, size=1, query={"match_all": {}})["hits"]["hits"][0]
        assert hit["_source"]["event"]["ingested"]  # stamped by the ingest pipeline
        info = client.info()
        if info["version"].get("build_flavor") != "serverless":
            settings_body = client.indices.get_settings(index=write_index)[write_index]
            assert settings_body["settings"]["index"]["mode"] == "standard"
    finally:
        try:
            client.ingest.delete_pipeline(id=INGEST_PIPELINE)
        except Exception:  # noqa: BLE001 - shared with other namespaces: best effort
            pass
        client.close()


def test_live_mapping_conflict_is_dead_lettered(live, tmp_path):
    from test_sink_elasticsearch import many

    from zeekndm.enrich import Alert
    from zeekndm.sinks.elasticsearch import ElasticsearchSink

    settings, _ = live
    run_setup(settings, None, {"template"})
    bad = dict(many(1)[0].doc)
    bad["source"] = {"ip": "not-an-ip"}
    sink = ElasticsearchSink(settings, tmp_path)
    result = sink.send([Alert("f" * 32, bad)])
    sink.close()
    assert [r[0] for r in result.rejected] == ["f" * 32]  # also on 9.x (LogsDB elsewhere)


@pytest.mark.skipif(not KIBANA_URL, reason="ZEEKNDM_TEST_KIBANA_URL not set")
def test_live_kibana_objects_and_rule_import_twice(live):
    settings, _ = live
    parts = {"dashboards", "detection-rule"}
    first = run_setup(settings, KIBANA_URL, parts)
    second = run_setup(settings, KIBANA_URL, parts)
    assert first[:3] == second[:3] and "saved objects imported" in first[1]
    assert "Security rule 'zeekndm scan alert' installed" in first[2]
