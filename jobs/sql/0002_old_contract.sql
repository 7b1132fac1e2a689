-- What the old backend's clients read and write: the story's style and scene count, where it came from,
-- users, public stories and tracked conversations. Lists page with keysets on (created_at, id).
ALTER TABLE stories ADD COLUMN IF NOT EXISTS style           text;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS num_scenes      integer CHECK (num_scenes BETWEEN 1 AND 20);
ALTER TABLE stories ADD COLUMN IF NOT EXISTS source          text NOT NULL DEFAULT 'user';
ALTER TABLE stories ADD COLUMN IF NOT EXISTS updated_by      text;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS conversation_id text;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS agent_id        text;
ALTER TABLE stories ADD COLUMN IF NOT EXISTS fetch_transcript boolean NOT NULL DEFAULT false;

DROP INDEX IF EXISTS stories_user_idx;
CREATE INDEX IF NOT EXISTS stories_user_keyset_idx ON stories (user_id, created_at DESC, story_id DESC);
CREATE INDEX IF NOT EXISTS stories_recent_keyset_idx ON stories (created_at DESC, story_id DESC);

CREATE TABLE IF NOT EXISTS users (
    user_id         text        PRIMARY KEY,
    email           text        NOT NULL UNIQUE
                    CHECK (email ~* '^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$'),
    display_name    text,
    created_at      timestamptz NOT NULL,
    firebase_uid    text        NOT NULL,
    profile_source  text        NOT NULL DEFAULT 'firebase_auth'
                    CHECK (profile_source IN ('firebase_auth', 'manual', 'other')),
    is_active       boolean     NOT NULL DEFAULT true,
    updated_at      timestamptz,
    cover_image_url text,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX IF NOT EXISTS users_firebase_uid_idx ON users (firebase_uid);

CREATE TABLE IF NOT EXISTS public_stories (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    title            text        NOT NULL,
    description      text,
    cover_image_url  text,
    tags             jsonb       NOT NULL DEFAULT '[]'::jsonb,
    duration         text        NOT NULL DEFAULT '3 minutes',
    featured         boolean     NOT NULL DEFAULT false,
    view_count       integer     NOT NULL DEFAULT 0,
    age_rating       text        NOT NULL DEFAULT 'ALL' CHECK (age_rating IN ('ALL', '3+', '6+', '9+', '12+')),
    language         text        NOT NULL DEFAULT 'en',
    category         text        NOT NULL DEFAULT 'adventure'
                     CHECK (category IN ('fantasy', 'science-fiction', 'adventure', 'friendship', 'animals',
                                         'mystery', 'educational')),
    difficulty_level text        NOT NULL DEFAULT 'beginner'
                     CHECK (difficulty_level IN ('beginner', 'intermediate', 'advanced')),
    published        boolean     NOT NULL DEFAULT true,
    scenes           jsonb       NOT NULL DEFAULT '[]'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS public_stories_keyset_idx ON public_stories (created_at DESC, id DESC) WHERE published;

CREATE TABLE IF NOT EXISTS conversations (
    conversation_id text        PRIMARY KEY,
    user_id         text        NOT NULL,
    completed_at    text,
    metrics         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    story_id        uuid        REFERENCES stories (story_id) ON DELETE SET NULL,
    tracked_at      timestamptz NOT NULL DEFAULT now()
);
