-- 12: a request for variations has one card, rebuilt each time one of its runs ends. The rebuilds of
-- a group take turns across every process: the card's lock is this row, held by one process until
-- it lets go or ``until`` passes (a holder that died).
CREATE TABLE card_locks (
    group_id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until DOUBLE PRECISION NOT NULL
);
