"""Trust anchors kept outside PostgreSQL: the checkpoint witness and the pinned (trusted) signing keys.

Whoever can write to the database can delete rows, rewind the chain heads and checkpoints, or enrol a key
of their own. What they cannot do is reach a store they hold no credentials for. The witness is such a
store: every signed checkpoint is published to it as it is made, and it keeps the public keys an operator
enrolled. ``auditctl verify`` reads both from there, not from the database.

Two kinds of witness, with one record format (docs/auditing.md, "Trust anchors"):
- a directory (``CHECKPOINT_WITNESS_DIR``): ``checkpoints/<tenant>.jsonl``, one JSON object a line, appended
  and fsync'd, never rewritten; and ``trusted-keys.jsonl``, one enrolled key a line;
- an S3-compatible bucket with Object Lock (``CHECKPOINT_WITNESS_S3_BUCKET``): one object per record,
  ``checkpoints/<tenant>/<chain_seq, 20 digits>.json`` and ``keys/<key_id>.json``, each written once in
  COMPLIANCE mode, so not even the bucket's owner can change or delete it before its retention ends.

A witness record is a JSON object. A checkpoint record holds every column of its ``chain_checkpoints`` row
(bytea as lower-case hex, timestamps as ``YYYY-MM-DDTHH:MM:SS.ffffffZ``); the publisher copies whatever
columns the table has, so columns added later (a Merkle tree head, say) are published without a change
here. Readers ignore members they do not know.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from shared.chain import format_timestamp
from shared.keys import key_id_for

CHECKPOINTS = "checkpoints"
TRUSTED_KEYS = "trusted-keys.jsonl"


class WitnessError(Exception):
    """The witness cannot be read or written (unreachable, misconfigured); publishing retries later."""


def json_value(value: Any) -> Any:
    """One column value as it appears in a witness record."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Decimal):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool | list | dict):
        return value
    return str(value)


def checkpoint_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A witness record of a checkpoint: every column of its ``chain_checkpoints`` row, in JSON."""
    return {str(column): json_value(value) for column, value in row.items()}


def tenant_file_name(tenant_id: str) -> str:
    """A tenant id made safe as one path segment: percent-encoding of every byte outside ``A-Za-z0-9_.-~``,
    and a leading dot encoded too (never a hidden file, never ``..``)."""
    encoded = urllib.parse.quote(tenant_id, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


@dataclass(frozen=True)
class TrustedKey:
    """One enrolled signing key, as the pinned keys file holds it."""

    key_id: str
    public_key: bytes
    enrolled_at: datetime
    note: str = ""

    def record(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "algorithm": "ed25519",
            "public_key": base64.b64encode(self.public_key).decode(),
            "enrolled_at": format_timestamp(self.enrolled_at),
            "note": self.note,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TrustedKey:
        public_key = base64.b64decode(str(record["public_key"]), validate=True)
        if len(public_key) != 32:
            raise ValueError("a pinned public key must be 32 bytes")
        # The id is recomputed, never taken from the file.
        return cls(key_id_for(public_key), public_key, datetime.fromisoformat(str(record["enrolled_at"])),
                   str(record.get("note", "")))


class Witness(Protocol):
    """Where checkpoints and pinned keys are kept, outside the database. Calls block: run them in a thread."""

    @property
    def description(self) -> str: ...

    def publish(self, tenant_id: str, records: Sequence[Mapping[str, Any]]) -> int:
        """Append ``records`` (one tenant's checkpoints, ascending ``chain_seq``), skipping those already
        published; returns how many were new. Safe to repeat after a crash."""
        ...

    def checkpoint_records(self) -> list[dict[str, Any]]: ...

    def enroll(self, key: TrustedKey) -> bool:
        """Pin ``key``; False when it was pinned already."""
        ...

    def trusted_keys(self) -> list[TrustedKey]: ...

    def location(self, tenant_id: str, chain_seq: int) -> str:
        """Where the record of this checkpoint is (or will be) kept, for people to look it up."""
        ...


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _last_line(handle: Any) -> bytes | None:
    """The last complete line of an open binary file, read backwards from its end."""
    handle.seek(0, os.SEEK_END)
    end = handle.tell()
    if end == 0:
        return None
    chunk, position, tail = 4096, end, b""
    while position > 0:
        step = min(chunk, position)
        position -= step
        handle.seek(position)
        block: bytes = handle.read(step)
        tail = block + tail
        stripped = tail.rstrip(b"\n")
        cut = stripped.rfind(b"\n")
        if cut >= 0:
            return stripped[cut + 1 :]
    rest: bytes = tail.rstrip(b"\n")
    return rest or None


def _parse_lines(data: bytes) -> list[dict[str, Any]]:
    records = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by a crash mid-write: it was never acknowledged
        if isinstance(record, dict):
            records.append(record)
    return records


@dataclass
class DirectoryWitness:
    """The local witness: append-only, fsync'd JSON-lines files in a directory."""

    root: Path
    _last_seq: dict[str, int] = field(default_factory=dict)

    @property
    def description(self) -> str:
        return f"witness directory {self.root}"

    def _tenant_path(self, tenant_id: str) -> Path:
        return self.root / CHECKPOINTS / f"{tenant_file_name(tenant_id)}.jsonl"

    def _append(self, path: Path, lines: Iterable[bytes]) -> None:
        created = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"".join(lines))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)

    def publish(self, tenant_id: str, records: Sequence[Mapping[str, Any]]) -> int:
        if not records:
            return 0
        path = self._tenant_path(tenant_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("a+b") as handle:
                # One publisher at a time per file, even across processes: the last line decides what is new.
                fcntl.flock(handle, fcntl.LOCK_EX)
                last = _last_line(handle)
                handle.seek(0, os.SEEK_END)
                torn = handle.tell() > 0 and not _ends_with_newline(handle)
                last_seq = 0
                if last is not None:
                    try:
                        last_seq = int(json.loads(last)["chain_seq"])
                    except (ValueError, KeyError, TypeError):
                        last_seq = self._last_seq.get(tenant_id, 0)
                fresh = [r for r in records if int(r["chain_seq"]) > last_seq]
                if fresh:
                    lines = [b"\n"] if torn else []
                    lines += [json.dumps(dict(r), separators=(",", ":"), sort_keys=True).encode() + b"\n"
                              for r in fresh]
                    self._append(path, lines)
                    self._last_seq[tenant_id] = int(fresh[-1]["chain_seq"])
                return len(fresh)
        except OSError as exc:
            raise WitnessError(f"cannot write {path}: {exc}") from exc

    def checkpoint_records(self) -> list[dict[str, Any]]:
        folder = self.root / CHECKPOINTS
        if not folder.is_dir():
            return []
        records: list[dict[str, Any]] = []
        for path in sorted(folder.glob("*.jsonl")):
            records.extend(_parse_lines(path.read_bytes()))
        return records

    def enroll(self, key: TrustedKey) -> bool:
        if any(k.key_id == key.key_id for k in self.trusted_keys()):
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        self._append(self.root / TRUSTED_KEYS, [json.dumps(key.record(), sort_keys=True).encode() + b"\n"])
        return True

    def trusted_keys(self) -> list[TrustedKey]:
        path = self.root / TRUSTED_KEYS
        if not path.exists():
            return []
        return [TrustedKey.from_record(record) for record in _parse_lines(path.read_bytes())]

    def location(self, tenant_id: str, chain_seq: int) -> str:
        return f"{self._tenant_path(tenant_id)}#chain_seq={chain_seq}"


def _ends_with_newline(handle: Any) -> bool:
    handle.seek(-1, os.SEEK_END)
    return bool(handle.read(1) == b"\n")


class S3Witness:
    """The production witness: an S3-compatible bucket with Object Lock, one write-once object per record."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", retention: timedelta = timedelta(days=2557)):
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention = retention

    @classmethod
    def connect(cls, bucket: str, *, prefix: str = "", endpoint_url: str | None = None, region: str | None = None,
                retention: timedelta = timedelta(days=2557)) -> S3Witness:
        import boto3  # type: ignore[import-untyped]  # noqa: PLC0415 - loaded only where a bucket is used

        client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)
        return cls(client, bucket, prefix, retention)

    @property
    def description(self) -> str:
        return f"witness bucket s3://{self.bucket}/{self.prefix}"

    def check_object_lock(self) -> None:
        """Refuse a bucket without Object Lock: its records could be overwritten or deleted."""
        try:
            config = self._client.get_object_lock_configuration(Bucket=self.bucket)
        except Exception as exc:
            raise WitnessError(f"bucket {self.bucket} has no Object Lock configuration: {exc}") from exc
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise WitnessError(f"bucket {self.bucket} does not have Object Lock enabled")

    def _checkpoint_key(self, tenant_id: str, chain_seq: int) -> str:
        return f"{self.prefix}{CHECKPOINTS}/{tenant_file_name(tenant_id)}/{chain_seq:020d}.json"

    def _exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]  # noqa: PLC0415

        try:
            self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def _put_once(self, key: str, record: Mapping[str, Any]) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        body = json.dumps(dict(record), separators=(",", ":"), sort_keys=True).encode()
        try:
            if self._exists(key):
                return False
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType="application/json",
                ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=datetime.now(UTC) + self.retention,
                ChecksumAlgorithm="SHA256",
            )
        except (BotoCoreError, ClientError) as exc:
            raise WitnessError(f"cannot write s3://{self.bucket}/{key}: {exc}") from exc
        return True

    def publish(self, tenant_id: str, records: Sequence[Mapping[str, Any]]) -> int:
        return sum(self._put_once(self._checkpoint_key(tenant_id, int(r["chain_seq"])), r) for r in records)

    def _read_all(self, folder: str) -> list[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        records: list[dict[str, Any]] = []
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}{folder}/"
            ):
                for item in page.get("Contents", []):
                    body = self._client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                    records.extend(_parse_lines(body))
        except (BotoCoreError, ClientError) as exc:
            raise WitnessError(f"cannot read s3://{self.bucket}/{self.prefix}{folder}/: {exc}") from exc
        return records

    def checkpoint_records(self) -> list[dict[str, Any]]:
        return self._read_all(CHECKPOINTS)

    def enroll(self, key: TrustedKey) -> bool:
        return self._put_once(f"{self.prefix}keys/{key.key_id}.json", key.record())

    def trusted_keys(self) -> list[TrustedKey]:
        return [TrustedKey.from_record(record) for record in self._read_all("keys")]

    def location(self, tenant_id: str, chain_seq: int) -> str:
        return f"s3://{self.bucket}/{self._checkpoint_key(tenant_id, chain_seq)}"


class WitnessSettings(Protocol):
    checkpoint_witness_dir: str
    checkpoint_witness_s3_bucket: str
    checkpoint_witness_s3_prefix: str
    checkpoint_witness_s3_endpoint_url: str
    checkpoint_witness_s3_region: str
    checkpoint_witness_retention_days: int


def witness_from_settings(settings: WitnessSettings) -> Witness | None:
    """The configured witness: the bucket when one is named, else the directory, else none."""
    if settings.checkpoint_witness_s3_bucket:
        return S3Witness.connect(
            settings.checkpoint_witness_s3_bucket,
            prefix=settings.checkpoint_witness_s3_prefix,
            endpoint_url=settings.checkpoint_witness_s3_endpoint_url,
            region=settings.checkpoint_witness_s3_region,
            retention=timedelta(days=settings.checkpoint_witness_retention_days),
        )
    if settings.checkpoint_witness_dir:
        return DirectoryWitness(Path(settings.checkpoint_witness_dir))
    return None
