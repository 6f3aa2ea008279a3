"""The `inputs:` config section and `--input` switches of `zeekndm run`; the registry."""

from __future__ import annotations

import json
import socket

import pytest

from zeekndm.config import load_config
from zeekndm.errors import ConfigErrors, ZeekNDMError
from zeekndm.live.inputs import DEFAULT_PATTERNS, InputSpec, input_from_arg
from zeekndm.live.registry import Registry


def config(tmp_path, text: str):
    path = tmp_path / "zeekndm.yaml"
    path.write_text(text)
    return load_config(path)


def test_inputs_of_every_kind_are_read_from_the_config(tmp_path):
    c = config(
        tmp_path,
        "inputs:\n"
        "  - {type: zeek_dir, path: /opt/zeek/logs/current}\n"
        "  - {type: dir, path: /var/log/suricata, patterns: ['eve.json*']}\n"
        "  - {type: file, path: /var/log/suricata/eve.json, format: suricata_eve}\n"
        "  - {type: unix_stream, path: /run/zeekndm/eve.sock}\n",
    )
    assert c.inputs == (
        InputSpec("zeek_dir", "/opt/zeek/logs/current", DEFAULT_PATTERNS),
        InputSpec("dir", "/var/log/suricata", ("eve.json*",)),
        InputSpec("file", "/var/log/suricata/eve.json", DEFAULT_PATTERNS, "suricata_eve"),
        InputSpec("unix_stream", "/run/zeekndm/eve.sock"),
    )


@pytest.mark.parametrize(
    "entry, problem",
    [
        ("{type: pipe, path: /x}", "(inputs[0].type): must be one of zeek_dir"),
        ("{path: /x}", "(inputs[0].type): required key is missing"),
        ("{type: file}", "(inputs[0].path): required key is missing"),
        ("{type: file, path: /x, colour: red}", "(inputs[0].colour): unknown key 'colour'"),
        ("{type: file, path: /x, format: csv}", "(inputs[0].format): must be one of"),
        ("{type: zeek_dir, path: /x, patterns: []}", "(inputs[0].patterns): must be a non-empty"),
        ("{type: unix_dgram, path: /x, format: zeek_tsv}", "carries Suricata eve events"),
        ("/var/log/conn.log", "(inputs[0]): must be a mapping with type and path"),
    ],
)
def test_a_bad_input_entry_names_the_file_line_and_key(tmp_path, entry, problem):
    with pytest.raises(ConfigErrors) as err:
        config(tmp_path, f"inputs:\n  - {entry}\n")
    text = str(err.value)
    assert "zeekndm.yaml:2" in text and problem in text


def test_input_switch_maps_what_exists_at_the_path(tmp_path):
    (tmp_path / "conn.log").write_text("")
    assert input_from_arg(str(tmp_path)) == InputSpec("zeek_dir", str(tmp_path))
    assert input_from_arg(str(tmp_path / "conn.log")).type == "file"
    assert input_from_arg(str(tmp_path / "later.log")).type == "file"  # may appear later
    assert input_from_arg("unix_stream:/run/x.sock") == InputSpec("unix_stream", "/run/x.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = f"/tmp/zndm-{id(sock)}.sock"
    sock.bind(path)
    try:
        assert input_from_arg(path).type == "unix_dgram"
    finally:
        sock.close()
    with pytest.raises(ZeekNDMError, match="no socket path"):
        input_from_arg("unix_dgram:")


def test_registry_commit_is_atomic_and_reloads(tmp_path):
    r = Registry(tmp_path / "state")
    assert r.load() is None
    r.lock()
    r.commit({"follow": {"files": []}, "totals": {"records": 5}})
    r.commit({"follow": {"files": []}, "totals": {"records": 7}})
    assert r.load()["totals"] == {"records": 7}
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == [
        "registry.json",
        "zeekndm.lock",
    ]  # no temporary file left behind
    r.unlock()


def test_registry_refuses_a_corrupt_or_foreign_file(tmp_path):
    r = Registry(tmp_path)
    (tmp_path / "registry.json").write_text("{torn")
    with pytest.raises(ZeekNDMError, match="registry.json: the registry is not valid JSON"):
        r.load()
    (tmp_path / "registry.json").write_text(json.dumps({"version": 99}))
    with pytest.raises(ZeekNDMError, match="unsupported registry version 99"):
        r.load()


def test_one_state_directory_one_process(tmp_path):
    a, b = Registry(tmp_path), Registry(tmp_path)
    a.lock()
    with pytest.raises(ZeekNDMError, match="another zeekndm run is using this state directory"):
        b.lock()
    a.unlock()
    b.lock()
    b.unlock()
