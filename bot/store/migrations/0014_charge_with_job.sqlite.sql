-- 14 (SQLite): a job's charge is written by the database with the job, in the same statement. Admissions
-- written together (one statement per job, sent at once) each find the charges of those before them.
-- The entry's name is data, as 'charge' in migration 2 (bot/store/queries.py names it CHARGE).

CREATE TRIGGER jobs_charge AFTER INSERT ON jobs BEGIN
    INSERT INTO money (job_id, entry, user_id, guild_id, day, amount, at)
    VALUES (NEW.id, 'charge', NEW.user_id, NEW.guild_id, NEW.charge_day, NEW.cost, NEW.created_at); END;
