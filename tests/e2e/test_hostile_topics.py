"""Topics are untrusted input, end to end: the real redactor and signer processes, fed hostile messages
between good ones (seeded; ``AUDIT_FUZZ_MESSAGES`` for a longer run), chain every good event, chain nothing
else, dead-letter each hostile message once, and keep running. And event ids bind content: a different
event claiming a session and sequence is kept and flagged, never dropped."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Hashable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.auditctl.ops.deadletter import DeadLetter
from services.auditctl.ops.reader import Record
from shared import otlp
from shared.canonical import CanonicalEvent
from shared.db.pool import connect
from shared.kafka import make_producer
from shared.messages import dead_letter
from shared.messages.auth import load_signing_key
from tests.conftest import Infra, Topics
from tests.e2e.harness import Pipeline
from tests.e2e.ops_support import all_chains_verify, auditctl
from tests.fuzz_support import COUNT, INTRUDER, SEED, good_raw, hostile_canonical, hostile_raw, random_headers, rng
from tests.messages_support import canonical_message, raw_headers
from tests.unit.receiver.payloads import log_body

TENANT = "tenant-acme"
RECORDS = 2


async def _rows(dsn: str) -> list[asyncpg.Record]:
    conn = await connect(dsn)
    try:
        return list(await conn.fetch(
            "SELECT tenant_id, event_id, session_id, event_sequence, event_type, sequence_conflict FROM audit_logs"))
    finally:
        await conn.close()


async def _wait_rows(dsn: str, count: int, timeout: float = 120) -> list[asyncpg.Record]:
    deadline = time.monotonic() + timeout
    while True:
        rows = await _rows(dsn)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.3)


async def _read_dead_letters(bootstrap: str, topic: str, count: int,
                             key_of: Callable[[DeadLetter], Hashable | None], timeout: float = 60,
                             ) -> dict[Hashable, DeadLetter]:
    """Dead letters keyed by ``key_of`` (None: not wanted), read from the start of ``topic`` until ``count`` keys.

    Dead letters are at least once (a stage that re-reads a partition after a rebalance sends its dead letters
    again), so a key names the failed message, not the letter. Read with a plain consumer, not up to the end
    offsets: the local broker undercounts those for partitions written in batches of several messages.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    letters: dict[Hashable, DeadLetter] = {}
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout
        while len(letters) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    letter = DeadLetter.from_record(Record.from_consumer(message))
                    key = key_of(letter)
                    if key is not None:
                        letters[key] = letter
    finally:
        await consumer.stop()
    return letters


async def _dead_letters(bootstrap: str, topic: str, count: int, timeout: float = 60) -> Counter[str]:
    """Messages dead-lettered, by stage, once there are ``count``; the reasons show when a count is wrong.
    A message is counted once: told apart by its stage and where the failed message was."""

    def where(letter: DeadLetter) -> tuple[str, str]:
        return letter.stage, letter.source if letter.source_topic else f"dead letter {letter.ref}"

    letters = await _read_dead_letters(bootstrap, topic, count, where, timeout)
    reasons = Counter(f"{letter.stage}: {letter.error[:100]}" for letter in letters.values())
    print("dead letters:", *reasons.most_common(), sep="\n  ")
    return Counter(letter.stage for letter in letters.values())


def _alive(pipe: Pipeline, *names: str) -> None:
    assert pipe.group is not None
    for name in names:
        assert pipe.group.processes[name].poll() is None, f"{name} exited:\n{pipe.log_of(name)[-3000:]}"


def _event(index: int) -> CanonicalEvent:
    at = datetime(2026, 11, 28, 15, 13, 7, tzinfo=UTC)
    return CanonicalEvent(event_id=f"fuzz-canonical-{SEED}-{index}", tenant_id=TENANT, org_id="acme", license_id="l",
                          plane="claude_code", event_type="api_request", event_time=at, received_at=at,
                          session_id="c-s", event_sequence=index, input_tokens=index)


async def test_hostile_raw_and_canonical_messages_between_good_ones_change_nothing_but_the_dead_letters(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path
) -> None:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start("redactor", "signer")
    r = rng()
    producer = make_producer(infra.bootstrap, 16 * 1024 * 1024)
    await producer.start()
    good_raw_count = good_canonical_count = hostile_raw_count = hostile_canonical_count = 0
    template = canonical_message(_event(0))[1]
    try:
        for index in range(COUNT):
            body = log_body(RECORDS, text=f"fuzz {SEED} {index}", attributes={"session.id": f"s-{SEED}-{index}"})
            key, value, headers = good_raw(body, "logs", TENANT, f"good-{index}")
            await producer.send(topics.raw_logs, value, key=key, headers=headers)
            good_raw_count += 1
            key, value, headers = hostile_raw(r, body, "logs", TENANT)
            await producer.send(topics.raw_logs, value, key=key, headers=headers)
            hostile_raw_count += 1
            key, value, headers = canonical_message(_event(index + 1))
            await producer.send(topics.canonical, value, key=key, headers=headers)
            good_canonical_count += 1
            key, value, headers = hostile_canonical(r, template, TENANT)
            await producer.send(topics.canonical, value, key=key, headers=headers)
            hostile_canonical_count += 1
        await producer.flush()
    finally:
        await producer.stop()
    try:
        expected = good_raw_count * RECORDS + good_canonical_count
        rows = await _wait_rows(database_url, expected)
        stages = await _dead_letters(infra.bootstrap, topics.dead_letter, hostile_raw_count + hostile_canonical_count)
        await asyncio.sleep(1)  # anything extra (a forged row, a second dead letter) would show by now
        rows = await _rows(database_url)
        assert len(rows) == expected, (len(rows), expected)
        assert {row["tenant_id"] for row in rows} == {TENANT}  # nothing injected into another tenant's chain
        assert not any(row["event_id"].startswith(("forged-", "huge-")) for row in rows)
        assert stages == {"redactor": hostile_raw_count, "signer": hostile_canonical_count}, stages
        _alive(pipe, "redactor", "signer")
        assert await all_chains_verify(database_url)
        for name in ("redactor", "signer"):
            assert "Traceback" not in pipe.log_of(name)
    finally:
        pipe.stop()


def _real_and_fake(fixtures_dir: Path) -> tuple[otlp.ExportLogsServiceRequest, otlp.ExportLogsServiceRequest]:
    """The real capture, and a colleague's forgery: only its tool_decision, same session and sequence, with
    the opposite decision."""
    real = otlp.decode_request((fixtures_dir / "logs-tool-session.pb").read_bytes(), otlp.Encoding.PROTOBUF,
                               otlp.ExportLogsServiceRequest)
    for resource_logs in real.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                if any(a.key == "decision" for a in record.attributes):
                    fake = otlp.ExportLogsServiceRequest()
                    target = fake.resource_logs.add()
                    target.resource.CopyFrom(resource_logs.resource)
                    scope = target.scope_logs.add()
                    scope.scope.CopyFrom(scope_logs.scope)
                    forged = scope.log_records.add()
                    forged.CopyFrom(record)
                    for attribute in forged.attributes:
                        if attribute.key == "decision":
                            value = attribute.value.string_value
                            attribute.value.string_value = "reject" if value == "accept" else "accept"
                    return real, fake
    raise AssertionError("the capture has no tool_decision")


async def test_a_fake_event_on_a_colleagues_session_sequence_no_longer_hides_the_real_one(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path, fixtures_dir: Path
) -> None:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start()
    try:
        token = await pipe.licence("acme", tenant=TENANT)
        real, fake = _real_and_fake(fixtures_dir)  # the forgery is sent before the real batch arrives
        count = otlp.count_log_records(real)
        for body in (fake.SerializeToString(), real.SerializeToString(), real.SerializeToString()):  # + a retry
            response = await pipe.post("/v1/logs", body, org="acme", token=token,
                                       content_type="application/x-protobuf")
            assert response.status_code == 200
        rows = await _wait_rows(database_url, count + 1)
        await asyncio.sleep(1)
        rows = await _rows(database_url)
        assert len(rows) == count + 1  # every real event, the fake one too, and the retry deduplicated
        flagged = [row for row in rows if row["sequence_conflict"]]
        assert len(flagged) == 2 and len({(r["session_id"], r["event_sequence"]) for r in flagged}) == 1
        assert {row["event_type"] for row in flagged} == {"tool_decision"}
        assert "sequence conflict" in pipe.log_of("signer")
        assert await all_chains_verify(database_url)
    finally:
        pipe.stop()


async def test_requeueing_hostile_dead_letters_between_good_ones_lands_the_good_ones_only(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path
) -> None:
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path,
                    extra_env={"TOPIC_DEAD_LETTER_REQUEUED": f"{topics.dead_letter}.requeued"})
    pipe.start("redactor", "signer")
    r = rng()
    producer = make_producer(infra.bootstrap, 16 * 1024 * 1024)
    await producer.start()
    good = injected = unreadable = 0
    try:
        async def put(value: bytes | None, headers: list[tuple[str, bytes]], key: bytes | None = TENANT.encode()) -> None:
            await (await producer.send(topics.dead_letter, value, key=key, headers=headers))

        def context(source: str, original: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
            return dead_letter.encode_headers(source, 0, r.randrange(10**6), "RuntimeError: since fixed", "redactor",
                                              original)

        for index in range(COUNT):
            body = log_body(RECORDS, text=f"requeue {SEED} {index}", attributes={"session.id": f"q-{SEED}-{index}"})
            await put(body, context(topics.raw_logs, raw_headers(body, tenant=TENANT, request_id=f"good-{index}")))
            good += 1
            choice = r.randrange(6)
            if choice == 0:  # not a dead letter at all
                await put(r.randbytes(r.randrange(200)), random_headers(r), key=None)
                unreadable += 1
            elif choice == 1:  # context headers that overflowed or were refused
                await put(body, [*context(topics.raw_logs, [])[:-1], ("dlq.failed_at", b"9" * 400)])
                unreadable += 1
            elif choice == 2:  # a requeue as a way in: an unsigned batch for another tenant
                unsigned = [(k, v) for k, v in raw_headers(body, tenant="globex") if not k.startswith("auth.")]
                await put(body, context(topics.raw_logs, unsigned))
                injected += 1
            elif choice == 3:  # signed, but another tenant's name put on it
                signed = [(k, b"globex" if k == "tenant" else v) for k, v in raw_headers(body, tenant=TENANT)]
                await put(body, context(topics.raw_logs, signed))
                injected += 1
            elif choice == 4:  # a canonical event an intruder signed
                _, value, headers = canonical_message(_event(10_000 + index), key=INTRUDER)
                await put(value, context(topics.canonical, headers))
                injected += 1
            else:  # a target that is not a pipeline input
                await put(body, context("some.other.topic", raw_headers(body, tenant=TENANT)))
                unreadable += 1
    finally:
        await producer.stop()
    try:
        env = pipe.env()
        listing = auditctl(env, "dlq", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        requeue = auditctl(env, "dlq", "requeue", "--all")
        assert requeue.returncode == 0, requeue.stdout + requeue.stderr
        assert f"requeued {good + injected} dead letter" in requeue.stdout, requeue.stdout
        expected = good * RECORDS
        await _wait_rows(database_url, expected)
        # Each injected one comes back as a new dead letter: requeue never authenticates anything itself.
        before = good + injected + unreadable
        stages = await _dead_letters(infra.bootstrap, topics.dead_letter, before + injected)
        await asyncio.sleep(1)
        rows = await _rows(database_url)
        assert len(rows) == expected and {row["tenant_id"] for row in rows} == {TENANT}
        assert sum(stages.values()) == before + injected, stages
        _alive(pipe, "redactor", "signer")
        assert await all_chains_verify(database_url)
    finally:
        pipe.stop()


async def test_a_producer_key_signs_only_its_own_planes_the_rest_is_dead_lettered_with_a_reason(
    infra: Infra, database_url: str, topics: Topics, tmp_path: Path
) -> None:
    """The reporter (internet-facing) holds a key for access events only, auditctl one for erasures only, and
    the redactors' key signs anything but those: a key used outside its keyring scope chains nothing."""
    pipe = Pipeline(database_url, infra.bootstrap, topics, tmp_path)
    pipe.start("signer")
    keys = pipe.message_keys()
    reporter = load_signing_key(keys["REPORTER_ACCESS_AUTH_KEY_FILE"], "REPORTER_ACCESS_AUTH_KEY_FILE")
    auditctl_key = load_signing_key(keys["AUDITCTL_EVENTS_AUTH_KEY_FILE"], "AUDITCTL_EVENTS_AUTH_KEY_FILE")
    redactor = load_signing_key(keys["CANONICAL_AUTH_KEY_FILE"], "CANONICAL_AUTH_KEY_FILE")
    secret = "scope-secret-prompt-text"

    def access(event_id: str) -> CanonicalEvent:
        return dataclasses.replace(_event(0), event_id=event_id, plane="access", event_type="access",
                                   session_id=None, event_sequence=None, input_tokens=None)

    good = [(access("scope-access-by-reporter"), reporter), (_event(1), redactor)]
    outside = [
        (dataclasses.replace(_event(2), event_id="scope-prompt-by-reporter", tenant_id="globex",
                             content={"prompt": secret}),
         reporter),  # the internet-facing reporter forging a redacted event for another tenant
        (access("scope-access-by-redactor"), redactor),  # the redactors forging an access record
        (dataclasses.replace(_event(3), event_id="scope-access-type-by-redactor", event_type="access"), redactor),
        (access("scope-access-by-auditctl"), auditctl_key),
    ]
    producer = make_producer(infra.bootstrap, 16 * 1024 * 1024)
    await producer.start()
    try:
        for event, key in [*outside, *good]:
            message_key, value, headers = canonical_message(event, key)
            await producer.send(topics.canonical, value, key=message_key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()
    try:
        rows = await _wait_rows(database_url, len(good))
        letters = await _scope_dead_letters(infra.bootstrap, topics.dead_letter, len(outside))
        await asyncio.sleep(1)
        rows = await _rows(database_url)
        assert sorted(row["event_id"] for row in rows) == sorted(event.event_id for event, _ in good)
        assert sorted(letters) == sorted(event.event_id for event, _ in outside), letters
        for event, key in outside:
            error = letters[event.event_id]
            assert f"key {key.label} ({key.key_id}) may not sign" in error, error
            assert secret not in error and "globex" not in error
        _alive(pipe, "signer")
        assert await all_chains_verify(database_url)
    finally:
        pipe.stop()


async def _scope_dead_letters(bootstrap: str, topic: str, count: int, timeout: float = 60) -> dict[str, str]:
    """The signer's dead letters by the event id of the failed message, with their reasons."""

    def event_id(letter: DeadLetter) -> str | None:
        return letter.original_headers.get("event_id", "") if letter.stage == "signer" else None

    letters = await _read_dead_letters(bootstrap, topic, count, event_id, timeout)
    return {str(key): letter.error for key, letter in letters.items()}
