"""Hand-overs written together: the calls that end at once pass their slots on in one transaction.

When a call ends, its job moves on (running to delivering) and its slot goes to the next job in
fair order in the same transaction, so the slot is never free between the two. Calls started
together end together: one process may have a dozen ends within a few milliseconds. Written one
transaction each, they queue behind each other on the claims' lock, a few round trips apiece,
and the last one's next call waits for all of them.

So the ends are written the way a database commits a group: the first end is written at once;
the ends that arrive while it is being written wait and then go together, in one transaction,
with one claim for as many jobs as they moved (``Store.move_all``). A lone end costs what it
did; a group of n costs one claim instead of n. If a group's transaction fails, each of its
moves is tried again alone, so one job's error stays its own. A failed transaction may have been
written all the same (its answer lost with the connection): its claim's stamp goes to
``unheard``, for the lifecycle to find the jobs it took, if any.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.batches import Batches
from bot.core.job import Job
from bot.core.records import ClaimTerms, MoveOrder, MoveResult
from bot.errors import UnexpectedError
from bot.store.store import Store

log = logging.getLogger(__name__)


class HandOvers:
    """Moves that pass a slot on, with their claims, written in groups for ``holder``."""

    def __init__(
        self,
        store: Store,
        holder: str,
        lease_seconds: float,
        stamp: Callable[[], float],
        unheard: Callable[[float], None],
    ) -> None:
        self._store = store
        self._unheard = unheard
        self._holder = holder
        self._lease_seconds = lease_seconds
        self._stamp = stamp  # now, as a claim's stamp: never the same twice (a lost claim is found by it)
        self._groups: Batches[tuple[MoveOrder, int], MoveResult] = Batches("hand-overs", self._write)
        # Told the jobs a group claimed as soon as it is written, before its callers hear (they resume one by one).
        self.on_claimed: Callable[[list[Job]], None] = lambda jobs: None

    async def move_and_claim(self, order: MoveOrder, max_running: int) -> MoveResult:
        """Write ``order`` and claim a job for the slot it frees (at most ``max_running`` running in all).

        A caller cancelled while its move is being written gets the result anyway (the moves of the
        group happen whatever it does: a job claimed for it must reach it), and the cancellation
        comes back at its next wait.
        """
        return await self._groups.written((order, max_running))

    async def _write(self, group: list[tuple[MoveOrder, int]]) -> list[MoveResult | Exception]:
        # The claim is asked now, with the highest cap asked (every process's is MAX_CONCURRENT_JOBS).
        terms = ClaimTerms(self._holder, self._stamp(), self._lease_seconds, max(cap for _, cap in group))
        try:
            written = await self._store.move_all([order for order, _ in group], terms)
        except Exception as exc:
            self._unheard(terms.now)
            if len(group) == 1:
                return [exc]
            log.warning("%d hand-overs written together failed (%s); writing each alone", len(group), exc)
            failure = exc
        else:
            try:
                self.on_claimed([result.claimed for result in written if isinstance(result.claimed, Job)])
            except Exception as exc:  # the group is written whatever the hook does: its callers must hear so
                UnexpectedError.capture(exc, "telling the jobs a group of hand-overs claimed")
            return list(written)
        # A move refused alone may be refused because the group was written after all (only its answer was lost):
        # its caller gets the group's error, and its own next try, refused too, reads the job and finds it so.
        return [
            failure if isinstance(outcome, MoveResult) and outcome.job is None else outcome
            for one in group
            for outcome in await self._write([one])
        ]
