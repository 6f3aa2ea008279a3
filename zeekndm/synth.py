"""Synthetic but realistic conn.log / eve.json writer, for the demo, tests and benchmarks.

Real captures cannot be redistributed with the package and none contains an outbound
MongoDB or LDAP scan, so the project generates its own. The traffic mimics what sensors
write: Zeek's header and column set, records in *write* order (a connection is logged
when it ends or times out, so unanswered attempts appear minutes after their start),
S0/REJ/SF states, and Suricata flow events with `flow.start` and TCP flags.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Iterable

import orjson

ZEEK_FIELDS = (
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes "
    "resp_bytes conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes "
    "resp_pkts resp_ip_bytes tunnel_parents"
).split()
ZEEK_TYPES = (
    "time string addr port addr port enum string interval count count string bool bool count "
    "string count count count count set[string]"
).split()

_HISTORY = {
    "S0": "S",
    "REJ": "Sr",
    "SF": "ShADadFf",
    "RSTO": "ShADadR",
    "SH": "SF",
    "OTH": "Dd",
    "RSTOS0": "SR",
    "S1": "ShAD",
}
_TCP_TIMEOUT_S0 = 300.0  # Zeek logs an unanswered attempt only when it times out


@dataclass(frozen=True, slots=True)
class Conn:
    ts: float
    uid: str
    src: str
    sport: int
    dst: str
    dport: int
    proto: str
    state: str
    duration: float = 0.0
    orig_bytes: int = 0
    resp_bytes: int = 0
    service: str = "-"

    @property
    def write_ts(self) -> float:
        """When a sensor would write this record: at its end, or at the attempt timeout."""
        if self.state in ("S0", "SH", "OTH"):
            return self.ts + _TCP_TIMEOUT_S0 if self.proto == "tcp" else self.ts + 60.0
        return self.ts + self.duration


class Traffic:
    """Builds a list of connections; deterministic for a given seed."""

    def __init__(self, seed: int = 7, start: float = 1_700_000_000.0) -> None:
        self.rng = random.Random(seed)
        self.start = start
        self.conns: list[Conn] = []
        self._uid = 0

    def uid(self) -> str:
        self._uid += 1
        return f"C{self._uid:017d}"

    def public_ip(self) -> str:
        r = self.rng
        while True:
            a = r.randint(1, 223)
            b = r.randint(0, 255)
            if a in (10, 127) or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168):
                continue
            if (a == 100 and 64 <= b <= 127) or (a == 169 and b == 254):
                continue
            return f"{a}.{b}.{r.randint(0, 255)}.{r.randint(1, 254)}"

    def add(self, conn: Conn) -> None:
        self.conns.append(conn)

    def background(self, n: int, duration: float = 3600.0, clients: int = 200) -> None:
        """Ordinary traffic: web, DNS, internal LDAP to domain controllers, a database
        client talking to three external MongoDB hosts, and inbound scans of a server."""
        r = self.rng
        internal = [
            f"10.{r.randint(0, 3)}.{r.randint(0, 255)}.{r.randint(2, 254)}" for _ in range(clients)
        ]
        web = [self.public_ip() for _ in range(2000)]
        mongo_partners = [self.public_ip() for _ in range(3)]
        dcs = ["10.0.0.10", "10.0.0.11"]
        scanners = [self.public_ip() for _ in range(50)]
        server = "10.9.9.9"
        for _ in range(n):
            ts = self.start + r.random() * duration
            src = r.choice(internal)
            kind = r.random()
            if kind < 0.55:
                port = 443 if r.random() < 0.8 else 80
                state = "SF" if r.random() < 0.93 else r.choice(("S0", "RSTO", "REJ", "SH"))
                self.add(
                    Conn(
                        ts,
                        self.uid(),
                        src,
                        r.randint(1024, 65535),
                        r.choice(web),
                        port,
                        "tcp",
                        state,
                        r.random() * 30,
                        r.randint(200, 5000),
                        r.randint(200, 90000),
                        "ssl" if port == 443 else "http",
                    )
                )
            elif kind < 0.80:
                self.add(
                    Conn(
                        ts,
                        self.uid(),
                        src,
                        r.randint(1024, 65535),
                        "10.0.0.53",
                        53,
                        "udp",
                        "SF",
                        0.01,
                        40,
                        120,
                        "dns",
                    )
                )
            elif kind < 0.88:
                port = r.choice((389, 389, 636, 3268))
                self.add(
                    Conn(
                        ts,
                        self.uid(),
                        src,
                        r.randint(1024, 65535),
                        r.choice(dcs),
                        port,
                        "tcp",
                        "SF",
                        r.random() * 2,
                        300,
                        1200,
                        "ldap",
                    )
                )
            elif kind < 0.90:
                self.add(
                    Conn(
                        ts,
                        self.uid(),
                        "10.2.2.2",
                        r.randint(1024, 65535),
                        r.choice(mongo_partners),
                        27017,
                        "tcp",
                        "SF",
                        r.random() * 5,
                        500,
                        4000,
                        "mongo",
                    )
                )
            elif kind < 0.95:
                port = r.choice((27017, 389, 636, 22, 3389, 443))
                self.add(
                    Conn(
                        ts,
                        self.uid(),
                        r.choice(scanners),
                        r.randint(1024, 65535),
                        server,
                        port,
                        "tcp",
                        r.choice(("REJ", "S0", "SF")),
                    )
                )
            else:
                self.add(
                    Conn(ts, self.uid(), src, 8, self.public_ip(), 0, "icmp", "OTH", 0.5, 64, 64)
                )

    def scan(
        self,
        src: str,
        port: int,
        targets: int,
        start_offset: float = 600.0,
        duration: float = 120.0,
        proto: str = "tcp",
        states: tuple[str, ...] = ("S0", "S0", "S0", "REJ", "SF"),
        destinations: Iterable[str] | None = None,
    ) -> list[str]:
        """`src` probes `targets` distinct hosts on `port`; returns the destinations."""
        r = self.rng
        dsts = (
            list(destinations)
            if destinations is not None
            else [self.public_ip() for _ in range(targets)]
        )
        for i, dst in enumerate(dsts):
            ts = self.start + start_offset + duration * i / max(1, len(dsts))
            state = r.choice(states)
            if proto == "udp":
                state = "S0" if state != "SF" else "SF"
            self.add(
                Conn(
                    ts,
                    self.uid(),
                    src,
                    r.randint(1024, 65535),
                    dst,
                    port,
                    proto,
                    state,
                    0.0 if state == "S0" else 0.2,
                    0,
                    0 if state != "SF" else 200,
                )
            )
        return dsts

    def in_write_order(self) -> list[Conn]:
        return sorted(self.conns, key=lambda c: c.write_ts)


def _local(ip: str) -> str:
    return "T" if ip.startswith("10.") or ip.startswith("fd") else "F"


def write_zeek_tsv(conns: Iterable[Conn], out: IO[str], *, local_columns: bool = True) -> int:
    fields = [f for f in ZEEK_FIELDS if local_columns or f not in ("local_orig", "local_resp")]
    types = [t for f, t in zip(ZEEK_FIELDS, ZEEK_TYPES) if f in fields]
    out.write(
        "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n"
        "#path\tconn\n#open\t2023-11-14-22-13-20\n"
    )
    out.write("#fields\t" + "\t".join(fields) + "\n#types\t" + "\t".join(types) + "\n")
    n = 0
    for c in conns:
        answered = c.state not in ("S0", "REJ", "SH", "RSTOS0")
        row = [
            f"{c.ts:.6f}",
            c.uid,
            c.src,
            str(c.sport),
            c.dst,
            str(c.dport),
            c.proto,
            c.service,
            f"{c.duration:.6f}" if answered else "-",
            str(c.orig_bytes) if answered else "-",
            str(c.resp_bytes) if answered else "-",
            c.state,
        ]
        if local_columns:
            row += [_local(c.src), _local(c.dst)]
        row += [
            "0",
            _HISTORY.get(c.state, "-"),
            "1",
            "60",
            "1" if answered else "0",
            "40" if answered else "0",
            "(empty)",
        ]
        out.write("\t".join(row) + "\n")
        n += 1
    out.write("#close\t2023-11-15-00-00-00\n")
    return n


def write_zeek_json(conns: Iterable[Conn], out: IO[str]) -> int:
    n = 0
    for c in conns:
        rec = {
            "ts": c.ts,
            "uid": c.uid,
            "id.orig_h": c.src,
            "id.orig_p": c.sport,
            "id.resp_h": c.dst,
            "id.resp_p": c.dport,
            "proto": c.proto,
            "conn_state": c.state,
            "local_orig": _local(c.src) == "T",
            "local_resp": _local(c.dst) == "T",
            "history": _HISTORY.get(c.state, ""),
        }
        if c.service != "-":
            rec["service"] = c.service
        out.write(orjson.dumps(rec).decode() + "\n")
        n += 1
    return n


def _eve_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def write_eve(conns: Iterable[Conn], out: IO[str]) -> int:
    """Suricata eve `flow` events (plus a dns event now and then, as real files have)."""
    n = 0
    for i, c in enumerate(conns):
        answered = c.state not in ("S0", "SH", "RSTOS0")
        flags_tc = {"REJ": "14", "S0": "00"}.get(c.state, "1b")
        event = {
            "timestamp": _eve_time(c.write_ts),
            "flow_id": 1_000_000 + i,
            "in_iface": "eth0",
            "event_type": "flow",
            "src_ip": c.src,
            "src_port": c.sport,
            "dest_ip": c.dst,
            "dest_port": c.dport,
            "proto": c.proto.upper(),
            "flow": {
                "pkts_toserver": 2,
                "pkts_toclient": 1 if answered else 0,
                "bytes_toserver": 120,
                "bytes_toclient": 60 if answered else 0,
                "start": _eve_time(c.ts),
                "end": _eve_time(c.ts + c.duration),
                "age": int(c.duration),
                "state": "closed" if answered else "new",
                "reason": "timeout",
                "alerted": False,
            },
        }
        if c.proto == "tcp":
            event["tcp"] = {
                "tcp_flags": "1b" if answered else "02",
                "tcp_flags_ts": "1b" if answered else "02",
                "tcp_flags_tc": flags_tc,
            }
        out.write(orjson.dumps(event).decode() + "\n")
        n += 1
        if i % 10 == 0:
            out.write(
                orjson.dumps(
                    {
                        "timestamp": _eve_time(c.ts),
                        "event_type": "dns",
                        "src_ip": c.src,
                        "dest_ip": "10.0.0.53",
                        "dns": {"type": "query", "rrname": "example.com"},
                    }
                ).decode()
                + "\n"
            )
    return n


def demo_traffic(seed: int = 7, start: float = 1_700_000_000.0) -> Traffic:
    """The demo: an outbound MongoDB scan and an outbound LDAP scan among ordinary traffic."""
    t = Traffic(seed=seed, start=start)
    t.background(4000, duration=3600.0)
    t.scan("10.1.7.23", 27017, targets=140, start_offset=900.0, duration=180.0)
    t.scan("10.3.4.5", 389, targets=40, start_offset=2000.0, duration=200.0)
    t.scan("10.3.4.5", 636, targets=20, start_offset=2050.0, duration=150.0)
    return t


def main() -> None:  # pragma: no cover - used by scripts/make_demo.sh
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="write the demo conn.log / eve.json")
    parser.add_argument("--format", choices=["zeek_tsv", "zeek_json", "eve"], default="zeek_tsv")
    parser.add_argument("--records", type=int, default=0, help="background records (default demo)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--recent",
        action="store_true",
        help="date the demo traffic in the last two hours (default: November 2023, as "
        "demo/conn.log), so its alerts fall in a dashboard's recent time range",
    )
    args = parser.parse_args()
    if args.records:
        t = Traffic(seed=args.seed)
        t.background(args.records, duration=max(3600.0, args.records / 50))
        for k in range(max(1, args.records // 100_000)):
            t.scan(f"10.1.7.{20 + k}", 27017, targets=150, start_offset=900.0 + 3000 * k)
            t.scan(f"10.3.4.{5 + k}", 389, targets=60, start_offset=1500.0 + 3000 * k)
    elif args.recent:
        import time

        t = demo_traffic(args.seed, start=float(int(time.time()) - 2 * 3600))
    else:
        t = demo_traffic(args.seed)
    writer = {"zeek_tsv": write_zeek_tsv, "zeek_json": write_zeek_json, "eve": write_eve}
    writer[args.format](t.in_write_order(), sys.stdout)


if __name__ == "__main__":  # pragma: no cover
    main()
