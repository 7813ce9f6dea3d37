"""Reporter configuration: read once from the environment, frozen, and refused at start-up when inconsistent."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from shared.settings import CommonSettings


class ReporterSettings(CommonSettings):
    reporter_host: str = Field(default="0.0.0.0", description="Address the reporting API and portal bind to.")  # noqa: S104
    reporter_port: int = Field(default=8080, ge=1, le=65535, description="Port of the reporting API and portal.")
    reporter_event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop", description="Event loop of the reporter process."
    )
    license_public_keys_file: str = Field(
        default="var/keys/license-issuer.pub",
        description="File of base64 Ed25519 public keys (one a line) whose licences are accepted.",
    )
    revocation_refresh_seconds: float = Field(
        default=30.0, gt=0, description="How often the licence revocation list is re-read from PostgreSQL."
    )
    reporter_db_pool_size: int = Field(
        default=12, ge=4, le=100,
        description="PostgreSQL connections of the reporter: requests (a usage report runs its queries on up to four "
        "at once) and the background fold and chain check.",
    )
    reporter_statement_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Any reporting query running longer is cancelled (503), never left to pile up.",
    )
    reporter_page_size: int = Field(default=50, ge=1, description="Rows per page when a request does not say.")
    reporter_max_page_size: int = Field(default=500, ge=1, description="Most rows one page may ask for.")
    reporter_max_usage_days: int = Field(
        default=400, ge=1, description="Longest window, in days, one usage request may cover."
    )
    reporter_rollup_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often new audit rows are folded into the session and usage rollups."
    )
    reporter_rollup_batch_rows: int = Field(
        default=20_000, ge=1, description="Most audit rows folded into the rollups in one transaction."
    )
    reporter_inline_fold_rows: int = Field(
        default=5_000,
        ge=0,
        description="Before answering a usage or session-list request, fold up to this many pending rows of the "
        "caller's tenant, so answers are current; 0 leaves it to the background fold.",
    )
    reporter_verify_interval_seconds: float = Field(
        default=5.0, gt=0, description="How often the background chain check advances."
    )
    reporter_verify_batch_rows: int = Field(
        default=5_000, ge=1, description="Most chain rows checked per tenant and pass of the background chain check."
    )
    reporter_rescan_batch_rows: int = Field(
        default=1_000,
        ge=0,
        description="Rows re-checked per tenant and pass by the rolling full rescan, which catches rows altered "
        "after they were first checked; 0 turns the rescan off.",
    )
    reporter_shutdown_grace_seconds: float = Field(
        default=10.0, gt=0, description="After SIGTERM, how long in-flight requests may take to finish."
    )

    @model_validator(mode="after")
    def _consistent(self) -> ReporterSettings:
        if self.reporter_page_size > self.reporter_max_page_size:
            raise ValueError("REPORTER_PAGE_SIZE must not exceed REPORTER_MAX_PAGE_SIZE")
        return self
