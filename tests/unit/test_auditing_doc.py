"""The worked example in docs/auditing.md, recomputed with nothing but hashlib, json and PyNaCl."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from shared.chain import canonical_bytes, row_hash

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
