"""Signing many row hashes at once: in the signer's own process, or on a helper process beside it.

Ed25519 signing is a third of the signer's work per row. PyNaCl releases the GIL while it signs, but a
signing thread next to the busy event loop still waits for the GIL after every signature (the interpreter
hands it over only every few milliseconds), so a thread does not help. A helper process does: the event
loop writes row hashes to its stdin and reads the signatures back from its stdout, in order, without
threads. The seed goes over the pipe, never on a command line or into the environment: the helper starts
with a scrubbed environment (``helper_environment``), so a key the signer took from ``AUDIT_SIGNING_KEY``
(or any other secret in its environment) is not inherited. The helper runs at a lower CPU priority than the
signer (see ``HELPER_NICENESS``).

Wire format, both ways in order: request = 4-byte big-endian count, then count 32-byte hashes;
response = count 64-byte signatures. The signatures are one stream in request order, so the requests of
several callers can go out as one: the signer writes what its callers asked for in a short while together
(``_WRITE_AFTER_S``, or at once from ``_WRITE_AT`` hashes), a write and a wake-up of the helper per few
hundred hashes rather than per caller's chunk.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import struct
import sys
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Protocol, cast

from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _sodium
from nacl.bindings import crypto_sign_seed_keypair

from shared.keys import SIGNATURE_BYTES, Ed25519Signer, Signer

_DIGEST_BYTES = 32
# Signatures have slack: a batch needs them only when it is written, while hashing the next batch and the
# database's write of the last one are what the signer waits on. Where they share cores, those go first.
HELPER_NICENESS = 10
_COUNT = struct.Struct(">I")
# Hashes asked for are written to the helper together: once this many wait, or this long after the first
# (far less than a batch's append takes, while the helper signs these in a few milliseconds).
_WRITE_AT = 256
_WRITE_AFTER_S = 0.001
# All the helper needs to find the interpreter and this package; nothing else of the signer's environment
# (which may hold the key itself, database passwords, Kafka credentials) crosses over.
_HELPER_ENVIRONMENT = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def helper_environment(parent: dict[str, str] | None = None) -> dict[str, str]:
    source = os.environ if parent is None else parent
    return {name: source[name] for name in _HELPER_ENVIRONMENT if name in source}


class BatchSigner(Protocol):
    """Signs row hashes; the results come back in the order of ``digests``. ``sign_many`` may hand back a
    future rather than a coroutine (the helper does: no task per request)."""

    def sign_many(self, digests: Sequence[bytes]) -> Awaitable[list[bytes]]: ...

    async def close(self) -> None: ...


class InlineSigner:
    """Signs on the event loop's thread."""

    def __init__(self, signer: Signer) -> None:
        self._sign = signer.sign

    async def sign_many(self, digests: Sequence[bytes]) -> list[bytes]:
        return [self._sign(digest) for digest in digests]

    async def close(self) -> None:
        return None


class TreeHeadsOnly:
    """``SIGNING_MODE=batch`` (a prototype): rows get no signature of their own (an empty one); the signed tree
    head written with each committed batch covers them instead (docs/auditing.md, "Signing per batch")."""

    async def sign_many(self, digests: Sequence[bytes]) -> list[bytes]:
        return [b""] * len(digests)

    async def close(self) -> None:
        return None


class SigningHelperError(Exception):
    """The helper process stopped answering; the signer stops too, and its stored offsets make a restart safe."""


class _HelperAnswers(asyncio.SubprocessProtocol):
    """The signer's end of the helper's pipes: each request's future, answered in order as the helper's stdout
    brings its signatures. No reader task and no stream: the loop hands the bytes over as they arrive, and one
    read may answer several requests."""

    def __init__(self) -> None:
        # asyncio.subprocess.Process reads these; the pipes are this protocol's own.
        self.stdin = self.stdout = self.stderr = None
        self.waiting: deque[tuple[int, asyncio.Future[list[bytes]]]] = deque()
        self.stopped = False
        self._received = bytearray()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        if fd != 1:
            return
        received = self._received
        received += data
        waiting = self.waiting
        while waiting and len(received) >= waiting[0][0] * SIGNATURE_BYTES:
            count, future = waiting.popleft()
            size = count * SIGNATURE_BYTES
            answer = bytes(received[:size])
            del received[:size]
            if not future.done():  # a caller that gave up (cancelled) does not shift the answers of the others
                future.set_result([answer[i : i + SIGNATURE_BYTES] for i in range(0, size, SIGNATURE_BYTES)])

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        # The end of its stdout, or a broken stdin (not the stdin the signer closes itself): nothing more comes.
        if fd == 1 or exc is not None:
            self.fail_waiting(SigningHelperError("the signing helper exited"))

    def process_exited(self) -> None:
        # What it wrote before exiting still arrives (then the end of stdout fails the rest): only new requests
        # are refused from here.
        self.stopped = True

    def fail_waiting(self, error: SigningHelperError) -> None:
        self.stopped = True
        while self.waiting:
            _, future = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)


class HelperProcessSigner:
    """Signs on a child process; requests are pipelined, so the loop never waits for one to finish."""

    def __init__(self, transport: asyncio.SubprocessTransport, answers: _HelperAnswers, public_key: bytes) -> None:
        self._transport = transport
        self._answers = answers
        # Kept: asyncio.get_running_loop() asks the kernel for the process id each time (a system call), and
        # sign_many needs the loop for every chunk of a batch.
        self._loop = asyncio.get_running_loop()
        self._process = asyncio.subprocess.Process(transport, answers, self._loop)
        # uvloop's pipe transports are not registered as asyncio.WriteTransport: no isinstance check here.
        self._stdin = cast(asyncio.WriteTransport, transport.get_pipe_transport(0))
        self._public_key = public_key
        self._closed = False
        # Hashes asked for and not yet written to the helper (their futures already wait, in order).
        self._unwritten: list[bytes] = []
        self._write_timer: asyncio.TimerHandle | None = None

    @classmethod
    async def start(cls, signer: Ed25519Signer) -> HelperProcessSigner:
        transport, answers = await asyncio.get_running_loop().subprocess_exec(
            _HelperAnswers,
            sys.executable,
            "-m",
            __name__,
            str(HELPER_NICENESS),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=helper_environment(),
        )
        helper = cls(transport, answers, signer.public_key)
        helper._stdin.write(signer.seed_b64().encode() + b"\n")
        # The helper must sign with this very key: check one signature before trusting it with rows.
        probe = bytes(_DIGEST_BYTES)
        try:
            (signature,) = await helper.sign_many([probe])
        except BaseException:
            await helper.close()
            raise
        if signature != signer.sign(probe):
            await helper.close()
            raise SigningHelperError("the signing helper signs with a different key")
        return helper

    def sign_many(self, digests: Sequence[bytes]) -> asyncio.Future[list[bytes]]:
        """A future of the signatures. The request is written with the others of the next millisecond and not
        drained: what is in flight is bounded by the worker (its batch in flight and the one waiting), a few
        hundred kilobytes at most."""
        future: asyncio.Future[list[bytes]] = self._loop.create_future()
        if not digests:
            future.set_result([])
        elif self._closed or self._answers.stopped or self._stdin.is_closing():
            future.set_exception(SigningHelperError("the signing helper has stopped"))
        else:
            self._answers.waiting.append((len(digests), future))
            unwritten = self._unwritten
            unwritten += digests
            if len(unwritten) >= _WRITE_AT:
                self._write()
            elif self._write_timer is None:
                self._write_timer = self._loop.call_later(_WRITE_AFTER_S, self._write)
        return future

    def _write(self) -> None:
        """The hashes asked for so far, to the helper as one request."""
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        unwritten, self._unwritten = self._unwritten, []
        # A helper that stopped meanwhile fails their futures itself (the end of its stdout).
        if unwritten and not self._stdin.is_closing():
            self._stdin.write(_COUNT.pack(len(unwritten)) + b"".join(unwritten))

    async def close(self) -> None:
        self._closed = True
        self._write()
        if self._transport.get_returncode() is None:
            self._stdin.close()
            # Its answers are read until it has exited: the helper blocks on a full stdout pipe until they are,
            # and the process counts as exited only once that pipe reaches its end.
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._transport.kill()
                await self._process.wait()
        self._answers.fail_waiting(SigningHelperError("the signing helper was closed"))
        self._transport.close()


def sign_digests(secret_key: bytes, data: bytes) -> bytes:
    """The Ed25519 signatures of the 32-byte digests in ``data``, concatenated in order: what ``Signer.sign``
    gives for each, from libsodium's ``crypto_sign`` (the call PyNaCl's own wraps) into one buffer.

    ``crypto_sign`` writes the signature then a copy of the message; signature i goes at offset 64 * i, so the
    copy of its message lands where signature i + 1 is written next. Per signature, that leaves out the buffer,
    the length pointer and the copy PyNaCl's wrapper makes, about a tenth of the time of a signature."""
    count = len(data) // _DIGEST_BYTES
    signed = _ffi.new("unsigned char[]", count * SIGNATURE_BYTES + _DIGEST_BYTES)
    sign = _sodium.crypto_sign
    for index in range(count):
        if sign(signed + index * SIGNATURE_BYTES, _ffi.NULL, data[index * _DIGEST_BYTES : (index + 1) * _DIGEST_BYTES],
                _DIGEST_BYTES, secret_key) != 0:
            raise RuntimeError("libsodium could not sign")
    signatures: bytes = _ffi.buffer(signed, count * SIGNATURE_BYTES)[:]
    return signatures


def _serve() -> None:
    """The helper's side: reads the seed, then answers requests until its stdin closes."""
    os.nice(int(sys.argv[1]) if len(sys.argv) > 1 else 0)  # lower priority only: never needs privileges
    # Its life is the signer's: it ends when its stdin closes, not on the Ctrl-C meant for the signer.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    seed = Ed25519Signer.from_seed_b64(stdin.readline().decode()).seed_b64()  # checked as the signer checks it
    _, secret_key = crypto_sign_seed_keypair(base64.b64decode(seed))
    while True:
        header = stdin.read(_COUNT.size)
        if len(header) < _COUNT.size:
            return
        (count,) = _COUNT.unpack(header)
        data = stdin.read(count * _DIGEST_BYTES)
        if len(data) < count * _DIGEST_BYTES:
            return
        stdout.write(sign_digests(secret_key, data))
        stdout.flush()


if __name__ == "__main__":
    _serve()
