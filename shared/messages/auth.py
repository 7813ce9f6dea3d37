"""Message authentication between stages: HMAC-SHA256 with keys that only the two ends of a topic hold.

Anyone who can write to the broker can write any topic. So the stage that produces a message the next stage
acts on authenticates it, and the consumer refuses (dead-letters) what it cannot verify:

- raw batches: the receiver authenticates; the redactors and the usage consumer verify;
- canonical events: each authorised producer (the redactor; any later producer with its own key)
  authenticates; the signers verify against a keyring of every producer key they accept.

A key file holds one key a line: the base64 of at least 32 random bytes, optionally followed by a label
(``redactor``, ``reporter``) that only shows in logs and dead letters. A producer signs with the first key of
its file; a consumer accepts every key of its file, so keys rotate by adding the new key to the consumers' files first,
then putting it first in the producer's, then removing the old one. A key's id is a fingerprint of it, sent
in the ``auth.key_id`` header next to the MAC in ``auth.mac``; it names the key without revealing it.

The signers' canonical keyring also says what each key may sign (``KeyScope``): every line there carries
``planes=`` and ``event_types=``, each a comma-separated list of names the key may sign (``planes=access``) or
``!`` and the names it may not (``planes=!access,erasure``: any plane but those). So the reporter's key signs
only access events, auditctl's only erasures, and the redactors' anything but those; a key's reach is
configuration, checked when the keyring is loaded, and an event outside it is dead-lettered.

The MAC covers a domain label (so a raw batch can never pass as a canonical event, nor a logs batch as a
metrics batch) and a list of fields, each prefixed by its length, so no two field lists share bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING

from shared.access_events import ACCESS_EVENT_TYPE, ACCESS_PLANE
from shared.erasure import ERASURE_EVENT_TYPE, ERASURE_PLANE
from shared.keys import KeyMaterialError, read_private_file

if TYPE_CHECKING:
    from hashlib import _Hash  # the type of a hash object, which hashlib does not export

KEY_ID_HEADER = "auth.key_id"
MAC_HEADER = "auth.mac"
MIN_KEY_BYTES = 32
MAX_KEY_BYTES = 1024
_KEY_ID_CONTEXT = b"audit-message-key\x00"
_MAC_HEX_LENGTH = 64
_KEY_ID_LENGTH = 16
_JOIN_BELOW = 4096
_length = struct.Struct(">Q").pack  # each field's length, before it: 8 bytes, big-endian
_MAX_SCOPE_PAIRS = 1_024  # fields up to this size are joined and fed to the MAC at once, larger ones fed alone


_SHA256_BLOCK = 64


class KeyMaterial(bytes):
    """Bytes that give away a key (its HMAC pads): never shown by ``repr`` or ``str``, so a log line or a
    traceback that holds them does not leak the key."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes of key material>"

    __str__ = __repr__


def _keyed_prefixes(secret: bytes, domain: bytes) -> tuple[KeyMaterial, KeyMaterial]:
    """What the inner and outer SHA-256 of HMAC-SHA256 under ``secret`` hash first (RFC 2104): the key's inner
    pad and then ``domain``, and the key's outer pad."""
    block = hashlib.sha256(secret).digest() if len(secret) > _SHA256_BLOCK else secret
    block = block.ljust(_SHA256_BLOCK, b"\x00")
    return (KeyMaterial(bytes(byte ^ 0x36 for byte in block) + domain),
            KeyMaterial(bytes(byte ^ 0x5C for byte in block)))


def _keyed_states(secret: bytes, domain: bytes) -> tuple[_Hash, _Hash]:
    """The inner (fed ``domain``) and outer SHA-256 states of HMAC-SHA256 under ``secret``."""
    inner, outer = _keyed_prefixes(secret, domain)
    return hashlib.sha256(inner), hashlib.sha256(outer)


# A key in one domain, as the signer's compiled decoding keys its HMAC from it (_keyed_prefixes: its inner pad
# and the domain, its outer pad), its scope and that scope's answers (KeyScope.answers).
KeyStates = tuple[KeyMaterial, KeyMaterial, "KeyScope | None", "dict[tuple[str, str], bool] | None"]

_SCOPE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")
_SCOPE_FIELDS = ("planes", "event_types")


class KeyFileError(Exception):
    """A key file is missing or unusable; the service stops at start-up with this message."""


@dataclass(frozen=True)
class NameSet:
    """Names a key may sign: exactly ``names``, or (``excluding``) every name but ``names``."""

    names: frozenset[str]
    excluding: bool = False

    @classmethod
    def parse(cls, text: str) -> NameSet:
        excluding = text.startswith("!")
        names = text[1:] if excluding else text
        parts = names.split(",")
        if not names or any(_SCOPE_NAME.fullmatch(part) is None for part in parts):
            raise ValueError(f"{text!r} is not a comma-separated list of names (lower case), optionally after '!'")
        return cls(frozenset(parts), excluding)

    def admits(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.names) != self.excluding

    def __str__(self) -> str:
        return ("!" if self.excluding else "") + ",".join(sorted(self.names))


@dataclass(frozen=True)
class KeyScope:
    """The canonical events a key may sign: its plane and its event type must both be admitted."""

    planes: NameSet
    event_types: NameSet
    # (plane, event type) -> permitted, for the names seen: a producer sends a few pairs over and over.
    _seen: dict[tuple[str, str], bool] = dataclass_field(default_factory=dict, init=False, compare=False,
                                                          repr=False, hash=False)

    @classmethod
    def parse(cls, options: dict[str, str]) -> KeyScope:
        missing = [name for name in _SCOPE_FIELDS if name not in options]
        if missing:
            raise ValueError(f"has no {' and no '.join(name + '=' for name in missing)} (what the key may sign)")
        return cls(NameSet.parse(options["planes"]), NameSet.parse(options["event_types"]))

    @property
    def answers(self) -> dict[tuple[str, str], bool]:
        """What ``permits`` answered, by (plane, event type); a pair not in it is for ``permits`` to answer."""
        return self._seen

    def permits(self, plane: object, event_type: object) -> bool:
        if type(plane) is str and type(event_type) is str:
            pair = (plane, event_type)
            permitted = self._seen.get(pair)
            if permitted is None:
                if len(self._seen) >= _MAX_SCOPE_PAIRS:
                    self._seen.clear()
                permitted = self._seen[pair] = self.planes.admits(plane) and self.event_types.admits(event_type)
            return permitted
        return self.planes.admits(plane) and self.event_types.admits(event_type)

    def __str__(self) -> str:
        return f"planes={self.planes} event_types={self.event_types}"


# What each canonical producer may emit: the reporter only its access records, auditctl only erasures, and the
# redactors everything else, so no producer can forge another's records (the reporter is internet-facing).
_RESERVED_PLANES = frozenset({ACCESS_PLANE, ERASURE_PLANE})
_RESERVED_EVENT_TYPES = frozenset({ACCESS_EVENT_TYPE, ERASURE_EVENT_TYPE})
REDACTOR_SCOPE = KeyScope(NameSet(_RESERVED_PLANES, excluding=True), NameSet(_RESERVED_EVENT_TYPES, excluding=True))
REPORTER_SCOPE = KeyScope(NameSet(frozenset({ACCESS_PLANE})), NameSet(frozenset({ACCESS_EVENT_TYPE})))
AUDITCTL_SCOPE = KeyScope(NameSet(frozenset({ERASURE_PLANE})), NameSet(frozenset({ERASURE_EVENT_TYPE})))


@dataclass(frozen=True)
class MessageKey:
    key_id: str
    secret: bytes
    label: str = ""
    scope: KeyScope | None = None  # canonical keyring entries only: what events the key may sign
    _primed: dict[bytes, tuple[_Hash, _Hash]] = dataclass_field(default_factory=dict, init=False, compare=False,
                                                                  repr=False)

    @classmethod
    def of(cls, secret: bytes, label: str = "", scope: KeyScope | None = None) -> MessageKey:
        if not MIN_KEY_BYTES <= len(secret) <= MAX_KEY_BYTES:
            raise ValueError(f"a message key has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
        return cls(hashlib.sha256(_KEY_ID_CONTEXT + secret).hexdigest()[:_KEY_ID_LENGTH], secret, label, scope)

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"MessageKey(key_id={self.key_id!r}, label={self.label!r}, scope={str(self.scope)!r})"

    def describe(self) -> str:
        return f"{self.label or 'unlabelled'} ({self.key_id})"

    def mac(self, domain: bytes, fields: Sequence[bytes]) -> str:
        return self._digest(domain, fields).hex()

    def made(self, mac: bytes, domain: bytes, fields: Sequence[bytes]) -> bool:
        """Whether ``mac`` (a header's bytes) is exactly the MAC this key gives ``fields``, as ``mac`` writes it."""
        return hmac.compare_digest(binascii.hexlify(self._digest(domain, fields)), mac)

    def keyed_prefixes(self, domain: bytes) -> tuple[KeyMaterial, KeyMaterial]:
        """What the inner and outer SHA-256 of this key's MACs in ``domain`` hash first (its pads, the domain)."""
        return _keyed_prefixes(self.secret, domain)

    def _digest(self, domain: bytes, fields: Sequence[bytes]) -> bytes:
        # HMAC-SHA256 (RFC 2104) from the two hash states the key gives, the inner one fed the domain already:
        # keying costs as much as the MAC of a small message, so it is done once per domain; the states are
        # copied for each message (hmac.HMAC.copy costs several times the copy of a hash state).
        keyed = self._primed.get(domain)
        if keyed is None:
            keyed = self._primed[domain] = _keyed_states(self.secret, domain)
        inner_state, outer_state = keyed
        inner = inner_state.copy()
        if len(fields) == 3:  # a canonical event's (two ids, then the value): the loop below, unrolled
            first, second, last = fields
            inner.update(b"".join((_length(len(first)), first, _length(len(second)), second, _length(len(last)))))
            inner.update(last)
        else:
            parts = []
            for part in fields:
                parts.append(_length(len(part)))
                if len(part) < _JOIN_BELOW:
                    parts.append(part)
                else:  # a payload: fed as it is (the same bytes in the same order), joining would copy it
                    inner.update(b"".join(parts))
                    inner.update(part)
                    parts.clear()
            inner.update(b"".join(parts))
        outer = outer_state.copy()
        outer.update(inner.digest())
        return outer.digest()

    def headers(self, domain: bytes, fields: Sequence[bytes]) -> list[tuple[str, bytes]]:
        return [(KEY_ID_HEADER, self.key_id.encode()), (MAC_HEADER, self.mac(domain, fields).encode())]


class Keyring:
    """The keys a consumer accepts, by key id."""

    def __init__(self, keys: Iterable[MessageKey]) -> None:
        self._keys = {key.key_id: key for key in keys}
        if not self._keys:
            raise ValueError("a keyring needs at least one key")
        self._by_header = {key_id.encode(): key for key_id, key in self._keys.items()}
        self._states: dict[bytes, dict[bytes, KeyStates]] = {}

    def __repr__(self) -> str:
        return f"Keyring({sorted(self._keys)})"

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def verify(self, key_id: str | None, mac: str | None, domain: bytes, fields: Sequence[bytes]) -> MessageKey:
        """The key that made ``mac``; raises ``AuthenticationFailed`` when there is none."""
        if key_id is None or mac is None:
            raise AuthenticationFailed("message is not authenticated (no auth.key_id/auth.mac headers)")
        key = self._keys.get(key_id) if len(key_id) == _KEY_ID_LENGTH else None
        if key is None:
            raise AuthenticationFailed("message is authenticated with a key this consumer does not accept")
        if len(mac) != _MAC_HEX_LENGTH or not hmac.compare_digest(key.mac(domain, fields), mac):
            raise AuthenticationFailed("message authentication failed (forged or altered)")
        return key


    def key_of(self, key_id: bytes) -> MessageKey | None:
        """The key whose id is exactly the bytes of an ``auth.key_id`` header, if this keyring accepts it."""
        return self._by_header.get(key_id)

    def states_by_header(self, domain: bytes) -> dict[bytes, KeyStates]:
        """For each key, by the bytes of its ``auth.key_id`` header: its keyed prefixes in ``domain``, its scope and
        that scope's remembered answers (the compiled decoding of the signer verifies MACs and scopes with them).
        The same dict and tuples each call: the compiled decoding keys its HMAC once per tuple."""
        states = self._states.get(domain)
        if states is None:
            states = self._states[domain] = {
                header: (*key.keyed_prefixes(domain), key.scope, None if key.scope is None else key.scope.answers)
                for header, key in self._by_header.items()
            }
        return states


class AuthenticationFailed(Exception):
    pass


def _parse_line(line: str, scoped: bool) -> MessageKey:
    """``<base64> [label] [planes=… event_types=…]``; the scope is required (and only allowed) when ``scoped``."""
    encoded, *words = line.split()
    options: dict[str, str] = {}
    labels: list[str] = []
    for word in words:
        name, equals, value = word.partition("=")
        if not equals:
            labels.append(word)
        elif name not in _SCOPE_FIELDS or name in options:
            raise ValueError(f"{name}= is unknown or repeated (a keyring line may have planes= and event_types=)")
        else:
            options[name] = value
    if len(labels) > 1:
        raise ValueError("has more than one label")
    if options and not scoped:
        raise ValueError("has planes=/event_types=, which only the signers' canonical keyring takes")
    try:
        secret = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"is not a base64 message key ({exc})") from None
    return MessageKey.of(secret, labels[0] if labels else "", KeyScope.parse(options) if scoped else None)


def parse_key_file(text: str, source: str, scoped: bool = False) -> list[MessageKey]:
    """The keys of a key file; ``scoped``: a canonical keyring, whose every line says what its key may sign."""
    keys: list[MessageKey] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = _parse_line(line, scoped)
        except ValueError as exc:
            raise KeyFileError(f"{source}: line {number} {exc}") from None
        if any(key.key_id == known.key_id for known in keys):
            raise KeyFileError(f"{source}: line {number} repeats the key of an earlier line")
        keys.append(key)
    if not keys:
        raise KeyFileError(f"{source}: holds no message key")
    return keys


def load_keys(path: str | None, setting: str, scoped: bool = False) -> list[MessageKey]:
    """Every key of a key file; ``setting`` names the variable in the error, so the fix is obvious."""
    if not path:
        raise KeyFileError(f"{setting} is not set; it names the message key file this service needs")
    try:
        # Owner-only, as every key file (shared.keys): a message key others can read is a leaked key.
        text = read_private_file(Path(path), f"{setting}: message key file")
    except KeyMaterialError as exc:
        raise KeyFileError(str(exc)) from None
    return parse_key_file(text, f"{setting}={path}", scoped)


def load_signing_key(path: str | None, setting: str) -> MessageKey:
    return load_keys(path, setting)[0]


def load_keyring(path: str | None, setting: str) -> Keyring:
    return Keyring(load_keys(path, setting))


def load_scoped_keyring(path: str | None, setting: str) -> Keyring:
    """The signers' canonical keyring: each key with the planes and event types it may sign."""
    return Keyring(load_keys(path, setting, scoped=True))


def new_key_line(label: str = "") -> str:
    line = base64.b64encode(os.urandom(MIN_KEY_BYTES)).decode()
    return f"{line} {label}".strip()


def write_key_file(path: Path, label: str = "") -> bool:
    """Create a key file with a fresh key, readable by its owner only; False if it exists already."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(new_key_line(label) + "\n")
    return True


def _key_part(line: str) -> str:
    return line.split(maxsplit=1)[0] if line.strip() else ""


def ensure_message_keys(raw: Path, canonical_producers: Iterable[tuple[Path, str, KeyScope]],
                        canonical_keyring: Path) -> list[str]:
    """Create the message key files that do not exist yet (never overwrites) and make the signers' keyring
    accept each canonical producer's key (``(key file, label, scope)``: the redactors', the reporter's,
    auditctl's) for what that producer may sign; returns the files created or changed. A keyring line of a
    producer's key that names no scope yet (a keyring from before scopes) gets the producer's scope; a line
    that names one is the operator's and stays as it is."""
    changed = [str(raw)] if write_key_file(raw, "receiver") else []
    lines = canonical_keyring.read_text(encoding="ascii").splitlines() if canonical_keyring.exists() else []
    edited = False
    for path, label, scope in canonical_producers:
        if write_key_file(path, label):
            changed.append(str(path))
        for key_line in path.read_text(encoding="ascii").splitlines():
            key = _key_part(key_line)
            if not key or key.startswith("#"):
                continue
            wanted = f"{key} {label} {scope}".strip()
            found = [index for index, line in enumerate(lines) if _key_part(line) == key]
            if not found:
                lines.append(wanted)
                edited = True
            for index in found:
                if "planes=" not in lines[index] and "event_types=" not in lines[index]:
                    lines[index] = wanted
                    edited = True
    if edited:
        canonical_keyring.parent.mkdir(parents=True, exist_ok=True)
        staged = canonical_keyring.with_name(canonical_keyring.name + ".new")
        staged.unlink(missing_ok=True)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.writelines(line + "\n" for line in lines)
        os.replace(staged, canonical_keyring)
        changed.append(str(canonical_keyring))
    return changed


def provision_local_keys(directory: Path) -> dict[str, str]:
    """Development and test stacks: the message key files in ``directory`` (created where missing), as the
    environment variables that name them."""
    paths = {
        "RAW_AUTH_KEY_FILE": directory / "raw-batch.key",
        "CANONICAL_AUTH_KEY_FILE": directory / "canonical-redactor.key",
        "REPORTER_ACCESS_AUTH_KEY_FILE": directory / "canonical-reporter.key",
        "AUDITCTL_EVENTS_AUTH_KEY_FILE": directory / "canonical-auditctl.key",
        "CANONICAL_AUTH_KEYRING_FILE": directory / "canonical.keyring",
    }
    ensure_message_keys(
        paths["RAW_AUTH_KEY_FILE"],
        [(paths["CANONICAL_AUTH_KEY_FILE"], "redactor", REDACTOR_SCOPE),
         (paths["REPORTER_ACCESS_AUTH_KEY_FILE"], "reporter", REPORTER_SCOPE),
         (paths["AUDITCTL_EVENTS_AUTH_KEY_FILE"], "auditctl", AUDITCTL_SCOPE)],
        paths["CANONICAL_AUTH_KEYRING_FILE"],
    )
    return {name: str(path) for name, path in paths.items()}
