"""The Elasticsearch output: bulk `create` into the data stream logs-zeekndm.alert-<namespace>.

Why it looks like Filebeat's output: every alert has a deterministic `_id` and is sent
with `op_type: create`, so a re-sent alert answers 409 and counts as delivered (never a
duplicate). `create` only sees the data stream's *write* index, so before a batch goes
out one `ids` query over the older backing indices (known from `GET _data_stream`, and
from the `_index` each bulk item reports, which changes at a rollover) finds the alerts
already stored there (plus a real-time multi-get in the index rolled over last, as a
search sees only refreshed documents); with a single backing index, the usual case,
there is nothing to look up. Each batch ends explicitly (see `zeekndm.sinks.base`):

- 201 created, 409 already there, found in an older index -> acknowledged
- 429 / 5xx per item, a missing data stream (404: created, then retried), whole-request
  failures and no route                               -> retried with exponential
  backoff and jitter, at most `max_retries` times and `send_timeout` seconds within one
  send; what is still undelivered is appended to the on-disk spool (fsynced, then
  acknowledged) and drained oldest first on later sends once the cluster answers. A full
  spool leaves the batch for retry instead.
- a request refused as too large (413, a proxy's body limit) -> split in halves and sent
  again, down to one alert; an alert still too large alone is dead-lettered.
- 400 and other permanent 4xx per item (mapping/parse errors) -> written with the reason
  to the dead-letter NDJSON file (fsynced) and reported as rejected; never retried.

Every request has an overall deadline (`request_timeout`, see `zeekndm.sinks.es_node`)
and `interrupt()` ends a send at once (undelivered alerts go to the spool), so delivery
can neither hang on a server that answers one byte at a time nor hold up a shutdown.
An outage is logged twice: when it starts and when the cluster answers again.

Secrets come from environment variables or files only, never from the YAML itself or a
URL, are validated when loaded, and never logged: every message built from a client
exception goes through a `Redactor`. The official client (8.x) is used for everything;
it sends `compatible-with=8`, which Elasticsearch 8 and 9 both accept.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from zeekndm.enrich import DATASET, Alert
from zeekndm.errors import ConfigError, ConfigErrors, SinkError
from zeekndm.redact import Redactor, check_secret, has_userinfo, redact_url
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
# Bumped with every change of the index template; written into each backing index's
# mapping `_meta`, so `run` can tell a data stream created by another template.
TEMPLATE_VERSION = 3
# How long "the data stream has one backing index" is trusted before asking again: a
# rollover is seen at once by a new process (it asks at start), after any failed delivery
# (a spool drain asks first) and by the `_index` bulk items report.
INSPECT_EVERY = 30.0
# A search sees a document once its index refreshed (a second after the write, or at the
# next search of an idle shard); for this long after a rollover the lookup also asks the
# index rolled over last in real time (a multi-get), for alerts written just before it.
REALTIME_WINDOW = 60.0
# The last drain at close while the cluster is failing: brief, the spool is on disk.
CLOSE_BUDGET = 5.0
_SECRET_KEYS = {
    "password": "password_env or password_file",
    "api_key": "api_key_env or api_key_file",
    "bearer_token": "bearer_token_env or bearer_token_file",
    "token": "bearer_token_env or bearer_token_file",
}
_WHERE_SECRETS_GO = (
    "credentials in a URL are not accepted (they end up in logs and process listings): "
    "set username with password_env or password_file, api_key_env or api_key_file, or "
    "bearer_token_env or bearer_token_file under output.elasticsearch"
)
# data stream name parts: lowercase, none of \/*?"<>|,#: space, and no '-' in a namespace
_NAMESPACE = re.compile(r"^[a-z0-9_][a-z0-9_.+]*$")
_GRANTED_BY = re.compile(
    r"action \[([^\]]+)\].*?(?: on indices \[([^\]]+)\])?, this action is granted by the "
    r"(cluster|index) privileges \[([^\]]+)\]"
)


def data_stream_name(namespace: str) -> str:
    return f"logs-{DATASET}-{namespace}"


@dataclass(frozen=True, slots=True)
class ElasticsearchSettings:
    """`output.elasticsearch` from the config. Holds where secrets are, never secrets."""

    hosts: list[str] = field(default_factory=list)
    cloud_id: str | None = None  # Elastic Cloud Hosted: instead of hosts
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
    request_timeout: float = 30.0  # overall deadline of one request
    send_timeout: float = 20.0  # at most this long in one send, retries included; then spool
    spool_max_bytes: int = 256 * 1024 * 1024
    dead_letter_path: str | None = None  # default: <state_dir>/dead-letter.ndjson
    dedupe_lookup: bool = True  # look a batch's ids up in older backing indices first
    retention: str = "365d"  # delete backing indices this long after rollover (or DSL)
    rollover_max_age: str = "30d"  # ILM: roll the data stream over at least this often

    @property
    def data_stream(self) -> str:
        return data_stream_name(self.namespace)

    @property
    def endpoint(self) -> str:
        """Where the cluster is, for messages: the URLs (redacted) or the cloud deployment."""
        if self.cloud_id:
            return cloud_endpoint(self.cloud_id)
        return ", ".join(redact_url(h) for h in self.hosts)

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
        has_place = any(e.key in (f"{key}.hosts", f"{key}.cloud_id") for e in errors)
        if "hosts" not in values and "cloud_id" not in values and not has_place:
            errors.append(
                ConfigError("is required (a list of URLs, or cloud_id)", key=f"{key}.hosts")
            )
        if "hosts" in values and "cloud_id" in values:
            errors.append(ConfigError("set either hosts or cloud_id, not both", key=key))
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
    "send_timeout": 0.001,
}
_BOOLS = {"verify_certs", "dedupe_lookup"}
_STRS = {
    "namespace", "api_key_env", "api_key_file", "username", "password_env", "password_file",
    "bearer_token_env", "bearer_token_file", "ca_file", "ssl_fingerprint", "dead_letter_path",
    "retention", "rollover_max_age", "cloud_id",
}  # fmt: skip
_DURATION = re.compile(r"^[1-9][0-9]*(d|h|m|s)$")


def check_url(url: Any, key: str) -> str:
    """An http(s)://host[:port][/path] URL without credentials; ConfigError otherwise.

    The message never repeats a URL that carries credentials."""
    if not isinstance(url, str):
        raise ConfigError("must be a URL string", key=key)
    if has_userinfo(url):
        raise ConfigError(_WHERE_SECRETS_GO, key=key)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ConfigError(
            f"{redact_url(url)!r} is not an http(s)://host[:port] URL", key=key
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{redact_url(url)!r} is not an http(s)://host[:port] URL", key=key)
    return url


def cloud_endpoint(cloud_id: str) -> str:
    """The Elasticsearch URL an Elastic Cloud ID stands for (ValueError if malformed)."""
    from elastic_transport.client_utils import parse_cloud_id

    parsed = parse_cloud_id(cloud_id)
    if parsed.es_address is None:
        raise ValueError("Cloud ID has no Elasticsearch address")
    host, port = parsed.es_address
    return f"https://{host}:{port}"


def cloud_kibana_url(cloud_id: str | None) -> str | None:
    """Kibana's URL from an Elastic Cloud ID, when the ID names one."""
    if not cloud_id:
        return None
    from elastic_transport.client_utils import parse_cloud_id

    parsed = parse_cloud_id(cloud_id)
    if parsed.kibana_address is None:
        return None
    host, port = parsed.kibana_address
    return f"https://{host}:{port}"


def _check_value(name: str, value: Any, key: str) -> Any:
    if name == "hosts":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise ConfigError("must be a non-empty list of URLs", key=key)
        return [check_url(url, f"{key}[{i}]") for i, url in enumerate(value)]
    if name in _BOOLS:
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
        if not value >= _FLOATS[name] or value == float("inf"):
            raise ConfigError(f"must be a finite number >= {_FLOATS[name]}", key=key)
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
        if name == "cloud_id":
            try:
                cloud_endpoint(value)
            except ValueError:
                raise ConfigError(
                    "is not an Elastic Cloud ID (copy it from the deployment's page in the "
                    "Elastic Cloud console: name:base64)",
                    key=key,
                ) from None
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
    """The secret named by `<base>_env` or `<base>_file`, validated (SinkError otherwise)."""
    env_name = getattr(settings, f"{base}_env")
    file_name = getattr(settings, f"{base}_file")
    header_token = base != "password"
    if env_name:
        key = f"output.elasticsearch.{base}_env"
        value = os.environ.get(env_name)
        if not value:
            raise SinkError(f"environment variable {env_name} is not set", key=key)
        try:
            return check_secret(
                value, f"environment variable {env_name}", header_token=header_token
            )
        except ValueError as exc:
            raise SinkError(str(exc), key=key) from None
    if file_name:
        key = f"output.elasticsearch.{base}_file"
        try:
            value = Path(file_name).read_text(encoding="utf-8")
        except OSError as exc:
            raise SinkError(
                f"cannot read the secret file: {exc.strerror}", file=file_name, key=key
            ) from None
        except UnicodeDecodeError:
            raise SinkError("the secret file is not UTF-8 text", file=file_name, key=key) from None
        try:
            return check_secret(value, "the secret file", header_token=header_token)
        except ValueError as exc:
            raise SinkError(str(exc), file=file_name, key=key) from None
    return None


@dataclass(frozen=True, slots=True)
class Credentials:
    """The resolved secrets, kept apart from the settings so a repr never shows them."""

    api_key: str | None = None
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None

    def __repr__(self) -> str:
        return "Credentials(...)"

    @classmethod
    def load(cls, settings: ElasticsearchSettings) -> Credentials:
        return cls(
            api_key=resolve_secret(settings, "api_key"),
            username=settings.username,
            password=resolve_secret(settings, "password"),
            bearer_token=resolve_secret(settings, "bearer_token"),
        )

    def redactor(self) -> Redactor:
        return Redactor.for_basic(self.username, self.password, self.api_key, self.bearer_token)

    def authorization(self) -> str | None:
        """The Authorization header value (for Kibana, which takes the same credentials)."""
        from base64 import b64encode

        if self.api_key:
            return f"ApiKey {self.api_key}"
        if self.username:
            pair = f"{self.username}:{self.password or ''}".encode()
            return "Basic " + b64encode(pair).decode()
        if self.bearer_token:
            return f"Bearer {self.bearer_token}"
        return None


def client_kwargs(
    settings: ElasticsearchSettings, credentials: Credentials | None = None
) -> dict[str, Any]:
    """Keyword arguments for `elasticsearch.Elasticsearch` (secrets resolved here, late)."""
    from zeekndm.sinks.es_node import DeadlineHttpNode

    creds = credentials or Credentials.load(settings)
    kw: dict[str, Any] = {
        "request_timeout": settings.request_timeout,
        "max_retries": 0,  # retries are ours: backoff, spool, dead letter
        "retry_on_timeout": False,
        "node_class": DeadlineHttpNode,
    }
    if settings.cloud_id:
        kw["cloud_id"] = settings.cloud_id
    else:
        kw["hosts"] = list(settings.hosts)
    if creds.api_key:
        kw["api_key"] = creds.api_key
    elif creds.username:
        kw["basic_auth"] = (creds.username, creds.password or "")
    elif creds.bearer_token:
        kw["bearer_auth"] = creds.bearer_token
    if settings.ca_file:
        kw["ca_certs"] = settings.ca_file
    if settings.ssl_fingerprint:
        kw["ssl_assert_fingerprint"] = settings.ssl_fingerprint
    if not settings.verify_certs:
        kw["verify_certs"] = False
        kw["ssl_show_warn"] = False  # we already warned once, at config time
    return kw


def make_client(settings: ElasticsearchSettings, credentials: Credentials | None = None) -> Any:
    from elasticsearch import Elasticsearch

    creds = credentials or Credentials.load(settings)  # SinkError for a missing/bad secret
    kwargs = client_kwargs(settings, creds)
    try:
        return Elasticsearch(**kwargs)
    except (ValueError, TypeError) as exc:
        raise SinkError(f"invalid Elasticsearch client settings: {creds.redactor()(exc)}") from None


def describe_error(error: Any) -> str:
    """One line from a bulk item error (`{"type", "reason", "caused_by"}`) or a message."""
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
        return text
    return str(error).splitlines()[0][:300] if str(error) else ""


def missing_privilege(reason: str) -> str | None:
    """'needs the cluster privilege monitor (or manage, all)' from a 403's reason."""
    m = _GRANTED_BY.search(reason)
    if not m:
        return None
    action, indices, kind, granted = m.groups()
    first, *others = [p.strip() for p in granted.split(",")]
    alt = f" (or {', '.join(others)})" if others else ""
    where = f" on {indices}" if indices else ""
    return f"{action} needs the {kind} privilege {first}{alt}{where}"


def connection_problem(
    exc: BaseException, settings: ElasticsearchSettings, redact: Redactor | None = None
) -> SinkError:
    """Turn a client exception from a check/setup call into one clear, redacted line."""
    from elastic_transport import ConnectionTimeout, TransportError
    from elasticsearch import (
        ApiError,
        AuthenticationException,
        AuthorizationException,
        UnsupportedProductError,
    )

    redact = redact or Redactor()
    where = settings.endpoint
    if isinstance(exc, UnsupportedProductError):
        return SinkError(
            f"{where} is not Elasticsearch (OpenSearch?): zeekndm supports Elasticsearch "
            f"{' and '.join(f'{m}.x' for m in SUPPORTED_MAJORS)} only"
        )
    if isinstance(exc, AuthenticationException):
        return SinkError(
            f"Elasticsearch {where} refused the credentials (401): check username and "
            "password_env/password_file, api_key_env/api_key_file or bearer_token_*"
        )
    if isinstance(exc, AuthorizationException):
        reason = redact(describe_error(_error_body(exc)))
        needs = missing_privilege(reason)
        return SinkError(
            f"Elasticsearch {where}: the user lacks a privilege (403): "
            + (f"{needs} (see README, Roles)" if needs else reason)
        )
    if isinstance(exc, ApiError):
        body = _error_body(exc)
        if exc.status_code in (400, 406) and "media_type" in str(body):
            m = re.search(
                r"Accept version must be either version \d+ or \d+, but found \d+", str(body)
            )
            said = f" ({m.group(0)})" if m else ""
            return SinkError(
                f"{where} rejected the Elasticsearch 8 client's media type{said}: an "
                "Elasticsearch 7.x or older server? zeekndm needs Elasticsearch 8.x or 9.x"
            )
        return SinkError(
            f"Elasticsearch {where} answered {exc.status_code}: {redact(describe_error(body))}"
        )
    if isinstance(exc, ConnectionTimeout):
        return SinkError(
            f"Elasticsearch at {where} did not answer in time: {redact(_transport_message(exc))}"
        )
    if isinstance(exc, TransportError):
        return SinkError(
            f"cannot reach Elasticsearch at {where}: {redact(_transport_message(exc))}"
        )
    return SinkError(f"Elasticsearch {where}: {redact(describe_error(exc))}")


def _error_body(exc: Any) -> Any:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and "error" in body:
        return body["error"]
    return body if body else getattr(exc, "message", str(exc))


def _transport_message(exc: Any) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return str(msg).splitlines()[0][:300] if str(msg) else type(exc).__name__


def is_serverless(info: dict[str, Any]) -> bool:
    """As Beats decide it: `GET /` answers `version.build_flavor: serverless`."""
    return (info.get("version") or {}).get("build_flavor") == "serverless"


class _Outage:
    """One log line when deliveries start failing, one when they succeed again."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.since: float | None = None
        self.failures = 0
        self.last_error: str | None = None

    def failure(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        if self.since is None:
            self.since = time.monotonic()
            log.warning(
                "Elasticsearch %s is not accepting alerts: %s; retrying with backoff, alerts "
                "wait in the spool meanwhile",
                self.where,
                reason,
            )
        else:
            log.debug("Elasticsearch %s still failing (%d): %s", self.where, self.failures, reason)

    def success(self) -> None:
        if self.since is not None:
            log.info(
                "Elasticsearch %s is accepting alerts again after %d failed attempt%s over %.0f s",
                self.where,
                self.failures,
                "" if self.failures == 1 else "s",
                time.monotonic() - self.since,
            )
        self.since = None
        self.failures = 0


class ElasticsearchSink:
    """An `AlertSink` indexing into Elasticsearch, with backoff, spool and dead letter."""

    name = "elasticsearch"

    def __init__(
        self,
        settings: ElasticsearchSettings,
        state_dir: Path,
        client_factory: Callable[[ElasticsearchSettings], Any] | None = None,
        sleep: Callable[[float], None] | None = None,
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
        if client_factory is None:
            credentials = Credentials.load(settings)
            self._redact = credentials.redactor()
            self._client = make_client(settings, credentials)
        else:
            self._redact = Redactor()
            self._client = client_factory(settings)
        self._stop = threading.Event()
        self._sleep = sleep
        self._retry_after = 0.0  # monotonic time before which a failed drain is not retried
        self._drain_failures = 0
        self._outage = _Outage(settings.endpoint)
        # backing indices: the write index, and the older ones a re-sent alert may be in
        self._inspected = False
        self._inspected_at = 0.0
        self._stale = False  # a delivery failed since: a rollover may have happened meanwhile
        self._write_index: str | None = None
        self._older: list[str] | None = None  # None: unknown (look up the whole stream)
        self._rolled_at: float | None = None  # monotonic time of the last rollover, if recent
        self._lookup_off = not settings.dedupe_lookup
        self._created_stream = False
        self.remaining = 0  # alerts left in the spool when closed
        self.stats: dict[str, int] = dict.fromkeys(
            ("indexed", "duplicates", "dead_lettered", "retried", "spooled", "drained", "split"), 0
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
        if self._stop.is_set():
            return self._spool_or_retry(list(batch), SendResult())
        if self.spool and not self._drain():
            # cluster still unavailable: keep arrival order by queueing behind the spool
            return self._spool_or_retry(list(batch), SendResult())
        acked, rejected, pending = self._deliver(list(batch), self.settings.max_retries)
        if pending:
            self._note_failure()
            return self._spool_or_retry(pending, SendResult(acked=acked, rejected=rejected))
        return SendResult(acked=acked, rejected=rejected)

    def flush(self) -> SendResult:
        if self.spool and not self._stop.is_set():
            self._drain()
        self._log_summary()
        return SendResult()

    def close(self) -> None:
        # one last, short drain: the spool is on disk and the next start sends what is left,
        # so a shutdown waits at most a few seconds for a misbehaving cluster
        if self.spool and not self._stop.is_set():
            self._retry_after = 0.0
            self._drain(budget=CLOSE_BUDGET if self._outage.since is not None else None)
        self._log_summary()
        self.remaining = self.spool.count() if self.spool else 0
        if self.remaining:
            log.info(
                "%d alerts remain in the Elasticsearch spool %s; they are sent at the next start",
                self.remaining,
                self.spool.directory,
            )
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing must not mask the run's result
            log.debug("closing the Elasticsearch client failed", exc_info=True)

    def undelivered(self) -> tuple[int, str | None]:
        """(alerts still in the spool, the last delivery error); complete after `close()`."""
        count = self.remaining if self.remaining else (self.spool.count() if self.spool else 0)
        return count, self._outage.last_error

    def interrupt(self) -> None:
        """Stop delivering now (from a signal handler or another thread).

        The request under way fails at once, backoff waits end, and whatever is not
        delivered yet goes to the spool; nothing more is sent by this sink. Safe to call
        from a signal handler: it only sets flags and shuts sockets down."""
        self._stop.set()
        try:
            nodes = self._client.transport.node_pool.all()
        except AttributeError:  # a test double without a transport
            nodes = []
        for node in nodes:
            stop = getattr(node, "interrupt", None)
            if stop is not None:
                stop()

    # -- check ----------------------------------------------------------------------------
    def check(self, allow_unreachable: bool = False) -> str:
        """Connect once; one line on success, one clear SinkError line otherwise.

        With `allow_unreachable` (a service starting while the cluster is down or
        overloaded), a cluster that cannot be reached, or does not answer in time, is not
        an error: alerts go to the spool until it is back. Wrong credentials or an
        unsupported server still are. Also warns when the data stream exists but was not
        created from zeekndm's template (see `zeekndm setup`)."""
        from elastic_transport import ConnectionError as TransportConnectionError
        from elastic_transport import ConnectionTimeout, TlsError

        try:
            info = self._client.info()
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one line
            problem = connection_problem(exc, self.settings, self._redact)
            transient = isinstance(exc, (TransportConnectionError, ConnectionTimeout))
            if allow_unreachable and transient and not isinstance(exc, TlsError):
                self._note_failure()
                self._outage.last_error = problem.message
                log.warning("%s; alerts are spooled in %s until it answers", problem,
                            self.spool.directory)  # fmt: skip
                return ""
            raise problem from None
        line = verify_info(info.body if hasattr(info, "body") else info, self.settings)
        self._inspect()
        return line

    def _inspect(self, timeout: float | None = None) -> None:
        """Learn the backing indices; warn when the data stream is not zeekndm's."""
        from elasticsearch import ApiError, NotFoundError

        client = self._client.options(request_timeout=timeout or self.settings.request_timeout)
        try:
            resp = client.indices.get_data_stream(name=self.index)
        except NotFoundError:
            self._inspected, self._older, self._write_index = True, [], None
            self._stale, self._inspected_at = False, time.monotonic()
            self._warn_if_template_missing(client)
            return
        except ApiError as exc:  # 403, or a cluster without the data streams API
            log.debug("cannot inspect data stream %s: %s", self.index, self._redact(exc))
            self._inspected, self._stale, self._inspected_at = True, False, time.monotonic()
            self._resolve_backing_indices(client)
            return
        except Exception as exc:  # noqa: BLE001 - unreachable: try again at the first send
            log.debug("cannot inspect data stream %s: %s", self.index, self._redact(exc))
            return
        self._inspected, self._stale, self._inspected_at = True, False, time.monotonic()
        streams = resp.body.get("data_streams") or []
        if not streams:
            return
        ds = streams[0]
        indices = [i["index_name"] for i in ds.get("indices", [])]
        if indices:
            self._older, self._write_index = indices[:-1], indices[-1]
            self._note_write_index_age(client)
        template = ds.get("template")
        if template and template != self.index:
            log.warning(
                "data stream %s is governed by index template %r, not zeekndm's (%s): its "
                "mappings differ from the alerts'; run `zeekndm setup`, which installs the "
                "template and rolls the data stream over",
                self.index, template, self.index,
            )  # fmt: skip
            return
        if self._write_index:
            try:
                mapping = client.indices.get_mapping(index=self._write_index).body
            except Exception as exc:  # noqa: BLE001 - 403 without view_index_metadata
                log.debug("cannot read the mapping of %s: %s", self._write_index, self._redact(exc))
                return
            meta = (mapping.get(self._write_index) or {}).get("mappings", {}).get("_meta") or {}
            if (
                meta.get("managed_by") != "zeekndm"
                or meta.get("template_version") != TEMPLATE_VERSION
            ):
                log.warning(
                    "the write index %s of data stream %s was not created from this "
                    "zeekndm's index template (template version %s, expected %s): run "
                    "`zeekndm setup`, which rolls the data stream over",
                    self._write_index, self.index, meta.get("template_version"), TEMPLATE_VERSION,
                )  # fmt: skip

    def _recent_rollover(self) -> bool:
        return self._rolled_at is not None and time.monotonic() - self._rolled_at < REALTIME_WINDOW

    def _note_write_index_age(self, client: Any) -> None:
        """When the write index was created, i.e. when the last rollover happened."""
        if not self._older or not self._write_index:
            return
        self._rolled_at = time.monotonic()  # unknown: assume just now
        try:
            resp = client.indices.get_settings(
                index=self._write_index, name="index.creation_date"
            ).body
            created = float(resp[self._write_index]["settings"]["index"]["creation_date"]) / 1000
        except Exception as exc:  # noqa: BLE001 - 403 without view_index_metadata
            log.debug("cannot read the creation date of %s: %s", self._write_index,
                      self._redact(exc))  # fmt: skip
            return
        self._rolled_at = time.monotonic() - max(0.0, time.time() - created)

    def _resolve_backing_indices(self, client: Any) -> None:
        """The backing indices from `_resolve/index` (core Elasticsearch) when `GET
        _data_stream` is not available; unknown (look up the whole stream) otherwise."""
        try:
            resp = client.indices.resolve_index(name=self.index).body
        except Exception as exc:  # noqa: BLE001
            log.debug("cannot resolve %s: %s", self.index, self._redact(exc))
            return
        streams = [d for d in resp.get("data_streams", []) if d.get("name") == self.index]
        if not streams:
            self._older, self._write_index = [], None
            return
        indices = sorted(streams[0].get("backing_indices") or [], key=lambda i: i[-6:])
        if indices:
            self._older, self._write_index = indices[:-1], indices[-1]
            self._note_write_index_age(client)

    def _warn_if_template_missing(self, client: Any) -> None:
        from elasticsearch import ApiError, NotFoundError

        try:
            client.indices.get_index_template(name=self.index)
        except NotFoundError:
            log.warning(
                "index template %s is not installed: the data stream would be created by "
                "Elasticsearch's built-in logs template with other mappings; run `zeekndm "
                "setup` first",
                self.index,
            )
        except (ApiError, Exception) as exc:  # noqa: BLE001 - 403: the writer cannot see it
            log.debug("cannot read index template %s: %s", self.index, self._redact(exc))

    # -- delivery -------------------------------------------------------------------------
    def _remaining(self, deadline: float) -> float:
        return deadline - time.monotonic()

    def _wait(self, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self._stop.wait(delay)

    def _deliver(
        self, alerts: list[Alert], max_retries: int, budget: float | None = None
    ) -> tuple[int, tuple[tuple[str, str], ...], list[Alert]]:
        """Bulk-create; retry what may succeed later. Returns (acked, rejected, pending)."""
        deadline = time.monotonic() + min(budget or self.settings.send_timeout,
                                          self.settings.send_timeout)  # fmt: skip
        if (
            not self._inspected
            or self._stale
            or (self._older == [] and time.monotonic() - self._inspected_at > INSPECT_EVERY)
        ):
            self._inspect(min(self.settings.request_timeout, self.settings.send_timeout / 4))
        pending, acked = self._skip_stored_elsewhere(alerts, deadline)
        rejected: list[tuple[str, str]] = []
        attempt = 0
        while pending and not self._stop.is_set():
            outcome = self._bulk_once(pending, deadline)
            retry: list[Alert] = []
            missing_stream = False
            for alert, (status, error) in zip(pending, outcome):
                if status in (200, 201):
                    acked += 1
                    self.stats["indexed"] += 1
                elif status == 409:
                    acked += 1
                    self.stats["duplicates"] += 1
                elif status == 404 and _missing_index(error):
                    missing_stream = True
                    retry.append(alert)
                elif _missing_pipeline(error):
                    # the template names an ingest pipeline that is not installed (the
                    # template put by hand, or the pipeline deleted): not the alert's fault
                    self._warn_missing_pipeline(error)
                    retry.append(alert)
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
            if missing_stream:
                self._create_data_stream(deadline)
            if not pending or attempt >= max_retries or self._remaining(deadline) <= 0:
                break
            delay = min(_backoff(attempt, self.settings), max(0.0, self._remaining(deadline)))
            attempt += 1
            self.stats["retried"] += len(pending)
            log.debug("retrying %d alerts in %.2f s (attempt %d)", len(pending), delay, attempt)
            self._wait(delay)
        return acked, tuple(rejected), pending

    def _skip_stored_elsewhere(
        self, alerts: list[Alert], deadline: float
    ) -> tuple[list[Alert], int]:
        """Drop the alerts already stored in an older backing index (after a rollover)."""
        from elasticsearch import ApiError, AuthorizationException, NotFoundError

        if self._lookup_off or self._older == [] or not alerts:
            return alerts, 0
        index = ",".join(self._older) if self._older else self.index
        timeout = min(self.settings.request_timeout, max(0.001, self._remaining(deadline)))
        client = self._client.options(request_timeout=timeout)
        found: set[str] = set()
        try:
            for start in range(0, len(alerts), 10_000):
                ids = [a.id for a in alerts[start : start + 10_000]]
                # a search sees what was refreshed (within a second of the write) ...
                resp = client.search(
                    index=index, query={"ids": {"values": ids}}, size=len(ids), source=False,
                    ignore_unavailable=True, track_total_hits=False,
                )  # fmt: skip
                found.update(h["_id"] for h in resp.body["hits"]["hits"])
                if self._older and self._recent_rollover():
                    # ... and a multi-get is real-time: the index rolled over last may hold
                    # alerts written the moment before (a spool drained across a rollover)
                    docs = [{"_index": self._older[-1], "_id": i} for i in ids if i not in found]
                    if docs:
                        got = client.mget(docs=docs, source=False).body["docs"]
                        found.update(d["_id"] for d in got if d.get("found"))
        except AuthorizationException as exc:
            self._lookup_off = True
            log.warning(
                "cannot look alerts up in %s (%s): alerts re-sent after a rollover may be "
                "stored twice; grant the writer `read` on logs-zeekndm.alert-* (README, Roles)",
                index, missing_privilege(self._redact(describe_error(_error_body(exc)))) or "403",
            )  # fmt: skip
            return alerts, 0
        except NotFoundError:
            return alerts, 0
        except (ApiError, Exception) as exc:  # noqa: BLE001 - the bulk that follows decides
            log.debug("ids lookup in %s failed: %s", index, self._redact(_transport_message(exc)))
            return alerts, 0
        if not found:
            return alerts, 0
        self.stats["duplicates"] += len(found)
        return [a for a in alerts if a.id not in found], len(found)

    def _warn_missing_pipeline(self, error: Any) -> None:
        if not getattr(self, "_pipeline_warned", False):
            self._pipeline_warned = True
            log.warning(
                "Elasticsearch refuses alerts for data stream %s: %s; they are kept in the "
                "spool: run `zeekndm setup` (it installs the ingest pipeline)",
                self.index,
                self._redact(describe_error(error)),
            )

    def _create_data_stream(self, deadline: float) -> None:
        """A bulk item said the data stream does not exist (auto-creation refused)."""
        from elasticsearch import ApiError

        if self._created_stream:
            return
        self._created_stream = True
        timeout = min(self.settings.request_timeout, max(0.001, self._remaining(deadline)))
        try:
            self._client.options(request_timeout=timeout).indices.create_data_stream(
                name=self.index
            )
            log.info("data stream %s did not exist: created it", self.index)
        except ApiError as exc:
            if "already_exists" in str(exc.body):
                return
            log.warning(
                "data stream %s does not exist and cannot be created (%s): alerts are kept "
                "in the spool; run `zeekndm setup`",
                self.index,
                self._redact(describe_error(_error_body(exc))),
            )
        except Exception as exc:  # noqa: BLE001
            log.debug("creating %s failed: %s", self.index, self._redact(_transport_message(exc)))

    def _bulk_once(self, alerts: list[Alert], deadline: float) -> list[tuple[int | None, Any]]:
        """One pass of bulk requests; (status, error) per alert, None status = not sent."""
        size = self.settings.batch_size
        results: list[tuple[int | None, Any]] = []
        for start in range(0, len(alerts), size):
            chunk = alerts[start : start + size]
            if self._stop.is_set() or self._remaining(deadline) <= 0:
                results.extend([(None, "not sent")] * len(chunk))
                continue
            results.extend(self._bulk_chunk(chunk, deadline))
        return results

    def _bulk_chunk(self, chunk: list[Alert], deadline: float) -> list[tuple[int | None, Any]]:
        from elastic_transport import TransportError
        from elasticsearch import ApiError

        index = self.index
        body = b"".join(
            orjson.dumps({"create": {"_index": index, "_id": a.id}}) + b"\n"
            + orjson.dumps(a.doc) + b"\n"
            for a in chunk
        )  # fmt: skip
        timeout = min(self.settings.request_timeout, max(0.001, self._remaining(deadline)))
        try:
            resp = self._client.options(request_timeout=timeout).bulk(operations=body)
        except ApiError as exc:
            if exc.status_code == 413:
                if len(chunk) == 1:
                    return [(413, {"type": "request_entity_too_large", "reason": (
                        f"the alert alone ({len(body)} bytes with its action line) is larger "
                        "than the cluster, or a proxy in front of it, accepts in one request "
                        "(http.max_content_length, or the proxy's body limit)")})]  # fmt: skip
                self.stats["split"] += 1
                half = len(chunk) // 2
                log.debug("413 for %d alerts (%d bytes): splitting", len(chunk), len(body))
                return self._bulk_chunk(chunk[:half], deadline) + self._bulk_chunk(
                    chunk[half:], deadline
                )
            status = exc.status_code
            reason = self._redact(describe_error(_error_body(exc)))
            self._outage.failure(f"HTTP {status} for the bulk request: {reason}")
            return [(None, reason)] * len(chunk)
        except TransportError as exc:
            self._outage.failure(self._redact(_transport_message(exc)))
            return [(None, "not sent")] * len(chunk)
        except Exception as exc:  # noqa: BLE001 - never lose a batch to an unexpected error
            self._outage.failure(f"bulk request failed: {self._redact(describe_error(exc))}")
            return [(None, "not sent")] * len(chunk)
        items = resp.body.get("items") or []
        results: list[tuple[int | None, Any]] = []
        denied = None
        for item in items:
            info = next(iter(item.values()), {}) if isinstance(item, dict) else {}
            status = info.get("status")
            if status in (200, 201, 409):
                self._note_index(info.get("_index"))
            elif status in (401, 403):
                denied = info.get("error")
            results.append((status, info.get("error")))
        if denied is not None:
            reason = self._redact(describe_error(denied))
            self._outage.failure(f"alerts refused: {missing_privilege(reason) or reason}")
        else:
            self._outage.success()
        results.extend([(None, "no result")] * (len(chunk) - len(results)))
        return results[: len(chunk)]

    def _note_index(self, index: str | None) -> None:
        """A bulk item's `_index`: a new one means the data stream was rolled over."""
        if not index or index == self._write_index:
            return
        if self._write_index is not None and self._older is not None:
            if self._write_index not in self._older:
                self._older.append(self._write_index)
            self._rolled_at = time.monotonic()
            log.info("data stream %s rolled over to %s", self.index, index)
        self._write_index = index

    def _dead_letter(self, alert: Alert, status: int | None, reason: str) -> None:
        record = {
            "@timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "index": self.index,
            "id": alert.id,
            "status": status,
            "reason": self._redact(reason),
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

    def _drain(self, budget: float | None = None) -> bool:
        """Send spooled segments oldest first; True when the spool is empty afterwards."""
        if time.monotonic() < self._retry_after:
            return False
        for segment in self.spool.segments():
            if self._stop.is_set():
                return False
            alerts = self.spool.read(segment)
            _acked, rejected, pending = self._deliver(alerts, max_retries=1, budget=budget)
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
        self._stale = True
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


def _missing_pipeline(error: Any) -> bool:
    return isinstance(error, dict) and bool(
        re.search(r"pipeline with id \[[^\]]+\] does not exist", str(error.get("reason", "")))
    )


def _missing_index(error: Any) -> bool:
    return isinstance(error, dict) and error.get("type") == "index_not_found_exception"


def _backoff(attempt: int, settings: ElasticsearchSettings) -> float:
    """Exponential backoff with jitter in [d/2, d], d = min(max, initial * 2**attempt)."""
    d = min(settings.backoff_max, settings.backoff_initial * (2**attempt))
    return d * random.uniform(0.5, 1.0)


def verify_info(info: dict[str, Any], settings: ElasticsearchSettings) -> str:
    """The one-line verdict from `GET /`; refuses servers zeekndm does not support."""
    where = settings.endpoint
    version = info.get("version") or {}
    if version.get("distribution") == "opensearch" or "opensearch" in str(info.get("tagline", "")):
        raise SinkError(
            f"{where} is not Elasticsearch (OpenSearch?): zeekndm supports Elasticsearch "
            "8.x and 9.x only"
        )
    cluster = info.get("cluster_name", "?")
    if is_serverless(info):
        return f"elasticsearch {where} OK (serverless project {cluster})"
    number = str(version.get("number", "?"))
    try:
        major = int(number.split(".")[0])
    except ValueError:
        major = -1
    if major not in SUPPORTED_MAJORS:
        raise SinkError(
            f"Elasticsearch {number} at {where} is not supported: zeekndm needs "
            "Elasticsearch 8.x or 9.x"
        )
    return f"elasticsearch {where} OK (version {number}, cluster {cluster})"
