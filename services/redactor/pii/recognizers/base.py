"""What every recognizer is: a small, validated object that finds one kind of entity in text."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, order=True)
class Finding:
    start: int
    end: int
    kind: str
    # Higher wins when findings overlap: structured, checksummed ids beat loose patterns.
    priority: int = 0


class Recognizer(Protocol):
    kind: str
    placeholder: str

    def find(self, text: str) -> Iterator[Finding]: ...

    def mask(self, value: str) -> str: ...
