"""What the operator tools ask PostgreSQL: which event ids are chained already."""

from __future__ import annotations

from collections.abc import Collection

import asyncpg

_CHUNK = 5_000


class PostgresChainedIds:
    """Looks event ids up in ``audit_logs`` (unique index on event_id), in chunks of a few thousand."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def existing(self, event_ids: Collection[str]) -> set[str]:
        ids = list(event_ids)
        found: set[str] = set()
        async with self._pool.acquire() as conn:
            for i in range(0, len(ids), _CHUNK):
                rows = await conn.fetch("SELECT event_id FROM audit_logs WHERE event_id = ANY($1::text[])",
                                        ids[i:i + _CHUNK])
                found.update(row["event_id"] for row in rows)
        return found
