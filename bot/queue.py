"""A fair queue: the member served least recently goes next; each member's own jobs in order."""

from __future__ import annotations

import bisect
import heapq
import itertools


class FairQueue:
    """Job ids grouped by member; ``pop`` serves the member whose last turn is oldest.

    One member's five requests therefore wait behind everyone else's first one,
    instead of holding up the whole server; a member who has not been served yet
    goes before one who just was, whenever they arrive.
    """

    def __init__(self) -> None:
        self._lines: dict[int, list[tuple[float, str]]] = {}  # member -> (acceptance order, job id)
        self._served: dict[int, int] = {}  # member -> number of their latest turn
        self._turns = itertools.count()

    def __len__(self) -> int:
        return sum(len(line) for line in self._lines.values())

    def push(self, user_id: int, job_id: str, order: float) -> None:
        """Add a job to its member's line by ``order`` (acceptance time).

        Jobs are pushed when their images are ready, which may not be the order they were
        accepted in; ``order`` keeps each member's own jobs first come, first served.
        """
        bisect.insort(self._lines.setdefault(user_id, []), (order, job_id))

    def _rank(self, user_id: int) -> tuple[int, float]:
        # Never served (-1) first; among equals, whoever has waited longest.
        return self._served.get(user_id, -1), self._lines[user_id][0][0]

    def pop(self) -> str | None:
        """The next job to run, or ``None`` when nothing waits."""
        if not self._lines:
            return None
        user_id = min(self._lines, key=self._rank)
        line = self._lines[user_id]
        _, job_id = line.pop(0)
        if not line:
            del self._lines[user_id]
        self._served[user_id] = next(self._turns)
        return job_id

    def remove(self, job_id: str) -> bool:
        """Withdraw a waiting job; ``False`` if it is not waiting."""
        for user_id, line in self._lines.items():
            found = next((entry for entry in line if entry[1] == job_id), None)
            if found is not None:
                line.remove(found)
                if not line:
                    del self._lines[user_id]
                return True
        return False

    def positions(self) -> dict[str, int]:
        """Each waiting job's place (1 = next) in the order ``pop`` would take them."""
        heap = [(*self._rank(user_id), user_id, 0) for user_id in self._lines]
        heapq.heapify(heap)
        simulated = itertools.count(1 << 60)  # later than any real turn, in order
        places: dict[str, int] = {}
        while heap:
            _, _, user_id, index = heapq.heappop(heap)
            line = self._lines[user_id]
            places[line[index][1]] = len(places) + 1
            if index + 1 < len(line):
                heapq.heappush(heap, (next(simulated), line[index + 1][0], user_id, index + 1))
        return places
