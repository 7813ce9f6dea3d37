"""Checks a row proof offline: ``python -m services.reporter.proofcheck proof.json [--trusted-key BASE64]``.

Needs nothing but the proof document (from ``GET /api/v1/audit/records/{id}/proof``) and, to be
meaningful, the signing public key obtained independently (``--trusted-key``; otherwise the key inside the
proof is used and only the proof's internal consistency is shown). Exit status 0 when every check passes.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.chain import CHECKPOINT_DOMAIN_TAG, domain_tag
from shared.keys import key_id_for, verify_signature


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


def check_proof(proof: dict[str, Any], trusted_keys: list[bytes] | None = None) -> list[Check]:
    checks: list[Check] = []
    try:
        canonical = base64.b64decode(proof["canonical_bytes"], validate=True)
        prev = bytes.fromhex(proof["prev_hash"])
        stored = bytes.fromhex(proof["row_hash"])
        signature = base64.b64decode(proof["signature"], validate=True)
        key = proof.get("signing_key") or {}
        public_key = base64.b64decode(key.get("public_key", ""), validate=True)
    except (KeyError, ValueError, binascii.Error, TypeError) as exc:
        return [Check("proof is well formed", False, repr(exc))]
    try:
        row = json.loads(canonical)
    except ValueError:
        return [Check("canonical bytes are JSON", False)]
    checks.append(Check("canonical bytes hold this row",
                        row.get("chain_seq") == proof.get("chain_seq") and row.get("event_id") == proof.get("event_id")
                        and row.get("tenant_id") == proof.get("tenant_id"),
                        f"chain_seq {row.get('chain_seq')}, event {row.get('event_id')}"))
    version = row.get("hash_version") if isinstance(row, dict) else None
    digest = hashlib.sha256(domain_tag(version) + prev + canonical).digest()
    checks.append(Check("row_hash = SHA-256(tag || prev_hash || canonical bytes)", digest == stored, digest.hex()))
    checks.append(Check("key id is the public key's fingerprint",
                        len(public_key) == 32 and key_id_for(public_key) == key.get("key_id")
                        and row.get("signing_key_id") == key.get("key_id"), str(key.get("key_id"))))
    if trusted_keys is not None:
        checks.append(Check("signing key is one of the trusted keys", public_key in trusted_keys))
    checks.append(Check("Ed25519 signature over row_hash verifies",
                        len(public_key) == 32 and verify_signature(public_key, stored, signature)))
    checkpoint = proof.get("checkpoint")
    if checkpoint is not None:
        checks += _check_checkpoint(checkpoint, row, stored, trusted_keys)
    return checks


def _check_checkpoint(checkpoint: dict[str, Any], row: dict[str, Any], stored: bytes,
                      trusted_keys: list[bytes] | None) -> list[Check]:
    try:
        message = base64.b64decode(checkpoint["message"], validate=True)
        signature = base64.b64decode(checkpoint["signature"], validate=True)
        public_key = base64.b64decode(checkpoint.get("public_key") or "", validate=True)
        head_hash = bytes.fromhex(checkpoint["head_hash"])
        seq = int(checkpoint["chain_seq"])
    except (KeyError, ValueError, binascii.Error, TypeError) as exc:
        return [Check("checkpoint is well formed", False, repr(exc))]
    if not message.startswith(CHECKPOINT_DOMAIN_TAG):
        return [Check("checkpoint message carries the checkpoint domain tag", False)]
    try:
        signed = json.loads(message[len(CHECKPOINT_DOMAIN_TAG):])
    except ValueError:
        return [Check("checkpoint message is JSON", False)]
    checks = [
        Check("checkpoint message states this tenant, sequence, head hash and key",
              signed.get("tenant_id") == row.get("tenant_id") and signed.get("chain_seq") == seq
              and signed.get("head_hash") == head_hash.hex() and signed.get("key_id") == checkpoint.get("key_id")),
        Check("checkpoint covers the row", seq >= row.get("chain_seq", seq + 1), f"through sequence {seq}"),
        Check("checkpoint key id is the public key's fingerprint",
              len(public_key) == 32 and key_id_for(public_key) == checkpoint.get("key_id")),
        Check("checkpoint signature verifies", len(public_key) == 32 and verify_signature(public_key, message,
                                                                                           signature)),
    ]
    if trusted_keys is not None:
        checks.append(Check("checkpoint key is one of the trusted keys", public_key in trusted_keys))
    if seq == row.get("chain_seq"):
        checks.append(Check("checkpoint head hash is this row's hash", head_hash == stored))
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("proof", type=Path, help="proof JSON document ('-' for standard input)")
    parser.add_argument("--trusted-key", action="append", default=None,
                        help="base64 Ed25519 public key obtained independently (repeatable)")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if str(args.proof) == "-" else args.proof.read_text()
    trusted = [base64.b64decode(k) for k in args.trusted_key] if args.trusted_key else None
    checks = check_proof(json.loads(text), trusted)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name}" + (f"  ({check.detail})" if check.detail else ""))
    if trusted is None:
        print("note: no --trusted-key given; the key inside the proof was used")
    return 0 if checks and all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
