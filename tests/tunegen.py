"""A generated multi-day history for the tune tests: known scanners among known benign
heavy hitters, written as zeekctl writes its archive (logs/YYYY-MM-DD/conn.HH:MM:SS-
HH:MM:SS.log.gz), or as one eve.json.

Day 0 starts at 2023-11-14T00:00:00Z. Every hour: ordinary clients (a few external
MongoDB / LDAP servers each, web on 443); the benign heavy hitters, steady every hour
of every day and answered:
- MONITOR polls 40 external MongoDB endpoints every 10 minutes (peak 40 > low 25);
- DIRECTORY_CLIENT queries 30 external LDAP servers every 10 minutes (peak 30 > 25).
The scanners (mostly failing):
- MONGO_SWEEPER sweeps 150 hosts on 27017 in two minutes on day 1;
- LDAP_SWEEPER sweeps 80 hosts on 389 on day 2;
- SLOW_SCANNER probes a new host on 27017 once a minute for 30 minutes on day 1 (the
  sequential path decides: never more than 5 in a window);
- AUTHORISED_SCANNER sweeps 200 hosts on 27017 every day at 02:00 (a chronic scanner:
  tune must not allowlist it, only suggest a commented-out discard).
And BACKUP_JOB, answered but once (day 2): 70 hosts on 27017, not steady, so it is not
taken for benign and keeps alerting.
"""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

from zeekndm.synth import Conn, write_eve, write_zeek_tsv

DAY0 = 1_699_920_000.0  # 2023-11-14T00:00:00Z
MONITOR = "10.5.0.10"
DIRECTORY_CLIENT = "10.5.0.11"
MONGO_SWEEPER = "10.1.7.20"
LDAP_SWEEPER = "10.1.7.21"
SLOW_SCANNER = "10.1.7.22"
AUTHORISED_SCANNER = "10.9.9.9"
BACKUP_JOB = "10.1.7.30"
SCANNERS = {
    "mongodb_scan_internal_external": [MONGO_SWEEPER, SLOW_SCANNER, AUTHORISED_SCANNER, BACKUP_JOB],
    "ldap_scanning_inside_to_outside": [LDAP_SWEEPER],
}
BENIGN = {
    "mongodb_scan_internal_external": [MONITOR],
    "ldap_scanning_inside_to_outside": [DIRECTORY_CLIENT],
}


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.n = 0

    def conn(self, ts: float, src: str, dst: str, port: int, state: str, proto="tcp") -> Conn:
        self.n += 1
        answered = state not in ("S0", "REJ")
        return Conn(
            ts,
            f"C{self.n:017d}",
            src,
            self.rng.randint(1024, 65535),
            dst,
            port,
            proto,
            state,
            0.2 if answered else 0.0,
            100 if answered else 0,
            300 if answered else 0,
        )


def _ext(block: int, i: int) -> str:
    return f"{block}.{(i >> 8) & 255}.{i & 255}.7"


def hour_conns(day: int, hour: int, gen: _Gen) -> list[Conn]:
    """The connections that start in one hour, in start order."""
    r = gen.rng
    t0 = DAY0 + day * 86400 + hour * 3600
    out: list[Conn] = []
    for k in range(6):  # every 10 minutes
        t = t0 + k * 600 + 7
        for i in range(40):
            out.append(gen.conn(t + i * 0.5, MONITOR, _ext(52, i), 27017, "SF"))
        for i in range(30):
            out.append(gen.conn(t + 60 + i * 0.5, DIRECTORY_CLIENT, _ext(53, i), 389, "SF"))
    for c in range(40):  # ordinary clients
        src = f"10.2.{c // 20}.{c % 20 + 2}"
        t = t0 + r.random() * 3600
        out.append(gen.conn(t, src, _ext(54, c % 3), 27017, r.choice(("SF", "SF", "SF", "S0"))))
        out.append(gen.conn(t + 5, src, _ext(55, c % 2), 389, "SF"))
        out.append(gen.conn(t + 9, src, _ext(56, r.randint(0, 4000)), 443, "SF"))
    if hour == 2:
        for i in range(200):
            out.append(gen.conn(t0 + 600 + i * 0.5, AUTHORISED_SCANNER, _ext(57, i), 27017, "S0"))
    if day == 1 and hour == 10:
        for i in range(150):
            state = "SF" if i % 10 == 0 else "S0"
            out.append(gen.conn(t0 + 900 + i * 0.8, MONGO_SWEEPER, _ext(58, i), 27017, state))
        for i in range(30):
            out.append(gen.conn(t0 + 60 * i + 30, SLOW_SCANNER, _ext(59, i), 27017, "S0"))
    if day == 2 and hour == 14:
        for i in range(80):
            state = "SF" if i % 8 == 0 else "REJ"
            out.append(gen.conn(t0 + 1200 + i, LDAP_SWEEPER, _ext(60, i), 389, state))
        for i in range(70):
            state = "SF" if i % 10 < 7 else "S0"
            out.append(gen.conn(t0 + 2400 + i * 2, BACKUP_JOB, _ext(61, i), 27017, state))
    out.sort(key=lambda c: c.ts)
    return out


def _name(hour: int) -> str:
    return f"conn.{hour:02d}:00:00-{(hour + 1) % 24:02d}:00:00.log.gz"


def write_zeekctl_archive(root: Path, days: int = 3, seed: int = 5) -> list[Path]:
    """logs/YYYY-MM-DD/conn.HH:00:00-HH:00:00.log.gz under `root`; returns the files in
    time order."""
    gen = _Gen(seed)
    files = []
    for day in range(days):
        folder = root / f"2023-11-{14 + day:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for hour in range(24):
            buf = io.StringIO()
            write_zeek_tsv(hour_conns(day, hour, gen), buf)
            path = folder / _name(hour)
            path.write_bytes(gzip.compress(buf.getvalue().encode(), mtime=0))
            files.append(path)
    return files


def write_eve_history(path: Path, days: int = 3, seed: int = 5) -> Path:
    """The same history as `write_zeekctl_archive(days=days, seed=seed)` as one eve.json."""
    gen = _Gen(seed)
    with open(path, "w") as out:
        for day in range(days):
            for hour in range(24):
                write_eve(hour_conns(day, hour, gen), out)
    return path
