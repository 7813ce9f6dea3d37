"""Settings shared by every service: loaded once at start-up, frozen, failing fast with a clear message."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka import KafkaConfigError, KafkaConnection, KafkaSecurity, SaslMechanism, SecurityProtocol


class CommonSettings(BaseSettings):
    """Every field can be set from the environment; the name is the field name in upper case."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_prefix="")

    database_url: str = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="PostgreSQL DSN holding audit_logs, licences, keys and the signer's offsets.",
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092", description="Comma-separated Kafka bootstrap servers."
    )
    topic_raw_logs: str = Field(default="otel.logs.raw", description="Raw OTLP log batches from the receiver.")
    topic_raw_metrics: str = Field(default="otel.metrics.raw", description="Raw OTLP metric batches from the receiver.")
    topic_canonical: str = Field(
        default="audit.events.canonical", description="Redacted canonical events, keyed by chain (tenant)."
    )
    topic_dead_letter: str = Field(
        default="audit.deadletter", description="Messages that failed permanently, with context headers."
    )
    kafka_max_message_bytes: int = Field(
        default=1_000_000,
        ge=16_384,
        description="Largest Kafka message produced; keep it at the production broker's message.max.bytes.",
    )
    kafka_session_timeout_ms: int = Field(
        default=6_000,
        ge=1_000,
        description="Consumer group session timeout; a dead consumer's partitions move after this long. "
        "Heartbeats go every sixth of it. Apache Kafka refuses less than its group.min.session.timeout.ms "
        "(6 s by default).",
    )
    kafka_rebalance_timeout_ms: int = Field(
        default=3_000,
        ge=1_000,
        description="How long the group coordinator waits for members to rejoin a rebalance. Members rejoin "
        "within a heartbeat plus a short flush; a restarted instance joins, and a dead member that has not "
        "rejoined by then is dropped without waiting out its whole session.",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=500,
        description="Longest a consumer's fetch waits at the broker for new messages. A broker that holds a "
        "waiting fetch for all of it delays each consumer stage by up to this much (the client's 500 ms default "
        "was most of accept -> signed row at 1,000 events/s); Apache Kafka answers as soon as a message arrives, "
        "so there a short wait costs only idle fetch requests.",
    )
    kafka_group_instance_id: str | None = Field(
        default=None,
        min_length=1,
        description="Static group membership (KIP-345, Kafka 2.3+): a stable name unique to this instance, "
        "such as the pod name; {hostname} in it is replaced by the host's name (a container's, which its "
        "restarts keep). A restarted instance takes its partitions back without waiting for its old "
        "session to expire; a stopped one keeps them until the session timeout. Unset: dynamic membership.",
    )
    kafka_security_protocol: SecurityProtocol = Field(
        default="PLAINTEXT",
        description="Kafka security.protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (production: SASL_SSL).",
    )
    kafka_sasl_mechanism: SaslMechanism | None = Field(
        default=None, description="Kafka sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER."
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="This component's SASL username (PLAIN and SCRAM), or use the _FILE form."
    )
    kafka_sasl_username_file: Path | None = Field(
        default=None, description="File holding this component's SASL username (PLAIN and SCRAM)."
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None, description="File holding the SASL password (PLAIN and SCRAM); owner-only permissions."
    )
    kafka_sasl_oauthbearer_token_file: Path | None = Field(
        default=None, description="File holding the OAUTHBEARER token; re-read on every authentication."
    )
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle the broker's certificate must chain to (default: system CAs)."
    )
    kafka_ssl_cert_file: Path | None = Field(default=None, description="PEM client certificate for mutual TLS.")
    kafka_ssl_key_file: Path | None = Field(
        default=None, description="PEM private key of the client certificate; owner-only permissions."
    )
    kafka_ssl_key_password_file: Path | None = Field(
        default=None, description="File holding the password of an encrypted KAFKA_SSL_KEY_FILE."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names the host connected to."
    )
    log_level: str = Field(default="INFO", description="Python log level for the service's JSON logs.")
    # Trust anchors outside the database (shared/witness.py): the signer publishes to it, auditctl verify and
    # the reporter read from it.
    checkpoint_witness_dir: str = Field(
        default="var/witness",
        description="Directory of the local checkpoint witness (checkpoints/<tenant>.jsonl, fsync'd) and of the "
        "pinned keys (trusted-keys.jsonl); empty turns the directory witness off. Unused when a bucket is set.",
    )
    checkpoint_witness_s3_bucket: str = Field(
        default="",
        description="S3-compatible bucket with Object Lock used as the witness instead of the directory "
        "(credentials from the usual AWS variables).",
    )
    checkpoint_witness_s3_prefix: str = Field(default="", description="Key prefix inside the witness bucket.")
    checkpoint_witness_s3_endpoint_url: str = Field(
        default="", description="Endpoint of an S3-compatible service other than AWS; empty for AWS."
    )
    checkpoint_witness_s3_region: str = Field(default="us-east-1", description="Region of the witness bucket.")
    checkpoint_witness_retention_days: int = Field(
        default=2557, ge=1, description="Object Lock (COMPLIANCE) retention of each witness object, in days."
    )

    @model_validator(mode="after")
    def _kafka_security_is_consistent(self) -> Self:
        # Fails fast, at load, naming every contradiction, a missing file or a secret file others can read.
        try:
            self.kafka_security().client_options()
        except KafkaConfigError as exc:
            raise ValueError(str(exc)) from None
        return self

    def kafka_security(self) -> KafkaSecurity:
        try:
            return KafkaSecurity(
                protocol=self.kafka_security_protocol,
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_username=self.kafka_sasl_username,
                sasl_username_file=self.kafka_sasl_username_file,
                sasl_password_file=self.kafka_sasl_password_file,
                sasl_oauthbearer_token_file=self.kafka_sasl_oauthbearer_token_file,
                ssl_ca_file=self.kafka_ssl_ca_file,
                ssl_cert_file=self.kafka_ssl_cert_file,
                ssl_key_file=self.kafka_ssl_key_file,
                ssl_key_password_file=self.kafka_ssl_key_password_file,
                ssl_check_hostname=self.kafka_ssl_check_hostname,
            )
        except KafkaConfigError as exc:
            raise ValueError(str(exc)) from None

    def kafka_consumer_options(self) -> dict[str, Any]:
        """Group membership options for shared.kafka.make_consumer: session, rebalance timeout, static id."""
        options: dict[str, Any] = {
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "rebalance_timeout_ms": self.kafka_rebalance_timeout_ms,
            "fetch_max_wait_ms": self.kafka_fetch_max_wait_ms,
        }
        if self.kafka_group_instance_id:
            # Compose gives each replica of a service the same environment: the container's host name (its id,
            # kept across its restarts) tells them apart, as the pod name does under Kubernetes.
            options["group_instance_id"] = self.kafka_group_instance_id.replace("{hostname}", socket.gethostname())
        return options

    def kafka_connection(self) -> KafkaConnection:
        """What every Kafka client of the process is built from (shared.kafka.make_producer and friends)."""
        return KafkaConnection(self.kafka_bootstrap_servers, self.kafka_security())


def raw_auth_key_file_field() -> Any:
    """The raw-batch key file: the receiver authenticates with its first key; redactors and usage accept all."""
    return Field(
        default="var/keys/raw-batch.key",
        description="Key file (base64 keys, one a line) authenticating raw batches: the receiver signs with the"
        " first key; redactors and the usage consumer accept every key in it. Shared by these services only.",
    )


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


def load_settings(settings_type: type[SettingsT]) -> SettingsT:
    """Build the settings or stop the process with one readable line per bad variable."""
    try:
        return settings_type()
    except ValidationError as exc:
        lines = [f"invalid configuration for {settings_type.__name__}:"]
        for error in exc.errors():
            name = ".".join(str(part) for part in error["loc"]).upper()
            lines.append(f"  {name}: {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
