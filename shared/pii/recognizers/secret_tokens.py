"""Self-describing secrets: JSON Web Tokens and PEM private key blocks.

A JWT is three base64url segments whose first decodes to a JSON header naming its algorithm; anything
else that starts with ``eyJ`` (base64 of ``{"``) is left alone. A private key block is masked from its
BEGIN line to its END line, or to the end of the text when the block was cut off: a truncated key is still
a key.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator

from shared.pii.recognizers.base import Finding, TextScan
from shared.pii.recognizers.secret_vendor_keys import SECRET_KIND

JWT = "JWT"
PRIVATE_KEY = "PRIVATE_KEY"
JWT_PRIORITY = 95
PRIVATE_KEY_PRIORITY = 100

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_TOKEN_CHAR = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")
_BEGIN_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_END_PRIVATE_KEY = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")


def is_jwt_header(segment: str) -> bool:
    try:
        header = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        return False
    return header.startswith(b"{") and (b'"alg"' in header or b'"typ"' in header)


class JwtDetector:
    def may_contain(self, scan: TextScan) -> bool:
        return "eyJ" in scan.text

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        at = text.find("eyJ")
        while at >= 0:
            match = _JWT.match(text, at) if at == 0 or text[at - 1] not in _TOKEN_CHAR else None
            if match is not None and is_jwt_header(match.group().split(".", 1)[0]):
                yield Finding(match.start(), match.end(), SECRET_KIND, JWT_PRIORITY, JWT)
                at = text.find("eyJ", match.end())
            else:
                at = text.find("eyJ", at + 1)


class PrivateKeyDetector:
    def may_contain(self, scan: TextScan) -> bool:
        return "-----BEGIN " in scan.text

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        at = text.find("-----BEGIN ")
        while at >= 0:
            begin = _BEGIN_PRIVATE_KEY.match(text, at)
            if begin is None:
                at = text.find("-----BEGIN ", at + 1)
                continue
            end = _END_PRIVATE_KEY.search(text, begin.end())
            stop = end.end() if end is not None else len(text)
            yield Finding(at, stop, SECRET_KIND, PRIVATE_KEY_PRIORITY, PRIVATE_KEY)
            at = text.find("-----BEGIN ", stop)
