"""Settings shared by every service: loaded once at start-up, frozen, failing fast with a clear message."""

from __future__ import annotations

import sys
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        default=10_000,
        ge=1_000,
        description="Consumer group session timeout; a dead consumer's partitions move after this long.",
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
