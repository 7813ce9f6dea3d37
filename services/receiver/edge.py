"""Plain ASGI middleware at the edge of the receiver: request timing, and draining unread request bodies.

Why drain: an answer sent before the request body was read (a 401, a 413 from a gzip bomb, a 503) makes
the server close the connection with unread bytes in its receive buffer, and the kernel then resets it;
the client often sees "connection reset" instead of the status code. Reading what is left, up to a cap,
lets the answer arrive and the connection be reused. A body declared larger than the cap is not read:
that client gets the answer and a closed connection.

One class for both jobs, because each ASGI layer costs a little. The export routes do not pass through
it: their endpoint (services/receiver/ingest.py, IngestEndpoint) times and drains its requests itself.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.receiver.metrics import ReceiverMetrics

_KNOWN_ROUTES = frozenset({"/v1/logs", "/v1/metrics", "/healthz", "/readyz"})


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, metrics: ReceiverMetrics, max_drain_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_drain_bytes = max_drain_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        route = path if path in _KNOWN_ROUTES else "other"  # unknown paths must not grow the label set
        body_done = False

        async def tracking_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_done = True
            return message

        async def edge_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if not body_done and self._worth_draining(scope):
                    drained = 0
                    while not body_done and drained <= self.max_drain_bytes:
                        drained += len((await tracking_receive()).get("body", b""))
                self.metrics.request_done(route, message["status"], time.perf_counter() - started)
            await send(message)

        await self.app(scope, tracking_receive, edge_send)

    def _worth_draining(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                return bool(value.isdigit()) and int(value) <= self.max_drain_bytes
        return True  # chunked (or no body): read up to the cap
