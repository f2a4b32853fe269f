-- Idempotency outlives retention: a request_id keeps naming the batch it created
-- after retention has deleted that batch, for as long as the ledger entries that
-- charged it are kept (for good), so a late retry is answered, never charged again.
CREATE TABLE batch_requests (
    account_id     uuid NOT NULL REFERENCES accounts (id),
    request_id     text NOT NULL,
    -- SHA-256 of the submitted list and options, to tell a retry from a reused key.
    request_hash   bytea NOT NULL,
    batch_id       uuid NOT NULL,
    total_numbers  int NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, request_id)
);

INSERT INTO batch_requests (account_id, request_id, request_hash, batch_id, total_numbers, created_at)
SELECT account_id, request_id, request_hash, id, total_numbers, created_at
FROM batches WHERE request_id IS NOT NULL;

-- batch_requests holds the uniqueness now; batches keeps request_id to show it.
ALTER TABLE batches DROP CONSTRAINT batches_account_id_request_id_key;
