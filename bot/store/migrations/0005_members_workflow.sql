-- 5: members' workflow: private results and how each result was delivered, style presets,
-- results deleted by their member or a moderator, and which undelivered results were told.

ALTER TABLE jobs ADD COLUMN private INTEGER NOT NULL DEFAULT 0;

ALTER TABLE jobs ADD COLUMN style TEXT;

ALTER TABLE jobs ADD COLUMN style_text TEXT;

ALTER TABLE jobs ADD COLUMN delivered TEXT;

UPDATE jobs SET delivered = 'posted' WHERE status = 'succeeded';

CREATE INDEX jobs_user_created ON jobs (user_id, created_at);

CREATE INDEX jobs_delivered ON jobs (delivered);

CREATE TABLE style_presets (
    guild_id BIGINT NOT NULL,
    name TEXT NOT NULL,
    text TEXT NOT NULL,
    created_by BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, name)
);

CREATE TABLE result_deletions (
    job_id TEXT PRIMARY KEY,
    deleted_by BIGINT NOT NULL,
    deleted_at DOUBLE PRECISION NOT NULL
);

CREATE TABLE notices_shown (
    job_id TEXT PRIMARY KEY,
    shown_at DOUBLE PRECISION NOT NULL
);
