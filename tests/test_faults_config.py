"""The config loader against hostile files (issue 9 items 13, 14, 27): every failure is
one ConfigError naming file:line, fast and in bounded memory, and live mode keeps its
running config when a reload meets such a file."""

from __future__ import annotations

import os
import threading
import time

import pytest

from zeekndm.config import load_config
from zeekndm.errors import ConfigError
from zeekndm.regularfile import read_regular_file
from zeekndm.yamlfile import MAX_CONFIG_BYTES, MAX_DEPTH

LAUGHS = (
    "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    + "models: *i\n"
)


def write(tmp_path, text: str | bytes):
    path = tmp_path / "zeekndm.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


HOSTILE = {
    "billion laughs": (LAUGHS, "expands to more than"),
    "deep nesting": ("detector: " + "[" * (MAX_DEPTH + 50) + "]" * (MAX_DEPTH + 50), "nested"),
    "deep mappings": (
        "detector:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)),
        "nested",
    ),
    "5000-digit integer": ("detector:\n  max_tracked_sources: " + "9" * 5000 + "\n", "digits"),
    "window 10**400": (
        "models:\n  mongodb_scan_internal_external:\n    threshold:\n      window: 1"
        + "0" * 400 + "\n",
        "digits",
    ),
    "float overflow": ("detector:\n  allowed_lateness: 1.0e+400\n", "not a finite number"),
    "inf": ("detector:\n  allowed_lateness: .inf\n", "not a finite number"),
    "nan": ("logging:\n  stats_interval: .nan\n", "not a finite number"),
    "list as a key": ("detector:\n  ? [a, b]\n  : 1\n", "mapping key must be a plain value"),
    "mapping as a key": ("? {a: 1}\n: 1\n", "mapping key must be a plain value"),
    "bad timestamp": ("sensor_name: !!timestamp 2024-13-45\n", "invalid value"),
    "python tag": ("sensor_name: !!python/object:os.system [ls]\n", "invalid YAML"),
    "control character": ("sensor_name: a\x07b\n", "invalid YAML"),
    "huge duration": ("detector:\n  allowed_lateness: 1.0e+300\n", "at most"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_config_is_one_config_error_with_file_and_line(tmp_path, case):
    text, message = HOSTILE[case]
    path = write(tmp_path, text)
    started = time.monotonic()
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert time.monotonic() - started < 2.0
    assert f"{path}:" in str(info.value)  # file:line


def test_aliases_within_the_cap_still_work(tmp_path):
    text = (
        "detector: &d {allowed_lateness: 600}\n"
        "models:\n  mongodb_scan_internal_external: &off {enabled: false}\n"
        "  ldap_scanning_inside_to_outside: *off\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.detector.allowed_lateness == 600
    off = ("mongodb_scan_internal_external", "ldap_scanning_inside_to_outside")
    assert not any(config.models[name].enabled for name in off)


def test_non_utf8_config_names_the_line(tmp_path):
    path = write(tmp_path, b"sensor_name: a\n# ok\nsensor_name: \xff\n")
    with pytest.raises(ConfigError, match=rf"{path}:3: cannot read: not UTF-8"):
        load_config(path)


# -- item 14: only regular files, bounded -------------------------------------------------
def test_config_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "zeekndm.yaml"
    os.mkfifo(fifo)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(_error_of(fifo)), daemon=True)
    thread.start()
    thread.join(5)
    assert result and "not a regular file (a FIFO)" in result[0]


def test_config_symlinked_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "zeekndm.yaml"
    link.symlink_to("/dev/zero")
    assert "not a regular file (a character device)" in _error_of(link)


def test_config_larger_than_the_cap_is_refused(tmp_path):
    path = tmp_path / "zeekndm.yaml"
    with open(path, "wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)  # sparse: no disk used
    assert "too large" in _error_of(path)


def test_read_regular_file_reads_a_small_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert read_regular_file(path, 3) == b"abc"
    with pytest.raises(OSError, match="too large"):
        read_regular_file(path, 2)


def _error_of(path) -> str:
    try:
        load_config(path)
    except ConfigError as exc:
        return str(exc)
    return ""


# -- ranges of the detector section and the event clock ------------------------------------
def test_event_time_bounds_are_read_from_the_detector_section(tmp_path):
    path = write(
        tmp_path,
        "detector:\n  max_future: 3600\n  max_time_jump: off\n  time_jump_confirmations: 5\n",
    )
    clock = load_config(path).event_time
    assert (clock.max_future, clock.max_jump, clock.confirmations) == (3600.0, None, 5)
    defaults = load_config(None).event_time
    assert defaults.max_future == 86400 and defaults.max_jump == 86400


@pytest.mark.parametrize(
    "line", ["max_future: 0", "max_time_jump: -5", "time_jump_confirmations: 0", "max_future: x"]
)
def test_bad_event_time_bounds_name_the_key(tmp_path, line):
    with pytest.raises(ConfigError, match=r"detector\.(max_future|max_time_jump|time_jump_conf)"):
        load_config(write(tmp_path, f"detector:\n  {line}\n"))


# -- item 27: a mistyped model name suggests the closest -----------------------------------
def test_mistyped_model_override_suggests_the_shipped_name(tmp_path):
    path = write(
        tmp_path, "models:\n  mongodb_scan_internal_extrenal:\n    threshold: {window: 600}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "did you mean 'mongodb_scan_internal_external'?" in message
    assert f"{path}:2" in message and "required key" not in message


# -- item 13: live mode keeps its running config -------------------------------------------
@pytest.mark.parametrize("case", ["billion laughs", "deep nesting", "window 10**400", "inf"])
def test_live_reload_of_a_hostile_config_keeps_the_running_one(tmp_path, case, caplog):
    from zeekndm.detect import Detector
    from zeekndm.live import LiveRunner

    path = write(tmp_path, "models:\n  mongodb_scan_internal_external:\n    enabled: false\n")
    config = load_config(path)
    runner = LiveRunner(config, inputs=[str(tmp_path)], state_dir=str(tmp_path / "state"))
    runner.detector = Detector(config.enabled_models, config.classifier(), config.detector)
    path.write_text(HOSTILE[case][0])
    runner.reload_requested = True
    runner._maybe_reload()
    assert runner.config is config
    running = [m.name for m in runner.detector.models]
    assert running == [m.name for m in config.enabled_models]
    assert "ldap_scanning_inside_to_outside" in running
    assert "mongodb_scan_internal_external" not in running
    assert any("config reload rejected" in r.getMessage() for r in caplog.records)
