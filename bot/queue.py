"""A fair queue: round-robin between members, first come first served within each member."""

from __future__ import annotations

import bisect
from collections import deque


class FairQueue:
    """Job ids grouped by member; ``pop`` takes one job from each member in turn.

    One member's five requests therefore wait behind everyone else's first one,
    instead of holding up the whole server.
    """

    def __init__(self) -> None:
        self._by_user: dict[int, list[tuple[float, str]]] = {}
        self._turns: deque[int] = deque()  # members with waiting jobs, next turn first

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_user.values())

    def push(self, user_id: int, job_id: str, order: float) -> None:
        """Add a job to its member's line by ``order`` (acceptance time); a new member takes the last turn.

        Jobs are pushed when their images are ready, which may not be the order they were
        accepted in; ``order`` keeps each member's own jobs first come, first served.
        """
        if user_id not in self._by_user:
            self._by_user[user_id] = []
            self._turns.append(user_id)
        bisect.insort(self._by_user[user_id], (order, job_id))

    def pop(self) -> str | None:
        """The next job to run, or ``None`` when nothing waits."""
        if not self._turns:
            return None
        user_id = self._turns.popleft()
        line = self._by_user[user_id]
        _, job_id = line.pop(0)
        if line:
            self._turns.append(user_id)
        else:
            del self._by_user[user_id]
        return job_id

    def remove(self, job_id: str) -> bool:
        """Withdraw a waiting job; ``False`` if it is not waiting."""
        for user_id, line in self._by_user.items():
            found = next((entry for entry in line if entry[1] == job_id), None)
            if found is not None:
                line.remove(found)
                if not line:
                    del self._by_user[user_id]
                    self._turns.remove(user_id)
                return True
        return False

    def positions(self) -> dict[str, int]:
        """Each waiting job's place (1 = next) in the order ``pop`` would take them."""
        order: list[str] = []
        lines = [[job_id for _, job_id in self._by_user[u]] for u in self._turns]
        depth = max((len(line) for line in lines), default=0)
        for round_ in range(depth):
            order.extend(line[round_] for line in lines if round_ < len(line))
        return {job_id: place for place, job_id in enumerate(order, start=1)}
