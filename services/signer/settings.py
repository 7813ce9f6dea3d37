from __future__ import annotations

from typing import Literal

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
    canonical_auth_keyring_file: str = Field(
        default="var/keys/canonical.keyring",
        description="Keys of every producer whose canonical events the signer accepts, one a line: base64, a"
        " label, and what the key may sign (planes=... event_types=..., a list or ! and the names excluded);"
        " an event outside its key's scope is dead-lettered. auditctl init-keys writes it.",
    )
    signer_metrics_port: int = Field(
        default=9466,
        ge=0,
        le=65535,
        description="Port of the signer's /metrics, /healthz and /readyz (0 turns them off).",
    )
    checkpoint_every_rows: int = Field(
        default=1_000, ge=1, description="A signed checkpoint is written when a chain grew by this many rows..."
    )
    checkpoint_every_seconds: float = Field(
        default=60.0, gt=0, description="...or when this long has passed since its last checkpoint and it grew."
    )
    signer_event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="Event loop of the signer process; uvloop takes less of its CPU per row than asyncio's own.",
    )
    signer_max_batch: int = Field(default=2_000, ge=1, description="Most events appended in one transaction.")
    signer_signing_helper: bool = Field(
        default=True,
        description="Sign row hashes on a helper process beside the signer, so signing uses a second core;"
        " off signs on the signer's own thread.",
    )
    signing_mode: Literal["row", "batch"] = Field(
        default="row",
        description="row: each row carries its Ed25519 signature. batch (a prototype): rows are not signed one by"
        " one; each committed batch writes a signed checkpoint and tree head for every chain it grew, which covers"
        " its rows through inclusion proofs (docs/auditing.md, 'Signing per batch').",
    )
