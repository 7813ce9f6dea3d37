"""Signed tree heads' bytes and the offline checks of proof documents, on malformed and forged input."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from shared.keys import Ed25519Signer
from shared.proofcheck import check_consistency, check_document, check_inclusion, load_pinned_keys
from shared.treehead import TreeHead, tree_head_message

ROOT = hashlib.sha256(b"root").digest()


def test_the_signed_bytes_are_the_five_documented_lines() -> None:
    message = tree_head_message("acme", 7, ROOT, "2026-11-28T15:14:00.000000Z", "abc")
    assert message == (b"claude-audit-tree-v1/acme\n7\n" + base64.b64encode(ROOT) +
                       b"\ntime 2026-11-28T15:14:00.000000Z\nkey abc\n")
    for tenant in ("", "a\nb"):
        with pytest.raises(ValueError):
            tree_head_message(tenant, 1, ROOT, "t", "k")
    with pytest.raises(ValueError):
        tree_head_message("acme", 1, b"short", "t", "k")


def test_a_head_verifies_only_with_its_own_key_and_unchanged() -> None:
    key = Ed25519Signer.generate()
    head = TreeHead("acme", 7, ROOT, "2026-11-28T15:14:00.000000Z", key.key_id, b"")
    head = TreeHead(**{**head.__dict__, "signature": key.sign(head.message())})
    assert head.signed_by([key.public_key])
    assert TreeHead.from_dict(json.loads(head.to_json())) == head
    assert not head.signed_by([Ed25519Signer.generate().public_key])
    assert not TreeHead(**{**head.__dict__, "tree_size": 8}).signed_by([key.public_key])
    with pytest.raises(ValueError):
        TreeHead.from_dict({**head.to_dict(), "signature": "00"})


@pytest.mark.parametrize("document", [
    {}, {"inclusion": None}, {"inclusion": {}}, {"first": 1, "second": "x"},
    {"first": 1, "second": 2, "first_root": "zz", "second_root": "00", "path": []},
    {"canonical_bytes": "!!", "inclusion": {"leaf_index": 0}},
])
def test_malformed_documents_fail_cleanly(document: dict[str, object]) -> None:
    checks = check_document(document, [bytes(32)])
    assert checks and not all(c.ok for c in checks)


def test_a_consistency_document_without_tree_heads_is_not_enough() -> None:
    document = {"first": 1, "second": 1, "first_root": ROOT.hex(), "second_root": ROOT.hex(), "path": []}
    checks = check_consistency(document, [bytes(32)])
    assert checks[0].ok and not all(c.ok for c in checks)
    assert not check_inclusion({"inclusion": None}, [])[0].ok


def test_pinned_keys_files(tmp_path: Path) -> None:
    key = Ed25519Signer.generate().public_key
    encoded = base64.b64encode(key).decode()
    path = tmp_path / "keys"
    path.write_text(f"# pinned\n{json.dumps({'key_id': 'x', 'public_key': encoded})}\n\n{encoded}\n")
    assert load_pinned_keys(path) == [key, key]
    path.write_text(base64.b64encode(b"short").decode())
    with pytest.raises(ValueError):
        load_pinned_keys(path)
