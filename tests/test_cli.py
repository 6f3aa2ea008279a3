"""The command line, run in-process with captured streams (end-to-end ones spawn a process)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from helpers import Run

from zeekndm.cli import ExitStatus
from zeekndm.models import load_builtin_models
from zeekndm.synth import Traffic, demo_traffic, write_eve, write_zeek_json, write_zeek_tsv

MONGO = "mongodb_scan_internal_external"
LDAP = "ldap_scanning_inside_to_outside"


def started(alerts):
    return sorted(
        (a["rule"]["name"], a["source"]["ip"], a["zeekndm"]["severity_name"])
        for a in alerts
        if a["zeekndm"]["alert_state"] in ("start", "escalated")
    )


def write(path, writer, traffic):
    with open(path, "w") as fh:
        writer(traffic.in_write_order(), fh)
    return path


def test_replay_demo_finds_both_seed_scans():
    run = Run(["replay", REPO / "demo" / "conn.log"])
    assert run.status == ExitStatus.OK, run.err
    # Some of the scanned hosts answer (SF), which raises each severity one step.
    assert started(run.alerts) == [
        (LDAP, "10.3.4.5", "medium"),
        (MONGO, "10.1.7.23", "high"),
        (MONGO, "10.1.7.23", "medium"),
    ]
    assert "records/s" in run.err and "alerts: " in run.err


def test_replay_summary_names_files_records_and_bad_lines(tmp_path):
    log = tmp_path / "conn.log"
    write(log, write_zeek_tsv, demo_traffic())
    with open(log, "a") as fh:
        fh.write("1700000000.0\tCbad\t10.0.0.1\tnot-a-port\n")
    run = Run(["replay", log])
    assert run.status == ExitStatus.OK
    assert f"{log}: zeek_tsv, 4,200 records (" in run.err
    assert "on unwatched ports not parsed), 1 bad line (wrong column count: 1)" in run.err
    run = Run(["replay", "--parse-all", log])
    assert f"{log}: zeek_tsv, 4,200 records, 1 bad line (wrong column count: 1)" in run.err


def test_prefilter_still_counts_malformed_lines_on_unwatched_ports(tmp_path):
    log = tmp_path / "conn.log"
    write(log, write_zeek_tsv, demo_traffic())
    lines = log.read_text().splitlines(keepends=True)
    data = [i for i, line in enumerate(lines) if not line.startswith("#")]
    victims = data[:3]
    lines[victims[0]] = lines[victims[0]].replace("\t", "\x00\t", 1)  # NUL byte
    lines[victims[1]] = lines[victims[1]].rsplit("\t", 3)[0] + "\n"  # cut short
    lines[victims[2]] = lines[victims[2]].replace("\t", "\t\u00e9", 1)  # not ASCII
    log.write_text("".join(lines))
    fast, full = Run(["replay", log]), Run(["replay", "--parse-all", log])
    # event.created is when each run raised the alert; everything else must be equal
    fast_alerts, full_alerts = fast.alerts, full.alerts
    for a in fast_alerts + full_alerts:
        del a["event"]["created"]
    assert fast_alerts == full_alerts
    counts = "4,198 records"
    bad = "2 bad lines (nul byte: 1, wrong column count: 1)"  # a non-ASCII uid is valid
    assert f"{log}: zeek_tsv, {counts}, {bad}" in full.err
    assert f"{log}: zeek_tsv, {counts} (" in fast.err and f"not parsed), {bad}" in fast.err


def test_same_traffic_in_every_format_gives_the_same_alerts(tmp_path):
    traffic = demo_traffic()
    tsv = write(tmp_path / "conn.log", write_zeek_tsv, traffic)
    js = write(tmp_path / "conn.json", write_zeek_json, traffic)
    eve = write(tmp_path / "eve.json", write_eve, traffic)
    gz = tmp_path / "conn.log.gz"
    gz.write_bytes(gzip.compress(tsv.read_bytes()))
    ids = {}
    for path in (tsv, js, eve, gz):
        run = Run(["replay", path])
        assert run.status == ExitStatus.OK, run.err
        ids[path.name] = sorted(a["event"]["id"] for a in run.alerts)
    assert ids["conn.log"] == ids["conn.json"] == ids["eve.json"] == ids["conn.log.gz"]
    assert len(ids["conn.log"]) == 5  # 3 start/escalated + 2 end


def test_eve_alerts_name_suricata_as_observer(tmp_path):
    eve = write(tmp_path / "eve.json", write_eve, demo_traffic())
    alerts = Run(["replay", eve]).alerts
    assert {a["observer"].get("product") for a in alerts} == {"suricata"}


def test_replay_writes_to_output_file(tmp_path):
    out = tmp_path / "alerts.ndjson"
    run = Run(["replay", REPO / "demo" / "conn.log", "--output", out])
    assert run.status == ExitStatus.OK and run.alerts == []
    assert len(out.read_text().splitlines()) == 5


def test_replay_twice_gives_identical_documents(tmp_path):
    first, second = (Run(["replay", REPO / "demo" / "conn.log"]).alerts for _ in range(2))
    for alert in first + second:
        del alert["event"]["created"]  # when each run raised it
    assert first == second


def test_missing_file_is_one_clear_line(tmp_path):
    run = Run(["replay", tmp_path / "nope.log"])
    assert run.status == ExitStatus.ERROR
    assert run.err == f"zeekndm: error: {tmp_path / 'nope.log'}: no such file\n"


def test_unrecognised_file_names_file_and_what_was_seen(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello world\n")
    run = Run(["replay", path])
    assert run.status == ExitStatus.ERROR
    assert str(path) in run.err and len(run.err.strip().splitlines()) == 1


def test_invalid_config_exits_2_naming_key(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("models:\n  mongodb_scan_internal_external:\n    treshold: {}\n")
    run = Run(["replay", REPO / "demo" / "conn.log", "--config", cfg])
    assert run.status == ExitStatus.USAGE
    assert f"{cfg}:3" in run.err and "treshold" in run.err
    assert run.out == ""


def test_config_threshold_override_changes_alerts(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "models:\n  ldap_scanning_inside_to_outside:\n    enabled: false\n"
        "  mongodb_scan_internal_external:\n    threshold:\n"
        "      distinct_destinations: {low: 150, medium: 300, high: 1000}\n"
        "      early: false\n"  # the sequential path decides on its own otherwise
    )
    run = Run(["replay", REPO / "demo" / "conn.log", "--config", cfg])
    assert run.status == ExitStatus.OK and run.alerts == []


def test_override_that_breaks_severity_order_names_file_line_and_key(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "models:\n  mongodb_scan_internal_external:\n    threshold:\n"
        "      distinct_destinations: {low: 150}\n"
    )
    run = Run(["replay", REPO / "demo" / "conn.log", "--config", cfg])
    assert run.status == ExitStatus.USAGE and run.alerts == []
    key = "models.mongodb_scan_internal_external.threshold.distinct_destinations"
    assert f"{cfg}:4 ({key})" in run.err
    assert "must increase strictly" in run.err


def test_check_config_prints_effective_models():
    run = Run(["check-config", "--config", REPO / "config" / "zeekndm.yaml"])
    assert run.status == ExitStatus.OK
    assert f"model {MONGO} (enabled): ports 27017/tcp; outbound" in run.out
    assert "model portscan_internal_external (disabled): ports 1-65535/tcp" in run.out
    enabled = sum(m.enabled for m in load_builtin_models().values())
    assert run.out.strip().endswith(f"OK: {enabled} of {len(load_builtin_models())} models enabled")


def test_check_config_lists_every_error(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text("trust_local_fields: maybe\nbogus: 1\n")
    run = Run(["check-config", "--config", cfg])
    assert run.status == ExitStatus.USAGE
    assert run.err.startswith("zeekndm: 2 errors:")


def test_models_lists_mitre_mapping():
    run = Run(["models"])
    assert "T1046 Network Service Discovery (Discovery, TA0007)" in run.out
    assert "T1595 Active Scanning (Reconnaissance, TA0043)" in run.out
    data = json.loads(Run(["models", "--json"]).out)
    assert {m["name"] for m in data} == set(load_builtin_models())


def test_schema_prints_committed_schema():
    run = Run(["schema"])
    assert json.loads(run.out) == json.loads((REPO / "config" / "model.schema.json").read_text())


def test_files_processed_in_order_given(tmp_path):
    t = Traffic(seed=3)
    t.scan("10.0.0.5", 27017, targets=30, start_offset=0, duration=30)
    conns = t.in_write_order()
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    with open(a, "w") as fh:
        write_zeek_tsv(conns[:15], fh)
    with open(b, "w") as fh:
        write_zeek_tsv(conns[15:], fh)
    # one of the synthetic scan's states is SF: an answer raises low to medium
    assert started(Run(["replay", a, b]).alerts) == [(MONGO, "10.0.0.5", "medium")]


def test_module_entry_point_end_to_end():
    proc = subprocess.run(
        [sys.executable, "-m", "zeekndm", "replay", str(REPO / "demo" / "conn.log")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5


@pytest.mark.parametrize("argv", [["replay"], ["nonsense"], []])
def test_usage_errors_exit_2(argv):
    run = Run(argv)
    assert run.status == ExitStatus.USAGE


def test_output_to_dev_null_is_fine_for_timing_runs():
    run = Run(["replay", REPO / "demo" / "conn.log", "--output", "/dev/null"])
    assert run.status == ExitStatus.OK, run.err
    assert "alerts: 5" in run.err


def test_replay_without_clusters_imports_no_cluster_sink():
    """Start-up: a replay writing NDJSON only never imports the Elasticsearch/OpenSearch
    sinks (nor what they import); test_cli_elasticsearch covers naming a cluster."""
    code = (
        "import sys\n"
        "from zeekndm.cli import main\n"
        "status = main(['replay', sys.argv[1], '--output', '/dev/null'])\n"
        "loaded = [m for m in sys.modules if m.startswith('zeekndm.sinks.')]\n"
        "print(status, sorted(loaded))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "demo" / "conn.log")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    status, _, loaded = proc.stdout.strip().partition(" ")
    assert status == "0"
    for cluster in ("elasticsearch", "opensearch", "datastream"):
        assert cluster not in loaded
    assert "zeekndm.sinks.ndjson" in loaded


def test_replay_the_compiled_core_parses_never_builds_the_port_table():
    """Start-up: the 65,536-entry port table of the Python parsers is built on first use
    only, so a replay whose lines the compiled core parses never pays for it; the Python
    core builds it for its first line, and `PORTS` still reads as the whole table."""
    code = (
        "import sys\n"
        "from zeekndm.cli import main\n"
        "status = main(['replay', sys.argv[1], '--output', '/dev/null'])\n"
        "from zeekndm.readers import base\n"
        "print(status, base._PORT_TABLE is not None)\n"
    )
    built = {}
    for name in ("native", "python"):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(REPO / "demo" / "conn.log")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env={**os.environ, "ZEEKNDM_CORE": name},
        )
        assert proc.returncode == 0, proc.stderr
        built[name] = proc.stdout.split()
    from zeekndm.readers import base

    assert built == {"native": ["0", "False"], "python": ["0", "True"]}
    assert base.PORTS == {str(i): i for i in range(65536)}
    assert base.check_port("443", "dest_port") == 443


def test_replay_without_a_config_file_imports_no_yaml_parser_once_cached():
    """Start-up: the shipped models' and notice mappings' parse is cached
    (`packagefiles.cached_parse`), so a replay with no config file of its own does not
    import PyYAML at all from its second run on (the first may write the cache; not
    under PYTHONDONTWRITEBYTECODE, which the child is run without)."""
    from zeekndm.packagefiles import package_files

    if not os.access(package_files() / "builtin_models", os.W_OK):
        pytest.skip("the installed package's folder is read-only: no cache")
    code = (
        "import sys\n"
        "from zeekndm.cli import main\n"
        "status = main(['replay', sys.argv[1], '--output', '/dev/null'])\n"
        "print(status, 'yaml' in sys.modules)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(REPO / "demo" / "conn.log")],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert "alerts: 5" in proc.stderr
        runs.append(proc.stdout.split())
    assert runs[1] == ["0", "False"]
