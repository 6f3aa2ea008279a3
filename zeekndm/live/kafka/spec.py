"""A Kafka input's definition: `inputs: [{type: kafka, ...}]` and `--input kafka://...`,
and the librdkafka configuration it stands for.

The definition holds where secrets are (`password_env`, `password_file`, ...), never a
secret: a password inline in the YAML or in the URL is refused, as for Elasticsearch.
`client_config()` resolves them at start through `zeekndm.redact.load_secret` (one
loader for every input and output), and `redactor()` scrubs them from any message built
from a client error.

What a managed Kafka needs is covered by named options: TLS (`security_protocol: ssl` or
`sasl_ssl`, `ca_file`, a client certificate for mutual TLS, `verify_certs`,
`check_hostname`), SASL PLAIN (Confluent Cloud API keys, Azure Event Hubs), SCRAM-SHA-256
and SCRAM-SHA-512 (Amazon MSK, Aiven, Redpanda), and OAUTHBEARER with an OIDC token
endpoint (client credentials). Anything else librdkafka knows can be passed under
`options:`, except the properties zeekndm itself relies on (group, commits, isolation,
transactions) and the secret-bearing ones.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from zeekndm.errors import ConfigError, ZeekNDMError
from zeekndm.live.kafka.keys import PARTITIONERS
from zeekndm.redact import Redactor, has_userinfo, load_secret
from zeekndm.yamlfile import FieldReader

log = logging.getLogger(__name__)

FORMATS = ("auto", "zeek_json", "suricata_eve", "zeek_tsv_lines")
PROTOCOLS = ("plaintext", "ssl", "sasl_plaintext", "sasl_ssl")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
STARTS = ("earliest", "latest")
DEFAULT_STATE_TOPIC = "zeekndm-state"
MAX_MESSAGE_BYTES = 1 << 20
"""A message larger than this is a bad record ("message too long"), not parsed."""

# Topic names: what Kafka accepts (kafka.common.internals.Topic.validate).
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_BROKER = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})$")
# Properties zeekndm sets itself: changing them would break the delivery guarantee.
_RESERVED = {
    "group.id", "enable.auto.commit", "enable.auto.offset.store", "isolation.level",
    "transactional.id", "enable.idempotence", "auto.offset.reset", "bootstrap.servers",
    "metadata.broker.list", "security.protocol", "sasl.mechanism", "sasl.mechanisms",
    "partition.assignment.strategy", "enable.partition.eof", "group.protocol",
}  # fmt: skip
# Properties that carry a secret: they go through *_env / *_file options instead.
_SECRET_OPTIONS = {
    "sasl.password", "sasl.username", "ssl.key.password", "ssl.keystore.password",
    "ssl.key.pem", "ssl_key", "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config",
    "sasl.jaas.config", "ssl.truststore.password",
}  # fmt: skip
_SECRET_KEYS = {
    "password": "password_env or password_file",
    "key_password": "key_password_env or key_password_file",
    "oauth_client_secret": "oauth_client_secret_env or oauth_client_secret_file",
}


@dataclass(frozen=True)
class KafkaSpec:
    """One Kafka input of live mode (see config/zeekndm.yaml for every option)."""

    brokers: tuple[str, ...]
    topics: tuple[str, ...]
    group: str = "zeekndm"
    format: str = "auto"
    fields: tuple[str, ...] | None = None  # zeek_tsv_lines: the columns (default conn.log's)
    partitioner: str = "murmur2"
    key_check: bool = True
    start: str = "earliest"
    state_topic: str = DEFAULT_STATE_TOPIC
    state_partitions: int | None = None  # when zeekndm creates the state topic
    create_state_topic: bool = True
    commit_interval: float = 1.0
    session_timeout: float = 45.0
    transaction_timeout: float = 60.0
    max_message_bytes: int = MAX_MESSAGE_BYTES
    client_id: str = "zeekndm"
    instance_id: str | None = None
    security_protocol: str = "plaintext"
    sasl_mechanism: str | None = None
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password_env: str | None = None
    key_password_file: str | None = None
    verify_certs: bool = True
    check_hostname: bool = True
    oauth_token_endpoint: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret_env: str | None = None
    oauth_client_secret_file: str | None = None
    oauth_scope: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    key: str = field(default="inputs[0]", compare=False)  # where it was defined, for errors

    # what the rest of live mode asks of an input
    type = "kafka"
    is_dir = False
    is_socket = False

    @property
    def path(self) -> str:
        return f"kafka://{','.join(self.brokers)}/{','.join(self.topics)}"

    def describe(self) -> str:
        sasl = f", SASL {self.sasl_mechanism}" if self.sasl_mechanism else ""
        return (
            f"{self.path} (kafka, group {self.group}, format {self.format}, "
            f"{self.security_protocol}{sasl}, state topic {self.state_topic})"
        )

    def instance(self, state_dir: str) -> str:
        """This instance's name: `instance_id`, else the host name and a digest of the state
        directory (stable across restarts, different for two instances)."""
        if self.instance_id:
            return self.instance_id
        digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:10]
        return f"{socket.gethostname()}-{digest}"

    def transactional_id(self, state_dir: str) -> str:
        """The producer's transactional.id: stable for one instance across restarts (a
        restarted instance fences its previous incarnation at once), different for two
        instances (two state directories, or two hosts)."""
        return f"zeekndm-{self.group}-{self.instance(state_dir)}"


# -- parsing ------------------------------------------------------------------------------
_STR_OPTIONS = (
    "group", "state_topic", "client_id", "instance_id", "username", "password_env",
    "password_file", "ca_file", "cert_file", "key_file", "key_password_env", "key_password_file",
    "oauth_token_endpoint", "oauth_client_id", "oauth_client_secret_env",
    "oauth_client_secret_file", "oauth_scope",
)  # fmt: skip
_BOOL_OPTIONS = ("key_check", "create_state_topic", "verify_certs", "check_hostname")


def _nonempty(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def _positive(v: float) -> str | None:
    return None if v > 0 and v != float("inf") else "must be a positive number"


def _choice(values: tuple[str, ...]):
    return lambda v: None if v in values else f"must be one of {', '.join(values)}"


def parse_kafka_input(
    item: Any, where: str, errors: list, file: str | None = None
) -> KafkaSpec | None:
    """One `inputs:` entry of `type: kafka`; every mistake goes to `errors` with its key."""
    r = FieldReader(item, where, errors, file=file)
    before = len(errors)
    r.take("type", str)
    for name, hint in _SECRET_KEYS.items():
        if r.has(name):
            r.raw(name)
            r.fail(f"secrets are not accepted inline; use {hint}", name=name)
    values: dict[str, Any] = {}
    brokers = r.raw("brokers")
    if brokers is None:
        r.fail("required key is missing (a list of HOST:PORT)", name=None)
        errors[-1].key = r.key("brokers")
    else:
        values["brokers"] = _brokers(brokers, r)
    topics = r.raw("topics", r.raw("topic"))
    if topics is None:
        r.fail("required key is missing (a list of topic names)", name=None)
        errors[-1].key = r.key("topics")
    else:
        values["topics"] = _topics(topics, r, "topics" if r.has("topics") else "topic")
    for name in _STR_OPTIONS:
        value = r.take(name, str, default=None, check=_nonempty)
        if value is not None:
            values[name] = value
    for name in _BOOL_OPTIONS:
        value = r.take(name, bool, default=None)
        if value is not None:
            values[name] = value
    for name, values_ in (
        ("format", FORMATS),
        ("partitioner", PARTITIONERS),
        ("start", STARTS),
        ("security_protocol", PROTOCOLS),
    ):
        value = r.take(name, str, default=None, check=_choice(values_))
        if value is not None:
            values[name] = value
    mechanism = r.take("sasl_mechanism", str, default=None)
    if mechanism is not None:
        if mechanism.upper() not in MECHANISMS:
            r.fail(f"must be one of {', '.join(MECHANISMS)}", name="sasl_mechanism")
        else:
            values["sasl_mechanism"] = mechanism.upper()
    for name in ("commit_interval", "session_timeout", "transaction_timeout"):
        value = r.take(name, (int, float), default=None, check=_positive)
        if value is not None:
            values[name] = float(value)
    for name in ("state_partitions", "max_message_bytes"):
        value = r.take(name, int, default=None, check=lambda v: None if v > 0 else "must be > 0")
        if value is not None:
            values[name] = value
    tsv_fields = r.take("fields", list, default=None)
    if tsv_fields is not None:
        if not tsv_fields or not all(isinstance(f, str) and f for f in tsv_fields):
            r.fail("must be a non-empty list of Zeek field names", name="fields")
        else:
            values["fields"] = tuple(tsv_fields)
    options = r.take("options", dict, default=None)
    if options is not None:
        values["options"] = _options(options, r)
    r.finish()
    _combinations(values, r)
    if len(errors) > before or "brokers" not in values or "topics" not in values:
        return None
    if values.get("state_topic") and not _TOPIC.match(values["state_topic"]):
        r.fail("is not a valid Kafka topic name", name="state_topic")
        return None
    if not values.get("verify_certs", True):
        log.warning("TLS verification disabled for Kafka (%s.verify_certs: false)", where)
    return KafkaSpec(**values, key=where)


def _brokers(value: Any, r: FieldReader) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [b for b in value.split(",")]
    if not isinstance(value, list) or not value:
        r.fail("must be a non-empty list of HOST:PORT", name="brokers")
        return ()
    out = []
    for i, broker in enumerate(value):
        text = broker.strip() if isinstance(broker, str) else None
        if text and "@" in text:
            r.fail(
                "credentials in a broker address are not accepted; use username with "
                "password_env or password_file",
                name="brokers",
            )
            return ()
        if not text or not _BROKER.match(text) or not 0 < int(text.rpartition(":")[2]) < 65536:
            shown = repr(broker)[:60]
            r.fail(f"brokers[{i}] {shown} is not HOST:PORT", name="brokers")
            return ()
        out.append(text)
    return tuple(out)


def _topics(value: Any, r: FieldReader, name: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [t for t in value.split(",")]
    if not isinstance(value, list) or not value:
        r.fail("must be a non-empty list of topic names", name=name)
        return ()
    out = []
    for topic in value:
        if not isinstance(topic, str) or not _TOPIC.match(topic):
            r.fail(
                f"{str(topic)[:60]!r} is not a Kafka topic name (letters, digits, '.', '_', "
                "'-'; at most 249)",
                name=name,
            )
            return ()
        if topic not in out:
            out.append(topic)
    return tuple(out)


def _options(options: dict, r: FieldReader) -> tuple[tuple[str, str], ...]:
    out = []
    for k, v in options.items():
        key = str(k)
        if key in _SECRET_OPTIONS:
            r.fail(
                f"options.{key} would carry a secret in the config; use password_env/_file, "
                "key_password_env/_file or oauth_client_secret_env/_file",
                name="options",
            )
            continue
        if key in _RESERVED:
            r.fail(f"options.{key} is set by zeekndm itself and cannot be changed", name="options")
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        if not isinstance(v, (str, int, float)) or isinstance(v, float) and v != v:
            r.fail(f"options.{key} must be a string, number or boolean", name="options")
            continue
        out.append((key, str(v)))
    return tuple(out)


def _combinations(values: dict[str, Any], r: FieldReader) -> None:
    protocol = values.get("security_protocol", "plaintext")
    mechanism = values.get("sasl_mechanism")
    for base in ("password", "key_password", "oauth_client_secret"):
        if f"{base}_env" in values and f"{base}_file" in values:
            r.fail(f"set only one of {base}_env and {base}_file", name=f"{base}_file")
    has_password = "password_env" in values or "password_file" in values
    if protocol.startswith("sasl_") and mechanism is None:
        r.fail(f"security_protocol {protocol} needs sasl_mechanism", name="sasl_mechanism")
    if mechanism is not None and not protocol.startswith("sasl_"):
        r.fail(
            "sasl_mechanism needs security_protocol sasl_ssl (or sasl_plaintext, only on a "
            "trusted network)",
            name="security_protocol",
        )
    if mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        if "username" not in values or not has_password:
            r.fail(
                f"SASL {mechanism} needs username and password_env or password_file",
                name="username",
            )
    elif (has_password or "username" in values) and mechanism != "OAUTHBEARER":
        r.fail("username and password are for sasl_mechanism PLAIN or SCRAM", name="username")
    if mechanism == "OAUTHBEARER":
        has_secret = "oauth_client_secret_env" in values or "oauth_client_secret_file" in values
        if (
            not values.get("oauth_token_endpoint")
            or not values.get("oauth_client_id")
            or not (has_secret)
        ):
            r.fail(
                "OAUTHBEARER needs oauth_token_endpoint, oauth_client_id and "
                "oauth_client_secret_env or oauth_client_secret_file",
                name="sasl_mechanism",
            )
    tls = protocol in ("ssl", "sasl_ssl")
    for name in ("ca_file", "cert_file", "key_file", "key_password_env", "key_password_file"):
        if name in values and not tls:
            r.fail(f"{name} needs security_protocol ssl or sasl_ssl", name=name)
    if ("cert_file" in values) != ("key_file" in values):
        r.fail("a client certificate needs both cert_file and key_file", name="cert_file")
    if "fields" in values and values.get("format") != "zeek_tsv_lines":
        r.fail("fields is for format zeek_tsv_lines", name="fields")


def kafka_spec_from_url(arg: str) -> KafkaSpec:
    """`--input kafka://BROKER[,BROKER]/TOPIC[,TOPIC]?group=NAME&format=...`: the query
    takes the scalar options of a `type: kafka` input; secrets are refused."""
    if has_userinfo(arg):
        raise ConfigError(
            f"--input {arg.split('@', 1)[-1]!r}: credentials in the URL are not accepted; use "
            "username= with password_env= or password_file= (or a config file)"
        )
    try:
        parts = urlsplit(arg)
    except ValueError as exc:
        raise ConfigError(f"--input {arg!r}: not a kafka:// URL ({exc})") from None
    item: dict[str, Any] = {"type": "kafka"}
    item["brokers"] = [b for b in parts.netloc.split(",") if b] or None
    path = unquote(parts.path).strip("/")
    item["topics"] = [t for t in path.split(",") if t] or None
    scalars = {f.name: f.type for f in fields(KafkaSpec)}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in _SECRET_KEYS:
            raise ConfigError(
                f"--input: {name}= would put a secret on the command line; use {_SECRET_KEYS[name]}"
            )
        if name in ("brokers", "topics", "key", "options") or name not in scalars:
            valid = sorted(set(scalars) - {"brokers", "topics", "key", "options"})
            raise ConfigError(f"--input: unknown option {name!r} (valid: {', '.join(valid)})")
        item[name] = _url_value(name, value)
    errors: list = []
    spec = parse_kafka_input(item, "--input", errors)
    if errors:
        message = "; ".join(str(e) for e in errors)
        raise ConfigError(f"--input {arg}: {message}")
    assert spec is not None
    return spec


def _url_value(name: str, value: str) -> Any:
    if name in _BOOL_OPTIONS:
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        return value
    if name in ("state_partitions", "max_message_bytes"):
        return int(value) if value.isdigit() else value
    if name in ("commit_interval", "session_timeout", "transaction_timeout"):
        try:
            return float(value)
        except ValueError:
            return value
    if name == "fields":
        return [f for f in value.split(",") if f]
    return value


# -- the client configuration ---------------------------------------------------------------
@dataclass(frozen=True)
class ClientSecrets:
    """The resolved secrets, kept apart from the spec so a repr never shows them."""

    password: str | None = None
    key_password: str | None = None
    oauth_client_secret: str | None = None

    def __repr__(self) -> str:
        return "ClientSecrets(...)"

    @classmethod
    def load(cls, spec: KafkaSpec) -> ClientSecrets:
        def secret(base: str, header_token: bool) -> str | None:
            return load_secret(
                getattr(spec, f"{base}_env"),
                getattr(spec, f"{base}_file"),
                f"{spec.key}.{base}",
                header_token=header_token,
            )

        return cls(
            password=secret("password", False),
            key_password=secret("key_password", False),
            oauth_client_secret=secret("oauth_client_secret", True),
        )

    def redactor(self, spec: KafkaSpec) -> Redactor:
        return Redactor.for_basic(
            spec.username, self.password, self.key_password, self.oauth_client_secret
        )


def client_config(spec: KafkaSpec, secrets: ClientSecrets) -> dict[str, Any]:
    """The librdkafka properties every client of this input shares (connection, TLS, SASL,
    `options:`); consumer-, producer- and admin-specific ones are added by their users."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(spec.brokers),
        "client.id": spec.client_id,
        "security.protocol": spec.security_protocol,
    }
    if spec.security_protocol in ("ssl", "sasl_ssl"):
        if spec.ca_file:
            conf["ssl.ca.location"] = spec.ca_file
        if spec.cert_file:
            conf["ssl.certificate.location"] = spec.cert_file
            conf["ssl.key.location"] = spec.key_file
        if secrets.key_password:
            conf["ssl.key.password"] = secrets.key_password
        conf["enable.ssl.certificate.verification"] = spec.verify_certs
        conf["ssl.endpoint.identification.algorithm"] = "https" if spec.check_hostname else "none"
    if spec.sasl_mechanism:
        conf["sasl.mechanism"] = spec.sasl_mechanism
        if spec.sasl_mechanism == "OAUTHBEARER":
            conf["sasl.oauthbearer.method"] = "oidc"
            conf["sasl.oauthbearer.token.endpoint.url"] = spec.oauth_token_endpoint
            conf["sasl.oauthbearer.client.id"] = spec.oauth_client_id
            conf["sasl.oauthbearer.client.secret"] = secrets.oauth_client_secret
            if spec.oauth_scope:
                conf["sasl.oauthbearer.scope"] = spec.oauth_scope
        else:
            conf["sasl.username"] = spec.username
            conf["sasl.password"] = secrets.password
    for key, value in spec.options:
        conf[key] = value
    return conf


class KafkaClientError(ZeekNDMError):
    """The broker or the client refused something at start (unreachable, authentication,
    authorisation, a topic that does not exist): one line naming it, never a secret."""
