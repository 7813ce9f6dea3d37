"""What a secret value looks like, shared by the secret detectors: placeholders and code are not secrets.

``password=$DB_PASSWORD``, ``token: <your token>``, ``api_key=settings.API_KEY`` or ``password: str`` show
where a secret goes, not the secret; masking them would only hide the code. A real credential is random
or chosen to be hard to guess, so it has digits, symbols or mixed case.
"""

from __future__ import annotations

import re

_PLACEHOLDER_WORDS = frozenset(
    {
        "", "null", "none", "nil", "true", "false", "undefined", "string", "str", "bytes", "bool", "int",
        "optional", "required", "secret", "redacted", "[redacted]", "<redacted>", "<secret>", "hidden",
        "empty", "omitted", "n/a", "na", "todo", "xxx", "***", "...", "…",
    }
)
# "$DB_PASSWORD" or "$token" is a variable too (checked below); a password may start with "$" ("$xY9!abc").
_PLACEHOLDER_STARTS = ("${", "$(", "{", "<", "#{", "process.env", "os.environ", "env(", "getenv")

_MASK_CHARS = frozenset("*xX•.·-_ ")
_DOTTED_IDENTIFIER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+")
# API_KEY, TOKEN (constants and environment variables); api_key, db_password (snake_case); apiKey (camelCase);
# SecretStr, HashedPassword (type names); settings.API_KEY (attributes).
_CODE_NAMES = (
    re.compile(r"[A-Z]+(?:_[A-Z0-9]+)*"),
    re.compile(r"_?[a-z]+(?:_[a-z0-9]+)+"),
    re.compile(r"[a-z]+(?:[A-Z][a-z]+)+"),
    re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]+)+"),
    re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+"),
)
_PLAIN_WORD = re.compile(r"[a-z]{2,}")
# get_token(), os.Getenv( (cut at a quoted argument), config[, items[0]; STRIPE_KEY).id (end of an argument list).
_CALL_OR_LOOKUP = re.compile(r"[A-Za-z_][\w.]*(?:\([^()\[\]]*\)|\[[^()\[\]]*\]|[(\[])")
_NAME_THEN_CLOSER = re.compile(r"([A-Za-z_][\w.]*)[)\]}]")
_PRINTF = re.compile(r"%[sd]|%\(\w+\)[sd]")


def is_placeholder(value: str) -> bool:
    stripped = value.strip()
    lowered = stripped.lower()
    if lowered in _PLACEHOLDER_WORDS or lowered.startswith(_PLACEHOLDER_STARTS) or _PRINTF.fullmatch(stripped):
        return True
    if stripped.startswith("$") and (_PLAIN_WORD.fullmatch(stripped[1:]) or _is_code_name(stripped[1:])):
        return True
    # Already masked: "********", "xxxxxxxx", "•••".
    return len(stripped) >= 3 and set(stripped) <= _MASK_CHARS


def looks_like_code(value: str, next_char: str) -> bool:
    """``settings.API_KEY``, ``get_token()``, ``os.Getenv(``, ``STRIPE_KEY).id``, ``SecretStr``: code, not a secret.

    A call or lookup is a name and a bracket that closes or is cut off by a quoted argument; a random
    password with a bracket in it ("dlVI_BLcG5(BL", "LZMMS)Yt)R") has neither shape.
    """
    if next_char and next_char in "([":
        return _PLAIN_WORD.fullmatch(value) is not None or _is_code_name(value)
    call = _CALL_OR_LOOKUP.fullmatch(value)
    if call is not None:
        return True
    closed = _NAME_THEN_CLOSER.match(value)
    if closed is not None:
        name = closed.group(1)
        return _PLAIN_WORD.fullmatch(name) is not None or (_is_code_name(name) and ("_" in name or "." in name))
    return _is_code_name(value)


def _is_code_name(value: str) -> bool:
    return any(pattern.fullmatch(value) for pattern in _CODE_NAMES)


def looks_like_credential(value: str) -> bool:
    """Digits, symbols or mixed case, and not a placeholder; short numbers (counts, limits) are not."""
    if len(value) < 4 or is_placeholder(value):
        return False
    if value.isdigit():
        return len(value) >= 6
    has_digit = any(ch.isdigit() for ch in value)
    has_symbol = any(not ch.isalnum() for ch in value)
    mixed_case = value.lower() != value and value.upper() != value
    return has_digit or has_symbol or mixed_case
