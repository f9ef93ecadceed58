"""The fair order of waiting jobs: the member served least recently goes next; each member's jobs in order.

This is an index over the lifecycle's record, kept by ``bot.lifecycle`` as jobs move:
a job joins its member's line when it is accepted (not yet ready: its images are on
their way), becomes ready when it is queued, and leaves when it starts or ends. A
member's line is served strictly in acceptance order, so a later job whose images
arrived first still waits for the earlier one.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from dataclasses import dataclass, field


@dataclass(order=True)
class _Entry:
    order: float  # acceptance time
    job_id: str
    ready: bool = field(default=False, compare=False)


class FairQueue:
    """Job ids in per-member lines; ``take`` serves the member whose last turn is oldest.

    One member's five requests therefore wait behind everyone else's first one,
    instead of holding up the whole server; a member who has not been served yet
    goes before one who just was, whenever they arrive.
    """

    def __init__(self) -> None:
        self._lines: dict[int, list[_Entry]] = {}  # member -> entries by acceptance order
        self._member_of: dict[str, int] = {}  # job id -> member
        self._served: dict[int, int] = {}  # member -> number of their latest turn
        self._turns = itertools.count()

    def __len__(self) -> int:
        return len(self._member_of)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._member_of

    def add(self, user_id: int, job_id: str, order: float, *, ready: bool = False) -> None:
        """Put a job in its member's line by ``order`` (acceptance time)."""
        if job_id in self._member_of:
            return
        bisect.insort(self._lines.setdefault(user_id, []), _Entry(order, job_id, ready))
        self._member_of[job_id] = user_id

    def mark_ready(self, job_id: str) -> None:
        """The job's images are in: it may start when its turn comes."""
        entry = self._entry(job_id)
        if entry is not None:
            entry.ready = True

    def remove(self, job_id: str) -> None:
        """Withdraw a job (it ended, or started); nothing happens if it is not waiting."""
        user_id = self._member_of.pop(job_id, None)
        if user_id is None:
            return
        line = self._lines[user_id]
        line[:] = [e for e in line if e.job_id != job_id]
        if not line:
            del self._lines[user_id]

    def has_ready(self) -> bool:
        """Whether some member's next job is ready to start."""
        return any(line[0].ready for line in self._lines.values())

    def _rank(self, user_id: int) -> tuple[int, float]:
        # Never served (-1) first; among equals, whoever has waited longest.
        return self._served.get(user_id, -1), self._lines[user_id][0].order

    def take(self) -> str | None:
        """The job to start now, taken out of line and counted as its member's turn; ``None`` if none is ready."""
        ready = [user_id for user_id, line in self._lines.items() if line[0].ready]
        if not ready:
            return None
        user_id = min(ready, key=self._rank)
        job_id = self._lines[user_id][0].job_id
        self.remove(job_id)
        self._served[user_id] = next(self._turns)
        return job_id

    def positions(self) -> dict[str, int]:
        """Each waiting job's place (1 = next) in the order ``take`` would serve them if all were ready."""
        heap = [(*self._rank(user_id), user_id, 0) for user_id in self._lines]
        heapq.heapify(heap)
        simulated = itertools.count(1 << 60)  # later than any real turn, in order
        places: dict[str, int] = {}
        while heap:
            _, _, user_id, index = heapq.heappop(heap)
            line = self._lines[user_id]
            places[line[index].job_id] = len(places) + 1
            if index + 1 < len(line):
                heapq.heappush(heap, (next(simulated), line[index + 1].order, user_id, index + 1))
        return places

    def _entry(self, job_id: str) -> _Entry | None:
        user_id = self._member_of.get(job_id)
        if user_id is None:
            return None
        return next((e for e in self._lines[user_id] if e.job_id == job_id), None)
