-- The operators' job list of one story (`python -m runner jobs ls --field story_id=<uuid>`): its jobs
-- without scanning the queue. Every StoryMimi job has a story_id argument; the runner knows nothing of
-- stories, so the index is the domain's. Its expression is the one find_jobs writes for an argument.
CREATE INDEX IF NOT EXISTS runner_jobs_story_id_idx ON runner_jobs ((args ->> 'story_id'));
