"""The "Hash version 2" worked example of docs/auditing.md, recomputed with nothing but hashlib, json and
PyNaCl, and then by the project's own code."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

from nacl.signing import SigningKey, VerifyKey

from shared.chain import canonical_bytes_v2, canonical_content, content_digest, row_hash

DOC = (Path(__file__).resolve().parents[2] / "docs" / "auditing.md").read_text()
SECTION = DOC[DOC.index("## Hash version 2: erasable content"):DOC.index("## Merkle proofs (RFC 9162)")]
ROW_1_HASH = bytes.fromhex("bd4642ce6fbb56ed3f17c6a89bed051988f2057eaf0ab587cd4b3ef14c410616")


def _value(name: str) -> str:
    match = re.search(rf"^{re.escape(name)} += (.+)$", SECTION, re.M)
    assert match, name
    return match.group(1).strip()


def _canonical() -> bytes:
    blocks: list[str] = re.findall(r"```\n(\{.+?\})\n```", SECTION, re.S)
    assert len(blocks) == 1, blocks
    return blocks[0].encode()


def test_an_independent_implementation_reproduces_the_example() -> None:
    content_json = _value("JCS(content)").encode()
    salt = bytes.fromhex(_value("salt"))
    assert salt == bytes(range(0x40, 0x60))
    digest = hashlib.sha256(salt + content_json).digest()
    assert digest.hex() == _value("content_digest")
    canonical = _canonical()
    row = json.loads(canonical)
    assert "content" not in row and row["content_digest"] == digest.hex() and row["hash_version"] == 2
    row_digest = hashlib.sha256(b"claude-audit-row-v2\x00" + ROW_1_HASH + canonical).digest()
    assert row_digest.hex() == _value("v2 row_hash")
    key = SigningKey(bytes(range(32)))
    signature = bytes.fromhex(_value("v2 signature"))
    VerifyKey(bytes(key.verify_key)).verify(row_digest, signature)
    assert key.sign(row_digest).signature == signature


def test_the_project_produces_the_same_bytes() -> None:
    canonical = _canonical()
    row = json.loads(canonical)
    content = json.loads(_value("JCS(content)"))
    salt = bytes.fromhex(_value("salt"))
    assert canonical_content(content) == _value("JCS(content)").encode()
    digest = content_digest(salt, content)
    row["event_time"] = datetime.fromisoformat(row["event_time"])
    row["received_at"] = datetime.fromisoformat(row["received_at"])
    row["content"] = content  # a row as the signer holds it: the content is left out of the hashed bytes
    assert canonical_bytes_v2(row, digest) == canonical
    assert row_hash(ROW_1_HASH, canonical, 2).hex() == _value("v2 row_hash")
