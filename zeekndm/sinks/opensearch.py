"""The OpenSearch output: bulk `create` into the data stream logs-zeekndm.alert-<namespace>.

For the sites that keep their logs in OpenSearch (CISA's Malcolm, Wazuh's indexer, Amazon
OpenSearch Service), whose servers the Elasticsearch client refuses. The delivery is
`zeekndm.sinks.datastream`'s, shared with the Elasticsearch output: the same data stream,
deterministic ids, `create`, 409 = delivered, the duplicate lookup across rollovers,
retries with backoff, 413 splits, spool, dead letters and request deadlines. What is
OpenSearch's own is here:

- the official `opensearch-py` client, with a urllib3 connection that bounds every
  request by an overall deadline (`zeekndm.sinks.os_node`);
- authentication: basic (`username` + `password_env`/`password_file`), or AWS SigV4 for
  Amazon OpenSearch Service (`aws_sigv4: true`; opensearch-py's `Urllib3AWSV4SignerAuth`
  signs each request with credentials from the usual AWS sources: environment, shared
  files, `aws_profile`, container or instance role; `pip install 'zeekndm[aws]'`);
- the product check: `GET /` must say `distribution: opensearch`, version 2.x; an
  Elasticsearch server (or an Amazon domain still running Elasticsearch 7.10) is refused
  in one line pointing at `output.elasticsearch`;
- the security plugin's way of naming a missing permission.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from zeekndm.errors import ConfigError, SinkError
from zeekndm.redact import Redactor
from zeekndm.sinks.datastream import (
    Credentials,
    DataStreamSink,
    NoAnswer,
    ServerError,
    StoreSettings,
    describe_error,
    version_tuple,
)

log = logging.getLogger(__name__)

# opensearch-py logs every request at INFO (logger "opensearch") and every failure at
# WARNING; our summary and outage lines say it once. Quieten it unless the user chose.
# botocore logs each canonical request at DEBUG, session token included: never that.
for _name, _level in (("opensearch", logging.ERROR), ("botocore", logging.WARNING),
                      ("boto3", logging.WARNING)):  # fmt: skip
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(_level)

SUPPORTED_MAJORS = (2,)
AWS_SERVICE = "es"  # Amazon OpenSearch Service domains (not Serverless collections, "aoss")
_NO_PERMISSIONS = re.compile(r"no permissions for \[([^\]]+)\]")
_WHERE_SECRETS_GO = (
    "credentials in a URL are not accepted (they end up in logs and process listings): "
    "set username with password_env or password_file, or aws_sigv4: true, under "
    "output.opensearch"
)
_AWS_SOURCES = (
    "aws_sigv4: true with credentials from the usual AWS sources (environment, "
    "~/.aws/credentials, aws_profile, an instance or container role)"
)


@dataclass(frozen=True)
class OpenSearchSettings(StoreSettings):
    """`output.opensearch` from the config. Holds where secrets are, never secrets."""

    CONFIG_KEY: ClassVar[str] = "output.opensearch"
    PRODUCT: ClassVar[str] = "OpenSearch"
    SECRET_KEYS: ClassVar[dict[str, str]] = {
        "password": "password_env or password_file",
        "aws_access_key_id": _AWS_SOURCES,
        "aws_secret_access_key": _AWS_SOURCES,
        "aws_session_token": _AWS_SOURCES,
    }
    WHERE_SECRETS_GO: ClassVar[str] = _WHERE_SECRETS_GO
    STRINGS: ClassVar[frozenset[str]] = frozenset({"aws_region", "aws_profile"})
    BOOLS: ClassVar[frozenset[str]] = frozenset({"aws_sigv4"})

    aws_sigv4: bool = False  # Amazon OpenSearch Service: sign requests with SigV4
    aws_region: str | None = None  # default: the AWS configuration's (AWS_REGION, profile)
    aws_profile: str | None = None  # a profile of ~/.aws/config; default: the usual chain

    @classmethod
    def check_combinations(cls, values: dict[str, Any], key: str) -> list[ConfigError]:
        errors = [
            ConfigError("is only used with aws_sigv4: true", key=f"{key}.{name}")
            for name in ("aws_region", "aws_profile")
            if name in values and not values.get("aws_sigv4")
        ]
        return errors + super().check_combinations(values, key)

    @classmethod
    def auth_methods(cls, values: dict[str, Any]) -> list[tuple[str, bool]]:
        return [
            ("username/password", "username" in values),
            ("AWS SigV4", bool(values.get("aws_sigv4"))),
        ]


@dataclass(frozen=True)
class AWSAuth:
    """SigV4 signing for Amazon OpenSearch Service, with credentials from botocore's chain."""

    signer: Any
    region: str
    secrets: tuple[str, ...]  # what to scrub out of messages


def aws_auth(settings: OpenSearchSettings) -> AWSAuth:
    """Credentials and region from the usual AWS sources; SinkError when there are none."""
    key = f"{settings.CONFIG_KEY}.aws_sigv4"
    try:
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth
    except ImportError:
        raise SinkError(
            "AWS SigV4 signing needs boto3: pip install 'zeekndm[aws]'", key=key
        ) from None
    try:
        session = boto3.Session(profile_name=settings.aws_profile)
        credentials = session.get_credentials()
    except Exception as exc:  # noqa: BLE001 - botocore's ProfileNotFound and friends
        raise SinkError(f"cannot load AWS credentials: {exc}", key=key) from None
    if credentials is None:
        raise SinkError(
            "no AWS credentials found (looked at AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "the shared credentials and config files, and the instance or container role)",
            key=key,
        )
    # botocore reads AWS_DEFAULT_REGION and the profile; the other SDKs also AWS_REGION
    region = settings.aws_region or session.region_name or os.environ.get("AWS_REGION")
    if not region:
        raise SinkError(
            "no AWS region: set output.opensearch.aws_region, AWS_REGION or AWS_DEFAULT_REGION",
            key=key,
        )
    frozen = credentials.get_frozen_credentials()
    secrets = tuple(s for s in (frozen.secret_key, frozen.token) if s)
    return AWSAuth(Urllib3AWSV4SignerAuth(credentials, region, AWS_SERVICE), region, secrets)


def client_kwargs(
    settings: OpenSearchSettings, credentials: Credentials | None = None,
    aws: AWSAuth | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Keyword arguments for `opensearchpy.OpenSearch` (secrets resolved here, late)."""
    from zeekndm.sinks.os_node import DeadlineConnection

    creds = credentials or Credentials.load(settings)
    kw: dict[str, Any] = {
        "hosts": list(settings.hosts),
        "connection_class": DeadlineConnection,
        "timeout": settings.request_timeout,
        "max_retries": 0,  # retries are ours: backoff, spool, dead letter
        "retry_on_timeout": False,
        "verify_certs": settings.verify_certs,
        "ssl_show_warn": False,  # verify_certs: false was already warned about, once
    }
    if aws is not None:
        kw["http_auth"] = aws.signer
    elif creds.username:
        kw["http_auth"] = (creds.username, creds.password or "")
    if settings.ca_file:
        kw["ca_certs"] = settings.ca_file
    if settings.ssl_fingerprint:
        kw["ssl_assert_fingerprint"] = settings.ssl_fingerprint
    return kw


def make_client(
    settings: OpenSearchSettings, credentials: Credentials | None = None
) -> tuple[Any, Redactor]:
    """(the opensearch-py client, a redactor for every secret it was given)."""
    from opensearchpy import OpenSearch

    creds = credentials or Credentials.load(settings)  # SinkError for a missing/bad secret
    aws = aws_auth(settings) if settings.aws_sigv4 else None
    secrets = (creds.password, *(aws.secrets if aws else ()))
    redact = Redactor.for_basic(creds.username, creds.password, *secrets)
    try:
        return OpenSearch(**client_kwargs(settings, creds, aws)), redact
    except (ValueError, TypeError, Exception) as exc:  # ImproperlyConfigured too
        raise SinkError(f"invalid OpenSearch client settings: {redact(exc)}") from None


def perform(
    client: Any, method: str, path: str, *, params: dict[str, str] | None = None,
    body: Any = None, ndjson: bool = False, timeout: float,
) -> Any:  # fmt: skip
    """One request through opensearch-py's transport; ServerError or NoAnswer on failure."""
    from opensearchpy import ConnectionError as OpenSearchConnectionError
    from opensearchpy import ConnectionTimeout, SSLError, TransportError

    headers = {"accept": "application/json"}
    if ndjson:
        headers["content-type"] = "application/x-ndjson"
        body = body.decode("utf-8") if isinstance(body, bytes) else body
    try:
        return client.transport.perform_request(
            method, path, params=params, body=body, timeout=timeout, headers=headers
        )
    except OpenSearchConnectionError as exc:
        raise NoAnswer(
            str(exc.error) or type(exc).__name__, timeout=isinstance(exc, ConnectionTimeout),
            tls=isinstance(exc, SSLError), original=exc,
        ) from exc  # fmt: skip
    except TransportError as exc:
        status = exc.status_code if isinstance(exc.status_code, int) else 500
        raise ServerError(status, error_body(exc), exc) from exc


def error_body(exc: Any) -> Any:
    """The `error` object of an OpenSearch error answer (or what there is instead: Amazon's
    gateway answers `{"message": ...}`)."""
    info = getattr(exc, "info", None)
    if isinstance(info, dict):
        if "error" in info:
            return info["error"]
        if "message" in info:
            return str(info["message"])
    return getattr(exc, "error", None) or str(exc)


def missing_permission(reason: str) -> str | None:
    """'indices:data/write/bulk[s] is not permitted ...' from the security plugin's 403."""
    m = _NO_PERMISSIONS.search(reason)
    if not m:
        return None
    return f"{m.group(1)} is not permitted by the user's roles"


def connection_problem(
    exc: BaseException, settings: OpenSearchSettings, redact: Redactor | None = None
) -> SinkError:
    """A failed check or setup request as one clear, redacted line."""
    redact = redact or Redactor()
    where = settings.endpoint
    if isinstance(exc, ServerError):
        reason = redact(describe_error(exc.error))
        if exc.status == 401:
            return SinkError(
                f"OpenSearch {where} refused the credentials (401): check username and "
                "password_env/password_file"
            )
        if exc.status == 403:
            needs = missing_permission(reason)
            return SinkError(
                f"OpenSearch {where}: the request was refused (403): "
                + (f"{needs} (see README, OpenSearch)" if needs else reason)
            )
        return SinkError(f"OpenSearch {where} answered {exc.status}: {reason}")
    if isinstance(exc, NoAnswer):
        if exc.timeout:
            return SinkError(f"OpenSearch at {where} did not answer in time: {redact(exc)}")
        return SinkError(f"cannot reach OpenSearch at {where}: {redact(exc)}")
    return SinkError(f"OpenSearch {where}: {redact(describe_error(exc))}")


def verify_info(info: dict[str, Any], settings: OpenSearchSettings) -> str:
    """The one-line verdict from `GET /`; refuses servers zeekndm does not support."""
    where = settings.endpoint
    version = info.get("version") or {}
    number = str(version.get("number", "?"))
    cluster = info.get("cluster_name", "?")
    if version.get("distribution") != "opensearch":
        product = "Elasticsearch" if "build_flavor" in version or "tagline" in info else "?"
        raise SinkError(
            f"{where} is not OpenSearch ({product} {number}?): zeekndm's OpenSearch output "
            "supports OpenSearch 2.x; use output.elasticsearch (--elasticsearch) for "
            "Elasticsearch"
        )
    if version_tuple(number)[0] not in SUPPORTED_MAJORS:
        raise SinkError(
            f"OpenSearch {number} at {where} is not supported: zeekndm needs OpenSearch "
            + " or ".join(f"{m}.x" for m in SUPPORTED_MAJORS)
        )
    return f"opensearch {where} OK (version {number}, cluster {cluster})"


class OpenSearchSink(DataStreamSink):
    """An `AlertSink` indexing into OpenSearch, with backoff, spool and dead letter."""

    name = "opensearch"
    product = "OpenSearch"
    spool_prefix = "os-spool"
    without_template = (
        "OpenSearch would create a plain index of that name with dynamic mappings instead of "
        "the data stream"
    )

    _request = staticmethod(perform)
    _verify_info = staticmethod(verify_info)

    def _open_client(self, settings: OpenSearchSettings) -> tuple[Redactor, Any]:
        client, redact = make_client(settings)
        return redact, client

    def _problem(self, exc: BaseException) -> SinkError:
        return connection_problem(exc, self.settings, self._redact)

    def _missing_privilege(self, reason: str) -> str | None:
        return missing_permission(reason)

    def _connections(self) -> list[Any]:
        return list(self._client.transport.connection_pool.connections)
