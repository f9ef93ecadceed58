"""The outbox (``bot.jobs.outbox``) on both databases (the ``store`` fixture): what it records once a member
was told, when the database fails that record."""

from __future__ import annotations

from bot.core.job import Job
from bot.core.records import Notice, NoticeDraft
from bot.core.states import JobState
from bot.jobs.outbox import NEXT_USE, Outbox
from bot.ports import Told
from bot.scheduler import Scheduler
from bot.store.store import Store
from tests.stores import NOON, add, make_job, query

MEMBER = 7


class DoneThenLost(Store):
    """The store; the first record that a notice is done is written, then its answer is lost (the connection
    drops). Every notice sent is kept."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.database)
        self.lost = 0
        self.sent: list[str] = []

    async def notice_done(self, job_id: str, holder: str, how: str, at: float) -> bool:
        done = await super().notice_done(job_id, holder, how, at)
        if not self.lost:
            self.lost += 1
            raise ConnectionError("the connection dropped before the commit's answer came")
        return done

    async def notify(self, payload: str) -> None:
        self.sent.append(payload)
        await super().notify(payload)


class AtNextUse:
    """A teller that hands every notice to the member's next use (Discord would not take it)."""

    async def tell(self, job: Job, notice: Notice) -> Told:
        return Told(NEXT_USE)


async def _none_gone(holders: set[str]) -> set[str]:
    return set()


async def test_a_notice_for_the_next_use_whose_record_was_written_though_its_answer_was_lost_is_still_announced(
    store: Store,
) -> None:
    """A failed job's notice goes to its member's next use. The record of that is written, but its answer is lost;
    asked again, the record is found done already. The gateways are still told that the member is owed a notice,
    so the member hears it at their next use. Before, the second try skipped that, and the member heard nothing
    until a gateway restarted or reconnected."""
    await add(store, make_job("j1", MEMBER, NOON))
    ended = await store.move(
        "j1", JobState.QUEUED, JobState.FAILED, {"finished_at": NOON}, refund=True, holder="w1", now=NOON,
        notice=NoticeDraft({"text": "it broke"}),
    )  # fmt: skip
    assert ended.job is not None
    lossy = DoneThenLost(store)
    outbox = Outbox(lossy, "w1", Scheduler("test-outbox"), _none_gone, clock=lambda: NOON + 1)
    outbox.attach(AtNextUse())
    await outbox.tell_own("j1")
    await outbox.finish(timeout=10)
    assert lossy.lost == 1
    assert (await query(store, "SELECT how FROM notices WHERE job_id = 'j1'")) == [{"how": NEXT_USE}]
    assert lossy.sent.count(f"notices:{MEMBER}") == 1
