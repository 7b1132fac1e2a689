-- A debounced job's row keeps the arguments of the last debounce Redis ran (runner/unique.py): each takes a
-- number from the enqueue script, and a row only takes arguments with a larger one. 0: never debounced.
-- A constant default: adding it rewrites nothing.
ALTER TABLE runner_jobs ADD COLUMN IF NOT EXISTS args_takeover bigint NOT NULL DEFAULT 0;
