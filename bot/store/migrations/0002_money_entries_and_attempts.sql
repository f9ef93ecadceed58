-- 2: money as keyed entries instead of a "charged" flag; API attempts; typed notes; where the result is.

CREATE TABLE money (
    job_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    guild_id BIGINT,
    day TEXT NOT NULL,
    amount_usd DOUBLE PRECISION NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, entry)
);

CREATE INDEX money_day ON money (day);

INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) SELECT id, 'charge', user_id, guild_id, charge_day, cost_usd, created_at FROM jobs;

INSERT INTO money (job_id, entry, user_id, guild_id, day, amount_usd, at) SELECT id, 'refund', user_id, guild_id, charge_day, cost_usd, COALESCE(finished_at, created_at) FROM jobs WHERE charged = 0;

ALTER TABLE jobs DROP COLUMN charged;

ALTER TABLE jobs ADD COLUMN notes TEXT NOT NULL DEFAULT '[]';

ALTER TABLE jobs ADD COLUMN result_channel_id BIGINT;

ALTER TABLE jobs ADD COLUMN result_message_id BIGINT;

CREATE TABLE api_attempts (
    job_id TEXT NOT NULL,
    run INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    seconds DOUBLE PRECISION NOT NULL,
    outcome TEXT NOT NULL,
    http_status INTEGER,
    may_be_billed INTEGER NOT NULL,
    request_id TEXT,
    PRIMARY KEY (job_id, run, attempt)
);
