"""The event ids a raw message yields, computed by the redactor's own transform.

Ids must match the redactor's exactly, and which records become events depends on its policies
(``OTHER_EVENT_POLICY`` drops some), so this runs the redactor's transform itself, with the redactor's
mapping settings read from the same environment, detection off (ids never depend on redaction; nothing is kept).
Run the replay with the redactor's environment (the Helm chart and compose file share one config).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.auditctl.ops.replay import Unprocessable
from shared.canonicalize.settings import MappingSettings
from shared.canonicalize.transform import (
    BatchRejected,
    TextRedactor,
    TransformPolicy,
    TransformStats,
    transform_batch,
)
from shared.messages import InvalidMessage, raw_batch
from shared.messages.auth import Keyring, load_keyring


class _NoDetection:
    """Ids never depend on redaction, so no engine runs: content is withheld in these throwaway events."""

    def engine_for(self, tenant: str) -> TextRedactor | None:
        return None


class RedactorEventIds:
    def __init__(self, settings: MappingSettings, raw_keyring: Keyring | None = None) -> None:
        # The redactor's own key file: a batch it would refuse as unauthenticated is unprocessable here too.
        self._keyring = raw_keyring or load_keyring(settings.raw_auth_key_file, "RAW_AUTH_KEY_FILE")
        self._policy = TransformPolicy(
            plane_by_service=settings.plane_by_service,
            default_plane=settings.default_plane,
            keep_other_events=settings.other_event_policy == "keep",
            keep_unknown_attributes=settings.unknown_attribute_policy == "keep",
        )

    def __call__(self, value: bytes, headers: Sequence[tuple[str, bytes]]) -> list[str]:
        try:
            batch = raw_batch.decode(value, headers, self._keyring, "logs")
            return [event.event_id for event in transform_batch(batch, _NoDetection(), self._policy,
                                                                  TransformStats())]
        except (InvalidMessage, BatchRejected) as exc:
            raise Unprocessable(str(exc)) from None
