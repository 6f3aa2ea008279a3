"""The same round trip as the stand-in tests, against a real cluster when one is given.

ZEEKNDM_TEST_ES_URL=https://localhost:9200 (with ZEEKNDM_TEST_ES_USER and
ZEEKNDM_TEST_ES_PASSWORD, or ZEEKNDM_TEST_ES_API_KEY, and ZEEKNDM_TEST_ES_CA or
ZEEKNDM_TEST_ES_INSECURE=1) runs these; ZEEKNDM_TEST_KIBANA_URL adds the dashboard import.
deploy/docker-compose.yml starts a matching Elasticsearch + Kibana. Skipped otherwise.
"""

from __future__ import annotations

import os
import uuid

import pytest
from test_sink_elasticsearch import many

from zeekndm.setup import run_setup
from zeekndm.sinks.elasticsearch import ElasticsearchSettings, ElasticsearchSink, make_client

ES_URL = os.environ.get("ZEEKNDM_TEST_ES_URL")
KIBANA_URL = os.environ.get("ZEEKNDM_TEST_KIBANA_URL")

pytestmark = pytest.mark.skipif(not ES_URL, reason="ZEEKNDM_TEST_ES_URL not set")


@pytest.fixture
def live_settings() -> ElasticsearchSettings:
    # a namespace of its own per run, so reruns and other users' data never mix
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
    settings = ElasticsearchSettings.from_dict(data)
    yield settings
    client = make_client(settings)
    try:
        client.indices.delete_data_stream(name=settings.data_stream, ignore_unavailable=True)
        client.indices.delete_index_template(name=settings.data_stream)
    except Exception:  # noqa: BLE001 - best-effort cleanup
        pass
    finally:
        client.close()


def test_live_round_trip_is_idempotent(live_settings, tmp_path):
    lines = run_setup(live_settings, None, {"template"})
    assert lines[-1].startswith(f"data stream {live_settings.data_stream}: ")
    sink = ElasticsearchSink(live_settings, tmp_path)
    assert " OK (version " in sink.check()
    alerts = many(25)
    assert sink.send(alerts).acked == 25
    again = sink.send(alerts)
    assert again.acked == 25 and sink.stats["duplicates"] == 25
    sink.close()
    client = make_client(live_settings)
    try:
        client.indices.refresh(index=live_settings.data_stream)
        count = client.count(index=live_settings.data_stream)["count"]
        mapping = client.indices.get_mapping(index=live_settings.data_stream)
    finally:
        client.close()
    assert count == 25
    props = next(iter(mapping.body.values()))["mappings"]["properties"]
    assert props["source"]["properties"]["ip"]["type"] == "ip"
    assert props["@timestamp"]["type"] == "date"


@pytest.mark.skipif(not KIBANA_URL, reason="ZEEKNDM_TEST_KIBANA_URL not set")
def test_live_dashboards_import_twice(live_settings):
    first = run_setup(live_settings, KIBANA_URL, {"dashboards"})
    second = run_setup(live_settings, KIBANA_URL, {"dashboards"})
    assert first == second and "saved objects imported" in first[0]
