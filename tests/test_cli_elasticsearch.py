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
    assert "skipping the dashboards and the Security rule" in run.err and DS in es.templates


def test_setup_with_nothing_configured_is_one_clear_line():
    run = Run(["setup"])
    assert run.status == ExitStatus.USAGE
    assert run.err.strip().splitlines() == [
        "zeekndm: error: no Elasticsearch or OpenSearch configured: pass --elasticsearch URL "
        "or --opensearch URL, or set output.elasticsearch or output.opensearch in the config"
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


@pytest.mark.parametrize("asset", ["template", "ilm-policy", "ingest-pipeline", "detection-rule"])
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
    first, second = ([json.loads(x) for x in o.read_text().splitlines()] for o in (out1, out2))
    for alert in first + second:
        del alert["event"]["created"]  # when each replay raised it
    ids = [a["event"]["id"] for a in first]
    assert ids and first == second
    assert sorted(es.docs(DS)) == sorted(ids) and es.count(DS) == len(ids)


# -- replay's verdict, URLs, the README's own instructions ------------------------------------
def test_replay_exits_1_when_every_alert_stayed_in_the_spool(es, tmp_path):
    run_ok = Run(["setup", "--template", "--elasticsearch", es.url])
    assert run_ok.status == ExitStatus.OK
    es.fail_all_bulk = 500  # the cluster answers 500 throughout
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        f"output:\n  elasticsearch:\n    hosts: ['{es.url}']\n    max_retries: 1\n"
        "    backoff_initial: 0.01\n    backoff_max: 0.02\n"
    )
    run = Run(["replay", REPO / "demo" / "conn.log", "-c", cfg, "--state-dir", tmp_path / "s"])
    assert run.status == ExitStatus.ERROR
    waiting = [ln for ln in run.err.splitlines() if "wait in its spool" in ln]
    assert len(waiting) == 1 and "HTTP 500" in waiting[0], run.err
    assert f"{len(run.alerts)} alerts were not delivered to elasticsearch" in waiting[0]
    es.fail_all_bulk = None  # the next replay delivers them (and its own, the same ids)
    again = Run(["replay", REPO / "demo" / "conn.log", "-c", cfg, "--state-dir", tmp_path / "s"])
    assert again.status == ExitStatus.OK, again.err
    assert es.count(DS) == len(run.alerts)


@pytest.mark.parametrize("command", ["replay", "setup"])
def test_a_url_with_credentials_is_refused_without_echoing_them(command, tmp_path):
    url = "http://elastic:hunter2@127.0.0.1:9200"
    argv = [command, "--elasticsearch", url]
    if command == "replay":
        argv.insert(1, str(REPO / "demo" / "conn.log"))
    run = Run(argv)
    assert run.status == ExitStatus.USAGE
    assert "hunter2" not in run.err and "password_env or password_file" in run.err


def _readme_block(after: str, lang: str) -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index(after)
    body = readme[readme.index(f"```{lang}\n", start) + len(lang) + 4 :]
    return body[: body.index("```")]


def test_following_the_readme_trial_the_dashboard_shows_the_demo_alerts(tmp_path, monkeypatch):
    """README's local trial, step by step, against the stand-ins: after it, every alert
    falls inside the time range the dashboard opens on (no time picker)."""
    import subprocess
    import sys
    import time

    from es_standin import ElasticsearchStandin
    from kibana_standin import KibanaStandin

    es = ElasticsearchStandin(basic_auth=("elastic", "trial-pw")).start()
    kibana = KibanaStandin(basic_auth=("elastic", "trial-pw"), es=es).start()
    monkeypatch.setenv("ZEEKNDM_ES_PASSWORD", "trial-pw")
    monkeypatch.chdir(tmp_path)
    try:
        script = _readme_block("### From zero to alerts on the dashboard", "sh")
        yaml_text = script.split("<<'YAML'\n", 1)[1].split("YAML\n", 1)[0]
        (tmp_path / "trial.yaml").write_text(yaml_text.replace("http://localhost:9200", es.url))
        steps = [ln.split("#")[0].strip() for ln in script.splitlines()]
        steps = [s for s in steps if s.startswith(("zeekndm ", "python -m zeekndm"))]
        assert [s.split()[1] for s in steps] == ["setup", "-m", "replay"]
        for step in steps:
            argv = step.replace("http://localhost:5601", kibana.url).split()
            if argv[0] == "python":
                target = argv[argv.index(">") + 1]
                argv = argv[: argv.index(">")]
                with open(target, "w") as out:
                    subprocess.run([sys.executable, *argv[1:]], stdout=out, check=True)
                continue
            run = Run(argv[1:])
            assert run.status == ExitStatus.OK, (step, run.err)
        dashboard = kibana.objects[("dashboard", "zeekndm-alerts-overview")]["attributes"]
        view = kibana.objects[("index-pattern", "zeekndm-alerts")]["attributes"]
    finally:
        kibana.stop()
        es.stop()
    assert dashboard["timeRestore"] is True and dashboard["timeTo"] == "now"
    days = int(dashboard["timeFrom"].removeprefix("now-").removesuffix("d"))
    docs = es.docs(DS)
    assert docs and view["timeFieldName"] == "@timestamp"
    now = time.time()
    from datetime import datetime

    for doc in docs.values():
        ts = datetime.fromisoformat(doc["@timestamp"].replace("Z", "+00:00")).timestamp()
        assert now - days * 86400 <= ts <= now, doc["@timestamp"]
    assert len(docs) == len((tmp_path / "alerts.ndjson").read_text().splitlines())


def _role(name: str) -> dict:
    """The body under README's `POST _security/role/<name>` line."""
    readme = (REPO / "README.md").read_text()
    start = readme.index(f"POST _security/role/{name}\n")
    return json.loads(readme[start : readme.index("```", start)].split("\n", 1)[1])


def test_the_readme_roles_are_enough_for_setup_and_for_the_writer(tmp_path, monkeypatch):
    """The pasteable role definitions, as users of a least-privilege stand-in: setup as
    the setup role, two replays as the writer around a rollover, one copy of each alert."""
    from es_standin import ElasticsearchStandin

    es = ElasticsearchStandin().start()
    es.add_user("setup", "s-pw", _role("zeekndm_setup"))
    es.add_user("writer", "w-pw", _role("zeekndm_writer"))
    monkeypatch.setenv("ZEEKNDM_T_SETUP", "s-pw")
    monkeypatch.setenv("ZEEKNDM_T_WRITER", "w-pw")
    cfg = {}
    for who in ("setup", "writer"):
        cfg[who] = tmp_path / f"{who}.yaml"
        cfg[who].write_text(
            f"output:\n  elasticsearch:\n    hosts: ['{es.url}']\n    username: {who}\n"
            f"    password_env: ZEEKNDM_T_{who.upper()}\n"
        )
    demo = REPO / "demo" / "conn.log"
    try:
        run = Run(["setup", "--template", "-c", cfg["setup"]])
        assert run.status == ExitStatus.OK, run.err
        first = Run(["replay", demo, "-c", cfg["writer"], "--state-dir", tmp_path / "s"])
        es.rollover(DS)
        second = Run(["replay", demo, "-c", cfg["writer"], "--state-dir", tmp_path / "s"])
        denied = Run(["setup", "--template", "-c", cfg["writer"]])
    finally:
        es.stop()
    assert first.status == second.status == ExitStatus.OK, first.err + second.err
    assert "lacks a privilege" not in first.err + second.err
    assert "cannot look alerts up" not in second.err
    assert es.count(DS) == len(first.alerts) and len(es.data_streams[DS]["indices"]) == 2
    assert denied.status == ExitStatus.ERROR
    assert "cluster:admin/ilm/put needs the cluster privilege manage_ilm" in denied.err


def test_setup_command_installs_into_a_kibana_space_and_the_rule(es, tmp_path):
    from kibana_standin import KibanaStandin

    kibana = KibanaStandin(spaces=("default", "soc"), es=es).start()
    try:
        run = Run(["setup", "--elasticsearch", es.url, "--kibana", kibana.url,
                   "--kibana-space", "soc", "--dashboards", "--detection-rule"])  # fmt: skip
    finally:
        kibana.stop()
    assert run.status == ExitStatus.OK, run.err
    assert "into space soc" in run.out and "Security rule 'zeekndm scan alert'" in run.out
    assert len(kibana.space_objects["soc"]) == 3 and not es.templates  # only the Kibana parts


# -- run against a slow or dripping cluster (issue 9: 11, 12) ---------------------------------
def _run_config(tmp_path, url: str) -> Path:
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text(
        "output:\n  ndjson: {enabled: false}\n  elasticsearch:\n"
        f"    hosts: ['{url}']\n    max_retries: 1\n    backoff_initial: 2\n"
        "    backoff_max: 4\n    flush_interval: 0.5\n    request_timeout: 0.5\n"
        "    send_timeout: 1\n"
    )
    return cfg


def test_run_survives_a_cluster_too_slow_to_answer_and_stops_promptly_while_it_drips(tmp_path):
    """Start-up against a node that never answers (a ConnectionTimeout, not a refused
    connection) is spooled like an outage; then the node answers one byte at a time:
    reading and commits go on, and SIGTERM still ends the process within seconds."""
    import time

    from es_standin import ElasticsearchStandin
    from test_live import Zeekndm, zeek_tsv_parts

    es = ElasticsearchStandin().start()
    assert Run(["setup", "--template", "--elasticsearch", es.url]).status == ExitStatus.OK
    es.never_accept()  # overloaded: connections queue, nothing answers
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    z = Zeekndm(tmp_path, str(logs), config=_run_config(tmp_path, es.url))
    try:
        z.start()  # before the fix: exit 1 on ConnectionTimeout
        half = len(data) // 2
        (logs / "conn.log").write_text("\n".join(header + data[:half]) + "\n")
        z.wait_records(half)
        spool = tmp_path / "state" / "es-spool-default"
        deadline = time.monotonic() + 15
        while not any(spool.glob("seg-*.ndjson")):
            assert time.monotonic() < deadline, z.log.read_text()
            time.sleep(0.05)
        es.drip_seconds = 0.5  # back, but every answer comes one byte at a time
        es.up()
        with open(logs / "conn.log", "a") as fh:
            fh.write("\n".join(data[half:]) + "\n")
        z.wait_records(len(data), timeout=30)  # reading and commits went on meanwhile
        rc, took = z.stop(timeout=30)
    finally:
        z.close()
        es.stop()
    assert rc == 0 and took < 8, (rc, took)
    log = z.log.read_text()
    assert "did not answer in time" in log
    assert log.count("is not accepting alerts") == 1  # one line for the whole outage
