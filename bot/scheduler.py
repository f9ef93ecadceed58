"""Named background tasks: one place starts them, logs their failures and forgets them when they end.

As python-discord's ``Scheduler``: every task has a name and an owner, a failure is logged
with its traceback (never lost in a task nobody awaits), and a finished task is dropped at
once, so a long-lived process keeps no trail of done tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from bot.errors import UnexpectedError

log = logging.getLogger(__name__)


class Scheduler:
    """The background tasks of one owner (``name``), by task name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def __contains__(self, task_name: str) -> bool:
        return task_name in self._tasks

    def __len__(self) -> int:
        return len(self._tasks)

    def schedule(self, task_name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``work`` as ``task_name`` (a second task of the same name is refused: the first still runs)."""
        if task_name in self._tasks:
            work.close()
            raise ValueError(f"{self.name}: a task named {task_name!r} is already running")
        task = asyncio.create_task(work, name=f"atelier-{self.name}-{task_name}")
        self._tasks[task_name] = task
        task.add_done_callback(lambda done: self._forget(task_name, done))
        return task

    def spawn(self, task_name: str, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Like ``schedule``, for work that may run several times at once: the name gets a serial number."""
        serial = 1
        while f"{task_name}#{serial}" in self._tasks:
            serial += 1
        return self.schedule(f"{task_name}#{serial}", work)

    def _forget(self, task_name: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(task_name) is task:
            del self._tasks[task_name]
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            UnexpectedError.capture(error, f"{self.name} task {task_name}")

    def cancel(self, task_name: str) -> None:
        task = self._tasks.get(task_name)
        if task is not None:
            task.cancel()

    async def cancel_all(self) -> None:
        """Cancel every task and wait for them to end."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
