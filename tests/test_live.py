"""`zeekndm run` as a user runs it: a process following a sensor's log directory.

The central test writes real-format Zeek lines at a steady rate into a symlinked
`logs/current`, rotates the file as Zeek does, kills zeekndm with SIGKILL at random
points and restarts it; in the end every record was counted exactly once and the alerts
are exactly those `zeekndm replay` finds in the same lines.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zeekndm.readers import make_parser
from zeekndm.synth import demo_traffic, write_eve, write_zeek_tsv

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="live mode tests need Linux")


# -- helpers --------------------------------------------------------------------------
def zeek_tsv_parts() -> tuple[list[str], list[str]]:
    """The demo traffic as Zeek writes it: (header lines without #close, data lines)."""
    buf = io.StringIO()
    write_zeek_tsv(demo_traffic().in_write_order(), buf)
    lines = buf.getvalue().splitlines()
    header = [ln for ln in lines if ln.startswith("#") and not ln.startswith("#close")]
    return header, [ln for ln in lines if not ln.startswith("#")]


def eve_lines() -> list[str]:
    buf = io.StringIO()
    write_eve(demo_traffic().in_write_order(), buf)
    return buf.getvalue().splitlines()


def records_in(lines: list[str]) -> int:
    parser = make_parser("suricata_eve")
    n = 0
    for ln in lines:
        try:
            n += parser.parse(ln.encode()) is not None
        except Exception:  # noqa: BLE001 - skipped event types raise Skip
            pass
    return n


class Zeekndm:
    """One `zeekndm run` process at a time, over the same state directory."""

    def __init__(self, tmp: Path, *inputs: str, config: Path | None = None) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.out = tmp / "alerts.ndjson"
        self.log = tmp / "zeekndm.log"
        self.args = [sys.executable, "-m", "zeekndm", "run", "--log-level", "info"]
        if config is not None:
            self.args += ["--config", str(config)]
        for i in inputs:
            self.args += ["--input", i]
        self.args += ["--output", str(self.out), "--state-dir", str(self.state)]
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        """Start it; with `wait`, return once it is following (its signal handlers are in
        place: a SIGTERM before that kills Python outright, which loses nothing either)."""
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        started = self._log_text().count("zeekndm run: following")
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(self.args, stderr=err, stdout=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 15
        while wait and self._log_text().count("zeekndm run: following") <= started:
            assert self.proc.poll() is None, self._log_text()
            assert time.monotonic() < deadline, self._log_text()
            time.sleep(0.02)

    def _log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit status, seconds it took)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"zeekndm run ignored SIGTERM for {timeout} s:\n{self._log_text()[-3000:]}")
        return rc, time.monotonic() - t0

    def registry(self) -> dict:
        try:
            return json.loads((self.state / "registry.json").read_text())
        except (OSError, ValueError):
            return {}

    def records(self) -> int:
        return self.registry().get("totals", {}).get("records", 0)

    def wait_records(self, n: int, timeout: float = 30.0, restarts: bool = False) -> None:
        """Until `n` records are committed; `restarts`: another thread kills and restarts."""
        deadline = time.monotonic() + timeout
        while self.records() < n:
            if not restarts:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, (
                f"{self.records()} of {n} records committed\n" + self.log.read_text()[-3000:]
            )
            time.sleep(0.05)

    def wait_log(self, text: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log.read_text():
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + self.log.read_text()
            time.sleep(0.05)

    def alerts(self) -> list[dict]:
        if not self.out.exists():
            return []
        return [json.loads(line) for line in self.out.read_text().splitlines()]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def zeekndm_proc():
    procs: list[Zeekndm] = []

    def make(*args, **kw) -> Zeekndm:
        p = Zeekndm(*args, **kw)
        procs.append(p)
        return p

    yield make
    for p in procs:
        p.close()


def replay_ids(tmp: Path, lines: list[str], name: str) -> list[str]:
    """Alert ids of `zeekndm replay --parse-all` over `lines`, without the END records
    that only the end of a replay's input causes."""
    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    out = tmp / f"{name}.alerts"
    subprocess.run(
        [sys.executable, "-m", "zeekndm", "replay", "--parse-all", str(path), "-o", str(out)],
        check=True,
        capture_output=True,
    )
    docs = [json.loads(line) for line in out.read_text().splitlines()]
    return [d["event"]["id"] for d in docs if d["zeekndm"].get("end_reason") != "input_end"]


class SteadyWriter(threading.Thread):
    """Appends lines at `rate` per second; `action(i)` callbacks run between lines."""

    def __init__(self, lines: list[str], rate: float, write, actions: dict) -> None:
        super().__init__(daemon=True)
        self.lines, self.period, self.write, self.actions = lines, 1.0 / rate, write, actions
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            next_at = time.monotonic()
            for i, line in enumerate(self.lines):
                if i in self.actions:
                    self.actions[i]()
                self.write(line)
                next_at += self.period
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


# -- exactly once through rotation and SIGKILL ------------------------------------------
def test_zeek_rotation_and_sigkill_restarts_process_every_record_once(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    spool = tmp_path / "spool" / "zeek"
    spool.mkdir(parents=True)
    current = tmp_path / "logs" / "current"
    current.parent.mkdir()
    current.symlink_to(spool, target_is_directory=True)  # zeekctl's layout
    log = spool / "conn.log"
    state = {"fh": None, "files": 0}

    def open_new() -> None:
        state["files"] += 1
        fh = open(log, "a", buffering=1)
        for ln in header:
            fh.write(ln.replace("#open\t", f"#open\t{state['files']}-") + "\n")
        state["fh"] = fh

    def rotate() -> None:  # Zeek: #close, rename away, a new file with a fresh header
        fh = state["fh"]
        fh.write("#close\t2023-11-14-23-00-00\n")
        fh.close()
        os.rename(log, spool / f"conn.{state['files']:02d}.log")
        open_new()

    rng = random.Random(4)
    rotations = {k: rotate for k in sorted(rng.sample(range(200, len(data)), 4))}
    open_new()
    z = zeekndm_proc(tmp_path, str(current))
    z.start()
    writer = SteadyWriter(data, 500.0, lambda ln: state["fh"].write(ln + "\n"), rotations)
    writer.start()
    kills = 0
    while writer.is_alive():
        # zeekndm commits once a second (flush_interval): kill it between and after commits
        time.sleep(rng.uniform(1.2, 2.2))
        z.kill()
        kills += 1
        time.sleep(rng.uniform(0.0, 0.3))  # lines (and rotations) while it is down
        z.start(wait=False)
    writer.join()
    assert writer.error is None
    state["fh"].close()
    z.kill()
    z.start()
    z.wait_records(len(data))
    rc, took = z.stop()
    assert rc == 0 and took < 5, z.log.read_text()[-2000:]
    assert kills >= 2

    assert z.records() == len(data)  # every record counted once, across all restarts
    got = [a["event"]["id"] for a in z.alerts()]
    assert len(got) == len(set(got)), "an alert was written twice"
    assert sorted(got) == sorted(replay_ids(tmp_path, header + data, "all.log"))
    assert len(got) >= 3


def test_eve_copytruncate_truncate_delete_and_restarts(tmp_path, zeekndm_proc):
    """Suricata's eve.json under logrotate: copytruncate (the copy matches the pattern, so
    it is read to its end), truncation, deletion and SIGKILL restarts."""
    lines = eve_lines()
    logdir = tmp_path / "suricata"
    logdir.mkdir()
    eve = logdir / "eve.json"
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text(f"inputs:\n  - type: dir\n    path: {logdir}\n    patterns: ['eve.json*']\n")
    z = zeekndm_proc(tmp_path, config=cfg)
    fh = {"f": open(eve, "a", buffering=1)}
    written: list[int] = [0]  # flow records (other event types are skipped, not records)
    is_record = {ln: records_in([ln]) == 1 for ln in lines}

    def write(line: str) -> None:
        fh["f"].write(line + "\n")
        written[0] += is_record[line]

    def drained() -> None:  # truncation and deletion destroy unread lines by nature
        z.wait_records(written[0], restarts=True)

    def copytruncate() -> None:
        shutil.copyfile(eve, logdir / "eve.json.1")
        os.truncate(eve, 0)

    def truncate() -> None:
        drained()
        os.truncate(eve, 0)

    def delete() -> None:
        drained()
        fh["f"].close()
        os.unlink(eve)
        for old in logdir.glob("eve.json.*"):
            old.unlink()
        fh["f"] = open(eve, "a", buffering=1)

    n = len(lines)
    actions = {n // 5: copytruncate, 2 * n // 5: truncate, 3 * n // 5: delete}
    z.start()
    writer = SteadyWriter(lines, 600.0, write, actions)
    writer.start()
    rng = random.Random(9)
    while writer.is_alive():
        time.sleep(rng.uniform(1.2, 2.2))
        z.kill()
        time.sleep(0.1)
        z.start(wait=False)
    writer.join()
    assert writer.error is None
    z.kill()
    z.start()
    total = records_in(lines)
    assert total == written[0] > 1000
    z.wait_records(total)
    rc, _ = z.stop()
    assert rc == 0
    assert z.records() == total
    got = [a["event"]["id"] for a in z.alerts()]
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(replay_ids(tmp_path, lines, "eve-all.json"))


# -- operating it ---------------------------------------------------------------------
def test_file_that_appears_after_start_is_read_and_sigterm_exits_quickly(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    z = zeekndm_proc(tmp_path, str(logs))
    z.start()
    z.wait_log("zeekndm run: following")
    (logs / "conn.log").write_text("\n".join(header + data) + "\n")
    z.wait_records(len(data))
    rc, took = z.stop()
    assert rc == 0
    assert took < 3.0
    text = z.log.read_text()
    assert "stopped: records=4200" in text
    assert {a["rule"]["name"] for a in z.alerts()} == {
        "mongodb_scan_internal_external",
        "ldap_scanning_inside_to_outside",
    }


def test_restart_resumes_without_reading_again(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "conn.log").write_text("\n".join(header + data[:2000]) + "\n")
    z = zeekndm_proc(tmp_path, str(logs))
    z.start()
    z.wait_records(2000)
    assert z.stop()[0] == 0
    before = len(z.alerts())
    with open(logs / "conn.log", "a") as fh:
        fh.write("\n".join(data[2000:]) + "\n")
    z.start()
    z.wait_records(len(data))
    assert z.stop()[0] == 0
    assert z.records() == len(data)
    assert "resuming: 1 file position(s)" in z.log.read_text()
    got = [a["event"]["id"] for a in z.alerts()]
    assert len(got) == len(set(got)) and len(got) > before
    assert sorted(got) == sorted(replay_ids(tmp_path, header + data, "all.log"))


def test_config_reload_valid_and_invalid(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text("models:\n  mongodb_scan_internal_external:\n    enabled: false\n")
    z = zeekndm_proc(tmp_path, str(logs), config=cfg)
    z.start()
    from zeekndm.models import load_builtin_models

    enabled = sum(m.enabled for m in load_builtin_models().values()) - 1  # mongodb is off
    z.wait_log(f" {enabled} model(s) enabled")
    cfg.write_text("models: [this is not a mapping\n")  # invalid: rejected, old config stays
    z.wait_log("config reload rejected")
    cfg.write_text("models: {}\n")
    z.proc.send_signal(signal.SIGHUP)
    z.wait_log("config reloaded")
    assert z.proc.poll() is None
    (logs / "conn.log").write_text("\n".join(header + data) + "\n")
    z.wait_records(len(data))
    assert z.stop()[0] == 0
    assert "mongodb_scan_internal_external" in {a["rule"]["name"] for a in z.alerts()}


def test_bad_lines_are_reported_with_file_and_line_and_rate_limited(tmp_path, zeekndm_proc):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    garbage = ["not\ta\tzeek\tline"] * 500
    (logs / "conn.log").write_text("\n".join(header + data[:100] + garbage + data[100:]) + "\n")
    z = zeekndm_proc(tmp_path, str(logs))
    z.start()
    z.wait_records(len(data))
    assert z.stop()[0] == 0
    text = z.log.read_text()
    first_bad = len(header) + 101
    assert f"conn.log:{first_bad}:" in text
    assert 5 <= text.count("conn.log:") - text.count("reading ") <= 20  # not 500 lines
    assert "bad_lines=500" in text


def test_no_inputs_is_one_clear_error(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "zeekndm", "run", "--state-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("zeekndm: error: no inputs to follow")


def test_second_instance_on_same_state_dir_is_refused(tmp_path, zeekndm_proc):
    logs = tmp_path / "logs"
    logs.mkdir()
    z = zeekndm_proc(tmp_path, str(logs))
    z.start()
    z.wait_log("zeekndm run: following")
    r = subprocess.run(z.args, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "another zeekndm run is using this state directory" in r.stderr
    assert z.stop()[0] == 0


def test_corrupt_registry_is_an_error_not_a_fresh_start(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.json").write_text("{not json")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "zeekndm",
            "run",
            "--input",
            str(tmp_path),
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert "registry.json: the registry is not valid JSON" in r.stderr


@pytest.mark.parametrize("kind", ["unix_dgram", "unix_stream"])
def test_suricata_socket_input_detects_like_replay(tmp_path, zeekndm_proc, kind):
    import socket
    import tempfile

    lines = eve_lines()
    sockdir = Path(tempfile.mkdtemp(dir="/tmp", prefix="zndm"))  # AF_UNIX paths are short
    try:
        path = sockdir / "eve.sock"
        z = zeekndm_proc(tmp_path, f"{kind}:{path}")
        z.start()
        if kind == "unix_dgram":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.connect(str(path))
            for ln in lines:
                s.send(ln.encode() + b"\n")
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(path))
            s.sendall("".join(ln + "\n" for ln in lines).encode())
        s.close()
        total = records_in(lines)
        z.wait_records(total)
        assert z.stop()[0] == 0
        assert not path.exists()  # the socket file is removed at exit
        got = sorted(a["event"]["id"] for a in z.alerts())
        assert got == sorted(replay_ids(tmp_path, lines, "eve.json"))
        assert {a["observer"]["vendor"] for a in z.alerts()} == {"OISF"}
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


def test_elasticsearch_outage_and_sigkill_deliver_every_alert_once(tmp_path, zeekndm_proc, es):
    """The cluster goes down mid-stream, zeekndm is SIGKILLed while it is down and restarted:
    alerts are spooled, drained once the cluster is back, and each is indexed once."""
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
        f"    hosts: ['{es.url}']\n    max_retries: 1\n    backoff_initial: 0.05\n"
        "    backoff_max: 0.1\n    flush_interval: 0.5\n    request_timeout: 2\n"
    )
    z = zeekndm_proc(tmp_path, str(logs), config=cfg)
    z.start()
    log = logs / "conn.log"
    third = len(data) // 3
    log.write_text("\n".join(header + data[:third]) + "\n")
    z.wait_records(third)
    es.down()
    with open(log, "a") as fh:
        fh.write("\n".join(data[third : 2 * third]) + "\n")
    z.wait_records(2 * third)  # committed while down: the alerts are in the spool
    z.kill()
    with open(log, "a") as fh:
        fh.write("\n".join(data[2 * third :]) + "\n")
    z.start()
    time.sleep(1.0)
    es.up()
    z.wait_records(len(data))
    deadline = time.monotonic() + 20
    want = sorted(replay_ids(tmp_path, header + data, "all.log"))
    ds = "logs-zeekndm.alert-default"
    while sorted(es.docs(ds)) != want:
        assert time.monotonic() < deadline, (sorted(es.docs(ds)), want)
        time.sleep(0.2)
    assert z.stop()[0] == 0
    assert es.count(ds) == len(want)


def test_json_logs_are_one_object_per_line(tmp_path, zeekndm_proc):
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text("logging: {format: json}\n")
    z = zeekndm_proc(tmp_path, str(logs), config=cfg)
    z.start()
    assert z.stop()[0] == 0
    docs = [json.loads(line) for line in z.log.read_text().splitlines()]
    assert {"@timestamp", "log.level", "log.logger", "message"} <= set(docs[0])
    assert any(d["message"].startswith("stopped: records=0") for d in docs)


def test_episode_ends_when_the_sensor_goes_quiet(tmp_path):
    """No more records at all: event time advances with the wall clock while idle, so the
    scan's END alert still comes once the window and the allowed lateness have passed.
    (The loop's clock runs 100x fast here, so 300 s of window pass in 3 s.)"""
    from zeekndm.config import load_config
    from zeekndm.live import LiveRunner

    t0 = time.monotonic()

    def fast_clock() -> float:
        return t0 + (time.monotonic() - t0) * 100

    header, data = zeek_tsv_parts()
    fields = next(h for h in header if h.startswith("#fields")).split("\t")[1:]
    col = {name: fields.index(name) for name in ("id.orig_h", "id.resp_h", "id.resp_p")}
    rows = [ln.split("\t") for ln in data]
    targets: dict[str, set] = {}
    for r in rows:
        if r[col["id.resp_p"]] == "27017" and r[col["id.orig_h"]].startswith("10."):
            targets.setdefault(r[col["id.orig_h"]], set()).add(r[col["id.resp_h"]])
    scanner = max(targets, key=lambda k: len(targets[k]))
    last = max(i for i, r in enumerate(rows) if r[col["id.orig_h"]] == scanner)
    data = data[: last + 1]  # the sensor goes quiet right after the scan
    logs = tmp_path / "logs"
    logs.mkdir()
    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text(
        "detector: {allowed_lateness: 1}\n"
        "models:\n  ldap_scanning_inside_to_outside: {enabled: false}\n"
    )
    out = tmp_path / "alerts.ndjson"
    runner = LiveRunner(
        load_config(cfg),
        inputs=[str(logs)],
        output=str(out),
        state_dir=str(tmp_path / "s"),
        clock=fast_clock,
    )
    (logs / "conn.log").write_text("\n".join(header + data) + "\n")
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while True:
            docs = [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []
            ends = [d for d in docs if d["event"]["action"] == "scan-end"]
            starts = [d for d in docs if d["event"]["action"] == "scan-start"]
            # the last scanner's episode can only end through the idle sweep
            if starts and len(ends) == len(starts):
                break
            assert time.monotonic() < deadline, docs
            time.sleep(0.1)
    finally:
        runner.stop_requested = True
        thread.join(10)
    assert runner.totals.records == len(data)
    assert {d["zeekndm"]["end_reason"] for d in ends} == {"quiet"}
    assert {d["source"]["ip"] for d in ends} == {d["source"]["ip"] for d in starts}
    assert not thread.is_alive()
