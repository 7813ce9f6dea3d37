"""Enrolling a chain-signing key: the operator's act that lets a signer sign, and verification trust it.

``auditctl keys enroll`` records the public key in ``signing_keys`` (where the signer looks for it) and pins
it in the witness (where verification reads it). A signer never enrols its own key: one that is missing from
either place is refused at start-up.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime

import asyncpg

from shared.keys import key_id_for
from shared.witness import TrustedKey, Witness


class UnenrolledKey(Exception):
    """The signer's key was not enrolled by an operator."""


async def record_signing_key(conn: asyncpg.Connection, public_key: bytes) -> bool:
    """The database half of an enrolment; False when the key was there already."""
    status: str = await conn.execute(
        "INSERT INTO signing_keys (key_id, public_key) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING",
        key_id_for(public_key),
        public_key,
    )
    return status.endswith(" 1")


async def enroll(conn: asyncpg.Connection, witness: Witness | None, public_key: bytes, note: str = "") -> str:
    """Pin the key in the witness first, then record it in the database: a key is never usable by the signer
    without verification trusting it. Returns its key id."""
    if len(public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    key = TrustedKey(key_id_for(public_key), public_key, datetime.now(UTC), note)
    if witness is not None:
        await asyncio.to_thread(witness.enroll, key)
    await record_signing_key(conn, public_key)
    return key.key_id


async def pinned_keys(witness: Witness) -> dict[str, bytes]:
    """The keys verification trusts: those pinned in the witness (ids recomputed from the keys)."""
    return {key.key_id: key.public_key for key in await asyncio.to_thread(witness.trusted_keys)}


def describe_missing(key_id: str, where: str, pinned: Mapping[str, bytes] | None = None) -> str:
    return (
        f"signing key {key_id} is not enrolled ({where}): an operator must enrol it first with"
        " `auditctl keys enroll --key-file <private key file>` (or --public-key <base64>)"
        + ("" if pinned is None else f"; the witness pins {len(pinned)} key(s)")
    )
