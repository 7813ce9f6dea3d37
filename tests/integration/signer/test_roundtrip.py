"""What the signer hashes must be what the verifier reads back, whatever odd values a client sends."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest

from services.signer.appender import OffsetEvent, append_batch
from services.signer.rows import ChainRow, decode_row
from shared import verify
from shared.canonical import CanonicalEvent
from shared.chain import HASH_VERSION_ERASABLE, HASH_VERSION_PLAIN, canonical_bytes, canonical_bytes_v2
from shared.enrollment import record_signing_key
from shared.keys import Ed25519Signer
from shared.verify import load_key_book, verify_tenant

T0 = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)
CASES = {
    "plain": {},
    "float 1e16": {"attributes": {"x": 1e16}},
    "float 1.5e300": {"attributes": {"x": 1.5e300}},
    "float 0.1 and 1e-07": {"attributes": {"x": 0.1, "y": 1e-07}},
    "float 2^53+2": {"attributes": {"x": 9007199254740994.0}},
    "non-finite floats": {"attributes": {"x": float("nan"), "y": float("inf")}},
    "huge int": {"attributes": {"x": 2**70, "y": -(2**60)}},
    "non-ascii keys": {"attributes": {"ключ": "значение", "😀": "x", "\ue000": 1}},
    "NUL in text": {"user_email": "a\x00b", "content": {"prompt": "x\x00y"}},
    "cost -0": {"cost": Decimal("-0.000000")},
    "cost with seven places": {"cost": Decimal("0.0000025")},
    "negative cost half": {"cost": Decimal("-0.0000025")},
    "year 999": {"event_time": datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC)},
    "nested lists": {"attributes": {"x": [1, [2.5, "a", None, True], {"b": 1e20}]}},
    "nested plain JSON": {"attributes": {"b": {"z": 1, "a": [1, "x", None]}, "a": "é\n\"q\u2028"}},
    "microseconds and a cost": {"event_time": datetime(2026, 11, 28, 15, 0, 0, 123456, tzinfo=UTC),
                                "cost": Decimal("0.006850"), "input_tokens": 2**53 - 1},
    "int beyond 2^53 in a column": {"input_tokens": 2**53 + 1},
}


async def _append_one(db: asyncpg.Connection, signing_key: Ed25519Signer, extra: dict[str, object]) -> None:
    await record_signing_key(db, signing_key.public_key)
    fields: dict[str, object] = {"event_time": T0, **extra}
    event = CanonicalEvent(
        event_id="e1",
        tenant_id="t",
        org_id="o",
        license_id=None,
        plane="claude_code",
        event_type="api_request",
        received_at=T0,
        **fields,  # type: ignore[arg-type]
    )
    row = decode_row(event.to_json())  # as the signer reads it from the topic
    assert row.values == ChainRow.of(CanonicalEvent.from_json(event.to_json())).values
    await append_batch(db, signing_key, group="g", topic="c", partition=0, batch=[OffsetEvent(0, row)])


@pytest.mark.parametrize("extra", list(CASES.values()), ids=list(CASES))
async def test_signed_bytes_survive_the_database(
    db: asyncpg.Connection, signing_key: Ed25519Signer, extra: dict[str, object]
) -> None:
    await _append_one(db, signing_key, extra)
    report = await verify_tenant(db, "t", await load_key_book(db))
    assert report.ok, report.breaks


@pytest.mark.parametrize("extra", list(CASES.values()), ids=list(CASES))
async def test_the_verifiers_fast_path_writes_the_canonical_bytes_or_leaves_the_row_to_the_general_path(
    db: asyncpg.Connection, signing_key: Ed25519Signer, extra: dict[str, object]
) -> None:
    await _append_one(db, signing_key, extra)
    (record,) = await db.fetch(verify._SELECT_RANGE, "t", 1, 1)
    decoded = verify._decoded(record)
    as_version_2 = verify._fast_canonical(record, HASH_VERSION_ERASABLE)
    as_version_1 = verify._fast_canonical(record, HASH_VERSION_PLAIN)  # the same row, its content hashed in
    if not extra or "cost" in extra:  # what most rows hold: never left to the slow path
        assert as_version_2 is not None and as_version_1 is not None
    if as_version_2 is not None:
        assert as_version_2 == canonical_bytes_v2(decoded, bytes(decoded["content_digest"]))
    if as_version_1 is not None:
        assert as_version_1 == canonical_bytes(decoded)
