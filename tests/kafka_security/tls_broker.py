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


@dataclass(frozen=True)
class SaslBroker:
    """Tansu behind the SASL proxy (tests/kafka_security/sasl_proxy.py), and stunnel in front for SASL_SSL."""

    bootstrap: str
    protocol: str  # SASL_PLAINTEXT or SASL_SSL
    ca: Authority
    users: dict[str, str]
    folder: Path
    proxy_log: Path

    def env(self, user: str, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
        """A service's settings for this broker as ``user``: its credentials in owner-only files."""
        username, password = self.folder / f"{user}.username", self.folder / f"{user}.password"
        for path, text in ((username, user), (password, self.users.get(user, "wrong-password"))):
            path.write_text(text + "\n")
            path.chmod(0o600)
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": self.protocol,
            "KAFKA_SASL_MECHANISM": mechanism,
            "KAFKA_SASL_USERNAME_FILE": str(username),
            "KAFKA_SASL_PASSWORD_FILE": str(password),
        }
        if self.protocol == "SASL_SSL":
            env["KAFKA_SSL_CA_FILE"] = str(self.ca.ca_cert)
        return env


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def sasl_broker(folder: Path, users: dict[str, str], *, tls: bool) -> Iterator[SaslBroker]:
    """client -> [stunnel TLS] -> SASL proxy -> Tansu; the broker advertises the outermost port."""
    import json  # noqa: PLC0415
    import sys  # noqa: PLC0415

    folder.mkdir(parents=True, exist_ok=True)
    ca = Authority.create(folder, "kafka-sasl-test")
    plain_port, proxy_port, tls_port = free_port(), free_port(), free_port()
    outer = tls_port if tls else proxy_port
    started: list[subprocess.Popen[bytes]] = []
    broker_process = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{plain_port}",
         "--advertised-listener-url", f"tcp://127.0.0.1:{outer}"],
        stdout=(folder / "broker.log").open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    started.append(broker_process)
    users_file, proxy_log = folder / "users.json", folder / "sasl-proxy.log"
    users_file.write_text(json.dumps(users))
    started.append(subprocess.Popen(
        [sys.executable, "-m", "tests.kafka_security.sasl_proxy", str(proxy_port), f"127.0.0.1:{plain_port}",
         str(users_file), str(proxy_log)], start_new_session=True))
    if tls:
        server_cert, server_key = ca.issue(folder, "broker", server=True)
        config = folder / "stunnel.conf"
        config.write_text("\n".join([
            "foreground = yes", f"output = {folder / 'stunnel.log'}", f"pid = {folder / 'stunnel.pid'}",
            "[kafka]", f"accept = 127.0.0.1:{tls_port}", f"connect = 127.0.0.1:{proxy_port}",
            f"cert = {server_cert}", f"key = {server_key}", "sslVersionMin = TLSv1.2", "",
        ]))
        started.append(subprocess.Popen([stunnel_binary(), str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True))
    try:
        for port in (plain_port, proxy_port, *((tls_port,) if tls else ())):
            wait_for_port("127.0.0.1", port, 20)
        yield SaslBroker(f"127.0.0.1:{outer}", "SASL_SSL" if tls else "SASL_PLAINTEXT", ca, users, folder,
                         proxy_log)
    finally:
        for process in reversed(started):
            _stop_process(process)
