-- 1: jobs and per-server settings.

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    guild_id BIGINT,
    channel_id BIGINT NOT NULL,
    prompt TEXT NOT NULL,
    size TEXT,
    input_count INTEGER NOT NULL,
    parent_job_id TEXT,
    delivery TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    charge_day TEXT NOT NULL,
    charged INTEGER NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    restarts INTEGER NOT NULL DEFAULT 0,
    api_seconds DOUBLE PRECISION,
    input_tokens INTEGER,
    output_tokens INTEGER,
    total_tokens INTEGER,
    output_width INTEGER,
    output_height INTEGER,
    output_bytes INTEGER
);

CREATE INDEX jobs_user_day ON jobs (user_id, charge_day);

CREATE INDEX jobs_guild_day ON jobs (guild_id, charge_day);

CREATE INDEX jobs_status ON jobs (status);

CREATE TABLE guild_settings (
    guild_id BIGINT PRIMARY KEY,
    settings TEXT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    updated_by BIGINT NOT NULL
);
