"""Message authentication between stages: HMAC-SHA256 with keys that only the two ends of a topic hold.

Anyone who can write to the broker can write any topic. So the stage that produces a message the next stage
acts on authenticates it, and the consumer refuses (dead-letters) what it cannot verify:

- raw batches: the receiver authenticates; the redactors and the usage consumer verify;
- canonical events: each authorised producer (the redactor; any later producer with its own key)
  authenticates; the signers verify against a keyring of every producer key they accept.

A key file holds one key a line: the base64 of at least 32 random bytes, optionally followed by a label
(``redactor``, ``reporter``) that only shows in logs. A producer signs with the first key of its file; a
consumer accepts every key of its file, so keys rotate by adding the new key to the consumers' files first,
then putting it first in the producer's, then removing the old one. A key's id is a fingerprint of it, sent
in the ``auth.key_id`` header next to the MAC in ``auth.mac``; it names the key without revealing it.

The MAC covers a domain label (so a raw batch can never pass as a canonical event, nor a logs batch as a
metrics batch) and a list of fields, each prefixed by its length, so no two field lists share bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.keys import KeyMaterialError, read_private_file

KEY_ID_HEADER = "auth.key_id"
MAC_HEADER = "auth.mac"
MIN_KEY_BYTES = 32
MAX_KEY_BYTES = 1024
_KEY_ID_CONTEXT = b"audit-message-key\x00"
_MAC_HEX_LENGTH = 64
_KEY_ID_LENGTH = 16


class KeyFileError(Exception):
    """A key file is missing or unusable; the service stops at start-up with this message."""


@dataclass(frozen=True)
class MessageKey:
    key_id: str
    secret: bytes
    label: str = ""

    @classmethod
    def of(cls, secret: bytes, label: str = "") -> MessageKey:
        if not MIN_KEY_BYTES <= len(secret) <= MAX_KEY_BYTES:
            raise ValueError(f"a message key has {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
        return cls(hashlib.sha256(_KEY_ID_CONTEXT + secret).hexdigest()[:_KEY_ID_LENGTH], secret, label)

    def __repr__(self) -> str:  # never the secret, in logs or tracebacks
        return f"MessageKey(key_id={self.key_id!r}, label={self.label!r})"

    def mac(self, domain: bytes, fields: Sequence[bytes]) -> str:
        mac = hmac.new(self.secret, domain, hashlib.sha256)
        for field in fields:
            mac.update(len(field).to_bytes(8, "big"))
            mac.update(field)
        return mac.hexdigest()

    def headers(self, domain: bytes, fields: Sequence[bytes]) -> list[tuple[str, bytes]]:
        return [(KEY_ID_HEADER, self.key_id.encode()), (MAC_HEADER, self.mac(domain, fields).encode())]


class Keyring:
    """The keys a consumer accepts, by key id."""

    def __init__(self, keys: Iterable[MessageKey]) -> None:
        self._keys = {key.key_id: key for key in keys}
        if not self._keys:
            raise ValueError("a keyring needs at least one key")

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


class AuthenticationFailed(Exception):
    pass


def parse_key_file(text: str, source: str) -> list[MessageKey]:
    keys: list[MessageKey] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        encoded, _, label = line.partition(" ")
        try:
            keys.append(MessageKey.of(base64.b64decode(encoded, validate=True), label.strip()))
        except (binascii.Error, ValueError) as exc:
            raise KeyFileError(f"{source}: line {number} is not a base64 message key ({exc})") from None
    if not keys:
        raise KeyFileError(f"{source}: holds no message key")
    return keys


def load_keys(path: str | None, setting: str) -> list[MessageKey]:
    """Every key of a key file; ``setting`` names the variable in the error, so the fix is obvious."""
    if not path:
        raise KeyFileError(f"{setting} is not set; it names the message key file this service needs")
    try:
        # Owner-only, as every key file (shared.keys): a message key others can read is a leaked key.
        text = read_private_file(Path(path), f"{setting}: message key file")
    except KeyMaterialError as exc:
        raise KeyFileError(str(exc)) from None
    return parse_key_file(text, f"{setting}={path}")


def load_signing_key(path: str | None, setting: str) -> MessageKey:
    return load_keys(path, setting)[0]


def load_keyring(path: str | None, setting: str) -> Keyring:
    return Keyring(load_keys(path, setting))


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


def ensure_message_keys(raw: Path, canonical_producers: Iterable[tuple[Path, str]],
                        canonical_keyring: Path) -> list[str]:
    """Create the message key files that do not exist yet (never overwrites) and make the signers' keyring
    accept each canonical producer's key (``(key file, label)``: the redactors', the reporter's); returns
    the files created or changed. A further producer's key is added to the keyring by appending its line."""
    changed = [str(raw)] if write_key_file(raw, "receiver") else []
    accepted = canonical_keyring.read_text(encoding="ascii").splitlines() if canonical_keyring.exists() else []
    missing: list[str] = []
    for path, label in canonical_producers:
        if write_key_file(path, label):
            changed.append(str(path))
        lines = [line.strip() for line in path.read_text(encoding="ascii").splitlines()]
        missing += [line for line in lines if line and not line.startswith("#") and line not in accepted]
    if missing:
        canonical_keyring.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(canonical_keyring, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="ascii") as handle:
            handle.writelines(line + "\n" for line in missing)
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
        [(paths["CANONICAL_AUTH_KEY_FILE"], "redactor"), (paths["REPORTER_ACCESS_AUTH_KEY_FILE"], "reporter"),
         (paths["AUDITCTL_EVENTS_AUTH_KEY_FILE"], "auditctl")],
        paths["CANONICAL_AUTH_KEYRING_FILE"],
    )
    return {name: str(path) for name, path in paths.items()}
