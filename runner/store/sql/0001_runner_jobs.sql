-- One row per job: what ran, how often, how it ended. Written by the enqueue client and the workers.
CREATE TABLE IF NOT EXISTS runner_jobs (
    job_id       text        PRIMARY KEY,
    name         text        NOT NULL,
    queue        text        NOT NULL,
    args         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'retrying', 'completed', 'failed', 'cancelled')),
    attempts     integer     NOT NULL DEFAULT 0,
    max_tries    integer     NOT NULL DEFAULT 1,
    worker       text,
    error        text,
    result       jsonb,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The sweeper and dashboards look for active rows; keep that scan small.
CREATE INDEX IF NOT EXISTS runner_jobs_active_idx ON runner_jobs (status, updated_at)
    WHERE status IN ('pending', 'processing', 'retrying');
