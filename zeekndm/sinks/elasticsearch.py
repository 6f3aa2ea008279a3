"""The Elasticsearch output: bulk `create` into the data stream logs-zeekndm.alert-<namespace>.

Why it looks like Filebeat's output: every alert has a deterministic `_id` and is sent
with `op_type: create`, so a re-sent alert answers 409 and counts as delivered (never a
duplicate). Each batch ends explicitly (see `zeekndm.sinks.base`):

- 201 created, 409 already there                      -> acknowledged
- 429 / 5xx per item, whole-request 429/503, no route -> retried with exponential backoff
  and jitter, at most `max_retries` times within one send; what is still undelivered is
  appended to the on-disk spool (fsynced, then acknowledged) and drained oldest first on
  later sends once the cluster answers. A full spool leaves the batch for retry instead.
- 400 and other permanent 4xx (mapping/parse errors)  -> written with the reason to the
  dead-letter NDJSON file (fsynced) and reported as rejected; never retried.

Secrets come from environment variables or files only, never from the YAML itself, and
are never logged. The official client (8.x) is used for everything; it sends
`compatible-with=8`, which Elasticsearch 8 and 9 both accept.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from zeekndm.enrich import DATASET, Alert
from zeekndm.errors import ConfigError, ConfigErrors, SinkError
from zeekndm.sinks.base import SendResult
from zeekndm.sinks.spool import Spool

log = logging.getLogger(__name__)

# The transport logs every request at INFO and every failed node at WARNING; our own
# per-flush summary and warnings say the same once. Quieten it unless the user chose.
for _name, _level in (("elastic_transport.transport", logging.WARNING),
                      ("elastic_transport.node_pool", logging.ERROR)):  # fmt: skip
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)

SUPPORTED_MAJORS = (8, 9)
_SECRET_KEYS = {
    "password": "password_env or password_file",
    "api_key": "api_key_env or api_key_file",
    "bearer_token": "bearer_token_env or bearer_token_file",
    "token": "bearer_token_env or bearer_token_file",
}
# data stream name parts: lowercase, none of \/*?"<>|,#: space, and no '-' in a namespace
_NAMESPACE = re.compile(r"^[a-z0-9_][a-z0-9_.+]*$")


def data_stream_name(namespace: str) -> str:
    return f"logs-{DATASET}-{namespace}"


@dataclass(frozen=True, slots=True)
class ElasticsearchSettings:
    """`output.elasticsearch` from the config. Holds where secrets are, never secrets."""

    hosts: list[str]
    namespace: str = "default"
    api_key_env: str | None = None
    api_key_file: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None
    ca_file: str | None = None
    ssl_fingerprint: str | None = None
    verify_certs: bool = True
    batch_size: int = 500
    flush_interval: float = 1.0
    max_retries: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    request_timeout: float = 30.0
    spool_max_bytes: int = 256 * 1024 * 1024
    dead_letter_path: str | None = None  # default: <state_dir>/dead-letter.ndjson
    retention: str = "365d"  # ILM: delete backing indices this long after rollover
    rollover_max_age: str = "30d"  # ILM: roll the data stream over at least this often

    @property
    def data_stream(self) -> str:
        return data_stream_name(self.namespace)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], key: str = "output.elasticsearch"
    ) -> ElasticsearchSettings:
        """Validate a mapping (unknown keys, types, ranges); every problem names its key."""
        errors: list[ConfigError] = []
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping", key=key)
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in data.items():
            k = f"{key}.{name}"
            if name in _SECRET_KEYS:
                errors.append(
                    ConfigError(f"secrets are not accepted inline; use {_SECRET_KEYS[name]}", key=k)
                )
                continue
            if name not in known:
                errors.append(ConfigError(f"unknown option {name!r}", key=k))
                continue
            try:
                values[name] = _check_value(name, value, k)
            except ConfigError as exc:
                errors.append(exc)
        if "hosts" not in values and not any(e.key == f"{key}.hosts" for e in errors):
            errors.append(ConfigError("is required (a list of URLs)", key=f"{key}.hosts"))
        errors.extend(_check_combinations(values, key))
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(list(errors))
        settings = cls(**values)
        if not settings.verify_certs:
            log.warning("TLS verification disabled for Elasticsearch (%s.verify_certs: false)", key)
        return settings


_INTS = {"batch_size": 1, "max_retries": 0, "spool_max_bytes": 1}
_FLOATS = {
    "flush_interval": 0.0,
    "backoff_initial": 0.0,
    "backoff_max": 0.0,
    "request_timeout": 0.001,
}
_STRS = {
    "namespace", "api_key_env", "api_key_file", "username", "password_env", "password_file",
    "bearer_token_env", "bearer_token_file", "ca_file", "ssl_fingerprint", "dead_letter_path",
    "retention", "rollover_max_age",
}  # fmt: skip
_DURATION = re.compile(r"^[1-9][0-9]*(d|h|m|s)$")


def _check_value(name: str, value: Any, key: str) -> Any:
    if name == "hosts":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError("must be a non-empty list of URLs", key=key)
        for i, url in enumerate(value):
            if not isinstance(url, str):
                raise ConfigError("must be a URL string", key=f"{key}[{i}]")
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{url!r} is not an http(s)://host[:port] URL", key=f"{key}[{i}]")
        return list(value)
    if name == "verify_certs":
        if not isinstance(value, bool):
            raise ConfigError("must be true or false", key=key)
        return value
    if name in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"must be an integer, not {type(value).__name__}", key=key)
        if value < _INTS[name]:
            raise ConfigError(f"must be >= {_INTS[name]}", key=key)
        return value
    if name in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"must be a number of seconds, not {type(value).__name__}", key=key)
        if value < _FLOATS[name]:
            raise ConfigError(f"must be >= {_FLOATS[name]}", key=key)
        return float(value)
    if name in _STRS:
        if not isinstance(value, str) or not value:
            raise ConfigError("must be a non-empty string", key=key)
        if name in ("retention", "rollover_max_age") and not _DURATION.match(value):
            raise ConfigError(
                f"{value!r} is not an Elasticsearch duration like 365d, 12h or 30m", key=key
            )
        if name == "namespace" and (not _NAMESPACE.match(value) or len(value) > 100):
            raise ConfigError(
                f"{value!r} is not a valid data stream namespace (lowercase letters, digits, "
                "'_', '.', '+'; no '-' or spaces; at most 100 characters)",
                key=key,
            )
        return value
    raise ConfigError(f"unknown option {name!r}", key=key)  # pragma: no cover


def _check_combinations(values: dict[str, Any], key: str) -> list[ConfigError]:
    errors = []
    for base in ("api_key", "password", "bearer_token"):
        if f"{base}_env" in values and f"{base}_file" in values:
            errors.append(
                ConfigError(f"set only one of {base}_env and {base}_file", key=f"{key}.{base}_file")
            )
    has_password = "password_env" in values or "password_file" in values
    if has_password and "username" not in values:
        errors.append(ConfigError("a password needs a username", key=f"{key}.username"))
    if "username" in values and not has_password:
        errors.append(
            ConfigError("username needs password_env or password_file", key=f"{key}.username")
        )
    methods = [
        m
        for m, present in (
            ("api key", "api_key_env" in values or "api_key_file" in values),
            ("username/password", "username" in values),
            ("bearer token", "bearer_token_env" in values or "bearer_token_file" in values),
        )
        if present
    ]
    if len(methods) > 1:
        errors.append(
            ConfigError(f"choose one authentication method, not {' and '.join(methods)}", key=key)
        )
    return errors


def resolve_secret(settings: ElasticsearchSettings, base: str) -> str | None:
    env_name = getattr(settings, f"{base}_env")
    file_name = getattr(settings, f"{base}_file")
    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise SinkError(
                f"environment variable {env_name} is not set",
                key=f"output.elasticsearch.{base}_env",
            )
        return value.strip()
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SinkError(
                f"cannot read the secret file: {exc.strerror}",
                file=file_name,
                key=f"output.elasticsearch.{base}_file",
            ) from None
    return None


def client_kwargs(settings: ElasticsearchSettings) -> dict[str, Any]:
    """Keyword arguments for `elasticsearch.Elasticsearch` (secrets resolved here, late)."""
    kw: dict[str, Any] = {
        "hosts": list(settings.hosts),
        "request_timeout": settings.request_timeout,
        "max_retries": 0,  # retries are ours: backoff, spool, dead letter
        "retry_on_timeout": False,
    }
    api_key = resolve_secret(settings, "api_key")
    password = resolve_secret(settings, "password")
    token = resolve_secret(settings, "bearer_token")
    if api_key:
        kw["api_key"] = api_key
    elif settings.username:
        kw["basic_auth"] = (settings.username, password or "")
    elif token:
        kw["bearer_auth"] = token
    if settings.ca_file:
        kw["ca_certs"] = settings.ca_file
    if settings.ssl_fingerprint:
        kw["ssl_assert_fingerprint"] = settings.ssl_fingerprint
    if not settings.verify_certs:
        kw["verify_certs"] = False
        kw["ssl_show_warn"] = False  # we already warned once, at config time
    return kw


def make_client(settings: ElasticsearchSettings) -> Any:
    from elasticsearch import Elasticsearch

    kwargs = client_kwargs(settings)  # SinkError (a ValueError) for a missing secret
    try:
        return Elasticsearch(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SinkError(f"invalid Elasticsearch client settings: {exc}") from None


def describe_error(error: Any) -> str:
    """One line from a bulk item error (`{"type", "reason", "caused_by"}`) or a message."""
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
        return text
    return str(error)


def connection_problem(exc: BaseException, settings: ElasticsearchSettings) -> SinkError:
    """Turn a client exception from a check/setup call into one clear line."""
    from elastic_transport import TransportError
    from elasticsearch import (
        ApiError,
        AuthenticationException,
        AuthorizationException,
        UnsupportedProductError,
    )

    hosts = ", ".join(settings.hosts)
    if isinstance(exc, UnsupportedProductError):
        return SinkError(
            f"{hosts} is not Elasticsearch (OpenSearch?): zeekndm supports Elasticsearch "
            f"{' and '.join(f'{m}.x' for m in SUPPORTED_MAJORS)} only"
        )
    if isinstance(exc, AuthenticationException):
        return SinkError(
            f"Elasticsearch {hosts} refused the credentials (401): check username and "
            "password_env/password_file, api_key_env/api_key_file or bearer_token_*"
        )
    if isinstance(exc, AuthorizationException):
        return SinkError(
            f"Elasticsearch {hosts}: the user lacks a privilege (403): "
            f"{describe_error(_error_body(exc))}"
        )
    if isinstance(exc, ApiError):
        body = _error_body(exc)
        if exc.status_code in (400, 406) and "media_type" in str(body):
            return SinkError(
                f"{hosts} does not accept Elasticsearch 8 requests (an Elasticsearch 7.x or "
                "older server?): zeekndm needs Elasticsearch 8.x or 9.x"
            )
        return SinkError(
            f"Elasticsearch {hosts} answered {exc.status_code}: {describe_error(body)}"
        )
    if isinstance(exc, TransportError):
        return SinkError(f"cannot reach Elasticsearch at {hosts}: {_transport_message(exc)}")
    return SinkError(f"Elasticsearch {hosts}: {exc}")


def _error_body(exc: Any) -> Any:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and "error" in body:
        return body["error"]
    return body if body else getattr(exc, "message", str(exc))


def _transport_message(exc: Any) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return str(msg).splitlines()[0][:300]


class ElasticsearchSink:
    """An `AlertSink` indexing into Elasticsearch, with backoff, spool and dead letter."""

    name = "elasticsearch"

    def __init__(
        self,
        settings: ElasticsearchSettings,
        state_dir: Path,
        client_factory: Callable[[ElasticsearchSettings], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir)
        self.index = settings.data_stream
        self.dead_letter_path = (
            Path(settings.dead_letter_path)
            if settings.dead_letter_path
            else self.state_dir / "dead-letter.ndjson"
        )
        try:
            self.spool = Spool(
                self.state_dir / f"es-spool-{settings.namespace}", settings.spool_max_bytes
            )
        except OSError as exc:
            raise SinkError(
                f"cannot create the Elasticsearch spool directory: {exc.strerror}",
                file=str(self.state_dir),
            ) from None
        self._client = (client_factory or make_client)(settings)
        self._sleep = sleep
        self._retry_after = 0.0  # monotonic time before which a failed drain is not retried
        self._drain_failures = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("indexed", "duplicates", "dead_lettered", "retried", "spooled", "drained"), 0
        )
        self._reported = dict(self.stats)
        if self.spool:
            log.info(
                "Elasticsearch spool %s holds undelivered alerts; they are sent first",
                self.spool.directory,
            )

    # -- AlertSink ------------------------------------------------------------------------
    def send(self, batch: Sequence[Alert]) -> SendResult:
        if not batch:
            return self.flush()
        if self.spool and not self._drain():
            # cluster still unavailable: keep arrival order by queueing behind the spool
            return self._spool_or_retry(list(batch), SendResult())
        acked, rejected, pending = self._deliver(list(batch), self.settings.max_retries)
        if pending:
            self._note_failure()
            return self._spool_or_retry(pending, SendResult(acked=acked, rejected=rejected))
        return SendResult(acked=acked, rejected=rejected)

    def flush(self) -> SendResult:
        if self.spool:
            self._drain()
        self._log_summary()
        return SendResult()

    def close(self) -> None:
        if self.spool:
            self._retry_after = 0.0
            self._drain()
        self._log_summary()
        if self.spool:
            log.info(
                "%d alerts remain in the Elasticsearch spool %s; they are sent at the next start",
                self.spool.count(),
                self.spool.directory,
            )
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing must not mask the run's result
            log.debug("closing the Elasticsearch client failed", exc_info=True)

    # -- check ----------------------------------------------------------------------------
    def check(self, allow_unreachable: bool = False) -> str:
        """Connect once; one line on success, one clear SinkError line otherwise.

        With `allow_unreachable` (a service starting while the cluster is down), a
        cluster that cannot be reached at all is not an error: alerts go to the spool
        until it is back. Wrong credentials or an unsupported server still are."""
        try:
            info = self._client.info()
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one line
            from elastic_transport import ConnectionError as TransportConnectionError

            if allow_unreachable and isinstance(exc, TransportConnectionError):
                self._note_failure()
                log.warning(
                    "%s; alerts are spooled in %s until it is back",
                    connection_problem(exc, self.settings),
                    self.spool.directory,
                )
                return ""
            raise connection_problem(exc, self.settings) from None
        return verify_info(info.body if hasattr(info, "body") else info, self.settings)

    # -- delivery -------------------------------------------------------------------------
    def _deliver(
        self, alerts: list[Alert], max_retries: int
    ) -> tuple[int, tuple[tuple[str, str], ...], list[Alert]]:
        """Bulk-create; retry what may succeed later. Returns (acked, rejected, pending)."""
        acked = 0
        rejected: list[tuple[str, str]] = []
        pending = alerts
        attempt = 0
        while pending:
            outcome = self._bulk_once(pending)
            retry: list[Alert] = []
            for alert, (status, error) in zip(pending, outcome):
                if status in (200, 201):
                    acked += 1
                    self.stats["indexed"] += 1
                elif status == 409:
                    acked += 1
                    self.stats["duplicates"] += 1
                elif _permanent(status):
                    reason = f"{status} {describe_error(error)}"
                    try:
                        self._dead_letter(alert, status, reason)
                    except OSError as exc:
                        # not recorded anywhere yet: keep it rather than lose it
                        log.warning("cannot write %s: %s", self.dead_letter_path, exc)
                        retry.append(alert)
                        continue
                    rejected.append((alert.id, reason))
                else:
                    retry.append(alert)
            pending = retry
            if not pending or attempt >= max_retries:
                break
            delay = _backoff(attempt, self.settings)
            attempt += 1
            self.stats["retried"] += len(pending)
            log.debug("retrying %d alerts in %.2f s (attempt %d)", len(pending), delay, attempt)
            self._sleep(delay)
        return acked, tuple(rejected), pending

    def _bulk_once(self, alerts: list[Alert]) -> list[tuple[int | None, Any]]:
        """One pass of bulk requests; (status, error) per alert, None status = not sent."""
        from elastic_transport import TransportError
        from elasticsearch.helpers import streaming_bulk

        actions = (
            {"_op_type": "create", "_index": self.index, "_id": a.id, "_source": a.doc}
            for a in alerts
        )
        results: list[tuple[int | None, Any]] = []
        try:
            for _ok, item in streaming_bulk(
                self._client,
                actions,
                chunk_size=self.settings.batch_size,
                raise_on_error=False,
                raise_on_exception=False,
                max_retries=0,
                yield_ok=True,
            ):
                info = next(iter(item.values()), {})
                status = info.get("status")
                exc = info.get("exception")
                if exc is not None and (status is None or status < 400):
                    status = None  # e.g. a non-Elasticsearch answer: never count it as stored
                elif exc is not None and status in (401, 403):
                    log.error("Elasticsearch refused the bulk request: %s", describe_error(exc))
                results.append((status, info.get("error")))
        except TransportError as exc:
            log.warning(
                "Elasticsearch %s unreachable: %s",
                ", ".join(self.settings.hosts),
                _transport_message(exc),
            )
        except Exception as exc:  # noqa: BLE001 - never lose a batch to an unexpected error
            log.warning("Elasticsearch bulk request failed: %s", exc)
        results.extend([(None, "not sent")] * (len(alerts) - len(results)))
        return results

    def _dead_letter(self, alert: Alert, status: int | None, reason: str) -> None:
        record = {
            "@timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "index": self.index,
            "id": alert.id,
            "status": status,
            "reason": reason,
            "doc": alert.doc,
        }
        path = self.dead_letter_path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, orjson.dumps(record) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        self.stats["dead_lettered"] += 1

    # -- spool ----------------------------------------------------------------------------
    def _spool_or_retry(self, alerts: list[Alert], done: SendResult) -> SendResult:
        try:
            stored = self.spool.append(alerts)
        except OSError as exc:
            log.warning("cannot write the Elasticsearch spool %s: %s", self.spool.directory, exc)
            stored = False
        if not stored:
            return SendResult(acked=done.acked, rejected=done.rejected, retry=tuple(alerts))
        self.stats["spooled"] += len(alerts)
        return SendResult(acked=done.acked + len(alerts), rejected=done.rejected)

    def _drain(self) -> bool:
        """Send spooled segments oldest first; True when the spool is empty afterwards."""
        if time.monotonic() < self._retry_after:
            return False
        for segment in self.spool.segments():
            alerts = self.spool.read(segment)
            _acked, rejected, pending = self._deliver(alerts, max_retries=1)
            if rejected:
                log.warning(
                    "%d spooled alerts rejected permanently; see %s",
                    len(rejected),
                    self.dead_letter_path,
                )
            if pending:
                # the whole segment is sent again later; delivered ids then answer 409
                self._note_failure()
                return False
            self.spool.remove(segment)
            self.stats["drained"] += len(alerts)
        self._drain_failures = 0
        self._retry_after = 0.0
        return True

    def _note_failure(self) -> None:
        self._retry_after = time.monotonic() + _backoff(self._drain_failures, self.settings)
        self._drain_failures += 1

    def _log_summary(self) -> None:
        delta = {k: v - self._reported.get(k, 0) for k, v in self.stats.items()}
        if any(delta.values()):
            log.info(
                "elasticsearch %s: %d indexed, %d already present, %d dead-lettered, "
                "%d spooled, %d drained from spool",
                self.index,
                delta["indexed"],
                delta["duplicates"],
                delta["dead_lettered"],
                delta["spooled"],
                delta["drained"],
            )
            self._reported = dict(self.stats)


def _permanent(status: int | None) -> bool:
    return status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429)


def _backoff(attempt: int, settings: ElasticsearchSettings) -> float:
    """Exponential backoff with jitter in [d/2, d], d = min(max, initial * 2**attempt)."""
    d = min(settings.backoff_max, settings.backoff_initial * (2**attempt))
    return d * random.uniform(0.5, 1.0)


def verify_info(info: dict[str, Any], settings: ElasticsearchSettings) -> str:
    """The one-line verdict from `GET /`; refuses servers zeekndm does not support."""
    hosts = ", ".join(settings.hosts)
    version = info.get("version") or {}
    if version.get("distribution") == "opensearch" or "opensearch" in str(info.get("tagline", "")):
        raise SinkError(
            f"{hosts} is not Elasticsearch (OpenSearch?): zeekndm supports Elasticsearch "
            "8.x and 9.x only"
        )
    number = str(version.get("number", "?"))
    try:
        major = int(number.split(".")[0])
    except ValueError:
        major = -1
    if major not in SUPPORTED_MAJORS:
        raise SinkError(
            f"Elasticsearch {number} at {hosts} is not supported: zeekndm needs "
            "Elasticsearch 8.x or 9.x"
        )
    cluster = info.get("cluster_name", "?")
    return f"elasticsearch {hosts} OK (version {number}, cluster {cluster})"
