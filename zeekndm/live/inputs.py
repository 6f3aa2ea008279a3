"""What `zeekndm run` follows: the `inputs:` section of the config and `--input` switches.

Four kinds, as sensors write their logs:

* `zeek_dir`: a Zeek log directory (zeekctl's `logs/current` is a symlink to the spool
  directory of the running node; it is re-resolved continuously). The files matching
  `patterns` in it are followed (default `conn.log` and `notice.log`, which covers Zeek
  TSV and JSON, since Zeek names both the same).
* `dir`: any directory of logs, with `patterns` (for instance `eve.json*` in Suricata's log
  directory, so that a logrotate copy is recognised and read to its end).
* `file`: one log file (a Zeek conn.log or notice.log, a Suricata eve.json); it may not
  exist yet, and is followed through rotation.
* `unix_dgram` / `unix_stream`: a socket zeekndm creates and Suricata writes eve to
  (`eve-log: filetype: unix_dgram|unix_stream`).
* `kafka`: topics of a Kafka cluster, read as a member of a consumer group
  (`zeekndm.live.kafka`; its options are parsed by `live.kafka.spec`).

The format of a file is detected from its content unless `format:` forces one.

Limits, each a logged and configurable bound rather than a silent one: `max_open_files`
(file and directory inputs: descriptors held at once; idle files beyond it are closed and
reopened when they grow), and for `unix_stream` `max_clients`, `max_buffered_bytes` (half
lines held over all clients) and `idle_timeout` (seconds a silent client stays connected).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any

from zeekndm.errors import ConfigError, ZeekNDMError
from zeekndm.live.listen import IDLE_TIMEOUT, MAX_BUFFERED_BYTES, MAX_CLIENTS
from zeekndm.yamlfile import FieldReader

KINDS = ("zeek_dir", "dir", "file", "unix_dgram", "unix_stream", "kafka")
SOCKET_KINDS = ("unix_dgram", "unix_stream")
DEFAULT_PATTERNS = ("conn.log", "notice.log")
MAX_OPEN_FILES = 64
"""Default descriptors a file or directory input holds open at once."""


@dataclass(frozen=True)
class InputSpec:
    """One input of live mode."""

    type: str
    path: str
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    format: str | None = None
    max_open_files: int = MAX_OPEN_FILES
    max_clients: int = MAX_CLIENTS
    max_buffered_bytes: int = MAX_BUFFERED_BYTES
    idle_timeout: float = IDLE_TIMEOUT

    @property
    def is_dir(self) -> bool:
        return self.type in ("zeek_dir", "dir")

    @property
    def is_socket(self) -> bool:
        return self.type in SOCKET_KINDS

    def describe(self) -> str:
        if self.is_dir:
            return f"{self.path} ({', '.join(self.patterns)})"
        return f"{self.path} ({self.type})"


def _formats() -> tuple[str, ...]:
    from zeekndm.readers import PARSERS

    return tuple(sorted(PARSERS))


def parse_inputs(raw: list[Any], errors: list, file: str | None = None) -> list[Any]:
    """The `inputs:` list of the config; each mistake is appended to `errors` with its key."""
    specs: list[Any] = []
    for i, item in enumerate(raw):
        where = f"inputs[{i}]"
        if isinstance(item, dict) and item.get("type") == "kafka":
            from zeekndm.live.kafka.spec import parse_kafka_input

            kafka = parse_kafka_input(item, where, errors, file=file)
            if kafka is not None:
                specs.append(kafka)
            continue
        if not isinstance(item, dict):
            errors.append(
                ConfigError(
                    f"must be a mapping with type and path, not {type(item).__name__}",
                    file=file,
                    line=getattr(raw, "line", None),
                    key=where,
                )
            )
            continue
        r = FieldReader(item, where, errors, file=file)
        kind = r.take(
            "type",
            str,
            check=lambda v: None if v in KINDS else f"must be one of {', '.join(KINDS)}",
        )
        path = r.take("path", str, check=lambda v: None if v else "must not be empty")
        patterns = r.take("patterns", list, default=list(DEFAULT_PATTERNS))
        fmt = r.take(
            "format",
            str,
            default=None,
            check=lambda v: None if v in _formats() else f"must be one of {', '.join(_formats())}",
        )
        positive = lambda v: None if v > 0 else "must be positive"  # noqa: E731
        limits = {
            "max_open_files": r.take("max_open_files", int, MAX_OPEN_FILES, check=positive),
            "max_clients": r.take("max_clients", int, MAX_CLIENTS, check=positive),
            "max_buffered_bytes": r.take(
                "max_buffered_bytes", int, MAX_BUFFERED_BYTES, check=positive
            ),
            "idle_timeout": float(r.take("idle_timeout", float, IDLE_TIMEOUT, check=positive)),
        }
        r.finish()
        if kind is None or not path:
            continue  # already reported
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            r.fail("must be a non-empty list of file name patterns", name="patterns")
            continue
        if kind in SOCKET_KINDS and fmt not in (None, "suricata_eve"):
            r.fail("a socket input carries Suricata eve events", name="format")
            continue
        specs.append(InputSpec(kind, path, tuple(patterns), fmt, **limits))
    return specs


def input_from_arg(arg: str) -> Any:
    """`--input PATH`: a directory, a file, or a socket (`unix_dgram:PATH`, `unix_stream:PATH`,
    or an existing socket file, taken as unix_dgram as Suricata's default), or Kafka topics
    (`kafka://BROKER/TOPIC?group=NAME`)."""
    if arg.startswith("kafka://"):
        from zeekndm.live.kafka.spec import kafka_spec_from_url

        return kafka_spec_from_url(arg)
    for kind in SOCKET_KINDS:
        if arg.startswith(kind + ":"):
            path = arg[len(kind) + 1 :]
            if not path:
                raise ZeekNDMError(f"--input {arg}: no socket path after {kind}:")
            return InputSpec(kind, path)
    try:
        st = os.stat(arg)
    except OSError:
        return InputSpec("file", arg)  # may appear later
    if stat.S_ISDIR(st.st_mode):
        return InputSpec("zeek_dir", arg)
    if stat.S_ISSOCK(st.st_mode):
        return InputSpec("unix_dgram", arg)
    return InputSpec("file", arg)
