"""The compiled decoding's MAC check (services/signer/_native_rows.c) against its definition, HMAC-SHA256 as the
standard library computes it over the domain and the length-prefixed fields (shared/messages/auth.py): on the
CPU's SHA extensions and through hashlib, for keys shorter and longer than a SHA-256 block, domains and fields
of any length, and every way a message's length can fall against SHA-256's 64-byte blocks and its padding.
A wrong tag is refused, and the worker then refuses the message with the Python path's own words.

A checkout where the compiled module was not built skips these; where it must be built: test_native_built.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.signer import rows, worker
from shared.messages import canonical_event
from shared.messages.auth import MAC_HEADER, Keyring, KeyStates, MessageKey
from tests.unit.signer.test_decode_paths import KEYRING, REDACTOR, Message, outcome
from tests.unit.signer.test_rows import message

compiled = pytest.mark.skipif(rows.decode_usual_row is None, reason="the compiled decoding is not built here or not meant")
EXAMPLES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                            HealthCheck.function_scoped_fixture])
_SHA256_BLOCK = 64
_LENGTH_BYTES = 8


@pytest.fixture(params=[(True, True), (False, True), (True, False)], ids=["cpu", "hashlib", "cpu-without-sha"])
def native(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    """The compiled module, its MAC computed on the CPU's SHA extensions (where they work) or through hashlib;
    or as on a CPU without the extensions, where keys must be made without them too (their instructions would
    kill the process there)."""
    from services.signer import _native_rows  # noqa: PLC0415 - built (the tests using this are marked)

    wanted, present = request.param
    _native_rows.sha_extensions_present(present)
    _native_rows.hash_with_cpu(wanted)
    try:
        yield _native_rows
    finally:
        _native_rows.sha_extensions_present(True)
        _native_rows.hash_with_cpu(True)


def standard_mac(secret: bytes, domain: bytes, fields: tuple[bytes, ...]) -> bytes:
    message_bytes = domain + b"".join(len(field).to_bytes(_LENGTH_BYTES, "big") + field for field in fields)
    return hmac.new(secret, message_bytes, hashlib.sha256).hexdigest().encode()


def entry_of(secret: bytes, domain: bytes) -> KeyStates:
    key = MessageKey.of(secret)
    return Keyring([key]).states_by_header(domain)[key.key_id.encode()]


def altered(mac: bytes, at: int) -> bytes:
    """``mac`` with the hex digit at ``at`` changed to another lowercase hex digit."""
    digit = "0123456789abcdef"[(int(chr(mac[at]), 16) + 1) % 16].encode()
    return mac[:at] + digit + mac[at + 1:]


def check(native: ModuleType, entry: KeyStates, secret: bytes, domain: bytes, fields: tuple[bytes, bytes, bytes],
          at: int) -> None:
    mac = standard_mac(secret, domain, fields)
    assert native.check_mac(entry, *fields, mac) is True
    assert native.check_mac(entry, *fields, altered(mac, at)) is False
    if mac.upper() != mac:  # the header carries lowercase hex, as the Python path's compare_digest requires
        assert native.check_mac(entry, *fields, mac.upper()) is False


@compiled
@EXAMPLES
@given(secret=st.binary(min_size=32, max_size=300), domain=st.binary(max_size=150),
       event_id=st.binary(max_size=128), request_id=st.binary(max_size=64), value=st.binary(max_size=300),
       at=st.integers(0, 63))
def test_the_mac_is_the_standard_hmac_whatever_the_key_domain_and_fields(
        native: ModuleType, secret: bytes, domain: bytes, event_id: bytes, request_id: bytes, value: bytes,
        at: int) -> None:
    entry = entry_of(secret, domain)
    for _ in range(2):  # the key's midstates are made by the first call and reused by the next
        check(native, entry, secret, domain, (event_id, request_id, value), at)


@compiled
@pytest.mark.parametrize("secret", [b"k" * 32, bytes(range(64)), bytes(range(65)), b"\xff" * 200],
                         ids=["32", "64", "65", "200"])
def test_every_length_against_the_blocks_and_the_padding(native: ModuleType, secret: bytes) -> None:
    """The inner hash's input (the key's pad, the domain, three lengths, the fields) ends at every offset of a
    block, at each of the first few blocks, and every value from 0 to 300 bytes; the ids' lengths move the
    domain's and the fields' boundaries too."""
    domain = canonical_event.DOMAIN
    entry = entry_of(secret, domain)
    for event_id, request_id in ((b"e1", b""), (b"e" * 128, b"r" * 64), (b"x" * 45, b"req-1")):
        fixed = _SHA256_BLOCK + len(domain) + 3 * _LENGTH_BYTES + len(event_id) + len(request_id)
        boundaries = [block * _SHA256_BLOCK + offset for block in range(1, 8) for offset in (-9, -8, -1, 0, 1, 55, 56)]
        lengths = set(range(301)) | {total - fixed for total in boundaries if total >= fixed}
        for length in sorted(lengths):
            value = bytes((index * 7 + length) % 256 for index in range(length))
            check(native, entry, secret, domain, (event_id, request_id, value), length % 64)


@compiled
def test_each_key_gets_its_own_midstates_however_many_keys_come_and_go(native: ModuleType) -> None:
    """More keys than the compiled module keeps midstates for, in turn and again: each MAC is its own key's."""
    keys = [(bytes([number]) * (32 + number), b"domain-%d" % number) for number in range(20)]
    entries = [entry_of(secret, domain) for secret, domain in keys]
    fields = (b"e1", b"", b'{"a": 1}')
    for _ in range(2):
        for (secret, domain), entry in zip(keys, entries, strict=True):
            check(native, entry, secret, domain, fields, 5)
            other = entries[(entries.index(entry) + 1) % len(entries)]
            assert native.check_mac(other, *fields, standard_mac(secret, domain, fields)) is False


def _signed(request_id: str | None) -> Message:
    value = json.dumps(message()).encode()
    return Message(value, canonical_event.encode_value("e1", value, REDACTOR, request_id))


def _with_mac(msg: Message, mac: bytes) -> Message:
    return Message(msg.value, [(name, mac if name == MAC_HEADER else raw) for name, raw in msg.headers])


def _read(msg: Message) -> tuple[str, Any]:
    """What the worker makes of ``msg``: its row, or the class and text of its refusal."""
    return outcome(lambda: worker.decode_authenticated_row(msg, KEYRING))


def _python_path(msg: Message) -> tuple[str, Any]:
    with mock.patch.object(worker, "decode_usual_row", None):
        return _read(msg)


@compiled
@pytest.mark.parametrize("request_id", [None, "req-1"])
def test_a_wrong_tag_is_left_to_the_python_path_and_refused_in_its_words(native: ModuleType,
                                                                         request_id: str | None) -> None:
    assert rows.decode_usual_row is not None
    states = KEYRING.states_by_header(canonical_event.DOMAIN)
    msg = _signed(request_id)
    assert rows.decode_usual_row(msg.value, msg.headers, states) is not None
    mac = dict(msg.headers)[MAC_HEADER]
    refusal = ("InvalidMessage", "canonical event: message authentication failed (forged or altered)")
    wrong = [_with_mac(msg, altered(mac, at)) for at in (0, 31, 63)]
    wrong.append(_with_mac(msg, mac.upper()))
    wrong.append(Message(msg.value.replace(b"}", b" }", 1), msg.headers))  # the value altered, the tag kept
    for forged in wrong:
        assert rows.decode_usual_row(forged.value, forged.headers, states) is None
        assert _read(forged) == refusal
        assert _python_path(forged) == refusal


@compiled
def test_the_cpus_sha_extensions_are_used_where_it_has_them() -> None:
    """The start-up check found them to agree with hashlib (else the MAC would quietly go through hashlib)."""
    from services.signer import _native_rows  # noqa: PLC0415 - built (the test is marked)

    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""
    if " sha_ni" not in flags or " sse4_1" not in flags or " ssse3" not in flags:
        pytest.skip("this CPU has no SHA extensions")
    assert _native_rows.hash_with_cpu(True) is True


@compiled
def test_an_entry_without_the_keys_prefixes_is_refused_not_crashed_on() -> None:
    from services.signer import _native_rows  # noqa: PLC0415 - built (the test is marked)

    value = json.dumps(message()).encode()
    headers = canonical_event.encode_value("e1", value, REDACTOR)
    scope = KEYRING.states_by_header(canonical_event.DOMAIN)[REDACTOR.key_id.encode()][2:]
    for prefixes in ((b"short", bytes(64)), (bytes(64), bytes(63)), ("text" * 16, bytes(64)), (bytes(80), None)):
        with pytest.raises(TypeError):
            _native_rows.decode(value, headers, {REDACTOR.key_id.encode(): (*prefixes, *scope)})


def test_the_keys_pads_handed_to_the_compiled_decoding_never_show_in_a_repr() -> None:
    secret = bytes(range(32, 64))
    states = Keyring([MessageKey.of(secret)]).states_by_header(canonical_event.DOMAIN)
    inner, outer, _, _ = next(iter(states.values()))
    shown = repr(states) + str(inner) + str(outer) + f"{inner} {outer!r}"
    assert inner[:_SHA256_BLOCK] == bytes(byte ^ 0x36 for byte in secret.ljust(_SHA256_BLOCK, b"\0"))
    assert inner[_SHA256_BLOCK:] == canonical_event.DOMAIN
    for revealing in (bytes(inner), bytes(outer), bytes(inner)[:8], bytes(outer)[:8]):
        assert repr(revealing)[2:-1] not in shown
    assert "64 bytes of key material" in shown


def test_a_compiled_module_built_from_older_sources_leaves_every_message_to_the_python_path() -> None:
    """Its configure takes other arguments (TypeError): the decoder is as good as not built, not an import
    error of the signer."""
    native = pytest.importorskip("services.signer._native_rows")
    if rows.PURE_PYTHON_MEANT:
        pytest.skip("the pure-Python path is meant: the compiled module is not configured")
    with mock.patch.object(native, "configure", side_effect=TypeError("an unexpected keyword argument")):
        assert rows._compiled_decoder() is None
