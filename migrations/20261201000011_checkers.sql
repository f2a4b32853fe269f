-- Checking accounts for `--checker pool`: each is one WhatsApp account (a gateway session
-- or instance, or a linked device) with its own pacing. Their state and counters live
-- here, shared by every replica. Lock order: a checkers row is locked alone, by one
-- short statement at a time (never together with the queue's rows).
CREATE TABLE checkers (
    id               uuid PRIMARY KEY,
    name             text NOT NULL UNIQUE,
    backend          text NOT NULL CHECK (backend IN ('waha', 'evolution', 'whatsapp-web')),
    -- The backend's settings: url, session, instance, api_key, session_db.
    config           jsonb NOT NULL,
    rate_per_sec     double precision NOT NULL CHECK (rate_per_sec > 0),
    max_concurrency  int NOT NULL CHECK (max_concurrency > 0),
    -- Checks per local day (in `timezone`); 0: no cap.
    daily_cap        int NOT NULL CHECK (daily_cap >= 0),
    -- The cap ramps up over the account's first days here.
    warmup_days      int NOT NULL DEFAULT 0 CHECK (warmup_days >= 0),
    -- Checks only between these local times (overnight when start > end); NULL: any time.
    hours_start      time,
    hours_end        time,
    timezone         text NOT NULL DEFAULT 'UTC',
    paused           boolean NOT NULL DEFAULT false,
    -- The account's last trouble (active when none), until when it waits before it is
    -- probed again, and why.
    state            text NOT NULL DEFAULT 'active'
                     CHECK (state IN ('active', 'throttled', 'logged_out', 'banned', 'failing')),
    state_until      timestamptz,
    reason           text,
    -- Calls in a row that failed (the circuit), rate limits in a row (the backoff).
    failures         int NOT NULL DEFAULT 0,
    throttles        int NOT NULL DEFAULT 0,
    -- When a troubled account may next be probed; claimed by one replica at a time.
    probe_at         timestamptz NOT NULL DEFAULT now(),
    -- The rate, shared by every replica: the next call may start then.
    next_slot        timestamptz NOT NULL DEFAULT now(),
    -- Checks spent on `day` (local), and in all.
    day              date,
    checks_day       int NOT NULL DEFAULT 0,
    checks_total     bigint NOT NULL DEFAULT 0,
    last_check_at    timestamptz,
    -- Checks the last reservation granted (read back by the reserving statement).
    last_grant       int NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((hours_start IS NULL) = (hours_end IS NULL)),
    CHECK (hours_start IS NULL OR hours_start <> hours_end)
);

-- The account's day, checks and cap, from its own row: the reserving UPDATE computes
-- them from the row it locked (so two replicas never overspend), the view below the same way.
CREATE FUNCTION checker_today(c checkers) RETURNS date LANGUAGE sql STABLE AS
$$ SELECT (now() AT TIME ZONE c.timezone)::date $$;

CREATE FUNCTION checker_checks_today(c checkers) RETURNS int LANGUAGE sql STABLE AS
$$ SELECT CASE WHEN c.day = checker_today(c) THEN c.checks_day ELSE 0 END $$;

-- Today's cap: the daily cap, ramped up over the warm-up days (day 1 of 7 gets 1/8 of
-- it, day 7 7/8); 0: no cap.
CREATE FUNCTION checker_cap_today(c checkers) RETURNS int LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN c.daily_cap = 0 THEN 0
        WHEN checker_today(c) - (c.created_at AT TIME ZONE c.timezone)::date < c.warmup_days
        THEN greatest(1, c.daily_cap
            * (checker_today(c) - (c.created_at AT TIME ZONE c.timezone)::date + 1)
            / (c.warmup_days + 1))
        ELSE c.daily_cap END $$;

-- How many of `wanted` checks the account may still make today.
CREATE FUNCTION checker_grant(c checkers, wanted int) RETURNS int LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN checker_cap_today(c) = 0 THEN wanted
                ELSE least(wanted, greatest(checker_cap_today(c) - checker_checks_today(c), 0)) END $$;

-- An account as it stands now: checks today, today's cap, whether it is within its hours,
-- and its effective status (paused, its trouble, resting, or active) with until when and
-- why. `wavalidate checker list` and the pool both read this, so the rules live here.
CREATE VIEW checker_status AS
WITH t AS (
    SELECT c.*,
           now() AT TIME ZONE c.timezone AS local_now,
           checker_today(c) AS today,
           checker_today(c) - (c.created_at AT TIME ZONE c.timezone)::date AS age_days,
           checker_checks_today(c) AS checks_today,
           checker_cap_today(c) AS cap_today
    FROM checkers c),
 u AS (
    SELECT t.*,
           t.hours_start IS NULL
             OR (t.hours_start < t.hours_end
                 AND t.local_now::time >= t.hours_start AND t.local_now::time < t.hours_end)
             OR (t.hours_start > t.hours_end
                 AND (t.local_now::time >= t.hours_start OR t.local_now::time < t.hours_end)) AS in_hours,
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

-- When a chunk's numbers were queued: numbers pending past WAV_MAX_PENDING with no usable
-- checking account end as errors, refunded.
ALTER TABLE queue_chunks ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now();
