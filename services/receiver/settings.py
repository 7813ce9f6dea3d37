"""Receiver configuration: read once from the environment, frozen, and refused at start-up when inconsistent."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.settings import CommonSettings, raw_auth_key_file_field


class ReceiverSettings(CommonSettings):
    receiver_host: str = Field(default="0.0.0.0", description="Address the OTLP/HTTP receiver binds to.")  # noqa: S104
    receiver_port: int = Field(default=4318, ge=1, le=65535, description="OTLP/HTTP port (4318 is the default).")
    receiver_metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the receiver's /metrics (with /healthz and /readyz), apart from the OTLP port because "
        "its metrics name tenants; 0 turns it off.",
    )
    receiver_event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="Event loop of the receiver process; uvloop trims a few per cent of CPU per request.",
    )
    license_public_keys_file: str = Field(
        default="var/keys/license-issuer.pub",
        description="File of base64 Ed25519 public keys (one a line) whose licences are accepted.",
    )
    raw_auth_key_file: str = raw_auth_key_file_field()
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Largest request body after decompression; larger bodies get 413 and are never fully inflated.",
    )
    max_records_per_request: int = Field(
        default=20_000,
        ge=1,
        description="Log records (or metric data points) beyond this in one request are refused via partial_success.",
    )
    max_in_flight_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="Decompressed request bytes held at once (being read, decoded or awaiting the broker), plus "
        "what decoding JSON will allocate beyond an honest body's share; 503 above, so overload never turns "
        "into unbounded buffering (413 for a body that could never fit).",
    )
    max_concurrent_batches: int = Field(
        default=64,
        ge=1,
        description="Requests being decoded or awaiting the broker at once (503 above): under CPU overload, "
        "excess requests are refused at once instead of queueing for seconds.",
    )
    # Sized in docs/operations/sizing.md ("The tenant limit"): a 100,000-developer tenant catching up after an
    # outage, all on one replica, stays under it.
    tenant_records_per_second: float = Field(
        default=40_000.0,
        gt=0,
        description="Per-tenant token-bucket refill rate, in log records (or metric data points) per second, "
        "in each receiver replica.",
    )
    tenant_bytes_per_record: int = Field(
        default=1024,
        ge=1,
        description="Decompressed bytes charged as one record to the tenant's bucket before a body is decoded "
        "(settled to the records counted after).",
    )
    decode_off_loop_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="Bodies larger than this (decompressed) are decoded on the decode worker thread, one at a "
        "time, never on the event loop.",
    )
    tenant_burst_records: int = Field(
        default=200_000,
        ge=1,
        description="Per-tenant token-bucket size, in log records: five seconds (one exporter interval) at the "
        "default rate.",
    )
    enqueue_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long a request waits for the broker's acknowledgement before 503."
    )
    retry_after_seconds: int = Field(
        default=5, ge=1, description="Retry-After sent with 503 when the broker is unavailable."
    )
    overload_retry_after_seconds: int = Field(
        default=1,
        ge=1,
        description="Retry-After sent with 503 when the in-flight byte or concurrent-batch limit is reached.",
    )
    broker_probe_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="While the broker is known to be down, one request per interval tries it; "
        "the rest get 503 at once.",
    )
    revocation_refresh_seconds: float = Field(
        default=30.0, gt=0, description="How often the licence revocation list is re-read from PostgreSQL."
    )
    kafka_linger_ms: int = Field(
        default=2, ge=0, le=1000, description="Producer linger: how long a batch waits for more messages."
    )
    kafka_batch_bytes: int | None = Field(
        default=None,
        ge=16_384,
        description="Producer batch size per partition; defaults to KAFKA_MAX_MESSAGE_BYTES (a batch is what the "
        "broker's message.max.bytes limits).",
    )
    kafka_request_timeout_ms: int = Field(
        default=15_000, ge=1_000, description="Producer request timeout; unacknowledged batches expire after it."
    )
    shutdown_grace_seconds: float = Field(
        default=20.0, gt=0, description="After SIGTERM, how long in-flight requests may take to finish."
    )

    @property
    def producer_batch_bytes(self) -> int:
        return self.kafka_batch_bytes or self.kafka_max_message_bytes

    @model_validator(mode="after")
    def _consistent(self) -> ReceiverSettings:
        if self.max_in_flight_bytes < self.max_body_bytes:
            raise ValueError(
                f"MAX_IN_FLIGHT_BYTES ({self.max_in_flight_bytes}) must be at least MAX_BODY_BYTES "
                f"({self.max_body_bytes}), or a large enough request could never be accepted"
            )
        if self.producer_batch_bytes > self.kafka_max_message_bytes:
            raise ValueError("KAFKA_BATCH_BYTES must not exceed KAFKA_MAX_MESSAGE_BYTES: the broker limits batches")
        if self.shutdown_grace_seconds < self.enqueue_timeout_seconds:
            raise ValueError("SHUTDOWN_GRACE_SECONDS must be at least ENQUEUE_TIMEOUT_SECONDS so a drain can finish")
        if self.kafka_request_timeout_ms / 1000 < self.enqueue_timeout_seconds:
            raise ValueError("KAFKA_REQUEST_TIMEOUT_MS must be at least ENQUEUE_TIMEOUT_SECONDS")
        return self
