"""The mapping policy, read from the environment: the redactor's settings extend it, and a replay reads the
same variables so it computes the redactor's event ids exactly."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.settings import CommonSettings, raw_auth_key_file_field


class MappingSettings(CommonSettings):
    # The raw batches' key: the redactor refuses a batch it cannot authenticate, and so does a replay.
    raw_auth_key_file: str = raw_auth_key_file_field()
    plane_by_service: dict[str, str] = Field(
        default={"claude-code": "claude_code", "claude-code-desktop": "claude_code", "cowork": "cowork"},
        description="JSON map from the resource's service.name to the audit plane.",
    )
    default_plane: str = Field(default="claude_code", description="Plane for a service.name not in the map.")
    other_event_policy: Literal["keep", "drop"] = Field(
        default="keep",
        description="Events that are not in the audited set (housekeeping, new CLI events): keep or drop.",
    )
    unknown_attribute_policy: Literal["keep", "drop"] = Field(
        default="keep", description="Attributes the mapping does not know: keep (string values scanned) or drop."
    )

