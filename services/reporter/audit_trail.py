"""The reporter's side of the access trail: each answer that disclosed content or proofs is recorded as an
access event on the canonical topic before the answer leaves (the signer chains and signs it).

Fail closed: if the broker does not acknowledge within REPORTER_ACCESS_AUDIT_TIMEOUT_SECONDS (or the
producer is not started), the read is refused with 503 and nothing is disclosed.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka.errors import KafkaError
from starlette.datastructures import QueryParams
from starlette.types import Scope

from services.reporter.authz import DISCLOSURE_KEY, Principal, Refusal, Rule
from shared.access_events import AccessRead, access_event
from shared.clock import Clock
from shared.kafka import MessageProducer
from shared.messages import canonical_event
from shared.messages.auth import MessageKey
from shared.pipeline import describe

log = logging.getLogger("reporter.access")
_MAX_QUERY_VALUE = 512


class AccessTrail:
    def __init__(self, topic: str, timeout_seconds: float, clock: Clock, key: MessageKey) -> None:
        self.topic = topic
        self.key = key  # the reporter's own canonical-event key: the signers' keyring accepts it
        self.timeout_seconds = timeout_seconds
        self.clock = clock
        self.producer: MessageProducer | None = None  # set once started
        self.recorded = 0
        self.refused = 0

    @property
    def ready(self) -> bool:
        return self.producer is not None

    async def record(self, scope: Scope, principal: Principal, rule: Rule, status: int) -> None:
        """Send the access event and wait for the broker's acknowledgement, or raise Refusal(503)."""
        details = scope.get(DISCLOSURE_KEY, {})
        client = scope.get("client")
        query = QueryParams(scope.get("query_string", b"").decode("latin-1"))
        read = AccessRead(
            tenant_id=principal.tenant_id, org_id=principal.org_id, subject=principal.subject,
            credential=principal.credential, role=principal.role, user_email=principal.user_email,
            method=scope["method"], endpoint=scope["path"], route=rule.path,
            query={k: v[:_MAX_QUERY_VALUE] for k, v in query.items()},
            disclosed=rule.discloses.value if rule.discloses else "content",
            record_ids=[int(i) for i in details.get("record_ids", [])], rows=details.get("rows"),
            session_id=details.get("session_id"), client_address=client[0] if client else None, status=status,
        )
        event = access_event(read, self.clock.now())
        producer = self.producer
        if producer is None:
            self.refused += 1
            raise Refusal(503, "the access trail is not connected to the broker yet; the read is refused so that "
                               "nothing is disclosed unaudited. Retry shortly", "audit_unavailable",
                          headers={"Retry-After": "5"})
        key, value, headers = canonical_event.encode(event, self.key)
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await (await producer.send(self.topic, value, key=key, headers=headers))
        except (KafkaError, TimeoutError, OSError) as exc:
            self.refused += 1
            log.warning("access event not acknowledged; read refused", extra={"error": describe(exc)})
            raise Refusal(503, "the access trail (broker) is unavailable; the read is refused so that nothing is "
                               "disclosed unaudited. Retry shortly", "audit_unavailable",
                          headers={"Retry-After": "5"}) from None
        self.recorded += 1
