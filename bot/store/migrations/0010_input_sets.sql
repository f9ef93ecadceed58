-- 10: a job's inputs as one set, with their size and when their job ended, in a small row of
-- their own: keeping, sweeping and capping them read and write that row, never the images
-- (SQLite rewrites a whole row to change one column, and sums a blob's length by reading it).
CREATE TABLE input_sets (
    job_id TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL,
    ended_at DOUBLE PRECISION
);

INSERT INTO input_sets (job_id, bytes, ended_at)
SELECT job_id, SUM(LENGTH(data)), MAX(ended_at) FROM job_inputs GROUP BY job_id;

CREATE INDEX input_sets_ended ON input_sets (ended_at);

ALTER TABLE job_inputs DROP COLUMN ended_at;
