"""Dead and stalled holders, and the outbox, end to end: what a crash or a stall leaves is taken over by the same
rules on both databases, a run that lost its job never touches it again, and a member is always told.

- A crash (SIGKILL) mid-call: the restarted bot resumes the running job within seconds, on both databases
  (SQLite: the lock file proves the old process gone; PostgreSQL: its session and its lock ended).
- A crash right after a job ended, while its final notice was on its way to Discord: the restarted bot
  tells the member (the notice was recorded with the move that ended the job).
- A stalled worker (SIGSTOP) past its lease, with a gateway and another worker on PostgreSQL: the other
  takes the job over and delivers it; the stalled one, resumed, posts nothing, edits nothing, refunds
  nothing, and its member never hears "will resume".
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from bot.store.postgres import holder_lock, lock_halves
from tests.fake_discord import FakeDiscord, InteractionHandle
from tests.fake_image_api import EditCall, FakeImageAPI, Reply, make_png
from tests.harness import (
    BotProcess,
    bot_environment,
    execute,
    is_result_edit,
    rows,
    send_edit,
    wait_final_text,
    wait_result,
    wait_rows,
)
from tests.pg_proxy import MARK, commit_answer_loss
from tests.postgres import fresh_database

SAFETY = {"error": {"message": "Your request was rejected by the safety system.", "type": "invalid_request"}}


@pytest.fixture(params=["sqlite", "postgres"])
async def env(request: pytest.FixtureRequest, discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
              ) -> AsyncIterator[dict[str, str]]:  # fmt: skip
    settings = {"IMAGE_API_TIMEOUT": "30", "USER_MAX_ACTIVE": "5"}
    if request.param == "sqlite":
        yield bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", **settings)
        return
    async with fresh_database() as url:
        yield bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=url, **settings)


def contents(handle: InteractionHandle) -> list[str]:
    return [str(r.json.get("content", "")) for r in handle.webhook_requests() if isinstance(r.json, dict)]


async def test_a_crashed_bot_resumes_its_running_job_within_five_seconds_of_the_restart(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The lease is a minute, yet nobody waits for it: the dead process is known to be gone."""
    env.update(MAX_CONCURRENT_JOBS="1", JOB_LEASE_SECONDS="60")
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    image_api.then(Reply(kind="hang"))
    first = await send_edit(discord_fake, "first", [make_png()])
    await image_api.wait_for_started(1)
    others = [await send_edit(discord_fake, name, [make_png()]) for name in ("second", "third")]
    for handle in others:
        await wait_final_text(handle, "Queued")
    await bot.stop(signal.SIGKILL)
    restarted = time.monotonic()
    await bot.start()
    await image_api.wait_for_started(2, timeout=5 + (time.monotonic() - restarted))
    resumed_after = time.monotonic() - restarted
    assert [c.field("prompt") for c in image_api.calls] == ["first", "first"]
    assert resumed_after < 5, f"the running job resumed {resumed_after:.1f} s after the restart"
    for handle in (first, *others):
        await wait_result(handle, timeout=20)
    assert [c.field("prompt") for c in image_api.calls] == ["first", "first", "second", "third"]
    ended = await wait_rows(
        env,
        "SELECT prompt, status, restarts FROM jobs ORDER BY created_at",
        lambda r: all(s[1] != "delivering" for s in r),
    )
    assert ended == [("first", "succeeded", 1), ("second", "succeeded", 0), ("third", "succeeded", 0)]
    assert len(await rows(env, "SELECT job_id FROM money WHERE entry = 'refund'")) == 0
    await bot.stop()


async def test_a_member_is_told_after_a_crash_that_came_right_after_their_job_ended(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The failure was recorded, with the notice owed, in one transaction; the process died while telling.
    After the restart the member is told, and the job is refunded once."""
    bot = BotProcess(env, tmp_path, discord_fake)
    bot.tracebacks_expected = True
    await bot.start()
    held = discord_fake.hold_next("PATCH", r"/webhooks/\d+/[^/]+/messages/", content="safety system")
    image_api.then(Reply(kind="error", status=400, body=SAFETY))
    handle = await send_edit(discord_fake, "refused", [make_png()])
    async with asyncio.timeout(15):
        await held.arrived.wait()  # the job ended; its failure is on its way to Discord
    assert await rows(env, "SELECT status FROM jobs") == [("failed",)]
    assert await rows(env, "SELECT done_at IS NULL FROM notices") == [(True,)]
    await bot.stop(signal.SIGKILL)
    held.release.set()
    await bot.start()
    told = await wait_final_text(handle, "safety system", timeout=20)
    assert told.method == "PATCH" and told.ok
    notices = await wait_rows(env, "SELECT outcome, how, done_at IS NOT NULL FROM notices", lambda r: r[0][1])
    assert notices == [("failed", "edited", True)]
    assert await rows(env, "SELECT entry FROM money ORDER BY entry") == [("charge",), ("refund",)]
    await bot.stop()


@pytest.fixture
async def database() -> AsyncIterator[str]:
    async with fresh_database() as url:
        yield url


async def test_a_stalled_worker_loses_its_job_and_never_touches_it_again(
    database: str, tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """A gateway and two workers, one API call at a time; the worker making the call is stopped (SIGSTOP) half a
    second in, for longer than its lease, while a second job waits for the slot; the other worker takes the job
    over and runs both, one at a time; then the first is resumed. Only the stalled call, which nobody can
    recall, is ever in flight beside another: the cap counts the calls of live leases."""
    env = bot_environment(
        discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=database, IMAGE_API_TIMEOUT="30",
        JOB_LEASE_SECONDS="5", MAX_CONCURRENT_JOBS="1", STATUS_UPDATE_SECONDS="1",
    )  # fmt: skip
    gateway = BotProcess(env, tmp_path, discord_fake, role="gateway", name="gateway")
    workers = [BotProcess(env, tmp_path, discord_fake, role="worker", name=f"worker{n}") for n in range(2)]
    await gateway.start()
    for worker in workers:
        await worker.start()
    image_api.latency = 8.0
    handle = await send_edit(discord_fake, "slow", [make_png()])
    await image_api.wait_for_started(1, timeout=15)
    ((holder,),) = await rows({"DATABASE_URL": database}, "SELECT claimed_by FROM jobs")
    (stalled,) = [w for w in workers if w.proc is not None and w.proc.pid == int(str(holder).split(":")[1])]
    image_api.latency = 3.0  # the calls after the stalled one
    waiting = await send_edit(discord_fake, "waits for the slot", [make_png()], user_id=FakeDiscord.USER_ID + 1)
    await wait_rows({"DATABASE_URL": database}, "SELECT status FROM jobs WHERE prompt = 'waits for the slot'",
                    lambda r: r == [("queued",)])  # fmt: skip
    assert stalled.proc is not None
    stalled.proc.send_signal(signal.SIGSTOP)
    try:
        await image_api.wait_for_started(2, timeout=20)  # the other worker took the slot over
        await asyncio.sleep(11 - 6)  # the stall lasts 11 s in all
    finally:
        stalled.proc.send_signal(signal.SIGCONT)
    result = await wait_result(handle, timeout=30)
    await wait_result(waiting, timeout=30)
    # The resumed worker's run ends (its answer discarded, its attempt kept): wait for its log line.
    async with asyncio.timeout(20):
        while "abandoned: another process holds it" not in stalled.log():  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    after = [r for r in handle.webhook_requests() if r.index > result.index]
    assert after == [], "nothing edits the message after its result"
    assert sum(1 for r in handle.webhook_requests() if is_result_edit(r)) == 1
    assert not any("will resume" in text for text in contents(handle))
    # Three calls: the stalled one, the waiting job's and the re-run, which never overlap each other.
    assert [call.field("prompt") for call in image_api.calls].count("slow") == 2 and len(image_api.calls) == 3
    # (The stalled call overlaps the next one unless a loaded machine took the job over after its 8 s.)
    assert most_at_once(image_api.calls[1:]) == 1 and most_at_once(image_api.calls) <= 2
    db = {"DATABASE_URL": database}
    ended = await wait_rows(
        db, "SELECT prompt, status, restarts, run FROM jobs ORDER BY prompt", lambda r: "delivering" not in str(r)
    )
    assert ended == [("slow", "succeeded", 1, 2), ("waits for the slot", "succeeded", 0, 1)]
    assert await rows(db, "SELECT entry FROM money") == [("charge",), ("charge",)]
    attempts = await rows(
        db, "SELECT a.run, a.outcome, a.may_be_billed FROM api_attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.prompt = 'slow' ORDER BY a.run, a.attempt",
    )  # fmt: skip
    assert attempts[-1] == (2, "succeeded", 1)
    assert all(run == 1 and billed == 1 for run, _, billed in attempts[:-1]) and len(attempts) >= 2
    assert await rows(db, "SELECT outcome, how FROM notices") == [("succeeded", "posted")] * 2
    for process in (*workers, gateway):
        await process.stop()


async def test_a_worker_whose_own_session_dropped_keeps_its_running_job(
    database: str, tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """PostgreSQL ends the session connection of the worker making a call (as a proxy's idle cut or an
    administrator's ``pg_terminate_backend`` would), and of it alone: the worker is alive, its call in flight.
    It reconnects and holds its lock again; the gateway and the other worker, each looking every two seconds,
    never call it gone, so the call is made once, and paid once. (How long a lock must stay free to be believed
    is pinned down in ``test_store_backends``; a look here may or may not fall in the moment it is free.)"""
    env = bot_environment(
        discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=database, IMAGE_API_TIMEOUT="30",
        JOB_LEASE_SECONDS="60",
    )  # fmt: skip
    gateway = BotProcess(env, tmp_path, discord_fake, role="gateway", name="gateway")
    workers = [BotProcess(env, tmp_path, discord_fake, role="worker", name=f"worker{n}") for n in range(2)]
    for process in (gateway, *workers):
        await process.start()
    image_api.latency = 7.0
    handle = await send_edit(discord_fake, "kept", [make_png()])
    await image_api.wait_for_started(1, timeout=15)
    db = {"DATABASE_URL": database}
    ((holder,),) = await rows(db, "SELECT claimed_by FROM jobs")
    (holding,) = [w for w in workers if w.proc is not None and w.proc.pid == int(str(holder).split(":")[1])]
    high, low = lock_halves(holder_lock(str(holder)))
    conn = await asyncpg.connect(database)
    try:
        lock = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2 AND objsubid = 1"
        ((session,),) = [tuple(r.values()) for r in await conn.fetch(lock, high, low)]
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", session)
        async with asyncio.timeout(10):
            while "lost the PostgreSQL session connection" not in holding.log():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            while await conn.fetchval(lock, high, low) in (None, session):  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # held again, on a new session
    finally:
        await conn.close()
    await wait_result(handle, timeout=30)
    assert [call.field("prompt") for call in image_api.calls] == ["kept"]
    ended = await wait_rows(db, "SELECT status, restarts, run FROM jobs", lambda r: r[0][0] != "delivering")
    assert ended == [("succeeded", 0, 1)]
    assert await rows(db, "SELECT entry FROM money") == [("charge",)]
    assert await rows(db, "SELECT outcome, how FROM notices") == [("succeeded", "posted")]
    for process in (*workers, gateway):
        await process.stop()


def most_at_once(calls: Sequence[EditCall]) -> int:
    """The most of ``calls`` the fake API had in flight at once."""
    ends = [(c.ended if c.ended is not None else math.inf, -1) for c in calls]
    edges = sorted([(c.started, 1) for c in calls] + ends)
    most = now = 0
    for _, step in edges:  # at a tie an end (-1) sorts first: a call that ends as another starts does not overlap
        now += step
        most = max(most, now)
    return most


def fault(env: dict[str, str], *states: str) -> list[str]:
    """A fault the test controls: while ``test_fault`` has a row, the database refuses every move to ``states``."""
    listed = ", ".join(f"'{state}'" for state in states)
    made = ["CREATE TABLE test_fault (x INTEGER)", "INSERT INTO test_fault VALUES (1)"]
    if "DATABASE_URL" not in env:
        return [
            *made,
            "CREATE TRIGGER test_fault_moves BEFORE UPDATE OF status ON jobs "
            f"WHEN NEW.status IN ({listed}) AND EXISTS (SELECT 1 FROM test_fault) "
            "BEGIN SELECT RAISE(ABORT, 'injected: the database refused the write'); END",
        ]
    return [
        *made,
        "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.status IN ({listed}) AND EXISTS (SELECT 1 FROM test_fault) THEN "
        "RAISE EXCEPTION 'injected: the database refused the write'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER test_fault_moves BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION test_fault()",
    ]


def lose_the_answer_of_the_move_to(status: str) -> list[str]:
    """PostgreSQL: the first move of a job to ``status`` marks its transaction, whose commit's answer the proxy
    (``commit_answer_loss``) then loses: the database has written it, and the bot cannot know."""
    return [
        "CREATE TABLE test_fault (x INTEGER)",
        "INSERT INTO test_fault VALUES (1)",
        "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.status = '{status}' AND EXISTS (SELECT 1 FROM test_fault) THEN DELETE FROM test_fault; "
        f"RAISE NOTICE '{MARK.replace(chr(39), chr(39) * 2)}'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER test_fault_moves AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION test_fault()",
    ]


async def wait_log(bot: BotProcess, handle: InteractionHandle, line: str) -> None:
    """Wait for ``line`` in the bot's log, with the member told of no failure meanwhile."""
    async with asyncio.timeout(20):
        while line not in bot.log():
            assert not any("❌" in text for text in contents(handle)), contents(handle)
            await asyncio.sleep(0.05)


async def edit_through_fault(
    bot: BotProcess, env: dict[str, str], image_api: FakeImageAPI, states: list[str], told: str, *, outputs: int
) -> None:
    """An edit sent while the database refuses every move to ``states``, until the bot's log says ``told``:
    then the database is back. The API has ``outputs`` answers (each a different image), and as many calls
    are made; the last is delivered, and the member is never told of a failure."""
    await execute(env, *fault(env, *states))
    images = [make_png(31, 17 + n) for n in range(outputs)]
    image_api.then(*(Reply(image=image) for image in images))
    handle = await send_edit(bot.fake, "through a fault", [make_png()])
    await wait_log(bot, handle, told)
    await execute(env, "DELETE FROM test_fault")  # the database is back
    result = await wait_result(handle, timeout=30)
    assert result.files[0].data == images[-1]
    assert len(image_api.calls) == outputs
    assert not any("❌" in text for text in contents(handle))


async def test_a_paid_answer_is_delivered_though_the_database_refused_to_record_it_at_first(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The API answered (and billed); the database refuses the move that records the answer (a dropped
    connection, a restarting server), then takes it again: the answer is recorded and delivered, once,
    and charged once. Before, the paid answer was dropped: the job failed, refunded, "something went wrong"."""
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        # One output, one call: the answer in hand was used.
        await edit_through_fault(bot, env, image_api, ["delivering"], "recording its answer failed", outputs=1)
        statuses = await wait_rows(env, "SELECT status FROM jobs", lambda r: r[0][0] != "delivering")
        assert statuses == [("succeeded",)]
        assert await rows(env, "SELECT entry FROM money") == [("charge",)]
        assert await rows(env, "SELECT outcome, may_be_billed FROM api_attempts") == [("succeeded", 1)]
        # The next edit goes through as usual.
        image_api.then(Reply(image=make_png(12, 12)))
        await wait_result(await send_edit(discord_fake, "next", [make_png()]), timeout=20)
    finally:
        await bot.stop()


async def test_a_job_whose_images_the_database_failed_to_read_at_first_runs_when_it_reads_them(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """A job waits in line; when its turn comes, the database fails to give its images (a dropped connection, a
    restarting server), then gives them: the job runs, once, and is charged once. Before, the error ended the
    run as a bug: the member's edit failed, refunded, "something went wrong", for a moment's outage."""
    env.update(MAX_CONCURRENT_JOBS="1")
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        released = asyncio.Event()  # the first call holds the slot until the fault is in place
        image_api.then(Reply(until=released), Reply())
        first = await send_edit(discord_fake, "first", [make_png()])
        await image_api.wait_for_started(1, timeout=15)
        waiting = await send_edit(discord_fake, "waits", [make_png(20, 30)])
        await wait_final_text(waiting, "Queued")
        # Reading a job's images fails until the column is back (nothing else the test does uses it).
        await execute(env, "ALTER TABLE job_inputs RENAME COLUMN width TO width_away")
        released.set()
        await wait_log(bot, waiting, "reading its images failed")
        await execute(env, "ALTER TABLE job_inputs RENAME COLUMN width_away TO width")
        for handle in (first, waiting):
            await wait_result(handle, timeout=30)
        assert [call.field("prompt") for call in image_api.calls] == ["first", "waits"]
        assert len(image_api.calls[1].images) == 1
        ended = await wait_rows(
            env, "SELECT prompt, status, restarts FROM jobs ORDER BY created_at", lambda r: "delivering" not in str(r)
        )
        assert ended == [("first", "succeeded", 0), ("waits", "succeeded", 0)]
        assert await rows(env, "SELECT entry FROM money") == [("charge",), ("charge",)]
        assert not any("❌" in text for text in contents(waiting))
    finally:
        await bot.stop()


async def test_a_posted_result_whose_end_the_database_refused_at_first_succeeds_and_is_charged_once(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The result is posted; the database refuses the move that records the job's success, then takes it again:
    the job succeeds, charged once, with its result and no failure. Before, the error ended the run as a bug:
    the job failed under its posted result, refunded, "something went wrong" (or, with the database still
    down, it was let go and, after its lease, run and posted a second time)."""
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        await edit_through_fault(bot, env, image_api, ["succeeded"], "recording its move to succeeded failed",
                                 outputs=1)  # fmt: skip
        statuses = await wait_rows(env, "SELECT status, restarts FROM jobs", lambda r: r[0][0] != "delivering")
        assert statuses == [("succeeded", 0)]
        assert await rows(env, "SELECT entry FROM money") == [("charge",)]
        assert await rows(env, "SELECT outcome, may_be_billed FROM api_attempts") == [("succeeded", 1)]
        assert "unexpected error" not in bot.log()
        # The next edit goes through as usual.
        image_api.then(Reply(image=make_png(12, 12)))
        await wait_result(await send_edit(discord_fake, "next", [make_png()]), timeout=20)
    finally:
        await bot.stop()


async def test_a_job_whose_end_the_database_refuses_too_is_let_go_and_resumed_by_the_take_over(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The database refuses the answer's record for longer than the tries last, and the job's end (failed) as
    well: the run lets the job go instead of holding it (and renewing its lease) for ever. Once the database
    is back, the lease lapses and the take-over puts the job back in line once, as after a crash: it runs
    again and is delivered, charged once. Before, it stayed "editing" until the bot restarted."""
    env.update(JOB_LEASE_SECONDS="3", STATUS_UPDATE_SECONDS="1")
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        # Two outputs, two calls: the answer that could not be recorded is lost, the second is delivered.
        told = "letting it go for the take-over"
        await edit_through_fault(bot, env, image_api, ["delivering", "failed"], told, outputs=2)
        statuses = await wait_rows(env, "SELECT status, restarts FROM jobs", lambda r: r[0][0] != "delivering")
        assert statuses == [("succeeded", 1)]
        assert await rows(env, "SELECT entry FROM money") == [("charge",)]
    finally:
        await bot.stop()


async def test_a_paid_answer_is_posted_though_the_database_failed_when_asked_whether_its_run_still_held_it(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """Before posting a result, the run asks the database whether it still holds the job (a renewal of its
    lease). The database fails that, then answers again: the paid answer is posted once, the job succeeds,
    charged once. Before, the error ended the run as a bug: the paid answer discarded, the job failed and
    refunded, "something went wrong"."""
    made = ["CREATE TABLE test_fault (x INTEGER)", "INSERT INTO test_fault VALUES (1)"]
    if "DATABASE_URL" not in env:
        made.append(
            "CREATE TRIGGER test_fault_renew BEFORE UPDATE OF lease_until ON jobs WHEN OLD.status = 'delivering' "
            "AND NEW.status = 'delivering' AND EXISTS (SELECT 1 FROM test_fault) "
            "BEGIN SELECT RAISE(ABORT, 'injected: the database refused the write'); END"
        )
    else:
        made += [
            "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF OLD.status = 'delivering' AND NEW.status = 'delivering' AND NEW.lease_until IS DISTINCT FROM "
            "OLD.lease_until AND EXISTS (SELECT 1 FROM test_fault) THEN "
            "RAISE EXCEPTION 'injected: the database refused the write'; END IF; RETURN NEW; END $$",
            "CREATE TRIGGER test_fault_renew BEFORE UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION test_fault()",
        ]
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        await execute(env, *made)
        image = make_png(31, 17)
        image_api.then(Reply(image=image))
        handle = await send_edit(discord_fake, "holds or not", [make_png()])
        await wait_log(bot, handle, "asking whether it still holds its job failed")
        await execute(env, "DELETE FROM test_fault")  # the database is back
        assert (await wait_result(handle, timeout=20)).files[0].data == image
        statuses = await wait_rows(env, "SELECT status, restarts FROM jobs", lambda r: r[0][0] != "delivering")
        assert statuses == [("succeeded", 0)]
        assert await rows(env, "SELECT entry FROM money") == [("charge",)]
        assert len(image_api.calls) == 1
        assert not any("❌" in text for text in contents(handle))
    finally:
        await bot.stop()


async def test_a_success_whose_inputs_could_not_be_kept_still_ends_as_a_success(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """The job succeeds; then keeping its inputs for Reroll (after the move, in the database) fails. The move and
    its telling stand: the member has the result, its status is closed, no failure, charged once. Before, the
    error came back as the move's own: the run tried the recorded move again, then ended as a bug."""
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        made = ["CREATE TABLE test_fault (x INTEGER)", "INSERT INTO test_fault VALUES (1)"]
        if "DATABASE_URL" not in env:
            made.append(
                "CREATE TRIGGER test_fault_keep BEFORE UPDATE ON input_sets WHEN EXISTS (SELECT 1 FROM test_fault) "
                "BEGIN SELECT RAISE(ABORT, 'injected: the database refused the write'); END"
            )
        else:
            made += [
                "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF EXISTS (SELECT 1 FROM test_fault) THEN RAISE EXCEPTION 'injected: the database refused the write'; "
                "END IF; RETURN NEW; END $$",
                "CREATE TRIGGER test_fault_keep BEFORE UPDATE ON input_sets FOR EACH ROW EXECUTE FUNCTION test_fault()",
            ]
        await execute(env, *made)
        image = make_png(31, 17)
        image_api.then(Reply(image=image))
        handle = await send_edit(discord_fake, "kept or not", [make_png()])
        assert (await wait_result(handle, timeout=20)).files[0].data == image
        statuses = await wait_rows(env, "SELECT status, restarts FROM jobs", lambda r: r[0][0] != "delivering")
        assert statuses == [("succeeded", 0)]
        async with asyncio.timeout(10):
            while "its inputs" not in bot.log():  # noqa: ASYNC110  # the bot's own log
                await asyncio.sleep(0.05)
        assert await rows(env, "SELECT entry FROM money") == [("charge",)]
        assert "recording its move to succeeded failed" not in bot.log()
        assert not any("❌" in text for text in contents(handle))
        await execute(env, "DELETE FROM test_fault")
        image_api.then(Reply(image=make_png(12, 12)))
        await wait_result(await send_edit(discord_fake, "next", [make_png()]), timeout=20)
    finally:
        await bot.stop()


async def test_an_edit_whose_failure_the_database_refuses_is_let_go_and_ended_by_the_take_over(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """An edit's image turns out unreadable while it is prepared, and the database refuses the job's end
    (failed): admission lets the job go instead of holding it, its lease renewed for ever and the job
    "preparing", charged. Once the database is back, the lease lapses and the take-over ends it (its images
    were never saved): failed and refunded. Before, it stayed "preparing" and charged until the bot restarted."""
    env.update(JOB_LEASE_SECONDS="3")
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        await execute(env, *fault(env, "failed"))
        handle = await send_edit(discord_fake, "unreadable", [b"this is not an image at all"])
        async with asyncio.timeout(20):
            while "letting it go for the take-over" not in bot.log():  # noqa: ASYNC110  # the bot's own log
                await asyncio.sleep(0.05)
        await execute(env, "DELETE FROM test_fault")  # the database is back
        ended = await wait_rows(env, "SELECT status FROM jobs", lambda r: r[0][0] not in ("accepted", "preparing"))
        assert ended == [("failed",)]
        assert sorted(await rows(env, "SELECT entry FROM money")) == [("charge",), ("refund",)]
        assert image_api.calls == []
        assert handle.webhook_requests() or handle.callback_requests()  # the member was answered
        # The next edit goes through as usual.
        image_api.then(Reply(image=make_png(12, 12)))
        await wait_result(await send_edit(discord_fake, "next", [make_png()]), timeout=20)
    finally:
        await bot.stop()


async def test_a_paid_answer_whose_record_was_written_though_its_commit_was_not_heard_is_delivered_once(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
) -> None:
    """PostgreSQL only (a SQLite commit cannot be lost on its way back: it is not sent anywhere). The move that
    records the answer is committed, but the connection drops before the bot hears so (a proxy loses the
    answer). Its next try is refused, since the job is delivering already: the bot finds it delivering under
    its own run and delivers the answer in hand. Before, it discarded that paid answer as a lost job's, and
    after the lease the take-over called the API a second time."""
    async with fresh_database() as url, commit_answer_loss(url) as proxy:
        env = bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=proxy.url(),
                              IMAGE_API_TIMEOUT="30", JOB_LEASE_SECONDS="3")  # fmt: skip
        bot = BotProcess(env, tmp_path, discord_fake)
        await bot.start()
        try:
            await execute(env, *lose_the_answer_of_the_move_to("delivering"))
            image = make_png(31, 17)
            image_api.then(Reply(image=image))
            handle = await send_edit(discord_fake, "commit lost", [make_png()])
            result = await wait_result(handle, timeout=20)
            assert proxy.lost == 1
            assert (result.files[0].data == image, len(image_api.calls)) == (True, 1)
            assert "was written after all" in bot.log()
            statuses = await wait_rows(env, "SELECT status, restarts FROM jobs", lambda r: r[0][0] != "delivering")
            assert statuses == [("succeeded", 0)]
            assert await rows(env, "SELECT entry FROM money") == [("charge",)]
            assert await rows(env, "SELECT outcome, may_be_billed FROM api_attempts") == [("succeeded", 1)]
            assert not any("❌" in text for text in contents(handle))
            # The next edit goes through as usual.
            image_api.then(Reply(image=make_png(12, 12)))
            await wait_result(await send_edit(discord_fake, "next", [make_png()]), timeout=20)
            assert len(image_api.calls) == 2
        finally:
            await bot.stop()


async def test_a_claim_whose_commit_was_not_heard_starts_its_job_at_once_and_the_dispatcher_goes_on(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
) -> None:
    """PostgreSQL only (see above). An idle bot's claim of a queued job is committed, but the connection drops
    before the bot hears so. The job is this process's, running, and nobody runs it: the bot finds it by the
    claim's own stamp when the database answers again and starts it then, with no restart counted and no
    call on record that was never made. Before, the dispatcher died with the error (no job was ever claimed
    again but by hand-overs), and the job waited out its lease, then was put back in line for good."""
    async with fresh_database() as url, commit_answer_loss(url) as proxy:
        env = bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=proxy.url(),
                              IMAGE_API_TIMEOUT="30")  # fmt: skip
        bot = BotProcess(env, tmp_path, discord_fake)
        await bot.start()
        try:
            await execute(env, *lose_the_answer_of_the_move_to("running"))
            image = make_png(31, 17)
            image_api.then(Reply(image=image))
            started = time.monotonic()
            handle = await send_edit(discord_fake, "claim lost", [make_png()])
            result = await wait_result(handle, timeout=20)
            # Well within the lease (a minute): the job was found, not taken over.
            assert time.monotonic() - started < 15
            assert proxy.lost == 1
            assert (result.files[0].data == image, len(image_api.calls)) == (True, 1)
            assert "was claimed after all" in bot.log()
            statuses = await wait_rows(env, "SELECT status, restarts FROM jobs", lambda r: r[0][0] != "delivering")
            assert statuses == [("succeeded", 0)]
            assert await rows(env, "SELECT entry FROM money") == [("charge",)]
            assert await rows(env, "SELECT outcome, may_be_billed FROM api_attempts") == [("succeeded", 1)]
            # The dispatcher lives on: the next edits are claimed as usual, not only by hand-overs.
            for n in range(2):
                image_api.then(Reply(image=make_png(12, 12)))
                await wait_result(await send_edit(discord_fake, f"next {n}", [make_png()]), timeout=20)
            assert len(image_api.calls) == 3
        finally:
            await bot.stop()


async def test_the_job_a_lost_hand_over_claimed_is_started_by_this_process_not_taken_over_later(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
) -> None:
    """PostgreSQL only (see above). One slot; A's answer is recorded and B claimed for the slot in one
    transaction, whose answer is lost. A is delivered (above), and B, claimed by that transaction, is found by
    the claim's stamp and started by this process. Before, B waited out its lease unrenewed, then the take-over
    put it back in line with a restart used and a call on record ("may be billed") that was never made."""
    async with fresh_database() as url, commit_answer_loss(url) as proxy:
        env = bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=proxy.url(),
                              IMAGE_API_TIMEOUT="30", JOB_LEASE_SECONDS="3", MAX_CONCURRENT_JOBS="1")  # fmt: skip
        bot = BotProcess(env, tmp_path, discord_fake)
        await bot.start()
        try:
            await execute(env, *lose_the_answer_of_the_move_to("delivering"))
            first, second = make_png(31, 17), make_png(17, 31)
            image_api.then(Reply(image=first, delay=3.0), Reply(image=second))
            a = await send_edit(discord_fake, "A", [make_png()], user_id=501)
            await wait_rows(env, "SELECT status FROM jobs", lambda r: r == [("running",)])
            b = await send_edit(discord_fake, "B", [make_png()], user_id=502)
            # B waits in line for A's slot, while A's call goes on.
            assert await wait_rows(env, "SELECT prompt, status FROM jobs ORDER BY prompt", lambda r: len(r) == 2 and
                                   r[1][1] == "queued") == [("A", "running"), ("B", "queued")]  # fmt: skip
            assert (await wait_result(a, timeout=20)).files[0].data == first
            assert (await wait_result(b, timeout=20)).files[0].data == second
            assert proxy.lost == 1
            ended = await wait_rows(
                env, "SELECT prompt, status, restarts, attempts FROM jobs ORDER BY prompt",
                lambda r: all(row[1] == "succeeded" for row in r),
            )  # fmt: skip
            assert ended == [("A", "succeeded", 0, 1), ("B", "succeeded", 0, 1)]
            assert len(image_api.calls) == 2
            assert await rows(env, "SELECT outcome, may_be_billed FROM api_attempts") == [("succeeded", 1)] * 2
            assert sorted(await rows(env, "SELECT entry FROM money")) == [("charge",)] * 2
            assert "was claimed after all" in bot.log()
        finally:
            await bot.stop()


async def test_a_posted_result_whose_success_was_written_though_its_commit_was_not_heard_ends_as_a_success(
    discord_fake: FakeDiscord, image_api: FakeImageAPI, tmp_path: Path
) -> None:
    """PostgreSQL only (see above). The move that records a posted result's success is committed, but its answer
    is lost. The next try is refused (the job succeeded already): the bot finds it succeeded under its own run
    and ends the run as a success (its status closed, the next edit as usual). Before, the error ended the run
    as a bug, which then tried to fail the job under its result."""
    async with fresh_database() as url, commit_answer_loss(url) as proxy:
        env = bot_environment(discord_fake.api_base, image_api.base, tmp_path / "data", DATABASE_URL=proxy.url(),
                              IMAGE_API_TIMEOUT="30")  # fmt: skip
        bot = BotProcess(env, tmp_path, discord_fake)
        await bot.start()
        try:
            await execute(env, *lose_the_answer_of_the_move_to("succeeded"))
            image = make_png(31, 17)
            image_api.then(Reply(image=image))
            handle = await send_edit(discord_fake, "success lost", [make_png()])
            assert (await wait_result(handle, timeout=20)).files[0].data == image
            async with asyncio.timeout(20):
                while "was written after all" not in bot.log():  # noqa: ASYNC110  # the bot's own log
                    await asyncio.sleep(0.05)
            assert proxy.lost == 1
            assert await rows(env, "SELECT status, restarts FROM jobs") == [("succeeded", 0)]
            assert await rows(env, "SELECT entry FROM money") == [("charge",)]
            assert "unexpected error" not in bot.log()
            assert not any("❌" in text for text in contents(handle))
            image_api.then(Reply(image=make_png(12, 12)))
            await wait_result(await send_edit(discord_fake, "next", [make_png()]), timeout=20)
            assert len(image_api.calls) == 2
        finally:
            await bot.stop()


async def test_a_told_outcome_whose_record_the_database_fails_at_first_is_recorded_and_told_once(
    env: dict[str, str], tmp_path: Path, discord_fake: FakeDiscord, image_api: FakeImageAPI
) -> None:
    """A failed edit's member is told (Discord takes the words); the database fails the record that they were
    told, then answers again: the record is tried again, so the notice is done at once and told once. Before,
    the error left it undone until its lease lapsed (30 s), and then whoever drained the outbox told it again."""
    bot = BotProcess(env, tmp_path, discord_fake)
    await bot.start()
    try:
        condition = "NEW.done_at IS NOT NULL"
        failed_once = ("recording that its outcome was told", "unexpected error")
        made = ["CREATE TABLE test_fault (x INTEGER)", "INSERT INTO test_fault VALUES (1)"]
        if "DATABASE_URL" not in env:
            made.append(
                f"CREATE TRIGGER test_fault_told BEFORE UPDATE ON notices WHEN {condition} AND EXISTS "
                "(SELECT 1 FROM test_fault) BEGIN SELECT RAISE(ABORT, 'injected: the database refused it'); END"
            )
        else:
            made += [
                "CREATE FUNCTION test_fault() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF {condition} AND EXISTS (SELECT 1 FROM test_fault) THEN "
                "RAISE EXCEPTION 'injected: the database refused it'; END IF; RETURN NEW; END $$",
                "CREATE TRIGGER test_fault_told BEFORE UPDATE ON notices FOR EACH ROW EXECUTE FUNCTION test_fault()",
            ]
        await execute(env, *made)
        image_api.then(Reply(kind="error", status=400, body={"error": {"message": "bad mask"}}))
        handle = await send_edit(discord_fake, "told once", [make_png()])
        # The words are taken, and the record failed once (tried again, or, before, an unexpected error).
        async with asyncio.timeout(20):
            while not any(line in bot.log() for line in failed_once):  # noqa: ASYNC110  # the bot's own log
                await asyncio.sleep(0.05)
        await execute(env, "DELETE FROM test_fault")  # the database is back
        await wait_rows(env, "SELECT done_at IS NOT NULL FROM notices", lambda r: r == [(True,)], timeout=10)
        told = [text for text in contents(handle) if "❌" in text]
        assert len(told) == 1, contents(handle)
        assert sorted(await rows(env, "SELECT entry FROM money")) == [("charge",), ("refund",)]
    finally:
        await bot.stop()
