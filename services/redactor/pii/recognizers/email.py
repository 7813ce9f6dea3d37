from __future__ import annotations

import re
from collections.abc import Iterator

from services.redactor.pii.recognizers.base import Finding

# Local part and domain per RFC 5321's common subset; the TLD must be letters so "a@b.c1" in code is left.
_EMAIL = re.compile(
    r"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9_%+-])?"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)


class EmailRecognizer:
    kind = "EMAIL"
    placeholder = "<EMAIL>"

    def find(self, text: str) -> Iterator[Finding]:
        if "@" not in text:
            return
        for match in _EMAIL.finditer(text):
            yield Finding(match.start(), match.end(), self.kind, 50)

    def mask(self, value: str) -> str:
        return self.placeholder
