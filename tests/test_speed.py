"""Issue 15, step 1: a detector whose cost does not grow with what it remembers.

The alerts must be the ones the detector gave before (`tests/golden.py` keeps them for
every real capture and the benchmark's synthetic inputs); late records now count the
busiest window that holds them over every contact kept, not only other late records; a
global budget bounds memory in a storm of sweepers.
"""

from __future__ import annotations

import gc
import os

import golden
import pytest
from helpers import T0, Run, flow, public, scan

from zeekndm.detect import Detector, DetectorSettings
from zeekndm.detection import END, ONGOING, START
from zeekndm.flow import Outcome, Transport
from zeekndm.models import load_builtin_models

MONGO = "mongodb_scan_internal_external"
UNK = Outcome.UNKNOWN


def only(*names, **settings) -> Detector:
    models = [m for n, m in load_builtin_models().items() if n in names]
    return Detector(models, settings=DetectorSettings(**settings))


def run(det: Detector, flows) -> list:
    out = []
    for f in flows:
        out.extend(det.observe(f))
    return out


# -- the same alerts as before -----------------------------------------------------------
def _cases() -> list[str]:
    return [
        *(f"{name}|all" for name in golden.REAL_INPUTS),
        *(f"{name}|{m or 'default'}" for name in golden.SYNTH_INPUTS for m in golden.MODEL_SETS),
    ]


@pytest.fixture(scope="module")
def before() -> dict:
    return golden.load_golden()


@pytest.mark.parametrize("case", _cases())
def test_alerts_are_the_ones_the_detector_gave_before(
    case, before, tmp_path_factory, real, core_path
):
    name, models = case.split("|")
    if name.startswith("synth/"):
        path = golden.synth_input(name, tmp_path_factory.getbasetemp())
    else:
        path = real(name)
    rows = golden.replay_alerts(path, None if models == "default" else models)
    assert rows == before[case]


# -- late records --------------------------------------------------------------------------
def test_a_late_record_counts_the_contacts_seen_in_order_in_its_window():
    # 15 destinations in order, then the source's clock moves 15 minutes on; 10 more
    # destinations of the first minutes arrive late. Their window holds 25: a scan.
    det = only(MONGO)
    first = scan("10.0.0.5", 27017, 15, outcome=UNK)
    now = [flow("10.0.0.5", public(500), 27017, T0 + 900, outcome=UNK)]
    late = [flow("10.0.0.5", public(100 + i), 27017, T0 + 15 + i, outcome=UNK) for i in range(10)]
    detections = run(det, first + now + late)
    assert [(d.state, d.distinct_destinations) for d in detections] == [(START, 25)]
    assert detections[0].first_seen == T0
    assert not detections[0].distinct_is_lower_bound


def test_late_records_spread_over_two_windows_do_not_add_up():
    # 24 in order, 12 late ones 400 s earlier: no window of 300 s holds 25
    det = only(MONGO)
    first = scan("10.0.0.5", 27017, 24, start=T0 + 1000, outcome=UNK)
    now = [flow("10.0.0.5", public(500), 27017, T0 + 2000, outcome=UNK)]
    late = [flow("10.0.0.5", public(100 + i), 27017, T0 + 600 + i, outcome=UNK) for i in range(12)]
    assert run(det, first + now + late) == []


def test_past_contacts_are_kept_within_a_bound_per_track():
    det = only(MONGO)
    # a client hammering 3 hosts for an hour: its past stays a few dozen entries
    flows = [
        flow("10.0.0.5", public(i % 3 + 1), 27017, T0 + i * 0.5, outcome=Outcome.ESTABLISHED)
        for i in range(7200)
    ]
    run(det, flows)
    (track,) = det._tracks.values()
    assert len(track.win.order) - track.win.keep <= 2 * 3 + 16 + 3 * 40


# -- memory budget -------------------------------------------------------------------------
def test_a_storm_of_sweepers_stays_within_the_destination_budget():
    det = only(MONGO, max_destinations_total=5_000)
    flows = (
        flow(f"10.1.{s >> 8}.{s & 255}", public(n * 211 + s), 27017, T0 + (n * 200 + s) / 50)
        for n in range(100)
        for s in range(200)
    )
    detections = run(det, flows)
    assert det._n_items == sum(len(t.items) for t in det._tracks.values()) <= 5_000
    assert det.stats.budget_evictions > 0
    starts = [d for d in detections if d.state == START]
    assert len({d.source for d in starts}) == 200  # every sweeper still alerts
    ends = det.finish()
    assert any(d.distinct_is_lower_bound for d in ends)


def test_the_budget_does_not_change_alerts_while_it_is_not_full():
    flows = scan("10.0.0.5", 27017, 300, spacing=0.5) + scan("10.0.0.6", 27017, 40)
    a = run(only(MONGO), flows)
    b = run(only(MONGO, max_destinations_total=341), flows)
    assert [x.state for x in a] == [x.state for x in b]
    assert [x.distinct_destinations for x in a] == [x.distinct_destinations for x in b]


def test_max_destinations_total_is_a_config_option(tmp_path):
    from zeekndm.config import load_config

    path = tmp_path / "c.yaml"
    path.write_text("detector:\n  max_destinations_total: 1234\n")
    assert load_config(path).detector.max_destinations_total == 1234
    path.write_text("detector:\n  max_destinations_total: 0\n")
    with pytest.raises(Exception, match="max_destinations_total"):
        load_config(path)


# -- lifecycle -----------------------------------------------------------------------------
def test_a_sweeping_source_gets_an_ongoing_update_per_update_interval():
    # one new destination every 2 s for an hour: above threshold all along
    det = only(MONGO)
    detections = run(det, scan("10.0.0.5", 27017, 1800, spacing=2.0)) + det.finish()
    ongoing = [d for d in detections if d.state == ONGOING]
    interval = load_builtin_models()[MONGO].update_interval
    assert 3600 / interval - 2 <= len(ongoing) <= 3600 / interval
    gaps = [b.last_seen - a.last_seen for a, b in zip(ongoing, ongoing[1:])]
    assert min(gaps) >= interval
    assert detections[-1].state == END


# -- the hot path --------------------------------------------------------------------------
def test_no_record_hashes_an_enum(monkeypatch):
    det = only(MONGO, "ldap_scanning_inside_to_outside", "udp_fanout_internal_external")
    flows = scan("10.0.0.5", 27017, 60) + [
        flow("10.0.0.6", public(i), 53, T0 + i, transport=Transport.UDP) for i in range(50)
    ]
    calls = []

    def counting_hash(self):
        calls.append(self)
        return hash(self._name_)

    monkeypatch.setattr(Transport, "__hash__", counting_hash)
    monkeypatch.setattr(Outcome, "__hash__", counting_hash)
    run(det, flows)
    assert calls == []


def test_replay_freezes_start_up_objects_out_of_the_cycle_collector(tmp_path):
    from zeekndm import synth

    path = tmp_path / "conn.log"
    with open(path, "w") as out:
        synth.write_zeek_tsv(synth.demo_traffic().in_write_order()[:50], out)
    gc.unfreeze()
    assert Run(["replay", path, "-o", os.devnull]).status == 0
    assert gc.get_freeze_count() > 0
    gc.unfreeze()
