"""Admission control: bounded body reading, per-tenant token buckets and an in-flight byte budget.

Everything here is synchronous bookkeeping on one event loop, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.clock import Clock


class BodyTooLarge(Exception):
    """The body, raw or decompressed, is over the limit."""


class BadEncoding(Exception):
    """The body does not decode under its Content-Encoding."""


class InFlightLimitReached(Exception):
    """Admitting the bytes read so far would take the receiver over its in-flight byte limit."""


@dataclass
class InFlightBudget:
    """Bytes held for requests (read, decoded or waiting for the broker). Only reservations change ``used``."""

    limit: int
    used: int = 0

    def reservation(self) -> Reservation:
        return Reservation(self)

    def _try_take(self, amount: int) -> bool:
        if self.used + amount > self.limit:
            return False
        self.used += amount
        return True

    def _give_back(self, amount: int) -> None:
        self.used = max(0, self.used - amount)


class Reservation:
    """One request's share of the budget: grows while the body is read, released exactly once."""

    __slots__ = ("_budget", "handed_over", "held", "released")

    def __init__(self, budget: InFlightBudget) -> None:
        self._budget = budget
        self.held = 0
        self.released = False
        self.handed_over = False  # release_when_done was called: the futures release it, not the request

    def grow_to(self, total: int) -> None:
        extra = total - self.held
        if extra <= 0:
            return
        if not self._budget._try_take(extra):
            raise InFlightLimitReached
        self.held = total

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._budget._give_back(self.held)
            self.held = 0

    def release_when_done(self, futures: Iterable[asyncio.Future[Any]]) -> None:
        """Keep the bytes counted until the producer has finished with them (acknowledged or failed).

        After a timeout the producer still holds the payloads in its buffers; releasing early would let
        a broker outage turn into unbounded memory.
        """
        self.handed_over = True
        pending = [future for future in futures if not future.done()]
        if not pending:
            self.release()
            return
        remaining = len(pending)

        def one_done(_: asyncio.Future[Any]) -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0:
                self.release()

        for future in pending:
            future.add_done_callback(one_done)


async def read_body(
    stream: AsyncIterator[bytes], *, gzip: bool, limit: int, reservation: Reservation | None = None
) -> bytes:
    """Read and, for gzip, inflate the body, never holding more than ``limit`` decompressed bytes.

    Works the same with or without Content-Length (chunked transfer). A gzip bomb stops at the limit, and
    so does a stream of compressed bytes that inflate to nothing (empty gzip members, trailing junk): the
    raw bytes count against the same limit. Concatenated gzip members are one body (RFC 1952).
    """
    if not gzip:
        return await _read_identity(stream, limit, reservation)
    out = bytearray()
    received = 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    async for chunk in stream:
        if not chunk:
            continue
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge
        data = chunk
        while data:
            if inflater.eof:  # the next gzip member starts here
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                # Never more than one byte past the limit, however small ``data`` is: this is the bomb guard.
                piece = inflater.decompress(data, limit + 1 - len(out))
            except zlib.error as exc:
                raise BadEncoding(f"body is not valid gzip: {exc}") from exc
            out += piece
            if len(out) > limit:
                raise BodyTooLarge
            if reservation is not None:
                reservation.grow_to(len(out))
            # Input is left over only at the end of a member (the next one follows) or at the output cap,
            # which raised above; every member consumes input, so this loop always ends.
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if received and not inflater.eof:
        raise BadEncoding("gzip body is truncated")
    return bytes(out)


async def _read_identity(stream: AsyncIterator[bytes], limit: int, reservation: Reservation | None) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        if not chunk:
            continue
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        if reservation is not None:
            reservation.grow_to(size)
        chunks.append(chunk)
    # One chunk is the common case for small bodies; join would copy it for nothing.
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@dataclass
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens; returns 0 on success, else the seconds until they would be there."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        # A batch larger than the bucket could never pass; it passes when the bucket is full instead.
        need = min(amount, self.capacity)
        if self.tokens >= need:
            self.tokens -= need
            return 0.0
        return (need - self.tokens) / self.rate


@dataclass
class TenantRateLimiter:
    """A token bucket per tenant, at most ``max_tenants`` of them; the least recently seen is forgotten first."""

    rate: float
    burst: float
    clock: Clock
    max_tenants: int = 100_000
    _buckets: OrderedDict[str, TokenBucket] = field(default_factory=OrderedDict)

    def admit(self, tenant: str, records: int) -> float:
        """0 if the records may pass now (and they are counted), else seconds to wait before retrying."""
        now = self.clock.monotonic()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            if len(self._buckets) >= self.max_tenants:
                # A forgotten tenant simply starts again with a full bucket.
                self._buckets.popitem(last=False)
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[tenant] = bucket
        else:
            self._buckets.move_to_end(tenant)
        return bucket.take(records, now)

    def wait_before_any(self, tenant: str) -> float:
        """Seconds until the tenant's bucket holds a whole token again; 0 if it does now. Takes nothing."""
        bucket = self._buckets.get(tenant)
        if bucket is None:
            return 0.0
        tokens = min(bucket.capacity, bucket.tokens + (self.clock.monotonic() - bucket.updated) * bucket.rate)
        return 0.0 if tokens >= 1 else (1 - tokens) / bucket.rate

    def settle(self, tenant: str, charged: int, actual: int) -> float:
        """Correct a charge made before decoding (an estimate from the body's size) to the records counted.

        0 when settled; else the seconds to wait, and the request is refused with its charge refunded,
        as a request refused by ``admit`` costs nothing either.
        """
        if actual <= charged:
            self.refund(tenant, charged - actual)
            return 0.0
        wait = self.admit(tenant, actual - charged)
        if wait > 0:
            self.refund(tenant, charged)
        return wait

    def charge_in_full(self, tenant: str, charged: int, actual: int) -> None:
        """Work refused after decoding (empty entries) is charged anyway, into debt if need be: the tenant's
        next requests wait until it is paid off, so such bodies cannot be repeated at the cost of nothing."""
        bucket = self._buckets.get(tenant)
        if bucket is not None and actual > charged:
            bucket.tokens = max(-bucket.capacity, bucket.tokens - (actual - charged))

    def refund(self, tenant: str, records: int) -> None:
        """Give back tokens for records admitted but then not accepted (the broker failed them)."""
        bucket = self._buckets.get(tenant)
        if bucket is not None:
            bucket.tokens = min(bucket.capacity, bucket.tokens + min(records, bucket.capacity))
