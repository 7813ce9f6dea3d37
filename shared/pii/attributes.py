"""Attribute maps (OTLP resource and data-point attributes) redacted like content, for any service.

Keys and string values are both scanned; nested lists and maps are walked. Fail closed: when detection is
unavailable (no engine, an error, the time budget) a value is replaced by ``WITHHELD`` and a key by
``WITHHELD_KEY`` (numbered, so no value is lost), never kept in clear.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

WITHHELD = "[content withheld: detection unavailable]"
WITHHELD_KEY = "[key withheld: detection unavailable]"


class _Redaction(Protocol):
    text: str
    counts: Mapping[str, int]


class TextRedactor(Protocol):
    def redact_text(self, text: str) -> Any: ...


def _text(engine: TextRedactor | None, text: str, counts: Counter[str]) -> str | None:
    if engine is None:
        counts["WITHHELD"] += 1
        return None
    try:
        result = engine.redact_text(text)
    except Exception:
        counts["WITHHELD"] += 1
        return None
    for kind, n in result.counts.items():
        counts[kind] += int(n)
    return str(result.text)


def redact_value(engine: TextRedactor | None, value: Any, counts: Counter[str]) -> Any:
    if isinstance(value, str):
        masked = _text(engine, value, counts)
        return WITHHELD if masked is None else masked
    if isinstance(value, list):
        return [redact_value(engine, item, counts) for item in value]
    if isinstance(value, dict):
        return redact_attributes(engine, value, counts)
    return value


def redact_attributes(engine: TextRedactor | None, attributes: Mapping[str, Any],
                      counts: Counter[str] | None = None) -> dict[str, Any]:
    """A copy of ``attributes`` with every key and string value masked; ``counts`` collects what was found."""
    counts = counts if counts is not None else Counter()
    out: dict[str, Any] = {}
    for key, value in attributes.items():
        masked_key = _text(engine, key, counts)
        safe_key = WITHHELD_KEY if masked_key is None else masked_key
        if safe_key != key:
            base, number = safe_key, 2
            while safe_key in out:
                safe_key, number = f"{base}#{number}", number + 1
        out[safe_key] = redact_value(engine, value, counts)
    return out
