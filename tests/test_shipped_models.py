"""Sweeps every shipped model, offline: schema, identity, ATT&CK mapping, file naming."""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest
from conftest import REPO

from zeekndm import attack
from zeekndm.models import (
    SEVERITIES,
    builtin_model_dicts,
    load_builtin_models,
    model_json_schema,
)

MODELS = load_builtin_models()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_model_file_is_named_after_model(name):
    assert re.fullmatch(r"[a-z][a-z0-9_-]+", name)
    assert (resources.files("zeekndm") / "builtin_models" / f"{name}.yaml").is_file()


def test_shipped_models_have_unique_ids_and_names():
    ids = [m.id for m in MODELS.values()]
    assert len(set(ids)) == len(ids)


def test_seed_models_keep_t1046_under_discovery_and_t1595_under_reconnaissance():
    for name in ("mongodb_scan_internal_external", "ldap_scanning_inside_to_outside"):
        mapping = {e.tactic.id: [t.id for t in e.techniques] for e in MODELS[name].threat}
        assert mapping["TA0007"] == ["T1046"] and mapping["TA0043"][0] == "T1595"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_model_maps_a_discovery_or_reconnaissance_technique(name):
    tactics = {e.tactic.id for e in MODELS[name].threat}
    assert tactics & {"TA0007", "TA0043"}


def test_ping_sweeps_map_remote_system_discovery_and_sweeps_scanning_ip_blocks():
    for name, model in MODELS.items():
        if model.icmp_types:
            assert "T1018" in model.technique_ids, name
    assert "T1595.001" in MODELS["ssh_scan_internal_external"].technique_ids
    assert "T1595.002" in MODELS["docker_scan_internal_external"].technique_ids


def test_library_has_at_least_30_models_in_three_directions():
    assert len(MODELS) >= 30
    assert {m.direction for m in MODELS.values()} >= {"outbound", "inbound", "internal"}
    assert {m.track_by for m in MODELS.values()} >= {"source", "source_destination"}


def test_inbound_models_are_off_by_default_and_outbound_and_internal_sweeps_on():
    assert not any(m.enabled for m in MODELS.values() if m.direction == "inbound")
    on = {m.name for m in MODELS.values() if m.enabled}
    assert {
        "mongodb_scan_internal_external",
        "ldap_scanning_inside_to_outside",
        "smb_scan_internal_internal",
        "port_445_scanning_outbound",
    } <= on
    assert {m.direction for m in MODELS.values() if m.enabled} == {"outbound", "internal"}
    # every default model names its ports, so the replay prefilter keeps working
    assert all(not r.wide for m in MODELS.values() if m.enabled for r in m.ports)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_model_techniques_match_vendored_attack_table(name):
    for entry in MODELS[name].threat:
        assert attack.TACTICS[entry.tactic.id] == entry.tactic.name
        for t in entry.techniques:
            tech_name, tactics = attack.TECHNIQUES[t.id]
            assert t.name == tech_name and entry.tactic.id in tactics
            assert t.reference == attack.technique_reference(t.id)
            assert t.reference.startswith("https://attack.mitre.org/techniques/T")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_model_thresholds_increase_with_severity(name):
    levels = MODELS[name].threshold.levels
    assert [s for s, _ in levels] == [s for s in SEVERITIES if s in dict(levels)]
    counts = [c for _, c in levels]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_seed_model_ports_match_design():
    mongo = {str(p) for p in MODELS["mongodb_scan_internal_external"].ports}
    ldap = {str(p) for p in MODELS["ldap_scanning_inside_to_outside"].ports}
    assert mongo == {"27017/tcp"}
    assert ldap == {"389/tcp", "389/udp", "636/tcp", "3268-3269/tcp"}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_model_has_no_keys_outside_the_schema(name):
    schema = model_json_schema()
    assert set(builtin_model_dicts()[name]) <= set(schema["properties"])


def test_committed_model_schema_is_current():
    committed = json.loads((REPO / "config" / "model.schema.json").read_text())
    assert committed == model_json_schema(), (
        "config/model.schema.json is stale: run `zeekndm schema > config/model.schema.json`"
    )
