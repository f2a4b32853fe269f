-- The queue holds chunks of up to 50 consecutive queued numbers of one batch, not the
-- numbers themselves. A claim leases a few chunk rows instead of writing 500 number
-- rows, and with no queue index on the numbers table left, writing a result changes no
-- indexed column of its row: a heap-only update that adds no index entries.
-- A chunk row lives until every number in its range has left the pending state.
CREATE TABLE queue_chunks (
    batch_id      uuid NOT NULL,
    -- The range of batch_numbers.idx the chunk covers; its numbers still pending are
    -- the ones with state 1.
    first_idx     int NOT NULL,
    last_idx      int NOT NULL,
    -- Claim order across accounts (see accounts.fair_clock).
    fair_key      bigint NOT NULL,
    -- Claims of this chunk, including a current one: every pending number in it was
    -- part of each, so this is each pending number's attempt count.
    attempts      int NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT now(),
    lease_token   uuid,
    lease_until   timestamptz,
    PRIMARY KEY (batch_id, first_idx),
    CHECK (last_idx >= first_idx)
);
CREATE INDEX queue_chunks_fair ON queue_chunks (fair_key);

-- Numbers queued before this migration, 50 at a time in index order; leases held by
-- an older version's workers are dropped (their writes find no lease and are ignored).
INSERT INTO queue_chunks (batch_id, first_idx, last_idx, fair_key, attempts, available_at)
SELECT batch_id, min(idx), max(idx), min(fair_key), max(attempts), min(available_at)
FROM (SELECT batch_id, idx, fair_key, attempts, available_at,
             (row_number() OVER (PARTITION BY batch_id ORDER BY idx) - 1) / 50 AS chunk
      FROM batch_numbers WHERE state = 1) pending
GROUP BY batch_id, chunk;

DROP INDEX batch_numbers_queue;
ALTER TABLE batch_numbers
    DROP COLUMN fair_key,
    DROP COLUMN available_at,
    DROP COLUMN lease_token,
    DROP COLUMN lease_until;

-- Queue depth and the oldest queued batch, read from batches not yet finished.
CREATE INDEX batches_open ON batches (created_at) WHERE completed_at IS NULL;

-- Every finished chunk leaves a dead row and a dead entry at the left of the claim
-- index: vacuum after a fixed count (as batch_numbers, 50 numbers a chunk).
ALTER TABLE queue_chunks SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 4000,
    autovacuum_analyze_scale_factor = 0.02
);
