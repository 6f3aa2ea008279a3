"""The Zeek package in zeek_scripts/: it parses, it is formatted, it agrees with the models.

Zeek itself cannot run here, so the scripts are checked with zeekscript (the parser
behind `zeek-format`), and the places where the scripts and the Python side must agree
(model defaults, notice fields, the `sub` evidence words) are compared as text.
"""

from __future__ import annotations

import io
import json
import re

import pytest
from conftest import REPO

from zeekndm import zeekgen
from zeekndm.models import Model, builtin_model_dicts, load_builtin_models, merge_model
from zeekndm.readers.zeek_notice import parse_sub
from zeekndm.zeekgen import zeek_models

zeekscript = pytest.importorskip("zeekscript")

SCRIPTS = REPO / "zeek_scripts"
ZEEK_FILES = sorted(SCRIPTS.glob("*.zeek"))
DEFAULTS = SCRIPTS / "models_defaults.zeek"


def test_package_has_scripts():
    assert {p.name for p in ZEEK_FILES} >= {"__load__.zeek", "main.zeek", "models_defaults.zeek"}


@pytest.mark.parametrize("path", ZEEK_FILES, ids=lambda p: p.name)
def test_script_parses_without_errors(path):
    script = zeekscript.Script(path)
    ok = script.parse()
    line, lineno, msg = script.get_error() if not ok else (None, None, None)
    assert ok, f"{path.name}:{(lineno or 0) + 1}: {msg}: {line}"


@pytest.mark.parametrize("path", ZEEK_FILES, ids=lambda p: p.name)
def test_script_is_formatted_like_zeek_format(path):
    script = zeekscript.Script(path)
    script.parse()
    out = io.BytesIO()
    script.format(out)
    assert out.getvalue().decode() == path.read_text(), (
        f"{path.name} is not zeek-formatted; run: zeek-format -i zeek_scripts/{path.name}"
    )


@pytest.mark.parametrize("path", ZEEK_FILES, ids=lambda p: p.name)
def test_script_opens_with_a_file_doc_comment(path):
    assert path.read_text().startswith("##!"), f"{path.name} must open with ##!"


def test_generated_defaults_match_the_model_yaml():
    expected = zeekgen.render(load_builtin_models())
    assert DEFAULTS.read_text() == expected, (
        "zeek_scripts/models_defaults.zeek is stale (the model YAML changed); "
        f"regenerate it with: {zeekgen.REGENERATE}"
    )


def test_check_mode_reports_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "models_defaults.zeek"
    stale.write_text(DEFAULTS.read_text().replace("_low = 25", "_low = 26", 1))
    assert zeekgen.main(["--check", str(stale)]) == 1
    assert zeekgen.REGENERATE in capsys.readouterr().err
    assert zeekgen.main(["--check", str(DEFAULTS)]) == 0


def test_defaults_carry_every_threshold_window_and_port_of_each_model():
    text = DEFAULTS.read_text()
    for name, model in zeek_models(load_builtin_models()).items():
        for severity, count in model.threshold.levels:
            assert f"const {name}_{severity} = {count} &redef;" in text
        assert f"const {name}_window = {model.threshold.window:.0f}secs &redef;" in text
        ports = re.search(rf"const {name}_ports: set\[port\] = \{{(.*?)\}}", text, re.S)
        assert ports is not None
        listed = {p.strip() for p in ports.group(1).split(",")}
        assert listed == {f"{p}/{t}" for t, p in model.port_keys()}


def test_port_ranges_are_expanded_to_single_ports():
    ldap = load_builtin_models()["ldap_scanning_inside_to_outside"]
    assert zeekgen.zeek_ports(ldap) == ["389/tcp", "389/udp", "636/tcp", "3268/tcp", "3269/tcp"]


def test_allowlists_render_as_zeek_subnets_that_parse():
    base = builtin_model_dicts()["mongodb_scan_internal_external"]
    model = Model.from_dict(
        merge_model(
            base,
            {
                "discards": {
                    "sources": ["10.9.0.0/16", "2001:db8::/32"],
                    "destinations": ["1.2.3.4"],
                }
            },
        )
    )
    text = zeekgen.render({model.name: model})
    compact = "".join(text.split())
    assert "ignore_sources:set[subnet]={10.9.0.0/16,[2001:db8::]/32}&redef;" in compact
    assert "ignore_destinations:set[subnet]={1.2.3.4/32}&redef;" in compact
    assert zeekscript.Script(io.BytesIO(text.encode())).parse()


@pytest.mark.parametrize("name", sorted(load_builtin_models()))
def test_every_model_has_a_zeek_script_or_says_it_is_python_only(name):
    model = load_builtin_models()[name]
    has_script = (SCRIPTS / f"{name}.zeek").exists()
    loaded = f"@load ./{name}" in (SCRIPTS / "__load__.zeek").read_text()
    in_defaults = f"const {name}_window" in DEFAULTS.read_text()
    if model.python_only:
        assert not has_script and not loaded and not in_defaults, (
            f"{name} is python_only but zeek_scripts/ has it: drop the flag or the script"
        )
    else:
        assert has_script and loaded and in_defaults, (
            f"zeek_scripts/ lacks {name}: write its script or mark the model python_only"
        )


@pytest.mark.parametrize("name", sorted(zeek_models(load_builtin_models())))
def test_every_model_has_a_script_with_its_notice_type(name):
    path = SCRIPTS / f"{name}.zeek"
    assert path.exists(), f"zeek_scripts/{name}.zeek is missing"
    text = path.read_text()
    notes = re.findall(r"^\t\t([A-Z][A-Za-z_]+),$", text, re.M)
    assert [n.lower() for n in notes] == [name], "notice type must be the model name"
    for severity, _ in load_builtin_models()[name].threshold.levels:
        assert f"{name}_{severity}" in text
    assert f"@load ./{name}" in (SCRIPTS / "__load__.zeek").read_text()


def test_zkg_meta_points_at_the_package_folder():
    meta = (SCRIPTS / "zkg.meta").read_text()
    assert meta.startswith("[package]")
    assert re.search(r"^script_dir = \.$", meta, re.M)


def _main_zeek() -> str:
    return (SCRIPTS / "main.zeek").read_text()


def test_notice_columns_in_the_example_log_are_the_ones_main_zeek_adds():
    declared = re.findall(r"^\t(zeekndm_\w+): .*&log", _main_zeek(), re.M)
    fields_line = next(
        line
        for line in (SCRIPTS / "examples" / "notice.log").read_text().splitlines()
        if line.startswith("#fields")
    )
    logged = [f for f in fields_line.split("\t") if f.startswith("zeekndm_")]
    assert logged == declared


def test_sub_evidence_words_in_main_zeek_match_the_example_notices():
    fmt = re.search(r'local sub = fmt\("([^"]+)"', _main_zeek())
    assert fmt is not None
    script_keys = [w.split("=")[0] for w in fmt.group(1).split()]
    for line in (SCRIPTS / "examples" / "notice.json").read_text().splitlines():
        assert list(parse_sub(json.loads(line)["sub"])) == script_keys


def test_every_threshold_is_redefinable():
    text = DEFAULTS.read_text() + _main_zeek()
    consts = re.findall(r"^\tconst (\w+)[^;]*;", text, re.M | re.S)
    assert consts
    for block in re.findall(r"^\tconst [^;]*;", text, re.M | re.S):
        assert "&redef" in block, block
