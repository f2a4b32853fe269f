-- Fair billing: what a batch was charged up front and what was refunded
-- (invalid entries at submission, checker errors when they are written).
ALTER TABLE batches
    ADD COLUMN credits_charged bigint NOT NULL DEFAULT 0,
    ADD COLUMN credits_refunded bigint NOT NULL DEFAULT 0;
UPDATE batches SET credits_charged = total_numbers;
ALTER TABLE batches ADD CONSTRAINT batches_refund_le_charge CHECK (credits_refunded <= credits_charged);

ALTER TABLE batch_numbers
    ADD COLUMN from_cache boolean NOT NULL DEFAULT false,
    ADD COLUMN normalization_note text;

-- Answers from live checks, reused within WAV_CACHE_TTL; per backend, so a
-- simulated answer never stands in for a real one.
CREATE TABLE number_cache (
    backend      text NOT NULL,
    e164         text NOT NULL,
    on_whatsapp  boolean NOT NULL,
    wa_id        text,
    is_business  boolean NOT NULL DEFAULT false,
    checked_at   timestamptz NOT NULL,
    PRIMARY KEY (backend, e164)
);

-- Checks spent per backend per UTC day, shared by every replica (the daily cap).
CREATE TABLE checker_usage (
    backend  text NOT NULL,
    day      date NOT NULL,
    used     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (backend, day)
);
