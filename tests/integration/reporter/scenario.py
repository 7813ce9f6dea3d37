"""A small, known audit history for two tenants, appended through the signer's own append (real chains).

Tenant A (org acme): two sessions, a signed-in user (e-mail) and an API-key user (user.id only), accepted
and rejected tool decisions, an API error, two models. Tenant B (org globex): one session whose content
must never show up for tenant A.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from services.signer.appender import CheckpointPolicy, OffsetEvent, append_batch
from shared.canonical import CanonicalEvent
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer

TENANT_A, ORG_A = "tenant-a", "acme"
TENANT_B, ORG_B = "tenant-b", "globex"
SESSION_1 = "5f0c8d1e-1111-4c1a-9a11-aaaaaaaaaaa1"
SESSION_2 = "5f0c8d1e-2222-4c1a-9a11-aaaaaaaaaaa2"
SESSION_B = "7e1d9c2f-3333-4d2b-8b22-bbbbbbbbbbb3"
ALICE = "alice@acme.example"
BOB_DEVICE = "9a7b3c5d1e2f40516273849506a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f"
CAROL = "carol@globex.example"
OPUS, SONNET = "claude-opus-5-5", "claude-sonnet-5"
SECRET_B = "globex merger plan"


@dataclass
class Scenario:
    start: datetime
    signer: Ed25519Signer
    events: list[CanonicalEvent] = field(default_factory=list)

    def of_tenant(self, tenant: str) -> list[CanonicalEvent]:
        return [e for e in self.events if e.tenant_id == tenant]


def _builder(start: datetime) -> Any:
    counter = itertools.count()

    def event(tenant: str, org: str, session: str, event_type: str, *, user_id: str | None = None,
              user_email: str | None = None, seconds: int, **columns: Any) -> CanonicalEvent:
        n = next(counter)
        content = columns.pop("content", {})
        return CanonicalEvent(
            event_id=f"{tenant}-{session[:8]}-{n}", tenant_id=tenant, org_id=org, license_id="lic",
            plane=columns.pop("plane", "claude_code"), event_type=event_type,
            event_time=start + timedelta(seconds=seconds), received_at=start + timedelta(seconds=seconds + 1),
            session_id=session, correlation_id=columns.pop("prompt_id", f"prompt-{session[:4]}"), event_sequence=n,
            user_id=user_id, user_email=user_email, service_name="claude-code", service_version="2.1.332",
            content=content, content_lengths={k: len(v) for k, v in content.items()},
            redacted_fields=columns.pop("redacted_fields", {}), content_captured=bool(content),
            attributes={"terminal.type": "xterm"}, **columns,
        )

    return event


def build(start: datetime, signer: Ed25519Signer) -> Scenario:
    e = _builder(start)
    a = {"user_id": "alice-device", "user_email": ALICE}
    bob = {"user_id": BOB_DEVICE}
    carol = {"user_id": "carol-device", "user_email": CAROL}
    api = {"input_tokens": 1200, "output_tokens": 87, "cache_read_tokens": 300, "cache_creation_tokens": 50,
           "tokens_used": 1637}
    events = [
        e(TENANT_A, ORG_A, SESSION_1, "user_prompt", seconds=0, **a,
          content={"prompt": "please list files; mail me at <EMAIL>"}, redacted_fields={"prompt": {"EMAIL": 1}},
          prompt_id="p1"),
        e(TENANT_A, ORG_A, SESSION_1, "api_request", seconds=1, **a, model=OPUS, cost=Decimal("0.006850"),
          duration_ms=32, prompt_id="p1", **api),
        e(TENANT_A, ORG_A, SESSION_1, "tool_decision", seconds=2, **a, tool_name="Bash", decision="accept",
          decision_source="config", prompt_id="p1"),
        e(TENANT_A, ORG_A, SESSION_1, "tool_result", seconds=3, **a, tool_name="Bash", success=True,
          duration_ms=29, prompt_id="p1"),
        e(TENANT_A, ORG_A, SESSION_1, "tool_decision", seconds=4, **a, tool_name="Write", decision="reject",
          decision_source="user_reject", prompt_id="p1"),
        e(TENANT_A, ORG_A, SESSION_1, "user_prompt", seconds=60, **a, content={"prompt": "now try again"},
          prompt_id="p2"),
        e(TENANT_A, ORG_A, SESSION_1, "api_error", seconds=61, **a, model=OPUS, status_code=400, attempt=1,
          content={"error": "prompt rejected for <EMAIL>"}, redacted_fields={"error": {"EMAIL": 1}}, prompt_id="p2"),
        e(TENANT_A, ORG_A, SESSION_1, "api_request", seconds=62, **a, model=SONNET, cost=Decimal("0.001000"),
          prompt_id="p2", input_tokens=100, output_tokens=10, tokens_used=110),
        e(TENANT_A, ORG_A, SESSION_2, "user_prompt", seconds=120, **bob, content={"prompt": "refactor the parser"},
          prompt_id="p3"),
        e(TENANT_A, ORG_A, SESSION_2, "api_request", seconds=121, **bob, model=OPUS, cost=Decimal("0.010000"),
          prompt_id="p3", **api),
        e(TENANT_A, ORG_A, SESSION_2, "tool_decision", seconds=122, **bob, tool_name="Edit", decision="accept",
          decision_source="user_temporary", prompt_id="p3"),
        e(TENANT_A, ORG_A, SESSION_2, "tool_result", seconds=123, **bob, tool_name="Edit", success=False,
          prompt_id="p3"),
        e(TENANT_B, ORG_B, SESSION_B, "user_prompt", seconds=10, **carol, content={"prompt": SECRET_B},
          prompt_id="pb"),
        e(TENANT_B, ORG_B, SESSION_B, "api_request", seconds=11, **carol, model=OPUS, cost=Decimal("9.000000"),
          prompt_id="pb", **api),
        e(TENANT_B, ORG_B, SESSION_B, "tool_decision", seconds=12, **carol, tool_name="Bash", decision="reject",
          decision_source="user_reject", prompt_id="pb"),
    ]
    return Scenario(start, signer, events)


async def append(conn: asyncpg.Connection, signer: Ed25519Signer, events: list[CanonicalEvent],
                 partition: int = 0, first_offset: int = 0) -> None:
    await record_signing_key(conn, signer.public_key)
    # Small batches, with a signed checkpoint whenever a chain grew by 5 rows, as the signer would write them.
    for start in range(0, len(events), 4):
        await append_batch(conn, signer, group="scenario", topic="canonical", partition=partition,
                           batch=[OffsetEvent(first_offset + i, ev) for i, ev in enumerate(events) if
                                  start <= i < start + 4],
                           checkpoints=CheckpointPolicy(every_rows=5, every=timedelta(days=1)))


async def seed(conn: asyncpg.Connection, start: datetime | None = None) -> Scenario:
    scenario = build(start or (datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)),
                     Ed25519Signer.generate())
    await append(conn, scenario.signer, scenario.events)
    return scenario
