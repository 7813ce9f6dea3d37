"""A small certificate authority on the openssl command line: for the TLS tests and for the compose stack's
Kafka certificates (``python -m deploy.local.kafka_secrets``). Keys are written owner-only."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("the openssl command is not installed (Debian: apt-get install openssl)")
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True)


@dataclass(frozen=True)
class Authority:
    """A CA and the certificates it signs, as PEM files."""

    ca_cert: Path
    ca_key: Path

    @classmethod
    def create(cls, folder: Path, name: str, days: int = 2) -> Authority:
        folder.mkdir(parents=True, exist_ok=True)
        key, cert = folder / f"{name}-ca.key", folder / f"{name}-ca.pem"
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", str(key), "-out", str(cert), "-days", str(days), "-subj", f"/CN={name} CA", cwd=folder)
        key.chmod(0o600)
        return cls(cert, key)

    def issue(self, folder: Path, name: str, *, server: bool, hosts: Sequence[str] = ("127.0.0.1", "localhost"),
              days: int = 2) -> tuple[Path, Path]:
        """A certificate with CN=name (the principal Kafka maps it to) for ``hosts``; returns (cert, key)."""
        key, csr, cert, ext = (folder / f"{name}.key", folder / f"{name}.csr", folder / f"{name}.pem",
                               folder / f"{name}.ext")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                 "-out", str(csr), "-subj", f"/CN={name}", cwd=folder)
        names = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() else f"DNS:{h}" for h in hosts)
        usage = "serverAuth,clientAuth" if server else "clientAuth"
        ext.write_text(f"subjectAltName={names}\nextendedKeyUsage={usage}\nbasicConstraints=critical,CA:FALSE\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.ca_cert), "-CAkey", str(self.ca_key),
                 "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(ext), cwd=folder)
        key.chmod(0o600)
        csr.unlink()
        ext.unlink()
        return cert, key
