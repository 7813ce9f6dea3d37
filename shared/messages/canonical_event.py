"""The canonical event message: one redacted event, to be chained by the signer.

Topic ``TOPIC_CANONICAL``; key = tenant (the chain); value = ``CanonicalEvent.to_json()``; headers
``event_id`` (the event's id, repeated so it can be read without parsing), optionally ``request_id`` (the
receiver's request, for tracing), and ``auth.key_id``/``auth.mac``: an HMAC (domain ``canonical-event/v1``)
over the event id, the request id and the value. The tenant the signer chains the event to is the
``tenant_id`` inside that authenticated value, so only a holder of an accepted key can add to a chain.

Each authorised producer holds its own key (the redactors share one; another producer, such as the
reporter's access events, gets a second); the signers accept every key in ``CANONICAL_AUTH_KEYRING_FILE``,
each only for the planes and event types its keyring line names (``check_scope``).
"""

from __future__ import annotations

import re
from typing import NamedTuple

from shared.canonical import CanonicalEvent
from shared.messages.auth import KEY_ID_HEADER, MAC_HEADER, AuthenticationFailed, Keyring, KeyScope, MessageKey
from shared.messages.errors import InvalidMessage, quoted
from shared.messages.raw_batch import MAX_HEADER_BYTES, PROVENANCE_PREFIXES, header_map

Headers = list[tuple[str, bytes]]

EVENT_ID = "event_id"
REQUEST_ID = "request_id"
DOMAIN = b"canonical-event/v1"
_ALLOWED = frozenset({EVENT_ID, REQUEST_ID, KEY_ID_HEADER, MAC_HEADER})
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The same patterns over a header's bytes: what they match is ASCII, so it decodes to text the above match.
_EVENT_ID_BYTES = re.compile(_EVENT_ID.pattern.encode())
_REQUEST_ID_BYTES = re.compile(_REQUEST_ID.pattern.encode())
# Stands for the request_id header where a message has none: an empty one, as the MAC covers it.
_NO_REQUEST_ID = (REQUEST_ID, b"")


class CanonicalMessage(NamedTuple):
    """An authenticated canonical message; ``value`` is still to be decoded into a row or an event (a tuple:
    the signer makes one per event, and a frozen dataclass costs several times as much to build)."""

    event_id: str
    request_id: str | None
    value: bytes
    key_id: str
    producer: str
    scope: KeyScope | None = None

    def check_scope(self, plane: object, event_type: object) -> None:
        """Refuse an event its key may not sign: the reporter's key a redacted event, say. The reason names
        the key and its scope (configuration), never the event's values (payload)."""
        if self.scope is None:
            raise InvalidMessage(f"canonical event: key {self.producer or 'unlabelled'} ({self.key_id}) has no "
                                 "scope in the keyring, so it may sign nothing")
        if not self.scope.permits(plane, event_type):
            raise InvalidMessage(f"canonical event: key {self.producer or 'unlabelled'} ({self.key_id}) may not "
                                 f"sign this plane or event type (its scope: {self.scope})")


def encode(event: CanonicalEvent, key: MessageKey, request_id: str | None = None) -> tuple[bytes, bytes, Headers]:
    """Key, value and headers of the message carrying ``event``."""
    value = event.to_json()
    return event.tenant_id.encode(), value, encode_value(event.event_id, value, key, request_id)


def encode_value(event_id: str, value: bytes, key: MessageKey, request_id: str | None = None) -> Headers:
    headers: Headers = [(EVENT_ID, event_id.encode())]
    if request_id is not None:
        headers.append((REQUEST_ID, request_id.encode()))
    return headers + key.headers(DOMAIN, [event_id.encode(), (request_id or "").encode(), value])


def _text(raw: bytes, name: str, pattern: re.Pattern[str]) -> str:
    text = raw.decode("ascii", "replace") if len(raw) <= MAX_HEADER_BYTES else ""
    if pattern.fullmatch(text) is None:
        raise InvalidMessage(f"canonical event header {name} is malformed")
    return text


_new_message = tuple.__new__  # a CanonicalMessage from all its values, without the generated __new__'s keywords


def _decode_usual(value: object, headers: object, keyring: Keyring) -> CanonicalMessage | None:
    """The message as ``encode_value`` writes it (its headers in that order and no other, each a (name, bytes)
    tuple of the right form), once its MAC holds: what ``decode`` gives for it, with less work. None for any
    other message, which ``decode`` then reads header by header and accepts or refuses."""
    if (type(value) is not bytes or not value or (type(headers) is not list and type(headers) is not tuple)
            or not 3 <= len(headers) <= 4):
        return None
    if len(headers) == 3:
        event_pair, key_pair, mac_pair = headers
        request_pair = _NO_REQUEST_ID
    else:
        event_pair, request_pair, key_pair, mac_pair = headers
    if not (type(event_pair) is tuple and type(request_pair) is tuple and type(key_pair) is tuple
            and type(mac_pair) is tuple and len(event_pair) == 2 and len(request_pair) == 2 and len(key_pair) == 2
            and len(mac_pair) == 2):
        return None
    (event_name, raw_event_id), (request_name, raw_request_id) = event_pair, request_pair
    (key_name, key_id), (mac_name, mac) = key_pair, mac_pair
    if not (type(event_name) is str and type(request_name) is str and type(key_name) is str
            and type(mac_name) is str and event_name == EVENT_ID and request_name == REQUEST_ID
            and key_name == KEY_ID_HEADER and mac_name == MAC_HEADER and type(raw_event_id) is bytes
            and type(raw_request_id) is bytes and type(key_id) is bytes and type(mac) is bytes):
        return None
    if request_pair is _NO_REQUEST_ID:
        request_id = None
    elif _REQUEST_ID_BYTES.fullmatch(raw_request_id) is None:
        return None
    else:
        request_id = raw_request_id.decode("ascii")
    key = keyring.key_of(key_id)
    if (key is None or _EVENT_ID_BYTES.fullmatch(raw_event_id) is None
            or not key.made(mac, DOMAIN, (raw_event_id, raw_request_id, value))):
        return None
    return _new_message(
        CanonicalMessage, (raw_event_id.decode("ascii"), request_id, value, key.key_id, key.label, key.scope))


def decode(value: object, headers: object, keyring: Keyring) -> CanonicalMessage:
    """The message once its headers are well formed and its MAC holds; ``InvalidMessage`` otherwise."""
    usual = _decode_usual(value, headers, keyring)
    return usual if usual is not None else _decode_any(value, headers, keyring)


def _decode_any(value: object, headers: object, keyring: Keyring) -> CanonicalMessage:
    """``decode`` header by header: any order, provenance headers, and the reason for a refusal."""
    named = header_map(headers)
    if not _ALLOWED.issuperset(named):
        for name in named:
            if name not in _ALLOWED and not name.startswith(PROVENANCE_PREFIXES):
                raise InvalidMessage(f"canonical event has an unexpected header {quoted(name)}")
    if not isinstance(value, bytes) or not value:
        raise InvalidMessage("canonical event has no value")
    raw_event_id = named.get(EVENT_ID)
    if raw_event_id is None:
        raise InvalidMessage("canonical event has no event_id header")
    event_id = _text(raw_event_id, EVENT_ID, _EVENT_ID)
    raw_request_id = named.get(REQUEST_ID)
    request_id = None if raw_request_id is None else _text(raw_request_id, REQUEST_ID, _REQUEST_ID)
    key_id, mac = named.get(KEY_ID_HEADER), named.get(MAC_HEADER)
    try:
        key = keyring.verify(
            None if key_id is None else key_id.decode("ascii", "replace"),
            None if mac is None else mac.decode("ascii", "replace"),
            DOMAIN,
            # The header's own bytes: the text was checked to be ASCII, so it encodes to them.
            (raw_event_id, raw_request_id or b"", value),
        )
    except AuthenticationFailed as exc:
        raise InvalidMessage(f"canonical event: {exc}") from None
    return _new_message(CanonicalMessage, (event_id, request_id, value, key.key_id, key.label, key.scope))


def decode_event(value: object, headers: object, keyring: Keyring) -> CanonicalEvent:
    """The event itself, for consumers other than the signer (which decodes rows on its own fast path)."""
    message = decode(value, headers, keyring)
    try:
        event = CanonicalEvent.from_json(message.value)
    except (ValueError, TypeError, KeyError, RecursionError, OverflowError) as exc:
        raise InvalidMessage(f"canonical event is malformed ({type(exc).__name__})") from None
    if event.event_id != message.event_id:
        raise InvalidMessage("canonical event's event_id differs from its header")
    return event
