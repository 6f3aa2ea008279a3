"""The Elasticsearch sink and template against real, bare Elasticsearch 8.19 and 9.x nodes.

The nodes (tests/engines) run the published server and transport-netty4 jars only, so what
they answer is Elasticsearch's own: template validation, data stream auto-creation on the
first `create`, 409 for an id already in the write index, mapping errors, `_rollover` and
the `ids` query over every backing index. Maven Central has no x-pack and no ILM,
data-streams or rest-root module, so two things of `zeekndm setup` cannot run here:

- the ILM policy (`PUT _ilm/policy` answers 400 "no handler found"), so the template is
  put as setup puts it where ILM is absent (`template_body(ilm=False)`), and the data stream
  is created by the first `create` (the `_data_stream` API is the data-streams module's);
- `constant_keyword` (an x-pack mapper) for `data_stream.*`, which `bare_node_template`
  maps as `keyword` instead. Every other mapping is the server's to accept or refuse.

Each test uses a namespace of its own, so they share the session's nodes without mixing.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import orjson
import pytest
from helpers import Run

from zeekndm.cli import ExitStatus
from zeekndm.enrich import Alert
from zeekndm.setup import template_body
from zeekndm.sinks.elasticsearch import ElasticsearchSettings, ElasticsearchSink, make_client

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo" / "conn.log"
_namespaces = itertools.count()


@pytest.fixture(scope="module", params=["elasticsearch", "elasticsearch9"])
def node(request):
    """Each test runs against the 8.19 node and the 9.x node."""
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture
def namespace(node) -> str:
    return f"enginetest{next(_namespaces)}"


@pytest.fixture
def client(node):
    es = make_client(ElasticsearchSettings.from_dict({"hosts": [node.url]}))
    yield es
    es.close()


def bare_node_template(body: dict) -> dict:
    """`body` with each `constant_keyword` field mapped as `keyword` (no x-pack here), and
    without the default ingest pipeline (its processors are the ingest-common module's,
    not on Maven Central either: a template naming a missing pipeline fails every write)."""
    body = copy.deepcopy(body)
    body["template"]["settings"]["index"].pop("default_pipeline", None)

    def walk(props: dict) -> None:
        for mapping in props.values():
            if mapping.get("type") == "constant_keyword":
                mapping.clear()
                mapping["type"] = "keyword"
            walk(mapping.get("properties", {}))

    walk(body["template"]["mappings"]["properties"])
    return body


def install_template(client, namespace: str) -> dict:
    name = f"logs-zeekndm.alert-{namespace}"
    body = bare_node_template(template_body(namespace, ilm=False))
    assert client.indices.put_index_template(name=name, body=body)["acknowledged"]
    return body


def replay(node, namespace: str, tmp_path: Path, label: str) -> tuple[Run, list[str]]:
    """`zeekndm replay demo/conn.log` into the node; the alert ids it wrote to NDJSON."""
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text(
        f"output:\n  elasticsearch:\n    hosts: [{node.url}]\n    namespace: {namespace}\n"
    )
    out = tmp_path / f"{label}.ndjson"
    state = tmp_path / "state"
    run = Run(["replay", DEMO, "-c", cfg, "-o", out, "--state-dir", state, "--log-level", "info"])
    assert run.status == ExitStatus.OK, run.err
    return run, [json.loads(line)["event"]["id"] for line in out.read_text().splitlines()]


def stored_ids(client, namespace: str) -> list[str]:
    """Every document id in the data stream, one entry per copy, across backing indices."""
    index = f"logs-zeekndm.alert-{namespace}"
    client.indices.refresh(index=index)
    hits = client.search(index=index, size=10_000, source=False)["hits"]["hits"]
    return sorted(h["_id"] for h in hits)


def backing_indices(client, namespace: str) -> list[str]:
    resolved = client.indices.resolve_index(name=f"logs-zeekndm.alert-{namespace}")
    (stream,) = resolved["data_streams"]
    return stream["backing_indices"]


# -- the client meets the server ----------------------------------------------------------
def test_client_version_and_product_checks_pass(node, tmp_path):
    sink = ElasticsearchSink(ElasticsearchSettings.from_dict({"hosts": [node.url]}), tmp_path)
    try:
        verdict = sink.check()
    finally:
        sink.close()
    assert verdict == f"elasticsearch {node.url} OK (version {node.version}, cluster zeekndm-test)"


def test_server_answers_in_the_8x_clients_compatible_media_type(node, client):
    """The 8.x client asks for compatible-with=8 on every call; 8.x and 9.x both answer in
    that media type (a 7.x server would refuse it, a 10.x one may)."""
    resp = client.cluster.health()
    assert resp["status"] in ("green", "yellow")
    assert resp.meta.headers["content-type"].replace(" ", "") == (
        "application/vnd.elasticsearch+json;compatible-with=8"
    )
    assert resp.meta.headers["x-elastic-product"] == "Elasticsearch"


# -- setup's template ---------------------------------------------------------------------
def test_setup_template_is_accepted_and_applies_to_the_data_stream(node, client, namespace):
    body = install_template(client, namespace)
    name = f"logs-zeekndm.alert-{namespace}"
    (stored,) = client.indices.get_index_template(name=name)["index_templates"]
    assert stored["index_template"]["index_patterns"] == [name]
    assert stored["index_template"]["priority"] == 200
    doc = {"@timestamp": "2024-05-01T00:00:00Z", "source": {"ip": "10.0.0.5"}}
    created = client.create(index=name, id="a" * 32, document=doc)
    assert created["_index"].startswith(f".ds-{name}-")  # a data stream, auto-created
    mapping = client.indices.get_mapping(index=name)[created["_index"]]["mappings"]
    # the backing index has our mappings field for field, as the server parsed them
    assert mapping["properties"] == body["template"]["mappings"]["properties"]
    props = mapping["properties"]
    assert props["@timestamp"] == {"type": "date"}
    assert props["zeekndm"]["properties"]["sample_destinations"] == {"type": "ip"}
    assert mapping["dynamic_templates"] == body["template"]["mappings"]["dynamic_templates"]


# -- delivery -----------------------------------------------------------------------------
def test_replay_indexes_every_alert_once(node, client, namespace, tmp_path):
    install_template(client, namespace)
    run, ids = replay(node, namespace, tmp_path, "first")
    assert ids and len(set(ids)) == len(ids)
    assert f": {len(ids)} indexed, 0 already present, 0 dead-lettered" in run.err
    assert stored_ids(client, namespace) == sorted(ids)


def test_second_replay_leaves_one_copy_through_real_409s(node, client, namespace, tmp_path):
    install_template(client, namespace)
    _, first = replay(node, namespace, tmp_path, "first")
    second_run, second = replay(node, namespace, tmp_path, "second")
    assert second == first
    # every alert came back as 409 from the server, and 409 counts as delivered
    assert f": 0 indexed, {len(first)} already present, 0 dead-lettered" in second_run.err
    assert stored_ids(client, namespace) == sorted(first)
    dead = tmp_path / "state" / "dead-letter.ndjson"
    assert not dead.exists(), dead.read_text()


def test_replay_after_a_rollover_still_leaves_one_copy(node, client, namespace, tmp_path):
    install_template(client, namespace)
    _, first = replay(node, namespace, tmp_path, "first")
    replay(node, namespace, tmp_path, "second")
    rolled = client.indices.rollover(alias=f"logs-zeekndm.alert-{namespace}")
    assert rolled["rolled_over"] and len(backing_indices(client, namespace)) == 2
    _, third = replay(node, namespace, tmp_path, "third")
    assert third == first
    assert stored_ids(client, namespace) == sorted(first)


def test_ids_query_sees_every_backing_index_after_a_rollover(node, client, namespace):
    """What a cross-rollover duplicate check relies on: one `ids` query over the data
    stream finds a document whichever backing index holds it."""
    install_template(client, namespace)
    name = f"logs-zeekndm.alert-{namespace}"
    doc = {"@timestamp": "2024-05-01T00:00:00Z"}
    client.create(index=name, id="old", document=doc)
    client.indices.rollover(alias=name)
    client.create(index=name, id="new", document=doc)
    client.indices.refresh(index=name)
    hits = client.search(index=name, query={"ids": {"values": ["old", "new", "none"]}})
    found = {h["_id"]: h["_index"] for h in hits["hits"]["hits"]}
    assert set(found) == {"old", "new"}
    assert found["old"] != found["new"] and set(found.values()) == set(
        backing_indices(client, namespace)
    )


def test_document_contradicting_the_mapping_is_dead_lettered_with_the_servers_reason(
    node, client, namespace, tmp_path
):
    install_template(client, namespace)
    settings = ElasticsearchSettings.from_dict(
        {"hosts": [node.url], "namespace": namespace, "max_retries": 0}
    )
    good = {"@timestamp": "2024-05-01T00:00:00Z", "source": {"ip": "10.0.0.5"}}
    bad = {"@timestamp": "2024-05-01T00:00:00Z", "source": {"ip": "not-an-address"}}
    sink = ElasticsearchSink(settings, tmp_path)
    try:
        result = sink.send([Alert("g" * 32, good), Alert("b" * 32, bad)])
    finally:
        sink.close()
    assert result.acked == 1 and [alert_id for alert_id, _ in result.rejected] == ["b" * 32]
    (record,) = [orjson.loads(line) for line in (tmp_path / "dead-letter.ndjson").open("rb")]
    assert record["id"] == "b" * 32 and record["status"] == 400 and record["doc"] == bad
    assert record["reason"].startswith("400 document_parsing_exception: ")
    assert "failed to parse field [source.ip] of type [ip]" in record["reason"]
    assert "'not-an-address' is not an IP string literal" in record["reason"]
    assert stored_ids(client, namespace) == ["g" * 32]
