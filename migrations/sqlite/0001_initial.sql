-- intel: the SQLite schema (SPEC 3.1). Never edit after release: add 0002_*.sql instead.
-- Timestamps are UTC text 'YYYY-MM-DDTHH:MM:SS.ffffffZ' (text order is time order).
-- Money is REAL holding Decimals quantised to 10 places; sums are done exactly as
-- integers: SUM(CAST(ROUND(cost * 1e10) AS INTEGER)).

CREATE TABLE intel_logs (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    batch_id TEXT NOT NULL UNIQUE,
    total INTEGER NOT NULL DEFAULT 0,
    enriched INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    retried INTEGER NOT NULL DEFAULT 0,
    timed_out INTEGER NOT NULL DEFAULT 0,
    cached INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    avg_time_ms INTEGER,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    model_used TEXT,
    mode TEXT NOT NULL CHECK (mode IN ('realtime', 'batch', 'simulated')),
    status TEXT NOT NULL DEFAULT 'running' CHECK (
        status IN ('running', 'completed', 'interrupted', 'rate_limited', 'over_budget', 'failed')
    ),
    success_rate REAL GENERATED ALWAYS AS (
        CASE WHEN total > 0 THEN 100.0 * enriched / total ELSE 0 END
    ) VIRTUAL,
    finished_at TEXT,
    metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata))
);

-- the metrics window: since <= created_at < until
CREATE INDEX intel_logs_created_at ON intel_logs (created_at);

CREATE TABLE intel_results (
    id INTEGER PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES intel_logs (batch_id),
    row_index INTEGER NOT NULL,
    contact_key TEXT,
    status TEXT NOT NULL CHECK (
        status IN (
            'enriched', 'cached', 'failed', 'timed_out', 'skipped', 'rate_limited', 'over_budget'
        )
    ),
    model TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    latency_ms INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    intel TEXT CHECK (intel IS NULL OR json_valid(intel)),
    usage TEXT CHECK (usage IS NULL OR json_valid(usage)),
    prompt_version TEXT,
    created_at TEXT NOT NULL,
    UNIQUE (batch_id, row_index)
);

-- reuse of earlier results (SPEC 3.3): newest row for a key, prompt version and model
CREATE INDEX intel_results_cache
    ON intel_results (contact_key, prompt_version, model, created_at);

-- modelBreakdown and metrics by model, per batch
CREATE INDEX intel_results_batch_model ON intel_results (batch_id, model);

CREATE TABLE intel_limiter (
    name TEXT PRIMARY KEY,
    blocked_until TEXT,
    reason TEXT,
    set_by TEXT,
    updated_at TEXT
);
