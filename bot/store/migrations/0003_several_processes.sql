-- 3: several processes on one database: leases, the fair turn of each member, job inputs in the
-- database, and the indexes admission's totals read.

ALTER TABLE jobs ADD COLUMN claimed_by TEXT;

ALTER TABLE jobs ADD COLUMN lease_until DOUBLE PRECISION;

CREATE TABLE fair_turns (user_id BIGINT PRIMARY KEY, turn BIGINT NOT NULL);

CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);

CREATE TABLE job_inputs (
    job_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    mime TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    note TEXT,
    data BYTEA NOT NULL,
    PRIMARY KEY (job_id, number)
);

CREATE INDEX money_user_day ON money (user_id, day);

CREATE INDEX money_guild_day ON money (guild_id, day);

CREATE INDEX jobs_user_status ON jobs (user_id, status);

ALTER TABLE jobs ADD COLUMN queued_at DOUBLE PRECISION;

ALTER TABLE job_inputs ADD COLUMN ended_at DOUBLE PRECISION;
