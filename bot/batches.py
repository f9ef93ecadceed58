"""Work asked while a batch is under way goes together in the next batch (as a database commits a group).

The first item asked is handled at once, alone. Items asked while a batch is being handled wait,
then go together in the next one. One task at a time handles them, started only when there is
work and ended when there is none. So a lone item costs what it did, and a burst costs one batch
for each batch's duration instead of one per item. Each caller gets a future for its own item's
result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from bot.scheduler import Scheduler

T = TypeVar("T")
R = TypeVar("R")


class Batches(Generic[T, R]):
    """Items handled in batches by ``handle``, which returns each item's result (or exception) in order."""

    def __init__(self, name: str, handle: Callable[[list[T]], Awaitable[Sequence[R | Exception]]]) -> None:
        self._handle = handle
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._busy = False
        self._tasks = Scheduler(name)

    def ask(self, item: T) -> asyncio.Future[R]:
        """Have ``item`` handled in the next batch; its result's future."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)  # an error no caller awaits any more is not "never retrieved"
        self._waiting.append((item, future))
        if not self._busy:
            self._busy = True
            self._tasks.spawn("batch", self._drain())
        return future

    async def written(self, item: T) -> R:
        """``item``'s result, for work that must happen once asked (a write: a job a hand-over claims must reach
        its caller). A caller cancelled before a batch took its item withdraws it; one cancelled while its batch
        is under way gets the result anyway, and the cancellation comes back at its next wait."""
        future = self.ask(item)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if self.withdraw(future):  # not taken by a batch yet: it never will be
                raise
        result = await _outlast(future)
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # the cancellation that came while the batch was under way: at the caller's next wait
        return result

    def withdraw(self, future: asyncio.Future[R]) -> bool:
        """Take back an item that no batch has taken yet (whether it was still waiting)."""
        for n, (_, waiting) in enumerate(self._waiting):
            if waiting is future:
                del self._waiting[n]
                return True
        return False

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    outcomes: Sequence[R | Exception] = await self._handle([item for item, _ in batch])
                except Exception as exc:
                    outcomes = [exc] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, Exception):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            self._busy = False  # no wait between the last look at the queue and this
            for _, future in [*batch, *self._waiting]:
                future.cancel()  # cancelled itself (the loop ends): no-op for those answered


async def _outlast(future: asyncio.Future[R]) -> R:
    """``future``'s result, however often the waiting task is cancelled meanwhile."""
    while True:
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.cancelled():
                raise


def _retrieve(future: asyncio.Future[R]) -> None:
    if not future.cancelled():
        future.exception()
