-- 0002_budget: the daily budget that every process sharing this store spends against
-- (INTEL_DAILY_BUDGET, issue 7 / SPEC 4.2). Never edit after release.
--
-- intel_budget holds what each UTC day has really spent (settled requests); each request in
-- flight holds its worst-case cost in intel_budget_holds until it is settled. A hold carries
-- its batch id and an expiry, so the holds of a process that died are ignored (and deleted)
-- once they expire instead of blocking the day for ever. Money is REAL quantised to 10
-- places, as in 0001; reserve and settle are read-modify-write under BEGIN IMMEDIATE.

CREATE TABLE intel_budget (
    day TEXT PRIMARY KEY,  -- the UTC day, YYYY-MM-DD
    spent REAL NOT NULL DEFAULT 0,
    updated_at TEXT NOT NULL
);

CREATE TABLE intel_budget_holds (
    id INTEGER PRIMARY KEY,
    day TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    amount REAL NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

CREATE INDEX intel_budget_holds_day ON intel_budget_holds (day, expires_at);
CREATE INDEX intel_budget_holds_batch ON intel_budget_holds (batch_id);
