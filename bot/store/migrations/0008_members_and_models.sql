-- 8: what members ask beyond the prompt and the size.
-- A result marked as a spoiler (its output and its inputs shown blurred until clicked).
ALTER TABLE jobs ADD COLUMN spoiler INTEGER NOT NULL DEFAULT 0;

-- The model's options asked for (quality, output format, background…), as JSON: only those the
-- job's model takes, checked against the model catalog before the job is accepted.
ALTER TABLE jobs ADD COLUMN options TEXT NOT NULL DEFAULT '{}';

-- Variations: the runs of one request share a group (the id of its first job), each with its
-- place in it (1..variants). A job that is not a variation has no group, variant 0 and variants 1.
ALTER TABLE jobs ADD COLUMN group_id TEXT;

ALTER TABLE jobs ADD COLUMN variant INTEGER NOT NULL DEFAULT 0;

ALTER TABLE jobs ADD COLUMN variants INTEGER NOT NULL DEFAULT 1;

CREATE INDEX jobs_group ON jobs (group_id);
