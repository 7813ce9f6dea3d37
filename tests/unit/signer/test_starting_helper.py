"""The signing helper starts while the consumer joins its group: the signer is not ready until it has, what it signs
is the key's, and closing it before it started leaves no process behind."""

from __future__ import annotations

import asyncio

import uvloop

from services.signer.__main__ import _StartingHelper
from services.signer.settings import SignerSettings
from shared.keys import Ed25519Signer
from shared.runtime import stop_on_signals


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


def test_the_helper_signs_under_the_signers_default_event_loop() -> None:
    """The signer runs on uvloop by default (SIGNER_EVENT_LOOP): its helper's pipes, its signal handlers and the
    helper's exit behave there as on asyncio's own loop."""
    key = Ed25519Signer.generate()
    digests = [bytes([n]) * 32 for n in range(40)]

    async def sign_then_close() -> tuple[list[bytes], bool]:
        stop = stop_on_signals()
        helper = _StartingHelper(key)
        signed = await helper.sign_many(digests)
        await helper.close()
        return signed, stop.is_set()

    assert SignerSettings().signer_event_loop == "uvloop"
    signed, stopped = uvloop.run(sign_then_close())
    assert signed == [key.sign(d) for d in digests]
    assert not stopped
