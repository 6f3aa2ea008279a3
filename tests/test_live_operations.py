"""Operating `zeekndm run` like a sensor service (issue 12): metrics, status, the alert file
under logrotate, the state directory, check-config, and the log lines an operator reads."""

# ruff: noqa: F811 - the `zeekndm_proc` fixture comes from test_live

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from test_live import Zeekndm, replay_ids, zeek_tsv_parts, zeekndm_proc  # noqa: F401

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="live mode tests need Linux")
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zeekndm(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "zeekndm", *args], capture_output=True, text=True, timeout=60, **kw
    )


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_metrics_endpoint_serves_what_run_did(tmp_path, zeekndm_proc):
    pytest.importorskip("prometheus_client")
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text(f"metrics:\n  listen: 127.0.0.1:{port}\n")
    z = zeekndm_proc(tmp_path, str(logs), config=cfg)
    z.start()
    log = logs / "conn.log"
    log.write_text("\n".join(header + data + ["bad\tline"]) + "\n")
    z.wait_records(len(data))
    deadline = time.monotonic() + 10
    while True:
        got = scrape(port)
        if got.get(f'zeekndm_records_total{{input="{log}"}}') == len(data):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.2)
    assert got[f'zeekndm_file_lag_bytes{{file="{log}"}}'] == 0
    assert got[f'zeekndm_bad_lines_total{{input="{log}",reason="wrong column count"}}'] == 1
    assert got['zeekndm_alerts_total{model="mongodb_scan_internal_external",state="start"}'] >= 1
    assert got["zeekndm_tracked_sources"] >= 1
    assert got["zeekndm_late_records_total"] == 0
    assert got["zeekndm_spool_alerts"] == 0 and got["zeekndm_spool_bytes"] == 0
    assert got[f'zeekndm_records_per_second{{input="{log}"}}'] >= 0
    assert got[f'zeekndm_file_lag_seconds{{file="{log}"}}'] >= 0
    # every output has its delivery series from the start, at 0
    assert got['zeekndm_delivery_retries_total{output="ndjson"}'] == 0
    assert got['zeekndm_dead_letters_total{output="ndjson"}'] == 0
    assert abs(got["zeekndm_last_commit_timestamp_seconds"] - time.time()) < 30
    assert z.stop()[0] == 0


def test_status_reads_a_running_and_a_stopped_instance(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "conn.log").write_text("\n".join(header + data) + "\n")
    z = zeekndm_proc(tmp_path, str(logs))
    z.start()
    z.wait_records(len(data))
    running = zeekndm("status", "--state-dir", str(z.state))
    assert running.returncode == 0, running.stderr
    assert f"running (pid {z.proc.pid})" in running.stdout
    assert f"records={len(data)} bad_lines=0" in running.stdout
    assert f"file {logs / 'conn.log'}: line {len(header) + len(data)}" in running.stdout
    assert "0B behind" in running.stdout
    assert z.stop()[0] == 0
    stopped = zeekndm("status", "--state-dir", str(z.state), "--json")
    doc = json.loads(stopped.stdout)
    assert doc["running_pid"] is None and doc["records"] == len(data)
    assert doc["alerts"] == json.loads((z.state / "registry.json").read_text())["totals"]["alerts"]
    assert zeekndm("status", "--state-dir", str(tmp_path / "none")).returncode == 1


def test_alert_file_rotated_under_sighup_loses_and_duplicates_no_alert(tmp_path, zeekndm_proc):
    """logrotate's way: rename the file, then SIGHUP (postrotate); alerts keep coming."""
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "conn.log"
    z = zeekndm_proc(tmp_path, str(logs))
    z.start()
    half = len(data) // 2
    log.write_text("\n".join(header + data[:half]) + "\n")
    z.wait_records(half)
    rotated = z.out.with_name(z.out.name + ".1")
    os.rename(z.out, rotated)
    z.proc.send_signal(signal.SIGHUP)
    z.wait_log("reopened")
    with open(log, "a") as fh:
        fh.write("\n".join(data[half:]) + "\n")
    z.wait_records(len(data))
    assert z.stop()[0] == 0
    old = [json.loads(x)["event"]["id"] for x in rotated.read_text().splitlines()]
    new = [json.loads(x)["event"]["id"] for x in z.out.read_text().splitlines()]
    assert old and new, "alerts on both sides of the rotation"
    got = old + new
    assert len(got) == len(set(got)), "an alert written twice across the rotation"
    assert sorted(got) == sorted(replay_ids(tmp_path, header + data, "all.log"))


def test_logrotate_snippet_rotates_the_unit_alert_file_and_signals_it():
    snippet = (REPO / "deploy" / "zeekndm.logrotate").read_text()
    unit = (REPO / "deploy" / "zeekndm.service").read_text()
    path = snippet.split("{", 1)[0].strip()
    assert path.startswith("/var/log/zeekndm/") and "LogsDirectory=zeekndm" in unit
    body = "\n".join(
        ln.split("#", 1)[0] for ln in snippet.split("{", 1)[1].splitlines()
    )  # the directives, without comments
    assert "copytruncate" not in body  # rename + reopen: no alert lost in a copy window
    assert "postrotate" in body and "systemctl kill -s HUP --kill-whom=main zeekndm" in body
    assert "create 0640 zeekndm zeekndm" in body


@pytest.mark.parametrize("mode", [0o777, 0o1777], ids=["open", "sticky like /tmp"])
def test_run_refuses_a_world_writable_state_directory(tmp_path, mode):
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, mode)
    r = zeekndm("run", "--input", str(tmp_path), "--state-dir", str(state))
    assert r.returncode == 1
    assert f"{state}: the state directory is writable by every user" in r.stderr


def test_default_state_directory_is_one_and_agreed(tmp_path):
    from zeekndm.config import load_config
    from zeekndm.outputs import state_dir_for
    from zeekndm.statedir import DEFAULT_STATE_DIR

    assert str(state_dir_for(load_config(None))) == DEFAULT_STATE_DIR == "/var/lib/zeekndm"
    assert load_config(REPO / "config" / "zeekndm.yaml").state_dir == DEFAULT_STATE_DIR
    assert f"--state-dir {DEFAULT_STATE_DIR}" in (REPO / "deploy" / "zeekndm.service").read_text()
    assert DEFAULT_STATE_DIR in (REPO / "README.md").read_text()


def test_check_config_prints_the_effective_configuration_and_warns_for_run(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(f"state_dir: {tmp_path / 'state'}\noutput:\n  ndjson: {{path: /tmp/a.ndjson}}\n")
    r = zeekndm("check-config", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert f"state_dir: {tmp_path / 'state'}\n" in r.stdout
    assert "output ndjson: /tmp/a.ndjson\n" in r.stdout
    assert "input: none\n" in r.stdout and "metrics: none\n" in r.stdout
    assert "warning: no inputs configured: `zeekndm run` would stop at once" in r.stderr
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\ninputs:\n  - {{type: zeek_dir, path: {tmp_path}}}\n"
    )
    r = zeekndm("check-config", "--config", str(cfg))
    assert f"input: {tmp_path} (conn.log, notice.log)" in r.stdout
    assert "warning" not in r.stderr


def test_operator_log_shows_config_files_and_every_alert(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    z = zeekndm_proc(tmp_path, str(logs))
    z.start()
    log = logs / "conn.log"
    log.write_text("\n".join(header + data[:2000]) + "\n")
    z.wait_records(2000)
    os.rename(log, logs / "conn.01.log")
    log.write_text("\n".join(header + data[2000:]) + "\n")
    z.wait_records(len(data))
    assert z.stop()[0] == 0
    text = z.log.read_text()
    assert f"zeekndm run: following {logs} (conn.log, notice.log); state in {z.state}" in text
    assert f"outputs: ndjson ({z.out})" in text
    assert "model mongodb_scan_internal_external: ports 27017/tcp; low 25, medium 100" in text
    assert f"reading {log} (zeek_tsv)" in text
    assert f"{log} was rotated away (now {logs / 'conn.01.log'})" in text
    assert f"finished {logs / 'conn.01.log'} at line {len(header) + 2000}" in text
    alerts = z.alerts()
    assert text.count("INFO zeekndm.pipeline: alert: ") == len(alerts)
    first = alerts[0]
    assert (
        f"alert: {first['rule']['name']} {first['zeekndm']['alert_state']} from "
        f"{first['source']['ip']}, severity" in text
    )


def test_debug_log_shows_what_each_wake_up_read(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    sock = tmp_path / "eve.sock"
    z = zeekndm_proc(tmp_path, str(logs), f"unix_dgram:{sock}")
    z.args[z.args.index("--log-level") + 1] = "debug"
    z.start()
    log = logs / "conn.log"
    parts = [header + data[:100], data[100:250], data[250:300]]
    for i, part in enumerate(parts, 1):
        with open(log, "a") as fh:
            fh.write("\n".join(part) + "\n")
        z.wait_records(sum(len(p) for p in parts[:i]) - len(header))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(b'{"event_type":"stats","timestamp":"2023-11-14T22:13:20Z"}\n', str(sock))
    z.wait_log(f"from {sock}")
    assert z.stop()[0] == 0
    text = z.log.read_text()
    read = re.findall(rf"DEBUG zeekndm.live: read (\d+) line\(s\) of {re.escape(str(log))}", text)
    assert len(read) >= len(parts)  # one line per wake-up that read something
    assert sum(int(n) for n in read) == sum(len(p) for p in parts)
    # where in the file each read was, and that the first was of a new file
    assert re.search(
        rf"read \d+ line\(s\) of {re.escape(str(log))}, lines 1-\d+ \(new file\)", text
    )
    socket_reads = re.findall(rf"read (\d+) line\(s\) from {re.escape(str(sock))}", text)
    assert sum(int(n) for n in socket_reads) == 3


def _zeekctl_layout(tmp_path: Path) -> tuple[Path, Path]:
    spool = tmp_path / "spool" / "zeek"
    spool.mkdir(parents=True)
    current = tmp_path / "logs" / "current"
    current.parent.mkdir()
    current.symlink_to(spool, target_is_directory=True)
    return spool, current


@pytest.mark.parametrize("archived", [True, False], ids=["archived", "gone"])
def test_file_rotated_into_zeekctl_archive_while_stopped(tmp_path, zeekndm_proc, archived):
    """zeekctl rotates while zeekndm is stopped: conn.log (with 40 records nobody read) is
    gzipped into logs/YYYY-MM-DD/. It is found there and read: nothing is lost. Without
    the archive, the log says what is lost and where it looked."""
    import gzip

    header, data = zeek_tsv_parts()
    spool, current = _zeekctl_layout(tmp_path)
    log = spool / "conn.log"
    log.write_text("\n".join(header + data[:1500]) + "\n")
    z = zeekndm_proc(tmp_path, str(current))
    z.start()
    z.wait_records(1500)
    assert z.stop()[0] == 0
    with open(log, "a") as fh:
        fh.write("\n".join(data[1500:1540]) + "\n")  # written while zeekndm is stopped
    day = tmp_path / "logs" / time.strftime("%Y-%m-%d")
    day.mkdir()
    if archived:
        with open(log, "rb") as src, gzip.open(day / "conn.10:00:00-11:00:00.log.gz", "wb") as dst:
            dst.write(src.read())
    log.unlink()
    second = [h.replace("#open\t", "#open\tsecond-") for h in header]
    log.write_text("\n".join(second + data[1540:]) + "\n")
    z.start()
    z.wait_records(len(data) - (0 if archived else 40))
    assert z.stop()[0] == 0
    text = z.log.read_text()
    if archived:
        assert z.records() == len(data)
        assert f"{log} was archived while zeekndm was stopped; reading its 40 lines (" in text
        got = sorted(a["event"]["id"] for a in z.alerts())
        want = replay_ids(tmp_path, header + data[:1540] + second + data[1540:], "all.log")
        assert got == sorted(want)
    else:
        assert z.records() == len(data) - 40
        assert f"{log} was replaced while zeekndm was stopped and the old file is gone" in text
        assert f"nor in {day}" in text and "its lines after line" in text
        # all was read at the commit: the loss is what was written after it, size unknown
        assert (
            f"whatever was written to it after the last commit (line {len(header) + 1500})" in text
        )
        assert "how much is not known" in text and "0 unread bytes" not in text


def test_sigterm_is_not_held_by_an_elasticsearch_that_drips(tmp_path, zeekndm_proc, es):
    """The cluster answers one byte at a time: SIGTERM interrupts the delivery under way,
    its alerts are spooled, the registry is committed and `run` exits at once."""
    header, data = zeek_tsv_parts()
    subprocess.run(
        [sys.executable, "-m", "zeekndm", "setup", "--elasticsearch", es.url],
        check=True,
        capture_output=True,
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text(
        "output:\n  ndjson: {enabled: false}\n  elasticsearch:\n"
        f"    hosts: ['{es.url}']\n    request_timeout: 60\n"
    )
    z = zeekndm_proc(tmp_path, str(logs), config=cfg)
    z.start()
    es.drip_seconds = 1.0
    # The whole file at once (renamed into place), so the first read has every line: the
    # delivery under way then holds the loop and a partly written file would stay unread.
    staged = tmp_path / "conn.log"
    staged.write_text("\n".join(header + data) + "\n")
    os.replace(staged, logs / "conn.log")
    z.wait_log("alert: ")  # an alert exists, so a send is under way
    time.sleep(1.0)
    rc, took = z.stop(timeout=20)
    assert took < 8, z.log.read_text()[-2000:]
    assert rc == 0, z.log.read_text()[-2000:]
    assert z.records() == len(data)  # committed: the alerts are in the spool
    outputs = next(ln for ln in z.log.read_text().splitlines() if "zeekndm.live: outputs: " in ln)
    assert f"; elasticsearch ({es.url});" in outputs  # where it sends, from the sink itself
    spooled = sum(
        len(p.read_text().splitlines()) for p in (z.state / "es-spool-default").glob("seg-*")
    )
    assert spooled >= 1
