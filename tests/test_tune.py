"""`zeekndm tune` on generated history with known scanners and benign heavy hitters
(tests/tunegen.py), checked against what `replay` then does."""

from __future__ import annotations

import gzip
import io
import json
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import tunegen

from zeekndm.cli import Environment, main
from zeekndm.config import load_config
from zeekndm.detect import Detector
from zeekndm.flow import Outcome
from zeekndm.models import SEVERITIES
from zeekndm.tune_history import history_files, parse_time
from zeekndm.tune_stats import ModelStats, SourceStats, Span
from zeekndm.tune_suggest import suggest

MONGO = "mongodb_scan_internal_external"
LDAP = "ldap_scanning_inside_to_outside"


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, Environment(stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


def tune_json(argv: list[str]) -> dict:
    code, out, err = run(["tune", *argv, "--json"])
    assert code == 0, err
    return json.loads(out)


def replay_alerts(files: list[str], config: str | None = None, models: str | None = None):
    argv = ["replay", *files, "--output", "-"]
    if config:
        argv += ["--config", config]
    if models:
        argv += ["--models", models]
    code, out, err = run(argv)
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines() if line.strip()], err


def tallies(alerts: list[dict]) -> dict[str, dict]:
    """Per model: alerts by state and episodes reaching each severity, counted from
    replay's alerts as tune's what-if defines them (an escalation raises the latest
    episode of the same source and target)."""
    out: dict[str, dict] = defaultdict(lambda: {"alerts": Counter(), "highest": {}, "eps": []})
    for a in alerts:
        z = a["zeekndm"]
        t = out[a["rule"]["name"]]
        state = z["alert_state"]
        t["alerts"][state] += 1
        subject = (a.get("source", {}).get("ip", ""), z.get("target"))
        rank = SEVERITIES.index(z["severity_name"])
        if state == "start" or (state == "escalated" and subject not in t["highest"]):
            t["highest"][subject] = len(t["eps"])
            t["eps"].append(rank)
        elif state == "escalated":
            i = t["highest"][subject]
            t["eps"][i] = max(t["eps"][i], rank)
    result = {}
    for name, t in out.items():
        episodes = {s: sum(1 for r in t["eps"] if r >= i) for i, s in enumerate(SEVERITIES)}
        result[name] = {"alerts": dict(t["alerts"]), "episodes": episodes}
    return result


def _nonzero(d: dict) -> dict:
    return {k: v for k, v in d.items() if v}


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("logs")
    return root, tunegen.write_zeekctl_archive(root)


@pytest.fixture(scope="module")
def tuned(archive, tmp_path_factory):
    """tune over the archive: its JSON, the overlay and the replay with the overlay."""
    root, files = archive
    out = tmp_path_factory.mktemp("tuned")
    overlay = out / "overlay.yaml"
    doc = tune_json([str(root), "--output", str(overlay)])
    paths = [f["path"] for f in doc["history"]["files"]]
    alerts, _ = replay_alerts(paths, config=str(overlay))
    return doc, overlay, paths, alerts


def model(doc: dict, name: str) -> dict:
    return next(m for m in doc["models"] if m["name"] == name)


# -- the detector's recorder hook --------------------------------------------------------
def test_recorder_hook_reports_every_counted_record_with_its_window_count():
    from helpers import flow, public

    config = load_config(None)
    detector = Detector(config.enabled_models, config.classifier(), config.detector)
    heard = []

    class Recorder:
        def counted(self, model, key, ts, outcome, window, distinct):
            heard.append((model, key, ts, outcome, window, distinct))

    detector.recorder = Recorder()
    t0 = tunegen.DAY0
    for i in range(5):  # one source, five distinct hosts, the third one twice
        detector.observe(flow("10.0.0.1", public(i + 1), 27017, t0 + i))
    detector.observe(flow("10.0.0.1", public(3), 27017, t0 + 10, outcome=Outcome.ESTABLISHED))
    detector.observe(flow("10.0.0.1", public(9), 443, t0 + 11))  # no model counts 443
    detector.observe(flow("10.0.0.1", "10.0.0.2", 27017, t0 + 12))  # internal: not outbound
    mongo = [h for h in heard if h[0] == MONGO]
    assert [(h[1], h[4], h[5]) for h in mongo] == [
        ("10.0.0.1", 1, 1),
        ("10.0.0.1", 2, 2),
        ("10.0.0.1", 3, 3),
        ("10.0.0.1", 4, 4),
        ("10.0.0.1", 5, 5),
        ("10.0.0.1", 5, 5),  # a retry counts once
    ]
    assert mongo[-1][3] is Outcome.ESTABLISHED and mongo[-1][2] == t0 + 10
    assert {h[0] for h in heard} == {MONGO, "mongodb_scan_internal_internal"}
    internal = [h for h in heard if h[0] == "mongodb_scan_internal_internal"]
    assert [(h[1], h[4]) for h in internal] == [("10.0.0.1", 1)]


def test_no_recorder_is_the_default():
    config = load_config(None)
    assert Detector(config.enabled_models, config.classifier()).recorder is None


# -- statistics and suggestion -----------------------------------------------------------
def test_statistics_show_the_real_peaks_of_scanners_and_heavy_hitters(tuned):
    doc, *_ = tuned
    mongo = model(doc, MONGO)
    top = {s["key"]: s for s in mongo["top_sources"]}
    assert top[tunegen.AUTHORISED_SCANNER]["peak"] == 200
    assert top[tunegen.MONGO_SWEEPER]["peak"] == 150
    assert top[tunegen.BACKUP_JOB]["peak"] == 70
    assert top[tunegen.MONITOR]["peak"] == 40
    assert top[tunegen.MONITOR]["character"] == "benign"
    assert top[tunegen.MONGO_SWEEPER]["character"] == "scanner"
    assert top[tunegen.BACKUP_JOB]["character"] == "other"  # answered, but only once
    assert top[tunegen.SLOW_SCANNER]["slow_peak"] == 30  # never more than 5 in a window
    assert top[tunegen.SLOW_SCANNER]["peak"] == 6  # both ends of the 300 s window
    assert mongo["peak"]["max"] == 200
    assert mongo["sources_seen"] == 40 + 5  # the ordinary clients and the five above
    assert doc["history"]["records"] == sum(f["records"] for f in doc["history"]["files"])
    assert len(doc["history"]["files"]) == 72


def test_suggested_thresholds_keep_every_scanner_alerting_and_every_benign_source_quiet(tuned):
    doc, overlay, paths, alerts = tuned
    by_model = defaultdict(set)
    for a in alerts:
        by_model[a["rule"]["name"]].add(a.get("source", {}).get("ip"))
    for name, scanners in tunegen.SCANNERS.items():
        assert set(scanners) <= by_model[name], name
    for name, benign in tunegen.BENIGN.items():
        assert not set(benign) & by_model[name], name
    mongo = model(doc, MONGO)
    assert mongo["changed"] and mongo["suggested"]["low"] == 60  # 40 x 1.5
    assert mongo["suggested"]["low"] <= 70  # the backup job (not benign) keeps alerting
    assert model(doc, LDAP)["suggested"]["low"] == 45  # 30 x 1.5
    # ...where the shipped levels made the heavy hitters alert
    before, _ = replay_alerts(paths)
    loud = {a.get("source", {}).get("ip") for a in before}
    assert tunegen.MONITOR in loud and tunegen.DIRECTORY_CLIENT in loud


def test_reasoning_names_the_benign_peak_the_margin_and_the_source_kept(tuned):
    doc, *_ = tuned
    reasons = " ".join(model(doc, MONGO)["reasons"])
    assert "benign-looking" in reasons and "40" in reasons and tunegen.MONITOR in reasons
    assert "x1.5 = 60" in reasons
    assert tunegen.BACKUP_JOB in reasons  # the smallest non-benign peak that alerts today


def test_what_if_counts_equal_replay_with_the_overlay(tuned, archive):
    doc, overlay, paths, alerts = tuned
    got = tallies(alerts)
    for m in doc["models"]:
        promised = m["what_if"]["suggested"]
        seen = got.get(m["name"], {"alerts": {}, "episodes": {}})
        assert _nonzero(promised["alerts"]) == seen["alerts"], m["name"]
        assert _nonzero(promised["episodes"]) == _nonzero(seen["episodes"]), m["name"]
    # and the current row is what a replay with today's config writes
    before, _ = replay_alerts(paths)
    got = tallies(before)
    for m in doc["models"]:
        seen = got.get(m["name"], {"alerts": {}})
        assert _nonzero(m["what_if"]["current"]["alerts"]) == seen["alerts"], m["name"]


def test_what_if_table_lower_thresholds_make_more_episodes(tuned):
    doc, *_ = tuned
    w = model(doc, MONGO)["what_if"]
    low = [w[k]["episodes"]["low"] for k in ("x0.5", "suggested", "x2", "x4")]
    assert low == sorted(low, reverse=True) and low[0] > low[-1]
    assert w["current"]["episodes_per_day"]["low"] > w["suggested"]["episodes_per_day"]["low"]


def test_overlay_is_a_valid_config_naming_its_history(tuned):
    doc, overlay, paths, _ = tuned
    text = overlay.read_text()
    code, out, err = run(["check-config", "--config", str(overlay)])
    assert code == 0, err
    assert "72 files" in text and paths[0] in text and "Base config: the built-in defaults" in text
    config = load_config(overlay)
    levels = dict(config.models[MONGO].threshold.levels)
    assert levels == model(doc, MONGO)["suggested"]
    # the authorised scanner is only suggested, commented out, with a warning
    assert f"{tunegen.AUTHORISED_SCANNER}/32" in text
    assert all(
        line.lstrip().startswith("#")
        for line in text.splitlines()
        if tunegen.AUTHORISED_SCANNER in line
    )
    assert not config.models[MONGO].discard_sources
    chronic = {c["key"]: c for c in model(doc, MONGO)["chronic"]}
    assert "behaves like a scanner" in chronic[tunegen.AUTHORISED_SCANNER]["reason"]
    assert tunegen.MONITOR not in chronic  # quiet under the suggestion: nothing to discard


def test_overlay_keeps_the_base_config_and_enables_a_tuned_model(archive, tmp_path):
    root, files = archive
    base = tmp_path / "base.yaml"
    base.write_text(
        "sensor_name: edge-1\ninternal_networks: {networks: [10.0.0.0/8]}\n"
        "models:\n  mongodb_scan_internal_external:\n    discards: {sources: [10.2.0.2/32]}\n"
    )
    overlay = tmp_path / "o.yaml"
    some = [str(files[h]) for h in (2, 26, 50)]  # 02:00 of each day: the authorised scanner
    code, out, err = run(
        ["tune", *some, "--config", str(base), "--models", f"{MONGO},ssh_scan_internal_external"]
        + ["--output", str(overlay)]
    )
    assert code == 0, err
    assert "also running" in out and "ldap_scanning_inside_to_outside" in out
    config = load_config(overlay)
    assert config.sensor_name == "edge-1"
    assert config.models["ssh_scan_internal_external"].enabled
    assert [str(n) for n in config.models[MONGO].discard_sources] == ["10.2.0.2/32"]
    text = overlay.read_text()
    assert "10.2.0.2/32, 10.9.9.9/32" in text  # the commented suggestion keeps the list whole


def test_plot_is_a_png(archive, tmp_path):
    pytest.importorskip("matplotlib")
    root, files = archive
    png = tmp_path / "peaks.png"
    code, out, err = run(["tune", *map(str, files[24:36]), "--plot", str(png)])
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    folder = tmp_path / "plots"
    folder.mkdir()
    code, out, err = run(["tune", *map(str, files[24:36]), "--plot", str(folder)])
    assert code == 0, err
    names = sorted(p.name for p in folder.iterdir())
    assert f"{MONGO}.png" in names and all(n.endswith(".png") for n in names)


def test_eve_history_gives_the_same_statistics_and_suggestion(tmp_path):
    root = tmp_path / "logs"
    tunegen.write_zeekctl_archive(root, days=1, seed=9)
    doc = tune_json([str(root)])
    eve = tunegen.write_eve_history(tmp_path / "eve.json", days=1, seed=9)
    got = tune_json([str(eve)])
    assert got["history"]["files"][0]["format"] == "suricata_eve"
    for name in (MONGO, LDAP):
        a, b = model(doc, name), model(got, name)
        assert a["suggested"] == b["suggested"]
        assert [(s["key"], s["peak"]) for s in a["top_sources"]] == [
            (s["key"], s["peak"]) for s in b["top_sources"]
        ]


def test_bad_lines_are_counted_as_replay_counts_them(archive, tmp_path):
    root, files = archive
    raw = gzip.decompress(files[30].read_bytes()).decode().splitlines()
    at = next(i for i, line in enumerate(raw) if "\t27017\t" in line)
    bad = raw[at].split("\t")
    bad[0] = "yesterday"
    raw[at + 1 : at + 1] = ["\t".join(bad), "garbage\twith\ttabs", "\t".join(bad[:5])]
    path = tmp_path / "conn.bad.log.gz"
    path.write_bytes(gzip.compress(("\n".join(raw) + "\n").encode()))
    doc = tune_json([str(path)])
    f = doc["history"]["files"][0]
    _, err = replay_alerts([str(path)])
    summary = next(line for line in err.splitlines() if line.startswith(f"  {path}:"))
    assert f"{f['bad_lines']} bad lines" in summary and f["bad_lines"] >= 1
    for reason, n in f["bad_by_reason"].items():
        assert f"{reason}: {n}" in summary


def test_since_and_until_keep_only_that_time(archive):
    root, files = archive
    doc = tune_json([str(root), "--since", "2023-11-15", "--until", "2023-11-15T12:00:00Z"])
    h = doc["history"]
    assert len(h["files"]) == 12  # day 1, hours 0-11: other days are not even opened
    assert h["first"] >= parse_time("2023-11-15") and h["last"] < parse_time("2023-11-15T12:00")
    top = {s["key"]: s for s in model(doc, MONGO)["top_sources"]}
    assert tunegen.MONGO_SWEEPER in top and tunegen.BACKUP_JOB not in top


def test_zeekctl_archive_is_read_day_by_day_hour_by_hour(archive):
    root, files = archive
    for i, f in enumerate(reversed(files)):  # modification times the wrong way round
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    got = [hf.path for hf in history_files([str(root)])]
    assert got == files


def test_errors_name_the_problem(tmp_path):
    code, _, err = run(["tune", str(tmp_path / "nothing")])
    assert code == 1 and "no such file" in err
    code, _, err = run(["tune", str(tmp_path)])
    assert code == 1 and "no conn*/eve* logs" in err
    code, _, err = run(["tune", str(tmp_path), "--since", "last tuesday"])
    assert code == 1 and "--since 'last tuesday'" in err
    code, _, err = run(["tune", str(tmp_path), "--models", "mongodb_scan_internal_extrenal"])
    assert code == 2 and "did you mean" in err
    code, _, err = run(["tune", str(tmp_path), "--plot", str(tmp_path / "x.svg")])
    assert code == 1 and "FILE.png" in err


# -- the suggestion on its own -----------------------------------------------------------
def _stats(rows: dict[str, tuple[int, float, int]], days: int = 3) -> ModelStats:
    """key -> (peak, failure share, days active)"""
    sources = {}
    for key, (peak, failed, active) in rows.items():
        s = SourceStats(tunegen.DAY0)
        s.attempts, s.failures = 100, int(failed * 100)
        s.answered = 100 - s.failures
        s.peak = s.slow_peak = peak
        s.days = set(range(active))
        s.hours = {d * 24 + h for d in range(active) for h in range(24)}
        sources[key] = s
    return ModelStats(MONGO, "source", sources, Span(tunegen.DAY0, tunegen.DAY0 + days * 86400 - 1))


def test_low_stops_at_a_source_that_does_not_look_benign():
    m = load_config(None).models[MONGO]
    s = suggest(m, m.threshold.levels, _stats({"10.0.0.1": (40, 0.0, 3), "10.0.0.2": (50, 0.9, 1)}))
    assert s.levels[0][1] == 50 and "10.0.0.2" in " ".join(s.reasons)


def test_no_threshold_separates_a_benign_source_above_a_scanner():
    m = load_config(None).models[MONGO]
    s = suggest(m, m.threshold.levels, _stats({"10.0.0.1": (90, 0.0, 3), "10.0.0.2": (50, 0.9, 1)}))
    assert s.levels == m.threshold.levels and "no threshold separates" in " ".join(s.reasons)
    assert [c.label for c in s.chronic] == ["10.0.0.1"]


def test_never_below_the_shipped_floor():
    m = load_config(None).models[MONGO]
    lowered = m.threshold.__class__(
        (("low", 5), ("medium", 10), ("high", 20)), m.threshold.window, early=m.threshold.early
    )
    import dataclasses

    m2 = dataclasses.replace(m, threshold=lowered)
    s = suggest(m2, m.threshold.levels, _stats({"10.0.0.1": (3, 0.0, 3)}))
    assert s.levels == m.threshold.levels and "shipped floor" in " ".join(s.reasons)


# -- a real capture ----------------------------------------------------------------------
def test_rita_day_as_a_zeekctl_directory_keeps_the_inbound_port_scan_alerting(real, tmp_path):
    """rita's missing_host day (24 hourly gz files of an internet-exposed server) read as
    a directory: the 1,013-port vertical scan from 165.154.254.36 is slow (never more
    than 14 ports in a window) but its slow-path count reaches the per-track cap; it looks
    like a scanner, keeps alerting, and the overlay's replay gives what the what-if
    promised."""
    day = real("zeek/rita/missing_host_2024-04-19")
    overlay = tmp_path / "o.yaml"
    name = "portscan_external_internal"
    doc = tune_json([str(day), "--models", name, "--output", str(overlay)])
    assert len(doc["history"]["files"]) == 24
    assert doc["history"]["records"] == 31_367
    m = model(doc, name)
    top = next(s for s in m["top_sources"] if s["key"] == "165.154.254.36 > 64.225.56.201")
    assert top["character"] == "scanner" and top["failure_share"] == 1.0
    assert top["slow_peak"] == 1000 and top["peak"] < 15  # the slow path, not the window
    assert m["peak"]["max"] == 62 and m["sources_seen"] > 7000
    paths = [f["path"] for f in doc["history"]["files"]]
    alerts, _ = replay_alerts(paths, config=str(overlay))
    got = tallies(alerts).get(name, {"alerts": {}, "episodes": {}})
    assert _nonzero(m["what_if"]["suggested"]["alerts"]) == got["alerts"]
    assert _nonzero(m["what_if"]["suggested"]["episodes"]) == _nonzero(got["episodes"])
    assert any(a.get("source", {}).get("ip") == "165.154.254.36" for a in alerts)
