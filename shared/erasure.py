"""Erasure events: the signed record that content of earlier rows was erased (GDPR Art. 17, leaked secrets).

``auditctl erase`` produces one canonical event per batch of rows to the canonical topic, as the redactor
produces any event (``canonical_message``); the signer chains and signs it like every other row. Only once
it is chained is the content deleted, so content never goes missing without its signed erasure event.

The event names who erased (``user_id``), when (``event_time``), why and which rows (``attributes``,
keys below). ``verify`` accepts a version 2 row without content only if a later erasure event of the same
chain lists its sequence number in ``erasure.rows``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.canonical import CanonicalEvent

ERASURE_PLANE = "erasure"
ERASURE_EVENT_TYPE = "erasure"
SERVICE_NAME = "auditctl"
# Rows one erasure event lists; a larger erasure is recorded by several events.
MAX_ROWS_PER_EVENT = 1_000
ROWS_KEY = "erasure.rows"
EVENT_IDS_KEY = "erasure.event_ids"
REASON_KEY = "erasure.reason"
BY_KEY = "erasure.by"
SELECTOR_KEY = "erasure.selector"
REQUEST_KEY = "erasure.request_id"


@dataclass(frozen=True)
class ErasedRow:
    chain_seq: int
    event_id: str


@dataclass(frozen=True)
class ErasureRequest:
    tenant_id: str
    org_id: str
    by: str
    reason: str
    selector: Mapping[str, str]
    request_id: str


def erasure_events(request: ErasureRequest, rows: Sequence[ErasedRow], now: datetime) -> list[CanonicalEvent]:
    """The events that record the erasure of ``rows`` (one per ``MAX_ROWS_PER_EVENT``), in order."""
    ordered = sorted(rows, key=lambda r: r.chain_seq)
    events = []
    for start in range(0, len(ordered), MAX_ROWS_PER_EVENT):
        part = ordered[start:start + MAX_ROWS_PER_EVENT]
        attributes: dict[str, Any] = {
            ROWS_KEY: [r.chain_seq for r in part],
            EVENT_IDS_KEY: [r.event_id for r in part],
            REASON_KEY: request.reason,
            BY_KEY: request.by,
            SELECTOR_KEY: dict(request.selector),
            REQUEST_KEY: request.request_id,
        }
        events.append(
            CanonicalEvent(
                event_id=f"erasure-{uuid.uuid4()}",
                tenant_id=request.tenant_id,
                org_id=request.org_id,
                license_id=None,
                plane=ERASURE_PLANE,
                event_type=ERASURE_EVENT_TYPE,
                event_time=now,
                received_at=now,
                user_id=request.by,
                service_name=SERVICE_NAME,
                attributes=attributes,
            )
        )
    return events


def erased_sequences(attributes: Mapping[str, Any]) -> list[int]:
    """The sequence numbers an erasure event lists; anything malformed lists nothing."""
    listed = attributes.get(ROWS_KEY)
    if not isinstance(listed, list):
        return []
    return [seq for seq in listed if type(seq) is int]
