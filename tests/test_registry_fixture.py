"""A registry written by zeekndm 0.1.0 (before live mode moved into `zeekndm/live/`) still
loads, resumes and round-trips.

`tests/data/registry/registry-0.1.0.json` was written by `zeekndm run` over a generated
Zeek directory: 1,500 records, a rename rotation, 1,100 more records of the new file, two
alerts to an NDJSON file, three sources tracked by the detector (paths rewritten to
/opt/zeek). A registry left by that version on a sensor must keep working after an upgrade.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import orjson

from zeekndm.checkpoint import Registry
from zeekndm.config import load_config
from zeekndm.detect import Detector
from zeekndm.follow import Follower, FollowTarget

FIXTURE = Path(__file__).parent / "data" / "registry" / "registry-0.1.0.json"


def fixture() -> dict:
    return json.loads(FIXTURE.read_text())


def test_registry_of_0_1_0_loads(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "registry.json")
    state = Registry(tmp_path).load()
    assert state == fixture()


def test_follow_section_of_0_1_0_resumes_and_round_trips(tmp_path):
    saved = fixture()["follow"]
    f = Follower([FollowTarget(str(tmp_path))], state=saved, use_watchdog=False)
    try:
        again = json.loads(json.dumps(f.state()))
    finally:
        f.close()
    assert again["version"] == saved["version"]
    assert again["files"] == saved["files"]
    assert again["ended"] == saved["ended"]


def test_detector_section_of_0_1_0_restores_and_round_trips():
    config = load_config(None)
    saved = fixture()["detector"]
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    detector.restore(saved)
    assert detector.tracked_sources == 3
    assert orjson.loads(orjson.dumps(detector.snapshot())) == saved


def test_counters_positions_and_headers_of_0_1_0_are_read():
    import zeekndm.live as live

    doc = fixture()
    totals = live._Totals.from_dict(doc["totals"])
    assert totals.records == 2600 and totals.alerts == {"mongodb_scan_internal_external": 2}
    assert totals.as_dict() == doc["totals"]
    assert live._saved_positions(doc["ndjson"]) == {"/opt/zeek/alerts.ndjson": 7025}
    ((key, (header, in_header)),) = live._saved_headers(doc["streams"]).items()
    assert key == doc["follow"]["files"][0]["key"] and not in_header
    assert header[0] == b"#separator \\x09" and any(h.startswith(b"#fields\tts") for h in header)
