"""Delivery into a data stream by bulk `create`: what the Elasticsearch and OpenSearch sinks share.

Why one module: both servers take the same REST calls for everything delivery needs
(`_bulk` with `create`, `_search` with an `ids` query, `_mget`, `GET`/`PUT _data_stream`,
`_mapping`, `_settings`, `_resolve/index`, `_index_template`), so the delivery guarantees
are written once, here, and each sink only says how its own client sends a request
(`DataStreamSink._perform`), which servers it accepts, and how its server words a missing
privilege. Filebeat's output does the same, with the same rules:

- every alert has a deterministic `_id` and is sent with `op_type: create`, so a re-sent
  alert answers 409 and counts as delivered (never a duplicate). `create` only sees the
  data stream's *write* index, so before a batch goes out one `ids` query over the older
  backing indices (known from `GET _data_stream`, and from the `_index` each bulk item
  reports, which changes at a rollover) finds the alerts already stored there (plus a
  real-time multi-get in the index rolled over last, as a search sees only refreshed
  documents); with a single backing index, the usual case, there is nothing to look up.
- 201 created, 409 already there, found in an older index -> acknowledged
- 429 / 5xx per item, a missing data stream (404: created, then retried), whole-request
  failures and no route -> retried with exponential backoff and jitter, at most
  `max_retries` times and `send_timeout` seconds within one send; what is still
  undelivered is appended to the on-disk spool (fsynced, then acknowledged) and drained
  oldest first on later sends once the cluster answers. A full spool leaves the batch for
  retry instead.
- a request refused as too large (413, a proxy's body limit) -> split in halves and sent
  again, down to one alert; an alert still too large alone is dead-lettered.
- 400 and other permanent 4xx per item (mapping/parse errors) -> written with the reason
  to the dead-letter NDJSON file (fsynced) and reported as rejected; never retried.

Every request has an overall deadline (`request_timeout`, see `zeekndm.sinks.deadline`)
and `interrupt()` ends a send at once (undelivered alerts go to the spool). An outage is
logged twice: when it starts and when the cluster answers again. Secrets come from
environment variables or files only, never from the YAML or a URL, are validated when
loaded, and never logged: every message built from a client exception is redacted.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import orjson

from zeekndm.enrich import DATASET, Alert
from zeekndm.errors import ConfigError, ConfigErrors, SinkError
from zeekndm.redact import Redactor, has_userinfo, load_secret, redact_url
from zeekndm.signalsafe import SignalSafeEvent
from zeekndm.sinks.base import SendResult
from zeekndm.sinks.spool import Spool

log = logging.getLogger(__name__)

# Bumped with every change of the index templates; written into each backing index's
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
# data stream name parts: lowercase, none of \/*?"<>|,#: space, and no '-' in a namespace
_NAMESPACE = re.compile(r"^[a-z0-9_][a-z0-9_.+]*$")
_DURATION = re.compile(r"^[1-9][0-9]*(d|h|m|s)$")
_WHERE_SECRETS_GO = (
    "credentials in a URL are not accepted (they end up in logs and process listings): "
    "set username with password_env or password_file, api_key_env or api_key_file, or "
    "bearer_token_env or bearer_token_file under output.elasticsearch"
)


def data_stream_name(namespace: str) -> str:
    return f"logs-{DATASET}-{namespace}"


# -- settings -----------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreSettings:
    """What every data stream output is configured with. Holds where secrets are, never
    secrets; each sink's settings add their own authentication options."""

    CONFIG_KEY: ClassVar[str] = "output"
    PRODUCT: ClassVar[str] = "the cluster"
    HOSTS_REQUIRED: ClassVar[str] = "is required (a list of URLs)"
    SECRET_KEYS: ClassVar[dict[str, str]] = {"password": "password_env or password_file"}
    WHERE_SECRETS_GO: ClassVar[str] = _WHERE_SECRETS_GO
    STRINGS: ClassVar[frozenset[str]] = frozenset()  # the subclass's own string options
    BOOLS: ClassVar[frozenset[str]] = frozenset()

    hosts: list[str] = field(default_factory=list)
    namespace: str = "default"
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
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
    rollover_max_age: str = "30d"  # ILM / ISM: roll the data stream over at least this often

    @property
    def data_stream(self) -> str:
        return data_stream_name(self.namespace)

    @property
    def endpoint(self) -> str:
        """Where the cluster is, for messages: the URLs, redacted."""
        return ", ".join(redact_url(h) for h in self.hosts)

    @classmethod
    def from_dict(cls, data: dict[str, Any], key: str | None = None) -> Any:
        """Validate a mapping (unknown keys, types, ranges); every problem names its key."""
        key = key or cls.CONFIG_KEY
        errors: list[ConfigError] = []
        if not isinstance(data, dict):
            raise ConfigError("must be a mapping", key=key)
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in data.items():
            k = f"{key}.{name}"
            if name in cls.SECRET_KEYS:
                errors.append(
                    ConfigError(
                        f"secrets are not accepted inline; use {cls.SECRET_KEYS[name]}", key=k
                    )
                )
                continue
            if name not in known:
                errors.append(ConfigError(f"unknown option {name!r}", key=k))
                continue
            try:
                values[name] = cls.check_value(name, value, k)
            except ConfigError as exc:
                errors.append(exc)
        has_place = any(e.key in (f"{key}.hosts", f"{key}.cloud_id") for e in errors)
        if "hosts" not in values and "cloud_id" not in values and not has_place:
            errors.append(ConfigError(cls.HOSTS_REQUIRED, key=f"{key}.hosts"))
        errors.extend(cls.check_combinations(values, key))
        if errors:
            raise errors[0] if len(errors) == 1 else ConfigErrors(list(errors))
        settings = cls(**values)
        if not settings.verify_certs:
            log.warning(
                "TLS verification disabled for %s (%s.verify_certs: false)", cls.PRODUCT, key
            )
        return settings

    @classmethod
    def check_value(cls, name: str, value: Any, key: str) -> Any:
        """One option's value, checked; ConfigError naming `key` otherwise."""
        if name == "hosts":
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not value:
                raise ConfigError("must be a non-empty list of URLs", key=key)
            return [
                check_url(url, f"{key}[{i}]", cls.WHERE_SECRETS_GO) for i, url in enumerate(value)
            ]
        if name in _BOOLS or name in cls.BOOLS:
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
                raise ConfigError(
                    f"must be a number of seconds, not {type(value).__name__}", key=key
                )
            if not value >= _FLOATS[name] or value == float("inf"):
                raise ConfigError(f"must be a finite number >= {_FLOATS[name]}", key=key)
            return float(value)
        if name in _STRS or name in cls.STRINGS:
            if not isinstance(value, str) or not value:
                raise ConfigError("must be a non-empty string", key=key)
            if name in ("retention", "rollover_max_age") and not _DURATION.match(value):
                raise ConfigError(
                    f"{value!r} is not an {cls.PRODUCT} duration like 365d, 12h or 30m", key=key
                )
            if name == "namespace" and (not _NAMESPACE.match(value) or len(value) > 100):
                raise ConfigError(
                    f"{value!r} is not a valid data stream namespace (lowercase letters, "
                    "digits, '_', '.', '+'; no '-' or spaces; at most 100 characters)",
                    key=key,
                )
            return value
        raise ConfigError(f"unknown option {name!r}", key=key)  # pragma: no cover

    @classmethod
    def check_combinations(cls, values: dict[str, Any], key: str) -> list[ConfigError]:
        """Options that need or exclude each other; the subclass adds its own."""
        errors = []
        for base in ("password", *(s for s in cls.SECRET_KEYS if s not in ("password", "token"))):
            if f"{base}_env" in values and f"{base}_file" in values:
                errors.append(
                    ConfigError(
                        f"set only one of {base}_env and {base}_file", key=f"{key}.{base}_file"
                    )
                )
        has_password = "password_env" in values or "password_file" in values
        if has_password and "username" not in values:
            errors.append(ConfigError("a password needs a username", key=f"{key}.username"))
        if "username" in values and not has_password:
            errors.append(
                ConfigError("username needs password_env or password_file", key=f"{key}.username")
            )
        methods = [m for m, present in cls.auth_methods(values) if present]
        if len(methods) > 1:
            errors.append(
                ConfigError(
                    f"choose one authentication method, not {' and '.join(methods)}", key=key
                )
            )
        return errors

    @classmethod
    def auth_methods(cls, values: dict[str, Any]) -> list[tuple[str, bool]]:
        return [("username/password", "username" in values)]


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
    "namespace",
    "username",
    "password_env",
    "password_file",
    "ca_file",
    "ssl_fingerprint",
    "dead_letter_path",
    "retention",
    "rollover_max_age",
}


def check_url(url: Any, key: str, where_secrets_go: str = _WHERE_SECRETS_GO) -> str:
    """An http(s)://host[:port][/path] URL without credentials; ConfigError otherwise.

    The message never repeats a URL that carries credentials."""
    if not isinstance(url, str):
        raise ConfigError("must be a URL string", key=key)
    if has_userinfo(url):
        raise ConfigError(where_secrets_go, key=key)
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


def resolve_secret(settings: StoreSettings, base: str) -> str | None:
    """The secret named by `<base>_env` or `<base>_file`, validated (SinkError otherwise)."""
    return load_secret(
        getattr(settings, f"{base}_env", None),
        getattr(settings, f"{base}_file", None),
        f"{settings.CONFIG_KEY}.{base}",
        header_token=base != "password",
        error=SinkError,
    )


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
    def load(cls, settings: StoreSettings) -> Credentials:
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


# -- what a failed request was ------------------------------------------------------------
class ServerError(Exception):
    """The server answered with an error status. `error` is the `error` object of its
    body (or the body, or the client's message); `original` the client's exception."""

    def __init__(self, status: int, error: Any, original: BaseException | None = None) -> None:
        super().__init__(f"{status} {describe_error(error)}")
        self.status = status
        self.error = error
        self.original = original


class NoAnswer(Exception):
    """No HTTP answer: connection refused or lost, the deadline passed, or TLS failed."""

    def __init__(
        self,
        message: str,
        *,
        timeout: bool = False,
        tls: bool = False,
        original: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.timeout = timeout
        self.tls = tls
        self.original = original


def describe_error(error: Any) -> str:
    """One line from a bulk item error (`{"type", "reason", "caused_by"}`) or a message."""
    if isinstance(error, dict):
        text = f"{error.get('type', 'error')}: {error.get('reason', '')}".rstrip(": ")
        cause = error.get("caused_by")
        if isinstance(cause, dict):
            text += f" (caused by {cause.get('type', '')}: {cause.get('reason', '')})"
        return text
    return str(error).splitlines()[0][:300] if str(error) else ""


def quote_name(name: str) -> str:
    """An index, data stream or template name (or a comma-separated list) in a path."""
    return quote(name, safe=",")


class _Outage:
    """One log line when deliveries start failing, one when they succeed again."""

    def __init__(self, product: str, where: str, logger: logging.Logger) -> None:
        self._log = logger
        self.product = product
        self.where = where
        self.since: float | None = None
        self.failures = 0
        self.last_error: str | None = None

    def failure(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        if self.since is None:
            self.since = time.monotonic()
            self._log.warning(
                "%s %s is not accepting alerts: %s; retrying with backoff, alerts wait in the "
                "spool meanwhile",
                self.product,
                self.where,
                reason,
            )
        else:
            self._log.debug(
                "%s %s still failing (%d): %s", self.product, self.where, self.failures, reason
            )

    def success(self) -> None:
        if self.since is not None:
            self._log.info(
                "%s %s is accepting alerts again after %d failed attempt%s over %.0f s",
                self.product,
                self.where,
                self.failures,
                "" if self.failures == 1 else "s",
                time.monotonic() - self.since,
            )
        self.since = None
        self.failures = 0


# -- the sink -----------------------------------------------------------------------------
class DataStreamSink:
    """An `AlertSink` indexing into a data stream, with backoff, spool and dead letter.

    A subclass says how its client sends one request (`_request`, raising `ServerError`
    or `NoAnswer`), which servers it accepts (`_verify_info`), how a failed check reads
    (`_problem`), what its server's 403 says is missing (`_missing_privilege`), and how
    its client is opened and interrupted."""

    name = "datastream"
    product = "the cluster"  # in messages: "Elasticsearch", "OpenSearch"
    spool_prefix = "spool"  # the spool directory: <state_dir>/<prefix>-<namespace>
    # what happens to alerts sent before `zeekndm setup` installed the template
    without_template = "the data stream would be created with other mappings"

    @property
    def endpoint(self) -> str:
        """Where the cluster is (its URLs, redacted, or the Cloud id), for logs."""
        return self.settings.endpoint

    def __init__(
        self,
        settings: Any,
        state_dir: Path,
        client_factory: Callable[[Any], Any] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        # messages carry the subclass's logger name (zeekndm.sinks.elasticsearch, ...)
        self._log = logging.getLogger(type(self).__module__)
        self.state_dir = Path(state_dir)
        self.index = settings.data_stream
        self.dead_letter_path = (
            Path(settings.dead_letter_path)
            if settings.dead_letter_path
            else self.state_dir / "dead-letter.ndjson"
        )
        try:
            self.spool = Spool(
                self.state_dir / f"{self.spool_prefix}-{settings.namespace}",
                settings.spool_max_bytes,
                product=self.product,
            )
        except OSError as exc:
            raise SinkError(
                f"cannot create the {self.product} spool directory: {exc.strerror}",
                file=str(self.state_dir),
            ) from None
        if client_factory is None:
            self._redact, self._client = self._open_client(settings)
        else:
            self._redact = Redactor()
            self._client = client_factory(settings)
        self._stop = SignalSafeEvent()  # set() by interrupt(), from a signal handler
        self._sleep = sleep
        self._retry_after = 0.0  # monotonic time before which a failed drain is not retried
        self._drain_failures = 0
        self._outage = _Outage(self.product, settings.endpoint, self._log)
        # backing indices: the write index, and the older ones a re-sent alert may be in
        self._inspected = False
        self._inspected_at = 0.0
        self._stale = False  # a delivery failed since: a rollover may have happened meanwhile
        self._write_index: str | None = None
        self._older: list[str] | None = None  # None: unknown (look up the whole stream)
        self._rolled_at: float | None = None  # monotonic time of the last rollover, if recent
        self._lookup_off = not settings.dedupe_lookup
        self._created_stream = False
        self._pipeline_warned = False
        self.remaining = 0  # alerts left in the spool when closed
        self.stats: dict[str, int] = dict.fromkeys(
            ("indexed", "duplicates", "dead_lettered", "retried", "spooled", "drained", "split"), 0
        )
        self._reported = dict(self.stats)
        if self.spool:
            self._log.info(
                "%s spool %s holds undelivered alerts; they are sent first",
                self.product,
                self.spool.directory,
            )

    # -- what a subclass provides -----------------------------------------------------------
    def _open_client(self, settings: Any) -> tuple[Redactor, Any]:
        """(a redactor for its secrets, the client)."""
        raise NotImplementedError

    # `_request(client, method, path, *, params, body, ndjson, timeout)`: one request, the
    # parsed JSON body, ServerError or NoAnswer when it fails; `_verify_info(info,
    # settings)`: the one-line verdict from `GET /`, SinkError for an unsupported server
    _request: Callable[..., Any]
    _verify_info: Callable[[dict[str, Any], Any], str]

    def _perform(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        ndjson: bool = False,
        timeout: float,
    ) -> Any:
        return type(self)._request(
            self._client, method, path, params=params, body=body, ndjson=ndjson, timeout=timeout
        )

    def _verify(self, info: dict[str, Any]) -> str:
        return type(self)._verify_info(info, self.settings)

    def _problem(self, exc: BaseException) -> SinkError:
        """A failed `GET /` (the client's exception, or ours) as one clear, redacted line."""
        raise NotImplementedError

    def _missing_privilege(self, reason: str) -> str | None:
        return None

    def _connections(self) -> list[Any]:
        """The client's HTTP connections (each with `interrupt()`), for `interrupt`."""
        return []

    def _close_client(self) -> None:
        self._client.close()

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
            self._log.info(
                "%d alerts remain in the %s spool %s; they are sent at the next start",
                self.remaining,
                self.product,
                self.spool.directory,
            )
        try:
            self._close_client()
        except Exception:  # noqa: BLE001 - closing must not mask the run's result
            self._log.debug("closing the %s client failed", self.product, exc_info=True)

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
            nodes = self._connections()
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
        try:
            info = self._perform("GET", "/", timeout=self.settings.request_timeout)
        except Exception as exc:  # noqa: BLE001 - every client failure becomes one line
            problem = self._problem(exc)
            if allow_unreachable and isinstance(exc, NoAnswer) and not exc.tls:
                self._note_failure()
                self._outage.last_error = problem.message
                self._log.warning(
                    "%s; alerts are spooled in %s until it answers", problem, self.spool.directory
                )
                return ""
            raise problem from None
        line = self._verify(info if isinstance(info, dict) else {})
        self._inspect()
        return line

    def _get(self, path: str, timeout: float, **params: str) -> Any:
        return self._perform("GET", path, params=params or None, timeout=timeout)

    def _inspect(self, timeout: float | None = None) -> None:
        """Learn the backing indices; warn when the data stream is not zeekndm's."""
        timeout = timeout or self.settings.request_timeout
        try:
            resp = self._get(f"/_data_stream/{quote_name(self.index)}", timeout)
        except ServerError as exc:
            self._inspected, self._stale, self._inspected_at = True, False, time.monotonic()
            if exc.status == 404:
                self._older, self._write_index = [], None
                self._warn_if_template_missing(timeout)
                return
            # 403, or a cluster without the data streams API
            self._log.debug("cannot inspect data stream %s: %s", self.index, self._redact(exc))
            self._resolve_backing_indices(timeout)
            return
        except Exception as exc:  # noqa: BLE001 - unreachable: try again at the first send
            self._log.debug("cannot inspect data stream %s: %s", self.index, self._redact(exc))
            return
        self._inspected, self._stale, self._inspected_at = True, False, time.monotonic()
        streams = (resp or {}).get("data_streams") or []
        if not streams:
            return
        ds = streams[0]
        indices = [i["index_name"] for i in ds.get("indices", [])]
        if indices:
            self._older, self._write_index = indices[:-1], indices[-1]
            self._note_write_index_age(timeout)
        template = ds.get("template")
        if template and template != self.index:
            self._log.warning(
                "data stream %s is governed by index template %r, not zeekndm's (%s): its "
                "mappings differ from the alerts'; run `zeekndm setup`, which installs the "
                "template and rolls the data stream over",
                self.index,
                template,
                self.index,
            )
            return
        if self._write_index:
            try:
                mapping = self._get(f"/{quote_name(self._write_index)}/_mapping", timeout)
            except Exception as exc:  # noqa: BLE001 - 403 without view_index_metadata
                self._log.debug(
                    "cannot read the mapping of %s: %s", self._write_index, self._redact(exc)
                )
                return
            meta = (mapping.get(self._write_index) or {}).get("mappings", {}).get("_meta") or {}
            if (
                meta.get("managed_by") != "zeekndm"
                or meta.get("template_version") != TEMPLATE_VERSION
            ):
                self._log.warning(
                    "the write index %s of data stream %s was not created from this "
                    "zeekndm's index template (template version %s, expected %s): run "
                    "`zeekndm setup`, which rolls the data stream over",
                    self._write_index,
                    self.index,
                    meta.get("template_version"),
                    TEMPLATE_VERSION,
                )

    def _recent_rollover(self) -> bool:
        return self._rolled_at is not None and time.monotonic() - self._rolled_at < REALTIME_WINDOW

    def _note_write_index_age(self, timeout: float) -> None:
        """When the write index was created, i.e. when the last rollover happened."""
        if not self._older or not self._write_index:
            return
        self._rolled_at = time.monotonic()  # unknown: assume just now
        index = self._write_index
        try:
            resp = self._get(f"/{quote_name(index)}/_settings/index.creation_date", timeout)
            created = float(resp[index]["settings"]["index"]["creation_date"]) / 1000
        except Exception as exc:  # noqa: BLE001 - 403 without view_index_metadata
            self._log.debug("cannot read the creation date of %s: %s", index, self._redact(exc))
            return
        self._rolled_at = time.monotonic() - max(0.0, time.time() - created)

    def _resolve_backing_indices(self, timeout: float) -> None:
        """The backing indices from `_resolve/index` (in the server's core) when `GET
        _data_stream` is not available; unknown (look up the whole stream) otherwise."""
        try:
            resp = self._get(f"/_resolve/index/{quote_name(self.index)}", timeout)
        except Exception as exc:  # noqa: BLE001
            self._log.debug("cannot resolve %s: %s", self.index, self._redact(exc))
            return
        streams = [d for d in resp.get("data_streams", []) if d.get("name") == self.index]
        if not streams:
            self._older, self._write_index = [], None
            return
        indices = sorted(streams[0].get("backing_indices") or [], key=lambda i: i[-6:])
        if indices:
            self._older, self._write_index = indices[:-1], indices[-1]
            self._note_write_index_age(timeout)

    def _warn_if_template_missing(self, timeout: float) -> None:
        try:
            self._get(f"/_index_template/{quote_name(self.index)}", timeout)
        except ServerError as exc:
            if exc.status == 404:
                self._log.warning(
                    "index template %s is not installed: %s; run `zeekndm setup` first",
                    self.index,
                    self.without_template,
                )
                return
            self._log.debug("cannot read index template %s: %s", self.index, self._redact(exc))
        except Exception as exc:  # noqa: BLE001 - the writer cannot see it
            self._log.debug("cannot read index template %s: %s", self.index, self._redact(exc))

    # -- delivery -------------------------------------------------------------------------
    def _remaining(self, deadline: float) -> float:
        return deadline - time.monotonic()

    def _timeout(self, deadline: float) -> float:
        """One request's deadline: `request_timeout`, or what is left of the send's."""
        return min(self.settings.request_timeout, max(0.001, self._remaining(deadline)))

    def _wait(self, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self._stop.wait(delay)

    def _deliver(
        self, alerts: list[Alert], max_retries: int, budget: float | None = None
    ) -> tuple[int, tuple[tuple[str, str], ...], list[Alert]]:
        """Bulk-create; retry what may succeed later. Returns (acked, rejected, pending)."""
        deadline = time.monotonic() + min(
            budget or self.settings.send_timeout, self.settings.send_timeout
        )
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
                        self._log.warning("cannot write %s: %s", self.dead_letter_path, exc)
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
            self._log.debug(
                "retrying %d alerts in %.2f s (attempt %d)", len(pending), delay, attempt
            )
            self._wait(delay)
        return acked, tuple(rejected), pending

    def _skip_stored_elsewhere(
        self, alerts: list[Alert], deadline: float
    ) -> tuple[list[Alert], int]:
        """Drop the alerts already stored in an older backing index (after a rollover)."""
        if self._lookup_off or self._older == [] or not alerts:
            return alerts, 0
        index = ",".join(self._older) if self._older else self.index
        timeout = self._timeout(deadline)
        found: set[str] = set()
        try:
            for start in range(0, len(alerts), 10_000):
                ids = [a.id for a in alerts[start : start + 10_000]]
                # a search sees what was refreshed (within a second of the write) ...
                resp = self._perform(
                    "POST",
                    f"/{quote_name(index)}/_search",
                    params={"ignore_unavailable": "true"},
                    body={
                        "query": {"ids": {"values": ids}},
                        "size": len(ids),
                        "_source": False,
                        "track_total_hits": False,
                    },
                    timeout=timeout,
                )
                found.update(h["_id"] for h in resp["hits"]["hits"])
                if self._older and self._recent_rollover():
                    # ... and a multi-get is real-time: the index rolled over last may hold
                    # alerts written the moment before (a spool drained across a rollover)
                    docs = [{"_index": self._older[-1], "_id": i} for i in ids if i not in found]
                    if docs:
                        got = self._perform(
                            "POST",
                            "/_mget",
                            params={"_source": "false"},
                            body={"docs": docs},
                            timeout=timeout,
                        )
                        found.update(d["_id"] for d in got["docs"] if d.get("found"))
        except ServerError as exc:
            if exc.status == 403:
                self._lookup_off = True
                reason = self._redact(describe_error(exc.error))
                self._log.warning(
                    "cannot look alerts up in %s (%s): alerts re-sent after a rollover may be "
                    "stored twice; grant the writer `read` on logs-zeekndm.alert-* (README, Roles)",
                    index,
                    self._missing_privilege(reason) or "403",
                )
            elif exc.status != 404:
                self._log.debug("ids lookup in %s failed: %s", index, self._redact(exc))
            return alerts, 0
        except Exception as exc:  # noqa: BLE001 - the bulk that follows decides
            self._log.debug("ids lookup in %s failed: %s", index, self._redact(_message(exc)))
            return alerts, 0
        if not found:
            return alerts, 0
        self.stats["duplicates"] += len(found)
        return [a for a in alerts if a.id not in found], len(found)

    def _warn_missing_pipeline(self, error: Any) -> None:
        if not self._pipeline_warned:
            self._pipeline_warned = True
            self._log.warning(
                "%s refuses alerts for data stream %s: %s; they are kept in the spool: run "
                "`zeekndm setup` (it installs the ingest pipeline)",
                self.product,
                self.index,
                self._redact(describe_error(error)),
            )

    def _create_data_stream(self, deadline: float) -> None:
        """A bulk item said the data stream does not exist (auto-creation refused)."""
        if self._created_stream:
            return
        self._created_stream = True
        try:
            self._perform(
                "PUT", f"/_data_stream/{quote_name(self.index)}", timeout=self._timeout(deadline)
            )
            self._log.info("data stream %s did not exist: created it", self.index)
        except ServerError as exc:
            if "already_exists" in str(exc.error):
                return
            self._log.warning(
                "data stream %s does not exist and cannot be created (%s): alerts are kept "
                "in the spool; run `zeekndm setup`",
                self.index,
                self._redact(describe_error(exc.error)),
            )
        except Exception as exc:  # noqa: BLE001
            self._log.debug("creating %s failed: %s", self.index, self._redact(_message(exc)))

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
        index = self.index
        body = b"".join(
            orjson.dumps({"create": {"_index": index, "_id": a.id}})
            + b"\n"
            + orjson.dumps(a.doc)
            + b"\n"
            for a in chunk
        )
        try:
            resp = self._perform(
                "POST", "/_bulk", body=body, ndjson=True, timeout=self._timeout(deadline)
            )
        except ServerError as exc:
            if exc.status == 413:
                if len(chunk) == 1:
                    return [(413, _too_large(len(body)))]
                self.stats["split"] += 1
                half = len(chunk) // 2
                self._log.debug("413 for %d alerts (%d bytes): splitting", len(chunk), len(body))
                return self._bulk_chunk(chunk[:half], deadline) + self._bulk_chunk(
                    chunk[half:], deadline
                )
            reason = self._redact(describe_error(exc.error))
            self._outage.failure(f"HTTP {exc.status} for the bulk request: {reason}")
            return [(None, reason)] * len(chunk)
        except NoAnswer as exc:
            self._outage.failure(self._redact(exc.message))
            return [(None, "not sent")] * len(chunk)
        except Exception as exc:  # noqa: BLE001 - never lose a batch to an unexpected error
            self._outage.failure(f"bulk request failed: {self._redact(describe_error(exc))}")
            return [(None, "not sent")] * len(chunk)
        items = (resp or {}).get("items") or []
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
            self._outage.failure(f"alerts refused: {self._missing_privilege(reason) or reason}")
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
            self._log.info("data stream %s rolled over to %s", self.index, index)
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
            self._log.warning(
                "cannot write the %s spool %s: %s", self.product, self.spool.directory, exc
            )
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
                self._log.warning(
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
            self._log.info(
                "%s %s: %d indexed, %d already present, %d dead-lettered, %d spooled, "
                "%d drained from spool",
                self.name,
                self.index,
                delta["indexed"],
                delta["duplicates"],
                delta["dead_lettered"],
                delta["spooled"],
                delta["drained"],
            )
            self._reported = dict(self.stats)


def _too_large(size: int) -> dict:
    return {
        "type": "request_entity_too_large",
        "reason": f"the alert alone ({size} bytes with its action line) is larger than the "
        "cluster, or a proxy in front of it, accepts in one request (http.max_content_length, "
        "or the proxy's body limit)",
    }


def _message(exc: BaseException) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return str(msg).splitlines()[0][:300] if str(msg) else type(exc).__name__


def _permanent(status: int | None) -> bool:
    return status is not None and 400 <= status < 500 and status not in (401, 403, 408, 429)


def _missing_pipeline(error: Any) -> bool:
    return isinstance(error, dict) and bool(
        re.search(r"pipeline with id \[[^\]]+\] does not exist", str(error.get("reason", "")))
    )


def _missing_index(error: Any) -> bool:
    return isinstance(error, dict) and error.get("type") == "index_not_found_exception"


def _backoff(attempt: int, settings: Any) -> float:
    """Exponential backoff with jitter in [d/2, d], d = min(max, initial * 2**attempt)."""
    d = min(settings.backoff_max, settings.backoff_initial * (2**attempt))
    return d * random.uniform(0.5, 1.0)


def version_tuple(number: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", number)[:3]) or (0,)
