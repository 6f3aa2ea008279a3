"""A small vendored slice of MITRE ATT&CK (Enterprise): the tactics and techniques that
network scan models map to. Models are validated against it offline, so a typo in a
technique id or a technique filed under the wrong tactic fails `check-config` and the
test that sweeps every shipped model, without any network access.
"""

from __future__ import annotations

ATTACK_BASE = "https://attack.mitre.org"

TACTICS: dict[str, str] = {
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

# technique id -> (name, tactic ids it belongs to)
TECHNIQUES: dict[str, tuple[str, tuple[str, ...]]] = {
    "T1046": ("Network Service Discovery", ("TA0007",)),
    "T1595": ("Active Scanning", ("TA0043",)),
    "T1595.001": ("Scanning IP Blocks", ("TA0043",)),
    "T1595.002": ("Vulnerability Scanning", ("TA0043",)),
    "T1595.003": ("Wordlist Scanning", ("TA0043",)),
    "T1590": ("Gather Victim Network Information", ("TA0043",)),
    "T1018": ("Remote System Discovery", ("TA0007",)),
    "T1135": ("Network Share Discovery", ("TA0007",)),
    "T1087": ("Account Discovery", ("TA0007",)),
    "T1087.002": ("Domain Account", ("TA0007",)),
    "T1021": ("Remote Services", ("TA0008",)),
    "T1210": ("Exploitation of Remote Services", ("TA0008",)),
    "T1190": ("Exploit Public-Facing Application", ("TA0001",)),
    "T1133": ("External Remote Services", ("TA0001", "TA0003")),
    "T1110": ("Brute Force", ("TA0006",)),
    "T1110.003": ("Password Spraying", ("TA0006",)),
    "T1071": ("Application Layer Protocol", ("TA0011",)),
    "T1090": ("Proxy", ("TA0011",)),
    "T1571": ("Non-Standard Port", ("TA0011",)),
    "T1048": ("Exfiltration Over Alternative Protocol", ("TA0010",)),
    "T1498": ("Network Denial of Service", ("TA0040",)),
    "T1498.002": ("Reflection Amplification", ("TA0040",)),
    "T1496": ("Resource Hijacking", ("TA0040",)),
    "T1583": ("Acquire Infrastructure", ("TA0042",)),
    "T1584": ("Compromise Infrastructure", ("TA0042",)),
}


def tactic_reference(tactic_id: str) -> str:
    return f"{ATTACK_BASE}/tactics/{tactic_id}/"


def technique_reference(technique_id: str) -> str:
    return f"{ATTACK_BASE}/techniques/{technique_id.replace('.', '/')}/"
