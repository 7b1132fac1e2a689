-- Groups of jobs with a join callback (runner/group.py): the callback runs once, after every member ended.
-- A member's end is copied here by the statement that makes its status row final (runner.store.jobs
-- _TRANSITIONS), so it counts once and never goes missing; the callback's `pending` row is written once,
-- by whichever writer first sees no member left running (the callback's job_id is the PK that decides).
CREATE TABLE IF NOT EXISTS runner_groups (
    group_id        text        PRIMARY KEY,
    join_id         text        NOT NULL UNIQUE,  -- the callback's job id: '<group_id>:join'
    join_name       text        NOT NULL,
    join_queue      text        NOT NULL,
    join_args       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    join_max_tries  integer     NOT NULL DEFAULT 1,
    parent_id       text,                         -- the job that enqueued the group
    size            integer     NOT NULL CHECK (size >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    joined_at       timestamptz                   -- when the callback's row was written
);
-- The sweeper's repair of joins whose writer died after the last member ended: only groups in flight.
CREATE INDEX IF NOT EXISTS runner_groups_unjoined_idx ON runner_groups (join_queue, created_at)
    WHERE joined_at IS NULL;
-- Retention (RESULT_RETENTION_S) forgets joined groups, a batch a sweep, as it forgets ended jobs.
CREATE INDEX IF NOT EXISTS runner_groups_joined_idx ON runner_groups (join_queue, joined_at)
    WHERE joined_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS runner_group_members (
    group_id  text        NOT NULL REFERENCES runner_groups (group_id) ON DELETE CASCADE,
    position  integer     NOT NULL,
    job_id    text        NOT NULL UNIQUE,  -- a job is a member of one group at most
    name      text        NOT NULL,
    -- The member's first end, NULL while it runs: copied from its status row when that row became final.
    status    text        CHECK (status IN ('completed', 'failed', 'cancelled')),
    result    jsonb,
    error     text,
    ended_at  timestamptz,
    PRIMARY KEY (group_id, position)
);
-- The sweeper's repair asks, of each group in flight, whether a member still runs: only those rows.
CREATE INDEX IF NOT EXISTS runner_group_members_running_idx ON runner_group_members (group_id)
    WHERE status IS NULL;
