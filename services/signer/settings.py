from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class SignerSettings(CommonSettings):
    signer_group_id: str = Field(default="audit-signer", description="Consumer group of the signer.")
    signing_key_file: str | None = Field(
        default="var/keys/signing.key", description="File with the base64 Ed25519 seed that signs chain rows."
    )
    signing_key_env: str = Field(
        default="AUDIT_SIGNING_KEY",
        description="Environment variable read for the seed when no key file is set.",
    )
    signer_metrics_port: int = Field(default=9466, ge=0, le=65535,
                                     description="Port of the signer's /metrics endpoint (0 turns it off).")
    signer_max_batch: int = Field(default=2_000, ge=1, description="Most events appended in one transaction.")
