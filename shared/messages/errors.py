"""The one exception every message decoder raises for a message that can never be processed."""

from __future__ import annotations


class InvalidMessage(ValueError):
    """Permanent: the message is malformed, unauthenticated or forged. The reason never quotes payload text."""


def quoted(text: str, limit: int = 40) -> str:
    """A header name or other short, non-content token, clipped and escaped for a dead-letter reason."""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))
