"""The redactor's transform step on messages a broker-level writer could send: each becomes a dead letter
with a reason (never payload text), and the next message is processed; nothing raises."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from services.redactor.worker import OutboundMessage, RedactorMetrics, TransformStep
from shared.canonicalize.transform import TransformPolicy
from shared.messages import canonical_event, dead_letter
from shared.pipeline import Position
from tests.messages_support import canonical_key, canonical_keyring, raw_headers, raw_keyring

POLICY = TransformPolicy(plane_by_service={}, default_plane="claude_code", keep_other_events=True,
                         keep_unknown_attributes=True)
SECRET = "jane.roe@example.com"


@dataclass
class Message:
    value: Any
    headers: Any
    offset: int = 0
    topic: str = "raw"
    partition: int = 0
    key: Any = b"acme"


@dataclass
class Collect:
    items: list[tuple[Position, list[OutboundMessage]]] = field(default_factory=list)

    async def submit(self, item: tuple[Position, list[OutboundMessage]]) -> None:
        self.items.append(item)


class NoPii:
    def engine_for(self, tenant: str) -> None:
        return None  # withheld: what matters here is the envelope


def step(max_message_bytes: int = 1 << 20) -> tuple[TransformStep, Collect]:
    collect = Collect()
    transform = TransformStep(NoPii(), POLICY, "canonical", "dlq", collect, RedactorMetrics(CollectorRegistry()),  # type: ignore[arg-type]
                              raw_keyring=raw_keyring(), canonical_key=canonical_key(),
                              max_message_bytes=max_message_bytes)
    return transform, collect


def body(fixtures_dir: Path) -> bytes:
    return (fixtures_dir / "logs-tool-session.pb").read_bytes()


def _replace(headers: list[tuple[str, bytes]], name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(k, value if k == name else v) for k, v in headers]


HOSTILE = {
    # A header named like a LogRecord attribute: logging it as ``extra`` raised KeyError and stalled the partition.
    "header named msg": lambda good, payload: [*good, ("msg", b"x")],
    "header named args": lambda good, payload: [*good, ("args", b"x")],
    # int(...) / 1e9 of a huge received_at raised OverflowError and stalled the partition.
    "huge received_at": lambda good, payload: _replace(good, "received_at", b"9" * 400),
    "unsigned, receiver's other headers": lambda good, payload: [(k, v) for k, v in good if not k.startswith("auth")],
    "other tenant, same MAC": lambda good, payload: _replace(good, "tenant", b"globex"),
    "no headers at all": lambda good, payload: None,
    "undecodable header bytes": lambda good, payload: _replace(good, "org", b"\xff\xfe"),
}


@pytest.mark.parametrize("make", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_a_hostile_raw_message_is_dead_lettered_and_the_next_one_processed(
    fixtures_dir: Path, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    payload = body(fixtures_dir)
    good = raw_headers(payload, tenant="acme")
    transform, collect = step()
    with caplog.at_level(logging.INFO, "redactor"):
        await transform.submit(Message(payload, make(good, payload), offset=7))
        await transform.submit(Message(payload, good, offset=8))
    (position, dead), (next_position, events) = collect.items
    assert position.next_offset == 8 and next_position.next_offset == 9  # the offset moves on
    assert [m.topic for m in dead] == ["dlq"] and dead[0].value == payload
    context = dead_letter.decode(dead[0].headers)
    assert (context.stage, context.source_offset) == ("redactor", 7) and context.error
    assert SECRET not in context.error and SECRET not in caplog.text
    assert events and {m.topic for m in events} == {"canonical"}
    for message in events:  # authenticated for the signer, under the tenant of the authenticated batch
        assert canonical_event.decode_event(message.value, message.headers, canonical_keyring()).tenant_id == "acme"


async def test_a_signed_batch_that_is_not_otlp_is_dead_lettered_without_quoting_it() -> None:
    payload = b'{"resourceLogs": "' + SECRET.encode() + b'"}'
    transform, collect = step()
    await transform.submit(Message(payload, raw_headers(payload, tenant="acme", content_type="application/json")))
    (_, (dead,)), = collect.items
    reason = dead_letter.decode(dead.headers).error
    assert "JSON body" in reason and SECRET not in reason


async def test_a_batch_whose_event_would_exceed_the_message_limit_is_dead_lettered_not_resent(
    fixtures_dir: Path,
) -> None:
    # The broker refuses such a record on every attempt: resending would hold the partition up for good.
    payload = body(fixtures_dir)
    transform, small = step(max_message_bytes=600)
    await transform.submit(Message(payload, raw_headers(payload, tenant="acme"), offset=3))
    (position, (dead,)), = small.items
    assert position.next_offset == 4 and dead.topic == "dlq" and dead.value == payload
    assert "message limit" in dead_letter.decode(dead.headers).error
