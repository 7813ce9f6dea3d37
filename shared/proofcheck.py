"""Offline checks of proof documents against pinned public keys: nothing else is consulted.

An inclusion document is the reporter's ``GET /api/v1/audit/records/{id}/proof`` answer (or
``auditctl proof inclusion``): the row's canonical bytes and chain hashes, ``inclusion`` and ``tree_head``.
A consistency document is ``GET /api/v1/audit/consistency`` (or ``auditctl proof consistency``), optionally
with the signed tree heads of both sizes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.chain import domain_tag
from shared.keys import key_id_for, verify_signature
from shared.merkle import leaf_hash, root_from_inclusion, verify_consistency
from shared.treehead import TreeHead


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}" + (f"  ({self.detail})" if self.detail else "")


def load_pinned_keys(path: Path) -> list[bytes]:
    """Public keys from a file of JSON lines with a base64 ``public_key`` (``auditctl signing-keys export``),
    or of bare base64 keys, one a line."""
    keys = []
    for line in path.read_text().splitlines():
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        encoded = json.loads(text)["public_key"] if text.startswith("{") else text
        key = base64.b64decode(encoded, validate=True)
        if len(key) != 32:
            raise ValueError(f"{path}: a public key of {len(key)} bytes is not an Ed25519 key")
        keys.append(key)
    return keys


def _hex_list(values: Any) -> list[bytes]:
    if not isinstance(values, list):
        raise ValueError("path is not a list")
    hashes = [bytes.fromhex(value) for value in values]
    if any(len(h) != 32 for h in hashes):
        raise ValueError("a path hash is not 32 bytes")
    return hashes


def _check_head(head: TreeHead, pinned: Sequence[bytes], label: str) -> Check:
    return Check(f"{label} is signed by a pinned key", head.signed_by(pinned),
                 f"tenant {head.tenant_id}, size {head.tree_size}, key {head.key_id}")


def check_inclusion(document: dict[str, Any], pinned: Sequence[bytes]) -> list[Check]:
    """The row's bytes give its row hash, its leaf leads up the path to the root, and the root is the one a
    pinned key signed in the tree head."""
    try:
        canonical = base64.b64decode(document["canonical_bytes"], validate=True)
        prev = bytes.fromhex(document["prev_hash"])
        stored = bytes.fromhex(document["row_hash"])
        row_signature = base64.b64decode(document["signature"], validate=True)
        row = json.loads(canonical)
        inclusion = document["inclusion"]
        if inclusion is None:
            return [Check("a signed tree head covers the row", False, "none yet: ask again after the next checkpoint")]
        index, size = int(inclusion["leaf_index"]), int(inclusion["tree_size"])
        path = _hex_list(inclusion["path"])
        claimed_root = bytes.fromhex(inclusion["root_hash"])
        head = TreeHead.from_dict(document["tree_head"])
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        return [Check("proof document is well formed", False, repr(exc))]
    version = row.get("hash_version") if isinstance(row, dict) else None
    digest = hashlib.sha256(domain_tag(version) + prev + canonical).digest()
    checks = [
        Check("row_hash = SHA-256(tag || prev_hash || canonical bytes)", digest == stored, digest.hex()),
        Check("leaf index is the row's chain_seq - 1", isinstance(row, dict) and row.get("chain_seq") == index + 1,
              f"leaf {index}"),
        Check("the row is its tenant's", isinstance(row, dict) and row.get("tenant_id") == head.tenant_id),
    ]
    key_id = row.get("signing_key_id") if isinstance(row, dict) else None
    if row_signature:  # rows signed per batch carry no signature of their own; the tree head covers them
        checks.append(Check("row signature verifies with a pinned key", any(
            key_id_for(key) == key_id and verify_signature(key, stored, row_signature) for key in pinned)))
    computed = root_from_inclusion(index, size, leaf_hash(digest), path)
    checks += [
        Check("inclusion path leads from the row's leaf to the root (RFC 9162 2.1.3.2)", computed == claimed_root,
              "" if computed is None else computed.hex()),
        Check("proof is against the tree head's size and root",
              size == head.tree_size and claimed_root == head.root_hash, f"size {head.tree_size}"),
        _check_head(head, pinned, "tree head"),
    ]
    return checks


def check_consistency(document: dict[str, Any], pinned: Sequence[bytes]) -> list[Check]:
    """The path proves the tree of ``second`` leaves extends the tree of ``first``; with tree heads, both
    roots are the signed ones."""
    try:
        first, second = int(document["first"]), int(document["second"])
        first_root, second_root = bytes.fromhex(document["first_root"]), bytes.fromhex(document["second_root"])
        path = _hex_list(document["path"])
        heads = [(label, TreeHead.from_dict(document[key])) for key, label in
                 (("first_tree_head", "first tree head"), ("second_tree_head", "second tree head"))
                 if document.get(key) is not None]
    except (KeyError, ValueError, TypeError, binascii.Error) as exc:
        return [Check("proof document is well formed", False, repr(exc))]
    checks = [Check("consistency path proves the second tree extends the first (RFC 9162 2.1.4.2)",
                    verify_consistency(first, second, first_root, second_root, path), f"{first} -> {second}")]
    if not heads:
        checks.append(Check("signed tree heads name both roots", False, "the document carries no tree heads"))
    for label, head in heads:
        size, root = (first, first_root) if label.startswith("first") else (second, second_root)
        checks.append(Check(f"{label} states this size and root", head.tree_size == size and head.root_hash == root))
        checks.append(_check_head(head, pinned, label))
    if len(heads) == 2:
        checks.append(Check("both tree heads are of one tenant", heads[0][1].tenant_id == heads[1][1].tenant_id))
    return checks


def check_document(document: dict[str, Any], pinned: Sequence[bytes]) -> list[Check]:
    if "inclusion" in document:
        return check_inclusion(document, pinned)
    if "first" in document and "second" in document:
        return check_consistency(document, pinned)
    return [Check("document is an inclusion or a consistency proof", False)]
