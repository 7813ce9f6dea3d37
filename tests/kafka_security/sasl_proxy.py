"""A small SASL-terminating Kafka proxy for tests: the local broker (Tansu, in memory) can require SCRAM but
cannot hold users without persistent storage, so this proxy authenticates clients the way a Kafka broker
does and then passes their bytes through to the broker unchanged.

    python -m tests.kafka_security.sasl_proxy LISTEN_PORT UPSTREAM_HOST:PORT USERS_JSON

USERS_JSON maps user names to passwords. Mechanisms: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (RFC 5802 /
RFC 7677, as Kafka implements them) and OAUTHBEARER (RFC 7628; a bearer token is accepted when it equals
one of the passwords: this proxy checks possession, not a JWT). Protocol: the client's ApiVersions request is answered from the
broker's own answer, with SaslHandshake and SaslAuthenticate capped at version 1 (the non-flexible
encodings this proxy speaks); SaslHandshake v1 and SaslAuthenticate v1 are answered here; any other
request before authentication closes the connection, as Kafka does. After authentication, bytes are
relayed both ways. Put stunnel in front of it for SASL_SSL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
ILLEGAL_SASL_STATE, UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 34, 33, 58
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
ITERATIONS = 4096


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    raw = text.encode()
    return struct.pack(">h", len(raw)) + raw


def _bytes(data: bytes) -> bytes:
    return struct.pack(">i", len(data)) + data


@dataclass
class Request:
    api_key: int
    api_version: int
    correlation_id: int
    body: bytes  # after the header (client id read off)
    raw: bytes  # the whole frame, size prefix excluded


def parse_request(frame: bytes) -> Request:
    api_key, api_version, correlation_id, client_len = struct.unpack(">hhih", frame[:10])
    offset = 10 + max(client_len, 0)
    return Request(api_key, api_version, correlation_id, frame[offset:], frame)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    if not 0 < size <= 100 * 1024 * 1024:
        raise ConnectionError("bad frame size")
    return await reader.readexactly(size)


def write_frame(writer: asyncio.StreamWriter, correlation_id: int, body: bytes) -> None:
    payload = struct.pack(">i", correlation_id) + body
    writer.write(struct.pack(">i", len(payload)) + payload)


def cap_api_versions(body: bytes, api_version: int) -> bytes:
    """The broker's ApiVersions answer (v0-v2, non-flexible) with the SASL APIs capped at version 1."""
    error, count = struct.unpack(">hi", body[:6])
    entries, offset = [], 6
    for _ in range(count):
        key, low, high = struct.unpack(">hhh", body[offset:offset + 6])
        offset += 6
        if key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
            high = min(high, 1)
        entries.append(struct.pack(">hhh", key, low, high))
    return struct.pack(">hi", error, count) + b"".join(entries) + body[offset:]


@dataclass
class Scram:
    mechanism: str
    users: dict[str, str]
    nonce: str = ""
    client_first_bare: str = ""
    server_first: str = ""
    user: str = ""
    salt: bytes = field(default_factory=lambda: os.urandom(16))

    def _h(self, data: bytes) -> bytes:
        return hashlib.new(_HASHES[self.mechanism], data).digest()

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, _HASHES[self.mechanism]).digest()

    def first(self, message: str) -> str:
        if not message.startswith("n,,"):
            raise ValueError("channel binding is not supported")
        self.client_first_bare = message[3:]
        attributes = dict(part.split("=", 1) for part in self.client_first_bare.split(","))
        self.user = attributes["n"].replace("=2C", ",").replace("=3D", "=")
        self.nonce = attributes["r"] + base64.b64encode(os.urandom(18)).decode()
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={ITERATIONS}"
        return self.server_first

    def final(self, message: str) -> str:
        without_proof, _, proof_part = message.rpartition(",p=")
        attributes = dict(part.split("=", 1) for part in without_proof.split(","))
        if attributes.get("r") != self.nonce or self.user not in self.users:
            raise PermissionError("authentication failed")
        salted = hashlib.pbkdf2_hmac(_HASHES[self.mechanism], self.users[self.user].encode(), self.salt, ITERATIONS)
        client_key = self._hmac(salted, b"Client Key")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(self._h(client_key), auth_message)
        proof = base64.b64decode(proof_part)
        recovered = bytes(a ^ b for a, b in zip(proof, signature, strict=False))
        if not hmac.compare_digest(self._h(recovered), self._h(client_key)):
            raise PermissionError("authentication failed")
        server_key = self._hmac(salted, b"Server Key")
        return "v=" + base64.b64encode(self._hmac(server_key, auth_message)).decode()


class Session:
    def __init__(self, users: dict[str, str], upstream: tuple[str, int], log: Path | None) -> None:
        self.users = users
        self.upstream = upstream
        self.log = log

    def note(self, text: str) -> None:
        if self.log is not None:
            with self.log.open("a") as handle:
                handle.write(text + "\n")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            if await self._authenticate(reader, writer, up_reader, up_writer):
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, KeyError, struct.error):
            pass
        finally:
            for stream in (writer, up_writer):
                stream.close()

    async def _authenticate(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                            up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> bool:
        mechanism: str | None = None
        scram: Scram | None = None
        while True:
            request = parse_request(await read_frame(reader))
            if request.api_key == API_VERSIONS and request.api_version <= 2:
                up_writer.write(struct.pack(">i", len(request.raw)) + request.raw)
                answer = await read_frame(up_reader)
                write_frame(writer, request.correlation_id, cap_api_versions(answer[4:], request.api_version))
            elif request.api_key == SASL_HANDSHAKE and request.api_version == 1:
                (length,) = struct.unpack(">h", request.body[:2])
                wanted = request.body[2:2 + length].decode()
                error = 0 if wanted in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                mechanism = wanted if error == 0 else None
                listed = struct.pack(">i", len(MECHANISMS)) + b"".join(_string(m) for m in MECHANISMS)
                write_frame(writer, request.correlation_id, struct.pack(">h", error) + listed)
                self.note(f"handshake {wanted}")
            elif request.api_key == SASL_AUTHENTICATE and request.api_version <= 1 and mechanism:
                (length,) = struct.unpack(">i", request.body[:4])
                token = request.body[4:4 + length]
                try:
                    if mechanism == "PLAIN":
                        _, user, password = token.decode().split("\0")
                        if not hmac.compare_digest(self.users.get(user, "\0").encode(), password.encode()):
                            raise PermissionError("authentication failed")
                        reply, done = b"", True
                        self.note(f"authenticated {user} via PLAIN")
                    elif mechanism == "OAUTHBEARER":
                        fields = dict(part.split("=", 1) for part in token.decode().split("\x01") if "=" in part)
                        bearer = fields.get("auth", "").removeprefix("Bearer ")
                        if not bearer or bearer not in self.users.values():
                            raise PermissionError("authentication failed")
                        reply, done = b"", True
                        self.note("authenticated a bearer token via OAUTHBEARER")
                    elif scram is None:
                        scram = Scram(mechanism, self.users)
                        reply, done = scram.first(token.decode()).encode(), False
                    else:
                        reply, done = scram.final(token.decode()).encode(), True
                        self.note(f"authenticated {scram.user} via {mechanism}")
                except (PermissionError, ValueError, KeyError):
                    self.note(f"refused via {mechanism}")
                    message = f"Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                    body = struct.pack(">h", SASL_AUTHENTICATION_FAILED) + _string(message) + _bytes(b"")
                    write_frame(writer, request.correlation_id,
                                body + (struct.pack(">q", 0) if request.api_version >= 1 else b""))
                    await writer.drain()
                    return False
                body = struct.pack(">h", 0) + _string(None) + _bytes(reply)
                write_frame(writer, request.correlation_id,
                            body + (struct.pack(">q", 0) if request.api_version >= 1 else b""))
                if done:
                    await writer.drain()
                    return True
            else:
                self.note(f"refused request {request.api_key} v{request.api_version} before authentication")
                return False
            await writer.drain()


async def _pipe(source: asyncio.StreamReader, target: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            target.write(data)
            await target.drain()
    finally:
        target.close()


async def serve(port: int, upstream: tuple[str, int], users: dict[str, str], log: Path | None) -> None:
    session = Session(users, upstream, log)
    server = await asyncio.start_server(session.handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def main() -> None:
    port, upstream, users_file = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    host, _, upstream_port = upstream.rpartition(":")
    log = Path(sys.argv[4]) if len(sys.argv) > 4 else None
    asyncio.run(serve(port, (host, int(upstream_port)), json.loads(users_file.read_text()), log))


if __name__ == "__main__":
    main()
