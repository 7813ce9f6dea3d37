"""Settings of the operator tooling; like every service's, read once from the environment and frozen."""

from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings


class OpsSettings(CommonSettings):
    """Apart from CliSettings: replay and dead-letter commands read only these and the common settings."""

    topic_replication_factor: int = Field(default=1, ge=1, description="Replication factor for new topics.")
    topic_dead_letter_requeued: str = Field(
        default="audit.deadletter.requeued",
        description="Compacted topic of requeue markers (one per dead letter), so a dead letter is requeued once.",
    )
    ops_producer_max_in_flight: int = Field(
        default=1_000, ge=1, description="Messages a replay or requeue keeps unacknowledged before waiting."
    )
    dlq_exporter_host: str = Field(default="0.0.0.0", description="Address the dead-letter exporter binds to.")  # noqa: S104
    dlq_exporter_port: int = Field(
        default=9468, ge=1, le=65535, description="Port of the dead-letter exporter's /metrics, /healthz, /readyz."
    )
    dlq_exporter_interval_seconds: float = Field(
        default=15.0, gt=0, description="How often the dead-letter exporter re-reads the dead-letter topic."
    )
