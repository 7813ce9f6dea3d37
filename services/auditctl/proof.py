"""Merkle proofs for auditors: ``auditctl proof inclusion|consistency|check|heads`` and ``auditctl witness follow``.

``proof check`` is offline: it reads only the proof file and the pinned keys. ``witness follow`` keeps the
last signed tree head it accepted in a state file and, for each newer one, checks its signature against the
pinned keys and an RFC 9162 consistency proof from the kept head to it; a rewritten or rolled-back log is
an alarm (exit status 2).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import click

from services.auditctl.running import run_async
from services.auditctl.settings import CliSettings
from shared import proofs
from shared.db.pool import connect
from shared.enrollment import pinned_keys
from shared.merkle import verify_consistency
from shared.proofcheck import check_document, load_pinned_keys
from shared.treehead import TreeHead
from shared.witness import DirectoryWitness, Witness, WitnessError, witness_from_settings

ALARM_EXIT = 2


def _echo_json(document: dict[str, Any]) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def _with_db(settings: CliSettings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        conn = await connect(settings.database_url)
        try:
            return await work(conn)
        finally:
            await conn.close()

    try:
        return run_async(run)
    except proofs.ProofUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@click.group("proof")
def proof() -> None:
    """RFC 9162 inclusion and consistency proofs over each tenant's chain."""


@proof.command("inclusion")
@click.option("--record", "record_id", type=int, required=True, help="The row's id (audit_logs.id).")
@click.option("--tree-size", type=int, default=None,
              help="Against the signed tree head of this size (default: the newest).")
def proof_inclusion(record_id: int, tree_size: int | None) -> None:
    """Print the row's inclusion proof and the signed tree head it is relative to, as JSON."""
    settings = click.get_current_context().obj
    document = _with_db(settings, lambda conn: proofs.record_document(conn, record_id, tree_size))
    if document is None:
        raise click.ClickException(f"no record {record_id}")
    _echo_json(document)


@proof.command("consistency")
@click.option("--tenant", required=True, help="Whose tree.")
@click.option("--first", type=int, required=True, help="Smaller tree size.")
@click.option("--second", type=int, required=True, help="Larger tree size.")
def proof_consistency(tenant: str, first: int, second: int) -> None:
    """Print the consistency proof between two tree sizes, with their signed tree heads, as JSON."""
    settings = click.get_current_context().obj
    _echo_json(_with_db(settings, lambda conn: proofs.consistency_document(conn, tenant, first, second)))


@proof.command("heads")
@click.option("--tenant", required=True, help="Whose tree heads.")
@click.option("--after", type=int, default=0, help="Only heads of larger trees than this.")
def proof_heads(tenant: str, after: int) -> None:
    """Print the signed tree heads as JSON lines, smallest first."""
    settings = click.get_current_context().obj

    async def every(conn: Any) -> list[TreeHead]:
        heads, last = [], after
        while page := await proofs.tree_heads(conn, tenant, last):
            heads += page
            last = page[-1].tree_size
        return heads

    for head in _with_db(settings, every):
        click.echo(head.to_json())


def _configured_witness(settings: CliSettings) -> Witness | None:
    """The witness the settings name, as ``auditctl verify`` finds it (a missing directory is none)."""
    witness = witness_from_settings(settings)
    if isinstance(witness, DirectoryWitness) and not witness.root.is_dir():
        return None
    return witness


def _pinned(keys_file: str | None, trusted: tuple[str, ...], settings: CliSettings | None = None) -> list[bytes]:
    """The keys a proof must be signed with: those given, else those pinned in the configured witness
    (``auditctl keys enroll``; CHECKPOINT_WITNESS_DIR or CHECKPOINT_WITNESS_S3_BUCKET). Never the database's."""
    try:
        keys = load_pinned_keys(Path(keys_file)) if keys_file else []
        keys += [base64.b64decode(key, validate=True) for key in trusted]
    except (ValueError, KeyError, TypeError) as exc:  # binascii.Error and JSON errors are ValueErrors
        raise click.UsageError(f"unreadable pinned keys: {exc!r}") from None
    if any(len(key) != 32 for key in keys):
        raise click.UsageError("a pinned key is not a 32-byte Ed25519 public key")
    if not keys and settings is not None:
        witness = _configured_witness(settings)
        if witness is not None:
            try:
                keys = list(run_async(lambda: pinned_keys(witness)).values())
            except (WitnessError, OSError, ValueError) as exc:
                raise click.ClickException(f"cannot read the pinned keys of the {witness.description}: {exc}") from None
            if keys:
                click.echo(f"keys: {len(keys)} pinned in the {witness.description}", err=True)
    if not keys:
        raise click.UsageError("no pinned keys: give --keys FILE or --trusted-key BASE64, or configure the witness "
                               "(auditctl keys enroll pins keys there)")
    return keys


_KEYS_HELP = ("Pinned public keys: JSON lines with a base64 public_key (the witness's trusted-keys.jsonl, a"
              " signing-keys export), or base64 lines. Default: the keys pinned in the configured witness.")


@proof.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False), help=_KEYS_HELP)
@click.option("--trusted-key", "trusted", multiple=True, help="A pinned base64 Ed25519 public key (repeatable).")
def proof_check(file: str, keys_file: str | None, trusted: tuple[str, ...]) -> None:
    """Check an inclusion or consistency proof offline; exit 0 only if every check passes."""
    text = sys.stdin.read() if file == "-" else Path(file).read_text()
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise click.ClickException(f"{file} is not JSON: {exc}") from None
    pinned = _pinned(keys_file, trusted, click.get_current_context().obj)
    checks = check_document(document if isinstance(document, dict) else {}, pinned)
    for check in checks:
        click.echo(check.line())
    if not checks or not all(check.ok for check in checks):
        sys.exit(1)


@proof.command("audit-tree")
@click.option("--tenant", required=True, help="Whose tree.")
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False), help=_KEYS_HELP)
@click.option("--trusted-key", "trusted", multiple=True, help="A pinned base64 Ed25519 public key (repeatable).")
def proof_audit_tree(tenant: str, keys_file: str | None, trusted: tuple[str, ...]) -> None:
    """Recompute the whole tree from the chain's row hashes and compare every stored subtree and signed tree
    head with it (O(n)); exit 1 and name what differs."""
    settings = click.get_current_context().obj
    pinned = _pinned(keys_file, trusted, settings)
    report = _with_db(settings, lambda conn: proofs.audit_tree(conn, tenant, pinned))
    if report.ok:
        click.echo(f"OK tenant={tenant} leaves={report.leaves} tree_heads={report.heads_checked}")
        return
    for problem in report.problems:
        click.echo(f"BROKEN tenant={tenant}: {problem}")
    sys.exit(1)


# --- monitor ---------------------------------------------------------------------------------------------

class TreeHeadSource(Protocol):
    async def heads_after(self, tenant: str, size: int) -> list[TreeHead]: ...

    async def consistency_path(self, tenant: str, first: int, second: int) -> list[bytes]: ...


class DatabaseSource:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn

    async def _run(self, work: Callable[[Any], Awaitable[Any]]) -> Any:
        conn = await connect(self._dsn)
        try:
            return await work(conn)
        finally:
            await conn.close()

    async def heads_after(self, tenant: str, size: int) -> list[TreeHead]:
        result: list[TreeHead] = await self._run(lambda conn: proofs.tree_heads(conn, tenant, size))
        return result

    async def consistency_path(self, tenant: str, first: int, second: int) -> list[bytes]:
        document = await self._run(lambda conn: proofs.consistency(conn, tenant, first, second))
        return [bytes.fromhex(h) for h in document["path"]]


class ReporterSource:
    """The reporter's API, with a reporting token (auditor or admin) of the tenant followed."""

    def __init__(self, url: str, token: str) -> None:
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise click.UsageError(f"--url must be an http or https URL, not {url!r}")
        self._url = url.rstrip("/")
        self._auth = f"Bearer {token}"

    def _get_blocking(self, path: str, query: dict[str, Any]) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the scheme was checked to be http(s) above
            f"{self._url}/api/v1/audit/{path}?{urllib.parse.urlencode(query)}",
            headers={"Authorization": self._auth, "Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the operator's URL
            return json.loads(response.read())

    async def _get(self, path: str, **query: Any) -> Any:
        return await asyncio.to_thread(self._get_blocking, path, query)

    async def heads_after(self, tenant: str, size: int) -> list[TreeHead]:
        page = await self._get("tree-heads", **({"after": size} if size else {}))
        return [TreeHead.from_dict(item) for item in page["items"]]

    async def consistency_path(self, tenant: str, first: int, second: int) -> list[bytes]:
        document = await self._get("consistency", first=first, second=second)
        return [bytes.fromhex(h) for h in document["path"]]


class Alarm(Exception):
    """The log was rewritten, rolled back or signed by a key not pinned."""


async def follow_once(source: TreeHeadSource, tenant: str, kept: TreeHead | None, pinned: list[bytes],
                      keep: Callable[[TreeHead], None],
                      witnessed: Mapping[int, TreeHead] | None = None) -> TreeHead | None:
    """Check every tree head newer than ``kept``; ``keep`` each that is consistent. Raises Alarm.

    ``witnessed``: the tenant's tree heads as the witness holds them, by size; a head the log serves must be
    the witness's head of that size where the witness has one (it may lag by a publishing interval)."""
    after = 0
    if kept is not None:
        # The kept head must still be there, unchanged: a log rolled back or rewritten loses or changes it.
        again = await source.heads_after(tenant, kept.tree_size - 1)
        if not again or again[0].tree_size != kept.tree_size:
            raise Alarm(f"the tree head of size {kept.tree_size} is gone: the log was rolled back or rewritten")
        if again[0].root_hash != kept.root_hash:
            raise Alarm(f"the tree head of size {kept.tree_size} now has another root: the log was rewritten")
        after = kept.tree_size
    while heads := await source.heads_after(tenant, after):
        for head in heads:
            if head.tenant_id != tenant or not head.signed_by(pinned):
                raise Alarm(f"tree head of size {head.tree_size} is not signed by a pinned key")
            held = (witnessed or {}).get(head.tree_size)
            if held is not None and held != head:
                raise Alarm(f"tree head of size {head.tree_size} differs from the one the witness holds: "
                            "the log was rewritten")
            if kept is not None:
                path = await source.consistency_path(tenant, kept.tree_size, head.tree_size)
                if not verify_consistency(kept.tree_size, head.tree_size, kept.root_hash, head.root_hash, path):
                    raise Alarm(f"tree head of size {head.tree_size} is not consistent with the kept head of size "
                                f"{kept.tree_size}: the log was rewritten")
            kept = head
            keep(head)
        after = heads[-1].tree_size
    return kept


def _write_state(path: Path, head: TreeHead) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(head.to_json() + "\n")
    os.replace(temporary, path)


@click.group("witness")
def witness() -> None:
    """Monitor signed tree heads as an outside witness."""


@witness.command("follow")
@click.option("--tenant", required=True, help="Whose tree to follow.")
@click.option("--state", "state_file", type=click.Path(dir_okay=False), required=True,
              help="File keeping the last accepted tree head (created on first run).")
@click.option("--keys", "keys_file", type=click.Path(exists=True, dir_okay=False), help=_KEYS_HELP)
@click.option("--trusted-key", "trusted", multiple=True, help="A pinned base64 Ed25519 public key (repeatable).")
@click.option("--url", default=None, help="Reporter base URL; without it, the database (DATABASE_URL) is read.")
@click.option("--token-env", default="AUDIT_REPORTING_TOKEN",
              help="Environment variable holding a reporting token (auditor or admin) for --url.")
@click.option("--interval", type=float, default=30.0, help="Seconds between polls.")
@click.option("--once", is_flag=True, help="Check what is there now and stop.")
@click.option("--no-witness", is_flag=True, help="Do not compare the heads with those the configured witness holds.")
def witness_follow(tenant: str, state_file: str, keys_file: str | None, trusted: tuple[str, ...], url: str | None,
                   token_env: str, interval: float, once: bool, no_witness: bool) -> None:
    """Fetch each new signed tree head and check it extends the last one kept; exit 2 on a rewritten log."""
    settings: CliSettings = click.get_current_context().obj
    pinned = _pinned(keys_file, trusted, settings)
    source: TreeHeadSource
    if url:
        token = os.environ.get(token_env)
        if not token:
            raise click.UsageError(f"set {token_env} to a reporting token (auditctl token issue) to read {url}")
        source = ReporterSource(url, token)
    else:
        source = DatabaseSource(settings.database_url)
    path = Path(state_file)
    kept = TreeHead.from_dict(json.loads(path.read_text())) if path.exists() else None
    witness = None if no_witness else _configured_witness(settings)

    def witnessed() -> dict[int, TreeHead]:
        if witness is None:
            return {}
        records = [r for r in witness.checkpoint_records() if r.get("tenant_id") == tenant]
        heads = (TreeHead.from_checkpoint_record(record) for record in records)
        return {head.tree_size: head for head in heads if head is not None}

    def keep(head: TreeHead) -> None:
        _write_state(path, head)
        click.echo(f"OK tenant={tenant} tree_size={head.tree_size} root={head.root_hash.hex()}")

    while True:
        try:
            held = witnessed()
            kept = run_async(lambda last=kept, held=held: follow_once(  # type: ignore[misc]
                source, tenant, last, pinned, keep, held))
        except Alarm as alarm:
            click.echo(f"ALARM tenant={tenant}: {alarm}", err=True)
            sys.exit(ALARM_EXIT)
        except (OSError, urllib.error.URLError, proofs.ProofUnavailable, WitnessError) as exc:
            if once:
                raise click.ClickException(f"cannot read tree heads: {exc}") from None
            click.echo(f"retrying: {exc}", err=True)
        if once:
            return
        time.sleep(interval)


COMMANDS = [proof, witness]
