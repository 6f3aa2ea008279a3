"""MITRE ATT&CK Enterprise, vendored: every tactic, technique and sub-technique.

Models are validated against this table offline, so a typo in a technique id, a name
that does not match its id, a technique filed under a tactic it does not belong to, or
a retired (deprecated or revoked) technique fails `check-config` and the test that
sweeps every shipped model, without any network access. The table is generated from
MITRE's published STIX bundle by `python -m zeekndm.attack_gen` and shipped as
`zeekndm/data/attack_enterprise.json.gz` (README, Configuration, says how to
regenerate it).

It is read lazily, on the first lookup, so importing `zeekndm.models` (and with it the
CLI) does not pay for parsing the whole matrix.

`TACTICS` (id -> name) and `TECHNIQUES` (id -> (name, tactic ids)) hold what a model may
use: every tactic and every technique that is neither deprecated nor revoked.
`technique()` also finds retired techniques, with what replaces them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from zeekndm.errors import ZeekNDMError
from zeekndm.packagefiles import package_files

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

ATTACK_BASE = "https://attack.mitre.org"
DOMAIN = "enterprise-attack"
FORMAT = 1  # bumped when the layout of the data file changes
DATA_FILE = "attack_enterprise.json.gz"  # under zeekndm/data/

TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")
TACTIC_ID = re.compile(r"^TA\d{4}$")

# Filled lazily by __getattr__ on first access (annotations only, so the names are
# not bound until then).
TACTICS: dict[str, str]
TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]]
ATTACK_VERSION: str
ATTACK_MODIFIED: str


class AttackDataError(ZeekNDMError):
    """The vendored ATT&CK table (or a STIX bundle being converted) is unusable."""


# NamedTuples rather than dataclasses: defining a slotted dataclass costs ~2 ms at import,
# and this module is imported by every CLI command.
class AttackTactic(NamedTuple):
    """One tactic column of the Enterprise matrix (TA0007 Discovery, `discovery`)."""

    id: str
    name: str
    shortname: str  # the kill-chain phase name techniques use to refer to it
    deprecated: bool = False


class AttackTechnique(NamedTuple):
    """A technique or sub-technique, current or retired.

    A revoked technique was merged into or replaced by another (`revoked_by`, the
    direct successor MITRE names). A deprecated one was dropped without a single
    successor; `see` lists the techniques its deprecation note points to, if any.
    """

    id: str
    name: str
    tactics: tuple[str, ...]
    deprecated: bool = False
    revoked: bool = False
    revoked_by: str | None = None
    see: tuple[str, ...] = ()

    @property
    def retired(self) -> bool:
        return self.deprecated or self.revoked

    @property
    def is_subtechnique(self) -> bool:
        return "." in self.id

    @property
    def parent(self) -> str | None:
        """T1595 for T1595.001; None for a technique."""
        return self.id.split(".", 1)[0] if self.is_subtechnique else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "tactics": list(self.tactics)}
        if self.deprecated:
            out["deprecated"] = True
        if self.revoked:
            out["revoked"] = True
        if self.revoked_by:
            out["revoked_by"] = self.revoked_by
        if self.see:
            out["see"] = list(self.see)
        return out


class AttackMatrix(NamedTuple):
    """The whole vendored table: which ATT&CK release, its tactics and techniques."""

    version: str
    modified: str  # ISO 8601 date of the release (or of its newest object)
    tactics: tuple[AttackTactic, ...]  # in matrix order (Reconnaissance first)
    techniques: Mapping[str, AttackTechnique]  # every one, retired included, by id

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "domain": DOMAIN,
            "version": self.version,
            "modified": self.modified,
            "tactics": [
                {"id": t.id, "name": t.name, "shortname": t.shortname}
                | ({"deprecated": True} if t.deprecated else {})
                for t in self.tactics
            ],
            "techniques": [self.techniques[k].to_dict() for k in sorted(self.techniques)],
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> AttackMatrix:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise AttackDataError(
                f"not a zeekndm ATT&CK table of format {FORMAT}: regenerate it with "
                "`python -m zeekndm.attack_gen`",
                file=source,
            )
        try:
            tactics = tuple(
                AttackTactic(t["id"], t["name"], t["shortname"], bool(t.get("deprecated")))
                for t in data["tactics"]
            )
            techniques = {
                t["id"]: AttackTechnique(
                    t["id"],
                    t["name"],
                    tuple(t["tactics"]),
                    bool(t.get("deprecated")),
                    bool(t.get("revoked")),
                    t.get("revoked_by"),
                    tuple(t.get("see", ())),
                )
                for t in data["techniques"]
            }
            return cls(str(data["version"]), str(data["modified"]), tactics, techniques)
        except (KeyError, TypeError) as exc:
            raise AttackDataError(f"malformed ATT&CK table ({exc!r})", file=source) from exc


def shipped_data_path() -> Traversable:
    """Where the package keeps its generated table."""
    return package_files() / "data" / DATA_FILE


def load_matrix(path: Path | Traversable) -> AttackMatrix:
    """Read a table written by `zeekndm.attack_gen` (gzipped JSON)."""
    # zlib and orjson rather than gzip and json: both are C modules that import in
    # microseconds, and only the first lookup pays for them.
    import zlib

    import orjson

    label = str(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = zlib.decompress(raw, wbits=zlib.MAX_WBITS | 16)  # gzip framing
        data = orjson.loads(raw)
    except OSError as exc:
        raise AttackDataError(f"cannot read the ATT&CK table: {exc}", file=label) from exc
    except (zlib.error, orjson.JSONDecodeError) as exc:
        raise AttackDataError(f"corrupt ATT&CK table: {exc}", file=label) from exc
    return AttackMatrix.from_dict(data, source=label)


@functools.cache
def matrix() -> AttackMatrix:
    """The shipped table, read once."""
    return load_matrix(shipped_data_path())


def tactic(tactic_id: str) -> AttackTactic | None:
    for t in matrix().tactics:
        if t.id == tactic_id:
            return t
    return None


def technique(technique_id: str) -> AttackTechnique | None:
    """A technique or sub-technique by id, retired ones included; None if unknown."""
    return matrix().techniques.get(technique_id)


def replacement(technique_id: str) -> AttackTechnique | None:
    """The current technique a revoked one now lives in, following chains of revocations
    (T1073 -> T1574.002 -> T1574.001); None when there is none (deprecated, unknown)."""
    techniques = matrix().techniques
    seen = {technique_id}
    current = techniques.get(technique_id)
    while current is not None and current.revoked_by:
        if current.revoked_by in seen:
            return None
        seen.add(current.revoked_by)
        current = techniques.get(current.revoked_by)
    if current is None or current.id == technique_id or current.retired:
        return None
    return current


def describe(technique_id: str) -> str:
    """`T1571 Non-Standard Port (TA0011 Command and Control)`, for messages."""
    t = technique(technique_id)
    if t is None:
        return technique_id
    names = dict(_tactic_names())
    tactics = ", ".join(f"{ta} {names.get(ta, '?')}" for ta in t.tactics)
    return f"{t.id} {t.name} ({tactics})"


def retirement_note(technique_id: str) -> str | None:
    """Why a retired technique may not be used and what to use instead; None if current."""
    t = technique(technique_id)
    if t is None or not t.retired:
        return None
    m = matrix()
    if t.revoked:
        new = replacement(technique_id)
        what = f"{t.id} {t.name!r} is revoked in ATT&CK v{m.version}"
        return f"{what}: use {describe(new.id)} instead" if new else f"{what} (no successor)"
    what = f"{t.id} {t.name!r} is deprecated in ATT&CK v{m.version}"
    current = [s for s in t.see if (s_t := technique(s)) is not None and not s_t.retired]
    if current:
        return f"{what}: MITRE suggests {'; '.join(describe(s) for s in current)}"
    return f"{what} and has no successor: pick a current technique"


def tactic_reference(tactic_id: str) -> str:
    return f"{ATTACK_BASE}/tactics/{tactic_id}/"


def technique_reference(technique_id: str) -> str:
    return f"{ATTACK_BASE}/techniques/{technique_id.replace('.', '/')}/"


def _tactic_names() -> dict[str, str]:
    return {t.id: t.name for t in matrix().tactics}


def __getattr__(name: str) -> Any:
    # PEP 562: the tables are built on first access and then bound as ordinary module
    # globals, so later lookups cost nothing.
    if name == "TACTICS":
        value: Any = _tactic_names()
    elif name == "TECHNIQUES":
        value = {t.id: (t.name, t.tactics) for t in matrix().techniques.values() if not t.retired}
    elif name == "ATTACK_VERSION":
        value = matrix().version
    elif name == "ATTACK_MODIFIED":
        value = matrix().modified
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
