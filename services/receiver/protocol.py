"""OTLP/HTTP answers: success and partial success as Export*ServiceResponse, every failure as google.rpc.Status.

Both are encoded like the request (protobuf or JSON); a request whose Content-Type we cannot read gets
protobuf. Retryable answers (429, 503) carry ``Retry-After`` and a ``google.rpc.RetryInfo`` detail; a 400
carries a ``google.rpc.BadRequest`` detail, as the specification suggests.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache

from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2
from starlette.responses import Response
from starlette.types import Send

from shared import otlp

# Status.message is for developers; a decoder error can quote much of a hostile body, so keep it short.
_MAX_MESSAGE_CHARS = 1024


class Refusal(Exception):
    """A request (or the rest of it) is refused; ``records`` says how many records were known to be lost."""

    def __init__(
        self,
        status: int,
        rpc_code: int,
        message: str,
        reason: str,
        *,
        retry_after: int | None = None,
        records: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.rpc_code = rpc_code
        self.message = message
        self.reason = reason
        self.retry_after = retry_after
        self.records = records
        self.headers = dict(headers or {})


def unsupported_media_type(message: str, reason: str) -> Refusal:
    return Refusal(415, code_pb2.INVALID_ARGUMENT, message, reason)


def bad_data(message: str, reason: str = "malformed") -> Refusal:
    return Refusal(400, code_pb2.INVALID_ARGUMENT, message, reason)


def too_large(message: str) -> Refusal:
    return Refusal(413, code_pb2.INVALID_ARGUMENT, message, "too_large")


def rate_limited(retry_after: int, records: int) -> Refusal:
    return Refusal(429, code_pb2.RESOURCE_EXHAUSTED, "tenant rate limit exceeded", "rate_limited",
                   retry_after=retry_after, records=records)


def unavailable(message: str, reason: str, retry_after: int, records: int = 0) -> Refusal:
    return Refusal(503, code_pb2.UNAVAILABLE, message, reason, retry_after=retry_after, records=records)


# Exporters send the same Content-Type on every request: otlp.media_type's answer for each one seen (a bounded
# number of them), as iterating the Encoding enum for every request was a visible share of the CPU.
_MEDIA_TYPES: dict[str | None, otlp.Encoding | None] = {}
_MAX_MEDIA_TYPES = 256


def media_type(content_type: str | None) -> otlp.Encoding | None:
    """``otlp.media_type``, remembered per Content-Type value."""
    try:
        return _MEDIA_TYPES[content_type]
    except KeyError:
        encoding = otlp.media_type(content_type)
        if len(_MEDIA_TYPES) >= _MAX_MEDIA_TYPES:
            _MEDIA_TYPES.clear()
        _MEDIA_TYPES[content_type] = encoding
        return encoding


def encoding_of(content_type: str | None) -> otlp.Encoding:
    """The encoding of the answer: the request's, or protobuf when the request's is not one we know."""
    return media_type(content_type) or otlp.Encoding.PROTOBUF


class Answer:
    """An answer as the two ASGI messages that carry it, its header list built here once.

    The export routes send it themselves: a Starlette Response would rebuild and re-validate its headers
    and wrap ``send`` for every export, and most exports get the very same success answer.
    """

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, body: bytes, media_type: str, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = [(b"content-length", str(len(body)).encode()), (b"content-type", media_type.encode()),
                        *((name.lower().encode("latin-1"), value.encode("latin-1"))
                          for name, value in (headers or {}).items())]

    async def send(self, send: Send, request_id: str) -> None:
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [*self.headers, (b"x-request-id", request_id.encode())]})
        await send({"type": "http.response.body", "body": self.body})

    def response(self) -> Response:
        """The same answer for Starlette's handlers (404, 405, 500 outside the export routes)."""
        response = Response(self.body, status_code=self.status)
        response.raw_headers = list(self.headers)
        return response


def message_answer(
    message: Message, encoding: otlp.Encoding, status: int = 200, headers: Mapping[str, str] | None = None
) -> Answer:
    return Answer(status, otlp.encode_message(message, encoding), encoding.value, headers)


@cache
def _full_success(signal: str, encoding: otlp.Encoding) -> Answer:
    response = otlp.logs_response() if signal == "logs" else otlp.metrics_response()
    return message_answer(response, encoding)


def success_answer(signal: str, encoding: otlp.Encoding, rejected: int = 0, note: str = "") -> Answer:
    """200 with an Export*ServiceResponse; ``partial_success`` only when something was rejected."""
    if not rejected and not note:
        # The common answer is the same few bytes every time (empty protobuf, ``{}`` in JSON).
        return _full_success(signal, encoding)
    note = note[:_MAX_MESSAGE_CHARS]
    response = otlp.logs_response(rejected, note) if signal == "logs" else otlp.metrics_response(rejected, note)
    return message_answer(response, encoding)


def error_answer(refusal: Refusal, encoding: otlp.Encoding) -> Answer:
    details: list[Message] = []
    headers = dict(refusal.headers)
    if refusal.retry_after is not None:
        headers["Retry-After"] = str(refusal.retry_after)
        details.append(error_details_pb2.RetryInfo(retry_delay={"seconds": refusal.retry_after}))
    if refusal.status == 400:
        details.append(error_details_pb2.BadRequest(
            field_violations=[{"field": "body", "description": refusal.message[:_MAX_MESSAGE_CHARS]}]))
    body = otlp.status_body(refusal.rpc_code, refusal.message[:_MAX_MESSAGE_CHARS], details)
    return message_answer(body, encoding, refusal.status, headers)


def error_response(refusal: Refusal, encoding: otlp.Encoding) -> Response:
    return error_answer(refusal, encoding).response()
