"""Members owed a word at their next use of the bot: results that could not reach them, and final outcomes
that could not be told in time (``bot.jobs.outbox``), until each member has been told.

A private result that comes after the interaction expired goes by direct message; when
the member's DMs are closed, the job ends succeeded and its notice is kept for their next
use. The next time that member uses the bot they are told privately, once. Which members
have something to hear is cached (loaded at start-up, refreshed when any process adds one),
so every interaction can ask without a database trip; the store's notices are the record.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from bot.core.job import Job
from bot.core.records import Notice
from bot.store.store import Store


class NextUseNotices:
    """Members with something to be told at their next use."""

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._users: set[int] = set()

    async def load(self) -> None:
        self._users = await self._store.next_use_users()

    async def refresh(self, user_id: str | None) -> None:
        """A process recorded something for ``user_id`` (``None``: re-read all)."""
        if user_id is None:
            await self.load()
        elif user_id.isdigit():
            self._users.add(int(user_id))

    def waiting_for(self, user_id: int) -> bool:
        """Whether ``user_id`` has something to be told (no database trip)."""
        return user_id in self._users

    async def pending(self, user_id: int) -> list[tuple[Notice, Job]]:
        """What the member is owed, oldest first."""
        if user_id not in self._users:
            return []
        return await self._store.next_use_notices(user_id)

    async def shown(self, user_id: int, jobs: Sequence[Job]) -> None:
        """The member has been told about ``jobs``."""
        await self._store.mark_shown([job.id for job in jobs], self._clock())
        if not await self._store.next_use_notices(user_id):
            self._users.discard(user_id)
