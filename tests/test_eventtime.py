"""The event clock (issue 9 item 3): one far-future timestamp cannot blind detection, and
a legitimate jump in record time (files days apart, a sensor back after a gap) is taken
once later records confirm it."""

from __future__ import annotations

from helpers import T0, Run, flow, public, scan

from zeekndm.config import load_config
from zeekndm.detect import Detector
from zeekndm.eventtime import EventClock, EventTimeSettings
from zeekndm.pipeline import Pipeline
from zeekndm.readers import ReadStats
from zeekndm.sinks.memory import MemorySink

MONGO = 27017
DAY = 86400.0


def pipeline(wall: float = T0 + 3600, **settings) -> tuple[Pipeline, MemorySink]:
    config = load_config(None)
    sink = MemorySink()
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    p = Pipeline(
        detector, [sink], event_time=EventTimeSettings(**settings), wall_clock=lambda: wall
    )
    return p, sink


def started(sink: MemorySink) -> list[tuple[str, str]]:
    return [
        (d["source"]["ip"], d["zeekndm"]["severity_name"])
        for d in sink.docs
        if d["zeekndm"]["alert_state"] in ("start", "escalated")
    ]


def feed(p: Pipeline, flows, stats: ReadStats) -> None:
    for i, f in enumerate(flows, 1):
        stats.lines = i
        p.push(f, stats, i)


def test_a_far_future_record_is_a_bad_ts_and_does_not_blind_detection():
    p, sink = pipeline()
    stats = ReadStats("conn.log")
    flows = scan("10.0.0.5", MONGO, 10)
    flows.insert(5, flow("10.0.0.9", public(999), MONGO, ts=9_700_000_050.0))  # a flipped digit
    flows += scan("10.0.0.5", MONGO, 30, start=T0 + 10)
    feed(p, flows, stats)
    p.finish_input()
    p.deliver(flush=True)
    assert stats.bad_by_reason == {"bad ts": 1} and stats.samples[0][0] == 6
    assert started(sink) == [("10.0.0.5", "low")]
    assert p.detector.stats.late_records == 0


def test_an_unconfirmed_jump_below_the_wall_clock_is_refuted_by_later_records():
    p, sink = pipeline(wall=T0 + 400 * DAY)  # replaying an old capture
    stats = ReadStats("conn.log")
    flows = scan("10.0.0.5", MONGO, 10)
    flows.insert(3, flow("10.0.0.9", public(999), MONGO, ts=T0 + 300 * DAY))
    flows += scan("10.0.0.5", MONGO, 30, start=T0 + 10)
    feed(p, flows, stats)
    p.finish_input()
    p.deliver(flush=True)
    assert stats.bad_by_reason == {"bad ts": 1} and stats.samples[0][0] == 4
    assert ("10.0.0.5", "low") in started(sink)


def test_a_jump_confirmed_by_later_records_is_taken_and_nothing_is_lost():
    p, sink = pipeline(wall=T0 + 30 * DAY)
    first, second = ReadStats("day1.log"), ReadStats("day6.log")
    feed(p, scan("10.0.0.5", MONGO, 30), first)
    feed(p, scan("10.0.0.7", MONGO, 30, start=T0 + 5 * DAY), second)  # five days later
    p.finish_input()
    p.deliver(flush=True)
    assert first.bad_lines == second.bad_lines == 0
    assert sorted(started(sink)) == [("10.0.0.5", "low"), ("10.0.0.7", "low")]
    assert p.detector.stats.records == 60  # the held records went to the detector too


def test_a_jump_still_unconfirmed_when_the_input_ends_is_a_bad_ts():
    p, _ = pipeline(wall=T0 + 30 * DAY)
    stats = ReadStats("conn.log")
    feed(
        p, scan("10.0.0.5", MONGO, 5) + [flow("10.0.0.9", public(1), MONGO, ts=T0 + 9 * DAY)], stats
    )
    assert not p.deliver()  # a held record: live mode must not commit past it
    p.finish_input()
    assert stats.bad_by_reason == {"bad ts": 1} and p.deliver()


def test_the_jump_bound_can_be_switched_off():
    p, _ = pipeline(wall=T0 + 30 * DAY, max_jump=None)
    stats = ReadStats("conn.log")
    feed(
        p, scan("10.0.0.5", MONGO, 5) + [flow("10.0.0.9", public(1), MONGO, ts=T0 + 9 * DAY)], stats
    )
    assert p.clock.holding == 0 and stats.bad_lines == 0


def test_the_clock_resumes_from_the_restored_detector_time_but_not_from_the_future():
    assert EventClock(start=T0, wall_clock=lambda: T0 + 10).high == T0
    assert EventClock(start=9.7e9, wall_clock=lambda: T0).high == float("-inf")


def test_replay_of_a_log_with_one_far_future_line_still_detects_and_counts_it(tmp_path):
    from test_readers import header, row

    rows = [row(ts=f"{T0 + i:.6f}", **{"id__resp_h": public(i + 1)}) for i in range(40)]
    rows.insert(20, row(ts="9700000050.000000", **{"id__resp_h": public(900)}))
    log = tmp_path / "conn.log"
    log.write_text(header() + "".join(rows))
    for extra in ([], ["--parse-all"]):
        run = Run(["replay", log, *extra])
        assert "1 bad line (bad ts: 1)" in run.err, run.err
        assert any(a["zeekndm"]["alert_state"] == "start" for a in run.alerts)
