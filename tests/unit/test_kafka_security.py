"""Kafka TLS and SASL settings: contradictions stop the process at load, and what is set reaches aiokafka."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from deploy.local.tls import Authority
from shared.kafka import (
    FileTokenProvider,
    KafkaConfigError,
    KafkaConnection,
    KafkaSecurity,
    make_admin,
    make_consumer,
    make_producer,
)
from shared.settings import CommonSettings, load_settings


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    files = {"user": "redactor-1", "password": "s3cret-pass", "token": "eyJhbGciOi.token.sig"}
    out = {}
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text + "\n")
        path.chmod(0o600)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca = Authority.create(folder, "unit")
    cert, key = ca.issue(folder, "client", server=False)
    return {"ca": ca.ca_cert, "cert": cert, "key": key}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_ssl_with_a_password_reaches_aiokafka(
    mechanism: str, secrets: dict[str, Path], pki: dict[str, Path]
) -> None:
    security = KafkaSecurity(
        protocol="SASL_SSL", sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username_file=secrets["user"], sasl_password_file=secrets["password"],
        ssl_ca_file=pki["ca"], ssl_cert_file=pki["cert"], ssl_key_file=pki["key"],
    )
    producer = make_producer(KafkaConnection("broker:9093", security), 1_000_000)
    client = producer.client
    assert client._security_protocol == "SASL_SSL"
    assert client._sasl_mechanism == mechanism
    assert client._sasl_plain_username == "redactor-1"
    assert client._sasl_plain_password == "s3cret-pass"
    assert client._ssl_context is not None and client._ssl_context.check_hostname
    consumer = make_consumer(KafkaConnection("broker:9093", security), "group", "topic")
    assert isinstance(consumer, AIOKafkaConsumer)
    assert consumer._client._sasl_mechanism == mechanism
    admin = make_admin(KafkaConnection("broker:9093", security))
    assert admin._client._security_protocol == "SASL_SSL"
    await admin.close()


def test_oauthbearer_reads_its_token_from_the_file(secrets: dict[str, Path]) -> None:
    import asyncio  # noqa: PLC0415

    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
                             sasl_oauthbearer_token_file=secrets["token"])
    options = security.client_options()
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, FileTokenProvider)
    assert asyncio.run(provider.token()) == "eyJhbGciOi.token.sig"
    secrets["token"].write_text("rotated\n")
    assert asyncio.run(provider.token()) == "rotated"


def test_plaintext_is_the_default_and_passes_nothing_else() -> None:
    assert KafkaConnection("b:9092").options() == {"bootstrap_servers": "b:9092", "security_protocol": "PLAINTEXT"}


def test_ssl_without_files_uses_the_system_trust_store() -> None:
    options = KafkaSecurity(protocol="SSL").client_options()
    assert options["ssl_context"].verify_mode.name == "CERT_REQUIRED"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"protocol": "SASL_SSL"}, "needs KAFKA_SASL_MECHANISM"),
        ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512"}, "needs KAFKA_SASL_USERNAME_FILE"),
        ({"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, "needs KAFKA_SASL_OAUTHBEARER_TOKEN_FILE"),
        ({"protocol": "PLAINTEXT", "sasl_mechanism": "PLAIN"}, "does not use SASL"),
        ({"protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "ssl_ca_file": Path("/x.pem"),
          "sasl_username_file": Path("/u"), "sasl_password_file": Path("/p")}, "does not use TLS"),
        ({"protocol": "SSL", "ssl_cert_file": Path("/nonexistent.pem")}, "needs both KAFKA_SSL_CERT_FILE"),
        ({"protocol": "SSL", "ssl_ca_file": Path("/nonexistent/ca.pem")}, "KAFKA_SSL_CA_FILE: /nonexistent"),
        ({"protocol": "TLS"}, "must be one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"),
    ],
)
def test_contradictions_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(KafkaConfigError, match=message):
        KafkaSecurity(**fields)  # type: ignore[arg-type]


def test_a_password_file_others_can_read_is_refused(secrets: dict[str, Path]) -> None:
    secrets["password"].chmod(0o644)
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                             sasl_username_file=secrets["user"], sasl_password_file=secrets["password"])
    with pytest.raises(KafkaConfigError, match="group or others"):
        security.client_options()


def test_settings_fail_fast_with_one_line_per_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(SystemExit):
        load_settings(CommonSettings)
    assert "needs KAFKA_SASL_USERNAME_FILE (or KAFKA_SASL_USERNAME) and KAFKA_SASL_PASSWORD_FILE" in capsys.readouterr().err
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(SystemExit):
        load_settings(CommonSettings)
    assert "KAFKA_SASL_MECHANISM" in capsys.readouterr().err


def test_settings_build_the_connection_every_client_uses(
    monkeypatch: pytest.MonkeyPatch, secrets: dict[str, Path], pki: dict[str, Path]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k1:9093,k2:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_SASL_USERNAME_FILE", str(secrets["user"]))
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_FILE", str(secrets["password"]))
    monkeypatch.setenv("KAFKA_SSL_CA_FILE", str(pki["ca"]))
    connection = load_settings(CommonSettings).kafka_connection()
    options = connection.options()
    assert options["bootstrap_servers"] == "k1:9093,k2:9093"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "redactor-1"


def test_a_plain_username_with_a_password_file(secrets: dict[str, Path]) -> None:
    """Usernames are not secret (Kubernetes sets them inline); passwords still come from files only."""
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="audit-signer",
                             sasl_password_file=secrets["password"])
    assert security.client_options()["sasl_plain_username"] == "audit-signer"
    with pytest.raises(KafkaConfigError, match="not both"):
        KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN", sasl_username="a",
                      sasl_username_file=secrets["user"], sasl_password_file=secrets["password"])
