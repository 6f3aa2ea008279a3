"""The fused block path (compiled core, Zeek TSV replay: `TsvScanner.scan_observe` runs
the pipeline's clock test and the detector's dispatch for the plain records of a block)
gives what the unfused path and the pure-Python core give: the same alerts (ids
included), line and record counts, bad lines with their numbers, filtered and ignored
counts, detector statistics and event clock, wherever it has to stop in a block (a
detection, a record beyond the clock's ceiling, a header, an odd or too-long line)."""

from __future__ import annotations

import io
import re

import pytest
from conftest import use_core

from zeekndm import pipeline as pipeline_mod
from zeekndm.config import load_config
from zeekndm.detect import Detector
from zeekndm.eventtime import EventTimeSettings
from zeekndm.models import watched_ports
from zeekndm.pipeline import Pipeline
from zeekndm.readers import FusedScan, ReadStats, read_flows
from zeekndm.sinks.memory import MemorySink
from zeekndm.synth import Traffic, write_zeek_tsv

T0 = 1_700_000_000.0
DAY = 86400.0


class Spy(FusedScan):
    """Counts the fused steps run and the records they observed natively."""

    __slots__ = ("_result",)
    steps = 0
    observed = 0

    @property
    def result(self):
        return self._result

    @result.setter
    def result(self, value):
        self._result = value
        if value is not None:
            Spy.steps += 1
            Spy.observed += value[5]


def storm_log(records: int = 6000, seed: int = 5) -> str:
    t = Traffic(seed=seed, start=T0)
    t.background(records)
    t.scan("10.1.7.23", 27017, targets=900, start_offset=100.0, duration=600.0)
    t.scan("10.1.7.24", 445, targets=400, start_offset=2000.0, duration=300.0)
    out = io.StringIO()
    write_zeek_tsv(t.in_write_order(), out)
    return out.getvalue()


def split(text: str) -> tuple[list[str], list[str]]:
    lines = text.splitlines(keepends=True)
    head = [ln for ln in lines if ln.startswith("#") and not ln.startswith("#close")]
    body = [ln for ln in lines if not ln.startswith("#")]
    return head, body


def replace_ts(line: str, ts: float) -> str:
    cols = line.split("\t")
    cols[0] = f"{ts:.6f}"
    return "\t".join(cols)


def replay(
    monkeypatch, core: str, path, *, fused: bool = True, wall=T0 + 3 * DAY, config_path=None, **kw
):
    use_core(monkeypatch, core)
    monkeypatch.setattr(pipeline_mod, "FusedScan", Spy)
    Spy.steps = Spy.observed = 0
    config = load_config(config_path)
    sink = MemorySink()
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    p = Pipeline(detector, [sink], event_time=EventTimeSettings(**kw), wall_clock=lambda: wall)
    stats = ReadStats(str(path))
    flows = read_flows(path, stats, dports=watched_ports(detector.models), max_line_bytes=2000)
    p.push_many(flows if fused else (f for f in flows), stats)
    p.finish_input()
    p.deliver(flush=True)
    docs = [
        {**d, "event": {k: v for k, v in d["event"].items() if k != "created"}} for d in sink.docs
    ]
    ds = detector.stats
    funnel = {k: repr(v) for k, v in ds.funnel.items()}
    return {
        "alerts": docs,
        "read": (
            stats.lines,
            stats.records,
            stats.filtered,
            stats.ignored,
            dict(stats.bad_by_reason),
            stats.samples,
            dict(stats.skipped_by_reason),
        ),
        "detector": (
            ds.records,
            ds.matched,
            ds.outbound,
            ds.discarded,
            ds.dropped,
            ds.late_records,
            funnel,
            detector.max_ts,
        ),
        "clock": (p.clock.high, p.clock.rejected, p.clock.ceiling),
        "fused": (Spy.steps, Spy.observed),
        "snapshot": detector.snapshot(),
    }


def check(monkeypatch, path, **kw) -> dict:
    fused = replay(monkeypatch, "native", path, **kw)
    unfused = replay(monkeypatch, "native", path, fused=False, **kw)
    python = replay(monkeypatch, "python", path, **kw)
    assert unfused["fused"] == python["fused"] == (0, 0)
    assert fused["fused"][1] > 0, "the fused path was not taken"
    for key in ("alerts", "read", "detector", "clock", "snapshot"):
        assert fused[key] == unfused[key] == python[key], key
    assert fused["alerts"], "no alert: the test shows nothing"
    return fused


def test_a_storm_with_detections_mid_block_is_the_same_fused(monkeypatch, tmp_path):
    path = tmp_path / "conn.log"
    path.write_text(storm_log())
    got = check(monkeypatch, path)
    assert got["read"][1] == got["detector"][0]  # every record reached the detector


def test_records_beyond_the_ceiling_mid_block_go_to_the_event_clock(monkeypatch, tmp_path):
    head, body = split(storm_log())
    # a far-future record (a bad ts), a refuted jump and, near the end, a confirmed one
    body[700] = replace_ts(body[700], T0 + 40 * DAY)
    body[1500] = replace_ts(body[1500], T0 + 2 * DAY)
    body[1501] = replace_ts(body[1501], T0 + 2 * DAY + 1)
    last = float(body[-40].split("\t")[0])
    for i in range(len(body) - 30, len(body)):
        body[i] = replace_ts(body[i], last + 1.5 * DAY + i)
    path = tmp_path / "conn.log"
    path.write_text("".join(head + body))
    got = check(monkeypatch, path, max_jump=DAY, confirmations=3)
    assert got["read"][4].get("bad ts", 0) >= 3
    assert got["fused"][0] > 3  # it stopped and went on


def test_headers_odd_and_too_long_lines_mid_block(monkeypatch, tmp_path):
    head, body = split(storm_log(seed=9))
    watched = [i for i, ln in enumerate(body) if "\t27017\t" in ln]
    a, b, c, d = watched[50], watched[200], watched[400], watched[600]
    # an odd line the Python parser reads (IPv6 source on a watched port), a bad one,
    # a too-long one, a comment, and a new header block mid-file (a rotation)
    cols = body[a].split("\t")
    cols[2] = "2001:db8::5"
    body[a] = "\t".join(cols)
    body[b] = body[b].replace("\t27017\t", "\t27017\tx\t", 1)
    body[c] = body[c].rstrip("\n") + "\t" + "y" * 3000 + "\n"
    body.insert(d, "#just a comment\n")
    body.insert(d + 300, "".join(head))
    path = tmp_path / "conn.log"
    path.write_text("".join(head + body))
    got = check(monkeypatch, path)
    reasons = got["read"][4]
    assert reasons.get("line too long") == 1 and sum(reasons.values()) >= 2, reasons
    assert got["read"][3] > len(head)  # the comment and the second header were ignored


def test_a_recorder_a_wrapped_stream_or_another_detector_is_not_fused(monkeypatch, tmp_path):
    use_core(monkeypatch, "native")
    path = tmp_path / "conn.log"
    path.write_text(storm_log(1000))
    config = load_config(None)
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    p = Pipeline(detector, [MemorySink()])
    stats = ReadStats(str(path))
    flows = read_flows(path, stats, dports=watched_ports(detector.models))
    assert p._fusable(flows, stats) is not None
    assert p._fusable((f for f in flows), stats) is None
    assert p._fusable(flows, ReadStats("other")) is not None  # its own stats only: see below
    assert p._fusable(flows, None) is None
    detector.recorder = object()  # type: ignore[assignment]
    assert p._fusable(flows, stats) is None
    detector.recorder = None
    detector.observe = lambda flow: ()  # type: ignore[method-assign]
    assert p._fusable(flows, stats) is None


def test_a_stream_handed_another_stats_object_reads_unfused(monkeypatch, tmp_path):
    """The reader takes the fused path only when push_many's `source` is its own stats."""
    use_core(monkeypatch, "native")
    monkeypatch.setattr(pipeline_mod, "FusedScan", Spy)
    Spy.steps = Spy.observed = 0
    path = tmp_path / "conn.log"
    path.write_text(storm_log(3000))
    config = load_config(None)
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    p = Pipeline(detector, [MemorySink()])
    stats = ReadStats(str(path))
    p.push_many(read_flows(path, stats, dports=watched_ports(detector.models)), ReadStats("x"))
    assert Spy.steps == 0
    assert stats.records == detector.stats.records > 0


@pytest.mark.parametrize("n", [0, 1, 17])
def test_short_files_are_the_same(monkeypatch, tmp_path, n):
    head, body = split(storm_log())
    scans = [ln for ln in body if "\t27017\t" in ln][:n]
    path = tmp_path / "conn.log"
    path.write_text("".join(head + scans))
    fused = replay(monkeypatch, "native", path)
    python = replay(monkeypatch, "python", path)
    for key in ("alerts", "read", "detector", "clock"):
        assert fused[key] == python[key], key


# The fused path parses a watched line natively and makes its `Flow` only where Python
# reads the record (a model's discards, a local-field disagreement, an episode's start
# and alerts, evidence samples): each of those against the unfused and Python paths.


def with_columns(text: str, value) -> str:
    """`text` with community_id and _node_name columns, `value(i, cols)` giving both for
    the i-th data line (cols: its fields, editable)."""
    out, i = [], 0
    for line in text.splitlines(keepends=True):
        if line.startswith("#fields\t"):
            line = line.rstrip("\n") + "\tcommunity_id\t_node_name\n"
        elif line.startswith("#types\t"):
            line = line.rstrip("\n") + "\tstring\tstring\n"
        elif not line.startswith("#"):
            cols = line.rstrip("\n").split("\t")
            cid, node = value(i, cols)
            line = "\t".join([*cols, cid, node]) + "\n"
            i += 1
        out.append(line)
    return "".join(out)


def test_uids_community_ids_and_sensors_in_the_evidence_fused(monkeypatch, tmp_path):
    def value(i, cols):
        # set, unset, empty and (empty) values for the uid, community id and sensor
        if i % 7 == 0:
            cols[1] = "-"
        elif i % 11 == 0:
            cols[1] = ""
        cid = ("-", "", "(empty)", f"1:{i:08d}base64=")[i % 4]
        node = ("-", "", "edge-1", "edge-2")[i % 5 % 4]
        return cid, node

    path = tmp_path / "conn.log"
    path.write_text(with_columns(storm_log(), value))
    got = check(monkeypatch, path)
    text = repr(got["alerts"])
    assert "base64=" in text and "edge-" in text  # community ids and sensors were read


def test_a_models_discards_and_local_field_disagreements_fused(monkeypatch, tmp_path):
    head, body = split(storm_log(seed=13))
    fields = next(h for h in head if h.startswith("#fields")).rstrip("\n").split("\t")[1:]
    lo, lr = fields.index("local_orig"), fields.index("local_resp")
    for i, line in enumerate(body):
        cols = line.rstrip("\n").split("\t")
        if cols[5] not in ("27017", "445"):
            continue
        # Zeek disagrees with the classification now and then: an external destination
        # it calls local (the direction changes), a source it calls remote, a flag
        # that is neither T nor F
        if i % 9 == 0:
            cols[lr] = "T"
        elif i % 13 == 0:
            cols[lo] = "F"
        elif i % 17 == 0:
            cols[lo] = "?"
        body[i] = "\t".join(cols) + "\n"
    path = tmp_path / "conn.log"
    path.write_text("".join(head + body))
    config = tmp_path / "config.yaml"
    config.write_text(
        "models:\n"
        "  mongodb_scan_internal_external:\n"
        "    discards: {destinations: [0.0.0.0/2, 192.0.0.0/3], source_ports: [40000]}\n"
    )
    got = check(monkeypatch, path, config_path=config)
    assert got["detector"][3] > 0  # records discarded by the model
    plain = replay(monkeypatch, "native", path)
    assert plain["detector"][3] < got["detector"][3]


def test_ipv6_and_odd_watched_lines_go_through_python_fused(monkeypatch, tmp_path):
    head, body = split(storm_log(seed=21))
    watched = [i for i, ln in enumerate(body) if "\t27017\t" in ln]
    for n, i in enumerate(watched[::3]):
        cols = body[i].split("\t")
        if n % 4 == 0:
            cols[4] = "2001:db8::" + format(n, "x")  # an IPv6 destination
        elif n % 4 == 1:
            cols[2] = "10.1.7.023"  # not canonical: the Python parser decides
        elif n % 4 == 2:
            cols[0] = cols[0] + "e0"  # a time in exponent form
        else:
            cols[5] = "027017"
        body[i] = "\t".join(cols)
    path = tmp_path / "conn.log"
    path.write_text("".join(head + body))
    got = check(monkeypatch, path)
    assert got["fused"][0] > 100  # it stopped at each odd line and went on


def test_uids_and_community_ids_of_every_length_fused(monkeypatch, tmp_path):
    # the compiled track keeps short texts in place and longer ones on the heap (at 22
    # bytes the form changes): every length reads back whole, in alerts and snapshots
    def value(i, cols):
        cols[1] = (f"U{i}x" * 20)[: (0, 1, 21, 22, 23, 40)[i % 6]] or "-"
        cid = (f"1:{i}=" * 20)[: (0, 22, 23, 30)[i % 4]] or "-"
        return cid, "-"

    path = tmp_path / "conn.log"
    path.write_text(with_columns(storm_log(), value))
    got = check(monkeypatch, path)
    seen = {len(s) for s in re.findall(r"'(U\d+x[^']*)'", repr(got))}
    assert {21, 22, 23, 40} <= seen, sorted(seen)  # they reached alerts and snapshots
