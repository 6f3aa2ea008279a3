"""Generate zeekndm's ATT&CK table from MITRE's published Enterprise STIX data.

    python -m zeekndm.attack_gen PATH/enterprise-attack.json [--output FILE]

PATH is the Enterprise bundle MITRE publishes in `mitre-attack/attack-stix-data`
(`enterprise-attack/enterprise-attack.json`, or a versioned
`enterprise-attack-<version>.json`; plain or gzipped), or the `enterprise-attack/`
directory of a `mitre/cti` checkout (one small bundle per object; that layout carries
no release number, so pass `--attack-version`). The output, by default
`zeekndm/data/attack_enterprise.json.gz` beside this file, holds the release number
and date, every tactic (id, name, shortname) in matrix order and every technique and
sub-technique (id, name, tactic ids), retired ones included and flagged (deprecated,
revoked, `revoked_by`), sorted by id and gzipped without a timestamp, so regenerating
from the same bundle gives the same bytes.

Only the fields zeekndm validates are kept: the bundle is ~40 MB, the table ~15 KB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from zeekndm.attack import (
    DATA_FILE,
    DOMAIN,
    TACTIC_ID,
    TECHNIQUE_ID,
    AttackDataError,
    AttackMatrix,
    AttackTactic,
    AttackTechnique,
)

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "data" / DATA_FILE
# Links in a deprecation note, e.g. "[Non-Standard Port](https://attack.mitre.org/techniques/T1571)".
_TECHNIQUE_LINK = re.compile(r"attack\.mitre\.org/techniques/(T\d{4})(?:/(\d{3}))?")


def read_objects(path: Path) -> list[dict[str, Any]]:
    """Every STIX object in a bundle file, or in every bundle under a directory."""
    files = sorted(p for p in path.rglob("*.json") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise AttackDataError("no STIX bundle (*.json) found", file=str(path))
    objects: list[dict[str, Any]] = []
    for file in files:
        try:
            raw = file.read_bytes()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            bundle = json.loads(raw)
        except OSError as exc:
            raise AttackDataError(f"cannot read: {exc}", file=str(file)) from exc
        except json.JSONDecodeError as exc:
            raise AttackDataError(f"not JSON: {exc.msg}", file=str(file), line=exc.lineno) from exc
        except ValueError as exc:  # bad gzip, bad UTF-8
            raise AttackDataError(f"not a STIX bundle: {exc}", file=str(file)) from exc
        if not isinstance(bundle, dict) or bundle.get("type") != "bundle":
            raise AttackDataError("not a STIX bundle (no top-level type: bundle)", file=str(file))
        found = bundle.get("objects")
        if not isinstance(found, list):
            raise AttackDataError("STIX bundle without an objects list", file=str(file))
        objects.extend(o for o in found if isinstance(o, dict))
    return objects


def build_matrix(
    objects: Iterable[dict[str, Any]], *, version: str | None = None, source: str = "bundle"
) -> AttackMatrix:
    """The Enterprise tactics and techniques of a set of STIX objects.

    The release number and date come from the bundle's `x-mitre-collection` object;
    `version` overrides the number (and is required when there is no collection).
    """
    latest: dict[str, dict[str, Any]] = {}
    for obj in objects:  # a directory may hold several versions of one object
        stix_id = obj.get("id")
        if isinstance(stix_id, str):
            old = latest.get(stix_id)
            if old is None or str(obj.get("modified", "")) >= str(old.get("modified", "")):
                latest[stix_id] = obj
    by_type: dict[str, list[dict[str, Any]]] = {}
    for obj in latest.values():
        by_type.setdefault(str(obj.get("type")), []).append(obj)

    _check_domain(by_type, source)
    collection = _enterprise_collection(by_type)
    if version is None:
        if collection is None or not collection.get("x_mitre_version"):
            raise AttackDataError(
                "the bundle names no ATT&CK release (no x-mitre-collection object): "
                "pass --attack-version",
                file=source,
            )
        version = str(collection["x_mitre_version"])
    dated = by_type.get("x-mitre-tactic", []) + by_type.get("attack-pattern", [])
    if collection is not None and collection.get("modified"):
        modified = str(collection["modified"])
    else:
        modified = max((str(o.get("modified", "")) for o in dated), default="")

    tactics = _tactics(by_type, source)
    if not tactics:
        raise AttackDataError("the bundle holds no ATT&CK tactics", file=source)
    order = {t.shortname: i for i, t in enumerate(tactics)}
    tactic_by_phase = {t.shortname: t.id for t in tactics}

    stix_to_attack = {
        o["id"]: eid
        for o in by_type.get("attack-pattern", [])
        if (eid := _external_id(o)) is not None
    }
    revoked_by: dict[str, str] = {}
    for rel in by_type.get("relationship", []):
        if rel.get("relationship_type") != "revoked-by" or rel.get("revoked"):
            continue
        old, new = (
            stix_to_attack.get(rel.get("source_ref")),
            stix_to_attack.get(rel.get("target_ref")),
        )
        if old and new:
            revoked_by[old] = new

    techniques: dict[str, AttackTechnique] = {}
    stix_of: dict[str, str] = {}
    for obj in by_type.get("attack-pattern", []):
        tid = stix_to_attack.get(obj["id"])
        if tid is None:
            continue  # not an ATT&CK technique (no mitre-attack external id)
        if not TECHNIQUE_ID.match(tid):
            raise AttackDataError(
                f"{obj['id']}: technique id {tid!r} is not T####[.###]", file=source
            )
        if tid in techniques:
            raise AttackDataError(
                f"{tid} is used by two objects ({stix_of[tid]}, {obj['id']})", file=source
            )
        phases = []
        for phase in obj.get("kill_chain_phases") or []:
            if phase.get("kill_chain_name") != "mitre-attack":
                continue
            name = phase.get("phase_name")
            if name not in tactic_by_phase:
                raise AttackDataError(
                    f"{tid} {obj.get('name')!r} is filed under kill-chain phase {name!r}, "
                    "which no tactic in the bundle has as its shortname",
                    file=source,
                )
            phases.append(name)
        deprecated = bool(obj.get("x_mitre_deprecated"))
        techniques[tid] = AttackTechnique(
            id=tid,
            name=str(obj.get("name", "")).strip(),
            tactics=tuple(tactic_by_phase[p] for p in sorted(set(phases), key=order.__getitem__)),
            deprecated=deprecated,
            revoked=bool(obj.get("revoked")),
            revoked_by=revoked_by.get(tid),
            see=_deprecation_pointers(obj, tid) if deprecated else (),
        )
        stix_of[tid] = obj["id"]
    if not techniques:
        raise AttackDataError("the bundle holds no ATT&CK techniques", file=source)
    return AttackMatrix(version, modified, tactics, techniques)


def write_matrix(matrix: AttackMatrix, output: Path) -> int:
    """Write the table gzipped (no timestamp: same input, same bytes); returns its size."""
    text = json.dumps(matrix.to_dict(), ensure_ascii=False, separators=(",", ":"), indent=None)
    data = gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(output)
    return len(data)


def main(argv: Sequence[str] | None = None, stderr: TextIO | None = None) -> int:
    err = stderr or sys.stderr
    parser = argparse.ArgumentParser(
        prog="python -m zeekndm.attack_gen",
        description="Convert MITRE's Enterprise ATT&CK STIX bundle into zeekndm's ATT&CK table.",
    )
    parser.add_argument(
        "bundle",
        type=Path,
        help="enterprise-attack.json (mitre-attack/attack-stix-data), plain or gzipped, "
        "or a mitre/cti enterprise-attack/ directory",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"default: {DEFAULT_OUTPUT}"
    )
    parser.add_argument(
        "--attack-version",
        help="ATT&CK release number, e.g. 18.1 (required when the input has no "
        "x-mitre-collection object, as a mitre/cti directory)",
    )
    args = parser.parse_args(argv)
    try:
        objects = read_objects(args.bundle)
        matrix = build_matrix(objects, version=args.attack_version, source=str(args.bundle))
        size = write_matrix(matrix, args.output)
    except AttackDataError as exc:
        err.write(f"attack_gen: {exc}\n")
        return 2
    except OSError as exc:
        err.write(f"attack_gen: cannot write {args.output}: {exc}\n")
        return 1
    current = sum(1 for t in matrix.techniques.values() if not t.retired)
    subs = sum(1 for t in matrix.techniques.values() if t.is_subtechnique and not t.retired)
    err.write(
        f"ATT&CK Enterprise v{matrix.version} ({matrix.modified[:10]}): "
        f"{len(matrix.tactics)} tactics, {current} current techniques ({subs} sub-techniques), "
        f"{len(matrix.techniques) - current} retired -> {args.output} ({size} bytes)\n"
    )
    return 0


def _external_id(obj: dict[str, Any]) -> str | None:
    for ref in obj.get("external_references") or []:
        if isinstance(ref, dict) and ref.get("source_name") == "mitre-attack":
            eid = ref.get("external_id")
            return str(eid) if eid else None
    return None


def _check_domain(by_type: dict[str, list[dict[str, Any]]], source: str) -> None:
    """Refuse Mobile or ICS bundles: their tactic ids overlap Enterprise's with other names."""
    matrices = [_external_id(m) for m in by_type.get("x-mitre-matrix", [])]
    if matrices and DOMAIN not in matrices:
        raise AttackDataError(
            f"not the Enterprise ATT&CK bundle (its matrix is {', '.join(map(str, matrices))})",
            file=source,
        )
    for obj in by_type.get("attack-pattern", []) + by_type.get("x-mitre-tactic", []):
        domains = obj.get("x_mitre_domains")
        if domains and DOMAIN not in domains:
            raise AttackDataError(
                f"not the Enterprise ATT&CK bundle ({obj.get('id')} is in {', '.join(domains)})",
                file=source,
            )


def _enterprise_collection(by_type: dict[str, list[dict[str, Any]]]) -> dict[str, Any] | None:
    collections = by_type.get("x-mitre-collection", [])
    for c in collections:
        if "enterprise" in str(c.get("name", "")).lower():
            return c
    return collections[0] if len(collections) == 1 else None


def _tactics(by_type: dict[str, list[dict[str, Any]]], source: str) -> tuple[AttackTactic, ...]:
    found = {}
    for obj in by_type.get("x-mitre-tactic", []):
        tid = _external_id(obj)
        if tid is None:
            continue
        if not TACTIC_ID.match(tid):
            raise AttackDataError(f"{obj.get('id')}: tactic id {tid!r} is not TA####", file=source)
        shortname = obj.get("x_mitre_shortname")
        if not shortname:
            raise AttackDataError(f"tactic {tid} has no x_mitre_shortname", file=source)
        found[obj["id"]] = AttackTactic(
            tid,
            str(obj.get("name", "")).strip(),
            str(shortname),
            bool(obj.get("x_mitre_deprecated") or obj.get("revoked")),
        )
    # Matrix order (Reconnaissance ... Impact) when the matrix is there, then any other.
    ordered = []
    for m in by_type.get("x-mitre-matrix", []):
        for ref in m.get("tactic_refs") or []:
            if ref in found and found[ref] not in ordered:
                ordered.append(found[ref])
    rest = sorted((t for t in found.values() if t not in ordered), key=lambda t: t.id)
    return tuple(ordered + rest)


def _deprecation_pointers(obj: dict[str, Any], tid: str) -> tuple[str, ...]:
    """Technique ids the first paragraph of a deprecation note links to ("Please use ...")."""
    note = str(obj.get("description", "")).split("\n\n", 1)[0]
    out: list[str] = []
    for base, sub in _TECHNIQUE_LINK.findall(note):
        ref = f"{base}.{sub}" if sub else base
        if ref != tid and ref not in out:
            out.append(ref)
    return tuple(out)


if __name__ == "__main__":
    sys.exit(main())
