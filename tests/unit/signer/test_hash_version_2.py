"""Hash version 2: the row commits to its content only through SHA-256(salt || JCS(content))."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import pytest

from shared.canonical import EVENT_COLUMNS
from shared.chain import (
    HASHED_COLUMNS,
    HASHED_COLUMNS_V2,
    canonical_bytes,
    canonical_bytes_v2,
    canonical_content,
    content_digest,
    row_hash,
    stored_canonical_bytes,
)
from shared.erasure import MAX_ROWS_PER_EVENT, ErasedRow, ErasureRequest, erased_sequences, erasure_events

SALT = bytes(range(32))


def _row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {column: None for column in EVENT_COLUMNS}
    row.update(
        event_id="e1", tenant_id="t1", org_id="o1", plane="claude_code", event_type="user_prompt",
        event_time=datetime(2026, 12, 1, tzinfo=UTC), received_at=datetime(2026, 12, 1, 0, 0, 1, tzinfo=UTC),
        claimed_org_mismatch=False, content={"prompt": "call Jürgen at <PHONE>"}, content_lengths={"prompt": 22},
        redacted_fields={}, content_captured=True, attributes={}, chain_seq=1, signing_key_id="k", hash_version=2,
    )
    row.update(changes)
    return row


def test_the_digest_is_sha256_of_salt_and_the_rfc8785_content() -> None:
    content = {"prompt": "é", "error": "x\ny"}
    expected = hashlib.sha256(SALT + json.dumps(content, sort_keys=True, separators=(",", ":"),
                                                ensure_ascii=False).encode()).digest()
    assert content_digest(SALT, content) == expected
    # Non-ASCII keys sort by UTF-16 code units (RFC 8785), not as orjson would: the general path decides.
    assert canonical_content({"ä": "1", "z": "2"}) == '{"z":"2","ä":"1"}'.encode()


def test_the_salt_changes_the_digest() -> None:
    assert content_digest(SALT, {"prompt": "yes"}) != content_digest(bytes(32), {"prompt": "yes"})


def test_version_2_bytes_hold_the_digest_and_not_the_content() -> None:
    row = _row()
    digest = content_digest(SALT, row["content"])  # type: ignore[arg-type]
    document = json.loads(canonical_bytes_v2(row, digest))
    assert sorted(document) == sorted(HASHED_COLUMNS_V2)
    assert "content" not in document and document["content_digest"] == digest.hex()
    assert "Jürgen" not in canonical_bytes_v2(row, digest).decode()
    # The content itself does not enter the bytes: only the digest does.
    assert canonical_bytes_v2(_row(content={"prompt": "other"}), digest) == canonical_bytes_v2(row, digest)
    assert canonical_bytes_v2(row, bytes(32)) != canonical_bytes_v2(row, digest)


def test_stored_rows_hash_by_their_own_version() -> None:
    v1 = _row(hash_version=1)
    assert stored_canonical_bytes(v1) == canonical_bytes(v1)
    assert sorted(json.loads(canonical_bytes(v1))) == sorted(HASHED_COLUMNS)
    digest = content_digest(SALT, {"prompt": "x"})
    v2 = _row(content={}, content_digest=digest)
    assert stored_canonical_bytes(v2) == canonical_bytes_v2(v2, digest)
    # The domain tag differs, so a version 1 hash can never pass for a version 2 one.
    assert row_hash(bytes(32), b"{}", 1) != row_hash(bytes(32), b"{}", 2)
    assert row_hash(bytes(32), b"{}", 2) == hashlib.sha256(b"claude-audit-row-v2\x00" + bytes(32) + b"{}").digest()


def test_the_general_path_gives_the_same_bytes_as_the_fast_one() -> None:
    digest = content_digest(SALT, {"prompt": "x"})
    plain = _row(attributes={"n": 1})
    awkward = _row(attributes={"ratio": 0.5, "ä": 2**60})  # floats, non-ASCII keys, a big integer
    for row in (plain, awkward):
        produced = canonical_bytes_v2(row, digest)
        document = json.loads(produced)
        assert document["content_digest"] == digest.hex()
    assert json.loads(canonical_bytes_v2(awkward, digest))["attributes"]["ä"] == str(2**60)


def test_erasure_events_list_rows_in_order_and_split_large_erasures() -> None:
    request = ErasureRequest("t1", "o1", "alice", "GDPR request", {"user": "u1"}, "req-1")
    rows = [ErasedRow(seq, f"e{seq}") for seq in range(MAX_ROWS_PER_EVENT + 5, 0, -1)]
    events = erasure_events(request, rows, datetime(2026, 12, 1, tzinfo=UTC))
    assert len(events) == 2
    first, second = events
    assert erased_sequences(first.attributes) == list(range(1, MAX_ROWS_PER_EVENT + 1))
    assert erased_sequences(second.attributes) == list(range(MAX_ROWS_PER_EVENT + 1, MAX_ROWS_PER_EVENT + 6))
    assert first.attributes["erasure.event_ids"][:2] == ["e1", "e2"]
    assert (first.plane, first.event_type, first.user_id, first.content) == ("erasure", "erasure", "alice", {})
    assert first.attributes["erasure.reason"] == "GDPR request"


@pytest.mark.parametrize("listed", [None, "1,2", [1, "2", True, 3.0]])
def test_a_malformed_erasure_event_lists_no_rows_it_does_not_name_exactly(listed: object) -> None:
    assert erased_sequences({"erasure.rows": listed}) in ([], [1])
