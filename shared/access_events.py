"""Access events: the audit log's own trail of who read it. One canonical event per answer of the reporter
that disclosed content or proofs, on the ``access`` plane, chained and signed like every other row.

They travel as canonical-topic messages (``canonical_message``: keyed by tenant, the canonical event's
JSON, its event id in a header), so the signer needs nothing special for them. The reader and what was read
are in ``attributes`` (the ``access.*`` keys below); ``user_email`` / ``user_id`` name the reader, so the
feed's ``user`` filter finds someone's reads, and ``plane=access`` (or ``event_type=access``) all of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.canonical import CanonicalEvent

ACCESS_PLANE = "access"
ACCESS_EVENT_TYPE = "access"
SERVICE_NAME = "audit-reporter"
# An answer discloses at most a page of rows (REPORTER_MAX_PAGE_SIZE); ids beyond this are only counted.
MAX_RECORD_IDS = 1_000


@dataclass(frozen=True)
class AccessRead:
    tenant_id: str
    org_id: str
    subject: str              # token:<id>, oidc:<sub>, licence:<id>
    credential: str
    role: str
    user_email: str | None
    method: str
    endpoint: str             # the path as requested
    route: str                # its route template
    query: Mapping[str, str]  # the filters as given
    disclosed: str            # content | proof
    record_ids: Sequence[int]
    rows: int | None
    session_id: str | None
    client_address: str | None
    status: int


def access_event(read: AccessRead, now: datetime) -> CanonicalEvent:
    attributes: dict[str, Any] = {
        "access.subject": read.subject,
        "access.credential": read.credential,
        "access.role": read.role,
        "access.method": read.method,
        "access.endpoint": read.endpoint,
        "access.route": read.route,
        "access.query": dict(read.query),
        "access.disclosed": read.disclosed,
        "access.record_ids": list(read.record_ids[:MAX_RECORD_IDS]),
        "access.rows": read.rows if read.rows is not None else len(read.record_ids),
        "access.client_address": read.client_address,
        "access.status": read.status,
    }
    if read.session_id is not None:
        attributes["access.session_id"] = read.session_id
    return CanonicalEvent(
        event_id=f"access-{uuid.uuid4()}",
        tenant_id=read.tenant_id,
        org_id=read.org_id,
        license_id=None,
        plane=ACCESS_PLANE,
        event_type=ACCESS_EVENT_TYPE,
        event_time=now,
        received_at=now,
        user_email=read.user_email,
        user_id=read.subject,
        service_name=SERVICE_NAME,
        attributes=attributes,
    )
