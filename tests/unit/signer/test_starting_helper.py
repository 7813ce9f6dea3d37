"""The signing helper starts while the consumer joins its group: the signer is not ready until it has, what it signs
is the key's, and closing it before it started leaves no process behind."""

from __future__ import annotations

import asyncio

from services.signer.__main__ import _StartingHelper
from shared.keys import Ed25519Signer


async def test_signatures_wait_for_the_helper_and_are_the_keys() -> None:
    key = Ed25519Signer.generate()
    helper = _StartingHelper(key)
    assert not helper.started()  # readiness waits for it
    digests = [bytes([n]) * 32 for n in range(3)]
    assert await helper.sign_many(digests) == [key.sign(d) for d in digests]
    assert helper.started()
    await helper.wait_started()
    await helper.close()


async def test_closing_before_it_started_ends_the_start() -> None:
    helper = _StartingHelper(Ed25519Signer.generate())
    await helper.close()
    await asyncio.sleep(0)
    assert not helper.started()
