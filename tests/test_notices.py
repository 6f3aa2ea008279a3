"""Notice mappings (Zeek's own scan notices as alerts) have their own small schema: no
ports, no direction; validated with file:line errors; overridden under `notices:`."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from conftest import REPO
from helpers import Run

from zeekndm.cli import ExitStatus
from zeekndm.errors import ModelError
from zeekndm.models import load_builtin_models
from zeekndm.notices import (
    NOTICE_TYPES,
    NoticeMapping,
    load_notice_mappings,
    notice_json_schema,
    notice_mapping_dicts,
)
from zeekndm.readers import ReadStats, read_flows
from zeekndm.readers.zeek_notice import Skip, ZeekNoticeParser
from zeekndm.yamlfile import load_yaml_text

DATA = REPO / "tests" / "data" / "notice"
MAPPINGS = load_notice_mappings()
ADDRESS = "zeek_scan_address_scan"
PORT = "zeek_scan_port_scan"


def replay(*args):
    run = Run(["replay", DATA / "notice.log", *args])
    return run


def by_rule(alerts, name):
    return [a for a in alerts if a["rule"]["name"] == name]


@pytest.mark.parametrize("name", sorted(MAPPINGS))
def test_shipped_mapping_file_is_named_after_it_and_has_no_model_fields(name):
    assert (resources.files("zeekndm") / "notice_mappings" / f"{name}.yaml").is_file()
    raw = notice_mapping_dicts()[name]
    assert set(raw) <= set(notice_json_schema()["properties"])
    assert not {"ports", "match", "direction", "track_by"} & set(raw)


def test_every_readable_notice_type_has_exactly_one_mapping_with_its_own_id():
    assert sorted(m.notice for m in MAPPINGS.values()) == sorted(NOTICE_TYPES)
    ids = [m.id for m in MAPPINGS.values()] + [m.id for m in load_builtin_models().values()]
    assert len(set(ids)) == len(ids)


def test_committed_notice_schema_is_current_and_printed_by_schema_notice():
    committed = json.loads((REPO / "config" / "notice.schema.json").read_text())
    assert committed == notice_json_schema(), (
        "config/notice.schema.json is stale: run "
        "`zeekndm schema --notice > config/notice.schema.json`"
    )
    run = Run(["schema", "--notice"])
    assert run.status == ExitStatus.OK and json.loads(run.out) == committed


def test_a_broken_mapping_is_refused_with_file_line_and_key():
    text = (
        "id: 4a543367-885d-4414-9ef6-a5c759a409ea\n"
        "name: zeek_scan_address_scan\n"
        "notice: Scan::Adress_Scan\n"
        "ports: [1-1024/tcp]\n"
        "threshold:\n"
        "  levels: {low: 25, medium: 10}\n"
        "  window: 300\n"
        "description: d\nwhat_to_look_for: w\n"
        "threat: [{tactic: {id: TA0007}, techniques: [{id: T1046}]}]\n"
    )
    data = load_yaml_text(text, filename="mapping.yaml")
    with pytest.raises(ModelError) as caught:
        NoticeMapping.from_dict(data, source="mapping.yaml")
    message = str(caught.value)
    assert "mapping.yaml:3 (notice): zeekndm reads the evidence of Scan::Address_Scan" in message
    assert "mapping.yaml:4 (ports): unknown key 'ports'" in message
    assert "mapping.yaml:6 (threshold.levels): thresholds must increase strictly" in message


def test_a_notice_mapping_is_not_a_model_the_detector_runs():
    assert not set(MAPPINGS) & set(load_builtin_models())
    run = Run(["models", "--json"])
    assert run.status == ExitStatus.OK
    assert not {ADDRESS, PORT} & {m["name"] for m in json.loads(run.out)}


def test_a_zeekndm_notice_naming_a_mapping_finds_no_model():
    parser = ZeekNoticeParser()
    record = {"ts": 1.0, "note": "ZeekNDM::X", "src": "10.0.0.1", "n": 40}
    with pytest.raises(Skip, match=f"no model {ADDRESS}"):
        parser.detection({**record, "zeekndm_model": ADDRESS})


def test_notices_overrides_reach_the_alerts(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        f"notices:\n  {ADDRESS}:\n    what_to_look_for: Page the SOC.\n"
        f"  {PORT}:\n    threshold: {{levels: {{low: 5, medium: 16}}}}\n"
    )
    run = replay("--config", cfg)
    assert run.status == ExitStatus.OK, run.err
    [address] = by_rule(run.alerts, ADDRESS)
    assert address["zeekndm"]["what_to_look_for"] == "Page the SOC."
    [port] = by_rule(run.alerts, PORT)  # 17 ports: medium under the overridden levels
    assert (port["zeekndm"]["severity_name"], port["zeekndm"]["threshold"]) == ("medium", 16)
    assert port["zeekndm"]["window_seconds"] == 300.0  # the rest of the mapping merged in


def test_a_disabled_mapping_skips_its_notices_and_counts_them(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(f"notices:\n  {ADDRESS}: {{enabled: false}}\n")
    run = replay("--config", cfg)
    assert run.status == ExitStatus.OK, run.err
    assert not by_rule(run.alerts, ADDRESS) and by_rule(run.alerts, PORT)
    stats = ReadStats("notice.log")
    from zeekndm.config import load_config

    config = load_config(cfg)
    list(read_flows(DATA / "notice.log", stats, models=config.models, notices=config.notices))
    assert stats.skipped_by_reason == {"notice type not mapped": 1, "notice mapping disabled": 1}
    shown = Run(["check-config", "--config", cfg]).out
    assert f"notice Scan::Address_Scan as {ADDRESS} (disabled): low 25" in shown


def test_a_mapping_configured_as_a_model_says_where_it_goes_now(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(f"models:\n  {ADDRESS}:\n    what_to_look_for: x\n")
    run = Run(["check-config", "--config", cfg])
    assert run.status == ExitStatus.USAGE
    assert f"{cfg}:2 (models.{ADDRESS}): {ADDRESS} maps a Zeek notice, it is not a model" in run.err
    assert f"notices.{ADDRESS}" in run.err


def test_unknown_or_reshaped_notice_mappings_are_config_errors(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(
        "notices:\n"
        "  zeek_scan_adress_scan: {enabled: false}\n"
        f"  {PORT}:\n    notice: Scan::Address_Scan\n    direction: outbound\n"
    )
    run = Run(["check-config", "--config", cfg])
    assert run.status == ExitStatus.USAGE
    assert f"{cfg}:2 (notices.zeek_scan_adress_scan): there is no notice mapping" in run.err
    assert f"did you mean '{ADDRESS}'?" in run.err
    assert f"{cfg}:5 (notices.{PORT}.direction): unknown key 'direction'" in run.err


def test_a_mapping_cannot_be_moved_to_another_notice_type(tmp_path):
    cfg = tmp_path / "z.yaml"
    cfg.write_text(f"notices:\n  {PORT}:\n    notice: Scan::Address_Scan\n")
    run = Run(["check-config", "--config", cfg])
    assert run.status == ExitStatus.USAGE
    assert f"(notices.{PORT}): a notice mapping's name and notice cannot be changed" in run.err


def test_a_live_reload_gives_running_notice_streams_the_new_mappings(tmp_path):
    from zeekndm.config import load_config
    from zeekndm.detect import Detector
    from zeekndm.live.registry import Totals
    from zeekndm.live.streams import Streams
    from zeekndm.pipeline import Pipeline
    from zeekndm.sinks.memory import MemorySink

    config = load_config(None)
    sink = MemorySink()
    pipeline = Pipeline(Detector([], config.classifier(), config.detector), [sink])
    streams = Streams(None, config.models, lambda: 0.0, lambda path: None, notices=config.notices)
    lines = (DATA / "notice.log").read_bytes().split(b"\n")[:-1]
    numbered = list(enumerate(lines, 1))
    stream = streams.open("k", str(DATA / "notice.log"), lines, resumed=False)
    # the header and the ZeekNDM notices; a reload; then the two scan.zeek notices
    streams.feed(stream, numbered[:11], pipeline, Totals())
    cfg = tmp_path / "z.yaml"
    cfg.write_text(f"notices:\n  {PORT}: {{enabled: false}}\n")
    new = load_config(cfg)
    streams.set_models(new.models, new.notices)
    streams.feed(stream, numbered[11:], pipeline, Totals())
    pipeline.deliver(flush=True)
    assert [d["rule"]["name"] for d in sink.docs][-1] == ADDRESS
    assert stream.stats.skipped_by_reason["notice mapping disabled"] == 1
