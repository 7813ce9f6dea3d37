"""The canonical event: what the redactor produces and the signer chains, one per audited telemetry event.

It travels on the canonical topic as JSON. Every field maps one-to-one onto an ``audit_logs`` column,
except the chain columns, which only the signer assigns.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

JsonValue = Any

# Kept here, next to the model, because the redactor writes it and the reporter reads it.
CONTENT_FIELDS = ("prompt", "response", "tool_parameters", "tool_input", "error")
WITHHELD_MARKER = "[content withheld: detection unavailable]"
COST_SCALE = Decimal("0.000001")
# What the integer and numeric columns hold (migration 0001): a value outside cannot be stored at all.
BIGINT_RANGE = range(-(2**63), 2**63)
INTEGER_RANGE = range(-(2**31), 2**31)
INTEGER_COLUMNS = frozenset({"status_code", "attempt"})  # the other integer fields are bigint
COST_LIMIT = Decimal(10) ** 14  # numeric(20, 6): 14 digits before the point


@dataclass(frozen=True)
class CanonicalEvent:
    event_id: str
    tenant_id: str
    org_id: str
    license_id: str | None
    plane: str
    event_type: str
    event_time: datetime
    received_at: datetime
    session_id: str | None = None
    correlation_id: str | None = None
    event_sequence: int | None = None
    user_email: str | None = None
    user_id: str | None = None
    user_account_uuid: str | None = None
    claimed_org_id: str | None = None
    claimed_org_mismatch: bool = False
    service_name: str | None = None
    service_version: str | None = None
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    tokens_used: int | None = None
    cost: Decimal | None = None
    duration_ms: int | None = None
    decision: str | None = None
    decision_source: str | None = None
    tool_name: str | None = None
    success: bool | None = None
    status_code: int | None = None
    attempt: int | None = None
    content: dict[str, str] = field(default_factory=dict)
    content_lengths: dict[str, int] = field(default_factory=dict)
    redacted_fields: dict[str, dict[str, int]] = field(default_factory=dict)
    content_captured: bool = False
    attributes: dict[str, JsonValue] = field(default_factory=dict)
    batch_id: str | None = None

    @classmethod
    def from_fields(cls, values: dict[str, Any]) -> CanonicalEvent:
        """The event whose fields have these values: ``values`` has every field, in the fields' order (the
        instance ``__init__`` would make, without its 38 frozen-attribute writes; the redactor makes one per
        event)."""
        event = object.__new__(cls)
        event.__dict__.update(values)
        return event

    def to_json(self) -> bytes:
        # The instance's own attributes are exactly its fields, set in their order: orjson writes them as they
        # are when it writes each as this method always has. A UTC datetime (``datetime.UTC``) it writes as
        # ``isoformat()`` does; any other offset (one in seconds, say) and the cost are written here, on a copy.
        event_time, received_at, cost = self.event_time, self.received_at, self.cost
        orjson_writes_as_is = (cost is None and event_time.tzinfo is UTC and received_at.tzinfo is UTC
                               and type(event_time) is datetime and type(received_at) is datetime)
        data = self.__dict__ if orjson_writes_as_is else self._with_text_times_and_cost()
        try:
            return orjson.dumps(data)
        except TypeError:  # integers beyond 64 bits in attributes
            return json.dumps(self._with_text_times_and_cost(), separators=(",", ":"), ensure_ascii=False).encode()

    def _with_text_times_and_cost(self) -> dict[str, Any]:
        """A copy of the fields with both times as ``isoformat()`` text and the cost as a decimal string."""
        data = dict(self.__dict__)
        data["event_time"] = self.event_time.isoformat()
        data["received_at"] = self.received_at.isoformat()
        data["cost"] = None if self.cost is None else str(self.cost)
        return data

    @classmethod
    def from_json(cls, raw: bytes) -> CanonicalEvent:
        # The standard parser, not orjson: it must keep integers of any size exact, as they were signed.
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("canonical event is not a JSON object")
        unknown = data.keys() - _FIELD_NAMES
        if unknown:
            raise ValueError(f"canonical event has unknown fields: {sorted(unknown)}")
        data["event_time"] = datetime.fromisoformat(data["event_time"])
        data["received_at"] = datetime.fromisoformat(data["received_at"])
        if data.get("cost") is not None:
            data["cost"] = Decimal(data["cost"])
        return cls(**data)


EVENT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CanonicalEvent))
_FIELD_NAMES = frozenset(EVENT_COLUMNS)
