"""Signing many row hashes: on the event loop's thread, or on the helper process, with the same results."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from services.signer.signing import HELPER_NICENESS, HelperProcessSigner, InlineSigner, SigningHelperError
from shared.keys import Ed25519Signer, verify_signature


def digests(count: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(count)]


async def test_inline_signatures_are_the_keys() -> None:
    key = Ed25519Signer.generate()
    messages = digests(5)
    assert await InlineSigner(key).sign_many(messages) == [key.sign(m) for m in messages]


async def test_the_helper_signs_with_the_same_key_in_order() -> None:
    key = Ed25519Signer.generate()
    helper = await HelperProcessSigner.start(key)
    try:
        batches = [digests(n, salt=str(n)) for n in (1, 32, 0, 700, 5)]
        results = await asyncio.gather(*(helper.sign_many(batch) for batch in batches))
        for batch, signatures in zip(batches, results, strict=True):
            assert signatures == [key.sign(m) for m in batch]
            assert all(verify_signature(key.public_key, m, s) for m, s in zip(batch, signatures, strict=True))
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, helper._process.pid) == min(19, own + HELPER_NICENESS)
    finally:
        await helper.close()
    assert helper._process.returncode is not None


async def test_a_dead_helper_is_reported_not_waited_for() -> None:
    helper = await HelperProcessSigner.start(Ed25519Signer.generate())
    try:
        helper._process.kill()
        await helper._process.wait()
        with pytest.raises(SigningHelperError):
            await asyncio.wait_for(helper.sign_many(digests(3)), 10)
    finally:
        await helper.close()


async def test_requests_in_flight_fail_when_the_helper_dies() -> None:
    helper = await HelperProcessSigner.start(Ed25519Signer.generate())
    try:
        pending = asyncio.ensure_future(helper.sign_many(digests(20_000)))
        await asyncio.sleep(0)
        helper._process.kill()
        with pytest.raises(SigningHelperError):
            await asyncio.wait_for(pending, 10)
    finally:
        await helper.close()
