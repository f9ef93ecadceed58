-- 7: one engine for both databases.
-- A job's kind is what it does (edit, imagine); how it was started is its origin.
-- Every claim gives a job a new run number, which fences the moves of the run that holds it.
-- Money in integer micro-dollars, the floats dropped. Final notices owed to members (the outbox).
-- Status names below are data of their time, as in the migrations before this one.

ALTER TABLE jobs ADD COLUMN origin TEXT NOT NULL DEFAULT 'command';

UPDATE jobs SET origin = CASE kind WHEN 'edit' THEN 'command' ELSE kind END;

UPDATE jobs SET kind = 'edit';

ALTER TABLE jobs ADD COLUMN run INTEGER NOT NULL DEFAULT 0;

UPDATE jobs SET run = restarts + 1 WHERE started_at IS NOT NULL;

ALTER TABLE jobs ADD COLUMN cost BIGINT NOT NULL DEFAULT 0;

UPDATE jobs SET cost = CAST(ROUND(cost_usd * 1000000) AS BIGINT);

ALTER TABLE jobs DROP COLUMN cost_usd;

ALTER TABLE money ADD COLUMN amount BIGINT NOT NULL DEFAULT 0;

UPDATE money SET amount = CAST(ROUND(amount_usd * 1000000) AS BIGINT);

ALTER TABLE money DROP COLUMN amount_usd;

CREATE INDEX jobs_waiting ON jobs (status, user_id, created_at);

CREATE INDEX jobs_holder ON jobs (claimed_by);

CREATE INDEX fair_turns_turn ON fair_turns (turn);

CREATE TABLE notices (
    job_id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    due_at DOUBLE PRECISION NOT NULL,
    claimed_by TEXT,
    lease_until DOUBLE PRECISION,
    attempts INTEGER NOT NULL DEFAULT 0,
    done_at DOUBLE PRECISION,
    how TEXT,
    shown_at DOUBLE PRECISION
);

CREATE INDEX notices_pending ON notices (done_at, due_at);

CREATE INDEX notices_next_use ON notices (how, shown_at);

-- Jobs that ended before the outbox: their members were told then (or are owed a word at their
-- next use, for an undelivered result that was never shown).
INSERT INTO notices (job_id, outcome, payload, created_at, due_at, attempts, done_at, how, shown_at)
SELECT j.id, j.status, '{}', COALESCE(j.finished_at, j.created_at), COALESCE(j.finished_at, j.created_at), 0,
       COALESCE(j.finished_at, j.created_at),
       CASE WHEN j.delivered = 'undelivered' THEN 'next_use' ELSE 'before_outbox' END,
       (SELECT s.shown_at FROM notices_shown s WHERE s.job_id = j.id)
FROM jobs j WHERE j.status IN ('succeeded', 'failed', 'cancelled');

DROP TABLE notices_shown;
