"""The store's SQL, written once for both databases (``:name`` parameters, portable clauses).

State names come from ``JobState`` (``sql_states``), money entries from the constants below;
none is typed into a statement by hand. Only ``move_sql`` writes a job's status.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.core.attempts import AttemptOutcome
from bot.core.states import ENDED, HELD, IN_LINE, WAITING, JobState, sql_states
from bot.store.rows import JOB_COLUMNS

S = JobState
CHARGE = "charge"
REFUND = "refund"
SETTLE = "settle"
# Jobs: a charge counts one, a refund takes it back; a settlement changes the amount, not the count.
_NET_COUNT = f"COALESCE(SUM(CASE entry WHEN '{CHARGE}' THEN 1 WHEN '{REFUND}' THEN -1 ELSE 0 END), 0)"
# Money: the charge, less the refund, plus the settlement (signed: what a job by tokens really cost, less its charge).
NET_AMOUNT = f"COALESCE(SUM(CASE WHEN m.entry = '{REFUND}' THEN -m.amount ELSE m.amount END), 0)"
UNFINISHED = f"status NOT IN ({sql_states(*ENDED)})"

# A money row of a job (a refund: its charge comes with the job, ``ADMIT_JOB``), keyed by the job and the
# entry: a second one of either is never written.
INSERT_MONEY = (
    "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount, at) "
    "SELECT id, CAST(:entry AS TEXT), user_id, guild_id, charge_day, cost, CAST(:at AS DOUBLE PRECISION) "
    "FROM jobs WHERE id = :id ON CONFLICT (job_id, entry) DO NOTHING"
)
# A job's one settlement: the signed difference between what it really cost and its charge.
INSERT_SETTLEMENT = (
    "INSERT INTO money (job_id, entry, user_id, guild_id, day, amount, at) "
    "SELECT id, CAST(:entry AS TEXT), user_id, guild_id, charge_day, CAST(:amount AS BIGINT), "
    "CAST(:at AS DOUBLE PRECISION) FROM jobs WHERE id = :id ON CONFLICT (job_id, entry) DO NOTHING"
)
_ATTEMPT_ROW = (
    "INSERT INTO api_attempts (job_id, run, attempt, started_at, seconds, outcome, http_status, may_be_billed, "
    "request_id) VALUES (:job_id, :run, :attempt, :started_at, :seconds, :outcome, :http_status, "
    ":may_be_billed, :request_id) ON CONFLICT (job_id, run, attempt) "
)
INSERT_ATTEMPT = _ATTEMPT_ROW + "DO NOTHING"
# A lost run's own account of its call: it replaces what the take-over recorded for that run.
UPSERT_ATTEMPT = _ATTEMPT_ROW + (
    "DO UPDATE SET started_at = excluded.started_at, seconds = excluded.seconds, outcome = excluded.outcome, "
    "http_status = excluded.http_status, may_be_billed = excluded.may_be_billed, request_id = excluded.request_id"
)
GET_JOB = "SELECT * FROM jobs WHERE id = :id"
ATTEMPTS_OF = (
    "SELECT attempt, started_at, seconds, outcome, http_status, may_be_billed, request_id FROM api_attempts "
    "WHERE job_id = :job_id ORDER BY run, attempt"
)

# A member's, (``whole_guild``) their server's and (``whole_day``) the day's totals. The server's and the
# day's are summed only when a limit needs them: they read every charge of the server, or of the day (ten
# thousand rows in a busy one), and an admission that sums them for nothing waits for it. A member's jobs
# at once count requests: a request's variations (one group) count once, and a run of the group being
# admitted (``group_id``) finds it counted already.
USAGE = f"""
SELECT
    (SELECT {_NET_COUNT} FROM money WHERE day = :day AND user_id = :user_id) AS user_today,
    CASE WHEN CAST(:whole_guild AS INTEGER) = 1 THEN
        (SELECT {_NET_COUNT} FROM money WHERE day = :day AND guild_id = :guild_id)
    ELSE 0 END AS guild_today,
    CASE WHEN CAST(:whole_day AS INTEGER) = 1 THEN
        (SELECT {NET_AMOUNT} FROM money m JOIN jobs j ON j.id = m.job_id WHERE m.day = :day AND j.guild_key = 0)
    ELSE 0 END AS spend_today,
    (SELECT COUNT(DISTINCT COALESCE(group_id, id)) FROM jobs WHERE user_id = :user_id AND {UNFINISHED}
     AND COALESCE(group_id, id) <> COALESCE(CAST(:group_id AS TEXT), '')) AS user_active,
    (SELECT MAX(created_at) FROM jobs WHERE user_id = :user_id AND created_at >= :since) AS last_accepted
"""

# Whether one more job may be accepted: the one comparison of the totals with the quota's bounds,
# in the order a refusal names them (``bot.core.quota.Limit``); NULL when every total is within its bound.
VERDICT = f"""
SELECT u.*, CASE
    WHEN CAST(:b_spend AS BIGINT) IS NOT NULL AND u.spend_today > CAST(:b_spend AS BIGINT) THEN 'budget'
    WHEN CAST(:b_guild AS BIGINT) IS NOT NULL AND u.guild_today > CAST(:b_guild AS BIGINT) THEN 'guild'
    WHEN CAST(:b_active AS BIGINT) IS NOT NULL AND u.user_active > CAST(:b_active AS BIGINT) THEN 'active'
    WHEN CAST(:b_user AS BIGINT) IS NOT NULL AND u.user_today > CAST(:b_user AS BIGINT) THEN 'daily'
    WHEN CAST(:b_accepted AS DOUBLE PRECISION) IS NOT NULL AND u.last_accepted IS NOT NULL
         AND u.last_accepted > CAST(:b_accepted AS DOUBLE PRECISION) THEN 'cooldown'
END AS verdict
FROM ({USAGE}) u
"""

# A new job, inserted only if the verdict on its member's totals allows it (``VERDICT``, whose parameters it
# takes; the job's columns come as ``j_``-prefixed parameters): the check and the insert are one statement,
# one round trip on PostgreSQL while the admission's locks are held. Nothing inserted: a limit refuses. The
# job's charge comes with it (a trigger, migration 14: ``CHARGE``, its price, stamped with its admission).
ADMIT_JOB = (
    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) SELECT {', '.join(':j_' + c for c in JOB_COLUMNS)} "
    f"FROM ({VERDICT}) v WHERE v.verdict IS NULL"
)

# The fair choice. Each member's first waiting job (in acceptance order) is their head; a head that is
# ready (queued) may start; members served least recently go first. ``fair_turns`` keeps, beside each
# member's last turn, their ready head (``head_id``, ``head_at``; NULL while their head is not ready),
# refreshed by every move that can change it (``REFRESH_HEAD``), so a claim reads one row per member,
# not the whole line. The first ``:limit`` members in that order are what as many claims in a row take
# (each claim sends its member to the back), so several slots are filled from one reading.
# ``earlier`` and ``head_status`` check each row against the jobs themselves: a job admitted with an
# earlier time (another process's clock) makes it stale, and the claim refreshes it.
# And the calls running under a live lease, across every process, for the cap (one row even with no head).
CLAIM_HEADS = f"""
SELECT
    (SELECT COUNT(*) FROM jobs WHERE status = '{S.RUNNING}' AND lease_until >= :now) AS running,
    c.user_id, c.head_id AS head,
    (SELECT status FROM jobs WHERE id = c.head_id) AS head_status,
    CASE WHEN EXISTS (
        SELECT 1 FROM jobs e WHERE e.user_id = c.user_id AND e.status IN ({sql_states(*IN_LINE)})
        AND (e.created_at < c.head_at OR (e.created_at = c.head_at AND e.id < c.head_id))
    ) THEN 1 ELSE 0 END AS earlier
FROM (SELECT 1 AS one) o LEFT JOIN (
    SELECT user_id, head_id, head_at, turn FROM fair_turns WHERE head_id IS NOT NULL
    ORDER BY turn, head_at, head_id LIMIT :limit
) c ON 1 = 1
ORDER BY c.turn, c.head_at, c.head_id
"""


def _set_head(turn: str) -> str:
    # A member's row in ``fair_turns`` with their ready head as the jobs have it now, and ``turn``.
    # (``WHERE 1 = 1``: SQLite reads an upsert's SELECT with a join only with a WHERE clause.)
    return f"""
INSERT INTO fair_turns (user_id, turn, head_id, head_at)
SELECT CAST(:user_id AS BIGINT), {turn}, h.id, h.created_at
FROM (SELECT 1 AS one) o LEFT JOIN (
    SELECT f.id, f.created_at FROM (
        SELECT id, created_at, status FROM jobs
        WHERE user_id = CAST(:user_id AS BIGINT) AND status IN ({sql_states(*IN_LINE)})
        ORDER BY created_at, id LIMIT 1
    ) f WHERE f.status = '{S.QUEUED}'
) h ON 1 = 1
WHERE 1 = 1
ON CONFLICT (user_id) DO UPDATE SET head_id = excluded.head_id, head_at = excluded.head_at"""


# A member's ready head after a move that may change it; a member new to the line has had no turn (-1).
REFRESH_HEAD = _set_head("-1")
# A claim's member: served now (their turn the latest), and their next head.
TAKE_TURN = _set_head("(SELECT COALESCE(MAX(turn), 0) + 1 FROM fair_turns)") + ", turn = excluded.turn"


# Every waiting job's place, as the claim would serve them if all were ready: round k of the
# round-robin takes each member's k-th job, members in the order of their last turn. ``columns``
# are the job's columns the rows carry (``user_id`` among them).
def _places(columns: str) -> str:
    return f"""
WITH waiting AS (
    SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY j.user_id ORDER BY j.created_at, j.id) AS k,
           MIN(j.created_at) OVER (PARTITION BY j.user_id) AS head_at
    FROM jobs j WHERE j.status IN ({sql_states(*WAITING)})
), members AS (
    SELECT w.user_id, ROW_NUMBER() OVER (ORDER BY COALESCE(MAX(t.turn), -1), MIN(w.head_at), w.user_id) AS rank
    FROM waiting w LEFT JOIN fair_turns t ON t.user_id = w.user_id
    GROUP BY w.user_id
)
SELECT w.*, ROW_NUMBER() OVER (ORDER BY w.k, m.rank) AS place
FROM waiting w JOIN members m ON m.user_id = w.user_id
ORDER BY place
"""


POSITIONS = _places("j.*")
# The queued jobs' places alone, as ids: a long line is read again and again, its jobs once.
PLACES = (
    f"SELECT p.id, p.place FROM ({_places('j.id, j.status, j.user_id')}) p "
    f"WHERE p.status = '{S.QUEUED}' ORDER BY p.place"
)
JOBS_IN = "SELECT * FROM jobs WHERE id IN ({ids})"
IDS_IN = "SELECT id FROM jobs WHERE id IN ({ids})"
JOBS_OF_GROUP = "SELECT * FROM jobs WHERE group_id = :group_id ORDER BY variant, id"
# A group's card lock: taken when free or when its holder's time is up (one statement: two takers cannot both win).
LOCK_CARD = (
    "INSERT INTO card_locks (group_id, holder, until) VALUES (:group_id, :holder, :until) "
    "ON CONFLICT (group_id) DO UPDATE SET holder = excluded.holder, until = excluded.until "
    "WHERE card_locks.until < :now RETURNING holder"
)
UNLOCK_CARD = "DELETE FROM card_locks WHERE group_id = :group_id AND holder = :holder"
NOTICES_OF_GROUP = "SELECT n.* FROM notices n JOIN jobs j ON j.id = n.job_id WHERE j.group_id = :group_id"

HOLDERS = f"SELECT DISTINCT claimed_by FROM jobs WHERE status IN ({sql_states(*HELD)}) AND claimed_by IS NOT NULL"
# Jobs no live process holds: their holder is gone, their lease ran out, or nobody ever held them
# (a job from before leases); and interrupted jobs not yet back in line.
ABANDONED = f"""
SELECT * FROM jobs WHERE
    (status IN ({sql_states(*HELD)})
     AND (claimed_by IS NULL OR lease_until IS NULL OR lease_until < :now OR claimed_by IN ({{gone}})))
    OR status = '{S.INTERRUPTED}'
ORDER BY created_at, id
"""
# The jobs that claims of ``holder`` took (their ``started_at`` stamps), still its own, running under a live lease:
# a claim whose answer was lost with its connection may have been written after all.
CLAIMED_AT = (
    f"SELECT * FROM jobs WHERE status = '{S.RUNNING}' AND claimed_by = :holder AND lease_until >= :now "
    "AND started_at IN ({stamps}) ORDER BY created_at, id"
)
RENEW = (
    f"UPDATE jobs SET lease_until = :until WHERE id = :id AND claimed_by = :holder AND status IN ({sql_states(*HELD)}) "
    "RETURNING run"
)

TOTALS = f"""
SELECT
    (SELECT COUNT(*) FROM jobs WHERE status = '{S.QUEUED}') AS queued,
    (SELECT COUNT(*) FROM jobs WHERE status = '{S.RUNNING}') AS running,
    (SELECT {NET_AMOUNT} FROM money m JOIN jobs j ON j.id = m.job_id WHERE j.guild_key = 0 AND m.day = :day)
        AS operator_spend,
    (SELECT {NET_AMOUNT} FROM money m JOIN jobs j ON j.id = m.job_id WHERE j.guild_key = 1 AND m.day = :day)
        AS server_spend,
    (SELECT MIN(COALESCE(queued_at, created_at)) FROM jobs WHERE status = '{S.QUEUED}') AS oldest_queued_at,
    (SELECT COUNT(*) FROM notices WHERE done_at IS NULL) AS notices_pending,
    (SELECT MIN(created_at) FROM notices WHERE done_at IS NULL) AS oldest_notice_at
"""
COUNT_STATE = "SELECT COUNT(*) AS n FROM jobs WHERE status = :state"
UNFINISHED_OF = f"SELECT * FROM jobs WHERE user_id = :user_id AND {UNFINISHED} ORDER BY created_at, id"
RECENT_RUNS = (
    "SELECT model, input_count, size, finished_at - started_at AS seconds, finished_at FROM jobs "
    f"WHERE status = '{S.SUCCEEDED}' AND started_at IS NOT NULL AND finished_at >= :since ORDER BY finished_at"
)

# Inputs: a job's images while it is unfinished; a succeeded job's kept a while for Reroll. The set's
# own row (``input_sets``) holds their size and, once kept, when the job ended: what retention reads.
DELETE_INPUTS = "DELETE FROM job_inputs WHERE job_id = :job_id"
DELETE_INPUT_SET = "DELETE FROM input_sets WHERE job_id = :job_id"
INSERT_INPUT = (
    "INSERT INTO job_inputs (job_id, number, mime, width, height, data) "
    "VALUES (:job_id, :number, :mime, :width, :height, :data)"
)
INSERT_INPUT_SET = "INSERT INTO input_sets (job_id, bytes, ended_at) VALUES (:job_id, :bytes, NULL)"
QUEUED_INPUT_BYTES = "SELECT COALESCE(SUM(bytes), 0) AS n FROM input_sets WHERE ended_at IS NULL"
LOAD_INPUTS = "SELECT job_id, mime, width, height, data FROM job_inputs WHERE job_id IN ({ids}) ORDER BY job_id, number"
INPUTS_EXIST = "SELECT COUNT(*) AS n FROM input_sets WHERE job_id = :job_id"
INPUTS_SIZE = "SELECT bytes AS n FROM input_sets WHERE job_id = :job_id"
INPUTS_KEPT = "SELECT COUNT(*) AS n FROM input_sets WHERE job_id = :job_id AND (ended_at IS NULL OR ended_at > :since)"
MARK_KEPT = "UPDATE input_sets SET ended_at = :ended_at WHERE job_id = :job_id"
EXPIRED_KEPT = "SELECT job_id FROM input_sets WHERE ended_at IS NOT NULL AND ended_at <= :before"
KEPT_BY_AGE = (
    "SELECT job_id, bytes AS size, ended_at AS ended FROM input_sets "
    "WHERE ended_at IS NOT NULL ORDER BY ended_at, job_id"
)
ORPHAN_INPUT_SETS = (
    "SELECT s.job_id FROM input_sets s JOIN jobs j ON j.id = s.job_id "
    f"WHERE s.ended_at IS NULL AND j.status IN ({sql_states(*ENDED)}) AND COALESCE(j.finished_at, 0) < :before"
)

# The outbox: a final outcome owed to a member, recorded with the move that ended the job.
INSERT_NOTICE = (
    "INSERT INTO notices (job_id, outcome, payload, created_at, due_at, claimed_by, lease_until, attempts, done_at, "
    "how) VALUES (:job_id, :outcome, :payload, :created_at, :due_at, :claimed_by, :lease_until, 0, :done_at, :how) "
    "ON CONFLICT (job_id) DO NOTHING"
)
DUE_NOTICES = (
    "SELECT job_id FROM notices WHERE done_at IS NULL AND due_at <= :now "
    "AND (claimed_by IS NULL OR lease_until IS NULL OR lease_until < :now OR claimed_by IN ({gone})) "
    "ORDER BY due_at, job_id LIMIT :limit"
)
CLAIM_NOTICE = (
    "UPDATE notices SET claimed_by = :holder, lease_until = :until, attempts = attempts + 1 "
    "WHERE job_id = :job_id AND done_at IS NULL RETURNING *"
)
TAKE_OWN_NOTICE = (
    "UPDATE notices SET lease_until = :until, attempts = attempts + 1 "
    "WHERE job_id = :job_id AND claimed_by = :holder AND done_at IS NULL RETURNING *"
)
NOTICE_DONE = (
    "UPDATE notices SET done_at = :at, how = :how, claimed_by = NULL, lease_until = NULL "
    "WHERE job_id = :job_id AND done_at IS NULL AND (claimed_by = :holder OR claimed_by IS NULL)"
)
NOTICE_LATER = (
    "UPDATE notices SET due_at = :due_at, claimed_by = NULL, lease_until = NULL "
    "WHERE job_id = :job_id AND claimed_by = :holder AND done_at IS NULL"
)
NOTICE_HOLDERS = "SELECT DISTINCT claimed_by FROM notices WHERE done_at IS NULL AND claimed_by IS NOT NULL"
NEXT_USE = "how = 'next_use' AND shown_at IS NULL"
NEXT_USE_USERS = f"SELECT DISTINCT j.user_id FROM notices n JOIN jobs j ON j.id = n.job_id WHERE n.{NEXT_USE}"
NEXT_USE_NOTICES = (
    f"SELECT n.* FROM notices n JOIN jobs j ON j.id = n.job_id WHERE j.user_id = :user_id AND n.{NEXT_USE} "
    "ORDER BY j.created_at, j.id"
)
MARK_SHOWN = "UPDATE notices SET shown_at = :at WHERE job_id = :job_id AND shown_at IS NULL"

# Servers' settings, blocks, keys and presets.
ALL_SETTINGS = "SELECT guild_id, settings FROM guild_settings"
GUILD_SETTINGS = "SELECT settings FROM guild_settings WHERE guild_id = :guild_id"
SAVE_SETTINGS = (
    "INSERT INTO guild_settings (guild_id, settings, updated_at, updated_by) "
    "VALUES (:guild_id, :settings, :updated_at, :updated_by) "
    "ON CONFLICT (guild_id) DO UPDATE SET settings = excluded.settings, "
    "updated_at = excluded.updated_at, updated_by = excluded.updated_by"
)
SAVE_BLOCK = (
    "INSERT INTO blocked_members (guild_id, user_id, reason, blocked_by, blocked_at) "
    "VALUES (:guild_id, :user_id, :reason, :blocked_by, :blocked_at) "
    "ON CONFLICT (guild_id, user_id) DO UPDATE SET reason = excluded.reason, "
    "blocked_by = excluded.blocked_by, blocked_at = excluded.blocked_at"
)
DELETE_BLOCK = "DELETE FROM blocked_members WHERE guild_id = :guild_id AND user_id = :user_id"
ALL_BLOCKS = "SELECT guild_id, user_id, reason, blocked_by, blocked_at FROM blocked_members"
SAVE_KEY = (
    "INSERT INTO guild_keys (guild_id, encrypted, set_by, set_at) VALUES (:guild_id, :encrypted, :set_by, :set_at) "
    "ON CONFLICT (guild_id) DO UPDATE SET encrypted = excluded.encrypted, set_by = excluded.set_by, "
    "set_at = excluded.set_at"
)
DELETE_KEY = "DELETE FROM guild_keys WHERE guild_id = :guild_id"
ALL_KEYS = "SELECT guild_id, encrypted, set_by, set_at FROM guild_keys"
ALL_PRESETS = "SELECT guild_id, name, text, created_by, created_at FROM style_presets ORDER BY guild_id, name"
SAVE_PRESET = (
    "INSERT INTO style_presets (guild_id, name, text, created_by, created_at) "
    "VALUES (:guild_id, :name, :text, :created_by, :created_at) "
    "ON CONFLICT (guild_id, name) DO UPDATE SET text = excluded.text, "
    "created_by = excluded.created_by, created_at = excluded.created_at"
)
DELETE_PRESET = "DELETE FROM style_presets WHERE guild_id = :guild_id AND name = :name"

# Members' history and results.
HISTORY = (
    f"SELECT jobs.*, result_deletions.deleted_at, COALESCE(settled.amount, 0) AS settled FROM jobs "
    "LEFT JOIN result_deletions ON result_deletions.job_id = jobs.id "
    f"LEFT JOIN money settled ON settled.job_id = jobs.id AND settled.entry = '{SETTLE}' "
    "WHERE jobs.user_id = :user_id AND {guild} ORDER BY jobs.created_at DESC, jobs.id DESC "
    "LIMIT :limit OFFSET :offset"
)
RECORD_DELETED = (
    "INSERT INTO result_deletions (job_id, deleted_by, deleted_at) VALUES (:job_id, :by, :at) "
    "ON CONFLICT (job_id) DO NOTHING"
)
SET_DESTINATION = f"UPDATE jobs SET delivery = :delivery WHERE id = :id AND {UNFINISHED}"
RECORD_ATTEMPTS_RUN = "SELECT run FROM jobs WHERE id = :id"


def history_sql(guild_id: int | None) -> str:
    """``HISTORY`` for one server's jobs, or for direct messages when ``guild_id`` is ``None``."""
    return HISTORY.format(guild="jobs.guild_id IS NULL" if guild_id is None else "jobs.guild_id = :guild_id")


# The SQL type of each column that a move of several jobs sets to each job's own value: a ``CASE`` by id
# needs its parameters typed (PostgreSQL would take them for text). Both databases read these names.
EACH_TYPES = {"api_seconds": "DOUBLE PRECISION", "attempts": "INTEGER"}


def move_sql(
    columns: Sequence[str],
    *,
    fenced: bool,
    new_run: bool,
    ids: str | None = None,
    each: int = 0,
    gone: str | None = None,
) -> str:
    """The one statement that changes a job's status: only if it is still in ``:current`` (and, ``fenced``,
    still held by ``:fence_holder`` in run ``:fence_run``; with ``gone``, a take-over's ``IN`` list of the
    holders it found gone, only if the job is still abandoned: its lease lapsed by ``:fence_now``, or its holder
    among them); ``new_run`` starts a new run (a claim). The job is
    ``:id``, or (``ids``, an ``IN`` list's placeholders) each of several jobs moved alike (a claim's), or
    (``each``) that many jobs ``:id0``… with values and runs of their own (``:api_seconds0``…,
    ``:fence_run0``…; the columns from ``EACH_TYPES``): the calls of a group that ended together."""

    def own(name: str, sql_type: str) -> str:
        whens = " ".join(f"WHEN :id{i} THEN CAST(:{name}{i} AS {sql_type})" for i in range(each))
        return f"CASE id {whens} END"

    if each:
        ids = ", ".join(f":id{i}" for i in range(each))
        sets = ["status = :target", *(f"{c} = {own(c, EACH_TYPES[c])}" for c in columns)]
        fence_run = own("fence_run", "INTEGER")
    else:
        sets = ["status = :target", *(f"{c} = :{c}" for c in columns)]
        fence_run = ":fence_run"
    if new_run:
        sets.append("run = run + 1")
    # With several ids SQLite would rather search the status index (every waiting job) than the ids' keys:
    # the cast, a no-op, keeps the status out of its choice.
    where = f"id IN ({ids}) AND CAST(status AS TEXT) = :current" if ids else "id = :id AND status = :current"
    if fenced:
        where += f" AND claimed_by IS NOT DISTINCT FROM :fence_holder AND run = {fence_run}"
        if gone is not None:
            where += f" AND (lease_until IS NULL OR lease_until < :fence_now OR claimed_by IN ({gone}))"
    return f"UPDATE jobs SET {', '.join(sets)} WHERE {where} RETURNING *"


def in_days(count: int, column: str) -> str:
    """``column IN (:d0, :d1…)`` for a list of days."""
    return f"{column} IN ({', '.join(f':d{i}' for i in range(count))})"


def daily_sql(count: int) -> tuple[str, str, str]:
    """A server's job counts, net charges and durations per day, for ``count`` days (``:d0``…)."""
    jobs_days = in_days(count, "charge_day")
    return (
        f"SELECT charge_day, status, COUNT(*) AS n FROM jobs WHERE guild_id = :guild_id AND {jobs_days} "
        "GROUP BY charge_day, status",
        f"SELECT m.day, {NET_AMOUNT} AS total FROM money m WHERE m.guild_id = :guild_id AND "
        f"{in_days(count, 'm.day')} GROUP BY m.day",
        f"SELECT charge_day, finished_at - created_at AS seconds FROM jobs WHERE guild_id = :guild_id "
        f"AND {jobs_days} AND status = '{S.SUCCEEDED}'",
    )


def stats_sql(week_days: int) -> dict[str, str]:
    """The SQL behind ``/atelier stats``, one query per figure (``:guild_id``, ``:today``, ``:d0``…)."""
    week = f"{in_days(week_days, 'charge_day')} AND guild_id = :guild_id"
    jobs = f"SELECT COUNT(*) AS n FROM jobs WHERE {week}"
    operator = f"SELECT {NET_AMOUNT} AS n FROM money m JOIN jobs j ON j.id = m.job_id WHERE j.guild_key = 0 AND "
    return {
        "jobs_today": "SELECT COUNT(*) AS n FROM jobs WHERE guild_id = :guild_id AND charge_day = :today",
        "jobs_week": jobs,
        "succeeded_week": f"{jobs} AND status = '{S.SUCCEEDED}'",
        "failed_week": f"{jobs} AND status = '{S.FAILED}'",
        "cancelled_week": f"{jobs} AND status = '{S.CANCELLED}'",
        "durations_week": f"SELECT finished_at - created_at AS n FROM jobs WHERE {week} AND status = '{S.SUCCEEDED}'",
        # Spend on the operator's key (all servers); a server's own key is its own business.
        "spend_today": f"{operator} m.day = :today",
        "spend_week": f"{operator} {in_days(week_days, 'm.day')}",
        "own_key_spend_week": f"SELECT {NET_AMOUNT} AS n FROM money m JOIN jobs j ON j.id = m.job_id WHERE "
        f"j.guild_key = 1 AND m.guild_id = :guild_id AND {in_days(week_days, 'm.day')}",
        "models_week": f"SELECT COALESCE(model, '') AS m, COUNT(*) AS n FROM jobs WHERE {week} "
        f"AND status = '{S.SUCCEEDED}' GROUP BY COALESCE(model, '') ORDER BY COUNT(*) DESC, COALESCE(model, '')",
        "busiest": f"SELECT user_id, COUNT(*) AS n FROM jobs WHERE {week} AND status <> '{S.CANCELLED}' "
        "GROUP BY user_id ORDER BY COUNT(*) DESC, user_id LIMIT 5",
        "billed_without_result_week": "SELECT COUNT(*) AS n FROM api_attempts a JOIN jobs j ON j.id = a.job_id "
        f"WHERE {in_days(week_days, 'j.charge_day')} AND j.guild_id = :guild_id AND a.may_be_billed = 1 "
        f"AND (a.outcome <> '{AttemptOutcome.SUCCEEDED}' OR j.status <> '{S.SUCCEEDED}')",
    }
