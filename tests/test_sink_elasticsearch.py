from __future__ import annotations

import copy
import logging
import threading
import time

import orjson
import pytest
from es_standin import ElasticsearchStandin
from helpers import scan

from zeekndm.detect import Detector
from zeekndm.enrich import Alert, Observer, enrich
from zeekndm.errors import ConfigError, ConfigErrors, SinkError
from zeekndm.models import load_builtin_models
from zeekndm.setup import run_setup
from zeekndm.sinks.base import AlertSink
from zeekndm.sinks.elasticsearch import ElasticsearchSettings, ElasticsearchSink

DS = "logs-zeekndm.alert-default"
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "max_retries": 3, "request_timeout": 2}


def settings(server, **kw) -> ElasticsearchSettings:
    return ElasticsearchSettings.from_dict({"hosts": [server.url], **FAST, **kw})


def real_alerts() -> list[Alert]:
    det = Detector(load_builtin_models().values())
    flows = scan("10.0.0.5", 27017, 40) + scan("10.0.0.6", 389, 40)
    detections = [d for f in flows for d in det.observe(f)] + det.finish()
    return [enrich(d, Observer("sensor-1", "zeek")) for d in detections]


def many(n: int) -> list[Alert]:
    """n distinct alerts shaped like real ones (ids are 32 hex digits, as enrich makes)."""
    base = real_alerts()[0]
    out = []
    for i in range(n):
        doc = copy.deepcopy(base.doc)
        doc["source"]["ip"] = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
        doc["event"]["id"] = f"{i:032x}"
        out.append(Alert(f"{i:032x}", doc))
    return out


def installed(server) -> ElasticsearchStandin:
    run_setup(settings(server), None, {"template"})
    return server


def wait_for(predicate, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not reached in time"
        time.sleep(0.02)


# -- delivery -----------------------------------------------------------------------------
def test_alerts_land_in_the_data_stream_with_their_ids(es, tmp_path):
    installed(es)
    alerts = real_alerts()
    sink = ElasticsearchSink(settings(es), tmp_path)
    assert isinstance(sink, AlertSink)
    result = sink.send(alerts)
    sink.close()
    assert result.acked == len(alerts) and result.complete and not result.rejected
    docs = es.docs(DS)
    assert set(docs) == {a.id for a in alerts}
    assert docs[alerts[0].id] == alerts[0].doc
    assert es.data_streams[DS]["indices"][0].startswith(f".ds-{DS}-")
    assert all(m == "PUT" or m == "POST" for m, p in es.requests if p.startswith("/_bulk"))


def test_sending_the_same_batch_twice_leaves_one_copy(es, tmp_path):
    installed(es)
    alerts = many(50)
    sink = ElasticsearchSink(settings(es), tmp_path)
    first, second = sink.send(alerts), sink.send(alerts)
    assert first.acked == second.acked == 50 and second.complete
    assert es.count(DS) == 50
    assert sink.stats["duplicates"] == 50


def test_batches_larger_than_batch_size_go_in_several_bulk_requests(es, tmp_path):
    installed(es)
    sink = ElasticsearchSink(settings(es, batch_size=100), tmp_path)
    assert sink.send(many(250)).acked == 250
    assert es.bulk_requests == 3 and es.count(DS) == 250


def test_injected_429s_end_with_every_alert_delivered_once(es, tmp_path):
    installed(es)
    alerts = many(40)
    es.fail_next_bulk(429, times=2)  # whole request rejected twice
    es.reject_next_items(7)  # then some items rejected one by one
    sink = ElasticsearchSink(settings(es), tmp_path)
    result = sink.send(alerts)
    assert result.acked == 40 and result.complete
    assert es.count(DS) == 40 and not sink.spool
    assert sink.stats["retried"] > 0


def test_503s_beyond_max_retries_are_spooled_then_delivered(es, tmp_path):
    installed(es)
    es.fail_next_bulk(503, times=10)
    sink = ElasticsearchSink(settings(es, max_retries=1), tmp_path)
    result = sink.send(many(5))
    assert result.acked == 5 and result.complete  # durably spooled counts as delivered
    assert sink.spool.count() == 5 and es.count(DS) == 0
    es.fail_bulk_requests.clear()
    sink._retry_after = 0.0  # skip the wait before the next drain attempt
    sink.flush()
    assert es.count(DS) == 5 and not sink.spool


def test_outage_spools_alerts_and_drains_them_in_order_exactly_once(es, tmp_path):
    installed(es)
    alerts = many(30)
    sink = ElasticsearchSink(settings(es), tmp_path)
    assert sink.send(alerts[:10]).acked == 10
    es.down()
    for i in range(10, 30, 5):  # a minute-long outage, compressed: four batches arrive
        result = sink.send(alerts[i : i + 5])
        assert result.acked == 5 and result.complete
    assert sink.spool.count() == 20
    threading.Timer(0.5, es.up).start()
    wait_for(lambda: (sink.flush(), not sink.spool)[1])
    assert sink.send(many(31)[30:]).acked == 1
    docs = es.docs(DS)
    assert list(docs) == [a.id for a in many(31)]  # oldest first, nothing twice
    assert es.count(DS) == 31


def test_restart_during_an_outage_loses_nothing(es, tmp_path):
    installed(es)
    alerts = many(12)
    es.down()
    first = ElasticsearchSink(settings(es), tmp_path)
    assert first.send(alerts[:6]).complete and first.send(alerts[6:]).complete
    first.close()  # process stops while the cluster is still down
    es.up()
    second = ElasticsearchSink(settings(es), tmp_path)
    assert second.spool.count() == 12
    second.flush()
    assert es.count(DS) == 12 and set(es.docs(DS)) == {a.id for a in alerts}
    assert not second.spool and not list(second.spool.directory.iterdir())


def test_a_crash_in_the_middle_of_a_drain_does_not_duplicate(es, tmp_path):
    installed(es)
    alerts = many(8)
    sink = ElasticsearchSink(settings(es), tmp_path)
    sink.spool.append(alerts)
    sink.send(alerts[:4])  # drains the spool first, then the batch answers 409s
    assert es.count(DS) == 8 and sink.stats["duplicates"] == 4


def test_full_spool_leaves_the_batch_for_retry(es, tmp_path, caplog):
    es.down()
    sink = ElasticsearchSink(settings(es, spool_max_bytes=2000, max_retries=0), tmp_path)
    with caplog.at_level(logging.WARNING):
        result = sink.send(many(10))
    assert not result.complete and len(result.retry) == 10 and result.acked == 0
    assert "spool" in caplog.text and "full" in caplog.text
    assert sink.spool.count() == 0


def test_a_torn_spool_line_is_skipped_and_the_rest_delivered(es, tmp_path, caplog):
    installed(es)
    sink = ElasticsearchSink(settings(es), tmp_path)
    sink.spool.append(many(3))
    with open(sink.spool.segments()[0], "ab") as fh:
        fh.write(b'{"id": "torn", "doc": {"@time')
    with caplog.at_level(logging.WARNING):
        sink.flush()
    assert es.count(DS) == 3 and "torn spool line" in caplog.text


def test_a_mapping_error_goes_to_the_dead_letter_file_once(es, tmp_path):
    installed(es)
    good = many(3)
    bad_doc = copy.deepcopy(good[0].doc)
    bad_doc["source"]["ip"] = "not-an-ip"
    bad = Alert("f" * 32, bad_doc)
    sink = ElasticsearchSink(settings(es), tmp_path)
    result = sink.send([*good, bad])
    assert result.acked == 3 and result.complete
    assert [r[0] for r in result.rejected] == [bad.id]
    assert "document_parsing_exception" in result.rejected[0][1]
    assert es.bulk_requests == 1  # a permanent error is not retried
    lines = (tmp_path / "dead-letter.ndjson").read_bytes().splitlines()
    record = orjson.loads(lines[0])
    assert len(lines) == 1 and record["id"] == bad.id and record["doc"] == bad_doc
    assert record["status"] == 400 and "source.ip" in record["reason"]


def test_index_op_on_a_data_stream_is_refused_by_the_standin_as_by_elasticsearch(es):
    installed(es)
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es.url)
    resp = client.bulk(operations=[{"index": {"_index": DS}}, {"@timestamp": "2024-01-01"}])
    assert resp["errors"] and resp["items"][0]["index"]["status"] == 400
    assert "op_type of create" in resp["items"][0]["index"]["error"]["reason"]


# -- check --------------------------------------------------------------------------------
def test_check_reports_version_and_cluster(es, tmp_path):
    line = ElasticsearchSink(settings(es), tmp_path).check()
    assert line == f"elasticsearch {es.url} OK (version 8.15.0, cluster standin)"


def test_elasticsearch_9_is_accepted(tmp_path):
    server = ElasticsearchStandin(version="9.1.0").start()
    try:
        assert "version 9.1.0" in ElasticsearchSink(settings(server), tmp_path).check()
        installed(server)
        assert ElasticsearchSink(settings(server), tmp_path).send(many(2)).acked == 2
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("standin", "expected"),
    [
        ({"version": "7.17.0"}, "does not accept Elasticsearch 8 requests"),
        ({"flavor": "opensearch"}, "is not Elasticsearch (OpenSearch?)"),
    ],
)
def test_unsupported_servers_are_refused_in_one_line(standin, expected, tmp_path):
    server = ElasticsearchStandin(**standin).start()
    try:
        with pytest.raises(SinkError) as err:
            ElasticsearchSink(settings(server), tmp_path).check()
    finally:
        server.stop()
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_bad_credentials_are_one_clear_line(tmp_path, monkeypatch):
    server = ElasticsearchStandin(basic_auth=("elastic", "s3cret")).start()
    monkeypatch.setenv("ZEEKNDM_TEST_PW", "wrong-password")
    try:
        s = settings(server, username="elastic", password_env="ZEEKNDM_TEST_PW")
        with pytest.raises(SinkError) as err:
            ElasticsearchSink(s, tmp_path).check()
        monkeypatch.setenv("ZEEKNDM_TEST_PW", "s3cret")
        assert "OK" in ElasticsearchSink(s, tmp_path).check()
    finally:
        server.stop()
    assert "refused the credentials (401)" in str(err.value)
    assert "wrong-password" not in str(err.value)


def test_api_key_from_a_file_authenticates_and_is_never_logged(tmp_path, caplog):
    server = ElasticsearchStandin(api_key="a2V5OnNlY3JldA==").start()
    key_file = tmp_path / "api_key"
    key_file.write_text("a2V5OnNlY3JldA==\n")
    try:
        s = settings(server, api_key_file=str(key_file))
        with caplog.at_level(logging.DEBUG):
            sink = ElasticsearchSink(s, tmp_path)
            assert "OK" in sink.check()
            sink.send(many(2))
            server.down()
            sink.send(many(4)[2:])
            sink.close()
    finally:
        server.stop()
    assert "a2V5OnNlY3JldA==" not in caplog.text
    assert "a2V5OnNlY3JldA==" not in repr(s)


def test_unreachable_cluster_at_check_time_is_one_line(tmp_path):
    server = ElasticsearchStandin().start()
    server.stop()
    with pytest.raises(SinkError) as err:
        ElasticsearchSink(settings(server), tmp_path).check()
    assert str(err.value).startswith(f"cannot reach Elasticsearch at {server.url}")


def test_missing_secret_environment_variable_names_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("ZEEKNDM_NOPE", raising=False)
    s = ElasticsearchSettings.from_dict(
        {"hosts": ["http://127.0.0.1:9"], "api_key_env": "ZEEKNDM_NOPE"}
    )
    with pytest.raises(SinkError) as err:
        ElasticsearchSink(s, tmp_path)
    assert "ZEEKNDM_NOPE is not set" in str(err.value)
    assert err.value.key == "output.elasticsearch.api_key_env"


# -- settings -----------------------------------------------------------------------------
def test_settings_defaults():
    s = ElasticsearchSettings.from_dict({"hosts": "https://es:9200"})
    assert s.hosts == ["https://es:9200"] and s.namespace == "default"
    assert s.data_stream == DS and s.batch_size == 500 and s.verify_certs
    assert s.spool_max_bytes == 256 * 1024 * 1024 and s.max_retries == 5


@pytest.mark.parametrize(
    ("data", "key", "text"),
    [
        ({"hosts": ["es:9200"]}, "output.elasticsearch.hosts[0]", "http(s)://"),
        ({"hosts": ["http://es"], "bulk_size": 5}, "output.elasticsearch.bulk_size", "unknown"),
        ({"hosts": ["http://es"], "batch_size": "5"}, "output.elasticsearch.batch_size", "integer"),
        ({"hosts": ["http://es"], "batch_size": 0}, "output.elasticsearch.batch_size", ">= 1"),
        ({"hosts": ["http://es"], "verify_certs": "no"}, "output.elasticsearch.verify_certs",
         "true or false"),
        ({"hosts": ["http://es"], "namespace": "prod-eu"}, "output.elasticsearch.namespace",
         "namespace"),
        ({"hosts": ["http://es"], "password": "x", "username": "u"},
         "output.elasticsearch.password", "password_env or password_file"),
        ({"hosts": ["http://es"], "api_key": "x"}, "output.elasticsearch.api_key", "api_key_env"),
        ({}, "output.elasticsearch.hosts", "required"),
    ],
)  # fmt: skip
def test_invalid_settings_name_the_key(data, key, text):
    with pytest.raises(ConfigError) as err:
        ElasticsearchSettings.from_dict(data)
    errors = err.value.errors if isinstance(err.value, ConfigErrors) else [err.value]
    assert any(e.key == key and text in e.message for e in errors), [str(e) for e in errors]


def test_inline_password_value_is_never_echoed():
    with pytest.raises(ConfigError) as err:
        ElasticsearchSettings.from_dict(
            {"hosts": ["http://es"], "username": "u", "password": "hunter2"}
        )
    assert "hunter2" not in str(err.value)


def test_disabling_tls_verification_warns(caplog):
    with caplog.at_level(logging.WARNING):
        ElasticsearchSettings.from_dict({"hosts": ["https://es:9200"], "verify_certs": False})
    assert "TLS verification disabled" in caplog.text


def test_flush_logs_one_summary_line_at_info(es, tmp_path, caplog):
    installed(es)
    sink = ElasticsearchSink(settings(es), tmp_path)
    with caplog.at_level(logging.DEBUG, logger="zeekndm"):
        sink.send(many(20))
        sink.flush()
    infos = [
        r for r in caplog.records if r.levelno >= logging.INFO and r.name.startswith("zeekndm")
    ]
    assert len(infos) == 1 and "20 indexed" in infos[0].getMessage()
