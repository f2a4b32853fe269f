-- Invalid entries are refunded when submitted, so they cost an account nothing but cost
-- the database their rows: each account may submit this many an hour (NULL: the server's
-- WAV_INVALID_ENTRIES_PER_HOUR; 0: no limit). The partial index finds an account's last
-- hour of them in the ledger ('refund_invalid' rows) without reading the rest.
ALTER TABLE accounts ADD COLUMN invalid_entries_per_hour int CHECK (invalid_entries_per_hour >= 0);
CREATE INDEX credit_ledger_invalid ON credit_ledger (account_id, created_at) WHERE reason = 'refund_invalid';
