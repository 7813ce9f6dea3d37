"""Kafka secrets for deploy/compose.yaml: a CA, the brokers' and the admin's certificates, and one SCRAM
principal per component with a random password.

    python -m deploy.local.kafka_secrets deploy/secrets

Writes, owner-only (the services refuse key and password files others can read):

- ``kafka-ca.pem`` (public; every client trusts it) and ``kafka-ca.key`` (stays here, never mounted);
- ``kafka-broker.pem``: the brokers' key and certificate (SANs kafka-1, kafka-2, kafka-3), principal
  ``kafka-broker`` (a super user, for inter-broker and controller traffic over mutual TLS);
- ``kafka-admin.pem``: key and certificate of ``kafka-admin``, the super user the principals job uses;
- ``kafka-<component>.username`` / ``kafka-<component>.password`` for the SCRAM-SHA-512 principals in
  ``PRINCIPALS``, each limited by ACLs to what its component does (deploy/kafka/principals.sh).

Existing files are kept, so running it again only fills in what is missing.
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

from deploy.local.tls import Authority

PRINCIPALS = ("receiver", "redactor", "signer", "usage", "reporter", "ops")
BROKERS = ("kafka-1", "kafka-2", "kafka-3")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def write_kafka_secrets(folder: Path, days: int = 825) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    ca_cert, ca_key = folder / "kafka-ca.pem", folder / "kafka-ca.key"
    if ca_cert.exists() and ca_key.exists():
        authority = Authority(ca_cert, ca_key)
    else:
        authority = Authority.create(folder, "kafka", days=days)
        written += [ca_cert, ca_key]
    for name, hosts in (("kafka-broker", (*BROKERS, "localhost")), ("kafka-admin", ("kafka-admin",))):
        bundle = folder / f"{name}.pem"
        if bundle.exists():
            continue
        cert, key = authority.issue(folder, name, server=name == "kafka-broker", hosts=hosts, days=days)
        # Kafka's PEM keystore: the private key, then the certificate, in one file.
        key_text, cert_text = key.read_text(), cert.read_text()
        key.unlink()
        cert.unlink()
        _write_private(bundle, key_text + cert_text)
        written.append(bundle)
    for principal in PRINCIPALS:
        username, password = folder / f"kafka-{principal}.username", folder / f"kafka-{principal}.password"
        if not username.exists():
            _write_private(username, principal + "\n")
            written.append(username)
        if not password.exists():
            _write_private(password, secrets.token_urlsafe(32) + "\n")
            written.append(password)
    for leftover in folder.glob("*.srl"):
        leftover.unlink()
    return written


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/secrets")
    for path in write_kafka_secrets(folder):
        print(path)


if __name__ == "__main__":
    main()
