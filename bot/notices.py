"""Results that were made but could not reach their member, until the member has been told.

A private result that comes after the interaction expired goes by direct message; when
the member's DMs are closed, the job ends succeeded and ``undelivered`` in the ledger.
The next time that member uses the bot they are told privately, once. Which members
have something to hear is cached (loaded at start-up), so every interaction can ask
without a database trip; the ledger and the ``notices_shown`` rows are the record.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from bot.jobs import Job


class NoticeStore(Protocol):
    async def undelivered_users(self) -> set[int]: ...
    async def undelivered_jobs(self, user_id: int) -> list[Job]: ...
    async def mark_notices_shown(self, job_ids: Sequence[str], at: float) -> None: ...


class UndeliveredNotices:
    """Members with undelivered results they have not been told about."""

    def __init__(self, store: NoticeStore) -> None:
        self._store = store
        self._users: set[int] = set()

    async def load(self) -> None:
        self._users = await self._store.undelivered_users()

    async def refresh(self, user_id: str | None) -> None:
        """Another process recorded an undelivered result for ``user_id`` (``None``: re-read all)."""
        if user_id is None:
            await self.load()
        elif user_id.isdigit():
            self._users.add(int(user_id))

    def waiting_for(self, user_id: int) -> bool:
        """Whether ``user_id`` has something to be told (no database trip)."""
        return user_id in self._users

    def add(self, job: Job) -> None:
        """``job`` is ending undelivered: tell its member next time."""
        self._users.add(job.user_id)

    async def pending(self, user_id: int) -> list[Job]:
        """The member's undelivered jobs they have not been told about, oldest first (the member stays
        waiting until ``shown``: a job added a moment ago may not be recorded yet)."""
        if user_id not in self._users:
            return []
        return await self._store.undelivered_jobs(user_id)

    async def shown(self, user_id: int, jobs: Sequence[Job]) -> None:
        """The member has been told about ``jobs``."""
        await self._store.mark_notices_shown([job.id for job in jobs], time.time())
        if not await self._store.undelivered_jobs(user_id):
            self._users.discard(user_id)
