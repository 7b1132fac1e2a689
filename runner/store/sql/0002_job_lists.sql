-- Operators page through a queue's jobs newest first, filtered, and count what finished lately.
CREATE INDEX IF NOT EXISTS runner_jobs_queue_keyset_idx ON runner_jobs (queue, enqueued_at DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS runner_jobs_finished_idx ON runner_jobs (queue, finished_at) WHERE finished_at IS NOT NULL;
