-- Retention prunes finished batches, but the ledger is kept for good: its
-- batch_id stays as a plain reference to a batch that may have been pruned.
ALTER TABLE credit_ledger DROP CONSTRAINT credit_ledger_batch_id_fkey;
CREATE INDEX batches_prunable ON batches (completed_at) WHERE completed_at IS NOT NULL;
