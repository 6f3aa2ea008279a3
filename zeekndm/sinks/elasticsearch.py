"""The Elasticsearch output: bulk `create` into the data stream logs-zeekndm.alert-<namespace>.

The delivery itself (deterministic ids, `create`, 409 = delivered, the duplicate lookup
across rollovers, retries with backoff, 413 splits, spool, dead letters, deadlines) is
`zeekndm.sinks.datastream`'s, shared with the OpenSearch output. What is Elasticsearch's
own is here: the settings (Elastic Cloud's `cloud_id`, API keys, bearer tokens), the
official client (8.x; it sends `compatible-with=8`, which Elasticsearch 8 and 9 both
accept) and its HTTP node with an overall request deadline (`zeekndm.sinks.es_node`),
which servers are accepted (Elasticsearch 8.x and 9.x, serverless projects; OpenSearch
and 7.x are refused in one line), and how a 403 names the missing privilege.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from zeekndm.errors import ConfigError, SinkError
from zeekndm.redact import Redactor
from zeekndm.sinks.datastream import (  # noqa: F401 - re-exported: setup, tests, outputs
    TEMPLATE_VERSION,
    Credentials,
    DataStreamSink,
    NoAnswer,
    ServerError,
    StoreSettings,
    check_url,
    data_stream_name,
    describe_error,
    resolve_secret,
)

log = logging.getLogger(__name__)

# The transport logs every request at INFO and every failed node at WARNING; our own
# per-flush summary and warnings say the same once. Quieten it unless the user chose.
for _name, _level in (("elastic_transport.transport", logging.WARNING),
                      ("elastic_transport.node_pool", logging.ERROR)):  # fmt: skip
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)

SUPPORTED_MAJORS = (8, 9)
_GRANTED_BY = re.compile(
    r"action \[([^\]]+)\].*?(?: on indices \[([^\]]+)\])?, this action is granted by the "
    r"(cluster|index) privileges \[([^\]]+)\]"
)


@dataclass(frozen=True)
class ElasticsearchSettings(StoreSettings):
    """`output.elasticsearch` from the config. Holds where secrets are, never secrets."""

    CONFIG_KEY: ClassVar[str] = "output.elasticsearch"
    PRODUCT: ClassVar[str] = "Elasticsearch"
    HOSTS_REQUIRED: ClassVar[str] = "is required (a list of URLs, or cloud_id)"
    SECRET_KEYS: ClassVar[dict[str, str]] = {
        "password": "password_env or password_file",
        "api_key": "api_key_env or api_key_file",
        "bearer_token": "bearer_token_env or bearer_token_file",
        "token": "bearer_token_env or bearer_token_file",
    }
    STRINGS: ClassVar[frozenset[str]] = frozenset(
        {"api_key_env", "api_key_file", "bearer_token_env", "bearer_token_file", "cloud_id"}
    )

    cloud_id: str | None = None  # Elastic Cloud Hosted: instead of hosts
    api_key_env: str | None = None
    api_key_file: str | None = None
    bearer_token_env: str | None = None
    bearer_token_file: str | None = None

    @property
    def endpoint(self) -> str:
        """Where the cluster is, for messages: the URLs (redacted) or the cloud deployment."""
        if self.cloud_id:
            return cloud_endpoint(self.cloud_id)
        return super().endpoint

    @classmethod
    def check_value(cls, name: str, value: Any, key: str) -> Any:
        value = super().check_value(name, value, key)
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

    @classmethod
    def check_combinations(cls, values: dict[str, Any], key: str) -> list[ConfigError]:
        errors = []
        if "hosts" in values and "cloud_id" in values:
            errors.append(ConfigError("set either hosts or cloud_id, not both", key=key))
        return errors + super().check_combinations(values, key)

    @classmethod
    def auth_methods(cls, values: dict[str, Any]) -> list[tuple[str, bool]]:
        return [
            ("api key", "api_key_env" in values or "api_key_file" in values),
            ("username/password", "username" in values),
            ("bearer token", "bearer_token_env" in values or "bearer_token_file" in values),
        ]


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


def perform(
    client: Any, method: str, path: str, *, params: dict[str, str] | None = None,
    body: Any = None, ndjson: bool = False, timeout: float,
) -> Any:  # fmt: skip
    """One request through the client (which adds its compatible-with=8 media types);
    the parsed body. ServerError or NoAnswer when it fails."""
    from elastic_transport import ConnectionTimeout, TlsError, TransportError
    from elasticsearch import ApiError

    headers = {"accept": "application/json"}
    if body is not None:
        headers["content-type"] = "application/x-ndjson" if ndjson else "application/json"
    try:
        return (
            client.options(request_timeout=timeout)
            .perform_request(method, path, params=params, headers=headers, body=body)
            .body
        )
    except ApiError as exc:
        raise ServerError(exc.status_code, _error_body(exc), exc) from exc
    except TransportError as exc:
        raise NoAnswer(
            _transport_message(exc), timeout=isinstance(exc, ConnectionTimeout),
            tls=isinstance(exc, TlsError), original=exc,
        ) from exc  # fmt: skip


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


class ElasticsearchSink(DataStreamSink):
    """An `AlertSink` indexing into Elasticsearch, with backoff, spool and dead letter."""

    name = "elasticsearch"
    product = "Elasticsearch"
    spool_prefix = "es-spool"
    without_template = (
        "the data stream would be created by Elasticsearch's built-in logs template with "
        "other mappings"
    )

    _request = staticmethod(perform)
    _verify_info = staticmethod(verify_info)

    def _open_client(self, settings: ElasticsearchSettings) -> tuple[Redactor, Any]:
        credentials = Credentials.load(settings)
        return credentials.redactor(), make_client(settings, credentials)

    def _problem(self, exc: BaseException) -> SinkError:
        return connection_problem(getattr(exc, "original", None) or exc, self.settings,
                                  self._redact)  # fmt: skip

    def _missing_privilege(self, reason: str) -> str | None:
        return missing_privilege(reason)

    def _connections(self) -> list[Any]:
        return self._client.transport.node_pool.all()
