"""The Elasticsearch and Kibana commands as a user runs them: setup, export, replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import Run

from zeekndm.cli import ExitStatus

REPO = Path(__file__).resolve().parent.parent
DS = "logs-zeekndm.alert-default"


def test_setup_command_installs_template_and_dashboards_and_is_idempotent(es, kibana, tmp_path):
    argv = ["setup", "--elasticsearch", es.url, "--kibana", kibana.url]
    first, second = Run(argv), Run(argv)
    assert first.status == second.status == ExitStatus.OK, first.err
    assert first.out.splitlines()[-1] == "setup: OK"
    assert DS in es.templates and "zeekndm-alerts" in es.ilm
    assert first.out.replace("created", "already exists") == second.out
    assert kibana.objects and len(kibana.objects) == len({k for k in kibana.objects})


def test_setup_without_kibana_installs_the_template_and_says_what_it_skipped(es):
    run = Run(["setup", "--elasticsearch", es.url])
    assert run.status == ExitStatus.OK
    assert "skipping the dashboards" in run.err and DS in es.templates


def test_setup_with_nothing_configured_is_one_clear_line():
    run = Run(["setup"])
    assert run.status == ExitStatus.USAGE
    assert run.err.strip().splitlines() == [
        "zeekndm: error: no Elasticsearch configured: pass --elasticsearch URL or set "
        "output.elasticsearch in the config"
    ]


def test_setup_against_an_unreachable_cluster_is_one_clear_line():
    run = Run(["setup", "--template", "--elasticsearch", "http://127.0.0.1:9"])
    assert run.status == ExitStatus.ERROR
    assert len(run.err.strip().splitlines()) == 1 and "127.0.0.1:9" in run.err


def test_export_ilm_policy_uses_the_configured_retention(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "output:\n  elasticsearch:\n    hosts: [http://localhost:9200]\n"
        "    retention: 90d\n    rollover_max_age: 7d\n"
    )
    run = Run(["export", "ilm-policy", "--config", cfg])
    assert run.status == ExitStatus.OK
    phases = json.loads(run.out)["policy"]["phases"]
    assert phases["delete"]["min_age"] == "90d"
    assert phases["hot"]["actions"]["rollover"]["max_age"] == "7d"


def test_a_bad_retention_names_the_key(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("output:\n  elasticsearch:\n    hosts: [http://x:9200]\n    retention: 1 year\n")
    run = Run(["check-config", "--config", cfg])
    assert run.status == ExitStatus.USAGE
    assert "output.elasticsearch.retention" in run.err and "duration" in run.err


@pytest.mark.parametrize("asset", ["template", "ilm-policy", "detection-rule"])
def test_export_prints_json_assets(asset):
    run = Run(["export", asset])
    assert run.status == ExitStatus.OK
    assert isinstance(json.loads(run.out), dict)


def test_export_dashboards_prints_one_saved_object_per_line():
    run = Run(["export", "dashboards"])
    objects = [json.loads(line) for line in run.out.splitlines()]
    assert {"index-pattern", "dashboard"} <= {o["type"] for o in objects}


def test_replay_to_elasticsearch_and_ndjson_twice_leaves_one_copy(es, tmp_path):
    out1, out2 = tmp_path / "a.ndjson", tmp_path / "b.ndjson"
    demo = REPO / "demo" / "conn.log"
    state = tmp_path / "state"
    for out in (out1, out2):
        run = Run(["replay", demo, "--elasticsearch", es.url, "-o", out, "--state-dir", state])
        assert run.status == ExitStatus.OK, run.err
    ids = [json.loads(line)["event"]["id"] for line in out1.read_text().splitlines()]
    assert ids and out1.read_text() == out2.read_text()
    assert sorted(es.docs(DS)) == sorted(ids)
