"""A Kafka input's definition: config, `--input kafka://`, secrets, the client config."""

from __future__ import annotations

import pytest

from zeekndm.config import load_config
from zeekndm.errors import ConfigError, ConfigErrors, ZeekNDMError
from zeekndm.live.inputs import input_from_arg
from zeekndm.live.kafka.spec import ClientSecrets, KafkaSpec, client_config, kafka_spec_from_url


def config_with(tmp_path, text: str):
    path = tmp_path / "zeekndm.yaml"
    path.write_text(text)
    return load_config(path)


def errors_of(tmp_path, text: str) -> str:
    with pytest.raises((ConfigError, ConfigErrors)) as info:
        config_with(tmp_path, text)
    return str(info.value)


def test_a_full_kafka_input_for_a_managed_cluster_is_read(tmp_path):
    config = config_with(
        tmp_path,
        """inputs:
  - type: kafka
    brokers: [b-1.msk.example:9096, b-2.msk.example:9096]
    topics: [zeek-conn, suricata-eve]
    group: soc-detect
    format: auto
    partitioner: fnv1a
    security_protocol: sasl_ssl
    sasl_mechanism: scram-sha-512
    username: zeekndm
    password_file: /etc/zeekndm/kafka.pw
    ca_file: /etc/ssl/certs/ca.pem
    state_topic: soc-detect-state
    commit_interval: 2
    options: {fetch.wait.max.ms: 200, socket.keepalive.enable: true}
""",
    )
    (spec,) = config.inputs
    assert isinstance(spec, KafkaSpec) and spec.type == "kafka"
    assert spec.brokers == ("b-1.msk.example:9096", "b-2.msk.example:9096")
    assert spec.topics == ("zeek-conn", "suricata-eve")
    assert spec.sasl_mechanism == "SCRAM-SHA-512" and spec.partitioner == "fnv1a"
    assert spec.options == (("fetch.wait.max.ms", "200"), ("socket.keepalive.enable", "true"))
    assert "group soc-detect" in spec.describe() and "SASL SCRAM-SHA-512" in spec.describe()


def test_a_password_inline_is_refused_with_where_secrets_go(tmp_path):
    text = errors_of(
        tmp_path,
        "inputs:\n  - type: kafka\n    brokers: [k:9092]\n    topics: [z]\n"
        "    security_protocol: sasl_ssl\n    sasl_mechanism: PLAIN\n    username: u\n"
        "    password: hunter2\n",
    )
    assert "inputs[0].password" in text and "password_env or password_file" in text
    assert "hunter2" not in text


@pytest.mark.parametrize(
    "lines, key, words",
    [
        ("    topics: [z]\n", "inputs[0].brokers", "required"),
        ("    brokers: [k]\n    topics: [z]\n", "inputs[0].brokers", "is not HOST:PORT"),
        ("    brokers: ['u:p@k:9092']\n    topics: [z]\n", "inputs[0].brokers", "credentials"),
        ("    brokers: [k:9092]\n    topics: ['a b']\n", "inputs[0].topics", "topic name"),
        ("    brokers: [k:9092]\n    topics: [z]\n    format: zeek_tsv\n", "format", "one of"),
        (
            "    brokers: [k:9092]\n    topics: [z]\n    sasl_mechanism: PLAIN\n",
            "security_protocol",
            "needs security_protocol sasl_ssl",
        ),
        (
            "    brokers: [k:9092]\n    topics: [z]\n    security_protocol: sasl_ssl\n"
            "    sasl_mechanism: SCRAM-SHA-256\n    username: u\n",
            "username",
            "needs username and password_env or password_file",
        ),
        (
            "    brokers: [k:9092]\n    topics: [z]\n    ca_file: /ca.pem\n",
            "ca_file",
            "needs security_protocol ssl or sasl_ssl",
        ),
        (
            "    brokers: [k:9092]\n    topics: [z]\n    options: {group.id: other}\n",
            "options",
            "set by zeekndm itself",
        ),
        (
            "    brokers: [k:9092]\n    topics: [z]\n    options: {sasl.password: x}\n",
            "options",
            "would carry a secret",
        ),
        ("    brokers: [k:9092]\n    topics: [z]\n    partitioner: rnd\n", "partitioner", "one of"),
        (
            "    brokers: [k:9092]\n    topics: [z]\n    comit_interval: 1\n",
            "comit_interv",
            "unknown",
        ),
    ],
)
def test_mistakes_name_file_line_and_key(tmp_path, lines, key, words):
    text = errors_of(tmp_path, "inputs:\n  - type: kafka\n" + lines)
    assert "zeekndm.yaml:" in text and key in text and words in text, text


def test_url_form_takes_the_scalar_options():
    spec = input_from_arg(
        "kafka://k1:9092,k2:9092/zeek,eve?group=edge&format=suricata_eve&key_check=false"
        "&commit_interval=0.5&session_timeout=10"
    )
    assert spec.brokers == ("k1:9092", "k2:9092") and spec.topics == ("zeek", "eve")
    assert spec.group == "edge" and spec.format == "suricata_eve" and not spec.key_check
    assert spec.commit_interval == 0.5 and spec.session_timeout == 10.0
    assert spec.key == "--input"


@pytest.mark.parametrize(
    "url, words",
    [
        ("kafka://alice:s3cret@k:9092/zeek", "credentials in the URL"),
        ("kafka://k:9092/zeek?password=s3cret", "secret on the command line"),
        ("kafka://k:9092/zeek?colour=blue", "unknown option 'colour'"),
        ("kafka://k:9092/", "topics"),
        ("kafka://k:9092/zeek?format=csv", "format"),
    ],
)
def test_bad_urls_are_refused_without_repeating_secrets(url, words):
    with pytest.raises(ConfigError) as info:
        kafka_spec_from_url(url)
    assert words in str(info.value) and "s3cret" not in str(info.value)


def test_client_config_for_sasl_ssl_scram_reads_the_password_from_a_file(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("correct horse battery\n")
    spec = kafka_spec_from_url(
        f"kafka://k:9093/zeek?security_protocol=sasl_ssl&sasl_mechanism=SCRAM-SHA-256"
        f"&username=zeekndm&password_file={secret}&ca_file=/etc/ca.pem"
    )
    secrets = ClientSecrets.load(spec)
    conf = client_config(spec, secrets)
    assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.mechanism"] == "SCRAM-SHA-256"
    assert conf["sasl.username"] == "zeekndm" and conf["sasl.password"] == "correct horse battery"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["enable.ssl.certificate.verification"] is True
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert "correct horse battery" not in repr(secrets)
    redact = secrets.redactor(spec)
    assert redact("SASL auth failed for correct horse battery") == "SASL auth failed for [redacted]"


def test_a_secret_file_holding_two_lines_is_refused_naming_the_file_not_the_secret(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("first-secret\nsecond-secret\n")
    spec = kafka_spec_from_url(
        f"kafka://k:9093/zeek?security_protocol=sasl_ssl&sasl_mechanism=PLAIN&username=u"
        f"&password_file={secret}"
    )
    with pytest.raises(ZeekNDMError) as info:
        ClientSecrets.load(spec)
    text = str(info.value)
    assert str(secret) in text and "--input.password_file" in text and "one line" in text
    assert "first-secret" not in text


def test_a_missing_environment_variable_is_named(monkeypatch):
    monkeypatch.delenv("ZEEKNDM_KAFKA_PW", raising=False)
    spec = kafka_spec_from_url(
        "kafka://k:9093/zeek?security_protocol=sasl_ssl&sasl_mechanism=PLAIN&username=u"
        "&password_env=ZEEKNDM_KAFKA_PW"
    )
    with pytest.raises(ZeekNDMError, match="environment variable ZEEKNDM_KAFKA_PW is not set"):
        ClientSecrets.load(spec)


def test_oauthbearer_uses_the_oidc_client_credentials_flow(monkeypatch):
    monkeypatch.setenv("OIDC_SECRET", "oidc-client-secret")
    spec = kafka_spec_from_url(
        "kafka://k:9093/zeek?security_protocol=sasl_ssl&sasl_mechanism=OAUTHBEARER"
        "&oauth_token_endpoint=https://idp.example/token&oauth_client_id=zeekndm"
        "&oauth_client_secret_env=OIDC_SECRET&oauth_scope=kafka"
    )
    conf = client_config(spec, ClientSecrets.load(spec))
    assert conf["sasl.oauthbearer.method"] == "oidc"
    assert conf["sasl.oauthbearer.client.secret"] == "oidc-client-secret"
    assert conf["sasl.oauthbearer.scope"] == "kafka" and "sasl.password" not in conf


def test_verify_certs_false_is_an_explicit_logged_opt_out(tmp_path, caplog):
    config_with(
        tmp_path,
        "inputs:\n  - type: kafka\n    brokers: [k:9093]\n    topics: [z]\n"
        "    security_protocol: ssl\n    verify_certs: false\n",
    )
    assert "TLS verification disabled for Kafka (inputs[0].verify_certs: false)" in caplog.text


def test_instances_get_stable_distinct_transactional_ids():
    spec = kafka_spec_from_url("kafka://k:9092/zeek?group=g")
    a, b = spec.transactional_id("/var/lib/zeekndm"), spec.transactional_id("/var/lib/zeekndm2")
    assert a == spec.transactional_id("/var/lib/zeekndm") and a != b and a.startswith("zeekndm-g-")
    named = kafka_spec_from_url("kafka://k:9092/zeek?group=g&instance_id=sensor-7")
    assert named.transactional_id("/x") == "zeekndm-g-sensor-7"


def test_check_config_prints_the_kafka_input(tmp_path):
    from helpers import Run

    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text(
        f"state_dir: {tmp_path / 'state'}\n"
        "inputs:\n  - type: kafka\n    brokers: [k:9092]\n    topics: [zeek]\n"
    )
    run = Run(["check-config", "-c", cfg])
    assert run.status == 0, run.err
    assert "input: kafka://k:9092/zeek (kafka, group zeekndm, format auto, plaintext" in run.out


def test_kafka_and_file_inputs_cannot_share_a_run(tmp_path):
    from helpers import Run

    cfg = tmp_path / "zeekndm.yaml"
    cfg.write_text("inputs:\n  - type: kafka\n    brokers: [k:9092]\n    topics: [zeek]\n")
    run = Run(["run", "-c", cfg, "--input", tmp_path, "--state-dir", tmp_path / "s"])
    assert run.status == 1
    assert "cannot be combined with file or socket inputs" in run.err
