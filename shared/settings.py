"""Settings shared by every service: loaded once at start-up, frozen, failing fast with a clear message."""

from __future__ import annotations

import sys
from typing import Any, TypeVar

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
