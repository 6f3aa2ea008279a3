"""`python -m tests.engines`, and how a missing Java or Maven is reported."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import engines
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_missing_jdk_names_what_was_looked_at(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    with pytest.raises(engines.EngineUnavailable) as caught:
        engines.find_jdk(999)
    assert str(caught.value).startswith("no JDK 999+ with javac found (looked at JAVA_HOME, PATH")
    assert f"{tmp_path / 'no-jdk'} (no JDK)" in str(caught.value)


def test_missing_maven_is_unavailable_not_a_failure(monkeypatch, tmp_path):
    try:
        monkeypatch.setenv("JAVA_HOME", str(engines.find_jdk(17)))
    except engines.EngineUnavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("ZEEKNDM_ENGINE_CACHE", str(tmp_path))  # nothing cached: needs Maven
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(engines.EngineUnavailable, match=r"^Maven \(mvn\) is not on PATH$"):
        engines.prepare("kafka")


def test_unknown_engine_lists_the_known_ones():
    with pytest.raises(ValueError, match="choose one of opensearch, elasticsearch, "):
        engines.prepare("solr")


@pytest.mark.engine
def test_entry_point_prints_ready_and_stops_cleanly_on_sigterm(elasticsearch_engine):
    """The shell entry point as README describes it (the session's node proves the jars
    are here; this one is a second, short-lived node)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.engines", "elasticsearch"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready http://127.0.0.1:"), proc.stderr.read()
        url = line.split()[1]
        with urllib.request.urlopen(url + "/", timeout=10) as resp:
            assert resp.headers["X-Elastic-Product"] == "Elasticsearch"
        home = Path(proc.stderr.readline().split("; home ")[1].split(",")[0])
        assert home.is_dir()
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert time.monotonic() - began < 30
    assert not home.exists()  # the temporary home is removed
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "/", timeout=5)
