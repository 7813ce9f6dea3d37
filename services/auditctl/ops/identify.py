"""The event ids a raw message yields, computed by the redactor's own transform.

Ids must match the redactor's exactly, and which records become events depends on its policies
(``OTHER_EVENT_POLICY`` drops some), so this runs the redactor's transform itself, with the redactor's
mapping settings read from the same environment, detection off (ids never depend on redaction; nothing is kept).
Run the replay with the redactor's environment (the Helm chart and compose file share one config).
"""

from __future__ import annotations

from collections.abc import Mapping

from services.auditctl.ops.replay import Unprocessable
from shared.canonicalize.settings import MappingSettings
from shared.canonicalize.transform import (
    BatchRejected,
    TextRedactor,
    TransformPolicy,
    TransformStats,
    transform_batch,
)


class _NoDetection:
    """Ids never depend on redaction, so no engine runs: content is withheld in these throwaway events."""

    def engine_for(self, tenant: str) -> TextRedactor | None:
        return None


class RedactorEventIds:
    def __init__(self, settings: MappingSettings) -> None:
        self._policy = TransformPolicy(
            plane_by_service=settings.plane_by_service,
            default_plane=settings.default_plane,
            keep_other_events=settings.other_event_policy == "keep",
            keep_unknown_attributes=settings.unknown_attribute_policy == "keep",
        )

    def __call__(self, value: bytes, headers: Mapping[str, str]) -> list[str]:
        try:
            return [event.event_id for event in transform_batch(value, headers, _NoDetection(), self._policy,
                                                                  TransformStats())]
        except BatchRejected as exc:
            raise Unprocessable(str(exc)) from None
