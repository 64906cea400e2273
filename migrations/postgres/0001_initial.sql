-- 0001_initial: the intel tables (SPEC 3.1), the global limiter (SPEC 2.4) and the one
-- definition of the metrics (SPEC 2.3) for PostgreSQL and Supabase.
--
-- Stock PostgreSQL >= 13, no extensions. Objects are created in the first schema of the
-- search_path (public on Supabase, where PostgREST exposes them to the service role).
-- Row-level security is on for every table and no policy is created: the `anon` and
-- `authenticated` roles of a Supabase project see nothing, the service role bypasses RLS.

CREATE TABLE IF NOT EXISTS intel_schema_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE intel_logs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now(),
    batch_id text NOT NULL UNIQUE,
    total integer NOT NULL DEFAULT 0,
    enriched integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    retried integer NOT NULL DEFAULT 0,
    timed_out integer NOT NULL DEFAULT 0,
    cached integer NOT NULL DEFAULT 0,
    skipped integer NOT NULL DEFAULT 0,
    cost numeric(20, 10) NOT NULL DEFAULT 0,
    avg_time_ms integer,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    model_used text,
    mode text NOT NULL CHECK (mode IN ('realtime', 'batch', 'simulated')),
    status text NOT NULL DEFAULT 'running' CHECK (
        status IN ('running', 'completed', 'interrupted', 'rate_limited', 'over_budget', 'failed')
    ),
    success_rate numeric GENERATED ALWAYS AS (
        CASE WHEN total > 0 THEN 100.0 * enriched / total ELSE 0 END
    ) STORED,
    finished_at timestamptz,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- the metrics window (since <= created_at < until) and "newest first"
CREATE INDEX intel_logs_created_at_idx ON intel_logs (created_at);

CREATE TABLE intel_results (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id text NOT NULL REFERENCES intel_logs (batch_id),
    row_index integer NOT NULL,
    contact_key text,
    status text NOT NULL CHECK (
        status IN ('enriched', 'cached', 'failed', 'timed_out', 'skipped', 'rate_limited',
                   'over_budget')
    ),
    model text,
    input_tokens bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cache_read_tokens bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cost numeric(20, 10) NOT NULL DEFAULT 0,
    latency_ms integer,
    attempts integer NOT NULL DEFAULT 0,
    error text,
    intel jsonb,
    usage jsonb,
    prompt_version text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (batch_id, row_index)
);

-- reuse of earlier results (SPEC 3.3): newest row for a contact key
CREATE INDEX intel_results_cache_idx ON intel_results (contact_key, created_at);
-- modelBreakdown: rows of the window's batches, per model
CREATE INDEX intel_results_batch_model_idx ON intel_results (batch_id, model);

CREATE TABLE intel_limiter (
    name text PRIMARY KEY,
    blocked_until timestamptz,
    reason text,
    set_by text,
    updated_at timestamptz
);

ALTER TABLE intel_schema_migrations ENABLE ROW LEVEL SECURITY;
ALTER TABLE intel_logs ENABLE ROW LEVEL SECURITY;
ALTER TABLE intel_results ENABLE ROW LEVEL SECURITY;
ALTER TABLE intel_limiter ENABLE ROW LEVEL SECURITY;


-- The metrics of SPEC 2.3 for one window, in the shape `intel metrics --json` prints (without
-- `success` and `timeframe`). Every store computes them here or with the same arithmetic:
-- exact numeric sums, rounded half away from zero at the end.
--
-- The metrics functions run their query with EXECUTE ... USING so that it is planned for the
-- actual window on every call: a generic plan (what an SQL-language function gets) does not
-- know a 24 h window is small, and hash-joins every intel_results row of every batch.
CREATE FUNCTION intel_metrics(since timestamptz, until timestamptz, recent integer DEFAULT 10)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    result jsonb;
BEGIN
    EXECUTE $q$
    SELECT jsonb_build_object(
        'summary', jsonb_build_object(
            'totalBatches', s.batches,
            'totalContacts', s.contacts,
            'totalEnriched', s.enriched,
            'totalFailed', s.failed,
            'totalCost', round(s.cost, 4),
            'avgSuccessRate',
                CASE WHEN s.contacts > 0 THEN round(100.0 * s.enriched / s.contacts, 2)
                     ELSE 0.0 END,
            'avgTimePerContact',
                CASE WHEN s.contacts > 0 THEN round(s.weighted_ms / s.contacts)::bigint
                     ELSE 0 END
        ),
        'tokens', jsonb_build_object(
            'totalInput', s.input,
            'totalOutput', s.output,
            'total', s.input + s.output,
            'cacheRead', s.cache_read,
            'cacheWrite', s.cache_write
        ),
        'modelBreakdown', coalesce((
            SELECT jsonb_object_agg(m.model, m.n)
            FROM (
                SELECT r.model, count(*) AS n
                FROM intel_results r
                JOIN intel_logs l ON l.batch_id = r.batch_id
                WHERE l.created_at >= $1 AND l.created_at < $2
                  AND r.model IS NOT NULL
                GROUP BY r.model
            ) m
        ), '{}'::jsonb),
        'recentBatches', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                'batch_id', b.batch_id,
                'created_at',
                    to_char(b.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'total', b.total,
                'enriched', b.enriched,
                'failed', b.failed,
                'cost', round(b.cost, 6),
                'success_rate',
                    CASE WHEN b.total > 0 THEN round(100.0 * b.enriched / b.total, 2)
                         ELSE 0.0 END,
                'retried', b.retried,
                'timed_out', b.timed_out,
                'cached', b.cached,
                'skipped', b.skipped,
                'mode', b.mode,
                'status', b.status,
                'model_used', b.model_used
            ) ORDER BY b.created_at DESC, b.id DESC)
            FROM (
                SELECT * FROM intel_logs l
                WHERE l.created_at >= $1 AND l.created_at < $2
                ORDER BY l.created_at DESC, l.id DESC
                LIMIT greatest($3, 0)
            ) b
        ), '[]'::jsonb)
    )
    FROM (
        SELECT count(*) AS batches,
               coalesce(sum(l.total), 0) AS contacts,
               coalesce(sum(l.enriched), 0) AS enriched,
               coalesce(sum(l.failed), 0) AS failed,
               coalesce(sum(l.cost), 0) AS cost,
               -- a batch without a measured latency counts as 0 ms
               coalesce(sum(coalesce(l.avg_time_ms, 0)::numeric * l.total), 0) AS weighted_ms,
               coalesce(sum(l.input_tokens), 0) AS input,
               coalesce(sum(l.output_tokens), 0) AS output,
               coalesce(sum(l.cache_read_tokens), 0) AS cache_read,
               coalesce(sum(l.cache_write_tokens), 0) AS cache_write
        FROM intel_logs l
        WHERE l.created_at >= $1 AND l.created_at < $2
    ) s
    $q$ INTO result USING since, until, recent;
    RETURN result;
END
$fn$;


-- `intel metrics --by day`: one element per UTC day with batches in the window, oldest first.
CREATE FUNCTION intel_metrics_by_day(since timestamptz, until timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    result jsonb;
BEGIN
    EXECUTE $q$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'day', d.day,
        'batches', d.batches,
        'contacts', d.contacts,
        'enriched', d.enriched,
        'failed', d.failed,
        'cost', round(d.cost, 6),
        'success_rate',
            CASE WHEN d.contacts > 0 THEN round(100.0 * d.enriched / d.contacts, 2) ELSE 0.0 END
    ) ORDER BY d.day COLLATE "C"), '[]'::jsonb)
    FROM (
        SELECT to_char(l.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
               count(*) AS batches,
               sum(l.total) AS contacts,
               sum(l.enriched) AS enriched,
               sum(l.failed) AS failed,
               sum(l.cost) AS cost
        FROM intel_logs l
        WHERE l.created_at >= $1 AND l.created_at < $2
        GROUP BY 1
    ) d
    $q$ INTO result USING since, until;
    RETURN result;
END
$fn$;


-- `intel metrics --by model`: per model of the window's intel_results rows.
CREATE FUNCTION intel_metrics_by_model(since timestamptz, until timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $fn$
DECLARE
    result jsonb;
BEGIN
    EXECUTE $q$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'model', m.model,
        'contacts', m.contacts,
        'enriched', m.enriched,
        'input_tokens', m.input_tokens,
        'output_tokens', m.output_tokens,
        'cache_read_tokens', m.cache_read_tokens,
        'cache_write_tokens', m.cache_write_tokens,
        'cost', round(m.cost, 6)
    ) ORDER BY m.contacts DESC, m.model COLLATE "C"), '[]'::jsonb)
    FROM (
        SELECT r.model,
               count(*) AS contacts,
               count(*) FILTER (WHERE r.status IN ('enriched', 'cached')) AS enriched,
               sum(r.input_tokens) AS input_tokens,
               sum(r.output_tokens) AS output_tokens,
               sum(r.cache_read_tokens) AS cache_read_tokens,
               sum(r.cache_write_tokens) AS cache_write_tokens,
               sum(r.cost) AS cost
        FROM intel_results r
        JOIN intel_logs l ON l.batch_id = r.batch_id
        WHERE l.created_at >= $1
          AND l.created_at < $2
          AND r.model IS NOT NULL
        GROUP BY r.model
    ) m
    $q$ INTO result USING since, until;
    RETURN result;
END
$fn$;


-- Set the global limiter, keeping the later of the stored and the new blocked_until: one
-- upsert, so concurrent callers (every process and machine sharing the store) cannot move it
-- earlier. reason/set_by/updated_at change only when the new time wins. Returns the row.
CREATE FUNCTION intel_limiter_block(
    name text, until timestamptz, reason text, set_by text, now timestamptz DEFAULT now()
)
RETURNS SETOF intel_limiter
LANGUAGE sql VOLATILE
AS $$
    INSERT INTO intel_limiter AS l (name, blocked_until, reason, set_by, updated_at)
    VALUES (intel_limiter_block.name, intel_limiter_block.until, intel_limiter_block.reason,
            intel_limiter_block.set_by, intel_limiter_block.now)
    ON CONFLICT ON CONSTRAINT intel_limiter_pkey DO UPDATE
        SET blocked_until = excluded.blocked_until,
            reason = excluded.reason,
            set_by = excluded.set_by,
            updated_at = excluded.updated_at
        WHERE l.blocked_until IS NULL OR l.blocked_until < excluded.blocked_until;
    -- a new snapshot: sees our write, or the later one that beat it
    SELECT * FROM intel_limiter l WHERE l.name = intel_limiter_block.name;
$$;


-- Clear the limiter; returns the row as it was (no row when nothing was set).
CREATE FUNCTION intel_limiter_reset(name text DEFAULT 'anthropic')
RETURNS SETOF intel_limiter
LANGUAGE sql VOLATILE
AS $$
    DELETE FROM intel_limiter l WHERE l.name = intel_limiter_reset.name RETURNING l.*;
$$;


-- Functions are executable by PUBLIC by default; only the owner and the service role need them.
REVOKE EXECUTE ON FUNCTION intel_metrics(timestamptz, timestamptz, integer) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_metrics_by_day(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_metrics_by_model(timestamptz, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_limiter_block(text, timestamptz, text, text, timestamptz)
    FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION intel_limiter_reset(text) FROM PUBLIC;

-- Supabase's roles exist only there: guard, so the same file runs on a stock PostgreSQL.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE ALL ON intel_schema_migrations, intel_logs, intel_results, '
                           'intel_limiter FROM %I', r);
            EXECUTE format('REVOKE EXECUTE ON FUNCTION intel_metrics(timestamptz, timestamptz, '
                           'integer), intel_metrics_by_day(timestamptz, timestamptz), '
                           'intel_metrics_by_model(timestamptz, timestamptz), '
                           'intel_limiter_block(text, timestamptz, text, text, timestamptz), '
                           'intel_limiter_reset(text) FROM %I', r);
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        GRANT ALL ON intel_schema_migrations, intel_logs, intel_results, intel_limiter
            TO service_role;
        GRANT EXECUTE ON FUNCTION intel_metrics(timestamptz, timestamptz, integer),
            intel_metrics_by_day(timestamptz, timestamptz),
            intel_metrics_by_model(timestamptz, timestamptz),
            intel_limiter_block(text, timestamptz, text, text, timestamptz),
            intel_limiter_reset(text)
            TO service_role;
    END IF;
END
$$;

-- PostgREST (Supabase's REST API) caches the schema: have it see the new tables and functions
-- at once. A notification nobody listens to (a stock PostgreSQL) costs nothing.
NOTIFY pgrst, 'reload schema';
