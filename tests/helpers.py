"""Small builders shared by tests (not fixtures: plain functions)."""

from __future__ import annotations

import io
import json

from zeekndm.flow import Flow, Outcome, Transport

T0 = 1_700_000_000.0


def flow(
    src: str,
    dst: str,
    dport: int,
    ts: float = T0,
    *,
    transport: Transport = Transport.TCP,
    outcome: Outcome = Outcome.NO_ANSWER,
    sport: int = 40000,
    local_orig: bool | None = None,
    local_resp: bool | None = None,
) -> Flow:
    return Flow(
        ts, src, sport, dst, dport, transport, outcome, local_orig=local_orig, local_resp=local_resp
    )


def public(i: int) -> str:
    """The i-th distinct public (external) IPv4 address."""
    return (
        f"45.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255 or 1}"
        if i < 1 << 16
        else f"46.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    )


def scan(src: str, port: int, n: int, start: float = T0, spacing: float = 1.0, **kw) -> list[Flow]:
    return [flow(src, public(i + 1), port, start + i * spacing, **kw) for i in range(n)]


class Run:
    """`zeekndm ARGV...` run in-process, with its exit status, stdout and stderr."""

    def __init__(self, argv):
        from zeekndm.cli import Environment, main

        self.env = Environment(stdout=io.StringIO(), stderr=io.StringIO())
        self.status = main([str(a) for a in argv], self.env)
        self.out = self.env.stdout.getvalue()
        self.err = self.env.stderr.getvalue()

    @property
    def alerts(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.startswith("{")]


def comparable(ndjson: str) -> list[dict]:
    """Alerts of an NDJSON text without `event.created` (when each run raised them), so
    two runs over the same input compare equal."""
    alerts = [json.loads(line) for line in ndjson.splitlines() if line.startswith("{")]
    for alert in alerts:
        alert.get("event", {}).pop("created", None)
    return alerts
