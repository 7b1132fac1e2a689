-- Stories and their scenes, as the StoryMimi client sees them.
CREATE TABLE IF NOT EXISTS stories (
    story_id        uuid        PRIMARY KEY,
    user_id         text        NOT NULL,
    title           text        NOT NULL,
    prompt          text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    error           text,
    job_id          text,
    visual_profile  jsonb,
    cover_image_key text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS stories_user_idx ON stories (user_id, created_at DESC);

-- One row per (story, sequence): re-runs upsert, never duplicate.
CREATE TABLE IF NOT EXISTS scenes (
    scene_id     uuid        PRIMARY KEY,
    story_id     uuid        NOT NULL REFERENCES stories (story_id) ON DELETE CASCADE,
    sequence     integer     NOT NULL CHECK (sequence >= 1),
    title        text        NOT NULL,
    text         text        NOT NULL,
    image_prompt text        NOT NULL,
    image_key    text,
    audio_key    text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (story_id, sequence)
);
