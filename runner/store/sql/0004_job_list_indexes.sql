-- The operators' job lists (runner.ops.jobs.find_jobs), newest first. 0002's queue keyset index serves the
-- lists of all jobs; these serve the lists of what went wrong (status failed, cancelled or retrying, or an
-- error text), a few percent of the rows, which would otherwise scan the whole queue for a page. Both are
-- partial: a job that succeeds at its first try (pending, processing, completed) never writes to them.
CREATE INDEX IF NOT EXISTS runner_jobs_trouble_keyset_idx ON runner_jobs (queue, enqueued_at DESC, job_id DESC)
    WHERE status IN ('failed', 'cancelled', 'retrying') OR error IS NOT NULL;

-- Error text (ILIKE '%text%') by trigrams, when the server has pg_trgm: a contrib extension, trusted since
-- PostgreSQL 13, so the database's owner may create it. Without it the lists still work, by scanning the
-- rows above (slow for a rare text), and this migration says so; to add it later, install pg_trgm and run
-- this DO block again.
DO $$
DECLARE
    trgm_schema text;
BEGIN
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'pg_trgm is not available (%): job lists filtered by error text will scan the rows with an error',
            SQLERRM;
    END;
    SELECT n.nspname INTO trgm_schema
    FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
    WHERE e.extname = 'pg_trgm';
    IF trgm_schema IS NOT NULL THEN
        EXECUTE format('CREATE INDEX IF NOT EXISTS runner_jobs_error_trgm_idx ON runner_jobs '
                       'USING gin (error %I.gin_trgm_ops) WHERE error IS NOT NULL', trgm_schema);
    END IF;
END
$$;
