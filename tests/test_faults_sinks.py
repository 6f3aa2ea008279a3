"""The NDJSON sink on a failing disk and with alerts that cannot be encoded (issue 9)."""

from __future__ import annotations

import errno
import json
import os

import pytest

from zeekndm.enrich import Alert
from zeekndm.errors import SinkError
from zeekndm.sinks import ndjson
from zeekndm.sinks.ndjson import NDJSONSink


def alerts(n: int, start: int = 0) -> list[Alert]:
    return [
        Alert(
            f"id{i}", {"event": {"id": f"id{i}"}, "rule": {"name": "m"}, "n": i, "pad": "x" * 300}
        )
        for i in range(start, start + n)
    ]


def lines(path) -> list[dict]:
    text = path.read_bytes()
    assert text == b"" or text.endswith(b"\n")
    return [json.loads(line) for line in text.splitlines()]


def test_full_disk_mid_batch_cuts_the_file_back_and_the_retry_writes_each_alert_once(
    tmp_path, monkeypatch
):
    out = tmp_path / "alerts.ndjson"
    sink = NDJSONSink(out)
    assert sink.send(alerts(3)).acked == 3
    real_write = os.write
    calls = []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 1:  # part of the batch reaches the disk, then ENOSPC
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(ndjson.os, "write", full_disk)
    batch = alerts(5, start=3)
    result = sink.send(batch)
    assert result.retry == tuple(batch) and result.acked == 0
    assert [d["n"] for d in lines(out)] == [0, 1, 2]  # cut back to the batch start
    assert sink.send(result.retry).acked == 5
    assert [d["n"] for d in lines(out)] == list(range(8))
    sink.close()


def test_short_writes_are_completed(tmp_path, monkeypatch):
    out = tmp_path / "alerts.ndjson"
    sink = NDJSONSink(out)
    real_write = os.write
    monkeypatch.setattr(ndjson.os, "write", lambda fd, data: real_write(fd, bytes(data[:100])))
    assert sink.send(alerts(4)).acked == 4
    assert [d["n"] for d in lines(out)] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "bad",
    [
        {"observer": {"hostname": 2**64}},
        {"zeekndm": {"attempts": 10**300}},
        {"observer": {"hostname": (lambda d: [d := [d] for _ in range(300)][-1])([])}},
    ],
)
def test_alert_that_cannot_be_encoded_is_dead_lettered_and_the_rest_written(tmp_path, bad):
    out = tmp_path / "alerts.ndjson"
    dead = tmp_path / "dead-letter.ndjson"
    sink = NDJSONSink(out, dead_letter_path=dead)
    good = alerts(2)
    broken = Alert("broken", {"rule": {"name": "m"}, **bad})
    result = sink.send([good[0], broken, good[1]])
    assert result.acked == 2 and not result.retry
    assert [rid for rid, _ in result.rejected] == ["broken"]
    assert "cannot be encoded" in result.rejected[0][1]
    assert [d["n"] for d in lines(out)] == [0, 1]
    (letter,) = lines(dead)
    assert letter["id"] == "broken" and letter["rule"] == "m" and "encoded" in letter["reason"]


def test_output_in_a_missing_directory_is_an_error_not_a_new_directory(tmp_path):
    with pytest.raises(SinkError, match="does not exist"):
        NDJSONSink(tmp_path / "no-such-dir" / "alerts.ndjson")
    assert not (tmp_path / "no-such-dir").exists()


def test_truncate_empties_the_file(tmp_path):
    out = tmp_path / "alerts.ndjson"
    out.write_text('{"old": 1}\n')
    sink = NDJSONSink(out)
    sink.truncate()
    sink.send(alerts(1))
    assert [d["n"] for d in lines(out)] == [0]
