"""A registry written by zeekndm 0.1.0 (before live mode moved into `zeekndm/live/`) still
loads, resumes and round-trips.

`tests/data/registry/registry-0.1.0.json` was written by `zeekndm run` over a generated
Zeek directory: 1,500 records, a rename rotation, 1,100 more records of the new file, two
alerts to an NDJSON file, three sources tracked by the detector (paths rewritten to
/opt/zeek). A registry left by that version on a sensor must keep working after an upgrade:
file positions, header blocks, counters and output positions resume; only the detector's
window state (snapshot version 1, refused since version 2) starts empty, with a warning.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

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


def test_detector_section_of_0_1_0_is_refused_with_a_warning_and_windows_start_empty(
    tmp_path, caplog
):
    """Detector snapshots are version 2 since the Netography-shaped models (another window
    shape); the 0.1.0 one (version 1) is refused by the detector, and live mode resumes
    everything else with empty window state, saying so."""
    from zeekndm.live import LiveRunner

    config = load_config(None)
    saved = fixture()["detector"]
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    with pytest.raises(ValueError, match="detector snapshot version 1 is not 2"):
        detector.restore(saved)
    runner = LiveRunner(config, inputs=[str(tmp_path)], state_dir=str(tmp_path / "state"))
    caplog.set_level(logging.WARNING)
    restored = runner._restored_detector(RegistryState.from_dict(fixture()))
    assert restored.tracked_sources == 0
    assert any("saved detector state cannot be used" in r.getMessage() for r in caplog.records)


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
