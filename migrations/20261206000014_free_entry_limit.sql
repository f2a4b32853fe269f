-- Invalid entries and cancelled numbers are refunded, so they cost an account nothing but
-- cost the database their rows: each account may have this many an hour (NULL: the
-- server's WAV_FREE_ENTRIES_PER_HOUR; 0: no limit). The partial index finds an account's
-- last hour of them in the ledger ('refund_invalid', 'refund_cancelled') without reading
-- the rest.
ALTER TABLE accounts ADD COLUMN free_entries_per_hour int CHECK (free_entries_per_hour >= 0);
CREATE INDEX credit_ledger_free ON credit_ledger (account_id, created_at)
    WHERE reason IN ('refund_invalid', 'refund_cancelled');
