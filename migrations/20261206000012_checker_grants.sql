-- The pool, round two: whether an account may ask is decided by one function at the
-- moment of each call (`checker_take`), the breaker's backoff lives in the row, and no
-- account's settings can make the arithmetic of the others' reads fail.

-- A single backend set by flags (`--checker waha|evolution|whatsapp-web`) is an account
-- too, kept under a reserved name and re-written from the flags at each start.
ALTER TABLE checkers ADD COLUMN from_flags boolean NOT NULL DEFAULT false;

-- Today's cap in bigint: a warm-up of 2^31 days or a cap of 10^8 no longer overflows
-- (the result is at most daily_cap, so it fits an int).
CREATE OR REPLACE FUNCTION checker_cap_today(c checkers) RETURNS int LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.daily_cap <= 0 THEN 0
        WHEN (checker_today(c) - (c.created_at AT TIME ZONE c.timezone)::date)::bigint < c.warmup_days
        THEN greatest(1, c.daily_cap::bigint
            * ((checker_today(c) - (c.created_at AT TIME ZONE c.timezone)::date)::bigint + 1)
            / (c.warmup_days::bigint + 1))::int
        ELSE c.daily_cap END $$;

-- Whether the account's local time is within its hours (overnight when start > end).
CREATE FUNCTION checker_in_hours(c checkers) RETURNS boolean LANGUAGE sql STABLE AS $$
    SELECT c.hours_start IS NULL
        OR (c.hours_start < c.hours_end
            AND (now() AT TIME ZONE c.timezone)::time >= c.hours_start
            AND (now() AT TIME ZONE c.timezone)::time < c.hours_end)
        OR (c.hours_start > c.hours_end
            AND ((now() AT TIME ZONE c.timezone)::time >= c.hours_start
                 OR (now() AT TIME ZONE c.timezone)::time < c.hours_end)) $$;

-- Seconds a call of n checks holds the account's rate, within the door's bounds (a rate
-- stored before the door refused 1e-300, or written by hand as NaN or Infinity, neither
-- overflows the interval nor goes unpaced; NaN is taken as the slowest).
CREATE FUNCTION checker_span(c checkers, n int) RETURNS interval LANGUAGE sql IMMUTABLE AS $$
    SELECT make_interval(secs => n / CASE WHEN c.rate_per_sec = 'NaN'::float8 THEN 0.0001
                                          ELSE least(greatest(c.rate_per_sec, 0.0001), 100) END) $$;

-- A timestamp the service can read: 'infinity' written by hand becomes a far date.
CREATE FUNCTION checker_finite(t timestamptz) RETURNS timestamptz LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t IS NULL OR isfinite(t) THEN t
                WHEN t > '2000-01-01'::timestamptz THEN '9999-12-31'::timestamptz
                ELSE '1970-01-01'::timestamptz END $$;

-- The one place that lets an account ask: up to `wanted` checks now, or why not. Locks
-- the account's row alone. Refused (granted 0, `refused` set): removed, paused, in
-- trouble whose wait is not over, outside its hours, today's cap spent. Not yet (granted
-- 0, `wait_s` > 0): its shared rate's next slot is later; ask again then. A throttled or
-- failing account whose wait is over is half-open: one check, its trial, and no other
-- until the trial's answer is recorded or `trial_s` passes.
CREATE FUNCTION checker_take(account uuid, wanted int, trial_s double precision)
RETURNS TABLE (granted int, wait_s double precision, refused text, trial boolean)
LANGUAGE plpgsql AS $$
DECLARE
    c checkers;
    n int;
    half_open boolean := false;
BEGIN
    SELECT * INTO c FROM checkers WHERE id = account FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 0, 0::float8, 'removed'::text, false; RETURN;
    END IF;
    IF c.paused THEN
        RETURN QUERY SELECT 0, 0::float8, 'paused by the operator'::text, false; RETURN;
    END IF;
    IF c.state <> 'active' THEN
        IF c.state IN ('throttled', 'failing') AND coalesce(c.state_until <= now(), true) THEN
            half_open := true;
            wanted := least(wanted, 1);
        ELSE
            RETURN QUERY SELECT 0, 0::float8, c.state, false; RETURN;
        END IF;
    END IF;
    IF NOT checker_in_hours(c) THEN
        RETURN QUERY SELECT 0, 0::float8, 'outside its hours'::text, false; RETURN;
    END IF;
    n := checker_grant(c, wanted);
    IF n <= 0 THEN
        RETURN QUERY SELECT 0, 0::float8, 'daily cap reached'::text, false; RETURN;
    END IF;
    IF c.next_slot > now() THEN
        RETURN QUERY SELECT 0, extract(epoch FROM c.next_slot - now())::float8, NULL::text, false;
        RETURN;
    END IF;
    UPDATE checkers
    SET day = checker_today(c),
        checks_day = checker_checks_today(c) + n,
        next_slot = now() + checker_span(c, n),
        state_until = CASE WHEN half_open THEN now() + make_interval(secs => trial_s)
                           ELSE state_until END
    WHERE id = account;
    RETURN QUERY SELECT n, 0::float8, NULL::text, half_open;
END $$;

-- The backoff of a throttled or failing account, from its row (so every replica agrees):
-- `base` doubled per trouble in a row beyond the first, at most `max`.
CREATE FUNCTION checker_backoff(streak int, base double precision, max double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE AS $$
    SELECT least(base * power(2, least(greatest(streak - 1, 0), 30)), max) $$;

DROP VIEW checker_status;
CREATE VIEW checker_status AS
WITH t AS (
    SELECT c.*,
           now() AT TIME ZONE c.timezone AS local_now,
           checker_today(c) AS today,
           checker_today(c) - (c.created_at AT TIME ZONE c.timezone)::date AS age_days,
           checker_checks_today(c) AS checks_today,
           checker_cap_today(c) AS cap_today,
           checker_in_hours(c) AS in_hours
    FROM checkers c),
 u AS (
    SELECT t.*,
           (t.today + 1)::timestamp AT TIME ZONE t.timezone AS next_day,
           ((t.today + CASE WHEN t.local_now::time < t.hours_start THEN 0 ELSE 1 END)::timestamp
               + t.hours_start) AT TIME ZONE t.timezone AS next_open
    FROM t)
SELECT u.*,
       CASE WHEN u.paused THEN 'paused'
            WHEN u.state <> 'active' THEN u.state
            WHEN u.cap_today > 0 AND u.checks_today >= u.cap_today THEN 'resting'
            WHEN NOT u.in_hours THEN 'resting'
            ELSE 'active' END AS status,
       CASE WHEN u.paused THEN NULL
            WHEN u.state <> 'active' THEN u.state_until
            WHEN u.cap_today > 0 AND u.checks_today >= u.cap_today THEN u.next_day
            WHEN NOT u.in_hours THEN u.next_open END AS status_until,
       CASE WHEN u.paused THEN 'paused by the operator'
            WHEN u.state <> 'active' THEN u.reason
            WHEN u.cap_today > 0 AND u.checks_today >= u.cap_today THEN
                CASE WHEN u.cap_today < u.daily_cap
                     THEN format('warm-up day %s of %s: %s checks today', u.age_days + 1, u.warmup_days, u.cap_today)
                     ELSE format('daily cap of %s checks reached', u.cap_today) END
            WHEN NOT u.in_hours THEN format('outside its hours %s-%s %s',
                to_char(u.hours_start, 'HH24:MI'), to_char(u.hours_end, 'HH24:MI'), u.timezone)
       END AS status_reason
FROM u;
