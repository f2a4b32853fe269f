-- Completion webhooks: a per-account signing secret, the URL per batch, and an
-- outbox filled by a trigger in the very transaction that completes a batch,
-- so no completion is ever missed, whichever path completes it.
ALTER TABLE accounts ADD COLUMN webhook_secret text NOT NULL
    DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
ALTER TABLE batches ADD COLUMN callback_url text;

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    batch_id         uuid NOT NULL UNIQUE REFERENCES batches (id) ON DELETE CASCADE,
    account_id       uuid NOT NULL REFERENCES accounts (id),
    url              text NOT NULL,
    payload          text NOT NULL,
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    give_up_at       timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    delivered_at     timestamptz,
    failed_at        timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

CREATE FUNCTION enqueue_completion_webhook() RETURNS trigger AS $$
BEGIN
    IF NEW.callback_url IS NOT NULL AND NEW.completed_at IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.completed_at IS NULL) THEN
        INSERT INTO webhook_deliveries (batch_id, account_id, url, payload)
        VALUES (NEW.id, NEW.account_id, NEW.callback_url, json_build_object(
            'event', 'batch.completed',
            'batch_id', NEW.id,
            'status', 'completed',
            'total_numbers', NEW.total_numbers,
            'completed', NEW.completed,
            'failed', NEW.failed,
            'cancelled', NEW.cancelled,
            'pending', NEW.total_numbers - NEW.completed - NEW.failed - NEW.cancelled,
            'credits_charged', NEW.credits_charged,
            'credits_refunded', NEW.credits_refunded,
            'request_id', NEW.request_id,
            'created_at', NEW.created_at,
            'completed_at', NEW.completed_at)::text)
        ON CONFLICT (batch_id) DO NOTHING;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER batches_completion_webhook
    AFTER INSERT OR UPDATE OF completed_at ON batches
    FOR EACH ROW EXECUTE FUNCTION enqueue_completion_webhook();
