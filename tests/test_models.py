from __future__ import annotations

import pytest

from zeekndm.errors import ModelError
from zeekndm.models import Model, builtin_model_dicts, merge_model
from zeekndm.yamlfile import load_yaml_text

BASE = builtin_model_dicts()["mongodb_scan_internal_external"]


def broken(**override):
    return merge_model(BASE, override)


def test_unknown_key_names_key_path():
    with pytest.raises(ModelError, match=r"threshold\.treshold.*unknown key|unknown key.*treshold"):
        Model.from_dict(broken(threshold={"treshold": 5}), path="models.m")


def test_error_carries_file_and_line():
    text = BASE_TEXT.replace("window: 300", "window: -5")
    with pytest.raises(ModelError) as info:
        Model.from_dict(load_yaml_text(text, filename="m.yaml"), source="m.yaml")
    assert "m.yaml:" in str(info.value) and "threshold.window" in str(info.value)
    assert "must be > 0" in str(info.value)


def test_bad_port_spec_rejected():
    with pytest.raises(ModelError, match="PORT/tcp"):
        Model.from_dict(broken(ports=["27017"]))


def test_port_out_of_range_rejected():
    with pytest.raises(ModelError, match="1-65535"):
        Model.from_dict(broken(ports=["70000/tcp"]))


def test_unknown_technique_rejected():
    threat = [
        {
            "tactic": {"id": "TA0007", "name": "Discovery"},
            "techniques": [{"id": "T9999", "name": "Nope"}],
        }
    ]
    with pytest.raises(ModelError, match="unknown ATT&CK technique T9999"):
        Model.from_dict(broken(threat=threat))


def test_technique_under_wrong_tactic_rejected():
    threat = [
        {
            "tactic": {"id": "TA0043", "name": "Reconnaissance"},
            "techniques": [{"id": "T1046", "name": "Network Service Discovery"}],
        }
    ]
    with pytest.raises(ModelError, match="does not belong to tactic TA0043"):
        Model.from_dict(broken(threat=threat))


def test_technique_name_must_match_id():
    threat = [{"tactic": {"id": "TA0007"}, "techniques": [{"id": "T1046", "name": "Port Scan"}]}]
    with pytest.raises(ModelError, match="is named 'Network Service Discovery'"):
        Model.from_dict(broken(threat=threat))


def test_thresholds_must_increase():
    with pytest.raises(ModelError, match="increase strictly"):
        Model.from_dict(broken(threshold={"distinct_destinations": {"low": 50, "medium": 20}}))


def test_id_must_be_uuid():
    with pytest.raises(ModelError, match="must be a UUID"):
        Model.from_dict(broken(id="mongo-1"))


def test_all_errors_collected_in_one_pass():
    with pytest.raises(ModelError) as info:
        Model.from_dict(broken(id="x", ports=["bad"], update_interval=0))
    assert len(str(info.value).splitlines()) == 3


def test_duplicate_yaml_key_rejected_with_line():
    with pytest.raises(Exception, match=r"m.yaml:3.*duplicate key 'name'"):
        load_yaml_text("id: x\nname: a\nname: b\n", filename="m.yaml")


def test_port_range_expands_to_port_keys():
    model = Model.from_dict(broken(ports=["3268-3269/tcp", "389/udp"]))
    assert model.port_keys() == [("tcp", 3268), ("tcp", 3269), ("udp", 389)]


BASE_TEXT = """
id: 3fdf7a82-872b-42e5-82e8-c26acb0928ff
name: mongodb_scan_internal_external
ports: [27017/tcp]
threshold:
  distinct_destinations: {low: 25}
  window: 300
description: d
what_to_look_for: w
threat:
  - tactic: {id: TA0007}
    techniques: [{id: T1046}]
"""
