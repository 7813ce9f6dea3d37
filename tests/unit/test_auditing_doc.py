"""The worked examples in docs/auditing.md, recomputed with nothing but hashlib, json and PyNaCl."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from shared.chain import canonical_bytes, checkpoint_message, row_hash
from shared.verify import Checkpoint

DOC = (Path(__file__).resolve().parents[2] / "docs" / "auditing.md").read_text()


def _example() -> tuple[bytes, str, str]:
    canonical = re.search(r"```json\n(.+?)\n```", DOC, re.S)
    hashes = re.search(r"row_hash  = ([0-9a-f]{64})\nsignature = ([0-9a-f]{128})", DOC)
    assert canonical and hashes
    return canonical.group(1).encode(), hashes.group(1), hashes.group(2)


def test_an_independent_implementation_reproduces_the_example() -> None:
    canonical, expected_hash, expected_signature = _example()
    digest = hashlib.sha256(b"claude-audit-row-v1\x00" + bytes(32) + canonical).digest()
    assert digest.hex() == expected_hash
    key = SigningKey(bytes(range(32)))
    assert base64.b64encode(bytes(key.verify_key)).decode() in DOC
    assert hashlib.sha256(bytes(key.verify_key)).hexdigest()[:32] in DOC
    VerifyKey(bytes(key.verify_key)).verify(digest, bytes.fromhex(expected_signature))
    assert key.sign(digest).signature.hex() == expected_signature


def test_the_project_produces_the_same_bytes() -> None:
    canonical, expected_hash, _ = _example()
    row = json.loads(canonical)
    row["event_time"] = datetime.fromisoformat(row["event_time"])
    row["received_at"] = datetime.fromisoformat(row["received_at"])
    row["cost"] = Decimal(row["cost"])
    assert canonical_bytes(row) == canonical
    assert row_hash(bytes(32), canonical).hex() == expected_hash


def _second_example() -> dict[str, str]:
    blocks = re.findall(r"```text\n(.+?)\n```", DOC, re.S)
    assert len(blocks) == 3, blocks
    values = dict(re.findall(r"^(row [23] row_hash|row [23] signature|checkpoint signature) += ([0-9a-f]+)", DOC, re.M))
    assert len(values) == 5, values
    return {"row2": blocks[0], "row3": blocks[1], "checkpoint": blocks[2], **values}


def test_an_independent_implementation_reproduces_the_second_example() -> None:
    """Non-zero prev_hash, a key rotation, a checkpoint: hashlib and PyNaCl only."""
    example = _second_example()
    key_a, key_b = SigningKey(bytes(range(32))), SigningKey(bytes(range(32, 64)))
    id_a = hashlib.sha256(bytes(key_a.verify_key)).hexdigest()[:32]
    id_b = hashlib.sha256(bytes(key_b.verify_key)).hexdigest()[:32]
    assert base64.b64encode(bytes(key_b.verify_key)).decode() in DOC and id_b in DOC
    row1_hash = bytes.fromhex(_example()[1])
    expected_prev = re.search(r"Row 2, `prev_hash` = row 1's `row_hash` = `([0-9a-f]{64})`", DOC)
    assert expected_prev and expected_prev.group(1) == row1_hash.hex()

    tag = b"claude-audit-row-v1\x00"
    row2 = hashlib.sha256(tag + row1_hash + example["row2"].encode()).digest()
    assert row2.hex() == example["row 2 row_hash"]
    VerifyKey(bytes(key_a.verify_key)).verify(row2, bytes.fromhex(example["row 2 signature"]))
    row3 = hashlib.sha256(tag + row2 + example["row3"].encode()).digest()
    assert row3.hex() == example["row 3 row_hash"]
    VerifyKey(bytes(key_b.verify_key)).verify(row3, bytes.fromhex(example["row 3 signature"]))
    # Each row names the key in force at its sequence number: A until the rotation at 3, then B.
    assert f'"signing_key_id":"{id_a}"' in example["row2"] and f'"signing_key_id":"{id_b}"' in example["row3"]

    message = b"claude-audit-checkpoint-v1\x00" + example["checkpoint"].encode()
    VerifyKey(bytes(key_b.verify_key)).verify(message, bytes.fromhex(example["checkpoint signature"]))
    assert f'"head_hash":"{row3.hex()}"' in example["checkpoint"]
    assert key_b.sign(message).signature.hex() == example["checkpoint signature"]  # Ed25519 is deterministic
    witness_line = re.findall(r"```json\n(.+?)\n```", DOC, re.S)[1]
    assert f'"signature":"{example["checkpoint signature"]}"' in witness_line


def test_the_project_produces_the_second_example() -> None:
    example = _second_example()
    row3 = json.loads(example["row3"])
    row3["event_time"] = datetime.fromisoformat(row3["event_time"])
    row3["received_at"] = datetime.fromisoformat(row3["received_at"])
    row3["cost"] = Decimal(row3["cost"])
    row3["attributes"] = {"big": 2**60, "ratio": 0.5, "tool.exit": 1.0, "zone": "ünïcode"}  # as jsonb holds them
    assert canonical_bytes(row3) == example["row3"].encode()
    record = json.loads(re.findall(r"```json\n(.+?)\n```", DOC, re.S)[1])
    message = checkpoint_message(
        record["tenant_id"], record["chain_seq"], bytes.fromhex(record["head_hash"]),
        datetime.fromisoformat(record["created_at"]), record["key_id"],
    )
    assert message == b"claude-audit-checkpoint-v1\x00" + example["checkpoint"].encode()
    assert Checkpoint.from_record(record).to_json() == re.findall(r"```json\n(.+?)\n```", DOC, re.S)[1]
