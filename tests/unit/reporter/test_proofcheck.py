"""The offline proof check, on a proof built here the way the signer and the reporter build theirs."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.reporter.proofcheck import check_proof, main
from shared.canonical import CanonicalEvent
from shared.chain import (
    GENESIS_HASH,
    HASH_VERSION,
    checkpoint_message,
    content_digest,
    row_hash,
    stored_canonical_bytes,
)
from shared.keys import Ed25519Signer

AT = datetime(2026, 11, 28, 15, 13, 7, tzinfo=UTC)


def _proof(signer: Ed25519Signer, *, checkpoint_seq: int | None = 1) -> dict[str, Any]:
    event = CanonicalEvent(event_id="ev-1", tenant_id="t1", org_id="acme", license_id="lic", plane="claude_code",
                           event_type="tool_decision", event_time=AT, received_at=AT, tool_name="Bash",
                           decision="reject", content={"prompt": "<EMAIL>"})
    values = {**event.__dict__, "chain_seq": 1, "signing_key_id": signer.key_id, "hash_version": HASH_VERSION}
    canonical = stored_canonical_bytes({**values, "content_digest": content_digest(bytes(32), event.content)})
    digest = row_hash(GENESIS_HASH, canonical, HASH_VERSION)
    proof: dict[str, Any] = {
        "record_id": 7, "tenant_id": "t1", "event_id": "ev-1", "chain_seq": 1,
        "canonical_bytes": base64.b64encode(canonical).decode(), "prev_hash": GENESIS_HASH.hex(),
        "row_hash": digest.hex(), "signature": base64.b64encode(signer.sign(digest)).decode(),
        "signing_key": {"key_id": signer.key_id, "public_key": base64.b64encode(signer.public_key).decode()},
        "checkpoint": None,
    }
    if checkpoint_seq is not None:
        message = checkpoint_message("t1", checkpoint_seq, digest, AT, signer.key_id)
        proof["checkpoint"] = {
            "chain_seq": checkpoint_seq, "head_hash": digest.hex(), "created_at": AT.isoformat(),
            "key_id": signer.key_id, "public_key": base64.b64encode(signer.public_key).decode(),
            "signature": base64.b64encode(signer.sign(message)).decode(),
            "message": base64.b64encode(message).decode(),
        }
    return proof


def test_a_genuine_proof_passes_every_check() -> None:
    signer = Ed25519Signer.generate()
    checks = check_proof(_proof(signer), trusted_keys=[signer.public_key])
    assert checks and all(c.ok for c in checks), checks
    assert {"checkpoint signature verifies", "checkpoint head hash is this row's hash"} <= {c.name for c in checks}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: p.update(canonical_bytes=base64.b64encode(base64.b64decode(p["canonical_bytes"]).replace(
            b"reject", b"accept")).decode()),
        lambda p: p.update(row_hash="00" * 32),
        lambda p: p.update(signature=base64.b64encode(bytes(64)).decode()),
        lambda p: p.update(chain_seq=2),
        lambda p: p["checkpoint"].update(chain_seq=5),
        lambda p: p["checkpoint"].update(head_hash="11" * 32),
        lambda p: p.update(signing_key={"key_id": "x", "public_key": base64.b64encode(bytes(32)).decode()}),
    ],
)
def test_any_change_fails(tamper: Any) -> None:
    signer = Ed25519Signer.generate()
    proof = _proof(signer)
    tamper(proof)
    assert not all(c.ok for c in check_proof(proof, trusted_keys=[signer.public_key]))


def test_an_untrusted_key_fails_even_if_consistent() -> None:
    proof = _proof(Ed25519Signer.generate())
    assert all(c.ok for c in check_proof(proof))
    assert not all(c.ok for c in check_proof(proof, trusted_keys=[Ed25519Signer.generate().public_key]))


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    signer = Ed25519Signer.generate()
    good = tmp_path / "proof.json"
    good.write_text(json.dumps(_proof(signer, checkpoint_seq=None)))
    key = base64.b64encode(signer.public_key).decode()
    assert main([str(good), "--trusted-key", key]) == 0
    assert "FAIL" not in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_proof(signer), "row_hash": "00" * 32}))
    assert main([str(bad), "--trusted-key", key]) == 1
