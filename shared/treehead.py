"""Signed tree heads (STH): "tenant T's Merkle tree had root R at size N", signed with Ed25519.

The signed bytes follow the C2SP checkpoint body (origin line, tree size, base64 root hash, then extension
lines), each line ending in one newline::

    claude-audit-tree-v1/<tenant_id>
    <tree_size in decimal>
    <root_hash, standard base64 with padding>
    time <YYYY-MM-DDTHH:MM:SS.ffffffZ>
    key <key_id>

The signature is Ed25519 over exactly these bytes (UTF-8). Every checkpoint of a chain is also an STH: tree
size = the checkpoint's chain_seq, time = its created_at, key = its key_id, and the root and signature are
the ``tree_root`` and ``tree_signature`` columns of its ``chain_checkpoints`` row, so wherever checkpoint
rows are published, their tree heads go too. docs/auditing.md specifies it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.chain import format_timestamp
from shared.keys import key_id_for, verify_signature
from shared.merkle import HASH_SIZE

ORIGIN_PREFIX = "claude-audit-tree-v1/"


def tree_head_message(tenant_id: str, tree_size: int, root_hash: bytes, timestamp: datetime | str,
                      key_id: str) -> bytes:
    """The exact bytes an STH signature covers."""
    if "\n" in tenant_id or not tenant_id:
        raise ValueError("a tenant id in a tree head is one non-empty line")
    if len(root_hash) != HASH_SIZE or tree_size < 0:
        raise ValueError("a tree head has a 32-byte root and a size of at least 0")
    when = timestamp if isinstance(timestamp, str) else format_timestamp(timestamp)
    lines = (ORIGIN_PREFIX + tenant_id, str(tree_size), base64.b64encode(root_hash).decode(), f"time {when}",
             f"key {key_id}")
    return "".join(line + "\n" for line in lines).encode()


@dataclass(frozen=True)
class TreeHead:
    tenant_id: str
    tree_size: int
    root_hash: bytes
    timestamp: str  # YYYY-MM-DDTHH:MM:SS.ffffffZ, exactly as signed
    key_id: str
    signature: bytes

    def message(self) -> bytes:
        return tree_head_message(self.tenant_id, self.tree_size, self.root_hash, self.timestamp, self.key_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tenant_id": self.tenant_id,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp,
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TreeHead:
        """Raises ValueError (or KeyError, TypeError) on anything malformed."""
        head = cls(str(data["tenant_id"]), int(data["tree_size"]), bytes.fromhex(data["root_hash"]),
                   str(data["timestamp"]), str(data["key_id"]), bytes.fromhex(data["signature"]))
        if len(head.root_hash) != HASH_SIZE or len(head.signature) != 64:
            raise ValueError("a tree head has a 32-byte root hash and a 64-byte signature")
        return head

    @classmethod
    def from_checkpoint_record(cls, record: dict[str, Any]) -> TreeHead | None:
        """The tree head inside a witness's checkpoint record (every column of its ``chain_checkpoints`` row,
        bytea as hex); None for a checkpoint written before tree heads existed."""
        if record.get("tree_root") is None or record.get("tree_signature") is None:
            return None
        return cls.from_dict({"tenant_id": record["tenant_id"], "tree_size": record["chain_seq"],
                              "root_hash": record["tree_root"], "timestamp": record["created_at"],
                              "key_id": record["key_id"], "signature": record["tree_signature"]})

    def signed_by(self, public_keys: Iterable[bytes]) -> bool:
        """True if one of ``public_keys`` (pinned, obtained independently) carries this head's key id and its
        signature verifies. The key id is recomputed from the key, never trusted."""
        message = self.message()
        return any(
            key_id_for(key) == self.key_id and verify_signature(key, message, self.signature) for key in public_keys
        )

