-- 13: each member's ready head, kept beside their turn. A claim reads one row per member with a
-- job ready to start, not every waiting job (a line of ten thousand took a claim 13 ms to read).
-- head_id, head_at: the member's first waiting job, in acceptance order, while it is queued;
-- NULL while it is not (still being accepted or prepared) or when they have none.
-- Status names below are data of their time, as in the migrations before this one.

ALTER TABLE fair_turns ADD COLUMN head_id TEXT;

ALTER TABLE fair_turns ADD COLUMN head_at DOUBLE PRECISION;

INSERT INTO fair_turns (user_id, turn)
SELECT DISTINCT user_id, -1 FROM jobs
WHERE status IN ('accepted', 'preparing', 'queued') AND user_id NOT IN (SELECT user_id FROM fair_turns);

UPDATE fair_turns SET head_id = (
    SELECT j.id FROM jobs j WHERE j.user_id = fair_turns.user_id AND j.status IN ('accepted', 'preparing', 'queued')
    ORDER BY j.created_at, j.id LIMIT 1
);

UPDATE fair_turns SET head_id = NULL WHERE head_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM jobs j WHERE j.id = fair_turns.head_id AND j.status = 'queued'
);

UPDATE fair_turns SET head_at = (SELECT j.created_at FROM jobs j WHERE j.id = fair_turns.head_id)
WHERE head_id IS NOT NULL;

CREATE INDEX fair_turns_ready ON fair_turns (turn, head_at, head_id);
