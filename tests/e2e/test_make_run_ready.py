"""Ready means ready, as `make run` says it: the stack is started the way `make run` starts it
(``python -m deploy.local.stack run``: its own broker, migrations, keys, the development licence, every service
as a process), and once it prints "ready", one event sent with the licence it printed is a signed row within 2 s.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.local.infra import free_port
from shared.db.pool import connect
from tests.conftest import Infra, _with_database

READY_WITHIN_S = 2.0  # the bound issue-level readiness promises once "ready" is printed
STARTUP_TIMEOUT_S = 240.0


class MakeRun:
    """``python -m deploy.local.stack run`` as a child process; its output is collected line by line."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy.local.stack", "run"], env=env, cwd=cwd, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith("ready in ") for line in self.lines):
            if self.process.poll() is not None:
                pytest.fail("make run's stack exited before it was ready:\n" + "\n".join(self.lines[-40:]))
            if time.monotonic() > deadline:
                pytest.fail(f"make run's stack printed no 'ready' in {timeout} s:\n" + "\n".join(self.lines[-40:]))
            time.sleep(0.02)

    def printed_authorization(self) -> str:
        """The Authorization header of the development licence, from the Claude Code settings it prints."""
        for line in self.lines:
            found = re.search(r'OTEL_EXPORTER_OTLP_HEADERS="Authorization=(Basic [A-Za-z0-9+/=]+)"', line)
            if found:
                return found.group(1)
        pytest.fail("make run printed no OTEL_EXPORTER_OTLP_HEADERS:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(5)


@pytest.fixture
async def empty_database(infra: Infra) -> AsyncIterator[str]:
    """A database with nothing in it: `make run` migrates it itself."""
    name = f"audit_make_run_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(infra.server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(infra.server_dsn, name)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture
def make_run(empty_database: str, tmp_path: Path) -> Iterator[tuple[MakeRun, dict[str, str]]]:
    env = {key: value for key, value in os.environ.items() if key != "KAFKA_BOOTSTRAP_SERVERS"}
    # Free ports for everything `make run` listens on, and its own broker (as `make run` starts one): the
    # state folder is new, so keys, witness and licence are made as on a first `make run`.
    env.update(
        LOCAL_STATE_DIR=str(tmp_path / "var"),
        LOCAL_KAFKA_PORT=str(free_port()),
        DATABASE_URL=empty_database,
        RECEIVER_PORT=str(free_port()),
        RECEIVER_METRICS_PORT=str(free_port()),
        REPORTER_PORT=str(free_port()),
        REDACTOR_METRICS_PORT=str(free_port()),
        SIGNER_METRICS_PORT=str(free_port()),
        USAGE_METRICS_PORT=str(free_port()),
    )
    for name in ("RAW_AUTH_KEY_FILE", "CANONICAL_AUTH_KEY_FILE", "REPORTER_ACCESS_AUTH_KEY_FILE",
                 "AUDITCTL_EVENTS_AUTH_KEY_FILE", "CANONICAL_AUTH_KEYRING_FILE", "CHECKPOINT_WITNESS_DIR"):
        env.pop(name, None)  # make run provisions its own under the state folder
    stack = MakeRun(env, Path(__file__).resolve().parents[2])
    try:
        yield stack, env
    finally:
        stack.stop()


async def test_once_make_run_prints_ready_an_event_is_a_signed_row_within_2s(
    make_run: tuple[MakeRun, dict[str, str]], empty_database: str, fixtures_dir: Path
) -> None:
    stack, env = make_run
    await asyncio.to_thread(stack.wait_for_ready, STARTUP_TIMEOUT_S)
    authorization = stack.printed_authorization()
    body = (fixtures_dir / "logs-tool-session.pb").read_bytes()
    conn = await connect(empty_database)
    try:
        sent = time.monotonic()
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"http://127.0.0.1:{env['RECEIVER_PORT']}/v1/logs", content=body,
                headers={"Content-Type": "application/x-protobuf", "Authorization": authorization},
            )
        assert response.status_code == 200, response.text
        while not await conn.fetchval("SELECT count(*) FROM audit_logs"):
            waited = time.monotonic() - sent
            assert waited < READY_WITHIN_S, f"no signed row {waited:.1f} s after make run printed ready"
            await asyncio.sleep(0.02)
        print(f"first signed row {time.monotonic() - sent:.2f} s after the send")
    finally:
        await conn.close()
