"""The reporter's Merkle proofs: inclusion with the row's proof, consistency between sizes, the signed tree
heads, and the portal's proof page, over rows the signer's append path wrote."""

from __future__ import annotations

import asyncio

import asyncpg
import hypercorn.asyncio
import hypercorn.config
import pytest
from tamperlog import merkle as tamperlog

from deploy.local.infra import free_port
from services.auditctl.proof import Alarm, ReporterSource, follow_once
from shared.merkle import leaf_hash
from shared.proofcheck import check_consistency, check_inclusion
from shared.treehead import TreeHead
from tests.integration.reporter.conftest import Reporter
from tests.integration.reporter.scenario import TENANT_A, seed

API = "/api/v1"


async def _record_id(db: asyncpg.Connection, seq: int) -> int:
    found: int = await db.fetchval("SELECT id FROM audit_logs WHERE tenant_id = $1 AND chain_seq = $2", TENANT_A, seq)
    return found


async def test_the_proof_carries_an_inclusion_proof_under_the_newest_or_a_chosen_tree_head(
        reporter: Reporter, db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    pinned = [scenario.signer.public_key]
    heads = (await reporter.client.get(f"{API}/audit/tree-heads", headers=reporter.tenant_a)).json()["items"]
    assert len(heads) >= 2 and all(h["tenant_id"] == TENANT_A for h in heads)
    record = await _record_id(db, 2)
    proof = (await reporter.client.get(f"{API}/audit/records/{record}/proof", headers=reporter.tenant_a)).json()
    assert proof["tree_head"] == heads[-1]
    assert proof["inclusion"]["leaf_index"] == 1 and proof["inclusion"]["tree_size"] == heads[-1]["tree_size"]
    assert all(c.ok for c in check_inclusion(proof, pinned))
    tamperlog.verify_inclusion(1, proof["inclusion"]["tree_size"], leaf_hash(bytes.fromhex(proof["row_hash"])),
                               [bytes.fromhex(h) for h in proof["inclusion"]["path"]],
                               bytes.fromhex(proof["tree_head"]["root_hash"]))
    older = (await reporter.client.get(f"{API}/audit/records/{record}/proof",
                                       params={"tree_size": heads[0]["tree_size"]}, headers=reporter.tenant_a)).json()
    assert older["tree_head"] == heads[0] and all(c.ok for c in check_inclusion(older, pinned))
    for bad in ("0", "x", "999999"):
        response = await reporter.client.get(f"{API}/audit/records/{record}/proof", params={"tree_size": bad},
                                             headers=reporter.tenant_a)
        assert response.status_code == 400, (bad, response.text)


async def test_consistency_between_tree_heads(reporter: Reporter, db: asyncpg.Connection) -> None:
    scenario = await seed(db)
    heads = (await reporter.client.get(f"{API}/audit/tree-heads", headers=reporter.tenant_a)).json()["items"]
    first, second = heads[0]["tree_size"], heads[-1]["tree_size"]
    response = await reporter.client.get(f"{API}/audit/consistency", params={"first": first, "second": second},
                                         headers=reporter.tenant_a)
    assert response.status_code == 200, response.text
    proof = response.json()
    assert {k: proof[k] for k in ("first", "second")} == {"first": first, "second": second}
    assert proof["first_root"] == heads[0]["root_hash"] and proof["second_root"] == heads[-1]["root_hash"]
    assert all(c.ok for c in check_consistency(proof, [scenario.signer.public_key]))
    tamperlog.verify_consistency(first, bytes.fromhex(proof["first_root"]), second,
                                 bytes.fromhex(proof["second_root"]), [bytes.fromhex(h) for h in proof["path"]])
    for params in ({"first": second, "second": first}, {"first": "1"}, {"first": "0", "second": "1"},
                   {"first": "1", "second": "100000"}):
        bad = await reporter.client.get(f"{API}/audit/consistency", params=params, headers=reporter.tenant_a)
        assert bad.status_code == 400, (params, bad.text)


async def test_another_tenant_sees_neither_the_record_nor_its_tree(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    record = await _record_id(db, 2)
    assert (await reporter.client.get(f"{API}/audit/records/{record}/proof",
                                      headers=reporter.tenant_b)).status_code == 404
    assert (await reporter.client.get(f"/portal/records/{record}/proof", headers=reporter.tenant_b)).status_code == 404
    b_heads = (await reporter.client.get(f"{API}/audit/tree-heads", headers=reporter.tenant_b)).json()["items"]
    assert all(h["tenant_id"] != TENANT_A for h in b_heads)


async def test_the_portal_proof_page_shows_the_path_the_verdict_and_a_download(
        reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    record = await _record_id(db, 3)
    page = await reporter.client.get(f"/portal/records/{record}/proof", headers=reporter.tenant_a)
    assert page.status_code == 200, page.text
    assert 'id="proof-verdict">verified<' in page.text
    assert f'href="/api/v1/audit/records/{record}/proof"' in page.text and "download=" in page.text
    assert 'id="proof-path"' in page.text
    events = await reporter.client.get("/portal/events", headers=reporter.tenant_a)
    assert "/portal/records/" in events.text  # the feed's proof links lead to this page
    await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
    await db.execute("UPDATE audit_logs SET input_tokens = 4242 WHERE id = $1", record)
    tampered = await reporter.client.get(f"/portal/records/{record}/proof", headers=reporter.tenant_a)
    assert 'id="proof-verdict">NOT verified<' in tampered.text


async def test_witness_follow_reads_the_reporter_over_http(reporter: Reporter, db: asyncpg.Connection) -> None:
    """The monitor's HTTP source against the reporter served by Hypercorn: heads accepted, then a head whose
    root changed under the same size is an alarm."""
    scenario = await seed(db)
    port = free_port()
    config = hypercorn.config.Config()
    config.bind = [f"127.0.0.1:{port}"]
    stop = asyncio.Event()
    server = asyncio.create_task(hypercorn.asyncio.serve(reporter.app, config, shutdown_trigger=stop.wait))
    try:
        token = reporter.tenant_a["Authorization"].removeprefix("Bearer ")
        source = ReporterSource(f"http://127.0.0.1:{port}", token)
        for _ in range(100):
            try:
                await source.heads_after(TENANT_A, 0)
                break
            except OSError:
                await asyncio.sleep(0.05)
        kept: list[TreeHead] = []
        last = await follow_once(source, TENANT_A, None, [scenario.signer.public_key], kept.append)
        assert last is not None and len(kept) >= 2 and last == kept[-1]
        assert await follow_once(source, TENANT_A, last, [scenario.signer.public_key], kept.append) == last
        await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
        await db.execute("UPDATE chain_checkpoints SET tree_root = $3 WHERE tenant_id = $1 AND chain_seq = $2",
                         TENANT_A, last.tree_size, bytes(32))
        with pytest.raises(Alarm, match="another root"):
            await follow_once(source, TENANT_A, last, [scenario.signer.public_key], kept.append)
        await db.execute("DELETE FROM chain_checkpoints WHERE tenant_id = $1 AND chain_seq = $2",
                         TENANT_A, last.tree_size)
        with pytest.raises(Alarm, match="gone"):
            await follow_once(source, TENANT_A, last, [scenario.signer.public_key], kept.append)
    finally:
        stop.set()
        await server


async def test_a_row_no_tree_head_covers_yet_is_pending(reporter: Reporter, db: asyncpg.Connection) -> None:
    await seed(db)
    newest = await db.fetchval("SELECT max(chain_seq) FROM audit_logs WHERE tenant_id = $1", TENANT_A)
    await db.execute("SET session_replication_role = replica")  # a superuser, past any trigger
    await db.execute("DELETE FROM chain_checkpoints WHERE tenant_id = $1 AND chain_seq >= $2", TENANT_A, newest)
    record = await _record_id(db, newest)
    proof = (await reporter.client.get(f"{API}/audit/records/{record}/proof", headers=reporter.tenant_a)).json()
    assert proof["inclusion"] is None and proof["tree_head"]["tree_size"] < newest
    page = await reporter.client.get(f"/portal/records/{record}/proof", headers=reporter.tenant_a)
    assert 'id="proof-verdict">pending<' in page.text
