"""API keys and tokens with a vendor's recognisable prefix: Anthropic, OpenAI, AWS, GitHub, Slack, Google,
Stripe; and AWS secret access keys, which have no prefix and are only recognisable in context.

Each format is located by its literal prefix with ``str.find`` and then matched in place, which costs a
fraction of a regular expression over the whole text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from shared.pii.context import CONTEXT_WORDS
from shared.pii.recognizers.base import Finding, TextScan

SECRET_KIND = "SECRET"  # noqa: S105 - the entity kind's name, not a secret
API_KEY = "API_KEY"
VENDOR_KEY_PRIORITY = 95

AWS_SECRET_CONTEXT = CONTEXT_WORDS.define(
    "AWS_SECRET",
    [
        "aws_secret_access_key", "aws secret access key", "secret access key", "secret_access_key",
        "secretaccesskey", "aws secret", "aws_secret", "aws secret key", "secret key", "secret_key",
    ],
)


@dataclass(frozen=True)
class KeyFormat:
    vendor: str
    prefix: str
    pattern: re.Pattern[str]
    # Prefixes shared with ordinary words ("sk-learn-...") need the body to look random.
    needs_random_body: bool = False


_TOKEN_CHAR = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

KEY_FORMATS: tuple[KeyFormat, ...] = (
    KeyFormat("anthropic", "sk-ant-", re.compile(r"sk-ant-[A-Za-z0-9_-]{20,}"), needs_random_body=True),
    KeyFormat(
        "openai", "sk-", re.compile(r"sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"), needs_random_body=True
    ),
    KeyFormat("aws-access-key-id", "AKIA", re.compile(r"AKIA[A-Z0-9]{16}(?![A-Za-z0-9])")),
    KeyFormat("aws-temporary-key-id", "ASIA", re.compile(r"ASIA[A-Z0-9]{16}(?![A-Za-z0-9])")),
    *(KeyFormat("github", f"gh{kind}_", re.compile(rf"gh{kind}_[A-Za-z0-9]{{36,255}}")) for kind in "pousr"),
    KeyFormat("github", "github_pat_", re.compile(r"github_pat_[A-Za-z0-9_]{22,255}")),
    KeyFormat("slack", "xox", re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}")),
    KeyFormat("google", "AIza", re.compile(r"AIza[0-9A-Za-z_-]{35}(?![A-Za-z0-9_-])")),
    *(
        KeyFormat("stripe", f"{kind}_{mode}_", re.compile(rf"{kind}_{mode}_[A-Za-z0-9]{{16,}}"))
        for kind in ("sk", "rk")
        for mode in ("live", "test")
    ),
)

_BASE64_40 = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")
_AWS_KEY_ID = re.compile(r"A(?:KIA|SIA)[A-Z0-9]{16}")
# How far from an access key id a 40-character string is taken as its secret (a credentials file, a CLI dump).
_KEY_PAIR_DISTANCE = 300


def random_looking(body: str) -> bool:
    """At least two of digits, capitals and small letters: generated, not written."""
    classes = (
        any(ch.isdigit() for ch in body),
        any("A" <= ch <= "Z" for ch in body),
        any("a" <= ch <= "z" for ch in body),
    )
    return sum(classes) >= 2


# Formats grouped by the first characters they share ("sk" for Anthropic, OpenAI and Stripe, "gh" for every
# GitHub token), so the text is searched once per group, not once per format.
_GROUPS: dict[str, list[KeyFormat]] = {}
for _format in KEY_FORMATS:
    _GROUPS.setdefault(_format.prefix[:2], []).append(_format)


def _shared_start(prefixes: list[str]) -> str:
    shortest = min(prefixes, key=len)
    for length in range(len(shortest), 0, -1):
        if all(prefix.startswith(shortest[:length]) for prefix in prefixes):
            return shortest[:length]
    return ""


_FORMATS_BY_HEAD = {_shared_start([f.prefix for f in group]): group for group in _GROUPS.values()}


def _match_at(text: str, at: int, formats: list[KeyFormat]) -> Finding | None:
    for key_format in formats:
        if not text.startswith(key_format.prefix, at):
            continue
        match = key_format.pattern.match(text, at)
        if match is not None and (
            not key_format.needs_random_body or random_looking(match.group()[len(key_format.prefix):])
        ):
            return Finding(match.start(), match.end(), SECRET_KIND, VENDOR_KEY_PRIORITY, API_KEY)
    return None


# The shortest key any format above accepts ("AKIA" and 16 characters).
_SHORTEST_KEY = 20


class VendorKeyDetector:
    def may_contain(self, scan: TextScan) -> bool:
        return len(scan.text) >= _SHORTEST_KEY

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        for head, formats in _FORMATS_BY_HEAD.items():
            at = text.find(head)
            while at >= 0:
                end = at + 1
                if at == 0 or text[at - 1] not in _TOKEN_CHAR:
                    found = _match_at(text, at, formats)
                    if found is not None:
                        yield found
                        end = found.end
                at = text.find(head, end)
        yield from self._aws_secret_keys(scan)

    @staticmethod
    def _aws_secret_keys(scan: TextScan) -> Iterator[Finding]:
        text, lower = scan.text, scan.lower
        has_key_id = "AKIA" in text or "ASIA" in text
        if not (has_key_id or "aws" in lower or "secret" in lower):
            return
        key_ids = [m.start() for m in _AWS_KEY_ID.finditer(text)] if has_key_id else []
        for match in _BASE64_40.finditer(text):
            candidate = match.group()
            # A git SHA-1 is 40 hex characters; a secret key is base64 and mixes cases and digits.
            if set(candidate) <= _HEX_CHARS or not random_looking(candidate):
                continue
            start, end = match.span()
            near_key_id = any(abs(position - start) <= _KEY_PAIR_DISTANCE for position in key_ids)
            if near_key_id or scan.has_context(AWS_SECRET_CONTEXT, start, end):
                yield Finding(start, end, SECRET_KIND, VENDOR_KEY_PRIORITY, API_KEY)
