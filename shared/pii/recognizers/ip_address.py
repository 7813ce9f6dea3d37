"""IPv4 and IPv6 addresses, validated with the standard library's ``ipaddress``.

A bare valid dotted quad is an IPv4 address, whatever it is used for. What is not: versions (``2.1.332``,
``v1.2.3.4``), longer dotted numbers (``1.2.3.4.5``, OIDs), octets over 255 or with leading zeros.
IPv6 candidates are found from the colons in the text; clock times (``16:11:51``), MAC addresses and
``std::vector``-style paths never validate or never reach validation.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from shared.pii.recognizers.base import Finding, TextScan, joined_to_word

_DOTTED_QUAD = re.compile(r"(?<![\d.])\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?!\d)")
_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_OR_COLON = _HEX | {":"}
_IPV6_BODY = re.compile(r"[0-9A-Fa-f:.]*")
_DIGITS = frozenset("0123456789")
# Six colons with only hex digits and dots between them: an uncompressed candidate below has at least that.
_SIX_COLON_RUN = re.compile(r":(?:[0-9A-Fa-f.]*:){5}")


def is_ipv4(candidate: str) -> bool:
    try:
        ipaddress.IPv4Address(candidate)
    except ValueError:
        return False
    return True


def is_ipv6(candidate: str) -> bool:
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


# "version 4.3.2.1", "Version: 10.2.0.1", "numpy==1.2.3.4", "lodash@^4.17.21.1", '"version": "4.3.2.1"': a dotted
# quad right after a version word or a version operator is a version, not an address.
_VERSION_BEFORE = re.compile(
    r"(?:\b(?:v|ver|version|versions|versión|versie|versi|release|rel|build|rev|revision|tag|firmware|"
    r"kernel|driver)\b[\"']?\s*[:=]?\s*[\"']?"
    r"|(?:==|>=|<=|~=|!=|===|\^|~|>|<)\s*)v?$",
    re.IGNORECASE,
)


def _version_before(text: str, start: int) -> bool:
    return _VERSION_BEFORE.search(text[max(0, start - 24):start]) is not None


class IpAddressRecognizer:
    kind = "IP_ADDRESS"
    placeholder = "<IP_ADDRESS>"
    priority = 50

    def may_contain(self, scan: TextScan) -> bool:
        return bool(scan.numeric_runs) or "::" in scan.text or scan.text.count(":") >= 7

    def find(self, scan: TextScan) -> Iterator[Finding]:
        yield from self._ipv4(scan)
        yield from self._ipv6(scan)

    def _ipv4(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        for run in scan.runs_with_digits(4):
            if text.count(".", run.start, run.end) < 3:
                continue
            for match in _DOTTED_QUAD.finditer(text, run.start, run.end + 1):
                start, end = match.span()
                if joined_to_word(text, start, end):
                    continue
                # "1.2.3.4.5": the dotted number goes on past the quad.
                if end + 1 < len(text) and text[end] == "." and text[end + 1].isdigit():
                    continue
                if _version_before(text, start):
                    continue
                if is_ipv4(match.group()):
                    yield Finding(start, end, self.kind, self.priority, "IPV4")

    def _ipv6(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        # An IPv6 address is compressed ("::") or has all eight groups (seven colons). Without "::", a candidate
        # is a run of hex digits, dots and six colons or more: JSON and log lines have colons enough, seldom
        # such a run, and the walk from colon to colon below is then skipped.
        if "::" not in text and (text.count(":") < 7 or _SIX_COLON_RUN.search(text) is None):
            return
        length = len(text)
        colon = text.find(":")
        while colon >= 0:
            left = text[colon - 1] if colon > 0 else ""
            right = text[colon + 1] if colon + 1 < length else ""
            if left not in _HEX_OR_COLON and right not in _HEX_OR_COLON:
                colon = text.find(":", colon + 1)
                continue
            # The first group has at most four hex digits before the first colon.
            start = colon
            while start > 0 and colon - start < 4 and text[start - 1] in _HEX:
                start -= 1
            body = _IPV6_BODY.match(text, colon)
            end = body.end() if body is not None else colon + 1
            # A sentence may end right after an address: "... from fe80::1." or "fe80::1: refused".
            while end > colon + 1 and text[end - 1] in ".:" and text[end - 2] != ":":
                end -= 1
            candidate = text[start:end]
            if (
                ("::" in candidate or candidate.count(":") >= 6)
                and not _DIGITS.isdisjoint(candidate)
                and not joined_to_word(text, start, end)
                and is_ipv6(candidate)
            ):
                yield Finding(start, end, self.kind, self.priority, "IPV6")
            colon = text.find(":", max(end, colon + 1))

    def mask(self, value: str) -> str:
        return self.placeholder
