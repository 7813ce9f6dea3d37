"""Signing many row hashes: on the event loop's thread, or on the helper process, with the same results."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import random
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nacl.bindings import crypto_sign_seed_keypair

from services.signer.signing import (
    HELPER_NICENESS,
    HelperProcessSigner,
    InlineSigner,
    SigningHelperError,
    sign_digests,
)
from shared.keys import Ed25519Signer, verify_signature


def digests(count: int, salt: str = "") -> list[bytes]:
    return [hashlib.sha256(f"{salt}{i}".encode()).digest() for i in range(count)]


async def test_inline_signatures_are_the_keys() -> None:
    key = Ed25519Signer.generate()
    messages = digests(5)
    assert await InlineSigner(key).sign_many(messages) == [key.sign(m) for m in messages]


@pytest.mark.parametrize("count", [0, 1, 2, 17, 700])
def test_the_helpers_batch_signing_gives_the_keys_signatures(count: int) -> None:
    key = Ed25519Signer.generate()
    messages = digests(count, salt="batch")
    _, secret_key = crypto_sign_seed_keypair(base64.b64decode(key.seed_b64()))
    assert sign_digests(secret_key, b"".join(messages)) == b"".join(key.sign(m) for m in messages)


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


SIZES = {"none": 0, "one": 1, "a chunk": 16, "a chunk and one": 17, "a batch": 2_000}


@pytest.mark.parametrize("count", list(SIZES.values()), ids=list(SIZES))
async def test_inline_and_helper_sign_as_the_key_does(helper: tuple[Ed25519Signer, HelperProcessSigner], count: int) -> None:
    key, process = helper
    messages = digests(count, salt=f"size{count}")
    expected = [key.sign(m) for m in messages]
    assert await InlineSigner(key).sign_many(messages) == expected
    assert await process.sign_many(messages) == expected


async def test_inline_close_changes_nothing() -> None:
    key = Ed25519Signer.generate()
    inline = InlineSigner(key)
    await inline.close()
    assert await inline.sign_many(digests(2)) == [key.sign(m) for m in digests(2)]


async def test_random_digests_sign_alike(helper: tuple[Ed25519Signer, HelperProcessSigner]) -> None:
    key, process = helper
    messages = [os.urandom(32) for _ in range(3_000)]
    signatures = await process.sign_many(messages)
    assert signatures == [key.sign(m) for m in messages]
    assert all(len(s) == 64 for s in signatures)


@pytest.mark.parametrize("callers", [2, 50, 200])
async def test_concurrent_callers_each_get_their_own_signatures_in_order(
    helper: tuple[Ed25519Signer, HelperProcessSigner], callers: int
) -> None:
    key, process = helper
    rng = random.Random(callers)
    # Sizes up to 3,000 digests: a request (96 KB) and its answer (192 KB) fill the pipes, so writers wait on
    # drain() and the reader on the answers while the others queue behind them.
    batches = [digests(rng.choice([0, 1, 15, 16, 17, 300, 3_000]), salt=f"{callers}-{i}-") for i in range(callers)]

    async def one(batch: list[bytes]) -> list[bytes]:
        await asyncio.sleep(rng.random() / 1000)
        return await process.sign_many(batch)

    results = await asyncio.gather(*(one(batch) for batch in batches))
    for batch, signatures in zip(batches, results, strict=True):
        assert signatures == [key.sign(m) for m in batch]


async def test_the_chunks_asked_for_within_a_moment_go_to_the_helper_as_one_request(
    helper: tuple[Ed25519Signer, HelperProcessSigner],
) -> None:
    key, process = helper
    writes: list[int] = []
    stdin = process._stdin

    class _Counting:
        def write(self, data: bytes) -> None:
            writes.append(int.from_bytes(data[:4], "big"))
            stdin.write(data)

        def is_closing(self) -> bool:
            return stdin.is_closing()

    process._stdin = _Counting()  # type: ignore[assignment]
    # Chunks of 16 hashes, then the rest of a batch, as the appender asks (here all before the loop turns, so
    # that the moment cannot pass in between on a slow machine).
    chunks = [digests(16, f"chunk-{i}-") for i in range(5)] + [digests(3, "rest-")]
    answers = await asyncio.gather(*[process.sign_many(chunk) for chunk in chunks])
    assert answers == [[key.sign(m) for m in chunk] for chunk in chunks]
    assert writes == [83]
    # Past the threshold, what is waiting is written at once.
    many = digests(300, "many-")
    assert await process.sign_many(many) == [key.sign(m) for m in many]
    assert writes == [83, 300]
    process._stdin = stdin


async def test_a_cancelled_caller_does_not_shift_the_answers_of_the_others(
    helper: tuple[Ed25519Signer, HelperProcessSigner],
) -> None:
    key, process = helper
    first, second, third = digests(5_000, "a"), digests(3, "b"), digests(4, "c")
    cancelled = asyncio.ensure_future(process.sign_many(first))
    others = asyncio.gather(process.sign_many(second), process.sign_many(third))
    await asyncio.sleep(0)
    cancelled.cancel()
    assert list(await others) == [[key.sign(m) for m in second], [key.sign(m) for m in third]]
    assert await process.sign_many(second) == [key.sign(m) for m in second]


async def test_the_seed_never_appears_on_the_command_line(helper: tuple[Ed25519Signer, HelperProcessSigner]) -> None:
    key, process = helper
    cmdline = await asyncio.to_thread(Path(f"/proc/{process._process.pid}/cmdline").read_bytes)
    assert key.seed_b64().encode() not in cmdline
    assert b"services.signer.signing" in cmdline


async def test_the_helper_ignores_ctrl_c(helper: tuple[Ed25519Signer, HelperProcessSigner]) -> None:
    key, process = helper
    os.kill(process._process.pid, signal.SIGINT)
    await asyncio.sleep(0.2)
    assert process._process.returncode is None
    assert await process.sign_many(digests(3)) == [key.sign(m) for m in digests(3)]


async def test_close_ends_the_child_and_later_requests_fail() -> None:
    helper = await HelperProcessSigner.start(Ed25519Signer.generate())
    pid = helper._process.pid
    await asyncio.wait_for(helper.close(), 10)
    assert helper._process.returncode == 0  # it saw its stdin close and returned
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(SigningHelperError):
        await helper.sign_many(digests(1))
    await asyncio.wait_for(helper.close(), 10)  # a second close is harmless
    assert await helper.sign_many([]) == []


@pytest.mark.parametrize("outstanding", [10, 2_500, 20_000])
async def test_close_answers_the_requests_still_outstanding(outstanding: int) -> None:
    """Regression: close() cancelled the reader first, so the helper blocked writing answers nobody read; with
    more than about 128 KB of them (2,000 signatures) the process never counted as exited and close() hung
    even after killing it, and the callers waited forever."""
    key = Ed25519Signer.generate()
    helper = await HelperProcessSigner.start(key)
    messages = digests(outstanding)
    pending = asyncio.ensure_future(helper.sign_many(messages))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(helper.close(), 4)  # well within close()'s own 5 s grace: no kill needed
    assert helper._process.returncode == 0
    assert await asyncio.wait_for(pending, 4) == [key.sign(m) for m in messages]


async def test_callers_outstanding_when_the_helper_is_killed_during_close_are_told() -> None:
    helper = await HelperProcessSigner.start(Ed25519Signer.generate())
    pending = asyncio.ensure_future(helper.sign_many(digests(50_000)))
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(helper.close())
    await asyncio.sleep(0)
    helper._process.kill()
    await asyncio.wait_for(closing, 10)
    with pytest.raises(SigningHelperError):
        await asyncio.wait_for(pending, 10)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, "input closed"])
async def test_a_helper_that_stops_fails_the_next_request(how: signal.Signals | str) -> None:
    helper = await HelperProcessSigner.start(Ed25519Signer.generate())
    try:
        if how == "input closed":
            helper._stdin.close()  # the helper sees its input end and returns
        else:
            assert isinstance(how, signal.Signals)
            helper._process.send_signal(how)
        await asyncio.wait_for(helper._process.wait(), 10)
        with pytest.raises(SigningHelperError):
            await asyncio.wait_for(helper.sign_many(digests(3)), 10)
    finally:
        await asyncio.wait_for(helper.close(), 10)


@pytest.fixture
async def helper() -> AsyncIterator[tuple[Ed25519Signer, HelperProcessSigner]]:
    key = Ed25519Signer.generate()
    process = await HelperProcessSigner.start(key)
    try:
        yield key, process
    finally:
        await asyncio.wait_for(process.close(), 10)


async def test_the_helper_does_not_inherit_the_signers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key taken from AUDIT_SIGNING_KEY (or any other secret in the environment) stays in the signer."""
    key = Ed25519Signer.generate()
    monkeypatch.setenv("AUDIT_SIGNING_KEY", key.seed_b64())
    monkeypatch.setenv("DATABASE_URL", "postgresql://signer:hunter2@db/audit")
    process = await HelperProcessSigner.start(key)
    try:
        environ = await asyncio.to_thread(Path(f"/proc/{process._process.pid}/environ").read_bytes)
        assert key.seed_b64().encode() not in environ
        names = {entry.split(b"=", 1)[0] for entry in environ.split(b"\0") if entry}
        assert b"AUDIT_SIGNING_KEY" not in names and b"DATABASE_URL" not in names
        assert await process.sign_many(digests(3)) == [key.sign(m) for m in digests(3)]
    finally:
        await process.close()
