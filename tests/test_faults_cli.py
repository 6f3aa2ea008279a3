"""`zeekndm replay` on the command line (issue 9 items 25, 26, 27): standard input and
directories, empty and non-conn files, output replaced or appended, help that agrees with
README, grammatical counts."""

from __future__ import annotations

import gzip
import io
import os
import re

import pytest
from conftest import REPO
from helpers import Run, comparable
from test_readers import header, row

from zeekndm.cli import Environment, ExitStatus, build_parser, main
from zeekndm.synth import demo_traffic, write_eve, write_zeek_tsv


def demo_tsv(path):
    with open(path, "w") as fh:
        write_zeek_tsv(demo_traffic().in_write_order(), fh)
    return path


def run_with_stdin(argv, data: bytes):
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), stdin=io.BytesIO(data))
    status = main([str(a) for a in argv], env)
    return status, env.stdout.getvalue(), env.stderr.getvalue()


@pytest.mark.parametrize("gz", [False, True])
def test_replay_dash_reads_standard_input(tmp_path, gz):
    data = demo_tsv(tmp_path / "conn.log").read_bytes()
    expected = Run(["replay", tmp_path / "conn.log"]).out
    status, out, err = run_with_stdin(["replay", "-"], gzip.compress(data) if gz else data)
    assert status == ExitStatus.OK, err
    assert comparable(out) == comparable(expected)
    assert "<stdin>: zeek_tsv, 4,200 records" in err


def test_replay_directory_reads_its_logs_oldest_first(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    demo_tsv(logs / "conn.log")
    (logs / "conn.2024-01-01-00-00-00.log.gz").write_bytes(
        gzip.compress((header() + row()).encode())
    )
    with open(logs / "eve.json", "w") as fh:
        write_eve(demo_traffic().in_write_order(), fh)
    (logs / "dns.log").write_text(header(path="dns") + row())  # not a conn*/eve*/notice* name
    (logs / ".conn.swp").write_text("junk\n")
    for age, name in enumerate(["conn.2024-01-01-00-00-00.log.gz", "conn.log", "eve.json"]):
        os.utime(logs / name, (1_700_000_000 + age, 1_700_000_000 + age))
    run = Run(["replay", logs])
    assert run.status == ExitStatus.OK, run.err
    order = re.findall(r"^  (/\S+): ", run.err, re.M)
    assert order == [
        str(logs / n) for n in ("conn.2024-01-01-00-00-00.log.gz", "conn.log", "eve.json")
    ]
    assert "zeekndm replay: 3 files," in run.err


def test_replay_of_a_directory_without_logs_is_an_error(tmp_path):
    run = Run(["replay", tmp_path])
    assert run.status == ExitStatus.ERROR and "holds no conn*, eve*, notice* logs" in run.err


def test_empty_file_among_good_ones_is_a_warning_not_an_abort(tmp_path):
    good = demo_tsv(tmp_path / "conn.log")
    empty = tmp_path / "conn.empty.log"
    empty.write_bytes(b"")
    run = Run(["replay", empty, good])
    assert run.status == ExitStatus.OK, run.err
    assert f"{empty}: empty, not read" in run.err and "empty: no log lines" in run.err
    assert run.alerts


def test_zeek_log_that_is_not_conn_is_passed_over(tmp_path):
    dns = tmp_path / "dns.log"
    dns.write_text(header(path="dns") + row() * 30)
    run = Run(["replay", dns])
    assert run.status == ExitStatus.OK
    assert f"{dns}: not a connection log (path=dns), not read" in run.err
    assert run.alerts == []


def test_output_file_is_replaced_by_default_and_appended_with_append(tmp_path):
    log = demo_tsv(tmp_path / "conn.log")
    out = tmp_path / "alerts.ndjson"
    Run(["replay", log, "-o", out])
    once = comparable(out.read_text())
    Run(["replay", log, "-o", out])
    assert comparable(out.read_text()) == once  # a re-run does not duplicate alerts
    Run(["replay", log, "-o", out, "--append"])
    assert comparable(out.read_text()) == once + once


def test_output_into_a_missing_directory_is_an_error(tmp_path):
    log = demo_tsv(tmp_path / "conn.log")
    run = Run(["replay", log, "-o", tmp_path / "nope" / "alerts.ndjson"])
    assert run.status == ExitStatus.ERROR and "does not exist" in run.err
    assert not (tmp_path / "nope").exists()


def test_counts_are_grammatical(tmp_path):
    log = tmp_path / "conn.log"
    log.write_text(header() + row() + row(ts="x"))
    run = Run(["replay", log])
    assert "zeekndm replay: 1 file, 1 record in" in run.err
    assert "1 record, 1 bad line (bad ts: 1)" in run.err
    log.write_text(header() + row() + row() + row(ts="x") + row(ts="y"))
    run = Run(["replay", log])
    assert "2 records, 2 bad lines" in run.err


def test_every_command_line_option_is_in_readme_commands_table():
    readme = (REPO / "README.md").read_text()
    table = {m[1]: m[0] for m in re.findall(r"^\| `(zeekndm ([a-z-]+)[^`]*)` \|", readme, re.M)}
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    common = {"--help", "--debug", "--log-level", "--config"}  # README: "every command"
    assert "Every command also takes `--config PATH`, `--log-level LEVEL` and `--debug`" in readme
    for name, command in sub.choices.items():
        assert name in table, f"README's command table lacks `zeekndm {name}`"
        for action in command._actions:
            for option in action.option_strings:
                if option.startswith("--") and option not in common:
                    assert option in table[name], f"README does not show {name} {option}"
