"""Ed25519 keys: loading from a file or the environment, and the fingerprint that names a key.

A key id is the first 16 bytes of SHA-256 over the raw 32-byte public key, hex-encoded, so anyone holding
a published public key can recompute its id without trusting our table.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nacl.bindings import crypto_sign, crypto_sign_open, crypto_sign_seed_keypair
from nacl.encoding import Base64Encoder
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

SIGNATURE_BYTES = 64


class KeyMaterialError(Exception):
    """Key material is missing or malformed; services stop at start-up instead of running unsigned."""


def key_id_for(public_key: bytes) -> str:
    return hashlib.sha256(public_key).hexdigest()[:32]


class Signer(Protocol):
    """What the signer and the licence issuer need of a private key; tests may substitute their own."""

    @property
    def key_id(self) -> str: ...

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


@dataclass(frozen=True)
class Ed25519Signer:
    _key: SigningKey
    _secret: bytes = field(init=False, repr=False)
    _public: bytes = field(init=False, repr=False)
    _key_id: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # libsodium's expanded secret key, kept so that sign() is one C call: the PyNaCl wrapper objects
        # around it cost as much as the signature itself.
        public, secret = crypto_sign_seed_keypair(bytes(self._key))
        object.__setattr__(self, "_public", public)
        object.__setattr__(self, "_secret", secret)
        object.__setattr__(self, "_key_id", key_id_for(public))

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._public

    def sign(self, message: bytes) -> bytes:
        return crypto_sign(message, self._secret)[:SIGNATURE_BYTES]

    def __repr__(self) -> str:  # never let a private key reach a log line
        return f"Ed25519Signer(key_id={self.key_id})"

    @classmethod
    def generate(cls) -> Ed25519Signer:
        return cls(SigningKey.generate())

    @classmethod
    def from_seed_b64(cls, text: str) -> Ed25519Signer:
        try:
            seed = Base64Encoder.decode(text.strip().encode())
        except Exception as exc:
            raise KeyMaterialError("private key is not valid base64") from exc
        if len(seed) != 32:
            raise KeyMaterialError(f"private key must be a 32-byte Ed25519 seed, got {len(seed)} bytes")
        return cls(SigningKey(seed))

    def seed_b64(self) -> str:
        return Base64Encoder.encode(bytes(self._key)).decode()


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != SIGNATURE_BYTES or len(public_key) != 32:
        return False
    try:
        crypto_sign_open(signature + message, public_key)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


def read_private_file(path: Path, what: str = "key file") -> str:
    """The text of a secret file, refused when accounts other than its owner could read or change it.

    PostgreSQL's rule for its own key files: a file owned by this process's user must be 0600 or stricter;
    one owned by root may also be readable by its group (0640), which is how Kubernetes mounts a Secret
    for a non-root pod (root-owned, group = the pod's fsGroup). A key others can read is a leaked key, and a
    service that keeps running with one hides that.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyMaterialError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyMaterialError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyMaterialError(f"{what} {path} is not a regular file")
    mode = stat.S_IMODE(info.st_mode)
    ours = info.st_uid == os.geteuid()
    allowed = 0o600 if ours or info.st_uid != 0 else 0o640
    if mode & ~allowed & 0o777:
        raise KeyMaterialError(
            f"{what} {path} has mode {mode:04o}: group or others may access it; run `chmod 600 {path}` "
            f"(or mount it owner-only, e.g. defaultMode 0400) and start again"
        )
    try:
        return path.read_text()
    except OSError as exc:
        raise KeyMaterialError(f"{what} {path} cannot be read: {exc.strerror}") from None


def load_signer(*, file: str | None, env_var: str | None = None) -> Ed25519Signer:
    """Load a private key from the file, or else from the named environment variable (base64 seed)."""
    if file:
        return Ed25519Signer.from_seed_b64(read_private_file(Path(file)))
    if env_var and os.environ.get(env_var):
        return Ed25519Signer.from_seed_b64(os.environ[env_var])
    raise KeyMaterialError(f"no key configured: set a key file or {env_var}")


def write_new_key(path: Path) -> Ed25519Signer:
    """Create a private key file readable by its owner only."""
    signer = Ed25519Signer.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(signer.seed_b64() + "\n")
    return signer
