"""Per-tenant detection posture, read from PostgreSQL and refreshed in the background.

A tenant without a posture row gets every registered category. A posture that turns detection off does not
let content through: the transform withholds it (fail closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.canonicalize.transform import TextRedactor

log = logging.getLogger("redactor")

ACTIONS = frozenset({"block", "redact", "warn", "log"})


@dataclass(frozen=True)
class Posture:
    detection_enabled: bool
    categories: Mapping[str, str]  # kind -> action; the collector masks whatever the action


def parse_posture(enabled: bool, categories: Any) -> Posture:
    if isinstance(categories, str):
        categories = json.loads(categories)
    if not isinstance(categories, dict):
        raise ValueError("categories must be a JSON object of kind -> action")
    bad = {k: v for k, v in categories.items() if v not in ACTIONS}
    if bad:
        raise ValueError(f"unknown actions {bad}; allowed: {sorted(ACTIONS)}")
    return Posture(enabled, dict(categories))


EngineFactory = Callable[[frozenset[str] | None], TextRedactor]


class PostureBook:
    """Maps a tenant to the engine its posture asks for; engines are shared between equal postures."""

    def __init__(self, engine_factory: EngineFactory, *, globally_enabled: bool) -> None:
        self._factory = engine_factory
        self._globally_enabled = globally_enabled
        self._postures: dict[str, Posture] = {}
        self._engines: dict[frozenset[str] | None, TextRedactor] = {}

    def replace(self, postures: Mapping[str, Posture]) -> None:
        self._postures = dict(postures)

    def engine_for(self, tenant: str) -> TextRedactor | None:
        """None means: detection is unavailable for this tenant, so its content is withheld."""
        if not self._globally_enabled:
            return None
        posture = self._postures.get(tenant)
        if posture is not None and not posture.detection_enabled:
            return None
        kinds = None if posture is None else frozenset(posture.categories)
        engine = self._engines.get(kinds)
        if engine is None:
            try:
                engine = self._factory(kinds)
            except ValueError as exc:
                # A posture naming a category we cannot detect must not let that category through.
                log.error(
                    "posture names an unknown category; withholding content",
                    extra={"tenant": tenant, "error": str(exc)},
                )
                return None
            self._engines[kinds] = engine
        return engine


async def load_postures(conn: asyncpg.Connection) -> dict[str, Posture]:
    postures = {}
    for row in await conn.fetch("SELECT tenant_id, detection_enabled, categories FROM detection_postures"):
        try:
            postures[row["tenant_id"]] = parse_posture(row["detection_enabled"], row["categories"])
        except ValueError as exc:
            log.error(
                "invalid posture, detection treated as off", extra={"tenant": row["tenant_id"], "error": str(exc)}
            )
            postures[row["tenant_id"]] = Posture(False, {})
    return postures


async def refresh_postures(
    book: PostureBook, dsn: str, interval: float, stop: asyncio.Event, loaded: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn)
            try:
                book.replace(await load_postures(conn))
                loaded.set()
            finally:
                await conn.close()
        except Exception as exc:
            # Any failure keeps the last postures in force (the engine masks every kind until the first load).
            log.warning("could not refresh detection postures", extra={"error": repr(exc)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
