from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class ReceiverSettings(CommonSettings):
    receiver_host: str = Field(default="0.0.0.0", description="Address the OTLP/HTTP receiver binds to.")  # noqa: S104
    receiver_port: int = Field(default=4318, ge=1, le=65535, description="OTLP/HTTP port (4318 is the default).")
    license_public_keys_file: str = Field(
        default="var/keys/license-issuer.pub",
        description="File of base64 Ed25519 public keys (one a line) whose licences are accepted.",
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest request body after decompression (413 above)."
    )
    max_records_per_request: int = Field(
        default=20_000, ge=1, description="Records beyond this in one request are refused via partial_success."
    )
    max_in_flight_bytes: int = Field(
        default=128 * 1024 * 1024, ge=1024, description="Bytes being read or enqueued at once (503 above)."
    )
    tenant_records_per_second: float = Field(
        default=20_000.0, gt=0, description="Per-tenant token-bucket refill rate, in log records per second."
    )
    tenant_burst_records: int = Field(
        default=100_000, ge=1, description="Per-tenant token-bucket size, in log records."
    )
    enqueue_timeout_seconds: float = Field(
        default=5.0, gt=0, description="How long to wait for the broker's acknowledgement before 503."
    )
    retry_after_seconds: int = Field(default=5, ge=1, description="Retry-After sent with 503 answers.")
    revocation_refresh_seconds: float = Field(
        default=30.0, gt=0, description="How often the licence revocation list is re-read from PostgreSQL."
    )
