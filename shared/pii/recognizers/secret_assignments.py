"""Secrets given a name: ``password=...``, ``DB_PASSWORD: ...``, ``"api_key": "..."``, ``--token ...``,
``Authorization: Bearer ...``, ``mysql -pSECRET``, ``curl -u user:pass``, and any JSON value whose key says
it is a secret.

Keys are found by their last word (``password``, ``secret``, ``token``, ``api_key``, ...) with ``str.find``
on the lower-cased text, then the separator and value are matched in place. ``max_tokens`` or
``token_count`` are not secret names; values that are placeholders or code (``$DB_PASSWORD``,
``settings.API_KEY``, ``password: str``) are not secrets. Only the value is masked, the key stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache

from shared.pii.recognizers.base import Finding, TextScan
from shared.pii.recognizers.secret_values import is_placeholder, looks_like_code, looks_like_credential
from shared.pii.recognizers.secret_vendor_keys import SECRET_KIND

ASSIGNED_SECRET = "ASSIGNED_SECRET"  # noqa: S105 - a finding's detail label, not a password
# "password: ...", "my password for prod is ...", "Das Passwort für die DB ist ...", "mot de passe est ...",
# "kata sandi adalah ..." (up to five words between the key and the verb).
_VERBS = frozenset({"is", "was", "ist", "est", "adalah", "es", "lautet", "yaitu", "ialah", "era", "zijn", "é", "e"})
_PROSE_SEPARATORS = _VERBS | {":"}
# Words that follow "the password is ..." in prose and are not the password.
_PROSE_WORDS = frozenset(
    {
        "incorrect", "wrong", "invalid", "required", "missing", "expired", "correct", "stored", "hashed", "empty",
        "being", "changed", "reset", "saved", "encrypted", "needed", "optional", "mandatory", "weak", "strong",
        "case", "must", "should", "will", "only", "also", "never", "always", "still", "then", "there", "here",
        "this", "that", "what", "which", "where", "when", "used", "given", "shown", "sent", "known", "set",
        "valid", "blank", "null", "none", "true", "false", "same", "different", "too", "very",
        "long", "short", "simple", "complex", "secure", "insecure", "easy", "hard", "good", "bad", "fine", "okay",
        "safe", "unsafe", "unknown", "compromised", "leaked", "stolen", "old", "new", "temporary", "random",
        "generated", "unique", "common", "obvious", "visible", "hidden", "updated", "rotated",
        "falsch", "ungültig", "erforderlich", "nicht", "leer", "abgelaufen", "richtig", "requis", "invalide",
        "vide", "expiré", "salah", "wajib", "kosong", "tidak", "sudah", "belum", "benar", "kadaluarsa",
    }
)
ASSIGNMENT_PRIORITY = 85

# The last word of a key that names a secret, with "_", "-" and "." removed.
SECRET_KEY_ENDINGS = (
    "password", "passwd", "passphrase", "passcode", "secret", "token", "apikey", "accesskey", "secretkey",
    "privatekey", "authkey", "signingkey", "encryptionkey", "masterkey", "credential", "credentials",
    # German, French ("mot de passe"), Indonesian ("kata sandi"), Spanish.
    "passwort", "kennwort", "passe", "sandi", "contrasena", "contraseña",
    # Dutch, Portuguese.
    "wachtwoord", "senha",
)
# Keys that are a secret's name only when they are the whole key ("pw: ...", "pass: ..."), not a word's end.
_WHOLE_SECRET_KEYS = frozenset({"pwd", "pw", "pass", "passw", "pword"})
# What the key search looks for in the lower-cased text; every ending above contains one of these.
_KEY_TRIGGERS = (
    "pass", "secret", "token", "key", "credential", "pwd", "pw", "kennwort", "sandi", "contrase", "wachtwoord", "senha",
)
_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-ñ")
_NORMALISE_KEY = str.maketrans("", "", "_.-")

_ASSIGNMENT = re.compile(
    r"""(?P<keyquote>\\?["']?)[ \t]*"""
    r"""(?P<separator>=>|:=|=|:|(?:[ \t]+[^\s:=,;.!?]+){0,5}?[ \t]"""
    r"""(?:is|was|ist|est|adalah|es|lautet|yaitu|ialah|era|zijn|é)[ \t]"""
    r"""|[ \t]+(?:(?:saya|ku|kamu|my|mein|meine|mon|mi|mijn|minha)[ \t]+)?)[ \t]*"""
    r"""(?:(?P<quote>\\?["'`])(?P<quoted>[^\n"'`\\]{1,512})(?P=quote)|(?P<bare>[^\s"'`,;<>]{1,512}))""",
)
_FLAG_VALUE = re.compile(
    r"""(?:[ \t]+|=)(?:(?P<quote>["'])(?P<quoted>[^\n"']{1,512})(?P=quote)|(?P<bare>[^\s"']{1,512}))"""
)
_AUTHORIZATION = re.compile(
    r"""(?i:authorization|bearer)(?:["']?[ \t]*[:=][ \t]*["']?)?[ \t]*(?i:(?:bearer|basic|token|digest)[ \t]+)?"""
    r"""(?P<credential>[A-Za-z0-9\-._~+/]{8,}=*)"""
)
_NEXT_PARAMETER = re.compile(r"&[A-Za-z_][\w.\-\[\]]*=")
_MYSQL_PASSWORD = re.compile(r"(?:^|[ \t])-p(?P<bare>[^\s\"']+)")
_SSHPASS = re.compile(r"""sshpass[ \t]+-p[ \t]*(?:(?P<quote>["'])(?P<quoted>[^\n"']+)(?P=quote)|(?P<bare>\S+))""")
_CURL_USER = re.compile(r"""(?:^|[ \t])(?:-u|--user)[ \t=]+["']?[^\s:"']+:(?P<bare>[^\s"']+)""")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a key names a secret ("password", "api_key", "clientSecret"); JSON keys recur, each is read once."""
    normalised = key.lower().translate(_NORMALISE_KEY)
    return normalised.endswith(SECRET_KEY_ENDINGS) or normalised in _WHOLE_SECRET_KEYS


# Any of these in the lower-cased text, or a secret-named JSON key, and there may be a named secret.
_TRIGGERS = (*_KEY_TRIGGERS, "bearer", "authorization", "mysql", "mariadb", "sshpass", "curl")
# The same test with the triggers another one contains left out ("pwd" holds "pw", "sshpass" holds "pass").
_ANY_TRIGGER = tuple(t for t in _TRIGGERS if not any(o != t and o in t for o in _TRIGGERS))


class AssignmentDetector:
    def may_contain(self, scan: TextScan) -> bool:
        if scan.field_name is not None and is_secret_key(scan.field_name):
            return True
        lower = scan.lower
        return any(trigger in lower for trigger in _ANY_TRIGGER)

    def find(self, scan: TextScan) -> Iterator[Finding]:
        if scan.field_name is not None and is_secret_key(scan.field_name):
            yield from self._whole_value(scan)
        lower = scan.lower
        seen_keys: set[int] = set()
        for trigger in _KEY_TRIGGERS:
            at = lower.find(trigger)
            while at >= 0:
                key_start, key_end = _key_around(lower, at, len(trigger))
                if key_start not in seen_keys:
                    seen_keys.add(key_start)
                    found = self._value_after_key(scan, key_start, key_end)
                    if found is not None:
                        yield found
                at = lower.find(trigger, key_end)
        if "bearer" in lower or "authorization" in lower:
            yield from self._authorization(scan)
        if "mysql" in lower or "mariadb" in lower:
            yield from _values(scan, _MYSQL_PASSWORD)
        if "sshpass" in lower:
            yield from _values(scan, _SSHPASS)
        if "curl" in lower and ("-u" in lower or "--user" in lower):
            yield from _values(scan, _CURL_USER)

    @staticmethod
    def _whole_value(scan: TextScan) -> Iterator[Finding]:
        """``{"password": "hunter2"}``: the key already said it, the whole value is the secret."""
        value = scan.text.strip()
        if value and not is_placeholder(value):
            start = scan.text.index(value)
            yield Finding(start, start + len(value), SECRET_KIND, ASSIGNMENT_PRIORITY, ASSIGNED_SECRET)

    @staticmethod
    def _value_after_key(scan: TextScan, key_start: int, key_end: int) -> Finding | None:
        text = scan.text
        key = text[key_start:key_end]
        if not is_secret_key(key):
            return None
        if key.startswith("--"):
            match = _FLAG_VALUE.match(text, key_end)
            separator = "="
        else:
            match = _ASSIGNMENT.match(text, key_end)
            words = match.group("separator").split() if match is not None else []
            # "password is", "password: ", or a plain space (perhaps with "my", "saya"): "" stands for the last.
            separator = words[-1] if words and (words[-1] in _VERBS or not words[-1].isalpha()) else ""
        if match is None:
            return None
        if match.group("quoted") is not None:
            value, start, end = match.group("quoted"), match.start("quoted"), match.end("quoted")
            if is_placeholder(value):
                return None
        else:
            value, start, end = match.group("bare"), match.start("bare"), match.end("bare")
            value = _trim_bare_value(value)
            end = start + len(value)
            if is_placeholder(value) or looks_like_code(value, text[end:end + 1]):
                return None
            # A shell variable (DB_PASSWORD=sunshine) or a flag (--password sunshine) takes its value literally;
            # in code or prose a plain word after "password" is more often a variable or a word.
            if not looks_like_credential(value) and not (
                (_shell_style(key) or separator in _VERBS) and len(value) >= 4 and value.lower() not in _PROSE_WORDS
            ):
                return None
            passcode = key.lower().translate(_NORMALISE_KEY).endswith(("passcode", "password", "passwort", "pin"))
            if separator in _PROSE_SEPARATORS and (
                (value.isdigit() and not passcode) or value.startswith(("/", "~", "./"))
            ):
                return None  # "token: 150000" is a count, "token: ./path" a path: not the secret
            if not separator and not (
                _plain_phrase_value(value) and not match.group("keyquote") and key.isalpha()
                and (key_start == 0 or text[key_start - 1] in " \t\n(\"'")
            ):
                return None  # "password reset", "token expired", "$API_TOKEN": prose or code, not a phrase
        if key.lower().translate(_NORMALISE_KEY).endswith("pwd") and value.startswith(("/", "~")):
            return None
        return Finding(start, end, SECRET_KIND, ASSIGNMENT_PRIORITY, ASSIGNED_SECRET)

    @staticmethod
    def _authorization(scan: TextScan) -> Iterator[Finding]:
        text, lower = scan.text, scan.lower
        for trigger in ("authorization", "bearer"):
            at = lower.find(trigger)
            while at >= 0:
                match = _AUTHORIZATION.match(text, at)
                if match is not None and not is_placeholder(match.group("credential")):
                    credential = match.group("credential")
                    if looks_like_credential(credential) and not looks_like_code(credential, ""):
                        yield Finding(
                            match.start("credential"), match.end("credential"), SECRET_KIND, ASSIGNMENT_PRIORITY,
                            ASSIGNED_SECRET,
                        )
                at = lower.find(trigger, at + len(trigger))


def _plain_phrase_value(value: str) -> bool:
    """After "password" and a space alone ("use password Summer2024!", "Password hunter2 works"): letters and
    digits or symbols together, as passwords are chosen; a word or a number alone is prose."""
    has_letter = any(ch.isalpha() for ch in value)
    has_other = any(ch.isdigit() or not ch.isalnum() for ch in value)
    return (
        len(value) >= 6 and has_letter and has_other and value.lower() not in _PROSE_WORDS
        and "=" not in value and "://" not in value and not value.startswith(("{", "-"))
        and not (value.startswith("$") and (value[1:2].isalpha() or value[1:2] in "{(_"))
    )


def _shell_style(key: str) -> bool:
    return key.startswith("--") or (key.upper() == key and any(ch.isalpha() for ch in key))


def _trim_bare_value(value: str) -> str:
    """An unquoted value ends where the next query parameter starts ("&user=bob") and before a bracket it
    did not open; "Tr0ub4dor&3" keeps its "&"."""
    next_parameter = _NEXT_PARAMETER.search(value)
    if next_parameter is not None:
        value = value[:next_parameter.start()]
    for opener, closer in ("()", "[]", "{}"):
        while value.endswith(closer) and value.count(closer) > value.count(opener):
            value = value[:-1]
    return value


def _key_around(lower: str, at: int, length: int) -> tuple[int, int]:
    """The whole identifier around a trigger word: ``spring.datasource.password``, ``--api-key``."""
    start = at
    while start > 0 and lower[start - 1] in _KEY_CHARS:
        start -= 1
    end = at + length
    while end < len(lower) and lower[end] in _KEY_CHARS:
        end += 1
    # A key ends in a letter or digit; "password." at the end of a sentence is the word "password".
    while end > at + length and lower[end - 1] in "._-":
        end -= 1
    return start, end


def _values(scan: TextScan, pattern: re.Pattern[str]) -> Iterator[Finding]:
    for match in pattern.finditer(scan.text):
        group = "quoted" if "quoted" in pattern.groupindex and match.group("quoted") is not None else "bare"
        value = match.group(group)
        if value and not is_placeholder(value):
            yield Finding(match.start(group), match.end(group), SECRET_KIND, ASSIGNMENT_PRIORITY, ASSIGNED_SECRET)
