"""A TLS-only Kafka endpoint for tests: Tansu behind stunnel (Debian's stunnel4), with certificates made here.

Kafka clients connect to the address the broker advertises in its metadata, not to the bootstrap address they
were given, so the broker advertises the TLS port: a client that reached the plain port would be sent on to
TLS anyway, and nothing in these tests can talk to the broker without TLS.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from deploy.local.infra import Broker, free_port, tansu_binary, wait_for_port
from deploy.local.tls import Authority

STUNNEL_CANDIDATES = ("stunnel4", "stunnel")


def stunnel_binary() -> str:
    for name in STUNNEL_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("stunnel is not installed: `apt-get install stunnel4` (make test installs it as root)")


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    ca: Authority
    client_cert: Path
    client_key: Path
    stunnel_log: Path

    def env(self) -> dict[str, str]:
        """What a service needs to reach this broker over mutual TLS."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SSL",
            "KAFKA_SSL_CA_FILE": str(self.ca.ca_cert),
            "KAFKA_SSL_CERT_FILE": str(self.client_cert),
            "KAFKA_SSL_KEY_FILE": str(self.client_key),
        }


@contextlib.contextmanager
def tls_broker(folder: Path, *, require_client_cert: bool = True) -> Iterator[TlsBroker]:
    """Tansu on a loopback plain port that advertises the TLS port stunnel listens on."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = Authority.create(folder, "kafka-test")
    server_cert, server_key = ca.issue(folder, "broker", server=True)
    client_cert, client_key = ca.issue(folder, "client", server=False)
    plain_port, tls_port = free_port(), free_port()
    advertised = f"tcp://127.0.0.1:{tls_port}"
    broker_process = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{plain_port}",
         "--advertised-listener-url", advertised],
        stdout=(folder / "broker.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    broker = Broker(advertised.removeprefix("tcp://"), broker_process, plain_port)
    config, log = folder / "stunnel.conf", folder / "stunnel.log"
    config.write_text("\n".join([
        "foreground = yes",
        f"output = {log}",
        "debug = 5",
        f"pid = {folder / 'stunnel.pid'}",
        "[kafka]",
        f"accept = 127.0.0.1:{tls_port}",
        f"connect = 127.0.0.1:{plain_port}",
        f"cert = {server_cert}",
        f"key = {server_key}",
        f"CAfile = {ca.ca_cert}",
        # Mutual TLS: a client without a certificate from this CA is turned away at the handshake.
        f"verifyChain = {'yes' if require_client_cert else 'no'}",
        "sslVersionMin = TLSv1.2",
        "",
    ]))
    stunnel = subprocess.Popen([stunnel_binary(), str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_port("127.0.0.1", plain_port, 20)
        wait_for_port("127.0.0.1", tls_port, 20)
        yield TlsBroker(f"127.0.0.1:{tls_port}", ca, client_cert, client_key, log)
    finally:
        if stunnel.poll() is None:
            stunnel.terminate()
            try:
                stunnel.wait(10)
            except subprocess.TimeoutExpired:
                stunnel.kill()
                stunnel.wait()
        broker.stop()
