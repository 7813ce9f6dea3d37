"""Passwords in URLs and connection strings: ``postgres://app:s3cret@db:5432/x`` -> ``app:<SECRET>@db``.

Only the password is masked: the scheme, user and host are what an auditor needs to read. A password may
itself contain an unencoded "@"; the authority ends at the last "@" before the path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from shared.pii.recognizers.base import Finding, TextScan
from shared.pii.recognizers.secret_values import is_placeholder
from shared.pii.recognizers.secret_vendor_keys import SECRET_KIND

URL_PASSWORD = "URL_PASSWORD"  # noqa: S105 - a finding's detail label, not a password
URL_PASSWORD_PRIORITY = 90

_USERINFO = re.compile(r"[^\s:/@?#\"'`]*:(?P<password>[^\s/?#\"'`]+)@(?=[A-Za-z0-9\[])")
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-")


class UrlCredentialDetector:
    def may_contain(self, scan: TextScan) -> bool:
        return "://" in scan.text and "@" in scan.text

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        at = text.find("://")
        while at >= 0:
            if at > 0 and text[at - 1] in _SCHEME_CHARS:
                match = _USERINFO.match(text, at + 3)
                if match is not None and not is_placeholder(match.group("password")):
                    yield Finding(
                        match.start("password"), match.end("password"), SECRET_KIND, URL_PASSWORD_PRIORITY,
                        URL_PASSWORD,
                    )
            at = text.find("://", at + 3)
