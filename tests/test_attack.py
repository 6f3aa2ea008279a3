"""The vendored ATT&CK Enterprise table: its generator, what it ships, and how models use it."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from io import StringIO

import pytest
from conftest import REPO

from zeekndm import attack, attack_gen
from zeekndm.errors import ModelError
from zeekndm.models import Model, builtin_model_dicts, load_builtin_models, merge_model
from zeekndm.notices import load_notice_mappings
from zeekndm.yamlfile import load_yaml_text

# --- a tiny STIX bundle, shaped like MITRE's enterprise-attack.json -----------------------


def _ref(external_id: str, kind: str = "techniques") -> list[dict]:
    url = f"https://attack.mitre.org/{kind}/{external_id.replace('.', '/')}"
    return [{"source_name": "mitre-attack", "external_id": external_id, "url": url}]


def _tactic(stix: str, tid: str, name: str, shortname: str) -> dict:
    return {
        "type": "x-mitre-tactic",
        "id": f"x-mitre-tactic--{stix}",
        "name": name,
        "x_mitre_shortname": shortname,
        "external_references": _ref(tid, "tactics"),
        "x_mitre_domains": ["enterprise-attack"],
        "modified": "2025-01-01T00:00:00.000Z",
    }


def _technique(stix: str, tid: str, name: str, phases: list[str], **extra) -> dict:
    return {
        "type": "attack-pattern",
        "id": f"attack-pattern--{stix}",
        "name": name,
        "external_references": _ref(tid),
        "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": p} for p in phases],
        "x_mitre_domains": ["enterprise-attack"],
        "x_mitre_is_subtechnique": "." in tid,
        "modified": "2025-02-01T00:00:00.000Z",
        **extra,
    }


def tiny_objects() -> list[dict]:
    return [
        {
            "type": "x-mitre-collection",
            "id": "x-mitre-collection--1",
            "name": "Enterprise ATT&CK",
            "x_mitre_version": "99.1",
            "modified": "2030-05-06T07:08:09.000Z",
        },
        {
            "type": "x-mitre-matrix",
            "id": "x-mitre-matrix--1",
            "name": "Enterprise ATT&CK",
            "external_references": [{"source_name": "mitre-attack", "external_id": DOMAIN}],
            # matrix order, not id order: Reconnaissance comes first
            "tactic_refs": ["x-mitre-tactic--recon", "x-mitre-tactic--disc", "x-mitre-tactic--c2"],
        },
        _tactic("disc", "TA0007", "Discovery", "discovery"),
        _tactic("c2", "TA0011", "Command and Control", "command-and-control"),
        _tactic("recon", "TA0043", "Reconnaissance", "reconnaissance"),
        _technique("nsd", "T1046", "Network Service Discovery", ["discovery"]),
        _technique("as", "T1595", "Active Scanning", ["reconnaissance"]),
        _technique("as1", "T1595.001", "Scanning IP Blocks", ["reconnaissance"]),
        _technique("nsp", "T1571", "Non-Standard Port", ["command-and-control"]),
        # in two tactics, listed against matrix order
        _technique("two", "T1133", "External Remote Services", ["discovery", "reconnaissance"]),
        _technique("old", "T1065", "Uncommonly Used Port", ["command-and-control"], revoked=True),
        _technique(
            "dep",
            "T1043",
            "Commonly Used Port",
            ["command-and-control"],
            x_mitre_deprecated=True,
            description="**This technique has been deprecated. Please use [Non-Standard Port]"
            "(https://attack.mitre.org/techniques/T1571) where appropriate.**\n\n"
            "Adversaries may communicate over a commonly used port ([T1046]"
            "(https://attack.mitre.org/techniques/T1046)).",
        ),
        {
            "type": "relationship",
            "id": "relationship--1",
            "relationship_type": "revoked-by",
            "source_ref": "attack-pattern--old",
            "target_ref": "attack-pattern--nsp",
        },
        {"type": "malware", "id": "malware--1", "name": "ignored"},
    ]


DOMAIN = "enterprise-attack"


def write_bundle(path, objects=None):
    bundle = {
        "type": "bundle",
        "id": "bundle--t",
        "objects": tiny_objects() if objects is None else objects,
    }
    path.write_text(json.dumps(bundle, indent=2))
    return path


def generate(tmp_path, objects=None, *extra: str) -> tuple[int, str, attack.AttackMatrix | None]:
    bundle = write_bundle(tmp_path / "enterprise-attack.json", objects)
    out = tmp_path / "table.json.gz"
    err = StringIO()
    rc = attack_gen.main([str(bundle), "--output", str(out), *extra], stderr=err)
    return rc, err.getvalue(), attack.load_matrix(out) if rc == 0 else None


def test_generator_writes_release_number_and_date_from_the_collection(tmp_path):
    rc, err, table = generate(tmp_path)
    assert rc == 0
    assert (table.version, table.modified) == ("99.1", "2030-05-06T07:08:09.000Z")
    assert "ATT&CK Enterprise v99.1 (2030-05-06): 3 tactics, 5 current techniques" in err


def test_generator_lists_tactics_in_matrix_order_with_shortnames(tmp_path):
    _, _, table = generate(tmp_path)
    assert [(t.id, t.name, t.shortname) for t in table.tactics] == [
        ("TA0043", "Reconnaissance", "reconnaissance"),
        ("TA0007", "Discovery", "discovery"),
        ("TA0011", "Command and Control", "command-and-control"),
    ]


def test_generator_maps_techniques_and_subtechniques_to_tactic_ids(tmp_path):
    _, _, table = generate(tmp_path)
    t = table.techniques
    assert (t["T1046"].name, t["T1046"].tactics) == ("Network Service Discovery", ("TA0007",))
    sub = t["T1595.001"]
    assert (sub.name, sub.tactics, sub.parent, sub.retired) == (
        "Scanning IP Blocks",
        ("TA0043",),
        "T1595",
        False,
    )
    assert t["T1133"].tactics == ("TA0043", "TA0007")  # matrix order


def test_generator_flags_revoked_technique_with_its_successor(tmp_path):
    _, _, table = generate(tmp_path)
    old = table.techniques["T1065"]
    assert (old.revoked, old.deprecated, old.revoked_by) == (True, False, "T1571")


def test_generator_flags_deprecated_technique_with_the_techniques_its_note_points_to(tmp_path):
    _, _, table = generate(tmp_path)
    dep = table.techniques["T1043"]
    # only the deprecation note's links count, not links further down the description
    assert (dep.deprecated, dep.revoked, dep.revoked_by, dep.see) == (True, False, None, ("T1571",))


def test_generator_output_is_small_sorted_and_identical_across_runs(tmp_path):
    generate(tmp_path)
    first = (tmp_path / "table.json.gz").read_bytes()
    generate(tmp_path)
    assert (tmp_path / "table.json.gz").read_bytes() == first
    data = json.loads(gzip.decompress(first))
    ids = [t["id"] for t in data["techniques"]]
    assert ids == sorted(ids) and "description" not in json.dumps(data)


def test_generator_reads_a_gzipped_bundle(tmp_path):
    plain = write_bundle(tmp_path / "b.json")
    gz = tmp_path / "enterprise-attack.json.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    out = tmp_path / "t.json.gz"
    assert attack_gen.main([str(gz), "--output", str(out)], stderr=StringIO()) == 0
    assert "T1595.001" in attack.load_matrix(out).techniques


def test_generator_reads_a_cti_directory_given_the_release_number(tmp_path):
    # mitre/cti keeps one small bundle per object and no collection object
    folder = tmp_path / "enterprise-attack"
    for i, obj in enumerate(o for o in tiny_objects() if o["type"] != "x-mitre-collection"):
        sub = folder / obj["type"]
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"{i}.json").write_text(json.dumps({"type": "bundle", "objects": [obj]}))
    out = tmp_path / "t.json.gz"
    err = StringIO()
    assert attack_gen.main([str(folder), "--output", str(out)], stderr=err) == 2
    assert "pass --attack-version" in err.getvalue()
    rc = attack_gen.main(
        [str(folder), "--output", str(out), "--attack-version", "18.1"], stderr=err
    )
    assert rc == 0
    table = attack.load_matrix(out)
    assert table.version == "18.1" and table.modified == "2025-02-01T00:00:00.000Z"
    assert table.techniques["T1065"].revoked_by == "T1571"


def test_generator_rejects_a_mobile_bundle(tmp_path):
    objects = tiny_objects()
    objects[1]["external_references"][0]["external_id"] = "mobile-attack"
    rc, err, _ = generate(tmp_path, objects)
    assert rc == 2 and "not the Enterprise ATT&CK bundle (its matrix is mobile-attack)" in err


def test_generator_names_file_and_line_of_broken_json(tmp_path):
    bad = tmp_path / "enterprise-attack.json"
    bad.write_text('{"type": "bundle",\n "objects": [\n  {"id": oops}]}')
    err = StringIO()
    assert attack_gen.main([str(bad), "--output", str(tmp_path / "t")], stderr=err) == 2
    assert f"{bad}:3: not JSON" in err.getvalue()
    assert not (tmp_path / "t").exists()


def test_generator_rejects_a_technique_under_a_phase_no_tactic_has(tmp_path):
    objects = tiny_objects() + [_technique("x", "T1999", "Odd", ["lunch-break"])]
    rc, err, _ = generate(tmp_path, objects)
    assert rc == 2 and "T1999 'Odd' is filed under kill-chain phase 'lunch-break'" in err


def test_generator_runs_as_a_module(tmp_path):
    bundle = write_bundle(tmp_path / "enterprise-attack.json")
    out = tmp_path / "t.json.gz"
    proc = subprocess.run(
        [sys.executable, "-m", "zeekndm.attack_gen", str(bundle), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert attack.load_matrix(out).version == "99.1"


def test_corrupt_table_is_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "table.json.gz"
    bad.write_bytes(gzip.compress(b"{not json")[:-4])
    with pytest.raises(attack.AttackDataError, match=f"{bad}: corrupt ATT&CK table"):
        attack.load_matrix(bad)
    bad.write_bytes(gzip.compress(b'{"format": 0}'))
    with pytest.raises(attack.AttackDataError, match="regenerate it"):
        attack.load_matrix(bad)


# --- the shipped table -------------------------------------------------------------------

ENTERPRISE_TACTICS = {
    "TA0043": "Reconnaissance",
    "TA0042": "Resource Development",
    "TA0001": "Initial Access",
    "TA0002": "Execution",
    "TA0003": "Persistence",
    "TA0004": "Privilege Escalation",
    "TA0005": "Defense Evasion",
    "TA0006": "Credential Access",
    "TA0007": "Discovery",
    "TA0008": "Lateral Movement",
    "TA0009": "Collection",
    "TA0011": "Command and Control",
    "TA0010": "Exfiltration",
    "TA0040": "Impact",
}


def test_shipped_table_has_every_enterprise_tactic_in_matrix_order():
    assert attack.TACTICS == ENTERPRISE_TACTICS
    assert list(attack.TACTICS) == list(ENTERPRISE_TACTICS)
    assert attack.tactic("TA0007").shortname == "discovery"


def test_shipped_table_covers_the_whole_matrix():
    current = attack.TECHNIQUES
    parents = [t for t in current if "." not in t]
    subs = [t for t in current if "." in t]
    assert len(parents) > 150 and len(subs) > 350
    assert all(t.split(".")[0] in current for t in subs)
    assert all(
        set(tactics) <= set(ENTERPRISE_TACTICS) and tactics for _, tactics in current.values()
    )


@pytest.mark.parametrize(
    "tid, name, tactics",
    [
        ("T1046", "Network Service Discovery", ("TA0007",)),
        ("T1595", "Active Scanning", ("TA0043",)),
        ("T1595.001", "Scanning IP Blocks", ("TA0043",)),
        ("T1595.002", "Vulnerability Scanning", ("TA0043",)),
        ("T1595.003", "Wordlist Scanning", ("TA0043",)),
        ("T1018", "Remote System Discovery", ("TA0007",)),
        ("T1135", "Network Share Discovery", ("TA0007",)),
        ("T1557.002", "ARP Cache Poisoning", ("TA0006", "TA0009")),
    ],
)
def test_shipped_table_includes_the_scan_techniques(tid, name, tactics):
    assert attack.TECHNIQUES[tid] == (name, tactics)


def test_shipped_table_keeps_retired_techniques_apart_with_their_replacement():
    assert "T1065" not in attack.TECHNIQUES and "T1043" not in attack.TECHNIQUES
    assert attack.technique("T1065").revoked and attack.replacement("T1065").id == "T1571"
    # a chain: T1073 was revoked by T1574.002, itself revoked by T1574.001
    assert attack.replacement("T1073").id == "T1574.001"
    assert attack.technique("T1043").deprecated and attack.technique("T1043").see == ("T1571",)
    for t in attack.matrix().techniques.values():
        if t.revoked_by:
            assert t.revoked_by in attack.matrix().techniques


def test_readme_names_the_vendored_attack_version():
    readme = (REPO / "README.md").read_text()
    assert f"ATT&CK Enterprise v{attack.ATTACK_VERSION}" in readme


def test_importing_models_does_not_read_the_table():
    code = (
        "import zeekndm.models, zeekndm.attack as a; "
        "print(a.matrix.cache_info().currsize, 'TECHNIQUES' in vars(a))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.stdout.split() == ["0", "False"], out.stderr


# --- models validated against it ---------------------------------------------------------

BASE = builtin_model_dicts()["mongodb_scan_internal_external"]


def with_threat(*entries):
    return Model.from_dict(merge_model(BASE, {"threat": list(entries)}))


def entry(tactic, *techniques, tactic_name=None):
    ta = {"id": tactic} | ({"name": tactic_name} if tactic_name else {})
    techs = [{"id": t} if isinstance(t, str) else {"id": t[0], "name": t[1]} for t in techniques]
    return {"tactic": ta, "techniques": techs}


def test_shipped_and_notice_models_validate_against_the_full_table():
    models = {**load_builtin_models(), **load_notice_mappings()}
    assert models
    for model in models.values():
        for e in model.threat:
            assert attack.TACTICS[e.tactic.id] == e.tactic.name
            assert all(attack.TECHNIQUES[t.id][0] == t.name for t in e.techniques)


def test_user_model_may_use_any_current_technique():
    model = with_threat(
        entry("TA0006", ("T1557.002", "ARP Cache Poisoning"), tactic_name="Credential Access"),
        entry("TA0009", "T1557.002"),
    )
    got = [
        (e.tactic.id, e.tactic.name, [(t.id, t.name, t.reference) for t in e.techniques])
        for e in model.threat
    ]
    ref = "https://attack.mitre.org/techniques/T1557/002/"
    assert got == [
        ("TA0006", "Credential Access", [("T1557.002", "ARP Cache Poisoning", ref)]),
        ("TA0009", "Collection", [("T1557.002", "ARP Cache Poisoning", ref)]),
    ]


def test_subtechnique_under_a_tactic_it_does_not_belong_to_rejected():
    with pytest.raises(ModelError) as info:
        with_threat(entry("TA0007", "T1595.001"))
    assert "T1595.001 does not belong to tactic TA0007 Discovery" in str(info.value)
    assert "T1595.001 Scanning IP Blocks (TA0043 Reconnaissance)" in str(info.value)


def test_subtechnique_name_that_does_not_match_its_id_rejected_with_the_right_name():
    with pytest.raises(ModelError, match="T1595.001 is named 'Scanning IP Blocks', not 'Ping'"):
        with_threat(entry("TA0043", ("T1595.001", "Ping")))


def test_tactic_name_that_does_not_match_its_id_rejected_with_the_right_name():
    with pytest.raises(ModelError, match="TA0043 is named 'Reconnaissance', not 'Recon'"):
        with_threat(entry("TA0043", "T1595", tactic_name="Recon"))


def test_unknown_tactic_and_unknown_subtechnique_rejected():
    with pytest.raises(ModelError, match=r"unknown ATT&CK tactic TA0099 \(not in MITRE ATT&CK"):
        with_threat(entry("TA0099", "T1595"))
    with pytest.raises(ModelError, match="unknown ATT&CK technique T1595.009"):
        with_threat(entry("TA0043", "T1595.009"))


def test_revoked_technique_rejected_naming_its_replacement():
    with pytest.raises(ModelError) as info:
        with_threat(entry("TA0011", "T1065"))
    message = str(info.value)
    assert "T1065 'Uncommonly Used Port' is revoked" in message
    assert "use T1571 Non-Standard Port (TA0011 Command and Control) instead" in message


def test_revoked_technique_replaced_by_a_revoked_one_names_the_current_successor():
    with pytest.raises(ModelError, match="T1073 'DLL Side-Loading' is revoked .*use T1574.001 DLL"):
        with_threat(entry("TA0005", "T1073"))


def test_deprecated_technique_rejected_naming_what_mitre_suggests():
    with pytest.raises(ModelError) as info:
        with_threat(entry("TA0011", "T1043"))
    message = str(info.value)
    assert "T1043 'Commonly Used Port' is deprecated in ATT&CK v" in message
    assert "MITRE suggests T1571 Non-Standard Port" in message


def test_attack_errors_name_the_file_line_and_key_path():
    text = """
id: 3fdf7a82-872b-42e5-82e8-c26acb0928ff
name: my_model
ports: [27017/tcp]
threshold:
  distinct_destinations: {low: 25}
  window: 300
description: d
what_to_look_for: w
threat:
  - tactic: {id: TA0011}
    techniques:
      - {id: T1065}
"""
    with pytest.raises(ModelError) as info:
        Model.from_dict(load_yaml_text(text, filename="m.yaml"), source="m.yaml")
    message = str(info.value)
    assert "m.yaml:13" in message and "threat[0].techniques[0].id" in message
    assert len(message.splitlines()) == 1  # one mistake, one error


def test_tactic_without_techniques_rejected():
    with pytest.raises(ModelError, match="list at least one technique under the tactic"):
        with_threat(entry("TA0043"))
