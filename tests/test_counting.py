"""The detector's per-source counting state on both cores: the compiled one
(`zeekndm._core.Track`, for models whose counted item is an address) and the Python one
give the same detections, recorder calls, statistics and snapshots, record for record,
under late records, the per-source cap, the global budget and eviction; and a snapshot
taken on either core restores on the other (live mode and the Kafka input resume from
them after an upgrade or on a machine without the compiled core)."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
from conftest import use_core
from helpers import T0, public

from zeekndm import core
from zeekndm.detect import Detector, DetectorSettings
from zeekndm.flow import Flow, Outcome, Transport
from zeekndm.models import load_builtin_models

OUTCOMES = (
    Outcome.NO_ANSWER,
    Outcome.NO_ANSWER,
    Outcome.REJECTED,
    Outcome.ESTABLISHED,
    Outcome.ABORTED,
    Outcome.UNKNOWN,
)


def _models(vertical: bool = True) -> list:
    """The default models, and (for a mixed detector) the model shapes whose item is a
    port, which stay on the Python track."""
    models = load_builtin_models().values()
    picked = [m for m in models if m.enabled]
    if vertical:
        picked += [replace(m, enabled=True) for m in models if m.count == "ports"][:2]
    return picked


def _storm(n: int, seed: int) -> list[Flow]:
    """Sweepers, retries, answered clients and late records (up to 15 minutes behind)."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        ts = T0 + k * 0.2
        if rng.random() < 0.08:
            ts -= rng.uniform(0, 900)  # late, within the allowed lateness
        s = rng.randrange(30)
        src = f"10.0.{s >> 4}.{s & 15 or 1}"
        dst = public(rng.randrange(3 if s < 18 else 4000) + s * 5000)
        port = rng.choice((27017, 27017, 27017, 445, 23))
        if rng.random() < 0.05:
            dst = f"10.9.0.{rng.randrange(1, 250)}"  # internal destinations too
        out.append(
            Flow(
                ts,
                src,
                40000 + k % 999,
                dst,
                port,
                Transport.TCP,
                rng.choice(OUTCOMES),
                f"C{k}",
                f"1:{k}" if k % 3 else None,
                "sensor-a" if s % 2 else None,
            )
        )
    return out


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def counted(self, model, key, ts, outcome, window, distinct) -> None:
        self.calls.append((model, key, ts, outcome, window, distinct))


SETTINGS = dict(
    max_tracked_sources=400, max_destinations_per_source=150, max_destinations_total=600
)


def detector(monkeypatch, name: str, recorder: bool = False, **settings) -> Detector:
    use_core(monkeypatch, name)
    det = Detector(_models(), settings=DetectorSettings(**{**SETTINGS, **settings}))
    if recorder:
        det.recorder = Recorder()
    return det


def replay(det: Detector, flows) -> list:
    out = []
    for f in flows:
        out.extend(det.observe(f))
    return out


def _state(det: Detector) -> str:
    return json.dumps(det.snapshot(), sort_keys=True)


def test_the_compiled_counting_is_in_use_on_the_compiled_core(monkeypatch):
    det = detector(monkeypatch, "native")
    replay(det, _storm(200, 1))
    kinds = {type(t).__module__ for t in det._tracks.values()}
    assert "zeekndm._core" in kinds  # the default models' tracks are native
    assert "zeekndm.detect" in kinds  # the models counting ports stay on Python tracks


@pytest.mark.parametrize("seed", [3, 4])
def test_both_cores_count_alike_record_for_record(monkeypatch, seed):
    flows = _storm(6000, seed)
    runs = {}
    for name in ("python", "native"):
        det = detector(monkeypatch, name, recorder=True)
        alerts = replay(det, flows[:3000])
        middle = _state(det)
        alerts += replay(det, flows[3000:])
        runs[name] = (alerts + det.finish(), det.recorder.calls, det.stats.as_dict(), middle)
    slow, fast = runs["python"], runs["native"]
    assert fast[0] == slow[0] and len(slow[0]) > 20
    assert fast[1] == slow[1]
    assert fast[2] == slow[2]
    assert slow[2]["late_records"] == 0 and slow[2]["budget_evictions"] > 0
    assert slow[2]["evicted_sources"] > 0
    assert fast[3] == slow[3]  # the same snapshot, key for key


@pytest.mark.parametrize("first,second", [("native", "python"), ("python", "native")])
def test_a_snapshot_taken_on_one_core_restores_on_the_other(monkeypatch, first, second):
    flows = _storm(5000, 7)
    whole = detector(monkeypatch, "python")
    expected = replay(whole, flows) + whole.finish()
    det = detector(monkeypatch, first)
    got = replay(det, flows[:2500])
    state = json.loads(json.dumps(det.snapshot()))
    again = detector(monkeypatch, second)
    again.restore(state)
    got += replay(again, flows[2500:]) + again.finish()
    assert [d.alert_id for d in got] == [d.alert_id for d in expected]
    assert got == expected


def test_a_reload_moves_tracks_between_the_compiled_and_the_python_counting(monkeypatch):
    flows = _storm(4000, 9)
    whole = detector(monkeypatch, "python")
    expected = replay(whole, flows) + whole.finish()
    det = detector(monkeypatch, "native")
    got = replay(det, flows[:2000])
    # the same models again, on the Python track for a while, then compiled again
    det.set_models(_models())
    for rt in det._runtimes.values():
        rt.fast = None
    det._sync_track_forms()
    got += replay(det, flows[2000:3000])
    det.set_models(_models())
    got += replay(det, flows[3000:]) + det.finish()
    assert got == expected


def _mixed(n: int, seed: int) -> list[Flow]:
    """The storm, with what the dispatch sorts out before counting: other transports
    and ports, records past the allowed lateness, Zeek local fields that disagree."""
    rng = random.Random(seed)
    out = []
    for f in _storm(n, seed):
        r = rng.random()
        if r < 0.05:
            f = f._replace(transport=Transport.UDP, dport=rng.choice((53, 161, 1900)))
        elif r < 0.08:
            f = f._replace(transport=Transport.ICMP, sport=8, dport=0)
        elif r < 0.10:
            f = f._replace(transport=Transport.OTHER)
        elif r < 0.12:
            f = f._replace(ts=f.ts - 7200)  # later than the allowed lateness
        elif r < 0.16:
            f = f._replace(local_orig=rng.random() < 0.5, local_resp=rng.random() < 0.5)
        elif r < 0.20:
            f = f._replace(dport=rng.randrange(1, 65536))
        out.append(f)
    return out


def test_both_cores_dispatch_alike_with_statistics_read_as_they_go(monkeypatch):
    flows = _mixed(6000, 11)
    runs = {}
    for name in ("python", "native"):
        det = detector(monkeypatch, name)
        alerts, seen = [], []
        for i, f in enumerate(flows):
            alerts.extend(det.observe(f))
            if i % 997 == 0:
                seen.append(det.stats.as_dict())
            if i == 3000:  # a reload with fewer models: the counters of both kept
                det.set_models(_models(vertical=False)[1:])
        runs[name] = (alerts + det.finish(), seen, det.stats.as_dict())
    slow, fast = runs["python"], runs["native"]
    assert fast == slow and len(slow[0]) > 10
    stats = slow[2]
    assert stats["late_records"] > 0 and stats["local_disagreements"] > 0
    assert stats["records"] == len(flows) > stats["matched"] > stats["outbound"] > 0


def test_the_compiled_dispatch_is_the_observe_of_the_compiled_core(monkeypatch):
    det = detector(monkeypatch, "native")
    assert det.observe.__self__ is det._dispatch
    assert type(det._dispatch).__module__ == "zeekndm._core"
    assert detector(monkeypatch, "python").observe.__func__ is Detector.observe


def test_the_pure_python_core_has_no_compiled_counting(monkeypatch):
    det = detector(monkeypatch, "python")
    replay(det, _storm(300, 2))
    assert {type(t).__module__ for t in det._tracks.values()} == {"zeekndm.detect"}
    assert core.native is None


def _port_sweep(n: int, seed: int) -> list[Flow]:
    """Sources sweeping hosts on many ports, each host probed again on other ports
    while the episode is open (its ports come from the records, not the first contact)
    over TCP and UDP, and a few hosts answering."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        s = rng.randrange(4)
        src = f"10.0.7.{s + 1}"
        dst = public(rng.randrange(40 + 30 * s) + s * 1000)
        transport = Transport.UDP if rng.random() < 0.2 else Transport.TCP
        out.append(
            Flow(
                T0 + k * 0.5,
                src,
                40000 + k % 999,
                dst,
                rng.randrange(1, 200) * 7,
                transport,
                rng.choice(OUTCOMES),
                f"C{k}",
                None,
            )
        )
    return out


def test_both_cores_count_every_model_alike_on_hosts_probed_on_many_ports(monkeypatch):
    flows = _port_sweep(5000, 5)
    models = [replace(m, enabled=True) for m in load_builtin_models().values()]
    runs = {}
    for name in ("python", "native"):
        use_core(monkeypatch, name)
        det = Detector(models, settings=DetectorSettings(**SETTINGS))
        alerts = replay(det, flows[:2500])
        middle = _state(det)
        alerts += replay(det, flows[2500:])
        runs[name] = (alerts + det.finish(), det.stats.as_dict(), middle)
    slow, fast = runs["python"], runs["native"]
    assert len(slow[0]) > 10 and max(len(d.ports) for d in slow[0]) > 20
    assert fast == slow


ODD_ITEMS = [
    "1.2.3.4",
    "01.2.3.4",
    "1.2.3.04",
    "1.2.3.4 ",
    "256.1.1.1",
    "1.2.3",
    "1.2.3.4.5",
    "0.0.0.0",
    "255.255.255.255",
    "1.2.3.255",
    "1.2.3.2555",
    "::1",
    "2001:db8::ffff:1.2.3.4",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "é.1.1.1",
    "",
]


def test_a_native_track_keeps_every_item_string_as_it_was(monkeypatch):
    """Items are held natively (a dotted quad as its number): every string, canonical
    or not, comes back the same and stays distinct from its look-alikes."""
    use_core(monkeypatch, "native")
    items = [
        [k, [T0 + i, T0 + i, 1, 1, 0, 80, "tcp", None, None, k, 0]] for i, k in enumerate(ODD_ITEMS)
    ]
    data = {
        "items": items,
        "past": [[k, T0 + i] for i, k in enumerate(ODD_ITEMS[:5])],
        "win": [[k, T0 + 100 + i] for i, k in enumerate(ODD_ITEMS)],
    }
    track = core.native.Track.from_dict(data)
    assert track.size() == len(ODD_ITEMS) == track.window_count()
    out = track.to_dict()
    assert out["items"] == items
    assert out["past"] == data["past"] and out["win"] == data["win"]
    assert [e[9] for e in track.evidence(False, None, 300.0, T0)] == ODD_ITEMS


def test_the_native_track_map_answers_as_an_ordered_dict(monkeypatch):
    """`Detector._tracks` on the compiled core: the same answers, order and errors as
    the OrderedDict it stands for, over random operations on the key shapes tracks have."""
    from collections import OrderedDict

    use_core(monkeypatch, "native")
    rng = random.Random(13)
    keys = [("m", f"10.0.0.{i}") for i in range(6)]
    keys += [("n", (f"10.0.0.{i}", 53)) for i in range(3)] + [("n", ("10.0.0.1", True))]
    keys += [("v", ("10.0.0.1", f"::{i}")) for i in range(3)] + [("m", "::1")]
    odd = [("m",), ("x", 1), "m", ("m", ("a", 1.5)), ("m", ("a", "b", "c"))]
    ours, theirs = core.native.TrackMap(), OrderedDict()
    for step in range(3000):
        k = rng.choice(keys)
        op = rng.randrange(9)
        if op < 3:
            v = object()
            ours[k] = v
            theirs[k] = v
        elif op == 3:
            got = [m.get(k, "absent") for m in (ours, theirs)]
            assert got[0] is got[1]
        elif op == 4:
            if k in theirs:
                ours.move_to_end(k, last=bool(step % 2))
                theirs.move_to_end(k, last=bool(step % 2))
            else:
                with pytest.raises(KeyError):
                    ours.move_to_end(k)
        elif op == 5:
            assert ours.pop(k, None) is theirs.pop(k, None)
        elif op == 6 and theirs:
            last = bool(step % 3)
            a, b = ours.popitem(last=last), theirs.popitem(last=last)
            assert a[0] == b[0] and a[1] is b[1]
        elif op == 7 and k in theirs:
            del ours[k]
            del theirs[k]
        elif op == 8 and step % 500 == 0:
            ours.clear()
            theirs.clear()
        assert len(ours) == len(theirs) and (k in ours) == (k in theirs)
        assert list(ours) == list(theirs) == list(ours.keys())
        assert [v for v in ours.values()] == list(theirs.values())
        assert list(ours.items()) == list(theirs.items())
    for k in odd:
        assert k not in ours and ours.get(k) is None
        with pytest.raises(KeyError):
            ours[k]
    with pytest.raises(TypeError):
        ours[odd[0]] = 1
    ours[keys[0]] = 1
    ours[keys[1]] = 2
    it = iter(ours.items())
    next(it)
    ours.move_to_end(keys[0])
    with pytest.raises(RuntimeError):
        next(it)
    ours.clear()
    with pytest.raises(KeyError):
        ours.popitem()


def test_both_cores_count_alike_in_a_storm_of_sweepers_under_the_budget(monkeypatch):
    """Many sources sweeping at once with the item budget full: tracks make room
    themselves (the stalest is active), or evict the stalest when it went quiet."""
    rng = random.Random(21)
    flows = []
    for k in range(8000):
        s = rng.randrange(40) if k < 6000 else rng.randrange(8)  # then most go quiet
        flows.append(
            Flow(
                T0 + k * 0.05,
                f"10.1.{s}.9",
                40000 + k % 999,
                public(rng.randrange(100_000)),
                27017,
                Transport.TCP,
                Outcome.NO_ANSWER,
                f"C{k}",
                None,
            )
        )
    runs = {}
    for name in ("python", "native"):
        use_core(monkeypatch, name)
        det = Detector(_models(vertical=False), settings=DetectorSettings(**SETTINGS))
        alerts = replay(det, flows[:5000])
        middle = _state(det)
        alerts += replay(det, flows[5000:])
        runs[name] = (alerts + det.finish(), det.stats.as_dict(), middle)
    slow, fast = runs["python"], runs["native"]
    assert slow[1]["budget_evictions"] > 1000 and len(slow[0]) > 20
    assert fast == slow


def test_the_compiled_dispatch_reads_the_clock_python_sets(monkeypatch):
    # the dispatch reads the detector's clock from its attributes on every record (and
    # hands it to the counting): a clock moved by Python (`advance`, a restore) is the
    # one the next record meets, on both cores
    flows = _storm(4000, 5)
    runs = {}
    for name in ("python", "native"):
        det = detector(monkeypatch, name, recorder=True)
        lateness = det.settings.allowed_lateness
        alerts = replay(det, flows[:2000])
        ahead = flows[2000].ts + lateness + 300
        alerts += det.advance(ahead)  # the next 1,000 records are now too late
        alerts += replay(det, flows[2000:3000])
        later = [f._replace(ts=f.ts + lateness + 600) for f in flows[3000:]]
        alerts += replay(det, later)  # and these move the clock on again
        runs[name] = (alerts + det.finish(), det.stats.as_dict(), det.recorder.calls, det.max_ts)
    slow, fast = runs["python"], runs["native"]
    assert fast == slow and len(slow[0]) > 10
    assert slow[1]["late_records"] >= 1000
    assert slow[3] == max(f.ts for f in later) > ahead


class ClockedDetector(Detector):
    """A detector whose clock is a property (seeing every read and write)."""

    @property
    def max_ts(self) -> float:
        self.reads = getattr(self, "reads", 0) + 1
        return self._clock

    @max_ts.setter
    def max_ts(self, value: float) -> None:
        self.writes = getattr(self, "writes", 0) + 1
        self._clock = value


def test_a_detector_whose_clock_is_a_property_is_dispatched_through_it(monkeypatch):
    flows = _storm(3000, 6)
    runs = {}
    for name in ("python", "native"):
        use_core(monkeypatch, name)
        det = ClockedDetector(_models(), settings=DetectorSettings(**SETTINGS))
        alerts = replay(det, flows)
        runs[name] = (alerts + det.finish(), det.stats.as_dict(), det.writes)
    slow, fast = runs["python"], runs["native"]
    assert fast == slow and len(slow[0]) > 10
    assert slow[2] > 1000  # every newer record set the clock through the property
