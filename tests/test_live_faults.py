"""Live mode under faults (issue 9): a record that breaks the pipeline, a crash between
commits, a restart inside a later Zeek header block, a registry that is not what it
should be, and a replay pointed at the service's state directory.

The runner runs in-process (in a thread) so a fault can be injected into one stage;
inputs are generated here.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_live import replay_ids, zeek_tsv_parts  # noqa: I001 - the tests' own helpers

import zeekndm.live.runner as live
from zeekndm.config import load_config
from zeekndm.errors import SinkError, ZeekNDMError
from zeekndm.live.registry import Registry
from zeekndm.live.streams import Streams
from zeekndm.pipeline import Pipeline

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="live mode tests need Linux")


class InProcess:
    """A `LiveRunner` in a thread over one log directory, with its state and output."""

    def __init__(self, tmp: Path, logs: Path, *more: Path) -> None:
        self.tmp, self.logs, self.more = tmp, logs, more
        self.state = tmp / "state"
        self.out = tmp / "alerts.ndjson"
        self.runner: live.LiveRunner | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.status: int | None = None

    def start(self) -> None:
        self.error = None
        self.status = None
        self.runner = live.LiveRunner(
            load_config(None),
            inputs=[str(p) for p in (self.logs, *self.more)],
            output=str(self.out),
            state_dir=str(self.state),
            poll_interval=0.05,
            use_watchdog=False,
        )

        def run() -> None:
            try:
                self.status = self.runner.run()
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def registry(self) -> dict:
        try:
            return json.loads((self.state / "registry.json").read_text())
        except (OSError, ValueError):
            return {}

    def totals(self) -> dict:
        return self.registry().get("totals", {})

    def wait_records(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not isinstance(got := self.totals().get("records"), int) or got < n:
            assert self.thread.is_alive(), f"runner stopped: {self.error!r}"
            assert time.monotonic() < deadline, self.totals()
            time.sleep(0.05)

    def stop(self) -> None:
        self.runner.stop_requested = True
        self.runner.follower.wake()
        self.thread.join(15)
        assert not self.thread.is_alive()

    def alert_ids(self) -> list[str]:
        if not self.out.exists():
            return []
        return [json.loads(x)["event"]["id"] for x in self.out.read_text().splitlines()]


def with_uid(line: str, fields: list[str], uid: str) -> str:
    cols = line.split("\t")
    cols[fields.index("uid")] = uid
    return "\t".join(cols)


# -- item 1: a crash in `run` must not commit past unread lines --------------------------
def test_record_that_makes_the_pipeline_raise_is_one_bad_line_and_nothing_after_is_lost(
    tmp_path, monkeypatch
):
    header, data = zeek_tsv_parts()
    fields = next(h for h in header if h.startswith("#fields")).split("\t")[1:]
    # a record on a port a model watches: others are only counted (live mode's prefilter)
    dport = fields.index("id.resp_p")
    poison_at = next(
        i for i in range(len(data) - 3000 - 1, 0, -1) if data[i].split("\t")[dport] == "27017"
    )
    lines = list(data)
    lines[poison_at] = with_uid(lines[poison_at], fields, "POISON")
    real_push = Pipeline.push

    def push(self, item, *args, **kw):
        if getattr(item, "uid", None) == "POISON":
            raise RuntimeError("a record nobody validated")
        return real_push(self, item, *args, **kw)

    monkeypatch.setattr(Pipeline, "push", push)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "conn.log").write_text("\n".join(header + lines) + "\n")
    z = InProcess(tmp_path, logs)
    z.start()
    z.wait_records(len(data) - 1)
    z.stop()
    assert z.error is None
    assert z.totals()["records"] == len(data) - 1 and z.totals()["bad_lines"] == 1
    good = header + lines[:poison_at] + lines[poison_at + 1 :]
    assert sorted(z.alert_ids()) == sorted(replay_ids(tmp_path, good, "good.log"))
    z.start()  # and a restart reads nothing again
    time.sleep(0.5)
    z.stop()
    assert z.totals()["records"] == len(data) - 1


def test_unexpected_error_while_feeding_commits_nothing_after_it(tmp_path, monkeypatch):
    """Feeding stops half-way through what the follower returned and the loop dies: the
    registry must not move past the lines never fed, so a restart reads them."""
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "conn.log"
    log.write_text("\n".join(header + data[:1000]) + "\n")
    z = InProcess(tmp_path, logs)
    z.start()
    z.wait_records(1000)
    real_feed = Streams.feed

    def feed_half_then_die(self, stream, lines, *args):
        real_feed(self, stream, lines[: len(lines) // 2], *args)
        raise RuntimeError("injected fault while feeding")

    monkeypatch.setattr(Streams, "feed", feed_half_then_die)
    with open(log, "a") as fh:
        fh.write("\n".join(data[1000:]) + "\n")
    z.thread.join(15)
    assert isinstance(z.error, RuntimeError)
    assert z.totals()["records"] == 1000  # nothing committed after the fault
    monkeypatch.setattr(Streams, "feed", real_feed)
    z.start()
    z.wait_records(len(data))
    z.stop()
    assert z.totals()["records"] == len(data)
    got = z.alert_ids()
    assert len(got) == len(set(got))
    assert sorted(got) == sorted(replay_ids(tmp_path, header + data, "all.log"))


# -- item 2: restart inside a second TSV header block -----------------------------------
def _second_block(header: list[str], data: list[str], how: str) -> tuple[list[str], list[str]]:
    """A second header block and `data` written under it: columns swapped (same count,
    other order) or one more column."""
    fields = next(h for h in header if h.startswith("#fields")).split("\t")
    types = next(h for h in header if h.startswith("#types")).split("\t")
    if how == "same count, other order":
        i, j = fields.index("id.orig_h"), fields.index("id.resp_h")
        k, m = fields.index("id.orig_p"), fields.index("id.resp_p")

        def shape(cols: list[str]) -> list[str]:
            cols = list(cols)
            cols[i], cols[j] = cols[j], cols[i]
            cols[k], cols[m] = cols[m], cols[k]
            return cols

        new_fields, new_types = shape(fields), shape(types)
        rows = ["\t".join(shape([""] + ln.split("\t"))[1:]) for ln in data]
    else:
        new_fields, new_types = fields + ["extra"], types + ["string"]
        rows = [ln + "\tx" for ln in data]
    block = [
        "\t".join(new_fields) if h.startswith("#fields") else h
        for h in header
        if not h.startswith("#types")
    ]
    block.append("\t".join(new_types))
    block = [h.replace("#open\t", "#open\tsecond-") for h in block]
    return block, rows


@pytest.mark.parametrize("how", ["other column count", "same count, other order"])
def test_restart_inside_a_second_header_block_reads_it_with_that_header(tmp_path, how):
    header, data = zeek_tsv_parts()
    block, rows = _second_block(header, data, how)
    first = header + data[:2000]
    second = block + rows[2000:]
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "conn.log"
    log.write_text("\n".join(first + second[: len(block) + 1000]) + "\n")
    z = InProcess(tmp_path, logs)
    z.start()
    z.wait_records(3000)
    z.stop()
    assert z.registry()["streams"], "the header in force is committed"
    with open(log, "a") as fh:
        fh.write("\n".join(second[len(block) + 1000 :]) + "\n")
    z.start()
    z.wait_records(len(data))
    z.stop()
    assert z.totals()["bad_lines"] == 0
    assert z.totals()["records"] == len(data)
    assert sorted(z.alert_ids()) == sorted(replay_ids(tmp_path, first + second, "both.log"))


# -- item 3: the event clock holding records at stop -----------------------------------
DAY = 86400.0


def later(line: str, seconds: float) -> str:
    """The same Zeek TSV record, `seconds` later (ts is the first column)."""
    ts, rest = line.split("\t", 1)
    return f"{float(ts) + seconds:.6f}\t{rest}"


def watched(header: list[str], data: list[str], start: int, n: int) -> list[str]:
    """`n` records from `start` on, on ports a default model watches: live mode's prefilter
    only counts the others (without parsing them, so the event clock never sees them)."""
    fields = next(h for h in header if h.startswith("#fields")).split("\t")[1:]
    dport = fields.index("id.resp_p")
    out = [line for line in data[start:] if line.split("\t")[dport] in ("27017", "389")]
    assert len(out) >= n
    return out[:n]


def wait_holding(z: InProcess, n: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while getattr(getattr(z.runner, "pipeline", None), "clock", None) is None or (
        z.runner.pipeline.clock.holding != n
    ):
        assert z.thread.is_alive(), f"runner stopped: {z.error!r}"
        assert time.monotonic() < deadline, "the event clock never held the jump"
        time.sleep(0.02)


def test_a_record_held_for_event_time_at_stop_is_read_again_and_the_stop_is_clean(tmp_path, caplog):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "conn.log"
    log.write_text("\n".join(header + data[:200]) + "\n")
    caplog.set_level(logging.INFO, logger="zeekndm.live")
    z = InProcess(tmp_path, logs)
    z.start()
    z.wait_records(200)
    jumped = [later(line, 2 * DAY) for line in watched(header, data, 200, 3)]
    with open(log, "a") as f:  # two days ahead: held until later records agree
        f.write(jumped[0] + "\n")
    wait_holding(z, 1)
    z.stop()
    assert z.error is None and z.status == 0
    assert (
        "1 record waiting for event-time confirmation (a jump in record time) will be read "
        "again at the next start" in caplog.text
    )
    assert "could not be delivered" not in caplog.text
    assert z.totals()["records"] == 200  # nothing committed past the held record
    with open(log, "a") as f:  # the sensor goes on at the new time: the jump is real
        f.write(jumped[1] + "\n" + jumped[2] + "\n")
    z.start()
    z.wait_records(203)
    z.stop()
    assert z.status == 0
    assert z.totals()["bad_lines"] == 0 and z.runner.pipeline.clock.holding == 0


def test_a_held_record_refuted_by_another_files_records_is_counted_in_the_run_totals(
    tmp_path,
):
    header, data = zeek_tsv_parts()
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    held = first / "conn.log"
    jump, *old = watched(header, data, 100, 10)
    held.write_text("\n".join(header + data[:100] + [later(jump, 2 * DAY)]) + "\n")
    z = InProcess(tmp_path, first, second)
    z.start()
    wait_holding(z, 1)
    # records at the old time in another file refute the jump: a bad ts of the first file
    (second / "conn.log").write_text("\n".join(header + old) + "\n")
    z.wait_records(110)
    z.stop()
    assert z.status == 0
    assert z.totals()["bad_lines"] == 1
    assert z.runner.metrics_snapshot().bad_lines == {(str(held), "bad ts"): 1}


# -- item 14: registry paths and contents ---------------------------------------------
def _load_in_thread(registry: Registry) -> BaseException | None:
    result: list[BaseException | None] = []

    def load() -> None:
        try:
            registry.load()
            result.append(None)
        except BaseException as exc:  # noqa: BLE001
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "loading the registry blocked"
    return result[0]


def test_registry_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.mkfifo(state / "registry.json")
    err = _load_in_thread(Registry(state))
    assert isinstance(err, ZeekNDMError) and "not a regular file (a FIFO)" in str(err)
    assert "registry.json" in str(err)


def test_registry_that_is_a_symlink_to_dev_zero_is_refused_at_once(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.json").symlink_to("/dev/zero")
    err = _load_in_thread(Registry(state))
    assert isinstance(err, ZeekNDMError) and "a character device" in str(err)


def test_registry_with_wrong_types_is_a_warning_and_a_safe_resume(tmp_path, caplog):
    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "conn.log").write_text("\n".join(header + data) + "\n")
    state = tmp_path / "state"
    state.mkdir()
    (state / "registry.json").write_text(
        json.dumps(
            {
                "version": 1,
                "totals": {"records": "many", "bad_lines": [1], "alerts": {"m": "x"}},
                "detector": {"version": 1, "max_ts": "soon", "tracks": [[1, 2, "x"]]},
                "follow": {
                    "version": 1,
                    "files": [{"key": 1}, {"key": "1:2", "dev": 1, "ino": -3}],
                    "ended": {"a": 1},
                    "saved_at": "yesterday",
                },
                "ndjson": {"x": "y"},
                "streams": [1],
            }
        )
    )
    caplog.set_level(logging.WARNING)
    z = InProcess(tmp_path, logs)
    z.start()
    z.wait_records(len(data))
    z.stop()
    assert z.error is None
    assert z.totals()["records"] == len(data)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "totals.records is 'many'" in text
    assert "the saved detector state cannot be used" in text
    assert "ignoring malformed follow state entry" in text
    assert sorted(z.alert_ids()) == sorted(replay_ids(tmp_path, header + data, "all.log"))


# -- item 5: replay and the service's spool ---------------------------------------------
HOLD_SPOOL = """
import sys, time
from pathlib import Path
from zeekndm.sinks.spool import Spool
Spool(Path(sys.argv[1]), 1 << 20)
print("held", flush=True)
time.sleep(30)
"""


def test_replay_refuses_the_spool_of_a_running_service(tmp_path):
    from zeekndm.cli import Environment, main

    state = tmp_path / "state"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SPOOL, str(state / "es-spool-default")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = tmp_path / "zeekndm.yaml"
        cfg.write_text(
            f"state_dir: {state}\noutput:\n  elasticsearch:\n    hosts: ['http://127.0.0.1:9']\n"
        )
        segments = sorted((state / "es-spool-default").iterdir())
        import io

        env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
        demo = Path(__file__).resolve().parents[1] / "demo" / "conn.log"
        rc = main(["replay", "-c", str(cfg), str(demo), "-o", str(tmp_path / "a.ndjson")], env)
        assert rc == 1
        err = env.stderr.getvalue()
        assert f"pid {holder.pid}" in err and "its own --state-dir" in err
        assert sorted((state / "es-spool-default").iterdir()) == segments  # untouched
    finally:
        holder.kill()
        holder.wait()


def test_spool_lock_is_per_process(tmp_path):
    from zeekndm.sinks.spool import Spool

    Spool(tmp_path / "spool", 1 << 20)
    Spool(tmp_path / "spool", 1 << 20)  # the same process may open it again
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_SPOOL, str(tmp_path / "other")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SinkError, match=f"pid {holder.pid}"):
            Spool(tmp_path / "other", 1 << 20)
    finally:
        holder.kill()
        holder.wait()


# -- item 18: idle socket clients cannot starve the registry of descriptors -------------
def test_idle_stream_clients_cannot_exhaust_descriptors_and_stop_commits(tmp_path):
    import resource
    import shutil
    import socket
    import tempfile

    header, data = zeek_tsv_parts()
    logs = tmp_path / "logs"
    logs.mkdir()
    sockdir = Path(tempfile.mkdtemp(dir="/tmp", prefix="zndm"))
    sock = sockdir / "eve.sock"
    state = tmp_path / "state"
    limit = 160

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    log = tmp_path / "run.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zeekndm",
                "run",
                "--log-level",
                "info",
                "--input",
                str(logs),
                "--input",
                f"unix_stream:{sock}",
                "--state-dir",
                str(state),
                "--output",
                str(tmp_path / "alerts.ndjson"),
            ],
            stderr=err,
            stdout=subprocess.DEVNULL,
            preexec_fn=low_limit,
        )
    clients = []
    try:
        deadline = time.monotonic() + 15
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        for _ in range(limit + 40):  # more idle clients than the process has descriptors
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(str(sock))
            c.sendall(b'{"half":')
            clients.append(c)
        (logs / "conn.log").write_text("\n".join(header + data) + "\n")
        registry = state / "registry.json"
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if json.loads(registry.read_text())["totals"]["records"] == len(data):
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.terminate()
        try:
            rc = proc.wait(15)
        except subprocess.TimeoutExpired:
            pytest.fail("zeekndm run ignored SIGTERM for 15 s:\n" + log.read_text()[-3000:])
        assert rc == 0, log.read_text()[-3000:]
        assert "refused" in log.read_text()
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(sockdir, ignore_errors=True)


# -- item 21: the state directory is owner-only ---------------------------------------
def test_state_directory_is_created_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        registry = Registry(tmp_path / "var" / "lib" / "zeekndm")
        registry.lock()
        registry.commit({"totals": {}})
        registry.unlock()
    finally:
        os.umask(old)
    for d in ("var", "var/lib", "var/lib/zeekndm"):
        assert (tmp_path / d).stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "var/lib/zeekndm/registry.json").stat().st_mode & 0o777 == 0o600
