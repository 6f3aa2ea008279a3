"""`tune --engine spark` gives the same per-source numbers and suggestions as the local
engine on the same files (one local Spark session for the module, small files).

Needs pyspark (the `spark` extra, pulled in by `test`) and a Java 17+ runtime: without
them the tests skip and say why, and fail under CI=true."""

from __future__ import annotations

import gzip
import os
import shutil
import time

import pytest
import tunegen
from conftest import unavailable

from zeekndm.config import load_config
from zeekndm.tune import TuneRequest, run_tune
from zeekndm.tune_render import render_text, source_rows

MONGO = "mongodb_scan_internal_external"
LDAP = "ldap_scanning_inside_to_outside"


@pytest.fixture(scope="module")
def spark():
    try:
        import pyspark  # noqa: F401
    except ImportError:
        unavailable("pyspark is not installed (pip install -e '.[test]' brings it)")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        unavailable("no Java runtime (java on PATH or JAVA_HOME) for Spark")
    from zeekndm.tune_spark import spark_session

    started = time.monotonic()
    session = spark_session("local[2]")
    session.sparkContext.setLogLevel("ERROR")
    session.started_in = time.monotonic() - started  # type: ignore[attr-defined]
    yield session
    session.stop()


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    root = tmp_path_factory.mktemp("sparklogs")
    files = tunegen.write_zeekctl_archive(root, days=3)
    # 02:00 of day 0 (the authorised scanner), day 1 10:00 (sweeper, slow scanner), and
    # one file holding two header blocks, as a concatenated log does: day 2 02:00 and
    # 14:00 (LDAP sweeper, backup job)
    picked = [files[2], files[34]]
    joined = root / "conn.joined.log"
    joined.write_bytes(
        gzip.decompress(files[50].read_bytes()) + gzip.decompress(files[62].read_bytes())
    )
    return [str(p) for p in picked] + [str(joined)]


def test_spark_engine_gives_the_same_numbers_as_the_local_engine(spark, history):
    config = load_config(None)
    local = run_tune(TuneRequest(history, config, models=f"{MONGO},{LDAP}"))
    started = time.monotonic()
    remote = run_tune(TuneRequest(history, config, models=f"{MONGO},{LDAP}", engine="spark"))
    took = time.monotonic() - started
    assert source_rows(remote) == source_rows(local)
    assert len(source_rows(local)[MONGO]) > 10
    assert remote.span == local.span and remote.records == local.records
    for a, b in zip(local.models, remote.models):
        assert a.stats.distribution() == b.stats.distribution()
        assert a.stats.distribution(slow=True) == b.stats.distribution(slow=True)
        assert a.suggestion.levels == b.suggestion.levels
        assert a.suggestion.reasons == b.suggestion.reasons
        assert [c.label for c in a.suggestion.chronic] == [c.label for c in b.suggestion.chronic]
    lines = []
    render_text(remote, lines.append)
    text = "".join(lines)
    assert "engine spark" in text and "what-if not computed" in text
    print(f"spark session {spark.started_in:.1f} s, spark tune {took:.1f} s")


def test_spark_engine_refuses_eve_json_naming_the_file(spark, tmp_path):
    from zeekndm.errors import ZeekNDMError

    eve = tmp_path / "eve.json"
    eve.write_text('{"event_type": "flow"}\n')
    with pytest.raises(ZeekNDMError, match="eve.json"):
        run_tune(TuneRequest([str(eve)], load_config(None), engine="spark"))
