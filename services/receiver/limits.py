"""Admission control: bounded body reading, per-tenant token buckets and an in-flight byte budget."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from shared.clock import Clock


class BodyTooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


async def read_body(stream: AsyncIterator[bytes], *, gzip: bool, limit: int) -> bytes:
    """Read and, for gzip, inflate the body, never holding more than ``limit`` decompressed bytes.

    Works the same with or without Content-Length (chunked transfer). A gzip bomb stops at the limit.
    """
    out = bytearray()
    received = 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzip else None
    async for chunk in stream:
        if not chunk:
            continue
        received += len(chunk)
        if inflater is None:
            out += chunk
            if len(out) > limit:
                raise BodyTooLarge
            continue
        data = chunk
        while data:
            try:
                piece = inflater.decompress(data, limit + 1 - len(out))
            except zlib.error as exc:
                raise BadEncoding(f"body is not valid gzip: {exc}") from exc
            out += piece
            if len(out) > limit:
                raise BodyTooLarge
            data = inflater.unconsumed_tail
    if inflater is not None and received and not inflater.eof:
        raise BadEncoding("gzip body is truncated")
    return bytes(out)


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
        # A batch larger than the bucket could never pass; let it through when the bucket is full.
        need = min(amount, self.capacity)
        if self.tokens >= need:
            self.tokens -= need
            return 0.0
        return (need - self.tokens) / self.rate


@dataclass
class TenantRateLimiter:
    rate: float
    burst: float
    clock: Clock
    max_tenants: int = 100_000
    _buckets: dict[str, TokenBucket] = field(default_factory=dict)

    def admit(self, tenant: str, records: int) -> float:
        now = self.clock.monotonic()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            if len(self._buckets) >= self.max_tenants:
                # Idle tenants are forgotten first; a forgotten tenant simply starts with a full bucket.
                self._buckets.pop(next(iter(self._buckets)))
            bucket = TokenBucket(self.rate, self.burst, self.burst, now)
            self._buckets[tenant] = bucket
        return bucket.take(records, now)


@dataclass
class InFlightBudget:
    limit: int
    used: int = 0

    def try_reserve(self, amount: int) -> bool:
        if self.used + amount > self.limit:
            return False
        self.used += amount
        return True

    def release(self, amount: int) -> None:
        self.used = max(0, self.used - amount)
