from __future__ import annotations

import pytest
from conftest import REPO

from zeekndm.config import load_config
from zeekndm.errors import ConfigError
from zeekndm.models import load_builtin_models


def write(tmp_path, text: str):
    path = tmp_path / "zeekndm.yaml"
    path.write_text(text)
    return path


def test_shipped_example_config_is_valid():
    config = load_config(REPO / "config" / "zeekndm.yaml")
    assert set(config.models) == set(load_builtin_models())
    assert config.models["ldap_scanning_inside_to_outside"].enabled


def test_defaults_without_a_file():
    config = load_config(None)
    assert "10.0.0.0/8" in config.internal_networks and config.trust_local_fields
    assert config.detector.allowed_lateness >= 300


def test_misspelt_threshold_key_names_full_key_path_and_line(tmp_path):
    path = write(tmp_path, "models:\n  mongodb_scan_internal_external:\n    treshold: {}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert f"{path}:3" in message
    assert "models.mongodb_scan_internal_external" in message and "'treshold'" in message


def test_wrong_type_names_key_and_reason(tmp_path):
    path = write(tmp_path, "detector:\n  allowed_lateness: soon\n")
    with pytest.raises(ConfigError, match=r":2 \(detector.allowed_lateness\): expected number"):
        load_config(path)


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'internal_nets'"):
        load_config(write(tmp_path, "internal_nets: [10.0.0.0/8]\n"))


def test_bad_network_rejected(tmp_path):
    with pytest.raises(ConfigError, match="not a CIDR"):
        load_config(write(tmp_path, "internal_networks: [10.0.0.0/33]\n"))


def test_override_threshold_keeps_other_fields(tmp_path):
    path = write(
        tmp_path, "models:\n  mongodb_scan_internal_external:\n    threshold:\n      window: 600\n"
    )
    model = load_config(path).models["mongodb_scan_internal_external"]
    assert model.threshold.window == 600 and model.threshold.lowest == 25


def test_error_in_override_points_at_user_file(tmp_path):
    path = write(
        tmp_path, "models:\n  ldap_scanning_inside_to_outside:\n    threshold:\n      window: 0\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:4" in str(info.value)
    assert "models.ldap_scanning_inside_to_outside.threshold.window" in str(info.value)


def test_custom_model_added(tmp_path):
    path = write(
        tmp_path,
        """
models:
  redis_scan_internal_external:
    id: 7c0f6f52-54a1-4f39-9d55-0b1f5c3e2a10
    name: redis_scan_internal_external
    ports: [6379/tcp]
    threshold: {distinct_destinations: {low: 10}, window: 120}
    description: Redis scan.
    what_to_look_for: Look.
    threat:
      - tactic: {id: TA0007}
        techniques: [{id: T1046}]
""",
    )
    assert "redis_scan_internal_external" in load_config(path).models


def test_custom_model_reusing_a_shipped_id_rejected(tmp_path):
    path = write(
        tmp_path,
        """
models:
  copy_model:
    id: 3fdf7a82-872b-42e5-82e8-c26acb0928ff
    name: copy_model
    ports: [6379/tcp]
    threshold: {distinct_destinations: {low: 10}, window: 120}
    description: d
    what_to_look_for: w
    threat: [{tactic: {id: TA0007}, techniques: [{id: T1046}]}]
""",
    )
    with pytest.raises(ConfigError, match="already used by model"):
        load_config(path)


def test_all_errors_reported_in_one_pass(tmp_path):
    path = write(tmp_path, "trust_local_fields: maybe\nbogus: 1\nlogging: {level: loud}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value).splitlines()) == 3


def test_invalid_yaml_syntax_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"zeekndm.yaml:2.*invalid YAML"):
        load_config(write(tmp_path, "a: 1\n  b: [\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
