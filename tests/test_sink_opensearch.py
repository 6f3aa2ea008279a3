"""The OpenSearch output without a JVM: settings and secrets, AWS SigV4 against a stand-in
that verifies signatures, the ISM policy against a stand-in that parses it as the ISM
plugin does, and the exported assets. Delivery against the real engine is in
tests/test_engine_opensearch.py."""

from __future__ import annotations

import copy
import json
import logging
import re
from pathlib import Path

import pytest
from helpers import Run
from opensearch_standin import OpenSearchStandin, PolicyError, parse_policy

from zeekndm.cli import ExitStatus
from zeekndm.enrich import Alert
from zeekndm.errors import ConfigError, ConfigErrors, SinkError
from zeekndm.setup import alert_mappings
from zeekndm.setup_opensearch import (
    ism_policy_body,
    opensearch_dashboard_objects,
    run_opensearch_setup,
)
from zeekndm.sinks.datastream import TEMPLATE_VERSION
from zeekndm.sinks.opensearch import OpenSearchSettings, OpenSearchSink

REPO = Path(__file__).resolve().parent.parent
DS = "logs-zeekndm.alert-default"
FAST = {"backoff_initial": 0.01, "backoff_max": 0.05, "max_retries": 1, "request_timeout": 2}
# fixed test credentials, the shape of AWS's documentation examples (not a real account)
AWS = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "FQoGZXIvYXdzEXAMPLEtoken",
       "eu-west-1")  # fmt: skip
SIGNED = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/\d{8}/eu-west-1/es/aws4_request, "
    r"SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, "
    r"Signature=[0-9a-f]{64}$"
)


def doc(ip: str = "10.0.0.5") -> dict:
    return {"@timestamp": "2024-05-01T00:00:00Z", "source": {"ip": ip}}


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """The usual AWS sources, pinned: credentials from the environment, no shared files."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS[1])
    monkeypatch.setenv("AWS_SESSION_TOKEN", AWS[2])
    monkeypatch.setenv("AWS_REGION", AWS[3])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def amazon():
    """An Amazon OpenSearch Service domain: SigV4 in front of OpenSearch 2.x with ISM."""
    server = OpenSearchStandin(aws=AWS).start()
    yield server
    server.stop()


# -- settings and secrets -----------------------------------------------------------------
def test_secrets_are_refused_inline_naming_where_they_go():
    with pytest.raises(ConfigErrors) as caught:
        OpenSearchSettings.from_dict(
            {"hosts": ["http://os:9200"], "password": "x", "aws_secret_access_key": "y"}
        )
    text = str(caught.value)
    assert "output.opensearch.password: secrets are not accepted inline; use password_env" in text
    assert "output.opensearch.aws_secret_access_key: secrets are not accepted inline; use " \
        "aws_sigv4: true with credentials from the usual AWS sources" in text  # fmt: skip


def test_credentials_in_the_url_are_refused_and_never_repeated():
    run = Run(["replay", REPO / "demo" / "conn.log", "--opensearch", "http://admin:s3cret@os:9200"])
    assert run.status == ExitStatus.USAGE
    assert "s3cret" not in run.err
    assert "--opensearch: credentials in a URL are not accepted" in run.err
    assert "or aws_sigv4: true, under output.opensearch" in run.err


def test_one_authentication_method_and_aws_options_need_sigv4():
    with pytest.raises(ConfigError) as caught:
        OpenSearchSettings.from_dict({"hosts": ["https://os"], "username": "u",
                                      "password_env": "P", "aws_sigv4": True})  # fmt: skip
    assert "choose one authentication method, not username/password and AWS SigV4" in str(
        caught.value
    )
    with pytest.raises(ConfigError, match="aws_region: is only used with aws_sigv4: true"):
        OpenSearchSettings.from_dict({"hosts": ["https://os"], "aws_region": "eu-west-1"})


def test_the_password_never_reaches_a_message(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("ZEEKNDM_T_OS_PW", "hunter2-very-secret")
    server = OpenSearchStandin(basic_auth=("writer", "other-password")).start()
    try:
        s = OpenSearchSettings.from_dict({"hosts": [server.url], **FAST, "username": "writer",
                                          "password_env": "ZEEKNDM_T_OS_PW"})  # fmt: skip
        sink = OpenSearchSink(s, tmp_path)
        with pytest.raises(SinkError) as caught, caplog.at_level(logging.DEBUG):
            sink.check()
        sink.close()
    finally:
        server.stop()
    assert str(caught.value) == (
        f"OpenSearch {server.url} refused the credentials (401): check username and "
        "password_env/password_file"
    )
    assert "hunter2" not in caplog.text and "aHVudGVyMi" not in caplog.text


# -- AWS SigV4 ----------------------------------------------------------------------------
def test_sigv4_signed_requests_are_accepted_and_deliver(amazon, aws_env, tmp_path, caplog):
    settings = OpenSearchSettings.from_dict({"hosts": [amazon.url], **FAST, "aws_sigv4": True})
    sink = OpenSearchSink(settings, tmp_path)
    with caplog.at_level(logging.DEBUG):
        assert sink.check() == f"opensearch {amazon.url} OK (version 2.19.1, cluster standin)"
        result = sink.send([Alert("a" * 32, doc()), Alert("b" * 32, doc("10.0.0.6"))])
        again = sink.send([Alert("a" * 32, doc())])
    sink.close()
    assert result.acked == 2 and again.acked == 1 and amazon.count(DS) == 2
    # every request (GET /, the data stream lookups, bulk with a body) was signed, and the
    # stand-in recomputed each signature from what it received
    assert amazon.authorizations and all(SIGNED.match(a) for a in amazon.authorizations)
    assert any(p == "/_bulk" for m, p in amazon.requests)
    assert AWS[1] not in caplog.text and AWS[2] not in caplog.text


def test_a_wrong_secret_key_is_refused_in_one_line_without_the_secret(
    amazon, aws_env, monkeypatch, tmp_path
):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret-key-000000000000000")
    settings = OpenSearchSettings.from_dict({"hosts": [amazon.url], **FAST, "aws_sigv4": True})
    sink = OpenSearchSink(settings, tmp_path)
    with pytest.raises(SinkError) as caught:
        sink.check()
    sink.close()
    assert str(caught.value) == (
        f"OpenSearch {amazon.url}: the request was refused (403): The request signature "
        "we calculated does not match the signature you provided. Check your AWS Secret Access "
        "Key and signing method."
    )
    assert "not-the-right-secret" not in str(caught.value)


def test_sigv4_without_credentials_or_region_says_what_is_missing(aws_env, monkeypatch, tmp_path):
    monkeypatch.delenv("AWS_REGION")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    settings = OpenSearchSettings.from_dict({"hosts": ["https://search-x.es.amazonaws.com"],
                                             "aws_sigv4": True})  # fmt: skip
    with pytest.raises(SinkError, match="no AWS region: set output.opensearch.aws_region"):
        OpenSearchSink(settings, tmp_path)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with pytest.raises(SinkError, match="no AWS credentials found"):
        OpenSearchSink(settings, tmp_path)


# -- the product check --------------------------------------------------------------------
def test_opensearch_1x_and_3x_are_refused_in_one_line(tmp_path):
    for version in ("1.3.19", "3.1.0"):
        server = OpenSearchStandin(version=version).start()
        try:
            sink = OpenSearchSink(OpenSearchSettings.from_dict({"hosts": [server.url]}), tmp_path)
            with pytest.raises(SinkError) as caught:
                sink.check()
            sink.close()
        finally:
            server.stop()
        assert str(caught.value) == (
            f"OpenSearch {version} at {server.url} is not supported: zeekndm needs OpenSearch 2.x"
        )


# -- ISM ----------------------------------------------------------------------------------
def test_the_ism_policy_parses_as_the_ism_plugin_parses_it():
    for kw in ({}, {"namespace": "prod", "rollover_max_age": "7d", "retention": "90d"}):
        policy = parse_policy(ism_policy_body(**kw))
        assert [s["name"] for s in policy["states"]] == ["hot", "delete"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p: p.update(_meta={"managed_by": "zeekndm"}),
         "Invalid field: [_meta] found in Policy."),
        (lambda p: p["states"][0]["transitions"][0].update(state_name="warm"),
         "pointing to a nonexistent state=warm"),
        (lambda p: p["states"][0]["transitions"][0]["conditions"].update(min_index_age="1d"),
         "Cannot provide more than one Transition condition"),
        (lambda p: p["states"][0]["actions"][0]["rollover"].update(max_age="1d"),
         "Invalid field: [max_age] found in RolloverAction."),
        (lambda p: p["states"][1]["transitions"].append({"state_name": "hot"}),
         "State=delete cannot contain transitions if using delete action"),
        (lambda p: p["ism_template"][0].update(index_patterns=[]),
         "Requires at least one index pattern"),
    ],
)  # fmt: skip
def test_the_ism_stand_in_refuses_what_the_plugin_refuses(mutate, message):
    """The validator can fail: each of these ILM habits or slips is refused with ISM's words."""
    body = copy.deepcopy(ism_policy_body())
    mutate(body["policy"])
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_policy(body)


def test_setup_installs_then_updates_the_ism_policy_template_and_data_stream(tmp_path):
    server = OpenSearchStandin().start()
    try:
        settings = OpenSearchSettings.from_dict({"hosts": [server.url], "retention": "90d"})
        first = run_opensearch_setup(settings)
        second = run_opensearch_setup(settings)
    finally:
        server.stop()
    assert first == [
        f"opensearch {server.url} OK (version 2.19.1, cluster standin)",
        "ism policy zeekndm-alerts: installed",
        f"index template {DS}: installed (version {TEMPLATE_VERSION})",
        f"data stream {DS}: created",
    ]
    # an existing policy is updated with its sequence number, as ISM requires
    assert second[1] == "ism policy zeekndm-alerts: updated"
    assert second[3] == f"data stream {DS}: already exists"
    stored = server.policies["zeekndm-alerts"]["policy"]
    assert stored["states"][0]["transitions"][0]["conditions"] == {"min_rollover_age": "90d"}
    assert stored["ism_template"][0]["index_patterns"] == [DS]
    assert server.data_streams[DS]["template"] == DS


def test_setup_without_the_ism_plugin_installs_the_rest_and_says_so(tmp_path):
    server = OpenSearchStandin(ism=False).start()
    try:
        lines = run_opensearch_setup(OpenSearchSettings.from_dict({"hosts": [server.url]}))
    finally:
        server.stop()
    assert lines[1].startswith("ism policy zeekndm-alerts: skipped (the Index State Management "
                               "plugin is not installed on this cluster")  # fmt: skip
    assert lines[3] == f"data stream {DS}: created"


# -- exported assets ----------------------------------------------------------------------
def test_exported_assets_equal_the_shipped_copies():
    for argv, path in (
        (["export", "template", "--opensearch"], "config/opensearch/index-template.json"),
        (["export", "ism-policy"], "config/opensearch/ism-policy.json"),
        (["export", "dashboards", "--opensearch"], "config/opensearch/dashboards.ndjson"),
    ):
        run = Run(argv)
        assert run.status == ExitStatus.OK, run.err
        assert run.out == (REPO / path).read_text(), path
    run = Run(["export", "ingest-pipeline", "--opensearch"])
    assert run.status == ExitStatus.USAGE and "ingest-pipeline is Elasticsearch's" in run.err


def test_dashboard_objects_are_osd_visualizations_over_mapped_fields():
    objects = opensearch_dashboard_objects()
    by_id = {(o["type"], o["id"]): o for o in objects}
    flat: set[str] = set()

    def walk(props: dict, prefix: str = "") -> None:
        for name, spec in props.items():
            flat.add(prefix + name)
            walk(spec.get("properties", {}), f"{prefix}{name}.")

    walk(alert_mappings()["properties"])
    for obj in objects:
        for ref in obj["references"]:  # every reference resolves within the export
            assert (ref["type"], ref["id"]) in by_id, ref
        if obj["type"] == "visualization":
            vis = json.loads(obj["attributes"]["visState"])
            # OpenSearch Dashboards' own aggregation-based types, no Kibana Lens
            assert vis["type"] in {"histogram", "horizontal_bar", "pie"}
            for agg in vis["aggs"]:
                field = agg["params"].get("field")
                assert field is None or field in flat, field
    (dashboard,) = [o for o in objects if o["type"] == "dashboard"]
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    names = {r["name"] for r in dashboard["references"]}
    assert len(panels) == 6 and {p["panelRefName"] for p in panels} == names
