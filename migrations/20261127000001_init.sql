-- Accounts hold the credit balance; the ledger explains every change to it.
CREATE TABLE accounts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    credits     bigint NOT NULL CHECK (credits >= 0),
    -- Start-time fair queuing: the virtual time at which this account's queued work ends.
    fair_clock  bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_fair_clock ON accounts (fair_clock);

-- Only the SHA-256 of a key is stored; keys are 256-bit random, so a fast hash is enough.
CREATE TABLE api_keys (
    key_hash    bytea PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE batches (
    id             uuid PRIMARY KEY,
    account_id     uuid NOT NULL REFERENCES accounts (id),
    request_id     text,
    -- SHA-256 of the submitted list and region, to tell a retry from a reused key.
    request_hash   bytea NOT NULL,
    total_numbers  int NOT NULL CHECK (total_numbers > 0),
    -- Numbers with a definite answer (on, not on, invalid) and those that ended in error.
    completed      int NOT NULL DEFAULT 0,
    failed         int NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    CHECK (completed + failed <= total_numbers),
    UNIQUE (account_id, request_id)
);
CREATE INDEX batches_account ON batches (account_id, created_at);

CREATE TABLE credit_ledger (
    id             bigserial PRIMARY KEY,
    account_id     uuid NOT NULL REFERENCES accounts (id),
    delta          bigint NOT NULL,
    reason         text NOT NULL,
    batch_id       uuid REFERENCES batches (id),
    balance_after  bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_account ON credit_ledger (account_id, id);

-- One row per unique entry of a batch; state follows the proto's NumberStatus
-- (1 pending, 2 on WhatsApp, 3 not on WhatsApp, 4 invalid, 5 error).
CREATE TABLE batch_numbers (
    batch_id      uuid NOT NULL REFERENCES batches (id) ON DELETE CASCADE,
    idx           int NOT NULL,
    input         text NOT NULL,
    e164          text,
    region        text,
    state         smallint NOT NULL CHECK (state BETWEEN 1 AND 5),
    wa_id         text,
    is_business   boolean NOT NULL DEFAULT false,
    error         text,
    -- Claim order across accounts (see accounts.fair_clock).
    fair_key      bigint NOT NULL DEFAULT 0,
    attempts      int NOT NULL DEFAULT 0,
    available_at  timestamptz NOT NULL DEFAULT now(),
    lease_token   uuid,
    lease_until   timestamptz,
    checked_at    timestamptz,
    PRIMARY KEY (batch_id, idx)
);
-- Only queued rows are indexed for claiming, so finished rows cost the claim nothing.
CREATE INDEX batch_numbers_queue ON batch_numbers (fair_key) WHERE state = 1;
CREATE INDEX batch_numbers_lease ON batch_numbers (lease_token) WHERE lease_token IS NOT NULL;
