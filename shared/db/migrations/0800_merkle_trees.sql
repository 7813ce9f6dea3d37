-- RFC 9162 Merkle trees over each chain's row hashes (shared/merkle.py), and signed tree heads.

-- Every complete subtree of every tenant's tree, written by the signer in the same transaction as the rows.
-- Appending leaf i (= chain_seq - 1) completes the subtrees of levels 0..t (t = trailing one bits of i);
-- their hashes are stored together, level 0 (the leaf hash) first, 32 bytes each: on average two hashes
-- and one tuple per row. Any proof needs at most 2*log2(n) of these records, fetched by primary key.
CREATE TABLE merkle_subtrees (
    tenant_id  text NOT NULL,
    leaf_index bigint NOT NULL CHECK (leaf_index >= 0),
    hashes     bytea NOT NULL CHECK (length(hashes) % 32 = 0 AND length(hashes) >= 32),
    PRIMARY KEY (tenant_id, leaf_index)
);

-- The complete subtrees along the top of each tree (one per set bit of head_seq, largest first): enough to
-- append the next leaf and to compute the root without reading merkle_subtrees.
ALTER TABLE chain_heads ADD COLUMN merkle_frontier bytea NOT NULL DEFAULT ''::bytea;

-- Each checkpoint is also a signed tree head: tree size = chain_seq, root of the tree of that many leaves,
-- signed over the bytes docs/auditing.md gives (shared/treehead.py). NULL only for checkpoints written
-- before this migration.
ALTER TABLE chain_checkpoints
    ADD COLUMN tree_root bytea CHECK (length(tree_root) = 32),
    ADD COLUMN tree_signature bytea CHECK (length(tree_signature) = 64);

-- Chains that already hold rows get their tree here, from their row hashes in chain_seq order, so that
-- the signer extends a complete tree. Older checkpoints keep no tree head (their key is not at hand here).
DO $$
DECLARE
    chain record;
    entry record;
    stack bytea[];
    node bytea;
    completed bytea;
    frontier bytea;
    size bigint;
    bits bigint;
BEGIN
    FOR chain IN SELECT tenant_id, head_seq FROM chain_heads WHERE head_seq > 0 ORDER BY tenant_id LOOP
        stack := ARRAY[]::bytea[];
        size := 0;
        FOR entry IN
            SELECT row_hash FROM audit_logs
            WHERE tenant_id = chain.tenant_id AND chain_seq <= chain.head_seq ORDER BY chain_seq
        LOOP
            node := sha256('\x00'::bytea || entry.row_hash);
            completed := node;
            bits := size;
            WHILE bits & 1 = 1 LOOP  -- merge with the frontier while the old size's lowest bits are set
                node := sha256('\x01'::bytea || stack[cardinality(stack)] || node);
                stack := stack[1:cardinality(stack) - 1];
                completed := completed || node;
                bits := bits >> 1;
            END LOOP;
            stack := stack || node;
            INSERT INTO merkle_subtrees (tenant_id, leaf_index, hashes) VALUES (chain.tenant_id, size, completed);
            size := size + 1;
        END LOOP;
        frontier := ''::bytea;
        FOR i IN 1 .. coalesce(cardinality(stack), 0) LOOP
            frontier := frontier || stack[i];
        END LOOP;
        UPDATE chain_heads SET merkle_frontier = frontier WHERE tenant_id = chain.tenant_id;
    END LOOP;
END
$$;
