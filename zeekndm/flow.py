"""The one normalized connection record every reader produces.

Nothing downstream of a reader knows whether a record came from Zeek TSV, Zeek JSON or
Suricata eve. `Flow` is a NamedTuple because it is built once per input line on the hot
path: creating one costs a fraction of a frozen dataclass, and it is just as immutable.
"""

from __future__ import annotations

import enum
from typing import NamedTuple


class Transport(enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    OTHER = "other"  # Zeek's unknown_transport, SCTP, GRE ... never matched by a port model


class Outcome(enum.Enum):
    """What happened to the connection attempt, as far as the sensor could tell."""

    NO_ANSWER = "attempted-no-answer"  # Zeek S0/SH/SHR/RSTOS0, eve new / no packets back
    REJECTED = "rejected"  # Zeek REJ, eve RST back from the responder without a SYN-ACK
    ABORTED = "aborted"  # answered, then reset (Zeek RSTO/RSTR; eve SYN-ACK then RST)
    ESTABLISHED = "established"  # the responder answered (SF, S1, S2, S3)
    UNKNOWN = "unknown"  # midstream (OTH, RSTRH), netflow records, missing state

    @property
    def failed(self) -> bool:
        """No handshake: the attempt was not answered or was refused."""
        return self is Outcome.NO_ANSWER or self is Outcome.REJECTED

    @property
    def answered(self) -> bool:
        """The responder's service answered (a handshake happened, even if then aborted)."""
        return self is Outcome.ESTABLISHED or self is Outcome.ABORTED


class Flow(NamedTuple):
    """One connection record.

    `ts` is the connection *start* in epoch seconds (Zeek `ts`, eve `flow.start`), which
    is what time windows use: sensors write a record when the connection ends or times
    out, so arrival order is not time order. `src`/`dst` are normalized address strings
    (`ipaddress` compressed form), so an expanded IPv6 address and its short form are the
    same destination. For ICMP, `sport`/`dport` carry type/code as the sensors write them.
    `local_orig`/`local_resp` are Zeek's own verdicts when the log has them, else None.
    """

    ts: float
    src: str
    sport: int
    dst: str
    dport: int
    transport: Transport
    outcome: Outcome
    uid: str | None = None
    community_id: str | None = None
    sensor: str | None = None
    local_orig: bool | None = None
    local_resp: bool | None = None
