"""What `enrich` caches (formatted times, per-model fields, episode ids, the ports
sentence) never changes what it returns: the cases where a cache could go wrong."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import random
import struct
from datetime import datetime, timezone

import pytest
from helpers import scan

from zeekndm import detection as detection_module
from zeekndm import enrich as enrich_module
from zeekndm.detect import Detector
from zeekndm.enrich import describe, enrich, isotime
from zeekndm.models import load_builtin_models


def reference(ts):
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outcome(fn, ts):
    try:
        return fn(ts)
    except Exception as exc:  # noqa: BLE001 - the exception's type is the outcome
        return type(exc)


EDGES = [
    0.0,
    -0.0,
    -1.5,
    -0.0000005,
    -0.0000015,
    0.0000005,
    0.0000015,
    1.9999995,
    1.9999994999,
    1e-7,
    -1e-7,
    1700000000.1234565,
    1700000000.9999996,  # rounds up into the next second
    -86400.9999996,  # before 1970, rounding up
    -62135596800.0,  # 0001-01-01
    -62135596800.5,  # before year 1: the reference raises
    253402300799.999999,  # the last microsecond of 9999
    253402300799.9999996,  # rounds into year 10000: the reference raises
    1e300,
    float("inf"),
    float("-inf"),
    float("nan"),
    1700000000,  # an int
    True,
]


@pytest.mark.parametrize("ts", EDGES)
def test_isotime_is_the_reference_text_at_the_edges(ts):
    enrich_module._ISO.clear()
    enrich_module._SECOND.clear()
    want = outcome(reference, ts)
    assert outcome(isotime, ts) == want
    assert outcome(isotime, ts) == want  # and again, from the cache


def test_isotime_is_the_reference_text_on_random_times():
    rnd = random.Random(15)
    values = []
    for _ in range(20_000):
        values.append(rnd.uniform(-62135596800, 253402300799))
        values.append(round(rnd.uniform(1.6e9, 1.8e9), 6))
        values.append(struct.unpack("d", struct.pack("Q", rnd.getrandbits(64)))[0])
    for ts in values:
        assert outcome(isotime, ts) == outcome(reference, ts), ts


def test_times_in_one_second_keep_their_own_microseconds():
    base = 1700000000.0
    texts = [isotime(base + us / 1e6) for us in (1, 2, 999_999, 500_000)]
    assert texts == [
        "2023-11-14T22:13:20.000001Z",
        "2023-11-14T22:13:20.000002Z",
        "2023-11-14T22:13:20.999999Z",
        "2023-11-14T22:13:20.500000Z",
    ]
    assert isotime(base + 1) == "2023-11-14T22:13:21.000000Z"


def test_isotime_caches_stay_bounded(monkeypatch):
    monkeypatch.setattr(enrich_module, "_ISO_MAX", 8)
    monkeypatch.setattr(enrich_module, "_SECOND_MAX", 4)
    for i in range(100):
        ts = 1700000000.25 + i * 1.5
        assert isotime(ts) == reference(ts)
    assert len(enrich_module._ISO) <= 8 and len(enrich_module._SECOND) <= 4


def detections(models, source="10.0.0.5", port=27017, start=1700000000.0):
    det = Detector(models)
    return [d for f in scan(source, port, 30, start=start) for d in det.observe(f)] + det.finish()


def test_each_model_and_a_reloaded_model_get_their_own_fields():
    base = load_builtin_models()["mongodb_scan_internal_external"]
    reloaded = dataclasses.replace(
        base,
        title="reloaded title",
        description="reloaded description",
        what_to_look_for="reloaded advice",
        false_positives=("reloaded fp",),
        version=base.version + 1,
    )
    other = dataclasses.replace(base, id="other-id", name="other_name", threat=())
    for model in (base, reloaded, other, base):
        doc = enrich(detections([model])[0]).doc
        assert doc["rule"]["id"] == model.id and doc["rule"]["name"] == model.name
        assert doc["rule"]["description"] == model.description
        assert doc["rule"]["version"] == str(model.version)
        assert doc["zeekndm"]["title"] == model.title
        assert doc["zeekndm"]["what_to_look_for"] == model.what_to_look_for
        assert doc["zeekndm"]["false_positives"] == list(model.false_positives)
        assert doc["zeekndm"]["model_version"] == model.version
        assert model.name in doc["message"]
        if model.threat:
            assert doc["rule"]["category"] == "Network Service Discovery"
            assert [t["id"] for t in doc["threat"]["tactic"]] == ["TA0007", "TA0043"]
        else:
            assert doc["rule"]["category"] == "Network Scan"
            assert doc["threat"]["technique"] == [] and doc["threat"]["tactic"] == []


def test_an_alerts_document_is_its_own():
    """Parts taken from the per-model cache are copies: changing one alert's document
    (as a sink or a test may) leaves the next alert's alone."""
    models = load_builtin_models()
    model = dataclasses.replace(
        models["mongodb_scan_internal_external"],
        threat=models["mysql_scan_internal_external"].threat,  # with a sub-technique
    )
    first, second = detections([model])[:2]
    doc = enrich(first).doc
    want = copy.deepcopy(enrich(second).doc)
    assert want["threat"]["technique"][1]["subtechnique"][0]["id"] == "T1595.001"
    doc["rule"]["name"] = "changed"
    doc["rule"]["author"].append("x")
    doc["threat"]["technique"][0]["name"] = "changed"
    doc["threat"]["technique"][1]["subtechnique"][0]["name"] = "changed"
    doc["threat"]["technique"][1]["subtechnique"].append({"id": "x"})
    doc["threat"]["tactic"][0]["name"] = "changed"
    doc["zeekndm"]["false_positives"].append("x")
    assert enrich(second).doc == want


def test_episode_and_alert_ids_are_the_documented_hashes():
    model = load_builtin_models()["mongodb_scan_internal_external"]
    seen = set()
    for source, start in (("10.0.0.5", 1700000000.0), ("10.0.0.5", 1700000000.25)):
        for d in detections([model], source=source, start=start):
            raw = f"{model.id}|{d.source}|{d.first_seen:.6f}"
            episode = hashlib.sha256(raw.encode()).hexdigest()[:24]
            raw = f"{episode}|{d.state}|{d.severity}|{d.sequence}"
            alert = hashlib.sha256(raw.encode()).hexdigest()[:32]
            assert d.ids == (episode, alert) == (d.episode_id, d.alert_id)
            assert enrich(d).id == alert
            seen.add(episode)
    assert len(seen) == 2  # the same source, another start: another episode
    detection_module._EPISODES.clear()
    target = dataclasses.replace(d, target="10.9.9.9")
    raw = f"{model.id}|{d.source}>10.9.9.9|{d.first_seen:.6f}"
    assert target.episode_id == hashlib.sha256(raw.encode()).hexdigest()[:24]
    assert d.episode_id != target.episode_id


def test_the_ports_sentence_follows_each_detection():
    d = detections([load_builtin_models()["mongodb_scan_internal_external"]])[0]
    one = describe(d)
    two = describe(dataclasses.replace(d, ports=(27017, 27018), transports=("tcp", "udp")))
    assert " on 27017/tcp " in one
    assert " on 27017, 27018/tcp/udp " in two
    assert describe(d) == one
