"""The "Merkle proofs" section of docs/auditing.md: its verifier is under 100 lines, uses only hashlib and
PyNaCl (plus base64 and json to read the documents), and checks the worked example, whose values are the
code's own."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from shared.keys import Ed25519Signer
from shared.merkle import Frontier, consistency_ranges, inclusion_ranges, leaf_hash, tree_hash
from shared.treehead import tree_head_message

DOC = Path(__file__).resolve().parents[2] / "docs" / "auditing.md"
SECTION = "## Merkle proofs (RFC 9162)"


def section() -> str:
    text = DOC.read_text()
    return text[text.index(SECTION):]


def verifier_source() -> str:
    part = section()
    start = part.index("### A verifier in under 100 lines")
    match = re.search(r"```python\n(.*?)```", part[start:], re.S)
    assert match
    return match.group(1)


def doc_verifier() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(compile(verifier_source(), "docs/auditing.md", "exec"), namespace)
    return namespace


def test_the_verifier_is_short_and_uses_only_hashlib_and_pynacl() -> None:
    source = verifier_source()
    assert len(source.splitlines()) < 100
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"base64", "hashlib", "json", "nacl.exceptions", "nacl.signing"}


def _hexes(block_after: str) -> list[str]:
    part = section()
    start = part.index(block_after)
    block = re.search(r"```\n(.*?)```", part[start:], re.S)
    assert block
    return re.findall(r"\b[0-9a-f]{64}\b", block.group(1))


def test_worked_example_matches_the_code_and_verifies() -> None:
    entries = [bytes([i]) * 32 for i in range(1, 8)]
    leaves = [leaf_hash(e) for e in entries]
    listed = _hexes("### Worked example")
    assert listed[:7] == [leaf.hex() for leaf in leaves]
    assert listed[7:] == [tree_hash(leaves[:3]).hex(), tree_hash(leaves[:4]).hex(), tree_hash(leaves).hex()]
    inclusion = [tree_hash(leaves[a:b]).hex() for a, b in inclusion_ranges(4, 7)]
    consistency = [tree_hash(leaves[a:b]).hex() for a, b in consistency_ranges(3, 7)]
    assert _hexes("Inclusion of leaf 4") == inclusion
    assert _hexes("Consistency from 3 to 7") == consistency
    frontier = Frontier()
    for entry in entries:
        frontier = frontier.append(entry)[0]
    assert frontier.root() == tree_hash(leaves)

    key = Ed25519Signer.from_seed_b64(base64.b64encode(bytes(range(32))).decode())
    part = section()
    message = tree_head_message("acme", 7, tree_hash(leaves), "2026-11-28T15:14:00.000000Z", key.key_id)
    assert message.decode().replace("\n", "\\n") in part
    signature_7 = key.sign(message).hex()
    signature_3 = key.sign(tree_head_message("acme", 3, tree_hash(leaves[:3]), "2026-11-28T15:13:30.000000Z",
                                             key.key_id)).hex()
    assert signature_7 in part and signature_3 in part

    verify = doc_verifier()
    heads = [{"tenant_id": "acme", "tree_size": size, "root_hash": tree_hash(leaves[:size]).hex(),
              "timestamp": when, "key_id": key.key_id, "signature": signature}
             for size, when, signature in ((3, "2026-11-28T15:13:30.000000Z", signature_3),
                                           (7, "2026-11-28T15:14:00.000000Z", signature_7))]
    pinned = [key.public_key]
    assert verify["tree_head_ok"](heads[1], "acme", pinned)
    assert not verify["tree_head_ok"](heads[1], "acme", [Ed25519Signer.generate().public_key])
    assert verify["root_from_path"](4, 7, leaves[4], [bytes.fromhex(h) for h in inclusion]) == tree_hash(leaves)
    document = {"first": 3, "second": 7, "first_root": heads[0]["root_hash"], "second_root": heads[1]["root_hash"],
                "path": consistency, "first_tree_head": heads[0], "second_tree_head": heads[1]}
    assert verify["check_consistency"](document, "acme", pinned)
    assert not verify["check_consistency"]({**document, "path": consistency[::-1]}, "acme", pinned)
