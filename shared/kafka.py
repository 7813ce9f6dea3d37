"""Kafka plumbing shared by the services: producer and consumer factories, topics and headers.

Producers are at-least-once (``acks=all``, not idempotent): every stage downstream dedupes by event id,
so a retried send can never become a second audit row.

Every client is built here from one ``KafkaConnection``: the bootstrap servers plus ``KafkaSecurity``, the
TLS and SASL settings as Kafka users know them (``security.protocol``, ``sasl.mechanism``, CA / client
certificate / key files), handed to aiokafka's own options. Secrets come from files only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, get_args

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner

from shared.keys import KeyMaterialError, read_private_file

Headers = list[tuple[str, bytes]]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]
SECURITY_PROTOCOLS: tuple[str, ...] = get_args(SecurityProtocol)
SASL_MECHANISMS: tuple[str, ...] = get_args(SaslMechanism)


class KafkaConfigError(ValueError):
    """The Kafka security settings contradict each other or name unusable files; the process stops at start."""


class FileTokenProvider(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka ships no stubs for it
    """OAUTHBEARER: the token is read from its file on every (re)authentication, so a sidecar can rotate it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self._path = path

    async def token(self) -> str:
        text = await asyncio.to_thread(read_private_file, self._path, "Kafka OAUTHBEARER token file")
        return text.strip()


@dataclass(frozen=True)
class KafkaSecurity:
    """How a client proves who it is and protects the connection. Checked for consistency when built."""

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_username_file: Path | None = None
    sasl_password_file: Path | None = None
    sasl_oauthbearer_token_file: Path | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password_file: Path | None = None
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise KafkaConfigError("; ".join(problems))

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def problems(self) -> list[str]:
        found: list[str] = []
        if self.protocol not in SECURITY_PROTOCOLS:
            found.append(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                         f"not {self.protocol!r}")
            return found
        if self.uses_sasl:
            if self.sasl_mechanism is None:
                found.append(f"KAFKA_SECURITY_PROTOCOL={self.protocol} needs KAFKA_SASL_MECHANISM")
            elif self.sasl_mechanism not in SASL_MECHANISMS:
                found.append(f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}")
            elif self.sasl_mechanism == "OAUTHBEARER":
                if self.sasl_oauthbearer_token_file is None:
                    found.append("KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_SASL_OAUTHBEARER_TOKEN_FILE")
                if self.sasl_username_file or self.sasl_username or self.sasl_password_file:
                    found.append("KAFKA_SASL_MECHANISM=OAUTHBEARER takes a token file, not a username or password")
            else:
                if (self.sasl_username_file is None and not self.sasl_username) or self.sasl_password_file is None:
                    found.append(
                        f"KAFKA_SASL_MECHANISM={self.sasl_mechanism} needs KAFKA_SASL_USERNAME_FILE (or "
                        "KAFKA_SASL_USERNAME) and KAFKA_SASL_PASSWORD_FILE"
                    )
                if self.sasl_username_file is not None and self.sasl_username:
                    found.append("set KAFKA_SASL_USERNAME or KAFKA_SASL_USERNAME_FILE, not both")
                if self.sasl_oauthbearer_token_file is not None:
                    found.append(
                        f"KAFKA_SASL_OAUTHBEARER_TOKEN_FILE is only for OAUTHBEARER, not {self.sasl_mechanism}"
                    )
        else:
            given = [name for name, value in (
                ("KAFKA_SASL_MECHANISM", self.sasl_mechanism),
                ("KAFKA_SASL_USERNAME", self.sasl_username),
                ("KAFKA_SASL_USERNAME_FILE", self.sasl_username_file),
                ("KAFKA_SASL_PASSWORD_FILE", self.sasl_password_file),
                ("KAFKA_SASL_OAUTHBEARER_TOKEN_FILE", self.sasl_oauthbearer_token_file),
            ) if value is not None]
            if given:
                found.append(f"{', '.join(given)} set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not use SASL; "
                             "use SASL_SSL (or SASL_PLAINTEXT)")
        tls_files = [name for name, value in (
            ("KAFKA_SSL_CA_FILE", self.ssl_ca_file),
            ("KAFKA_SSL_CERT_FILE", self.ssl_cert_file),
            ("KAFKA_SSL_KEY_FILE", self.ssl_key_file),
            ("KAFKA_SSL_KEY_PASSWORD_FILE", self.ssl_key_password_file),
        ) if value is not None]
        if not self.uses_tls:
            if tls_files:
                found.append(f"{', '.join(tls_files)} set but KAFKA_SECURITY_PROTOCOL={self.protocol} does not use "
                             "TLS; use SSL or SASL_SSL")
        else:
            if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
                found.append("mutual TLS needs both KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE")
            if self.ssl_key_password_file is not None and self.ssl_key_file is None:
                found.append("KAFKA_SSL_KEY_PASSWORD_FILE set without KAFKA_SSL_KEY_FILE")
        for name, path in (
            ("KAFKA_SSL_CA_FILE", self.ssl_ca_file),
            ("KAFKA_SSL_CERT_FILE", self.ssl_cert_file),
            ("KAFKA_SASL_OAUTHBEARER_TOKEN_FILE", self.sasl_oauthbearer_token_file),
        ):
            if path is not None and not path.is_file():
                found.append(f"{name}: {path} does not exist")
        return found

    def _secret(self, path: Path | None, what: str) -> str | None:
        if path is None:
            return None
        try:
            return read_private_file(path, what).strip()
        except KeyMaterialError as exc:
            raise KafkaConfigError(str(exc)) from None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_tls:
            return None
        password = self._secret(self.ssl_key_password_file, "Kafka TLS key password file")
        if self.ssl_key_file is not None:
            self._secret(self.ssl_key_file, "Kafka TLS key file")  # the same owner-only rule as every key
        try:
            context: ssl.SSLContext = create_ssl_context(
                cafile=self.ssl_ca_file, certfile=self.ssl_cert_file, keyfile=self.ssl_key_file, password=password
            )
        except (ssl.SSLError, OSError) as exc:
            raise KafkaConfigError(f"Kafka TLS files cannot be used: {exc}") from None
        context.check_hostname = self.ssl_check_hostname
        return context

    def client_options(self) -> dict[str, Any]:
        """aiokafka's own keyword arguments for this security set-up (producer, consumer and admin alike)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            options["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            assert self.sasl_mechanism is not None  # checked in __post_init__
            options["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                assert self.sasl_oauthbearer_token_file is not None
                options["sasl_oauth_token_provider"] = FileTokenProvider(self.sasl_oauthbearer_token_file)
            else:
                options["sasl_plain_username"] = self.sasl_username or self._secret(
                    self.sasl_username_file, "Kafka SASL username file")
                options["sasl_plain_password"] = self._secret(self.sasl_password_file, "Kafka SASL password file")
        return options


@dataclass(frozen=True)
class KafkaConnection:
    """Where the brokers are and how to talk to them; every client in the project is built from one."""

    bootstrap: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **self.security.client_options()}


def _host_port(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]") or server.strip(), int(port) if port.isdigit() else 9092


async def refuse_misconfigured_client(kafka: KafkaConnection | str, timeout: float = 5.0) -> None:
    """Raise KafkaConfigError when a bootstrap broker refuses us for our settings, not for being down.

    aiokafka reports an untrusted broker certificate and rejected SASL credentials as "Unable to
    bootstrap", the same words as for a broker that is down, and the services would retry forever. Both are
    configuration errors (a wrong KAFKA_SSL_CA_FILE, a hostname the certificate does not name, a wrong
    password or mechanism), so one connection is opened here with aiokafka's own connection class and the
    very options the clients use, to name the cause. Brokers that cannot be reached are left to the
    callers' retries.
    """
    connection = as_connection(kafka)
    security = connection.security
    if not security.uses_tls and not security.uses_sasl:
        return
    options = security.client_options()
    for server in connection.bootstrap.split(","):
        host, port = _host_port(server)
        try:
            conn = await asyncio.wait_for(create_conn(
                host, port, request_timeout_ms=int(timeout * 1000), ssl_context=options.get("ssl_context"),
                security_protocol=security.protocol, sasl_mechanism=options.get("sasl_mechanism"),
                sasl_plain_username=options.get("sasl_plain_username"),
                sasl_plain_password=options.get("sasl_plain_password"),
                sasl_oauth_token_provider=options.get("sasl_oauth_token_provider"),
            ), timeout)
        except ssl.SSLCertVerificationError as exc:
            raise KafkaConfigError(
                f"the Kafka broker at {host}:{port} presented a certificate this client does not trust "
                f"({exc.verify_message}); check KAFKA_SSL_CA_FILE"
                + (" and KAFKA_SSL_CHECK_HOSTNAME" if "hostname" in str(exc.verify_message).lower() else "")
            ) from None
        except (SaslAuthenticationFailed, UnsupportedSaslMechanismError, IllegalSaslStateError) as exc:
            raise KafkaConfigError(
                f"the Kafka broker at {host}:{port} refused this client's SASL authentication as "
                f"{options.get('sasl_plain_username') or 'its token'} ({exc}); check KAFKA_SASL_MECHANISM and "
                "the credentials in KAFKA_SASL_USERNAME_FILE / KAFKA_SASL_PASSWORD_FILE"
            ) from None
        except (KafkaError, OSError, TimeoutError):
            continue  # down, refused, or the handshake failed for the broker's reasons: retried by the caller
        conn.close()


def as_connection(target: KafkaConnection | str) -> KafkaConnection:
    """A bare bootstrap string is a PLAINTEXT connection (tests and the local stack)."""
    return target if isinstance(target, KafkaConnection) else KafkaConnection(target)


class BatchSender(Protocol):
    """What a stage that makes many records per input sends them with (``BatchingProducer``, or a test's)."""

    async def send_many(self, records: Sequence[OutboundRecord]) -> asyncio.Future[None]: ...


class MessageProducer(Protocol):
    """The part of a producer the stages use; tests can stand in for it where no broker is the point."""

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, headers: Headers | None = None
    ) -> asyncio.Future[Any]: ...


class OutboundRecord(NamedTuple):
    """One message to produce; a tuple, as a stage makes one per event."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


class _Group:
    """The records of one ``send_many`` call: done once every record is acknowledged, failed at the first
    record the broker did not take."""

    __slots__ = ("_unacknowledged", "_unplaced", "done")

    def __init__(self, done: asyncio.Future[None], chunks: int) -> None:
        self.done = done
        self._unplaced = chunks  # per-partition runs of records not yet all handed to the producer
        self._unacknowledged = 0

    def track(self, acknowledged: asyncio.Future[Any]) -> None:
        self._unacknowledged += 1
        acknowledged.add_done_callback(self._settled)

    def placed(self) -> None:
        self._unplaced -= 1
        self._maybe_done()

    def fail(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)

    def _settled(self, acknowledged: asyncio.Future[Any]) -> None:
        self._unacknowledged -= 1
        if acknowledged.cancelled():
            self.fail(KafkaError("the send was cancelled"))
        elif (error := acknowledged.exception()) is not None:
            self.fail(error)
        else:
            self._maybe_done()

    def _maybe_done(self) -> None:
        if not self._unplaced and not self._unacknowledged and not self.done.done():
            self.done.set_result(None)


class BatchingProducer:
    """Sends many records at once as Kafka record batches, one per partition, and acknowledges them together.

    ``AIOKafkaProducer.send`` costs tens of microseconds of Python per record (a future, the partitioner, the
    accumulator) while appending to a batch the caller builds costs a few: a stage that makes dozens of
    records from one input hands them over in one call. Records keep their order within a partition: each
    partition has one queue, drained in order by one task, which packs whatever has queued up meanwhile into
    the next batch (so a batch waiting for the previous one's request to go out grows instead of blocking
    the caller). Keyed records are partitioned exactly as ``send`` would (Kafka's murmur2 of the key); an
    unkeyed record, or one too large for a batch of its own, goes through ``send`` in its turn.
    """

    def __init__(self, producer: AIOKafkaProducer, max_queued: int = 2_000) -> None:
        self._producer = producer
        self._partitioner = DefaultPartitioner()
        self._queues: dict[tuple[str, int], deque[tuple[list[OutboundRecord], _Group]]] = {}
        self._pumps: dict[tuple[str, int], asyncio.Task[None]] = {}
        # Backpressure, as aiokafka's own send() has when its batch is full: a caller waits while more than
        # ``max_queued`` records are handed over but not yet in a batch, so a slow broker slows the stage
        # instead of letting records pile up here until their batches expire.
        self._max_queued = max_queued
        self._queued = 0
        self._room = asyncio.Event()
        self._room.set()

    async def send_many(self, records: Sequence[OutboundRecord]) -> asyncio.Future[None]:
        """Queues ``records`` and returns a future done when the broker has acknowledged every one of them,
        or failed with the first error; a failure says nothing of which records the broker did take."""
        chunks: dict[tuple[str, int], list[OutboundRecord]] = {}
        partitions: dict[str, list[int]] = {}
        placed: dict[tuple[str, bytes], int] = {}  # the records of one call mostly share their key
        for record in records:
            if record.key is None:
                partition = -1
            elif (partition := placed.get((record.topic, record.key), -1)) < 0:
                known = partitions.get(record.topic)
                if known is None:
                    known = partitions[record.topic] = sorted(await self._producer.partitions_for(record.topic))
                partition = placed[(record.topic, record.key)] = self._partitioner(record.key, known, known)
            chunks.setdefault((record.topic, partition), []).append(record)
        group = _Group(asyncio.get_running_loop().create_future(), len(chunks))
        if not chunks:
            group.done.set_result(None)
        for where, chunk in chunks.items():
            self._queues.setdefault(where, deque()).append((chunk, group))
            if where not in self._pumps:
                self._pumps[where] = asyncio.create_task(self._pump(where))
        self._queued += len(records)
        while self._queued > self._max_queued:
            self._room.clear()
            await self._room.wait()
        return group.done

    async def _pump(self, where: tuple[str, int]) -> None:
        queue = self._queues[where]
        try:
            while queue:
                await self._send_next(where, queue)
        finally:
            del self._pumps[where]
            if not queue:
                del self._queues[where]

    async def _send_next(self, where: tuple[str, int], queue: deque[tuple[list[OutboundRecord], _Group]]) -> None:
        """One batch's worth from the head of ``queue``, or the head record alone through ``send``."""
        topic, partition = where
        batch = self._producer.create_batch()
        members: list[_Group] = []  # groups with records in this batch
        finished: list[_Group] = []  # of those, the ones whose chunk is all in it
        while queue:
            chunk, group = queue[0]
            taken = 0
            if partition >= 0:
                for record in chunk:
                    if batch.append(key=record.key, value=record.value, timestamp=None,
                                    headers=record.headers) is None:
                        break
                    taken += 1
                self._taken(taken)
            if taken == len(chunk):
                queue.popleft()
                members.append(group)
                finished.append(group)
                continue
            if taken or members:
                if taken:
                    queue[0] = (chunk[taken:], group)
                    members.append(group)
                break  # the batch is full; the rest starts the next one
            await self._send_alone(queue)
            return
        try:
            acknowledged = await self._producer.send_batch(batch, topic, partition=partition)
        except Exception as exc:  # closed, or no room before the timeout: these groups failed
            for group in members:
                group.fail(exc)
            return
        except asyncio.CancelledError:
            for group in members:
                group.fail(KafkaError("the producer was closed"))
            raise
        for group in members:
            group.track(acknowledged)
        for group in finished:
            group.placed()

    async def _send_alone(self, queue: deque[tuple[list[OutboundRecord], _Group]]) -> None:
        """The head record is unkeyed or too large for a batch of its own: ``send`` takes it (or says why not)."""
        chunk, group = queue[0]
        record = chunk[0]
        self._taken(1)
        if len(chunk) > 1:
            queue[0] = (chunk[1:], group)
        else:
            queue.popleft()
        try:
            group.track(await self._producer.send(record.topic, record.value, key=record.key,
                                                  headers=record.headers))
        except Exception as exc:  # whatever it is, it is this group's failure
            group.fail(exc)
        except asyncio.CancelledError:
            group.fail(KafkaError("the producer was closed"))
            raise
        if len(chunk) == 1:
            group.placed()

    def _taken(self, count: int) -> None:
        self._queued -= count
        if self._queued <= self._max_queued:
            self._room.set()

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        """Drops what is still queued (its callers see their futures fail), then stops the producer."""
        await self.close()
        await self._producer.stop()

    async def close(self) -> None:
        """Stops sending what is still queued (its callers see their futures fail)."""
        for task in list(self._pumps.values()):
            task.cancel()
        for task in list(self._pumps.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for queue in self._queues.values():
            for _, group in queue:
                group.fail(KafkaError("the producer was closed"))
        self._queues.clear()
        self._queued = 0
        self._room.set()


def make_producer(kafka: KafkaConnection | str, max_message_bytes: int, **overrides: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {
        **as_connection(kafka).options(),
        "acks": "all",
        "enable_idempotence": False,
        # The production broker refuses anything over message.max.bytes; failing here, in our own process,
        # keeps that from being a surprise that only shows in production.
        "max_request_size": max_message_bytes,
        "linger_ms": 5,
        "request_timeout_ms": 10_000,
        "retry_backoff_ms": 200,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    kafka: KafkaConnection | str,
    group_id: str,
    *topics: str,
    session_timeout_ms: int = 6_000,
    rebalance_timeout_ms: int = 3_000,
    group_instance_id: str | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A group consumer committing by hand. ``group_instance_id`` turns on static membership (KIP-345).

    The rebalance timeout is kept short (aiokafka's default is the session timeout): when an instance is
    killed and restarted, the rebalance its return starts would otherwise wait for the dead member for up
    to that long after its session had already expired.
    """
    options: dict[str, Any] = {
        **as_connection(kafka).options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "fetch_max_bytes": 16 * 1024 * 1024,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(500, session_timeout_ms // 6),
        "rebalance_timeout_ms": rebalance_timeout_ms,
        "max_poll_interval_ms": 300_000,
    }
    if group_instance_id is not None:
        options["group_instance_id"] = group_instance_id
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    configs: tuple[tuple[str, str], ...] = ()


def make_admin(kafka: KafkaConnection | str, **overrides: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**{**as_connection(kafka).options(), **overrides})


async def ensure_topics(kafka: KafkaConnection | str, specs: Sequence[TopicSpec]) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the names created."""
    admin = make_admin(kafka)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        if missing:
            # Another process may win the race; the topic is there then, which is all we need.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=dict(s.configs) or None)
                        for s in missing
                    ]
                )
        return [s.name for s in missing]
    finally:
        await admin.close()


def encode_headers(values: Mapping[str, str | int | None]) -> Headers:
    return [(key, str(value).encode()) for key, value in values.items() if value is not None]


def decode_headers(headers: Iterable[tuple[str, bytes]] | None) -> dict[str, str]:
    return {key: value.decode("utf-8", "replace") for key, value in (headers or ())}


def tenant_key(tenant_id: str) -> bytes:
    """Both topics are keyed by tenant so that each tenant's records keep their order end to end."""
    return tenant_id.encode()


class StartableClient(Protocol):
    async def start(self) -> None: ...


async def start_clients(
    *clients: StartableClient, stop: asyncio.Event, kafka: KafkaConnection | None = None
) -> bool:
    """Start producers and consumers, waiting out a broker that is not up yet; False if stopped first.

    With ``kafka`` given, a broker certificate our TLS settings do not trust raises KafkaConfigError
    instead of being retried forever.
    """
    from shared.pipeline import Backoff  # noqa: PLC0415 - pipeline imports this module

    backoff = Backoff(0.5, 10.0)
    pending = list(clients)
    while pending and not stop.is_set():
        try:
            await pending[0].start()
            pending.pop(0)
        except (KafkaError, OSError) as exc:
            if kafka is not None:
                await refuse_misconfigured_client(kafka)
            logging.getLogger("kafka").warning("broker not reachable yet, retrying", extra={"error": repr(exc)})
            await backoff.sleep(stop)
    return not pending


async def send_until_acknowledged(
    producer: MessageProducer, topic: str, value: bytes, *, key: bytes | None, headers: Headers,
    stop: asyncio.Event,
) -> None:
    """Dead letters must not be lost: retry with backoff until the broker acknowledges (or we are stopping)."""
    from shared.pipeline import Backoff, describe  # noqa: PLC0415 - pipeline imports this module

    backoff = Backoff()
    while True:
        try:
            await (await producer.send(topic, value, key=key, headers=headers))
            return
        except KafkaError as exc:
            if stop.is_set():
                raise
            logging.getLogger("kafka").warning("produce failed, retrying", extra={"error": describe(exc)})
            await backoff.sleep(stop)
