-- A row per attempt: when it started and ended, on which worker, how it ended and with what error and
-- traceback, so a job's history survives restarts. An attempt that never reports its end (its worker was
-- killed, its host lost) keeps outcome NULL; readers call it lost once the job has moved on.
CREATE TABLE IF NOT EXISTS runner_job_attempts (
    job_id      text        NOT NULL,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    worker      text,
    finished_at timestamptz,
    outcome     text        CHECK (outcome IN ('completed', 'failed', 'retrying', 'cancelled', 'deferred', 'released')),
    error       text,
    traceback   text,
    -- A run given back without using a try (deferred, released) repeats its attempt number: the start tells them apart.
    PRIMARY KEY (job_id, attempt, started_at)
);

-- The job that enqueued this one (NULL for jobs enqueued from outside a job): a job's children.
ALTER TABLE runner_jobs ADD COLUMN IF NOT EXISTS parent_id text;
CREATE INDEX IF NOT EXISTS runner_jobs_parent_idx ON runner_jobs (parent_id) WHERE parent_id IS NOT NULL;
