"""Body reading within limits, the in-flight budget and the per-tenant token buckets."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator, Iterable

import pytest

from services.receiver.limits import (
    BadEncoding,
    BodyTooLarge,
    InFlightBudget,
    InFlightLimitReached,
    TenantRateLimiter,
    read_body,
)
from tests.unit.receiver.conftest import FakeClock


async def stream(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 1 << 20])
async def test_identity_and_gzip_bodies_read_the_same_whatever_the_chunking(chunk_size: int) -> None:
    data = bytes(range(256)) * 300
    assert await read_body(stream(pieces(data, chunk_size)), gzip=False, limit=len(data)) == data
    packed = gzip.compress(data)
    assert await read_body(stream(pieces(packed, chunk_size)), gzip=True, limit=len(data)) == data


async def test_concatenated_gzip_members_are_one_body() -> None:
    packed = gzip.compress(b"first ") + gzip.compress(b"second")
    assert await read_body(stream(pieces(packed, 5)), gzip=True, limit=100) == b"first second"


async def test_empty_body_is_empty_in_both_encodings() -> None:
    assert await read_body(stream([]), gzip=False, limit=10) == b""
    assert await read_body(stream([b""]), gzip=True, limit=10) == b""


@pytest.mark.parametrize(
    "packed",
    [gzip.compress(b"x" * 1000)[:-5], b"plain text", gzip.compress(b"ok") + b"trailing junk"],
    ids=["truncated", "not-gzip", "trailing-junk"],
)
async def test_bad_gzip_is_refused(packed: bytes) -> None:
    with pytest.raises(BadEncoding):
        await read_body(stream([packed]), gzip=True, limit=10_000)


async def test_over_the_limit_is_refused_as_soon_as_it_is_known() -> None:
    with pytest.raises(BodyTooLarge):
        await read_body(stream([b"x" * 600, b"x" * 600]), gzip=False, limit=1000)
    with pytest.raises(BodyTooLarge):
        await read_body(stream([gzip.compress(b"x" * 1001)]), gzip=True, limit=1000)


async def test_a_gzip_bomb_never_inflates_past_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    produced: list[int] = []
    real = zlib.decompressobj

    class Watched:
        def __init__(self, wbits: int) -> None:
            self._inner = real(wbits=wbits)

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            assert max_length > 0, "inflating without an output cap"
            out = self._inner.decompress(data, max_length)
            produced.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._inner, name)

    monkeypatch.setattr(zlib, "decompressobj", Watched)
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), 9)
    with pytest.raises(BodyTooLarge):
        await read_body(stream(pieces(bomb, 4096)), gzip=True, limit=1024 * 1024)
    assert sum(produced) <= 1024 * 1024 + 1


async def test_a_flood_of_empty_gzip_members_is_bounded_by_the_raw_limit() -> None:
    member = gzip.compress(b"")
    with pytest.raises(BodyTooLarge):
        await read_body(stream([member] * 10_000), gzip=True, limit=10_000)


async def test_reservation_grows_with_the_body_and_refuses_beyond_the_budget() -> None:
    budget = InFlightBudget(limit=1000)
    first = budget.reservation()
    assert await read_body(stream([b"a" * 600]), gzip=False, limit=5000, reservation=first) == b"a" * 600
    assert budget.used == 600
    second = budget.reservation()
    with pytest.raises(InFlightLimitReached):
        await read_body(stream([b"b" * 300, b"b" * 300]), gzip=False, limit=5000, reservation=second)
    second.release()
    first.release()
    first.release()  # releasing twice changes nothing
    assert budget.used == 0


async def test_reservation_handed_to_futures_is_released_when_the_last_completes() -> None:
    budget = InFlightBudget(limit=1000)
    reservation = budget.reservation()
    reservation.grow_to(500)
    loop = asyncio.get_running_loop()
    futures = [loop.create_future(), loop.create_future()]
    reservation.release_when_done(futures)
    assert reservation.handed_over
    futures[0].set_result(None)
    await asyncio.sleep(0)
    assert budget.used == 500
    futures[1].set_exception(TimeoutError())
    futures[1].exception()
    await asyncio.sleep(0)
    assert budget.used == 0


def test_token_bucket_admits_bursts_then_paces_and_says_how_long_to_wait() -> None:
    clock = FakeClock()
    limiter = TenantRateLimiter(rate=100, burst=200, clock=clock)
    assert limiter.admit("a", 150) == 0
    assert limiter.admit("a", 100) == pytest.approx(0.5)
    assert limiter.admit("b", 200) == 0  # tenants do not share buckets
    clock.advance(0.5)
    assert limiter.admit("a", 100) == 0
    assert limiter.admit("a", 1000) > 0  # larger than the bucket: waits for a full bucket
    clock.advance(2)
    assert limiter.admit("a", 1000) == 0


def test_refund_gives_tokens_back_up_to_the_burst() -> None:
    clock = FakeClock()
    limiter = TenantRateLimiter(rate=1, burst=10, clock=clock)
    assert limiter.admit("a", 10) == 0
    limiter.refund("a", 50)
    assert limiter.admit("a", 10) == 0
    assert limiter.admit("a", 1) > 0
    limiter.refund("unknown", 5)  # nothing to refund to


def test_the_least_recently_seen_tenant_is_forgotten_first() -> None:
    clock = FakeClock()
    limiter = TenantRateLimiter(rate=1, burst=10, clock=clock, max_tenants=2)
    limiter.admit("a", 10)
    limiter.admit("b", 10)
    limiter.admit("a", 0)  # "a" seen again: "b" is now the oldest
    limiter.admit("c", 10)
    assert limiter.admit("a", 1) > 0  # still remembered: empty bucket
    assert limiter.admit("b", 10) == 0  # forgotten: starts full again
