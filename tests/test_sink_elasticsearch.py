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
    stored = docs[alerts[0].id]
    assert stored["event"].pop("ingested")  # stamped by the ingest pipeline
    assert stored == alerts[0].doc
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
        (
            {"version": "7.17.0"},
            "rejected the Elasticsearch 8 client's media type (Accept "
            "version must be either version 7 or 6, but found 8): an Elasticsearch 7.x or older "
            "server?",
        ),
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


# -- request size, slow servers, stopping (issue 9: 8, 11, 12, 27) -------------------------
def test_a_413_from_a_proxy_splits_the_batch_until_it_fits(es, tmp_path):
    installed(es)
    alerts = many(40)
    one = len(orjson.dumps(alerts[0].doc)) + 120
    es.max_body_bytes = one * 7  # a proxy's body limit: at most 7 alerts per request
    sink = ElasticsearchSink(settings(es), tmp_path)
    result = sink.send(alerts)
    assert result.acked == 40 and result.complete and not result.rejected
    assert es.count(DS) == 40 and not sink.spool
    assert sink.stats["split"] > 0 and not (tmp_path / "dead-letter.ndjson").exists()


def test_an_alert_too_large_alone_is_dead_lettered_with_the_reason(es, tmp_path):
    installed(es)
    small = many(3)
    big_doc = copy.deepcopy(small[0].doc)
    big_doc["message"] = "x" * 20_000
    big = Alert("b" * 32, big_doc)
    es.max_body_bytes = 8_000
    sink = ElasticsearchSink(settings(es), tmp_path)
    result = sink.send([*small, big])
    assert result.complete and result.acked == 3
    assert [r[0] for r in result.rejected] == [big.id] and "413" in result.rejected[0][1]
    record = orjson.loads((tmp_path / "dead-letter.ndjson").read_bytes().splitlines()[0])
    assert record["id"] == big.id and "larger than the cluster, or a proxy" in record["reason"]
    assert es.count(DS) == 3


def test_a_server_dripping_its_answer_cannot_hold_a_send_past_its_deadline(es, tmp_path):
    installed(es)
    es.drip_seconds = 0.2  # one byte every 0.2 s: each read succeeds, the answer never ends
    s = settings(es, request_timeout=0.5, send_timeout=1.5, max_retries=10)
    sink = ElasticsearchSink(s, tmp_path)
    started = time.monotonic()
    result = sink.send(many(5))
    took = time.monotonic() - started
    es.drip_seconds = 0
    assert took < 3.0, took  # bounded by send_timeout, not by the server
    assert result.complete and sink.spool.count() == 5  # kept, not lost


def test_interrupt_ends_a_send_at_once_and_spools_what_is_left(es, tmp_path):
    installed(es)
    es.drip_seconds = 0.2
    sink = ElasticsearchSink(settings(es, request_timeout=30, send_timeout=60), tmp_path)
    threading.Timer(0.3, sink.interrupt).start()
    started = time.monotonic()
    result = sink.send(many(4))
    es.drip_seconds = 0
    assert time.monotonic() - started < 2.0
    assert result.complete and sink.spool.count() == 4
    assert sink.send(many(6)[4:]).complete and sink.spool.count() == 6  # no more requests


def test_a_node_that_never_accepts_is_treated_like_an_unreachable_one(tmp_path, caplog):
    server = ElasticsearchStandin().start()
    server.never_accept()
    try:
        sink = ElasticsearchSink(settings(server, request_timeout=0.5), tmp_path)
        with caplog.at_level(logging.WARNING):
            assert sink.check(allow_unreachable=True) == ""
        with pytest.raises(SinkError, match="did not answer in time"):
            sink.check()
    finally:
        server.stop()
    assert "alerts are spooled" in caplog.text


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(es, tmp_path, caplog):
    installed(es)
    sink = ElasticsearchSink(settings(es, max_retries=4), tmp_path)
    es.fail_all_bulk = 500
    with caplog.at_level(logging.INFO, logger="zeekndm"):
        for i in range(5):
            sink._retry_after = 0.0
            sink.send(many(5 * (i + 1))[5 * i :])
        es.fail_all_bulk = None
        sink._retry_after = 0.0
        sink.flush()
    lines = [r.getMessage() for r in caplog.records if r.name == "zeekndm.sinks.elasticsearch"]
    started = [m for m in lines if "is not accepting alerts" in m]
    ended = [m for m in lines if "accepting alerts again" in m]
    assert len(started) == 1 and "HTTP 500" in started[0]
    assert len(ended) == 1 and "failed attempts" in ended[0]
    assert es.count(DS) == 25 and not sink.spool


# -- rollover (issue 10 point 5) ------------------------------------------------------------
def test_replaying_again_after_a_rollover_stores_no_second_copy(es, tmp_path):
    installed(es)
    alerts = many(30)
    first = ElasticsearchSink(settings(es), tmp_path)
    first.check()
    assert first.send(alerts[:20]).acked == 20
    first.close()
    es.rollover(DS)  # what ILM's rollover does at 30 days
    again = ElasticsearchSink(settings(es), tmp_path)  # the next replay
    again.check()  # learns the older backing index from GET _data_stream
    assert again.send(alerts).acked == 30  # 20 already stored, 10 new
    assert es.count(DS) == 30 and len(es.docs(es.write_index(DS))) == 10
    assert again.stats["duplicates"] == 20


def test_a_spool_drained_across_a_rollover_stores_no_second_copy(es, tmp_path):
    installed(es)
    alerts = many(30)
    sink = ElasticsearchSink(settings(es, max_retries=0), tmp_path)
    sink.check()
    assert sink.send(alerts[:20]).acked == 20
    es.fail_all_bulk = 503
    assert sink.send(alerts[10:]).complete and sink.spool.count() == 20  # 10 of them stored
    es.rollover(DS)
    es.fail_all_bulk = None
    sink._retry_after = 0.0
    sink.flush()
    assert not sink.spool and es.count(DS) == 30


def test_long_after_a_rollover_the_lookup_is_one_search(es, tmp_path, monkeypatch):
    """The real-time multi-get is only needed for a minute after a rollover: by then the
    older index has refreshed and a search sees everything in it."""
    import zeekndm.sinks.datastream as es_sink  # the delivery shared with OpenSearch

    installed(es)
    alerts = many(10)
    ElasticsearchSink(settings(es), tmp_path).send(alerts)
    es.rollover(DS)
    monkeypatch.setattr(es_sink, "REALTIME_WINDOW", 0.0)  # the rollover is long past
    es.refresh_interval = 0.0  # and the older index refreshed long ago
    sink = ElasticsearchSink(settings(es), tmp_path / "b")
    sink.check()
    assert sink.send(alerts).acked == 10 and es.count(DS) == 10
    assert es.mgets == 0 and es.searches == 1


def test_a_rollover_is_noticed_within_the_inspection_interval(es, tmp_path):
    installed(es)
    alerts = many(10)
    sink = ElasticsearchSink(settings(es), tmp_path)
    sink.check()
    sink.send(alerts)
    es.rollover(DS)
    sink._inspected_at -= 31  # time passes
    assert sink.send(alerts).acked == 10 and es.count(DS) == 10


def test_without_a_rollover_no_lookup_is_made(es, tmp_path):
    installed(es)
    sink = ElasticsearchSink(settings(es), tmp_path)
    sink.check()
    sink.send(many(10))
    sink.send(many(10))
    assert es.searches == 0 and es.count(DS) == 10


def test_the_standin_like_elasticsearch_accepts_the_same_id_again_after_a_rollover(es):
    """Why the lookup exists: `create` conflicts only within the write index."""
    installed(es)
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es.url)
    op = [{"create": {"_index": DS, "_id": "same"}}, {"@timestamp": "2024-01-01T00:00:00Z"}]
    assert client.bulk(operations=op)["items"][0]["create"]["status"] == 201
    assert client.bulk(operations=op)["items"][0]["create"]["status"] == 409
    es.rollover(DS)
    assert client.bulk(operations=op)["items"][0]["create"]["status"] == 201
    assert es.count(DS) == 2


def test_a_writer_without_read_still_delivers_and_says_what_the_lookup_needs(tmp_path, caplog):
    server = ElasticsearchStandin(basic_auth=("admin", "admin-pw")).start()
    writes = {"names": ["logs-zeekndm.alert-*"], "privileges": ["create_doc", "auto_configure"]}
    writer = {"cluster": ["monitor"], "indices": [writes]}
    server.add_user("writer", "w-pw", writer)
    try:
        admin = ElasticsearchSettings.from_dict(
            {"hosts": [server.url], "username": "admin", "password_env": "ZEEKNDM_T_ADMIN"}
        )
        import os

        os.environ["ZEEKNDM_T_ADMIN"] = "admin-pw"
        os.environ["ZEEKNDM_T_W"] = "w-pw"
        run_setup(admin, None, {"template"})
        s = settings(server, username="writer", password_env="ZEEKNDM_T_W")
        sink = ElasticsearchSink(s, tmp_path)
        sink.check()  # GET / works with monitor; the data stream inspection is skipped (403)
        with caplog.at_level(logging.WARNING):
            assert sink.send(many(5)).acked == 5
            server.rollover(DS)
            assert sink.send(many(8)).acked == 8
    finally:
        server.stop()
    assert "grant the writer `read`" in caplog.text
    assert "indices:data/read/search needs the index privilege read" in caplog.text


# -- templates and data streams that exist (issue 10 points 6, 7) -----------------------------
def test_a_missing_data_stream_is_retried_not_dead_lettered(tmp_path):
    server = ElasticsearchStandin(builtin_templates=False, auto_create_index=False).start()
    try:
        sink = ElasticsearchSink(settings(server, max_retries=1), tmp_path)
        result = sink.send(many(4))
        assert result.complete and sink.spool.count() == 4  # kept: not a mapping problem
        assert not (tmp_path / "dead-letter.ndjson").exists()
        installed(server)  # setup creates the template (allow_auto_create) and the stream
        sink._retry_after = 0.0
        sink.flush()
        assert server.count(DS) == 4 and not sink.spool
    finally:
        server.stop()


def test_our_template_allows_auto_creation_where_the_cluster_does_not(tmp_path):
    server = ElasticsearchStandin(auto_create_index=False).start()
    try:
        run_setup(settings(server), None, {"template"})
        del server.data_streams[DS]  # e.g. deleted by hand: it comes back on the next write
        assert ElasticsearchSink(settings(server), tmp_path).send(many(3)).acked == 3
        assert server.count(DS) == 3
    finally:
        server.stop()


@pytest.mark.parametrize("version", ["8.17.0", "9.1.0"])
def test_a_mapping_conflict_is_dead_lettered_on_8_and_on_9_logsdb(version, tmp_path):
    server = ElasticsearchStandin(version=version).start()
    try:
        installed(server)
        bad_doc = copy.deepcopy(many(1)[0].doc)
        bad_doc["source"]["ip"] = "not-an-ip"
        result = ElasticsearchSink(settings(server), tmp_path).send([Alert("f" * 32, bad_doc)])
        index = server.write_index(DS)
        assert server.index_meta[index]["settings"]["index.mode"] == "standard"
    finally:
        server.stop()
    assert [r[0] for r in result.rejected] == ["f" * 32]
    assert "source.ip" in result.rejected[0][1]


def test_the_9x_standin_like_logsdb_accepts_a_malformed_value_silently(tmp_path):
    """Why the template sets the index mode: a template that leaves it unset gets LogsDB
    on 9.x, whose ignore_malformed default drops the field and stores the document."""
    from zeekndm.setup import template_body

    server = ElasticsearchStandin(version="9.1.0").start()
    try:
        run_setup(settings(server), None, {"template"})
        body = template_body()
        del body["template"]["settings"]["index"]["mode"]
        del body["template"]["settings"]["index"]["mapping"]["ignore_malformed"]
        server.templates[DS] = body
        server.rollover(DS)
        bad_doc = copy.deepcopy(many(1)[0].doc)
        bad_doc["source"]["ip"] = "not-an-ip"
        result = ElasticsearchSink(settings(server), tmp_path).send([Alert("f" * 32, bad_doc)])
        index = server.write_index(DS)
        assert server.index_meta[index]["settings"]["index.mode"] == "logsdb"
        assert result.acked == 1 and not result.rejected
        assert server.ignored[index]["f" * 32] == ["source.ip"]
    finally:
        server.stop()


def test_run_warns_when_the_data_stream_was_created_by_another_template(es, tmp_path, caplog):
    sink = ElasticsearchSink(settings(es), tmp_path)
    sink.send(many(2))  # before setup: Elasticsearch's built-in logs template creates it
    assert es.mapping_of(es.write_index(DS))["zeekndm.sample_destinations"] == "keyword"
    with caplog.at_level(logging.WARNING):
        ElasticsearchSink(settings(es), tmp_path / "b").check()
    assert "governed by index template 'logs'" in caplog.text and "zeekndm setup" in caplog.text


def test_a_missing_template_is_reported_at_start(es, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        ElasticsearchSink(settings(es), tmp_path).check()
    assert f"index template {DS} is not installed" in caplog.text


# -- privileges and secrets (issue 10 point 2; issue 9: 15-17) --------------------------------
def test_a_403_names_the_missing_privilege(tmp_path, monkeypatch):
    server = ElasticsearchStandin().start()
    server.add_user("nomonitor", "pw", {"cluster": [], "indices": []})
    monkeypatch.setenv("ZEEKNDM_T_PW", "pw")
    try:
        s = settings(server, username="nomonitor", password_env="ZEEKNDM_T_PW")
        with pytest.raises(SinkError) as err:
            ElasticsearchSink(s, tmp_path).check()
    finally:
        server.stop()
    assert str(err.value) == (
        f"Elasticsearch {server.url}: the user lacks a privilege (403): cluster:monitor/main "
        "needs the cluster privilege monitor (or manage, all) (see README, Roles)"
    )


@pytest.mark.parametrize(
    "content", ["a2V5OnNlY3JldA==\nc2Vjb25kOmtleQ==\n", "a2V5Olx0c2VjcmV0\r\x07\n"]
)
def test_a_secret_file_with_an_inner_line_break_is_refused_without_printing_it(content, tmp_path):
    key_file = tmp_path / "api_key"
    key_file.write_text(content)
    s = ElasticsearchSettings.from_dict(
        {"hosts": ["http://127.0.0.1:9"], "api_key_file": str(key_file)}
    )
    with pytest.raises(SinkError) as err:
        ElasticsearchSink(s, tmp_path)
    message = str(err.value)
    assert "line break or a control character" in message and str(key_file) in message
    assert "a2V5" not in message and "c2Vj" not in message


@pytest.mark.parametrize(
    "url", ["http://elastic:hunter2@127.0.0.1:9200", "https://user@es.example:9200"]
)
def test_credentials_in_a_url_are_refused_and_never_echoed(url):
    with pytest.raises(ConfigError) as err:
        ElasticsearchSettings.from_dict({"hosts": [url]})
    assert "password_env" in str(err.value) and "hunter2" not in str(err.value)
    assert "elastic" not in str(err.value).split(":")[0] or "hunter2" not in str(err.value)


def test_a_request_exception_quoting_the_secret_is_redacted(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("ZEEKNDM_T_KEY", "c2VjcmV0LWtleS12YWx1ZQ==")
    s = ElasticsearchSettings.from_dict({"hosts": ["http://127.0.0.1:9"], **FAST,
                                         "api_key_env": "ZEEKNDM_T_KEY"})  # fmt: skip
    sink = ElasticsearchSink(s, tmp_path)

    def broken(**_kw):
        raise ValueError("Invalid header value b'ApiKey c2VjcmV0LWtleS12YWx1ZQ=='")

    # every request of the sink goes through the client's perform_request
    monkeypatch.setattr(type(sink._client), "perform_request", lambda self, *a, **kw: broken(**kw))
    with caplog.at_level(logging.DEBUG):
        sink.send(many(1))
    assert "c2VjcmV0LWtleS12YWx1ZQ==" not in caplog.text and "[redacted]" in caplog.text


# -- serverless and Elastic Cloud (issue 10 point 1) ----------------------------------------
def test_delivery_to_a_serverless_project(tmp_path):
    server = ElasticsearchStandin(flavor="serverless").start()
    try:
        sink = ElasticsearchSink(settings(server), tmp_path)
        assert sink.check() == f"elasticsearch {server.url} OK (serverless project standin)"
        installed(server)
        assert sink.send(many(3)).acked == 3
    finally:
        server.stop()


def test_cloud_id_stands_for_the_deployment_url():
    import base64

    from zeekndm.sinks.elasticsearch import client_kwargs, cloud_kibana_url

    cloud_id = "prod:" + base64.b64encode(b"eu-west-1.aws.found.io$esuuid$kbuuid").decode()
    s = ElasticsearchSettings.from_dict({"cloud_id": cloud_id})
    assert s.endpoint == "https://esuuid.eu-west-1.aws.found.io:443"
    assert cloud_kibana_url(cloud_id) == "https://kbuuid.eu-west-1.aws.found.io:443"
    assert client_kwargs(s)["cloud_id"] == cloud_id and "hosts" not in client_kwargs(s)
    with pytest.raises(ConfigError, match="not both"):
        ElasticsearchSettings.from_dict({"cloud_id": cloud_id, "hosts": ["http://es:9200"]})
    with pytest.raises(ConfigError, match="Elastic Cloud ID"):
        ElasticsearchSettings.from_dict({"cloud_id": "nonsense"})


def test_a_certificate_problem_at_start_is_an_error_not_an_outage(es, tmp_path):
    """TLS to a node that speaks plain HTTP fails the handshake: a configuration mistake,
    which `run` must report instead of spooling forever."""
    url = es.url.replace("http://", "https://")
    s = ElasticsearchSettings.from_dict({"hosts": [url], **FAST, "verify_certs": False})
    with pytest.raises(SinkError) as err:
        ElasticsearchSink(s, tmp_path).check(allow_unreachable=True)
    assert str(err.value).startswith(f"cannot reach Elasticsearch at {url}")
