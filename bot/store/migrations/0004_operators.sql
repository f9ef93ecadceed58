-- 4: operators: the model and key a job used; blocked members; servers' own API keys (encrypted).

ALTER TABLE jobs ADD COLUMN model TEXT;

ALTER TABLE jobs ADD COLUMN guild_key INTEGER NOT NULL DEFAULT 0;

CREATE TABLE blocked_members (
    guild_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    reason TEXT,
    blocked_by BIGINT NOT NULL,
    blocked_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE guild_keys (
    guild_id BIGINT PRIMARY KEY,
    encrypted TEXT NOT NULL,
    set_by BIGINT NOT NULL,
    set_at DOUBLE PRECISION NOT NULL
);
