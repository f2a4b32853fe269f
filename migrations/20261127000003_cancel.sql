-- Cancelling a batch: its unchecked numbers end as 6 (cancelled) and are refunded.
ALTER TABLE batch_numbers DROP CONSTRAINT batch_numbers_state_check;
ALTER TABLE batch_numbers ADD CONSTRAINT batch_numbers_state_check CHECK (state BETWEEN 1 AND 6);
ALTER TABLE batches ADD COLUMN cancelled int NOT NULL DEFAULT 0;
ALTER TABLE batches DROP CONSTRAINT batches_check;
ALTER TABLE batches ADD CONSTRAINT batches_counts_check CHECK (completed + failed + cancelled <= total_numbers);
-- Listing newest first per account, with a stable tiebreak for page tokens.
DROP INDEX batches_account;
CREATE INDEX batches_account ON batches (account_id, created_at DESC, id DESC);
