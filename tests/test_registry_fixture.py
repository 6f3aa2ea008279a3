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

from zeekndm.config import load_config
from zeekndm.detect import Detector
from zeekndm.live.follow import Follower, FollowState, FollowTarget
from zeekndm.live.registry import Registry, RegistryState

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
    doc = fixture()
    state = RegistryState.from_dict(doc)
    totals = state.totals
    assert totals.records == 2600 and totals.alerts == {"mongodb_scan_internal_external": 2}
    assert totals.to_dict() == doc["totals"]
    assert state.ndjson == {"/opt/zeek/alerts.ndjson": 7025}
    ((key, saved),) = state.streams.items()
    assert key == doc["follow"]["files"][0]["key"] and not saved.open
    assert saved.lines[0] == b"#separator \\x09"
    assert any(h.startswith(b"#fields\tts") for h in saved.lines)


def test_whole_registry_of_0_1_0_round_trips_through_the_typed_state():
    doc = fixture()
    assert RegistryState.from_dict(doc).to_dict() == doc
    assert FollowState.from_dict(doc["follow"]).to_dict() == doc["follow"]
