-- 0002_budget: the daily budget that every process and machine sharing this store spends
-- against (INTEL_DAILY_BUDGET, issue 7 / SPEC 4.2), and the output-token history that
-- `intel enrich --dry-run` forecasts from. Never edit after release.
--
-- intel_budget holds what each UTC day has really spent (settled requests); each request in
-- flight holds its worst-case cost in intel_budget_holds until it is settled. A hold carries
-- its batch id and an expiry, so the holds of a process that died are ignored (and deleted)
-- once they expire instead of blocking the day for ever.
--
-- Reserving is check-then-insert; intel_budget_reserve makes it atomic by taking the day's
-- row lock first, so concurrent reservations from any number of processes queue on it and
-- each sees every hold committed before it: the day's spent + held never passes the cap.

CREATE TABLE intel_budget (
    day date PRIMARY KEY,  -- the UTC day
    spent numeric(20, 10) NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE intel_budget_holds (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    day date NOT NULL,
    batch_id text NOT NULL,
    amount numeric(20, 10) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

CREATE INDEX intel_budget_holds_day_idx ON intel_budget_holds (day, expires_at);
CREATE INDEX intel_budget_holds_batch_idx ON intel_budget_holds (batch_id);

ALTER TABLE intel_budget ENABLE ROW LEVEL SECURITY;
ALTER TABLE intel_budget_holds ENABLE ROW LEVEL SECURITY;


-- Hold `p_amount` of day `p_day` for a request of `p_batch_id` when the day's spent, plus its
-- unexpired holds, plus the amount stays within `p_cap`. Returns the hold's id, or NULL when
-- it would not fit (the request must not be sent).
CREATE FUNCTION intel_budget_reserve(
    p_day date, p_amount numeric, p_cap numeric, p_batch_id text, p_now timestamptz,
    p_expires_at timestamptz
)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $fn$
DECLARE
    v_spent numeric;
    v_held numeric;
    v_id bigint;
BEGIN
    INSERT INTO intel_budget (day, spent, updated_at) VALUES (p_day, 0, p_now)
        ON CONFLICT (day) DO NOTHING;
    -- the lock that serialises reservations of one day across every session
    SELECT b.spent INTO v_spent FROM intel_budget b WHERE b.day = p_day FOR UPDATE;
    -- holds of processes that died without settling stop counting once they expire
    DELETE FROM intel_budget_holds h WHERE h.day = p_day AND h.expires_at <= p_now;
    SELECT coalesce(sum(h.amount), 0) INTO v_held FROM intel_budget_holds h
        WHERE h.day = p_day;
    IF v_spent + v_held + p_amount > p_cap THEN
        RETURN NULL;
    END IF;
    INSERT INTO intel_budget_holds (day, batch_id, amount, created_at, expires_at)
        VALUES (p_day, p_batch_id, p_amount, p_now, p_expires_at)
        RETURNING id INTO v_id;
    RETURN v_id;
END
$fn$;


-- A request finished: add its real cost to the day and drop its hold, in one transaction (the
-- day never counts both, or neither). The cost is added even when the hold already expired.
CREATE FUNCTION intel_budget_settle(p_hold bigint, p_day date, p_cost numeric, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE
AS $fn$
BEGIN
    INSERT INTO intel_budget AS b (day, spent, updated_at) VALUES (p_day, p_cost, p_now)
        ON CONFLICT (day) DO UPDATE SET spent = b.spent + excluded.spent,
                                        updated_at = excluded.updated_at;
    DELETE FROM intel_budget_holds h WHERE h.id = p_hold;
END
$fn$;


-- Drop every hold of a batch (its run has ended: nothing of it is in flight). Returns how many.
CREATE FUNCTION intel_budget_release(p_batch_id text)
RETURNS integer
LANGUAGE sql VOLATILE
AS $$
    WITH gone AS (
        DELETE FROM intel_budget_holds h WHERE h.batch_id = p_batch_id RETURNING 1
    )
    SELECT count(*)::integer FROM gone;
$$;


-- The day's figures: spent (settled) and held (unexpired holds at p_now).
CREATE FUNCTION intel_budget_status(p_day date, p_now timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object(
        'spent', coalesce((SELECT b.spent FROM intel_budget b WHERE b.day = p_day), 0),
        'reserved', coalesce((SELECT sum(h.amount) FROM intel_budget_holds h
                              WHERE h.day = p_day AND h.expires_at > p_now), 0),
        'holds', (SELECT count(*) FROM intel_budget_holds h
                  WHERE h.day = p_day AND h.expires_at > p_now)
    );
$$;


-- Output tokens of the newest `p_limit` single-attempt enriched results of a model: what
-- `--dry-run` expects a request to generate.
CREATE FUNCTION intel_output_history(p_model text, p_limit integer DEFAULT 1000)
RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT jsonb_build_object('n', count(*), 'mean', avg(x.output_tokens))
    FROM (
        SELECT r.output_tokens FROM intel_results r
        WHERE r.model = p_model AND r.status = 'enriched' AND r.attempts = 1
        ORDER BY r.id DESC
        LIMIT greatest(p_limit, 0)
    ) x;
$$;


REVOKE EXECUTE ON FUNCTION intel_budget_reserve(date, numeric, numeric, text, timestamptz,
    timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_budget_settle(bigint, date, numeric, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_budget_release(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_budget_status(date, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_output_history(text, integer) FROM PUBLIC;

-- Supabase's roles exist only there: guard, so the same file runs on a stock PostgreSQL.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON intel_budget, intel_budget_holds FROM %I', r);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION '
                           'intel_budget_reserve(date, numeric, numeric, text, timestamptz, '
                           'timestamptz), '
                           'intel_budget_settle(bigint, date, numeric, timestamptz), '
                           'intel_budget_release(text), '
                           'intel_budget_status(date, timestamptz), '
                           'intel_output_history(text, integer) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON intel_budget, intel_budget_holds TO service_role;
        GRANT EXECUTE ON FUNCTION
            intel_budget_reserve(date, numeric, numeric, text, timestamptz, timestamptz),
            intel_budget_settle(bigint, date, numeric, timestamptz),
            intel_budget_release(text),
            intel_budget_status(date, timestamptz),
            intel_output_history(text, integer)
            TO service_role;
    END IF;
END
$$;

NOTIFY pgrst, 'reload schema';
